"""Train the default models shipped in the package, on UD English EWT.

    python scripts/train_default_models.py parser [--epochs 30] [--data-dir DIR]

Trains with the command-line defaults of ``parse train`` (model selection on EWT dev only),
stores the weights in float16 (the shipped file must stay under 8 MB) at
``parser/models/en_ewt.pt``, and scores the stored model on EWT dev and test with gold POS,
writing ``results/default_parser.json``. The tagger arrives with its issue.
"""

import argparse
import json
import os
import sys
from pathlib import Path

# Transparent huge pages for PyTorch's large CPU allocations (set before torch is imported):
# without them every step page-faults its fresh 96 MB activations (see README, Speed).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import conll  # noqa: E402
from data.datasets import split_path  # noqa: E402
from meprop.training import load_checkpoint, save_checkpoint  # noqa: E402
from parser.cli import DEFAULT_MODEL  # noqa: E402
from parser.cli import main as parse_main  # noqa: E402
from parser.trainer import evaluate, load_model  # noqa: E402

MAX_BYTES = 8 * 1024 * 1024


def shrink(source, target):
    """Copy a checkpoint with float16 weights (plain data, loadable with weights_only)."""
    payload = load_checkpoint(source)
    payload["model"] = {name: value.half() if value.is_floating_point() else value
                        for name, value in payload["model"].items()}
    save_checkpoint(target, payload)
    size = Path(target).stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{target} is {size} bytes, over the 8 MB limit")
    return size


def train_parser(args):
    work = ROOT / "results" / "default_parser"
    work.mkdir(parents=True, exist_ok=True)
    full = work / "parser_full.pt"
    options = ["train", "--epochs", str(args.epochs), "--out", str(full), "--seed",
               str(args.seed), "--metrics-json", str(work / "train_metrics.json"),
               "--quiet"]
    if args.data_dir:
        options += ["--data-dir", args.data_dir]
    if args.resume:
        options.append("--resume")
    result = CliRunner().invoke(parse_main, options, catch_exceptions=False)
    print(result.output)
    if result.exit_code:
        raise SystemExit(result.exit_code)
    size = shrink(full, DEFAULT_MODEL)
    model, vocabs = load_model(DEFAULT_MODEL)
    metrics = {"model_bytes": size, "threads": torch.get_num_threads()}
    for split in ("dev", "test"):
        gold = [s for s in conll.read(split_path("ud-english-ewt", split, args.data_dir)) if len(s)]
        metrics.update(evaluate(model, vocabs, gold).metrics(f"{split}_"))
    (ROOT / "results" / "default_parser.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=["parser"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    train_parser(args)


if __name__ == "__main__":
    main()
