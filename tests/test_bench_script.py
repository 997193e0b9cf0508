"""The benchmark script runs and prints its table (timings are not asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_backprop.py"


@pytest.mark.parametrize("extra", [[], ["--persistent-grad"]])
def test_bench_backprop_quick_prints_a_row_per_case(extra):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--warmup", "1", "--threads",
         "1", "--layer-seconds", "0", *extra], capture_output=True, text=True, timeout=120,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| MNIST")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 9
        assert all(float(value) > 0 for value in cells[4:])
    lstm_rows = [line for line in result.stdout.splitlines() if line.startswith("| POS BiLSTM")]
    assert len(lstm_rows) == 2 and "warm caches" in lstm_rows[1]
    for row in lstm_rows:
        assert all(float(cell) > 0 for cell in row.strip("|").split("|")[4:])
    assert "threads 1" in result.stdout and "in 5 rounds of turns" in result.stdout
    assert f"persistent grad {'on' if extra else 'off'}" in result.stdout


def test_bench_backprop_names_the_level_and_prints_the_reference_under_each_row():
    from meprop import kernels

    if kernels.cpu() is None:
        pytest.skip("compiled kernels unavailable")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--warmup", "1", "--threads",
         "1", "--layer-seconds", "0", "--rounds", "1", "--compare-reference"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    header = next(line for line in result.stdout.splitlines() if line.startswith("# CPU:"))
    assert kernels.cpu_model() in header and f"kernels built for {kernels.level()}" in header
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for name in ("MNIST hidden 1", "MNIST hidden 2", "POS BiLSTM"):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"| {name} |"))
        assert lines[at + 1].startswith(f"| {name}, PyTorch path |")
        assert all(float(cell) > 0 for cell in lines[at + 1].strip("|").split("|")[4:])


def test_bench_backprop_refuses_to_emulate_without_a_level():
    result = subprocess.run([sys.executable, str(SCRIPT), "--emulate-isa", "--quick"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--emulate-isa needs --level" in result.stderr


def test_bench_backprop_times_whole_steps_with_sparse_updates():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps-only", "--sparse-update", "--repeats", "1",
         "--warmup", "0", "--step-seconds", "0.01", "--threads", "1"],
        capture_output=True, text=True, timeout=300, check=True)
    assert "sparse update on" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| MNIST", "| parser"))]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(float(value) > 0 for value in cells[1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("extra", [[], ["--persistent-grad"]])
def test_bench_backprop_times_cuda_graphs(extra):
    """The graphed timings run (and the script itself checks replayed against eager gradients)."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda", "--cuda-graph", "--quick", "--repeats",
         "2", "--warmup", "1", *extra], capture_output=True, text=True, timeout=120, check=True)
    assert "backward captured in a CUDA graph" in result.stdout
    assert len([line for line in result.stdout.splitlines() if line.startswith("| MNIST")]) == 2


def test_bench_backprop_refuses_cuda_graphs_on_the_cpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--cuda-graph", "--quick"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--cuda-graph needs --device cuda" in result.stderr


@pytest.mark.parametrize("beam,tags", [("1", "gold"), ("3", "gold"), ("1", "tagger"),
                                       ("2", "joint")])
def test_bench_parser_reports_its_speed(beam, tags, data_dir):
    script = SCRIPT.with_name("bench_parser.py")
    result = subprocess.run(
        [sys.executable, str(script), "--limit", "20", "--repeats", "1", "--threads", "1",
         "--beam", beam, "--tags", tags, "--data-dir", str(data_dir)], capture_output=True,
        text=True, timeout=120, check=True)
    assert f"beam {beam}, POS {tags}" in result.stdout
    assert "20 sentences" in result.stdout and "sentences/s" in result.stdout


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_repeated_backward_gives_the_gradients_of_a_fresh_forward(mode):
    """The warm-cache diagnostic times the same backward: each run over the retained forward
    rewrites the persistent gradients with what a forward and backward of their own give."""
    sys.path.insert(0, str(SCRIPT.parent))
    import bench_backprop

    import meprop

    torch.manual_seed(0)
    inputs = torch.randn(6, 1, 12, requires_grad=True)
    layer = meprop.LSTM(12, 16, bidirectional=True, k=3, mode=mode, persistent_grad=True)
    bench_backprop.backward_seconds(layer, inputs, None, torch.device("cpu"))
    expected = bench_backprop.gradients(layer, inputs)
    repeated = bench_backprop.RepeatedBackward()
    for _ in range(3):
        repeated(layer, inputs, None, torch.device("cpu"))
        for got, want in zip(bench_backprop.gradients(layer, inputs), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_jackknife_tags_each_part_by_a_tagger_that_did_not_see_it(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from jackknife_tags import contiguous_folds

    from data import conll

    parts = contiguous_folds(list(range(10)), 3)
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    words = [("The", "DET", "DT"), ("dog", "NOUN", "NN"), ("barks", "VERB", "VBZ"),
             (".", "PUNCT", ".")]
    lines = []
    for number in range(6):
        lines.append(f"# sent_id = {number}")
        for index, (form, upos, xpos) in enumerate(words, 1):
            head = 0 if index == 3 else 3 if index != 1 else 2
            lines.append(f"{index}\t{form}\t_\t{upos}\t{xpos}\t_\t{head}\tdep\t_\t_")
        lines.append("")
    treebank = tmp_path / "t.conllu"
    treebank.write_text("\n".join(lines) + "\n", encoding="utf-8")
    work = tmp_path / "work"
    subprocess.run(
        [sys.executable, str(SCRIPT.with_name("jackknife_tags.py")), "--train", str(treebank),
         "--dev", str(treebank), "--folds", "2", "--epochs", "1", "--jobs", "2", "--work",
         str(work), "--train-option=--hidden", "--train-option=8"],
        capture_output=True, text=True, timeout=300, check=True)
    original = list(conll.read(treebank))
    jackknifed = list(conll.read(work / "train.jackknifed.conllu"))
    assert [s.forms for s in jackknifed] == [s.forms for s in original]
    assert [s.heads for s in jackknifed] == [s.heads for s in original]
    assert [s.deprels for s in jackknifed] == [s.deprels for s in original]
    assert all(tag != "_" for s in jackknifed for tag in s.upos + s.xpos)
    def sentence_ids(path):
        return {line for line in path.read_text().splitlines() if line.startswith("# sent_id")}

    for fold in range(2):  # each fold's tagger trained on the other fold only
        trained_on = sentence_ids(work / f"fold{fold}.train.conllu")
        heldout = sentence_ids(work / f"fold{fold}.heldout.conllu")
        assert len(trained_on) == len(heldout) == 3 and trained_on.isdisjoint(heldout)
        assert (work / f"fold{fold}.metrics.json").exists()


def test_bench_tagger_times_dense_and_meprop_on_the_same_batches(data_dir):
    """The tagger bench trains both models in turns over EWT's first batches and reports each
    one's words (the same for both) and the ratios."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("bench_tagger.py")), "--skip-tagging",
         "--train-batches", "6", "--batch-size", "2", "--threads", "1", "--data-dir",
         str(data_dir)], capture_output=True, text=True, timeout=300, check=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("training ")]
    assert [line.split(":")[0] for line in lines] == ["training dense", "training meProp k=5"]
    words = {line.split(": ")[1].split(" words")[0] for line in lines}
    assert len(words) == 1 and int(words.pop()) > 0
    assert "in 6 steps of 2 sentences" in lines[0]
    assert "meProp vs dense: whole step" in result.stdout
