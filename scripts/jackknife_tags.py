"""Jackknifed POS tags for a training treebank: each part tagged by a tagger that never saw it.

    MEPROP_DATA=../shared/data python scripts/jackknife_tags.py [--folds 4] [--epochs 12]
        [--jobs 2] [--work results/jackknife]

A parser trained on gold tags meets, at prediction time, the tagger's errors it never saw in
training. Chen & Manning (2014) and most transition parsers since train on tags predicted by
k-fold jackknifing instead: the training file is cut into ``--folds`` contiguous parts, a
tagger is trained on all parts but one (``tag train``'s defaults, EWT dev for its model
selection), and it tags the part it left out. The tagged parts, put back in their order, are
``WORK/train.jackknifed.conllu``: the training file with its UPOS and XPOS columns predicted
and every other column unchanged. Folds already trained are reused, so an interrupted
run continues where it stopped.
"""

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import conll  # noqa: E402
from data.datasets import split_path  # noqa: E402


def contiguous_folds(sentences, folds):
    """Cut ``sentences`` into ``folds`` contiguous parts of nearly equal size, in order."""
    size, extra = divmod(len(sentences), folds)
    parts, start = [], 0
    for fold in range(folds):
        end = start + size + (1 if fold < extra else 0)
        parts.append(sentences[start:end])
        start = end
    return parts


def tag_command(*arguments):
    return [sys.executable, "-m", "tagger.cli", *arguments]


def run_fold(fold, work, epochs, seed, data_dir, threads, extra_options):
    model = work / f"fold{fold}.pt"
    tagged = work / f"fold{fold}.tagged.conllu"
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log = work / f"fold{fold}.log"
    metrics = work / f"fold{fold}.metrics.json"  # written when the fold's training has ended
    if not metrics.exists():
        train = ["train", "--train", str(work / f"fold{fold}.train.conllu"),
                 "--epochs", str(epochs), "--seed", str(seed), "--out", str(model),
                 "--metrics-json", str(metrics), "--quiet",
                 "--device", "cpu"]
        if data_dir:
            train += ["--data-dir", data_dir]
        train += extra_options
        if (work / f"fold{fold}.pt.resume").exists():
            train.append("--resume")
        with open(log, "a") as handle:
            subprocess.run(tag_command(*train), check=True, cwd=ROOT, env=environment,
                           stdout=handle, stderr=subprocess.STDOUT)
    subprocess.run(tag_command("predict", str(work / f"fold{fold}.heldout.conllu"),
                               "--model", str(model), "-o", str(tagged)),
                   check=True, cwd=ROOT, env=environment)
    return tagged


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default=None,
                        help="treebank to jackknife [default: UD English EWT train]")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12, help="tagger epochs per fold")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="folds trained at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per fold")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work", default=str(ROOT / "results" / "jackknife"))
    parser.add_argument("--dev", default=None,
                        help="dev treebank for the fold taggers' model selection "
                        "[default: UD English EWT dev]")
    parser.add_argument("--train-option", action="append", default=[],
                        help="extra option for tag train, e.g. --train-option=--hidden "
                        "--train-option=100")
    args = parser.parse_args()
    if args.folds < 2:
        parser.error("--folds must be at least 2")

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    train = args.train or split_path("ud-english-ewt", "train", args.data_dir)
    sentences = list(conll.read(train))
    parts = contiguous_folds(sentences, args.folds)
    for fold, heldout in enumerate(parts):
        rest = [s for other, part in enumerate(parts) if other != fold for s in part]
        conll.write(rest, work / f"fold{fold}.train.conllu")
        conll.write(heldout, work / f"fold{fold}.heldout.conllu")
        print(f"fold {fold}: trains on {len(rest)} sentences, tags {len(heldout)}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        extra = (["--dev", args.dev] if args.dev else []) + args.train_option
        tagged = list(pool.map(lambda fold: run_fold(fold, work, args.epochs, args.seed,
                                                     args.data_dir, args.threads, extra),
                               range(args.folds)))
    jackknifed = [s for path in tagged for s in conll.read(path)]
    if len(jackknifed) != len(sentences):
        raise SystemExit(f"tagged {len(jackknifed)} sentences, expected {len(sentences)}")
    target = work / "train.jackknifed.conllu"
    conll.write(jackknifed, target)
    print(f"wrote {target} ({len(jackknifed)} sentences)")


if __name__ == "__main__":
    main()
