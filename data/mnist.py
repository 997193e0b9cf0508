"""MNIST idx files (gzip): http://yann.lecun.com/exdb/mnist/ describes the format."""

import gzip
from pathlib import Path

import numpy as np
import torch

from data.errors import DataError

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", IMAGE_MAGIC, 60000),
    "train_labels": ("train-labels-idx1-ubyte.gz", LABEL_MAGIC, 60000),
    "test_images": ("t10k-images-idx3-ubyte.gz", IMAGE_MAGIC, 10000),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", LABEL_MAGIC, 10000),
}


def read_idx(path, expected_magic, expected_count=None):
    """Read one gzip idx file of unsigned bytes into a uint8 tensor ``[count, *dims]``."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip idx file ({error})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number {magic} (expected {expected_magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected_size = header + int(np.prod(dims))
    if len(raw) != expected_size:
        raise DataError(f"{path}: {len(raw)} bytes, but its header {dims} needs {expected_size}")
    if expected_count is not None and dims[0] != expected_count:
        raise DataError(f"{path}: {dims[0]} items, expected {expected_count}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def load(root):
    """The four MNIST tensors from ``root/mnist/``: images uint8 ``[n, 28, 28]``, labels ``[n]``."""
    folder = Path(root) / "mnist"
    return {key: read_idx(folder / name, magic, count)
            for key, (name, magic, count) in FILES.items()}
