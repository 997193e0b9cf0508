import os
from pathlib import Path

import pytest
import torch

# The workplace layout: the shared data folder beside the project. Used when MEPROP_DATA is not
# set, so that a plain `python -m pytest -q tests` runs the real-data tests too; set in the
# environment (absolute) so that commands the tests run find it as well.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("MEPROP_DATA") and SHARED_DATA.is_dir():
    os.environ["MEPROP_DATA"] = str(SHARED_DATA)

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
    """The real-data folder from $MEPROP_DATA (or ../shared/data); tests that need it skip
    without it."""
    value = os.environ.get("MEPROP_DATA")
    if not value:
        pytest.skip("needs real data: set MEPROP_DATA to the shared data folder (absolute path)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"needs real data: MEPROP_DATA={value} is not a folder")
    return path
