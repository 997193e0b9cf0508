"""scripts/ablate.py, scaled down: the effect-of-k study on real MNIST images, CSV and resume."""

import csv
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablate.py"


def test_quick_k_effect_writes_every_method_and_resumes(data_dir, tmp_path):
    out = tmp_path / "k.csv"
    command = [sys.executable, str(SCRIPT), "k-effect", "mnist", "--quick", "--out", str(out),
               "--data-dir", str(data_dir)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["method"], row["k"], row["hidden"]) for row in rows] == [
        ("meProp top-k", "20", "500"), ("meProp random-k", "20", "500"),
        ("dense, hidden k", "20", "20"), ("dense", "500", "500")]
    for row in rows:
        assert 10.0 < float(row["dev"]) <= 100.0 and 10.0 < float(row["test"]) <= 100.0
    # top-k and random-k keep the same k but train differently
    assert rows[0]["dev"] != rows[1]["dev"]
    resumed = subprocess.run(command + ["--resume"], check=True, capture_output=True, text=True)
    assert "..." not in resumed.stdout
    assert len(out.read_text().splitlines()) == 5
