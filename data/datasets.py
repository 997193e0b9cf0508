"""Named datasets: their files, official download URLs and SHA-256 sums.

Where a dataset is looked for, in order: the ``--data-dir`` option, ``$MEPROP_DATA``, then the
cache folder (``$MEPROP_CACHE``, else ``~/.cache/meprop``), where it is downloaded when missing.
Every folder uses the layout of the shared data mirror (``mnist/train-images-idx3-ubyte.gz``...).
"""

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data.atomic import atomic_path
from data.errors import DataError


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to a data root, with '/' separators
    sha256: str
    urls: tuple  # mirrors, tried in order


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple


def _mnist_file(name, sha256):
    # yann.lecun.com often refuses downloads, so the mirrors that torchvision and TensorFlow
    # use come first; all serve the same gzip files.
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    return DataFile(f"mnist/{name}", sha256, tuple(mirror + name for mirror in mirrors))


REGISTRY = {
    "mnist": Dataset(
        "mnist",
        "MNIST handwritten digits: 60,000 train / 10,000 test 28x28 images (idx, gzip)",
        (
            _mnist_file("train-images-idx3-ubyte.gz",
                        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            _mnist_file("train-labels-idx1-ubyte.gz",
                        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            _mnist_file("t10k-images-idx3-ubyte.gz",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            _mnist_file("t10k-labels-idx1-ubyte.gz",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
    ),
}


def cache_dir():
    return Path(os.environ.get("MEPROP_CACHE") or Path.home() / ".cache" / "meprop")


def search_roots(data_dir=None):
    """``[(label, folder)]`` in resolution order."""
    roots = []
    if data_dir:
        roots.append(("--data-dir", Path(data_dir)))
    if os.environ.get("MEPROP_DATA"):
        roots.append(("$MEPROP_DATA", Path(os.environ["MEPROP_DATA"])))
    roots.append(("cache", cache_dir()))
    return roots


def sha256sum(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(dataset, data_file, path):
    actual = sha256sum(path)
    if actual != data_file.sha256:
        raise DataError(
            f"{dataset.name}: {path} fails its checksum (SHA-256 {actual}, expected "
            f"{data_file.sha256}); replace it with the official file or delete it to download again"
        )


def _download(data_file, target):
    """Try each mirror; return None on success, else the list of failures."""
    failures = []
    for url in data_file.urls:
        try:
            with urllib.request.urlopen(url, timeout=30) as response, atomic_path(target) as tmp:
                total = int(response.headers.get("Content-Length") or 0) or None
                with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                  desc=Path(data_file.path).name) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
                if sha256sum(tmp) != data_file.sha256:
                    raise DataError("checksum mismatch")
            return None
        except (OSError, urllib.error.URLError, DataError, ValueError) as error:
            failures.append(f"{url}: {error}")
    return failures


def locate(name, data_dir=None, download=True, registry=REGISTRY):
    """Return the data root that holds every file of dataset ``name``, downloading if needed.

    Raises ``DataError`` naming the dataset, every place looked, and how to point at a copy.
    """
    if name not in registry:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    dataset = registry[name]
    roots = search_roots(data_dir)
    for _, root in roots:
        if all((root / f.path).is_file() for f in dataset.files):
            for data_file in dataset.files:
                _verify(dataset, data_file, root / data_file.path)
            return root
    failures = []
    if download:
        cache = cache_dir()
        for data_file in dataset.files:
            target = cache / data_file.path
            if target.is_file():
                _verify(dataset, data_file, target)
                continue
            failures += _download(data_file, target) or []
        if not failures:
            return cache
    looked = "; ".join(f"{label}: {root}" for label, root in roots)
    reason = ("downloads failed: " + " | ".join(failures)) if failures else "downloads disabled"
    raise DataError(
        f"dataset {name!r} not found (looked in {looked}; {reason}). Point at a local copy with "
        f"--data-dir DIR or MEPROP_DATA=DIR, where DIR holds "
        f"{', '.join(f.path for f in dataset.files)}"
    )


def copy_into(root, name, target_root, registry=REGISTRY):
    """Copy dataset ``name`` from ``root`` into ``target_root`` (used by tests and mirrors)."""
    for data_file in registry[name].files:
        destination = Path(target_root) / data_file.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(root) / data_file.path, destination)
