"""The MNIST sanity task end to end: a few steps on generated digits, and the CLI."""

import gzip
import json

import pytest
import torch
from click.testing import CliRunner

from meprop.cli import main
from meprop.mnist import MLP, MLPConfig, train_mnist


def fake_mnist(n_train=5200, n_test=200, seed=0):
    """Class-dependent pixel blobs: learnable, so accuracy must rise above chance."""
    gen = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=gen)
        images = torch.randint(0, 60, (n, 28, 28), generator=gen)
        for digit in range(10):
            rows = labels == digit
            images[rows, digit * 2:digit * 2 + 6, 4:24] += 180
        return images.clamp(max=255).to(torch.uint8), labels.to(torch.uint8)

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return {"train_images": train_images, "train_labels": train_labels,
            "test_images": test_images, "test_labels": test_labels}


def test_mlp_layers_and_k():
    model = MLP(MLPConfig(hidden=30, layers=3, k=5, mode="unified"))
    assert [layer.out_features for layer in model.linears] == [30, 30, 30, 10]
    assert all(layer.k == 5 and layer.mode == "unified" for layer in model.linears)


@pytest.mark.parametrize("k,mode", [(None, "per_example"), (8, "per_example"), (8, "unified")])
def test_train_mnist_learns_and_reports(k, mode):
    metrics = train_mnist(MLPConfig(hidden=64, k=k, mode=mode), fake_mnist(), epochs=2,
                          batch_size=10, lr=0.003, progress=False)
    assert metrics["test_accuracy"] > 50.0  # chance is 10 %
    assert metrics["best_epoch"] in (1, 2)
    assert 0 < metrics["backprop_seconds"] < metrics["train_seconds"]
    expected_touched = 1.0 if k is None else None
    if expected_touched:
        assert metrics["rows_touched"] == 1.0
    else:
        assert 0 < metrics["rows_touched"] < 1.0


def test_train_mnist_is_deterministic_under_seed():
    runs = [train_mnist(MLPConfig(hidden=32, k=4), fake_mnist(), epochs=1, batch_size=50,
                        progress=False, seed=3) for _ in range(2)]
    assert runs[0]["dev_accuracy"] == runs[1]["dev_accuracy"]
    assert runs[0]["rows_touched"] == runs[1]["rows_touched"]


def test_persistent_grad_trains_exactly_as_fresh_gradients():
    """Same gradients, so the same run: the buffer changes speed, not results."""
    runs = [train_mnist(MLPConfig(hidden=32, k=4), fake_mnist(), epochs=1, batch_size=10,
                        progress=False, seed=3, persistent_grad=persistent)
            for persistent in (False, True)]
    for key in ("dev_accuracy", "test_accuracy", "rows_touched"):
        assert runs[0][key] == runs[1][key]


def test_sparse_update_with_adagrad_trains_as_the_dense_update():
    """AdaGrad on the touched rows alone is AdaGrad (a zero gradient row changes nothing)."""
    runs = [train_mnist(MLPConfig(hidden=32, k=4), fake_mnist(), epochs=1, batch_size=10,
                        optimizer="adagrad", progress=False, seed=3, sparse_update=sparse)
            for sparse in (False, True)]
    assert runs[1]["sparse_update"] and not runs[0]["sparse_update"]
    for key in ("dev_accuracy", "test_accuracy", "rows_touched"):
        assert runs[0][key] == pytest.approx(runs[1][key], abs=0.5)


def write_fake_mnist_dir(root):
    folder = root / "mnist"
    folder.mkdir(parents=True)
    tensors = fake_mnist()
    names = {"train_images": "train-images-idx3-ubyte.gz", "train_labels":
             "train-labels-idx1-ubyte.gz", "test_images": "t10k-images-idx3-ubyte.gz",
             "test_labels": "t10k-labels-idx1-ubyte.gz"}
    for key, name in names.items():
        tensor = tensors[key]
        magic = 2051 if tensor.dim() == 3 else 2049
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
        with gzip.open(folder / name, "wb") as handle:
            handle.write(header + tensor.numpy().tobytes())


def test_cli_mnist_writes_flat_metrics(data_dir, tmp_path):
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["mnist", "--epochs", "1", "--limit", "1000", "--hidden",
                                       "50", "--k", "0", "--data-dir", str(data_dir),
                                       "--metrics-json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    for key in ("dev_accuracy", "test_accuracy", "best_epoch", "train_seconds",
                "backprop_seconds", "rows_touched"):
        assert key in metrics
    assert all(not isinstance(value, (dict, list)) for value in metrics.values())
    assert metrics["test_accuracy"] > 50.0


def test_cli_reports_bad_data_dir_cleanly(tmp_path, monkeypatch):
    monkeypatch.delenv("MEPROP_DATA", raising=False)
    monkeypatch.setenv("MEPROP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    write_fake_mnist_dir(tmp_path / "data")
    result = CliRunner().invoke(main, ["mnist", "--data-dir", str(tmp_path / "data"), "--epochs",
                                       "1"])
    assert result.exit_code == 1
    assert "fails its checksum" in result.output and "Traceback" not in result.output


def test_cli_help_explains_every_option():
    result = CliRunner().invoke(main, ["mnist", "--help"])
    assert result.exit_code == 0
    for option in ("--k", "--mode", "--epochs", "--batch-size", "--optimizer", "--lr", "--hidden",
                   "--layers", "--dropout", "--seed", "--device", "--data-dir", "--metrics-json"):
        assert option in result.output
