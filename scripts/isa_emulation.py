"""Holding PyTorch, MKL and oneDNN to an instruction-set level, for the benchmarks'
``--emulate-isa``: set before torch is imported, so that dense and meProp's PyTorch path run as
they would on a CPU of that level (e.g. AVX2 on an AVX-512 machine). Imports nothing heavy."""

import os
import sys

# What ATen (ATEN_CPU_CAPABILITY), MKL (MKL_ENABLE_INSTRUCTIONS) and oneDNN (ONEDNN_MAX_CPU_ISA)
# are held to for each named level.
EMULATED_ISA = {
    "x86-64-v4": ("avx512", "AVX512", "AVX512_CORE"),
    "x86-64-v3": ("avx2", "AVX2", "AVX2"),
    "x86-64-v2": ("default", "SSE4_2", "SSE41"),
}


def emulate(level):
    """Set the environment for ``level``, or exit naming the levels that can be emulated."""
    if level not in EMULATED_ISA:
        sys.exit(f"--emulate-isa needs --level, one of {', '.join(EMULATED_ISA)}")
    aten, mkl, onednn = EMULATED_ISA[level]
    os.environ.update(ATEN_CPU_CAPABILITY=aten, MKL_ENABLE_INSTRUCTIONS=mkl,
                      ONEDNN_MAX_CPU_ISA=onednn)
