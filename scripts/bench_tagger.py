"""Tagger speed: tagging words/s of a trained model, and training words/s dense vs meProp.

    python scripts/bench_tagger.py [--model tagger/models/en_ewt.pt] [--threads 2] [--repeats 3]
        [--train-batches 100] [--batch-size 8]

Tagging: UD English EWT dev with the model, model loading and one warm-up pass excluded, median
of the timed passes. Training: the same minibatches of EWT train (default settings of
``tag train``: hidden 500, batches of 8 sentences, Adam) through a fresh dense (k=0) and meProp
(k=5) model; whole steps (forward, backward, optimizer) and the backward alone are timed after
10 warm-up steps. The two models take turns in 5 blocks of consecutive batches, so that the
machine's slow spells hit both alike. Run it alone on the machine.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import meprop  # noqa: E402
from data import conll  # noqa: E402
from data.batching import bucket_batches  # noqa: E402
from data.datasets import split_path  # noqa: E402
from meprop.optim import touched_weights  # noqa: E402
from meprop.training import make_optimizer  # noqa: E402
from tagger.cli import DEFAULT_MODEL  # noqa: E402
from tagger.data import FEATURE_NAMES, build_vocabs, encode_inputs, encode_targets  # noqa: E402
from tagger.model import TaggerConfig, TaggerModel  # noqa: E402
from tagger.predict import load_model, tag_sentences  # noqa: E402

WARMUP_STEPS = 10
ROUNDS = 5


def tagging_speed(args):
    model, vocabs = load_model(args.model)
    sentences = [s for s in conll.read(split_path("ud-english-ewt", "dev", args.data_dir))
                 if len(s)]
    words = sum(len(s) for s in sentences)
    times = []
    for repeat in range(args.repeats + 1):
        copies = [s.copy() for s in sentences]
        start = time.perf_counter()
        tag_sentences(model, copies, vocabs)
        if repeat:  # the first pass is a warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"tagging: {len(sentences)} sentences, {words} words: {seconds:.3f} s, "
          f"{words / seconds:.0f} words/s")


def make_trainer(args, vocabs, k):
    """A fresh tagger (dense when ``k`` is None) and its optimizer, as ``tag train`` makes them."""
    torch.manual_seed(1)
    config = TaggerConfig(n_words=len(vocabs["words"]),
                          feature_sizes=[len(vocabs[n]) for n in FEATURE_NAMES],
                          tag_sizes={c: len(vocabs[c]) for c in ("upos", "xpos")}, k=k)
    model = TaggerModel(config)
    meprop.use_persistent_grad(model, args.persistent_grad or args.sparse_update)
    buffers = touched_weights(model) if args.sparse_update and k else None
    optimizer = make_optimizer("adam", model.parameters(), 0.001, buffers=buffers)  # as tag train
    return model, optimizer


def train_step(model, optimizer, inputs, targets):
    """Seconds of one whole step (forward, loss, backward, Adam) and of its backward alone."""
    start = time.perf_counter()
    logits, _ = model(inputs)
    loss = sum(F.cross_entropy(logits[c], targets[c]) for c in model.config.columns)
    optimizer.zero_grad(set_to_none=True)
    backward_start = time.perf_counter()
    loss.backward()
    backward_end = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start, backward_end - backward_start


def training_speed(args):
    """{name: (step seconds, backward seconds, words)} for dense and meProp over the same
    batches. The two take turns in ROUNDS blocks of consecutive batches, so that the
    machine's slow spells hit both alike."""
    sentences = [s for s in conll.read(split_path("ud-english-ewt", "train", args.data_dir))
                 if len(s)]
    vocabs = build_vocabs(sentences, ["upos", "xpos"])
    batches = bucket_batches([len(s) for s in sentences], args.batch_size, seed=1)
    encoded = []
    for batch in batches[:WARMUP_STEPS + args.train_batches]:
        inputs = [encode_inputs(sentences[i], vocabs) for i in batch]
        targets = {c: pack_sequence([encode_targets(sentences[i], vocabs, c) for i in batch],
                                    enforce_sorted=False).data for c in ("upos", "xpos")}
        encoded.append((inputs, targets, sum(len(x) for x in inputs)))
    trainers = {"dense": make_trainer(args, vocabs, None),
                "meProp k=5": make_trainer(args, vocabs, 5)}
    for model, optimizer in trainers.values():
        for inputs, targets, _ in encoded[:WARMUP_STEPS]:
            train_step(model, optimizer, inputs, targets)
    timed = encoded[WARMUP_STEPS:]
    block = max(1, -(-len(timed) // ROUNDS))
    totals = {name: [0.0, 0.0, 0] for name in trainers}
    for start in range(0, len(timed), block):
        for name, (model, optimizer) in trainers.items():
            for inputs, targets, words in timed[start:start + block]:
                step, backward = train_step(model, optimizer, inputs, targets)
                totals[name][0] += step
                totals[name][1] += backward
                totals[name][2] += words
    return {name: tuple(values) for name, values in totals.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-tagging", action="store_true")
    parser.add_argument("--persistent-grad", action="store_true",
                        help="meProp layers keep persistent weight-gradient buffers")
    parser.add_argument("--sparse-update", action="store_true",
                        help="the optimizer updates only the rows meProp touched (implies "
                        "--persistent-grad; dense runs are unaffected)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores")
    if not args.skip_tagging:
        tagging_speed(args)
    results = training_speed(args)
    for name, (steps, backward, words) in results.items():
        print(f"training {name}: {words} words in {args.train_batches} steps of "
              f"{args.batch_size} sentences: step {steps:.2f} s ({words / steps:.0f} words/s), "
              f"backward {backward:.2f} s")
    (dense_step, dense_backward, _), (meprop_step, meprop_backward, _) = results.values()
    print(f"meProp vs dense: whole step {dense_step / meprop_step:.2f}x, "
          f"backward {dense_backward / meprop_backward:.2f}x")


if __name__ == "__main__":
    main()
