"""Optional compiled fast paths for meProp's backward, with the pure-PyTorch code as reference.

The C++ source (``cpu.cpp`` and the headers it includes; ninja's dependency files notice a
changed header) is compiled on first use by ``torch.utils.cpp_extension.load`` — a
cached JIT build against the torch that is running, so no build step at install time and no
mismatch with pip's build isolation. When there is no compiler, the build fails, or
``MEPROP_KERNELS=0`` is set, :func:`cpu` returns None and callers use the PyTorch code, which
computes the same gradients (tests compare the two).
"""

import contextlib
import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu.cpp")
_DTYPES = (torch.float32, torch.float64)
_disabled = os.environ.get("MEPROP_KERNELS", "1") == "0"  # read once: backward is hot


def _cpu_signature():
    """A short hash of the CPU's features: ``-march=native`` builds must not be shared across
    machines with different instruction sets through one cache folder."""
    flags = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


@functools.cache
def _build():
    from torch.utils import cpp_extension

    # -fno-math-errno: sqrt need not set errno (nothing reads it), so loops with it vectorise.
    flags = ["-O3", "-fopenmp", "-fno-math-errno"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    try:
        return cpp_extension.load(
            name=f"meprop_cpu_{_cpu_signature()}", sources=[str(SOURCE)],
            extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # no compiler, no headers, ...: the PyTorch path still works
        warnings.warn(f"meProp's compiled CPU kernels are unavailable ({error}); using the "
                      "pure-PyTorch backward", RuntimeWarning, stacklevel=3)
        return None


def cpu():
    """The compiled CPU module, or None when disabled or unavailable."""
    if _disabled:
        return None
    return _build()


def usable(tensor, *others):
    """The compiled module if it can run on these tensors — all on the CPU (the caller keeps
    them on one device), float32 or float64, one dtype — else None."""
    if _disabled or not tensor.is_cpu or tensor.dtype not in _DTYPES:
        return None
    dtype = tensor.dtype
    for other in others:
        if other.dtype != dtype:
            return None
    return _build()


def for_layer(selection, *tensors):
    """The compiled module when its autograd Functions (the linear and LSTM layers) can take a
    call on these tensors (None entries ignored): top-k selection, CPU tensors of one float
    dtype, no autocast (whose lower-precision products the kernels do not do); else None."""
    if selection != "topk" or torch.is_autocast_enabled("cpu"):
        return None
    return usable(*(tensor for tensor in tensors if tensor is not None))


@contextlib.contextmanager
def disabled():
    """Run the pure-PyTorch backward inside this block (tests, benchmarks)."""
    global _disabled
    previous, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = previous
