"""Reproduce the paper's Tables 1 and 2: dense against meProp, Adam and AdaGrad, per task.

    python scripts/reproduce.py mnist|pos|parse [--quick] [--data-dir DIR] [--resume]
        [--treebank ewt|ptb-sample|wsj] [--wsj-dir DIR] [--out results/reproduce_TASK.md]
        [--threads 2] [--seed 1] [--epochs N] [--methods dense,meprop] [--optimizers adam,adagrad]

Each row runs the project's own command with the paper's settings (hidden 500; MNIST: 2 hidden
layers, batches of 10, k=20; POS: the BiLSTM tagger on XPOS, batches of 1 sentence, k=5;
parsing: 2 hidden layers, batches of 10,000 transitions, k=20) on UD English EWT (POS, parsing)
or MNIST, and appends its metrics to ``OUT.jsonl`` as soon as it finishes; the Markdown table
``OUT`` is rebuilt from that file after every row. ``--resume`` skips rows already there, so a
full table can be built over several sessions, and two processes given different
``--methods`` or ``--optimizers`` can fill one table side by side (each appends its rows and
rebuilds the table from the whole file). ``--epochs`` other than the paper's adds
``_Nepochs`` to the file names, so a shorter budget never mixes with the full one.
``--quick`` runs a scaled-down version (fewer epochs, the first training examples only) meant
to finish in minutes; its numbers are a smoke test, not a reproduction. Backprop time is the
whole backward pass (``loss.backward()``), selection included; the linear products alone are
timed by ``scripts/bench_backprop.py``.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import conll  # noqa: E402
from data.datasets import split_path  # noqa: E402
from meprop.cli import main as meprop_main  # noqa: E402
from parser.cli import main as parse_main  # noqa: E402
from tagger.cli import main as tag_main  # noqa: E402

# The paper's Table 1 (Adam): dense -> meProp score and backprop speed-up.
PAPER = {"mnist": "97.82 -> 98.01 (k=20), backprop 21.4x",
         "pos": "97.07 -> 97.12 (k=5), backprop 65.4x",
         "parse": "UAS 89.84 -> 90.01 (k=20), backprop 18.6x"}
SETTINGS = {  # task: (k, full epochs, quick epochs, quick training examples)
    "mnist": (20, 20, 2, 5000),
    "pos": (5, 20, 1, 500),
    "parse": (20, 30, 2, 1000),
}
SCORE = {"mnist": "accuracy", "pos": "xpos_accuracy", "parse": "uas"}


def run_command(command, options):
    result = CliRunner().invoke(command, options, catch_exceptions=False)
    if result.exit_code:
        raise SystemExit(f"failed: {' '.join(options)}\n{result.output}")


def subset(path, count, folder):
    """The first ``count`` sentences of a treebank, as a file in ``folder``."""
    target = Path(folder) / f"first{count}_{Path(path).name}"
    conll.write([s for _, s in zip(range(count), conll.read(path), strict=False)], target)
    return target


def treebank_splits(task, args, folder):
    """(train, dev, test) files: UD English EWT, or Penn Treebank trees converted to CoNLL-X
    dependencies by ``meprop convert-ptb`` (the NLTK sample, or the user's WSJ with the
    paper's splits for the task)."""
    if args.treebank == "ewt":
        return tuple(split_path("ud-english-ewt", split, args.data_dir)
                     for split in ("train", "dev", "test"))
    source = "ptb-sample" if args.treebank == "ptb-sample" else "ptb-wsj"
    paths = []
    for split in ("train", "dev", "test"):
        path = Path(folder) / f"{args.treebank}_{split}.conllx"
        options = ["convert-ptb", source, "--split", split, "--task",
                   "tag" if task == "pos" else "parse", "-o", str(path)]
        if args.data_dir:
            options += ["--data-dir", args.data_dir]
        if args.wsj_dir:
            options += ["--wsj-dir", args.wsj_dir]
        run_command(meprop_main, options)
        paths.append(path)
    return tuple(paths)


def parse_batch_options(args, optimizer):
    """The paper's 10,000 transitions per batch; on the NLTK sample (160,000 training
    transitions, 16 updates an epoch at that size) 2,000 with Adam 0.002, chosen on its dev."""
    if args.treebank == "ptb-sample":
        return ["--batch-size", "2000"] + (["--lr", "0.002"] if optimizer == "adam" else [])
    return ["--batch-size", "10000"]


def run_row(task, optimizer, k, args, folder):
    """Train (and score on test) one configuration; returns a flat metrics dict."""
    _, full_epochs, quick_epochs, quick_examples = SETTINGS[task]
    epochs = args.epochs or (quick_epochs if args.quick else full_epochs)
    quick_examples = args.examples or quick_examples
    train_json, test_json = Path(folder) / "train.json", Path(folder) / "test.json"
    model = Path(folder) / "model.pt"
    common = ["--k", str(k), "--optimizer", optimizer, "--epochs", str(epochs), "--seed",
              str(args.seed),
              "--device", args.device, "--metrics-json", str(train_json)]
    if task == "mnist":
        options = ["mnist", *common, "--batch-size", "10"]
        if args.data_dir:
            options += ["--data-dir", args.data_dir]
        if args.quick:
            options += ["--limit", str(quick_examples)]
        run_command(meprop_main, options)
        return {"epochs": epochs, **json.loads(train_json.read_text())}
    train, dev, test = treebank_splits(task, args, folder)
    if args.quick:
        train = subset(train, quick_examples, folder)
        dev, test = subset(dev, quick_examples // 2, folder), subset(test, quick_examples // 2,
                                                                       folder)
    files = ["--train", str(train), "--dev", str(dev), "--out", str(model), "--quiet"]
    if task == "pos":
        run_command(tag_main, ["train", *common, *files, "--column", "xpos", "--batch-size", "1"])
        run_command(tag_main, ["evaluate", str(test), "--model", str(model), "--metrics-json",
                               str(test_json)])
    else:
        run_command(parse_main, ["train", *common, *files,
                                 *parse_batch_options(args, optimizer)])
        run_command(parse_main, ["evaluate", str(test), "--model", str(model),
                                 "--metrics-json", str(test_json)])
    metrics = {"epochs": epochs, **json.loads(train_json.read_text())}
    test_metrics = json.loads(test_json.read_text())
    metrics.update({f"test_{key}": value for key, value in test_metrics.items()})
    return metrics


def markdown(task, rows):
    score = SCORE[task]
    lines = [f"| optimizer | method | k | epochs | best epoch | backprop s | train s | "
             f"dev {score} | test {score} | backprop x | rows touched |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    dense = {row["optimizer"]: row for row in rows if row["k"] == 0}
    order = ["adam", "adagrad"]  # rows may finish in any order when runs go side by side
    for row in sorted(rows, key=lambda row: (order.index(row["optimizer"]), row["k"])):
        base = dense.get(row["optimizer"])
        ratio = (f"{base['backprop_seconds'] / row['backprop_seconds']:.2f}"
                 if base and row["backprop_seconds"] else "")
        touched = row.get("rows_touched")
        lines.append(
            f"| {row['optimizer']} | {'dense' if row['k'] == 0 else 'meProp'} | {row['k']} | "
            f"{row.get('epochs', SETTINGS[task][1])} | {row['best_epoch']} | "
            f"{row['backprop_seconds']:.1f} | {row['train_seconds']:.1f} | "
            f"{row[f'dev_{score}']:.2f} | {row[f'test_{score}']:.2f} | {ratio} | "
            f"{'' if touched is None else f'{touched:.3f}'} |")
    return "\n".join(lines)


def method_ks(methods, meprop_k, parser):
    """k of each requested method, in table order: dense (0), then meProp."""
    names = [name.strip() for name in methods.split(",") if name.strip()]
    unknown = sorted(set(names) - {"dense", "meprop"})
    if unknown or not names:
        parser.error(f"--methods takes dense and/or meprop, got {methods!r}")
    return [k for name, k in (("dense", 0), ("meprop", meprop_k)) if name in names]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="scaled down: minutes, not hours")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--treebank", choices=["ewt", "ptb-sample", "wsj"], default="ewt",
                        help="POS and parsing data: UD English EWT, the NLTK PTB sample, or "
                        "the full WSJ (--wsj-dir) with the paper's splits [default: ewt]")
    parser.add_argument("--wsj-dir", default=None, help="your LDC WSJ copy (wsj/00 ... 24)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip rows already in OUT.jsonl")
    parser.add_argument("--out", default=None, help="[default: results/reproduce_TASK.md]")
    parser.add_argument("--optimizers", default="adam,adagrad")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--methods", default="dense,meprop",
                        help="which rows of each optimizer to run: dense, meprop or both")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of every run (initialisation, order, dropout) [default: 1]")
    parser.add_argument("--examples", type=int, default=None,
                        help="with --quick: training examples (sentences, images) to keep")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.treebank == "wsj" and not args.wsj_dir:
        parser.error("--treebank wsj needs --wsj-dir")
    suffix = ("" if args.treebank == "ewt" or args.task == "mnist" else f"_{args.treebank}") + (
        "_quick" if args.quick else "") + ("" if args.seed == 1 else f"_seed{args.seed}") + (
        f"_{args.epochs}epochs" if args.epochs and args.epochs != SETTINGS[args.task][1] else "")
    out = Path(args.out or ROOT / "results" / f"reproduce_{args.task}{suffix}.md")
    log = out.with_suffix(".jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()] if (
        args.resume and log.exists()) else []
    if not args.resume:
        log.write_text("")
    done = {(row["optimizer"], row["k"]) for row in rows}
    ks = method_ks(args.methods, SETTINGS[args.task][0], parser)
    for optimizer in args.optimizers.split(","):
        for k in ks:
            if (optimizer, k) in done:
                continue
            print(f"{args.task}: {optimizer}, k={k} ...", flush=True)
            with tempfile.TemporaryDirectory() as folder:
                metrics = run_row(args.task, optimizer, k, args, folder)
            row = {"task": args.task, "optimizer": optimizer, "k": k, "quick": args.quick,
                   "seed": args.seed, "threads": torch.get_num_threads(), **metrics}
            with log.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows = [json.loads(line) for line in log.read_text().splitlines()]  # all writers'
            title = args.task + ("" if args.task == "mnist" else f", {args.treebank}")
            title += (" (quick)" if args.quick else "") + (
                "" if args.seed == 1 else f", seed {args.seed}")
            out.write_text(f"{title}; paper (Adam): {PAPER[args.task]}\n\n"
                           f"{markdown(args.task, rows)}\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
