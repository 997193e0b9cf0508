"""Parsing speed of a trained model: sentences and words per second, steady state.

    python scripts/bench_parser.py [--model parser/models/en_ewt.pt] [--threads 2] [--repeats 3]
        [--beam 1]

Parses UD English EWT dev (gold POS) with batched decoding (the default batch of
``parse predict``), greedy unless ``--beam`` says otherwise (``parse predict`` uses a beam of
8); model loading and one warm-up pass are excluded; the median of the timed passes is
reported. Run it alone.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import conll  # noqa: E402
from data.datasets import split_path  # noqa: E402
from parser.cli import DEFAULT_MODEL  # noqa: E402
from parser.decode import DECODE_BATCH, parse_sentences  # noqa: E402
from parser.trainer import load_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=DECODE_BATCH)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N sentences only")
    parser.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, vocabs = load_model(args.model)
    sentences = [s for s in conll.read(split_path("ud-english-ewt", "dev", args.data_dir))
                 if len(s)][:args.limit]
    words = sum(len(s) for s in sentences)
    times = []
    for repeat in range(args.repeats + 1):
        copies = [s.copy() for s in sentences]
        start = time.perf_counter()
        parse_sentences(model, copies, vocabs, batch_size=args.batch_size, beam=args.beam)
        if repeat:  # the first pass is a warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, model {args.model}, beam {args.beam}")
    print(f"{len(sentences)} sentences, {words} words: {seconds:.3f} s, "
          f"{len(sentences) / seconds:.0f} sentences/s, {words / seconds:.0f} words/s")


if __name__ == "__main__":
    main()
