"""Named datasets: their files, official download URLs and SHA-256 sums.

Where a dataset is looked for, in order: the ``--data-dir`` option, ``$MEPROP_DATA``, then the
cache folder (``$MEPROP_CACHE``, else ``~/.cache/meprop``), where it is downloaded when missing.
Every folder uses the layout of the shared data mirror (``mnist/train-images-idx3-ubyte.gz``...).
``ptb-wsj`` is the exception: the full Penn Treebank is LDC-licensed, so it is never downloaded;
users point at their own copy with ``--wsj-dir PATH``.
"""

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
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
    splits: dict = field(default_factory=dict)  # split name -> relative path of its file


def _mnist_file(name, sha256):
    # yann.lecun.com often refuses downloads, so the mirrors that torchvision and TensorFlow
    # use come first; all serve the same gzip files.
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    return DataFile(f"mnist/{name}", sha256, tuple(mirror + name for mirror in mirrors))


EWT_RELEASE = "r2.16"
EWT_URL = ("https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/"
           f"{EWT_RELEASE}/")
NLTK_DATA_URL = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/"


def _ewt_file(name, sha256):
    return DataFile(f"ud_english_ewt/{name}", sha256, (EWT_URL + name,))


def _nltk_file(name, sha256):
    return DataFile(f"nltk_data/corpora/{name}", sha256, (NLTK_DATA_URL + name,))


REGISTRY = {
    "ud-english-ewt": Dataset(
        "ud-english-ewt",
        f"UD English Web Treebank {EWT_RELEASE} (CoNLL-U): 12,544 / 2,001 / 2,077 sentences",
        (
            _ewt_file("en_ewt-ud-train.conllu",
                      "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
            _ewt_file("en_ewt-ud-dev.conllu",
                      "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
            _ewt_file("en_ewt-ud-test.conllu",
                      "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
            _ewt_file("LICENSE.txt",
                      "b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7"),
        ),
        splits={part: f"ud_english_ewt/en_ewt-ud-{part}.conllu"
                for part in ("train", "dev", "test")},
    ),
    "ptb-sample": Dataset(
        "ptb-sample",
        "NLTK's Penn Treebank sample: WSJ files 0001-0199, 3,914 sentences (.mrg trees), and "
        "its dependency version",
        (
            _nltk_file("treebank.zip",
                       "9da92d76c3666cfb6cddeaed0f7e86b344cce0f0928a286d439e555f19c37399"),
            _nltk_file("dependency_treebank.zip",
                       "0df483999f1391f32b141d6047d8ce19efd0a5a3e63ca019bfc4af8530f51fbd"),
        ),
    ),
    "ptb-wsj": Dataset(
        "ptb-wsj",
        "the full Penn Treebank WSJ sections 00-24 (LDC99T42): your own licensed copy, given "
        "with --wsj-dir PATH (a folder holding wsj/00 ... wsj/24 or 00 ... 24)",
        (),
    ),
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


def find_local(name, data_dir=None, registry=REGISTRY):
    """``(label, root)`` of the first place holding every file of ``name``, else None.

    Does not download and does not verify checksums (``locate`` does both).
    """
    dataset = _dataset(name, registry)
    for label, root in search_roots(data_dir):
        if all((root / f.path).is_file() for f in dataset.files):
            return label, root
    return None


def _dataset(name, registry):
    if name not in registry:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def locate_wsj(wsj_dir):
    """The user's LDC WSJ folder, checked to hold ``.mrg`` files."""
    if not wsj_dir:
        raise DataError("dataset 'ptb-wsj' is LDC-licensed and never downloaded: give your copy "
                        "with --wsj-dir PATH (a folder holding wsj/00 ... wsj/24)")
    root = Path(wsj_dir)
    if not root.is_dir() or not any(root.rglob("*.mrg")):
        raise DataError(f"dataset 'ptb-wsj': {root} holds no .mrg files (expected wsj/00 ... "
                        "wsj/24 with wsj_XXXX.mrg inside)")
    return root


def locate(name, data_dir=None, download=True, registry=REGISTRY):
    """Return the data root that holds every file of dataset ``name``, downloading if needed.

    Raises ``DataError`` naming the dataset, every place looked, and how to point at a copy.
    """
    dataset = _dataset(name, registry)
    if not dataset.files:
        raise DataError(f"dataset {name!r} has no downloadable files: {dataset.description}")
    roots = search_roots(data_dir)
    found = find_local(name, data_dir, registry)
    if found:
        root = found[1]
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
            failures = _download(data_file, target) or []
            if failures:  # every mirror failed: the other files would fail the same way, each
                break     # after its own timeouts (30 s per mirror without a network)
        if not failures:
            return cache
    looked = "; ".join(f"{label}: {root}" for label, root in roots)
    reason = ("downloads failed: " + " | ".join(failures)) if failures else "downloads disabled"
    raise DataError(
        f"dataset {name!r} not found (looked in {looked}; {reason}). Point at a local copy with "
        f"--data-dir DIR or MEPROP_DATA=DIR, where DIR holds "
        f"{', '.join(f.path for f in dataset.files)}"
    )


def split_path(name, split, data_dir=None, registry=REGISTRY):
    """Path of one split's file (``ud-english-ewt``, ``train``) after ``locate``."""
    dataset = _dataset(name, registry)
    if split not in dataset.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; it has "
                        f"{', '.join(dataset.splits) or 'no named splits'}")
    return locate(name, data_dir, registry=registry) / dataset.splits[split]


def describe(data_dir=None, wsj_dir=None, registry=REGISTRY):
    """``[(name, description, where)]`` for ``meprop data list``; downloads nothing."""
    rows = []
    for name, dataset in registry.items():
        if not dataset.files:
            where = str(wsj_dir) if wsj_dir else "not given (use --wsj-dir PATH)"
        else:
            found = find_local(name, data_dir, registry)
            where = f"{found[1]} ({found[0]})" if found else (
                f"missing; would download to {cache_dir()}")
        rows.append((name, dataset.description, where))
    return rows
