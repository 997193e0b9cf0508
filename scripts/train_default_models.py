"""Train the default models shipped in the package, on UD English EWT.

    python scripts/train_default_models.py parser [--device cuda] [--data-dir DIR]
    python scripts/train_default_models.py tagger [--epochs 10] [--data-dir DIR]

Trains with the shipped model's recipe — ``tag train``'s defaults; ``parse train``'s defaults
plus the options chosen on EWT dev (``RECIPES`` below; docs/RESULTS.md has the runs behind
them) — with model selection on EWT dev only, stores the weights in float16 (the shipped file
must stay under 8 MB) at ``parser/models/en_ewt.pt`` / ``tagger/models/en_ewt.pt``, and
scores the stored model on EWT dev and test (the parser with gold POS, greedy decoding),
writing ``results/default_{parser,tagger}.json``.
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
from data.vocab import Vocab  # noqa: E402
from meprop.training import load_checkpoint, save_checkpoint  # noqa: E402
from parser import cli as parser_cli  # noqa: E402
from parser import trainer as parser_trainer  # noqa: E402
from tagger import cli as tagger_cli  # noqa: E402
from tagger import data as tagger_data  # noqa: E402
from tagger import predict as tagger_predict  # noqa: E402
from tagger import trainer as tagger_trainer  # noqa: E402

MODELS = {  # name -> (CLI group, shipped path, load_model, evaluate)
    "parser": (parser_cli.main, parser_cli.DEFAULT_MODEL, parser_trainer.load_model,
               parser_trainer.evaluate),
    "tagger": (tagger_cli.main, tagger_cli.DEFAULT_MODEL, tagger_predict.load_model,
               tagger_trainer.evaluate),
}

MAX_BYTES = 8 * 1024 * 1024

# The shipped models' training options beyond each command's defaults, and their seeds. The
# parser's were chosen on EWT dev (session 5, docs/RESULTS.md: "Beam search, 40 epochs").
RECIPES = {
    "parser": (["--pos-column", "both", "--word-dropout", "1", "--average", "0.99",
                "--dropout", "0.4", "--epochs", "40"], 3),
    "tagger": ([], 1),
}


def add_tag_pairs(payload, data_dir):
    """A tagger checkpoint of both columns written before taggers stored the UPOS/XPOS pairs
    seen in training gets them from its training data (EWT train, the recipe's)."""
    columns = payload["config"]["columns"]
    if {"upos", "xpos"} <= set(columns) and tagger_data.TAG_PAIRS not in payload["vocabs"]:
        train = conll.read(split_path("ud-english-ewt", "train", data_dir))
        pairs = Vocab.build(tagger_data.tag_pairs(train), pad=False, unk=False)
        payload["vocabs"][tagger_data.TAG_PAIRS] = pairs.to_dict()
    return payload


def shrink(source, target, data_dir=None):
    """Copy a checkpoint with float16 weights (plain data, loadable with weights_only)."""
    payload = load_checkpoint(source)
    if "tag_sizes" in payload["config"]:
        payload = add_tag_pairs(payload, data_dir)
    payload["model"] = {name: value.half() if value.is_floating_point() else value
                        for name, value in payload["model"].items()}
    save_checkpoint(target, payload)
    size = Path(target).stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{target} is {size} bytes, over the 8 MB limit")
    return size


def train_default(args):
    command, shipped, load_model, evaluate = MODELS[args.model]
    work = ROOT / "results" / f"default_{args.model}"
    work.mkdir(parents=True, exist_ok=True)
    full = work / f"{args.model}_full.pt"
    recipe, seed = RECIPES[args.model]
    options = ["train", *recipe, "--out", str(full), "--seed",
               str(seed if args.seed is None else args.seed), "--metrics-json",
               str(work / "train_metrics.json"), "--device", args.device, "--quiet",
               *args.train_option]
    if args.epochs:
        options += ["--epochs", str(args.epochs)]
    if args.data_dir:
        options += ["--data-dir", args.data_dir]
    if args.resume:
        options.append("--resume")
    if args.checkpoint:  # trained already, by the same command (documented beside the numbers)
        full = Path(args.checkpoint)
    else:
        result = CliRunner().invoke(command, options, catch_exceptions=False)
        print(result.output)
        if result.exit_code:
            raise SystemExit(result.exit_code)
    size = shrink(full, shipped, args.data_dir)
    model, vocabs = load_model(shipped)
    metrics = {"model_bytes": size, "threads": torch.get_num_threads()}
    for split in ("dev", "test"):
        path = split_path("ud-english-ewt", split, args.data_dir)
        gold = [s for s in conll.read(path) if len(s)]
        metrics.update(evaluate(model, vocabs, gold).metrics(f"{split}_"))
    summary = ROOT / "results" / f"default_{args.model}.json"
    summary.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the recipe's (parser 40, the tagger's command default)")
    parser.add_argument("--seed", type=int, default=None,
                        help="default: the recipe's (parser 3, tagger 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where to train (the shipped parser was trained on a GPU)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--train-option", action="append", default=[],
                        help="extra option for the train command, e.g. --train-option=--pos-column "
                        "--train-option=both")
    parser.add_argument("--checkpoint", default=None,
                        help="ship this checkpoint of the train command instead of training")
    args = parser.parse_args()
    train_default(args)


if __name__ == "__main__":
    main()
