"""data.mnist idx reading and data.datasets resolution, on generated files and the real ones."""

import gzip
import hashlib

import pytest
import torch

from data import DataError
from data import mnist as mnist_data
from data.datasets import DataFile, Dataset, locate


def write_idx(path, magic, dims, payload=None, compress=True):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    size = 1
    for d in dims:
        size *= d
    body = payload if payload is not None else bytes(i % 256 for i in range(size))
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(header + body)
    return path


def test_read_idx_images(tmp_path):
    path = write_idx(tmp_path / "img.gz", 2051, [3, 4, 5])
    images = mnist_data.read_idx(path, 2051, 3)
    assert images.shape == (3, 4, 5) and images.dtype == torch.uint8
    assert images.flatten()[:5].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("problem,message", [
    ("magic", "wrong magic number 2049"),
    ("truncated", "needs"),
    ("count", "expected 7"),
    ("not_gzip", "not a readable gzip"),
    ("short", "truncated idx header"),
])
def test_read_idx_errors_name_the_file(tmp_path, problem, message):
    path = tmp_path / "bad.gz"
    if problem == "magic":
        write_idx(path, 2049, [3])
    elif problem == "truncated":
        write_idx(path, 2051, [3, 4, 5], payload=bytes(10))
    elif problem == "count":
        write_idx(path, 2051, [3, 4, 5])
    elif problem == "not_gzip":
        write_idx(path, 2051, [3, 4, 5], compress=False)
    else:
        with gzip.open(path, "wb") as handle:
            handle.write(b"\x00\x00")
    with pytest.raises(DataError, match=message) as error:
        mnist_data.read_idx(path, 2051, 7 if problem == "count" else None)
    assert str(path) in str(error.value)


def test_real_mnist_files(data_dir):
    tensors = mnist_data.load(data_dir)
    assert tensors["train_images"].shape == (60000, 28, 28)
    assert tensors["test_labels"].shape == (10000,)
    assert set(tensors["train_labels"].unique().tolist()) == set(range(10))


def tiny_dataset(source_dir):
    """A one-file dataset served from ``file://`` URLs (nothing leaves the machine)."""
    source = source_dir / "served" / "digits.bin"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"meprop test payload")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    files = (DataFile("tiny/digits.bin", digest, ("file:///nonexistent/digits.bin",
                                                    source.as_uri())),)
    return {"tiny": Dataset("tiny", "test", files)}, source


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("MEPROP_DATA", raising=False)
    monkeypatch.setenv("MEPROP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_locate_prefers_data_dir_then_env(isolated, monkeypatch):
    registry, source = tiny_dataset(isolated)
    for folder in ("option", "env"):
        (isolated / folder / "tiny").mkdir(parents=True)
        (isolated / folder / "tiny" / "digits.bin").write_bytes(source.read_bytes())
    monkeypatch.setenv("MEPROP_DATA", str(isolated / "env"))
    assert locate("tiny", isolated / "option", registry=registry) == isolated / "option"
    assert locate("tiny", None, registry=registry) == isolated / "env"


def test_locate_downloads_into_cache_past_a_dead_mirror(isolated):
    registry, source = tiny_dataset(isolated)
    root = locate("tiny", None, registry=registry)
    assert root == isolated / "cache"
    assert (root / "tiny" / "digits.bin").read_bytes() == source.read_bytes()
    assert not [p for p in (root / "tiny").iterdir() if p.name.endswith(".tmp")]


def test_locate_missing_names_every_place(isolated):
    registry, source = tiny_dataset(isolated)
    source.unlink()
    with pytest.raises(DataError) as error:
        locate("tiny", isolated / "option", registry=registry)
    text = str(error.value)
    assert "'tiny'" in text and "--data-dir" in text and "cache" in text and "MEPROP_DATA" in text
    assert not (isolated / "cache" / "tiny" / "digits.bin").exists()


def test_locate_stops_downloading_after_a_file_no_mirror_serves(isolated, monkeypatch):
    from data import datasets

    registry, source = tiny_dataset(isolated)
    source.unlink()
    first = registry["tiny"].files[0]
    second = DataFile("tiny/labels.bin", first.sha256, first.urls)
    registry = {"tiny": Dataset("tiny", "test", (first, second))}
    tried = []
    real_download = datasets._download
    monkeypatch.setattr(datasets, "_download",
                        lambda data_file, target: tried.append(data_file.path)
                        or real_download(data_file, target))
    with pytest.raises(DataError, match="downloads failed"):
        locate("tiny", None, registry=registry)
    assert tried == ["tiny/digits.bin"]


def test_locate_corrupted_file_fails_checksum(isolated):
    registry, _ = tiny_dataset(isolated)
    (isolated / "option" / "tiny").mkdir(parents=True)
    (isolated / "option" / "tiny" / "digits.bin").write_bytes(b"corrupted")
    with pytest.raises(DataError, match="fails its checksum"):
        locate("tiny", isolated / "option", registry=registry)


def test_locate_real_mnist(data_dir):
    assert locate("mnist", data_dir, download=False) == data_dir


def test_split_path_and_describe(isolated, monkeypatch, data_dir):
    from data.datasets import describe, split_path

    path = split_path("ud-english-ewt", "dev", data_dir)
    assert path == data_dir / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
    with pytest.raises(DataError, match="no split 'validation'"):
        split_path("ud-english-ewt", "validation", data_dir)
    rows = {name: where for name, _, where in describe(data_dir)}
    assert set(rows) == {"ud-english-ewt", "ptb-sample", "ptb-wsj", "mnist"}
    assert rows["mnist"].startswith(str(data_dir)) and "--wsj-dir" in rows["ptb-wsj"]


def test_wsj_needs_a_folder_with_trees(tmp_path):
    from data.datasets import locate_wsj

    with pytest.raises(DataError, match="--wsj-dir"):
        locate_wsj(None)
    with pytest.raises(DataError, match="no .mrg files"):
        locate_wsj(tmp_path)
    (tmp_path / "wsj" / "02").mkdir(parents=True)
    (tmp_path / "wsj" / "02" / "wsj_0200.mrg").write_text("( (S (NP (NN x))))\n")
    assert locate_wsj(tmp_path) == tmp_path


def test_data_list_command_downloads_nothing(isolated):
    from click.testing import CliRunner

    from meprop.cli import main

    result = CliRunner().invoke(main, ["data", "list"])
    assert result.exit_code == 0
    assert result.output.count("missing; would download to") == 3
    assert not (isolated / "cache").exists()
