"""``python -m meprop.kernels``: which level the CPU kernels are built for, and which path each
layer type takes on this machine and why."""

import sys

import torch

from meprop import kernels
from meprop.kernels import paths

LAYERS = (("linear", "meprop.Linear / meprop.linear"), ("lstm", "meprop.LSTM"))
MODES = ("per_example", "unified")


def report():
    """The lines ``python -m meprop.kernels`` prints."""
    level = kernels.active_level()
    lines = [f"CPU: {kernels.cpu_model()}",
             f"levels this CPU runs: {', '.join(kernels.supported_levels())}",
             f"PyTorch {torch.__version__}, CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"]
    module = kernels.cpu()
    if module is None:
        why = ("MEPROP_KERNELS=0" if kernels._disabled
               else "the build failed (see the warning above)")
        lines.append(f"compiled kernels for {level}: not in use ({why})")
        lines += [f"{title}, {mode}: PyTorch path (no compiled kernels)"
                  for _, title in LAYERS for mode in MODES]
        return lines
    name, width, registers = module.isa()
    native = f" (this CPU: {kernels.native_level()})" if level == "native" else ""
    lines.append(f"compiled kernels for {level}{native}: {name}, tiles sized for {registers} "
                 f"vector registers of {width} bytes")
    rules = paths.rules_for(name)
    for layer, title in LAYERS:
        for mode in MODES:
            own = [rule for rule in rules if rule.layer == layer and mode in rule.modes]
            if not own:
                lines.append(f"{title}, {mode}: compiled kernels, every shape (top-k selection, "
                             "float32/float64 CPU tensors, no autocast)")
            for rule in own:
                lines.append(f"{title}, {mode}: PyTorch path when {rule.when} ({rule.why}); "
                             "compiled kernels otherwise")
    lines.append("random-k selection, autocast, other dtypes and CUDA tensors: PyTorch path")
    return lines


if __name__ == "__main__":
    print("\n".join(report()))
    sys.exit(0)
