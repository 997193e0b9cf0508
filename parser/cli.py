"""The ``parse`` command: train, predict and evaluate the meProp transition parser."""

import json
import os
import sys
from pathlib import Path

# Before torch is first imported: transparent huge pages for PyTorch's large CPU allocations.
# Without them each training step page-faults its fresh 96 MB activations and gradients, which
# more than doubled the epoch time of `parse train` here (see docs/RESULTS.md).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import click  # noqa: E402

from meprop.cli_options import (  # noqa: E402
    device_option,
    dropout_option,
    fail,
    load_model_or_fail,
    metrics_json_option,
    mode_option,
    persistent_grad_option,
    refuse_overwrite,
    seed_option,
    selection_option,
    sparse_update_option,
    training_run_options,
    treebank_options,
)
from meprop.training import OPTIMIZERS  # noqa: E402

DEFAULT_MODEL = Path(__file__).parent / "models" / "en_ewt.pt"
# Beam width of `parse predict` and `parse evaluate`, chosen on EWT dev (session 5's first model):
# UAS 87.02 greedy, 87.85 / 88.14 / 88.27 / 88.30 with beams of 2 / 4 / 8 / 16 (docs/RESULTS.md).
DEFAULT_BEAM = 8


def beam_option():
    return click.option("--beam", type=click.IntRange(min=1), default=DEFAULT_BEAM,
                        show_default=True,
                        help="Partial parses kept per sentence (beam search); 1 = greedy, "
                        "several times faster and about 0.5-1 UAS lower.")



@click.group()
def main():
    """Chen & Manning (2014) arc-standard parser trained with meProp (Sun et al. 2017)."""


@main.command()
@treebank_options("parsed")
@click.option("--k", type=click.IntRange(min=0), default=20, show_default=True,
              help="Gradient entries kept per example in hidden and output layers; 0 = dense.")
@mode_option("per_example: each transition keeps its own top-k; unified: one k-set per "
             "minibatch.")
@selection_option()
@click.option("--hidden", type=click.IntRange(min=1), default=500, show_default=True,
              help="Units per hidden layer (Chen & Manning: 200).")
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Number of hidden layers (Chen & Manning: 1).")
@click.option("--activation", type=click.Choice(["relu", "cube", "tanh"]), default="relu",
              show_default=True, help="Hidden activation (Chen & Manning: cube).")
@dropout_option(0.5)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Training epochs; the epoch with the best dev UAS is kept.")
@click.option("--batch-size", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Transitions per minibatch (Chen & Manning and the paper: 10,000).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True,
              help="Adam, or AdaGrad with Chen & Manning's eps 1e-6 and L2 1e-8.")
@click.option("--lr", type=float, default=None,
              help="Learning rate [default: 0.003 for Adam (chosen on EWT dev), 0.01 for AdaGrad].")
@click.option("--pos-column", type=click.Choice(["xpos", "upos", "both"]), default="xpos",
              show_default=True, help="POS features from XPOS (PTB tags, as Chen & Manning), "
              "UPOS (where XPOS is empty), or both (each word's UPOS|XPOS pair as one tag).")
@click.option("--min-word-freq", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training words seen fewer times share the unknown-word embedding.")
@click.option("--embeddings", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Pre-trained word vectors, text format 'word v1 ... v50' per line.")
@click.option("--word-dropout", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Alpha of word dropout: in training, a word seen c times is replaced by the "
              "unknown word with probability alpha / (alpha + c); 0 = off.")
@click.option("--average", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Decay of an exponential moving average of the weights "
              "(e.g. 0.99), used for dev scores and the saved model; 0 = off.")
@click.option("--tag-dropout", type=click.FloatRange(min=0, max=1), default=0.0,
              show_default=True, help="In training, each word's POS feature becomes the unknown "
              "tag with this probability, so the parser relies less on tags (for predicted, "
              "noisier tags); 0 = off.")
@click.option("--train-tags", "train_tags_file", type=click.Path(dir_okay=False, exists=True),
              default=None, help="The training file again with predicted POS, e.g. jackknifed "
              "by scripts/jackknife_tags.py (same sentences, words and trees); each epoch a "
              "random share --train-tags-rate of the training transitions takes its POS "
              "features from it, so the parser learns the tagger's errors.")
@click.option("--train-tags-rate", type=click.FloatRange(min=0, max=1), default=0.5,
              show_default=True, help="Share of the training transitions given the POS of "
              "--train-tags each epoch (1 = predicted POS only).")
@seed_option("Seed for initialisation and batch order.")
@persistent_grad_option()
@sparse_update_option()
@device_option()
@training_run_options("parser.pt")
@metrics_json_option()
def train(train_file, dev_file, k, mode, selection, hidden, layers, activation, dropout, epochs,
          batch_size, optimizer, lr, pos_column, min_word_freq, embeddings, word_dropout,
          average, tag_dropout, train_tags_file, train_tags_rate, seed, persistent_grad,
          sparse_update, device,
          data_dir, resume, out, metrics_json, quiet):
    """Train a parser; with no files, on UD English EWT (train, dev for model selection)."""
    from data import DataError, conll
    from data.datasets import split_path
    from meprop.training import resolve_device, write_metrics_json
    from parser.data import check_parsed, check_same_trees
    from parser.trainer import TrainOptions, train_parser

    try:
        train_path = train_file or split_path("ud-english-ewt", "train", data_dir)
        dev_path = dev_file or split_path("ud-english-ewt", "dev", data_dir)
        train_sentences = [s for s in conll.read(train_path) if len(s)]
        dev_sentences = [s for s in conll.read(dev_path) if len(s)]
        check_parsed(train_sentences, dev_sentences)  # as train_parser does; here, a one-line error
        predicted_tag_sentences = None
        if train_tags_file:
            predicted_tag_sentences = [s for s in conll.read(train_tags_file) if len(s)]
            # train_parser checks this too; here the error names both files, before any work.
            try:
                check_same_trees(train_sentences, predicted_tag_sentences)
            except ValueError as error:
                raise ValueError(f"{train_tags_file} is not {train_path} with other POS: "
                                 f"{error}") from None
        device = resolve_device(device)
    except (DataError, ValueError) as error:
        fail(error)
    overrides = dict(hidden=hidden, layers=layers, activation=activation, dropout=dropout,
                     k=k or None, mode=mode, selection=selection, pos_column=pos_column)
    options = TrainOptions(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                           seed=seed, min_word_freq=min_word_freq, embeddings=embeddings,
                           persistent_grad=persistent_grad, sparse_update=sparse_update,
                           word_dropout=word_dropout,
                           average=average, tag_dropout=tag_dropout,
                           predicted_tags_rate=train_tags_rate)
    metrics = train_parser(overrides, train_sentences, dev_sentences, options, out,
                           device=device, resume=resume, progress=not quiet,
                           log=lambda text: click.echo(text, err=True),
                           predicted_tag_sentences=predicted_tag_sentences)
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))
    if metrics_json:
        write_metrics_json(metrics_json, metrics)


def _load(model_path):
    from parser.trainer import load_model

    return load_model_or_fail(load_model, model_path, DEFAULT_MODEL, "parser", "parse train")



def _load_tagger(path, count, pos_column):
    from parser.data import tag_columns
    from tagger.cli import DEFAULT_MODEL as DEFAULT_TAGGER
    from tagger.predict import load_model as load_tagger

    path = Path(path) if path else DEFAULT_TAGGER
    if not path.exists():
        fail(f"{count} sentences have no {pos_column.upper()} tags and there is no tagger at "
             f"{path}; tag them first ('tag predict') or give --tagger")
    tagger, vocabs = load_tagger(path)
    if not set(tag_columns(pos_column)) <= set(tagger.config.columns):
        fail(f"the tagger at {path} predicts {', '.join(tagger.config.columns)}, but the "
             f"parser needs {pos_column}")
    return tagger, vocabs


def _tag_and_parse(model, vocabs, sentences, beam, tagger_path, write_tags, choose_tags):
    """Fill HEAD and DEPREL of ``sentences``. Where the file has no tag in the model's POS
    column (``_``, or plain text), a copy is tagged first by the tagger (the default one
    unless ``tagger_path``) — with ``choose_tags``, tags and parse chosen together
    (:mod:`parser.joint`); its tags are written into the sentence only with ``write_tags``."""
    from parser.data import has_missing_tags
    from parser.decode import parse_sentences
    from parser.joint import tag_and_parse
    from tagger.data import TAG_PAIRS
    from tagger.predict import tag_alternatives, tag_sentences

    untagged = [i for i, s in enumerate(sentences) if has_missing_tags(s, model.config.pos_column)]
    untagged_set = set(untagged)
    tagged = [s for i, s in enumerate(sentences) if i not in untagged_set]
    parse_sentences(model, tagged, vocabs, beam=beam)
    if not untagged:
        return
    tagger, tagger_vocabs = _load_tagger(tagger_path, len(untagged), model.config.pos_column)
    copies = [sentences[i].copy() for i in untagged]
    # A tagger of two columns saved without its seen pairs has no joint choices: it tags alone.
    if choose_tags and (TAG_PAIRS in tagger_vocabs or len(tagger.config.columns) == 1):
        tag_and_parse(model, vocabs, copies, tag_alternatives(tagger, copies, tagger_vocabs),
                      beam=beam)
    else:
        parse_sentences(model, tag_sentences(tagger, copies, tagger_vocabs), vocabs, beam=beam)
    for i, copy in zip(untagged, copies, strict=True):
        sentences[i].heads, sentences[i].deprels = copy.heads, copy.deprels
        if write_tags:
            for column in tagger.config.columns:
                setattr(sentences[i], column, list(getattr(copy, column)))


@main.command()
@click.argument("input_file", metavar="FILE")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Parser checkpoint [default: the English model shipped with the package].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write (atomically) [default: standard output].")
@click.option("--tagger", "tagger_path", type=click.Path(dir_okay=False), default=None,
              help="Tagger for sentences without POS tags [default: the shipped English "
              "tagger].")
@click.option("--write-tags", is_flag=True,
              help="Also write the tags the tagger predicted (only for sentences that had none).")
@click.option("--choose-tags/--no-choose-tags", default=True, show_default=True,
              help="For sentences the tagger tags: where it is unsure of a word (best tag "
              "below 0.99), also parse with the word's second-best tag, and keep the tags and "
              "parse of highest parse log-probability + 0.3 x tagging log-probability (chosen "
              "on EWT dev); about 2-3 parses per sentence. --no-choose-tags: the tagger's best "
              "tags, then one parse.")
@beam_option()
def predict(input_file, model_path, output, tagger_path, write_tags, choose_tags, beam):
    """Parse FILE (CoNLL-U/CoNLL-X, or plain text, one sentence per line; - for stdin).

    Fills HEAD and DEPREL; every other column, comment and multiword-token line is kept as it
    was. POS tags come from the file; sentences without them (``_``, or plain text) are tagged
    by the default tagger first (see --choose-tags), whose tags are used internally and
    written only with --write-tags.
    """
    from data import DataError, conll

    refuse_overwrite(input_file, output)
    model, vocabs = _load(model_path)
    try:
        sentences = list(conll.read(input_file))
        _tag_and_parse(model, vocabs, sentences, beam, tagger_path, write_tags, choose_tags)
        conll.write(sentences, output or "-")
    except DataError as error:
        fail(error)


@main.command()
@click.argument("gold_file", metavar="GOLD")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Parse GOLD with this model and score it [default: the shipped model].")
@click.option("--pred", "pred_file", type=click.Path(dir_okay=False), default=None,
              help="Score this already-parsed file instead of running a model.")
@click.option("--tagger-pos", is_flag=True,
              help="Parse GOLD without its POS columns: tagged by the tagger as `parse "
              "predict` tags a file without POS (see --choose-tags), so the scores are those "
              "of parsing raw text with our own tagger.")
@click.option("--tagger", "tagger_path", type=click.Path(dir_okay=False), default=None,
              help="Tagger for --tagger-pos [default: the shipped English tagger].")
@click.option("--choose-tags/--no-choose-tags", default=True, show_default=True,
              help="With --tagger-pos: tags and parse chosen together, as `parse predict` "
              "does; --no-choose-tags: the tagger's best tags, then one parse.")
@beam_option()
@metrics_json_option()
def evaluate(gold_file, model_path, pred_file, tagger_pos, tagger_path, choose_tags, beam,
             metrics_json):
    """UAS and LAS over all words (LAS on the universal part of DEPREL, before any ':'), and
    UAS without punctuation (punctuation by GOLD's tags). With --tagger-pos, also the accuracy
    of the POS used (upos_accuracy, xpos_accuracy)."""
    from data import DataError, conll
    from data.conll import MISSING
    from meprop.training import write_metrics_json
    from parser.decode import parse_sentences
    from parser.scorer import AttachmentScore

    if model_path and pred_file:
        fail("give --model or --pred, not both")
    if pred_file and (tagger_pos or tagger_path):
        fail("--tagger-pos and --tagger parse GOLD with a model; not with --pred")
    try:
        gold = [s for s in conll.read(gold_file) if len(s)]
        if pred_file:
            predicted = [s for s in conll.read(pred_file) if len(s)]
        else:
            model, vocabs = _load(model_path)
            predicted = [s.copy() for s in gold]
            if tagger_pos:
                for sentence in predicted:
                    sentence.upos = [MISSING] * len(sentence)
                    sentence.xpos = [MISSING] * len(sentence)
                _tag_and_parse(model, vocabs, predicted, beam, tagger_path, write_tags=True,
                               choose_tags=choose_tags)
            else:
                parse_sentences(model, predicted, vocabs, beam=beam)
        if len(predicted) != len(gold):
            fail(f"{pred_file} has {len(predicted)} sentences, {gold_file} {len(gold)}")
        score = AttachmentScore()
        for gold_sentence, predicted_sentence in zip(gold, predicted, strict=True):
            score.add(gold_sentence, predicted_sentence)
    except (DataError, ValueError) as error:
        fail(error)
    metrics = score.metrics()
    if not pred_file:
        metrics["beam"] = beam  # the decoding behind the scores
    if tagger_pos:
        metrics.update(_tag_accuracy(gold, predicted))
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))
    if metrics_json:
        write_metrics_json(metrics_json, metrics)


def _tag_accuracy(gold, predicted):
    """Percent of words whose UPOS / XPOS in ``predicted`` equals ``gold``'s."""
    words = sum(len(sentence) for sentence in gold)
    return {f"{column}_accuracy": 100.0 * sum(
        g == p for gold_sentence, predicted_sentence in zip(gold, predicted, strict=True)
        for g, p in zip(getattr(gold_sentence, column), getattr(predicted_sentence, column),
                        strict=True)) / max(words, 1)
        for column in ("upos", "xpos")}


if __name__ == "__main__":
    sys.exit(main())
