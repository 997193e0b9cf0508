"""Training loop for the tagger: sentence minibatches, dev accuracy each epoch, best kept."""

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_sequence
from tqdm import tqdm

from data.batching import bucket_batches
from data.vocab import Vocab
from meprop.nn import use_persistent_grad
from meprop.optim import touched_weights
from meprop.stats import rows_touched
from meprop.training import (
    BackpropClock,
    load_checkpoint,
    make_optimizer,
    restore_training_state,
    resume_path,
    save_checkpoint,
    save_training_state,
    seed_everything,
    synchronize,
)
from tagger.data import (
    FEATURE_NAMES,
    build_vocabs,
    check_dev_tags,
    encode_inputs,
    encode_targets,
    word_counts,
)
from tagger.model import TaggerConfig, TaggerModel
from tagger.predict import model_payload, tag_sentences
from tagger.scorer import TagScore

# meProp's sparse LSTM gradient learns more slowly per step than dense; on 3,000 EWT training
# sentences (2 epochs, batches of 8) Adam at 0.003 beat 0.001, and dropout 0.3 beat 0.5.
DEFAULT_LR = {"adam": 0.003, "adagrad": 0.01}


@dataclass
class TrainOptions:
    epochs: int = 20
    batch_size: int = 8  # sentences per minibatch
    optimizer: str = "adam"
    lr: float = None
    seed: int = 1
    min_word_freq: int = 2
    persistent_grad: bool = False  # meprop.use_persistent_grad on the model
    sparse_update: bool = False  # the optimizer updates only the rows meProp touched


def evaluate(model, vocabs, gold_sentences):
    predicted = tag_sentences(model, [s.copy() for s in gold_sentences], vocabs)
    score = TagScore(model.config.columns, seen_words=vocabs["known_words"].stoi)
    for gold, pred in zip(gold_sentences, predicted, strict=True):
        score.add(gold, pred)
    return score


def word_dropout(counts, alpha, unk_index, generator):
    """Replace a training word by UNK with probability alpha / (alpha + count): rare words are
    often dropped, so the UNK embedding learns from words like those unseen at test time."""
    def apply(ids):
        word_ids = ids[:, 0]
        keep_prob = counts[word_ids.cpu()] / (counts[word_ids.cpu()] + alpha)
        dropped = torch.rand(len(word_ids), generator=generator) >= keep_prob
        ids = ids.clone()
        ids[dropped.to(ids.device), 0] = unk_index
        return ids
    return apply


def _prepare(config_overrides, train_sentences, state, min_word_freq):
    if state:
        vocabs = {name: Vocab.from_dict(data) for name, data in state["vocabs"].items()}
        return vocabs, TaggerConfig(**state["config"])
    vocabs = build_vocabs(train_sentences, config_overrides["columns"], min_word_freq)
    config = TaggerConfig(n_words=len(vocabs["words"]),
                          feature_sizes=[len(vocabs[name]) for name in FEATURE_NAMES],
                          tag_sizes={c: len(vocabs[c]) for c in config_overrides["columns"]},
                          **config_overrides)
    return vocabs, config


def _train_epoch(model, batches, inputs, targets, dropout_ids, optimizer, clock, device, desc,
                 progress):
    """One pass over ``batches`` (lists of sentence indices into ``inputs`` and each column's
    ``targets``): the loss summed over the columns, one optimizer step per batch. Returns the
    last batch's loss, the rows meProp touched summed over the steps, and the steps."""
    model.train()
    touched_sum = steps = 0
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        logits, _ = model([inputs[i].to(device) for i in batch], dropout_ids)
        loss = sum(F.cross_entropy(logits[column], pack_sequence(
            [targets[column][i] for i in batch], enforce_sorted=False).data.to(device))
            for column in targets)
        optimizer.zero_grad(set_to_none=True)
        clock.backward(loss)
        optimizer.step()
        touched_sum += rows_touched(model) or 0.0
        steps += 1
    return loss, touched_sum, steps


def train_tagger(config_overrides, train_sentences, dev_sentences, options, out,
                 device=torch.device("cpu"), resume=False, progress=True, log=print):
    """Train; after each epoch tag dev, keep the best model (mean accuracy of the columns) at
    ``out``; ``out.resume`` holds the training state for ``resume=True``. Returns metrics."""
    check_dev_tags(dev_sentences, config_overrides["columns"])
    seed_everything(options.seed)
    state = load_checkpoint(resume_path(out)) if resume and resume_path(out).exists() else None
    vocabs, config = _prepare(config_overrides, train_sentences, state, options.min_word_freq)
    inputs = [encode_inputs(s, vocabs) for s in train_sentences]
    targets = {c: [encode_targets(s, vocabs, c) for s in train_sentences] for c in config.columns}
    log(f"{len(inputs)} training sentences, {sum(map(len, inputs))} words, "
        f"{len(vocabs['known_words'])} word types, {len(vocabs['words'])} with an embedding")
    model = TaggerModel(config).to(device)
    use_persistent_grad(model, options.persistent_grad or options.sparse_update)
    optimizer = make_optimizer(options.optimizer, model.parameters(),
                               options.lr or DEFAULT_LR[options.optimizer],
                               buffers=touched_weights(model) if options.sparse_update else None)
    best = {"dev_score": -1.0, "best_epoch": 0}
    first_epoch, elapsed, backprop = 1, 0.0, 0.0
    if state:
        first_epoch, best, elapsed, backprop = restore_training_state(state, model, optimizer)
        log(f"resuming after epoch {state['epoch']}")
    counts = word_counts(train_sentences, vocabs)
    clock = BackpropClock(device)
    clock.seconds = backprop
    touched_sum = steps = 0
    for epoch in range(first_epoch, options.epochs + 1):
        synchronize(device)
        start = time.perf_counter()
        # Seeded per epoch so that a resumed run sees the same batches as an uninterrupted one.
        generator = torch.Generator().manual_seed(options.seed * 1000 + epoch)
        dropout_ids = word_dropout(counts, config.word_dropout, vocabs["words"].unk_index,
                                   generator) if config.word_dropout else None
        batches = bucket_batches([len(x) for x in inputs], options.batch_size,
                                 seed=options.seed * 1000 + epoch)
        loss, epoch_touched, epoch_steps = _train_epoch(
            model, batches, inputs, targets, dropout_ids, optimizer, clock, device,
            desc=f"epoch {epoch}/{options.epochs}", progress=progress)
        touched_sum += epoch_touched
        steps += epoch_steps
        score = evaluate(model, vocabs, dev_sentences)
        synchronize(device)
        elapsed += time.perf_counter() - start
        dev = score.metrics("dev_")
        mean = sum(score.accuracy(c) for c in config.columns) / len(config.columns)
        log(f"epoch {epoch}: loss {loss.item():.4f}, dev " + ", ".join(
            f"{c.upper()} {score.accuracy(c):.2f}" for c in config.columns))
        if mean > best["dev_score"]:
            best = {**dev, "dev_score": mean, "best_epoch": epoch}
            save_checkpoint(out, model_payload(model, vocabs))
        save_training_state(out, model_payload(model, vocabs), optimizer, epoch, best, elapsed,
                            clock.seconds)
    metrics = {key: value for key, value in best.items() if key != "dev_score"}
    return {
        **metrics,
        "train_seconds": elapsed,
        "backprop_seconds": clock.seconds,
        "rows_touched": touched_sum / steps if steps else None,
        "train_words": sum(map(len, inputs)),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
