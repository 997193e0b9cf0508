"""Optional compiled fast paths for meProp's backward, with the pure-PyTorch code as reference.

The C++ source (``cpu.cpp`` and the headers it includes; ninja's dependency files notice a
changed header) is compiled on first use by ``torch.utils.cpp_extension.load`` — a
cached JIT build against the torch that is running, so no build step at install time and no
mismatch with pip's build isolation.

The build targets one instruction-set level, ``MEPROP_CPU_ARCH`` (default ``native``: this CPU's
own), under a cache name of its own, so one machine can build, test and benchmark every level
it can run: ``x86-64-v4`` (AVX-512), ``x86-64-v3`` (AVX2 + FMA), ``x86-64-v2`` (SSE4.2: the
128-bit path) on x86-64; ``armv8-a`` (NEON) on aarch64. The headers choose vector widths and
register tiles for the level they are compiled for (see common.h).

``MEPROP_KERNELS=0`` turns the kernels off. Unset, a failed build warns once and the PyTorch
code runs (it computes the same gradients; the tests compare the two); ``MEPROP_KERNELS=1`` set
explicitly makes a failed build an error carrying the compiler's message.
"""

import contextlib
import functools
import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

from meprop.kernels import paths

SOURCE = Path(__file__).with_name("cpu.cpp")
_DTYPES = (torch.float32, torch.float64)
_SETTING = os.environ.get("MEPROP_KERNELS", "")
_disabled = _SETTING == "0"  # read once: backward is hot
_required = _SETTING == "1"

X86_LEVELS = ("x86-64-v4", "x86-64-v3", "x86-64-v2")
ARM_LEVELS = ("armv8-a",)

# The /proc/cpuinfo flags each x86-64 level needs (the psABI's list; lzcnt shows as "abm").
_X86_FLAGS = {
    "x86-64-v2": {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}


def _is_x86():
    return platform.machine() in ("x86_64", "AMD64")


def _cpu_flags():
    """This CPU's feature flags (/proc/cpuinfo's first ``flags`` or ``Features`` line)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_model():
    """The CPU's model name, as /proc/cpuinfo gives it (else the platform's word)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def known_levels():
    """The levels that may be named on this machine's architecture, ``native`` first."""
    if _is_x86():
        return ("native",) + X86_LEVELS
    if platform.machine() in ("aarch64", "arm64"):
        return ("native",) + ARM_LEVELS
    return ("native",)


def supported_levels():
    """The levels this CPU can run: ``native``, then each named level whose instructions it
    has (each x86-64 level includes the ones below it)."""
    if not _is_x86():
        return known_levels()
    flags, levels, have = _cpu_flags(), [], set()
    for level in reversed(X86_LEVELS):  # v2, v3, v4: each needs the one before
        have |= _X86_FLAGS[level]
        if not have <= flags:
            break
        levels.append(level)
    return ("native",) + tuple(reversed(levels))


def level():
    """The level the kernels are built for: ``MEPROP_CPU_ARCH``, else ``native``."""
    return os.environ.get("MEPROP_CPU_ARCH", "").strip() or "native"


def native_level():
    """The named level that ``native`` includes at least: the highest this CPU supports."""
    named = [name for name in supported_levels() if name != "native"]
    return named[0] if named else platform.machine()


def _cpu_signature():
    """A short hash of the CPU's features: ``-march=native`` builds must not be shared across
    machines with different instruction sets through one cache folder."""
    flags = platform.machine() + " ".join(sorted(_cpu_flags()))
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


def _arch_flags(name):
    if name == "native":
        return ["-march=native"] if _is_x86() else ["-mcpu=native"]
    return [f"-march={name}"]


def _module_name(name):
    if name == "native":
        return f"meprop_cpu_native_{_cpu_signature()}"
    return "meprop_cpu_" + name.replace("-", "_")


def _sources():
    return [SOURCE, *sorted(SOURCE.parent.glob("*.h"))]


def _needs_compiling(module_name):
    """Whether a build of ``module_name`` would compile (no library yet, or an older one than
    the sources): then the user is told before the wait."""
    from torch.utils import cpp_extension

    try:
        folder = Path(cpp_extension._get_build_directory(module_name, verbose=False))
    except Exception:  # a private helper: if it moves, say nothing rather than fail
        return False
    library = folder / f"{module_name}.so"
    if not library.exists():
        return True
    built = library.stat().st_mtime
    return any(source.stat().st_mtime > built for source in _sources())


@functools.cache
def _build(name):
    """The module compiled for level ``name``, or None (a warning) if it cannot be built;
    with ``MEPROP_KERNELS=1``, a RuntimeError instead."""
    from torch.utils import cpp_extension

    try:
        if name not in known_levels():
            raise ValueError(f"MEPROP_CPU_ARCH={name!r} is not a level on {platform.machine()}; "
                             f"choose one of {', '.join(known_levels())}")
        if name not in supported_levels():
            raise ValueError(f"this CPU ({cpu_model()}) cannot run {name} code; it supports "
                             f"{', '.join(supported_levels())}")
        module_name = _module_name(name)
        if _needs_compiling(module_name):
            target = name if name != "native" else f"native ({native_level()})"
            print(f"compiling meProp's CPU kernels for {target} (once, about a minute)...",
                  file=sys.stderr, flush=True)
        # -fno-math-errno: sqrt need not set errno (nothing reads it), so loops with it vectorise.
        # -Wno-psabi: GCC's note that 32-byte vectors pass differently without AVX concerns
        # calls across libraries; these functions are all inside one unit.
        flags = ["-O3", "-fopenmp", "-fno-math-errno", "-Wno-psabi", *_arch_flags(name)]
        return cpp_extension.load(name=module_name, sources=[str(SOURCE)], extra_cflags=flags,
                                  extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # no compiler, no headers, ...: the PyTorch path still works
        if _required:
            raise RuntimeError(f"MEPROP_KERNELS=1, but meProp's CPU kernels for {name} did not "
                               f"build: {error}") from error
        warnings.warn(f"meProp's compiled CPU kernels for {name} are unavailable ({error}); "
                      "using the pure-PyTorch backward", RuntimeWarning, stacklevel=3)
        return None


_level_override = None  # set by using_level(); else the environment's level


def active_level():
    """The level whose build the layers use now."""
    return _level_override or level()


def cpu(name=None):
    """The compiled module for level ``name`` (default: the active level), or None when
    disabled or unavailable."""
    if _disabled:
        return None
    return _build(name or active_level())


def usable(tensor, *others):
    """The compiled module if it can run on these tensors — all on the CPU (the caller keeps
    them on one device), float32 or float64, one dtype — else None."""
    if _disabled or not tensor.is_cpu or tensor.dtype not in _DTYPES:
        return None
    dtype = tensor.dtype
    for other in others:
        if other.dtype != dtype:
            return None
    return _build(active_level())


_paths_ignored = False  # set by ignoring_paths()


_isas = {}  # build -> its instruction set, asked once (the forward asks per call)


def isa(module):
    """The instruction set a build's tiles are sized for: avx512, avx2, neon or sse."""
    if module not in _isas:
        _isas[module] = module.isa()[0]
    return _isas[module]


def for_layer(selection, *tensors, shape=None):
    """The compiled module when its autograd Functions (the linear and LSTM layers) can take a
    call on these tensors (None entries ignored): top-k selection, CPU tensors of one float
    dtype, no autocast (whose lower-precision products the kernels do not do), and no rule of
    :mod:`meprop.kernels.paths` sending ``shape`` (a ``paths.Shape``) to the PyTorch path on
    this build's instruction set; else None."""
    if selection != "topk" or torch.is_autocast_enabled("cpu"):
        return None
    module = usable(*(tensor for tensor in tensors if tensor is not None))
    if module is None or shape is None or _paths_ignored:
        return module
    return None if paths.reference_rule(isa(module), shape) else module


@contextlib.contextmanager
def disabled():
    """Run the pure-PyTorch backward inside this block (tests, benchmarks)."""
    global _disabled
    previous, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = previous


@contextlib.contextmanager
def ignoring_paths():
    """Inside this block the layers take the compiled kernels wherever they can run, whatever
    :mod:`meprop.kernels.paths` says (the measurements behind those rules; tests)."""
    global _paths_ignored
    previous, _paths_ignored = _paths_ignored, True
    try:
        yield
    finally:
        _paths_ignored = previous


@contextlib.contextmanager
def using_level(name):
    """Run the layers with the build for level ``name`` inside this block (tests, benchmarks);
    each level's build is a module of its own, so several can be loaded in one process."""
    global _level_override
    previous, _level_override = _level_override, name
    try:
        yield
    finally:
        _level_override = previous
