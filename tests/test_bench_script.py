"""The benchmark script runs and prints its table (timings are not asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_backprop.py"


@pytest.mark.parametrize("extra", [[], ["--persistent-grad"]])
def test_bench_backprop_quick_prints_a_row_per_case(extra):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--warmup", "1", "--threads",
         "1", *extra], capture_output=True, text=True, timeout=120, check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| MNIST")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 9
        assert all(float(value) > 0 for value in cells[4:])
    assert "threads 1" in result.stdout
    assert f"persistent grad {'on' if extra else 'off'}" in result.stdout


@pytest.mark.parametrize("beam", ["1", "3"])
def test_bench_parser_reports_its_speed(beam, data_dir):
    script = SCRIPT.with_name("bench_parser.py")
    result = subprocess.run(
        [sys.executable, str(script), "--limit", "20", "--repeats", "1", "--threads", "1",
         "--beam", beam, "--data-dir", str(data_dir)], capture_output=True, text=True,
        timeout=120, check=True)
    assert f"beam {beam}" in result.stdout
    assert "20 sentences" in result.stdout and "sentences/s" in result.stdout
