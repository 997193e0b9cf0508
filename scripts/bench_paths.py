"""Compiled kernels against meProp's pure-PyTorch path, layer by layer, over a grid of shapes:
the measurements behind the rules in ``meprop/kernels/paths.py`` that send a layer to the
faster path.

For each shape it times the backward of one meProp layer (a forward before each, untimed) on
the compiled kernels (the rules ignored) and on the PyTorch path, in turns, and prints a
Markdown row with both medians and their ratio. Run it alone on the machine, once per level,
with PyTorch and MKL held to that level so the PyTorch path runs as it would on such a CPU:

    python scripts/bench_paths.py --level x86-64-v3 --emulate-isa
"""

import argparse
import os
import statistics
import sys
import time

from isa_emulation import emulate


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", default="native", help="MEPROP_CPU_ARCH for the kernels")
    parser.add_argument("--emulate-isa", action="store_true",
                        help="hold PyTorch's and MKL's kernels to --level as well")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=0.4,
                        help="time each path of each shape over at least this long")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["MEPROP_CPU_ARCH"] = ARGS.level
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if ARGS.emulate_isa:
        emulate(ARGS.level)

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import meprop  # noqa: E402
from meprop import kernels  # noqa: E402

# (in, out, batch, k) for the linear layer; (in, hidden, words, sentences, k) for the BiLSTM.
LINEAR = [(n_in, 500, batch, k) for n_in in (784, 500) for batch in (1, 10, 100, 1000)
          for k in (20, 80, 160)] + [(2400, 500, 10000, 20), (500, 500, 10000, 20)]
LSTM = [(190, 500, 25, sentences, k) for sentences in (1, 8) for k in (5, 20, 50)]


def one_backward(layer, inputs):
    inputs.grad = None
    layer.zero_grad(set_to_none=True)
    output = layer(inputs)
    output = output[0] if isinstance(output, tuple) else output
    grad = torch.ones_like(output)
    start = time.perf_counter()
    output.backward(grad)
    return time.perf_counter() - start


def compare(layer, inputs, seconds):
    """Median backward seconds of ``layer`` on the compiled path and the PyTorch path, in
    turns (five blocks each)."""
    with kernels.ignoring_paths():
        first = one_backward(layer, inputs)
    calls = max(10, min(400, int(seconds / max(first, 1e-6))))
    times = {"compiled": [], "pytorch": []}
    for _ in range(5):
        for label in times:
            context = kernels.ignoring_paths() if label == "compiled" else kernels.disabled()
            with context:
                block = [one_backward(layer, inputs) for _ in range(3 + calls // 5)]
            times[label] += block[3:]
    return {label: statistics.median(values) for label, values in times.items()}


def print_row(kind, mode, shape, times):
    compiled, pytorch = times["compiled"] * 1e3, times["pytorch"] * 1e3
    print(f"| {kind} | {mode} | {shape} | {compiled:.3f} | {pytorch:.3f} | "
          f"{pytorch / compiled:.2f} |", flush=True)


def main(args):
    torch.set_num_threads(args.threads)
    if kernels.cpu() is None:
        sys.exit("the compiled kernels did not build")
    print(f"# CPU: {kernels.cpu_model()}; kernels built for {kernels.level()}; PyTorch's CPU "
          f"capability {torch.backends.cpu.get_cpu_capability()}; threads "
          f"{torch.get_num_threads()}; torch {torch.__version__}")
    print("| layer | mode | shape (in->out, batch, k) | compiled ms | PyTorch ms | "
          "compiled x |")
    print("|---|---|---|---|---|---|")
    for n_in, n_out, batch, k in LINEAR:
        torch.manual_seed(0)
        inputs = torch.randn(batch, n_in, requires_grad=True)
        for mode in ("per_example", "unified"):
            layer = meprop.Linear(n_in, n_out, k=k, mode=mode)
            print_row("linear", mode, f"{n_in}->{n_out}, {batch}, {k}",
                      compare(layer, inputs, args.seconds))
    for n_in, hidden, words, sentences, k in LSTM:
        torch.manual_seed(0)
        inputs = torch.randn(words, sentences, n_in, requires_grad=True)
        for mode in ("per_example", "unified"):
            layer = meprop.LSTM(n_in, hidden, bidirectional=True, k=k, mode=mode)
            print_row("BiLSTM", mode, f"{n_in}->{hidden} x2, {words} words x {sentences}, {k}",
                      compare(layer, inputs, args.seconds))


if __name__ == "__main__":
    main(ARGS)
