import os
from pathlib import Path

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="session")
def data_dir():
    """The real-data folder from $MEPROP_DATA; tests that need it skip without it."""
    value = os.environ.get("MEPROP_DATA")
    if not value:
        pytest.skip("needs real data: set MEPROP_DATA to the shared data folder (absolute path)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"needs real data: MEPROP_DATA={value} is not a folder")
    return path
