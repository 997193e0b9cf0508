"""scripts/reproduce.py, scaled down: real commands on a few real examples, rows and table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py"


@pytest.mark.parametrize("task,examples,treebank", [
    ("mnist", "500", "ewt"), ("pos", "40", "ewt"), ("parse", "60", "ewt"),
    ("parse", "60", "ptb-sample")])
def test_quick_reproduction_writes_rows_and_resumes(task, examples, treebank, data_dir,
                                                    tmp_path):
    out = tmp_path / f"{task}.md"
    command = [sys.executable, str(SCRIPT), task, "--quick", "--examples", examples, "--epochs",
               "1", "--optimizers", "adam", "--threads", "1", "--out", str(out), "--data-dir",
               str(data_dir), "--treebank", treebank]
    seed = 2 if task == "mnist" else 1  # one case runs another seed
    command += ["--seed", str(seed)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert all(row["seed"] == seed for row in rows)
    assert ("seed 2" in out.read_text()) == (seed == 2)
    assert [(row["optimizer"], row["k"]) for row in rows] == [("adam", 0),
                                                              ("adam", {"mnist": 20, "pos": 5,
                                                                        "parse": 20}[task])]
    table = out.read_text()
    assert table.count("| adam |") == 2 and "dense" in table and "meProp" in table
    resumed = subprocess.run(command + ["--resume"], check=True, capture_output=True, text=True)
    assert "..." not in resumed.stdout  # nothing left to run
    assert len(out.with_suffix(".jsonl").read_text().splitlines()) == 2


def test_methods_run_apart_fill_one_table(data_dir, tmp_path):
    """Two runs with different --methods (as side by side on two cores) give one ordered table."""
    out = tmp_path / "mnist.md"
    command = [sys.executable, str(SCRIPT), "mnist", "--quick", "--examples", "200", "--epochs",
               "1", "--optimizers", "adam", "--threads", "1", "--out", str(out), "--data-dir",
               str(data_dir), "--resume"]
    subprocess.run(command + ["--methods", "meprop"], check=True, capture_output=True, text=True)
    subprocess.run(command + ["--methods", "dense"], check=True, capture_output=True, text=True)
    table = out.read_text()
    assert table.index("| dense |") < table.index("| meProp |")
    assert "| 1.00 |" in table  # the dense row is the ratio's base once both are there
    bad = subprocess.run(command + ["--methods", "sparse"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--methods" in bad.stderr
