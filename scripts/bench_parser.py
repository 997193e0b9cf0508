"""Parsing speed of a trained model: sentences and words per second, steady state.

    python scripts/bench_parser.py [--model parser/models/en_ewt.pt] [--threads 2] [--repeats 3]
        [--beam 1] [--tags gold|tagger|joint]

Parses UD English EWT dev with batched decoding (the default batch of ``parse predict``),
greedy unless ``--beam`` says otherwise (``parse predict`` uses a beam of 8). POS: the gold
tags (default); ``tagger``: the shipped tagger's, tagging timed too; ``joint``: tags and parse
chosen together, as ``parse predict`` does for a file without tags (parser/joint.py). Model
loading and one warm-up pass are excluded; the median of the timed passes is reported. Run it
alone.
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
from parser.joint import tag_and_parse  # noqa: E402
from parser.trainer import load_model  # noqa: E402
from tagger.cli import DEFAULT_MODEL as DEFAULT_TAGGER  # noqa: E402
from tagger.predict import load_model as load_tagger  # noqa: E402
from tagger.predict import tag_alternatives, tag_sentences  # noqa: E402


def parse_with(tags, model, vocabs, tagger, sentences, args):
    """Parse ``sentences`` in place with the POS that ``tags`` names (see the docstring)."""
    if tags == "joint":
        alternatives = tag_alternatives(tagger[0], sentences, tagger[1])
        tag_and_parse(model, vocabs, sentences, alternatives, beam=args.beam,
                      batch_size=args.batch_size)
        return
    if tags == "tagger":
        tag_sentences(tagger[0], sentences, tagger[1])
    parse_sentences(model, sentences, vocabs, batch_size=args.batch_size, beam=args.beam)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=DECODE_BATCH)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N sentences only")
    parser.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy)")
    parser.add_argument("--tags", choices=["gold", "tagger", "joint"], default="gold",
                        help="POS: gold, the shipped tagger's, or chosen with the parse")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, vocabs = load_model(args.model)
    tagger = load_tagger(DEFAULT_TAGGER) if args.tags != "gold" else None
    sentences = [s for s in conll.read(split_path("ud-english-ewt", "dev", args.data_dir))
                 if len(s)][:args.limit]
    words = sum(len(s) for s in sentences)
    times = []
    for repeat in range(args.repeats + 1):
        copies = [s.copy() for s in sentences]
        start = time.perf_counter()
        parse_with(args.tags, model, vocabs, tagger, copies, args)
        if repeat:  # the first pass is a warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, model {args.model}, beam {args.beam}, POS {args.tags}")
    print(f"{len(sentences)} sentences, {words} words: {seconds:.3f} s, "
          f"{len(sentences) / seconds:.0f} sentences/s, {words / seconds:.0f} words/s")


if __name__ == "__main__":
    main()
