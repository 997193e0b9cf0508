"""The paper's ablations (Sun et al. 2017, Tables 3-5 and Figure 4), through the project's commands.

    python scripts/ablate.py k-effect mnist|parse [--epochs N] [--resume] [--quick]
    python scripts/ablate.py depth|dropout|mode [--epochs N] [--resume] [--quick]
    python scripts/ablate.py plot

* ``k-effect``: the score as k/d goes 1, 2, 4, 8, 16, 32, 64, 100 % of the hidden size d=500,
  for top-k meProp, random-k meProp (same k, entries drawn at random), and a plain dense network
  whose hidden layers have k units. At 100 % all three are the dense network of 500 units, run
  once. MNIST (784-500-500-10, batches of 10) or the parser on the NLTK PTB sample (converted
  with ``meprop convert-ptb``; batches of 2,000 transitions, Adam 0.002, XPOS).
* ``depth``: MNIST MLPs of 2-5 hidden layers, dense vs meProp k=20.
* ``dropout``: MNIST, dense vs meProp k=20, dropout 0, 0.1, 0.3.
* ``mode``: unified vs per-example meProp k=20, MNIST and parser.
* ``plot``: ``docs/effect_of_k_TASK.png`` from ``results/ablation_k-effect_TASK.csv``.

Each finished run is appended at once to ``results/ablation_STUDY[_TASK].csv``; ``--resume``
skips runs already there. Seed 1 everywhere; settings are chosen on dev, test is reported.
``--quick`` shrinks everything (tests); its numbers mean nothing.
"""

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meprop.cli import main as meprop_main  # noqa: E402
from parser.cli import main as parse_main  # noqa: E402
from scripts.reproduce import run_command, treebank_splits  # noqa: E402

HIDDEN = 500
FRACTIONS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)
FIELDS = ["study", "task", "method", "k", "k_fraction", "hidden", "layers", "dropout", "mode",
          "epochs", "dev", "test", "best_epoch", "train_seconds", "backprop_seconds",
          "threads"]
DEFAULT_EPOCHS = {"mnist": 3, "parse": 8}


class Runner:
    """Runs one configuration of a task and returns its scores."""

    def __init__(self, args, folder):
        self.args, self.folder = args, Path(folder)
        self.ptb = None

    def ptb_splits(self):
        """The NLTK PTB sample as CoNLL-X dependencies, converted once per run of the script."""
        if self.ptb is None:
            source = SimpleNamespace(treebank="ptb-sample", data_dir=self.args.data_dir,
                                     wsj_dir=None)
            self.ptb = dict(zip(("train", "dev", "test"),
                                treebank_splits("parse", source, self.folder), strict=True))
        return self.ptb

    def run(self, task, k, selection="topk", hidden=HIDDEN, layers=2, dropout=None,
            mode="per_example"):
        metrics_path = self.folder / "metrics.json"
        common = ["--k", str(k), "--mode", mode, "--selection", selection, "--hidden",
                  str(hidden), "--layers", str(layers), "--epochs", str(self.epochs(task)),
                  "--seed", "1", "--device", "cpu", "--metrics-json", str(metrics_path)]
        if dropout is not None:
            common += ["--dropout", str(dropout)]
        if task == "mnist":
            options = ["mnist", *common]
            if self.args.data_dir:
                options += ["--data-dir", self.args.data_dir]
            if self.args.quick:
                options += ["--limit", "1000"]
            run_command(meprop_main, options)
            metrics = json.loads(metrics_path.read_text())
            return metrics, metrics["dev_accuracy"], metrics["test_accuracy"]
        splits = self.ptb_splits()
        model = self.folder / "parser.pt"
        run_command(parse_main, ["train", *common, "--train", str(splits["train"]), "--dev",
                            str(splits["dev"]), "--batch-size", "2000", "--lr", "0.002",
                            "--out", str(model), "--quiet"])
        metrics = json.loads(metrics_path.read_text())
        test_path = self.folder / "test.json"
        run_command(parse_main, ["evaluate", str(splits["test"]), "--model", str(model),
                            "--metrics-json", str(test_path)])
        return metrics, metrics["dev_uas"], json.loads(test_path.read_text())["uas"]

    def epochs(self, task):
        if self.args.quick:
            return 1
        return self.args.epochs or DEFAULT_EPOCHS[task]


def k_effect_runs(fractions):
    """(method, k, run options): top-k, random-k and small-hidden at each k/d; dense once."""
    for fraction in fractions[:-1]:
        k = max(1, round(fraction * HIDDEN))
        yield "meProp top-k", k, fraction, dict(k=k)
        yield "meProp random-k", k, fraction, dict(k=k, selection="random")
        yield "dense, hidden k", k, fraction, dict(k=0, hidden=k)
    yield "dense", HIDDEN, 1.0, dict(k=0)


def study_runs(study, task, quick=False):
    """(task, method, k, fraction, options) of one study."""
    if study == "k-effect":
        for method, k, fraction, options in k_effect_runs((0.04, 1.0) if quick else FRACTIONS):
            yield task, method, k, fraction, options
    elif study == "depth":
        for layers in (2, 3, 4, 5):
            yield "mnist", "dense", 0, 1.0, dict(k=0, layers=layers)
            yield "mnist", "meProp top-k", 20, 0.04, dict(k=20, layers=layers)
    elif study == "dropout":
        for dropout in (0.0, 0.1, 0.3):
            yield "mnist", "dense", 0, 1.0, dict(k=0, dropout=dropout)
            yield "mnist", "meProp top-k", 20, 0.04, dict(k=20, dropout=dropout)
    elif study == "mode":
        for name in ("mnist", "parse"):
            for mode in ("per_example", "unified"):
                yield name, f"meProp top-k, {mode}", 20, 0.04, dict(k=20, mode=mode)


def key_of(row):
    return (row["task"], row["method"], str(row["k"]), str(row["layers"]), str(row["dropout"]),
            row["mode"])


def run_study(args):
    task_suffix = f"_{args.task}" if args.study == "k-effect" else ""
    out = Path(args.out or ROOT / "results" / f"ablation_{args.study}{task_suffix}"
               f"{'_quick' if args.quick else ''}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.resume and out.exists():
        with out.open() as handle:
            done = {key_of(row) for row in csv.DictReader(handle)}
    else:
        with out.open("w", newline="") as handle:
            csv.DictWriter(handle, FIELDS).writeheader()
    with tempfile.TemporaryDirectory() as folder:
        runner = Runner(args, folder)
        for task, method, k, fraction, options in study_runs(args.study, args.task, args.quick):
            row = {"study": args.study, "task": task, "method": method, "k": k,
                   "k_fraction": fraction, "hidden": options.get("hidden", HIDDEN),
                   "layers": options.get("layers", 2), "dropout": options.get("dropout", ""),
                   "mode": options.get("mode", "per_example"), "epochs": runner.epochs(task),
                   "threads": torch.get_num_threads()}
            if key_of({key: str(value) for key, value in row.items()}) in done:
                continue
            print(f"{args.study}: {task}, {method}, k={k}, {options} ...", flush=True)
            metrics, dev, test = runner.run(task, **options)
            row.update(dev=f"{dev:.2f}", test=f"{test:.2f}", best_epoch=metrics["best_epoch"],
                       train_seconds=f"{metrics['train_seconds']:.1f}",
                       backprop_seconds=f"{metrics['backprop_seconds']:.1f}")
            with out.open("a", newline="") as handle:
                csv.DictWriter(handle, FIELDS).writerow(row)
    print(out.read_text())


def plot(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task, score in (("mnist", "accuracy %"), ("parse", "UAS %")):
        path = ROOT / "results" / f"ablation_k-effect_{task}.csv"
        if not path.exists():
            print(f"no {path}; skipped")
            continue
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        dense = [row for row in rows if row["method"] == "dense"]
        figure, axis = plt.subplots(figsize=(6, 4))
        for method in ("meProp top-k", "meProp random-k", "dense, hidden k"):
            points = sorted((float(row["k_fraction"]) * 100, float(row["dev"]))
                            for row in rows + [dict(r, method=method) for r in dense]
                            if row["method"] == method)
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=method)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("k / d (%), d = 500")
        axis.set_ylabel(f"dev {score}")
        data = "MNIST" if task == "mnist" else "parser, NLTK PTB sample"
        axis.set_title(f"Effect of k: {data}, {rows[0]['epochs']} epochs")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        target = ROOT / "docs" / f"effect_of_k_{task}.png"
        figure.savefig(target, dpi=110)
        print(f"wrote {target}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=["k-effect", "depth", "dropout", "mode", "plot"])
    parser.add_argument("task", nargs="?", choices=["mnist", "parse"], default="mnist",
                        help="for k-effect: the task [default: mnist]")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run [default: 3 for MNIST, 8 for the parser]")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="skip runs already in the CSV")
    parser.add_argument("--quick", action="store_true", help="tiny runs for tests")
    parser.add_argument("--out", default=None, help="CSV path [default: results/...]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.study == "plot":
        plot(args)
    else:
        run_study(args)


if __name__ == "__main__":
    main()
