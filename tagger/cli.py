"""The ``tag`` command: train, predict and evaluate the meProp BiLSTM part-of-speech tagger."""

import json
import sys
from pathlib import Path

import click

from meprop.cli_options import (
    device_option,
    dropout_option,
    fail,
    load_model_or_fail,
    metrics_json_option,
    mode_option,
    persistent_grad_option,
    refuse_overwrite,
    seed_option,
    sparse_update_option,
    training_run_options,
    treebank_options,
)
from meprop.training import OPTIMIZERS

DEFAULT_MODEL = Path(__file__).parent / "models" / "en_ewt.pt"
COLUMN_CHOICES = {"upos": ["upos"], "xpos": ["xpos"], "both": ["upos", "xpos"]}



@click.group()
def main():
    """BiLSTM part-of-speech tagger trained with meProp (Sun et al. 2017)."""


@main.command()
@treebank_options("tagged")
@click.option("--column", type=click.Choice(list(COLUMN_CHOICES)), default="both",
              show_default=True, help="Tag column(s) to predict; both = one model with an output "
              "layer per column.")
@click.option("--k", type=click.IntRange(min=0), default=5, show_default=True,
              help="Entries of each LSTM gate's gradient kept per example and time step; "
              "0 = dense (the output layer is always dense, as in the paper).")
@mode_option("per_example: each word keeps its own top-k; unified: one k-set per gate for the "
             "minibatch at each time step.")
@click.option("--hidden", type=click.IntRange(min=1), default=500, show_default=True,
              help="LSTM units in each direction (the paper: 500).")
@click.option("--word-dim", type=click.IntRange(min=1), default=50, show_default=True,
              help="Word embedding size (the paper: 50).")
@click.option("--feature-dim", type=click.IntRange(min=1), default=20, show_default=True,
              help="Size of each of the 7 affix/shape feature embeddings (the paper: 20).")
@dropout_option(0.3)
@click.option("--word-dropout", type=click.FloatRange(min=0), default=0.25, show_default=True,
              help="alpha: a training word is replaced by UNK with probability "
              "alpha / (alpha + its count); 0 = off.")
@click.option("--min-word-freq", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training words seen fewer times share the unknown-word embedding.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Training epochs; the epoch with the best dev accuracy is kept.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Sentences per minibatch (the paper: 1).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True,
              help="Optimizer.")
@click.option("--lr", type=float, default=None,
              help="Learning rate [default: 0.003 for Adam (chosen on EWT dev), 0.01 for "
              "AdaGrad].")
@seed_option("Seed for initialisation, batch order and word dropout.")
@persistent_grad_option()
@sparse_update_option()
@device_option()
@training_run_options("tagger.pt")
@metrics_json_option()
def train(train_file, dev_file, column, k, mode, hidden, word_dim, feature_dim, dropout,
          word_dropout, min_word_freq, epochs, batch_size, optimizer, lr, seed, persistent_grad,
          sparse_update, device, data_dir, resume, out, metrics_json, quiet):
    """Train a tagger; with no files, on UD English EWT (train, dev for model selection)."""
    from data import DataError, conll
    from data.datasets import split_path
    from meprop.training import resolve_device, write_metrics_json
    from tagger.trainer import TrainOptions, train_tagger

    try:
        train_path = train_file or split_path("ud-english-ewt", "train", data_dir)
        dev_path = dev_file or split_path("ud-english-ewt", "dev", data_dir)
        train_sentences = [s for s in conll.read(train_path) if len(s)]
        dev_sentences = [s for s in conll.read(dev_path) if len(s)]
        device = resolve_device(device)
        overrides = dict(hidden=hidden, word_dim=word_dim, feature_dim=feature_dim, k=k or None,
                         mode=mode, dropout=dropout, word_dropout=word_dropout,
                         columns=COLUMN_CHOICES[column])
        options = TrainOptions(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                               seed=seed, min_word_freq=min_word_freq,
                               persistent_grad=persistent_grad, sparse_update=sparse_update)
        metrics = train_tagger(overrides, train_sentences, dev_sentences, options, out,
                               device=device, resume=resume, progress=not quiet,
                               log=lambda text: click.echo(text, err=True))
    except (DataError, ValueError) as error:
        fail(error)
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))
    if metrics_json:
        write_metrics_json(metrics_json, metrics)


def _load(model_path):
    from tagger.predict import load_model

    return load_model_or_fail(load_model, model_path, DEFAULT_MODEL, "tagger", "tag train")



@main.command()
@click.argument("input_file", metavar="FILE")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Tagger checkpoint [default: the English model shipped with the package].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write (atomically) [default: standard output].")
def predict(input_file, model_path, output):
    """Tag FILE (CoNLL-U/CoNLL-X, or plain text, one sentence per line; - for stdin).

    Fills the column(s) the model predicts (UPOS and/or XPOS); every other column, comment and
    multiword-token line is kept as it was. Plain text comes out as CoNLL-U.
    """
    from data import DataError, conll
    from tagger.predict import tag_sentences

    refuse_overwrite(input_file, output)
    model, vocabs = _load(model_path)
    try:
        sentences = list(conll.read(input_file))
        tag_sentences(model, sentences, vocabs)
        conll.write(sentences, output or "-")
    except DataError as error:
        fail(error)


@main.command()
@click.argument("gold_file", metavar="GOLD")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Tag GOLD with this model and score it [default: the shipped model].")
@click.option("--pred", "pred_file", type=click.Path(dir_okay=False), default=None,
              help="Score this already-tagged file instead of running a model.")
@click.option("--column", type=click.Choice(list(COLUMN_CHOICES)), default=None,
              help="Columns to score with --pred [default: both]; with a model, its columns.")
@click.option("--train", "train_file", type=click.Path(dir_okay=False), default=None,
              help="With --pred: the training file whose words count as known (for the "
              "unknown-word accuracy).")
@metrics_json_option()
def evaluate(gold_file, model_path, pred_file, column, train_file, metrics_json):
    """Per-word accuracy of each predicted column (upos_accuracy, xpos_accuracy), and on words
    unseen in training (unknown_upos_accuracy, ...)."""
    from data import DataError, conll
    from data.vocab import normalize_word
    from meprop.training import write_metrics_json
    from tagger.predict import tag_sentences
    from tagger.scorer import TagScore

    if model_path and pred_file:
        fail("give --model or --pred, not both")
    try:
        gold = [s for s in conll.read(gold_file) if len(s)]
        if pred_file:
            predicted = [s for s in conll.read(pred_file) if len(s)]
            columns = COLUMN_CHOICES[column or "both"]
            seen = None
            if train_file:
                seen = {normalize_word(f) for s in conll.read(train_file) for f in s.forms}
        else:
            model, vocabs = _load(model_path)
            columns = model.config.columns
            if column and not set(COLUMN_CHOICES[column]) <= set(columns):
                fail(f"the model predicts {', '.join(columns)}, not {column}")
            columns = COLUMN_CHOICES[column] if column else columns
            predicted = tag_sentences(model, [s.copy() for s in gold], vocabs)
            seen = vocabs["known_words"].stoi
        if len(predicted) != len(gold):
            fail(f"{pred_file} has {len(predicted)} sentences, {gold_file} {len(gold)}")
        score = TagScore(columns, seen_words=seen)
        for gold_sentence, predicted_sentence in zip(gold, predicted, strict=True):
            score.add(gold_sentence, predicted_sentence)
    except (DataError, ValueError) as error:
        fail(error)
    if not any(score.total.values()):  # plain text, or "_" in every gold tag: nothing to score
        fail(f"{gold_file} has no gold {' or '.join(c.upper() for c in columns)} tags to score")
    metrics = score.metrics()
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))
    if metrics_json:
        write_metrics_json(metrics_json, metrics)


if __name__ == "__main__":
    sys.exit(main())
