"""Backward time of meProp linear layers against PyTorch's dense F.linear, side by side.

For each of the paper's shapes it times the whole autograd backward of one layer (top-k
selection included; the forward is not timed) for dense ``nn.Linear``, meProp per-example and
meProp unified, and prints a Markdown table of medians and speed-ups. Run it alone on the machine.
Dense and meProp take turns (``--rounds`` blocks of calls each), and a layer whose backward takes
microseconds is called until ``--layer-seconds`` are spent (at most 2,000 calls): 20 calls of a
0.1 ms backward are 2 ms of measurement, and the machine's slow spells last longer. The POS
BiLSTM gets a second row, a diagnostic: its backward run again over one retained forward, with
its data in cache (see ``RepeatedBackward``); the first row, a forward before each backward, is
the measure of training.

    python scripts/bench_backprop.py [--threads 2] [--repeats 20] [--device cpu] [--no-kernels]
    python scripts/bench_backprop.py --device cuda --gpu-paper [--cuda-graph] [--persistent-grad]

On a GPU, ``--cuda-graph`` times the same backward captured once in a CUDA graph and replayed
(dense and meProp alike): what the device itself spends, without the host's per-operation
launches and the autograd engine's hand-over to its device thread, which cost more than meProp's
whole backward at the paper's GPU shape. The replayed gradients are checked against an ordinary
backward before timing.

On the CPU meProp runs its compiled kernels (``meprop.kernels``) when they build;
``--no-kernels`` times the pure-PyTorch reference path instead, and ``--compare-reference``
prints the reference path's row under each row of the compiled layers. ``--level`` builds and
times the kernels for an instruction-set level (``MEPROP_CPU_ARCH``: native, x86-64-v4,
x86-64-v3, x86-64-v2); with ``--emulate-isa`` PyTorch's own kernels and MKL are held to the same
level (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``), so that
dense and the reference path run as they would on a CPU of that level, e.g. AVX2 on an
AVX-512 machine. The header names the CPU, the level and PyTorch's CPU capability.

    python scripts/bench_backprop.py --level x86-64-v3 --emulate-isa --compare-reference

PyTorch's CPU allocator hands every large gradient fresh pages from the OS, and the page faults
cost tens of milliseconds at the parser shape for dense and meProp alike. The script turns on
PyTorch's transparent-huge-page allocation (THP_MEM_ALLOC_ENABLE=1) before importing torch, as
a training process can too; ``--no-thp`` measures without it.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

from isa_emulation import emulate


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-thp", action="store_true", help="leave huge-page allocation off")
    parser.add_argument("--no-kernels", action="store_true",
                        help="time meProp's pure-PyTorch path, not the compiled CPU kernels")
    parser.add_argument("--quick", action="store_true", help="smallest shapes only (for tests)")
    parser.add_argument("--level", default=None,
                        help="build and time the kernels for this instruction-set level "
                        "(sets MEPROP_CPU_ARCH: native, x86-64-v4, x86-64-v3, x86-64-v2)")
    parser.add_argument("--emulate-isa", action="store_true",
                        help="hold PyTorch's and MKL's own kernels to --level too, so dense and "
                        "the reference path run as on a CPU of that level")
    parser.add_argument("--compare-reference", action="store_true",
                        help="under each layer's row, the same layers on meProp's pure-PyTorch "
                        "path (the reference the compiled kernels replace)")
    parser.add_argument("--persistent-grad", action="store_true",
                        help="meProp layers keep one weight gradient and rewrite only the rows "
                        "they touch (meprop.Linear(persistent_grad=True))")
    parser.add_argument("--sparse-update", action="store_true",
                        help="whole steps: meProp's optimizer updates only the rows it touched "
                        "(meprop.optim; implies --persistent-grad)")
    parser.add_argument("--steps-only", action="store_true",
                        help="time the whole training steps only (not the layers)")
    parser.add_argument("--step-seconds", type=float, default=2.0,
                        help="time each model's steps over at least this long (in turns)")
    parser.add_argument("--layer-seconds", type=float, default=1.0,
                        help="time each layer's backward over at least this long (at most 2,000 "
                        "calls; the parser's shapes take their --repeats)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="dense and meProp take turns in this many blocks of calls, layers "
                        "and whole steps alike (1 with --layer-seconds 0: one block each, the "
                        "older method)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="GPU only: time each backward captured in a CUDA graph and replayed")
    parser.add_argument("--gpu-paper", action="store_true",
                        help="the paper's GPU setting instead: 8192->8192, batch 1024, k 8..512")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and not ARGS.no_thp:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
SPARSE_UPDATE = ARGS is not None and ARGS.sparse_update
PERSISTENT_GRAD = ARGS is not None and (ARGS.persistent_grad or SPARSE_UPDATE)
if ARGS is not None and ARGS.no_kernels:
    os.environ["MEPROP_KERNELS"] = "0"
if ARGS is not None and ARGS.level:
    os.environ["MEPROP_CPU_ARCH"] = ARGS.level

if ARGS is not None and ARGS.emulate_isa:
    emulate(ARGS.level)

import torch  # noqa: E402  (after the allocator setting above)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import meprop  # noqa: E402
from meprop import kernels  # noqa: E402
from meprop.optim import touched_weights  # noqa: E402
from meprop.training import make_optimizer  # noqa: E402

# (name, in_features, out_features, batch, k): the paper's settings (Sun et al. 2017, Table 1).
CASES = [
    ("parser hidden", 2400, 500, 10000, 20),
    ("parser hidden", 500, 500, 10000, 20),
    ("MNIST hidden 1", 784, 500, 10, 20),
    ("MNIST hidden 2", 500, 500, 10, 20),
    ("MNIST hidden 1", 784, 500, 10, 80),
    ("MNIST hidden 2", 500, 500, 10, 80),
]

# The paper's GPU experiment (Sun et al. 2017, Figure/Table on GPU): a synthetic layer of hidden
# 8192 at batch 1024, unified top-k with k from 8 to 512.
GPU_PAPER_CASES = [("GPU synthetic", 8192, 8192, 1024, k) for k in (8, 16, 32, 64, 128, 256, 512)]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_for_backward(layer, inputs, grad_output):
    """``(output, grad_output)`` of ``layer(inputs)``: its first element for an LSTM's
    ``(output, state)``, and ones where ``grad_output`` is None."""
    output = layer(inputs)
    if isinstance(output, tuple):
        output = output[0]
    return output, torch.ones_like(output) if grad_output is None else grad_output


def timed_backward(output, grad_output, device, retain_graph=False):
    synchronize(device)
    start = time.perf_counter()
    output.backward(grad_output, retain_graph=retain_graph)
    synchronize(device)
    return time.perf_counter() - start


def backward_seconds(layer, inputs, grad_output, device):
    """Seconds of the backward alone of ``layer(inputs)`` (see :func:`forward_for_backward`);
    the forward runs first, untimed."""
    inputs.grad = None
    layer.zero_grad(set_to_none=True)
    return timed_backward(*forward_for_backward(layer, inputs, grad_output), device)


class RepeatedBackward:
    """Seconds of a backward run again over one retained forward of each layer: the backward
    with its data in cache. A diagnostic, not the targets' measure: in training (and in
    :func:`backward_seconds`) a forward runs just before, and at one sentence the LSTM's forward
    streams each direction's 4 MB W_hh through the caches once per word, which evicts what the
    backward then reads and writes."""

    def __init__(self):
        self.graphs = {}

    def __call__(self, layer, inputs, grad_output, device):
        if layer not in self.graphs:
            self.graphs[layer] = forward_for_backward(layer, inputs, grad_output)
        inputs.grad = None
        layer.zero_grad(set_to_none=True)
        return timed_backward(*self.graphs[layer], device, retain_graph=True)


def time_backwards(layers, inputs, grad_output, device, repeats, warmup, seconds, rounds,
                   timer=backward_seconds):
    """Median backward seconds of each ``(label, layer)``, the layers taking turns.

    As :func:`time_training_steps`: ``rounds`` blocks of consecutive backward calls per layer in
    turn, so that the machine's slow spells (this VM's timings of a 0.1 ms backward move by half
    between minutes) hit dense and meProp alike; the first ``warmup`` calls of a block are not
    counted, nor as many as the block times: a switch leaves transients behind (after a few
    meProp calls, dense ``nn.LSTM``'s next dozen backward calls took twice their steady time: the
    allocator's pages), and each layer is timed in its own steady state, as training runs it.
    Each layer gets at least ``repeats`` timed calls and at least ``seconds`` of them.
    ``timer``: :func:`backward_seconds`, or a :class:`RepeatedBackward`."""
    first = max(timer(layers[0][1], inputs, grad_output, device)
                for _ in range(warmup + 1))
    repeats = max(repeats, min(2000, int(seconds / max(first, 1e-6))))
    block = -(-repeats // rounds)
    settle = max(warmup, block) if rounds > 1 else warmup
    times = {label: [] for label, _ in layers}
    for _ in range(rounds):
        for label, layer in layers:
            for call in range(settle + block):
                seconds_taken = timer(layer, inputs, grad_output, device)
                if call >= settle:
                    times[label].append(seconds_taken)
    return {label: statistics.median(values) for label, values in times.items()}


def gradients(layer, inputs):
    return [tensor.grad.clone() for tensor in (inputs, *layer.parameters())]


def time_graphed_backward(layer, inputs, grad_output, device, repeats, warmup):
    """Median seconds of :func:`backward_seconds`' backward captured in a CUDA graph and
    replayed, over ``repeats`` after ``warmup``.

    Warm-up runs on a side stream (as capture needs); the forward runs once, outside the graph,
    and only ``output.backward`` is captured, into gradients that ``zero_grad(set_to_none)``
    left to be allocated from the graph's memory and that each replay rewrites."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 1)):
            inputs.grad = None
            layer.zero_grad(set_to_none=True)
            layer(inputs).backward(grad_output)
        expected = gradients(layer, inputs)
        inputs.grad = None
        layer.zero_grad(set_to_none=True)
        output = layer(inputs)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        output.backward(grad_output)
    graph.replay()
    synchronize(device)
    for got, want in zip(gradients(layer, inputs), expected, strict=True):
        torch.testing.assert_close(got, want)  # the graph replays the real backward
    times = []
    for rep in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        graph.replay()
        synchronize(device)
        if rep >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


class OnReference(torch.nn.Module):
    """A meProp layer run on its pure-PyTorch path (the layers choose the path in the forward,
    so the backward of this forward is the reference one)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, inputs):
        with kernels.disabled():
            return self.layer(inputs)


def with_reference(layers, compare):
    """``layers`` plus, where ``compare``, each meProp layer again on the reference path as
    ``reference <mode>``."""
    if not compare:
        return layers
    return layers + [(f"reference {label}", OnReference(layer))
                     for label, layer in layers if label != "dense"]


def bench_case(n_in, n_out, batch, k, device, repeats, warmup, graphed=False, seconds=0.0,
               rounds=1, compare=False):
    torch.manual_seed(0)
    inputs = torch.randn(batch, n_in, device=device, requires_grad=True)
    grad_output = torch.randn(batch, n_out, device=device)
    dense = torch.nn.Linear(n_in, n_out, device=device)
    layers = [("dense", dense)]
    for mode in ("per_example", "unified"):
        layer = meprop.Linear(n_in, n_out, k=k, mode=mode, device=device,
                              persistent_grad=PERSISTENT_GRAD)
        layer.load_state_dict(dense.state_dict())
        layers.append((mode, layer))
    layers = with_reference(layers, compare)
    if graphed:
        return {label: time_graphed_backward(layer, inputs, grad_output, device, repeats, warmup)
                for label, layer in layers}
    return time_backwards(layers, inputs, grad_output, device, repeats, warmup, seconds, rounds)


# The tagger's recurrent layer: a BiLSTM over 50-d words + 7 x 20-d features, hidden 500 per
# direction, one sentence of 25 words (the paper's minibatch), k=5 of each gate's 500 entries.
LSTM_CASES = [("POS BiLSTM", 190, 500, 25, 5)]


def bench_lstm_case(n_in, hidden, length, k, device, repeats, warmup, seconds=0.0, rounds=1,
                    timer=backward_seconds, compare=False):
    torch.manual_seed(0)
    inputs = torch.randn(length, 1, n_in, device=device, requires_grad=True)
    dense = torch.nn.LSTM(n_in, hidden, bidirectional=True, device=device)
    layers = [("dense", dense)]
    for mode in ("per_example", "unified"):
        layer = meprop.LSTM(n_in, hidden, bidirectional=True, k=k, mode=mode, device=device,
                            persistent_grad=PERSISTENT_GRAD)
        layer.load_state_dict(dense.state_dict())
        layers.append((mode, layer))
    layers = with_reference(layers, compare)
    return time_backwards(layers, inputs, None, device, repeats, warmup, seconds, rounds, timer)


class _NoWork(torch.autograd.Function):
    """``F.linear`` forward and a backward that computes nothing: the fixed cost of calling a
    Python autograd Function's backward (meProp's layers are such Functions)."""

    @staticmethod
    def forward(input, weight):
        return torch.nn.functional.linear(input, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_output):
        return None, None


class _NoWorkLayer(torch.nn.Linear):
    def forward(self, input):
        return _NoWork.apply(input, self.weight)


def bench_overhead(device, repeats, warmup, cases, mode="per_example", seconds=0.0, rounds=1):
    """The fixed cost of a Python autograd Function's backward (which the compiled layer, a
    C++ Function, does not pay; the pure-PyTorch path does) beside meProp's whole backward.
    On a GPU this is also the floor of any backward timed this way: the autograd engine hands
    the work to its device thread and back."""
    print()
    print("| layer | shape | batch | k | empty Python autograd Function backward ms | meProp "
          f"{mode} ms | empty / meProp |")
    print("|---|---|---|---|---|---|---|")
    for name, n_in, n_out, batch, k in cases:
        torch.manual_seed(0)
        inputs = torch.randn(batch, n_in, device=device, requires_grad=True)
        grad_output = torch.randn(batch, n_out, device=device)
        layer = meprop.Linear(n_in, n_out, k=k, mode=mode, device=device,
                              persistent_grad=PERSISTENT_GRAD)
        times = time_backwards([("empty", _NoWorkLayer(n_in, n_out, device=device)),
                                ("meprop", layer)], inputs, grad_output, device, repeats, warmup,
                               seconds, rounds)
        empty, full = times["empty"], times["meprop"]
        print(f"| {name} | {n_in}->{n_out} | {batch} | {k} | {empty * 1e3:.3f} | "
              f"{full * 1e3:.3f} | {empty / full:.0%} |")


def print_row(name, shape, batch, k, times):
    """The layer's row, and the reference path's under it where it was timed."""
    ms = {key: value * 1e3 for key, value in times.items()}
    print(f"| {name} | {shape} | {batch} | {k} | {ms['dense']:.3f} | "
          f"{ms['per_example']:.3f} | {ms['unified']:.3f} | "
          f"{times['dense'] / times['per_example']:.2f} | "
          f"{times['dense'] / times['unified']:.2f} |")
    if "reference unified" in times:
        print(f"| {name}, PyTorch path | {shape} | {batch} | {k} | {ms['dense']:.3f} | "
              f"{ms['reference per_example']:.3f} | {ms['reference unified']:.3f} | "
              f"{times['dense'] / times['reference per_example']:.2f} | "
              f"{times['dense'] / times['reference unified']:.2f} |")
    sys.stdout.flush()


def training_step(model, optimizer, inputs, targets, device):
    """Seconds of one whole step: forward, cross-entropy, backward, optimizer update."""
    synchronize(device)
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def time_training_steps(runs, inputs, targets, device, repeats, warmup, seconds=2.0, rounds=5):
    """Median seconds of a step for each ``(label, model, optimizer)`` of ``runs``.

    The runs take turns in ``rounds`` blocks of consecutive steps, so that the machine's slow
    spells hit them alike while each block keeps its own model's weights in cache, as training
    does; the first ``warmup`` steps of each block are not counted. A run has at least
    ``repeats`` timed steps, and at least ``seconds`` worth of them (MNIST's take a millisecond).
    """
    for _ in range(warmup + 1):
        first = training_step(runs[0][1], runs[0][2], inputs, targets, device)
    repeats = max(repeats, min(2000, int(seconds / max(first, 1e-6))))
    block = -(-repeats // rounds)
    times = {label: [] for label, _, _ in runs}
    for _ in range(rounds):
        for label, model, optimizer in runs:
            for step in range(warmup + block):
                seconds_taken = training_step(model, optimizer, inputs, targets, device)
                if step >= warmup:
                    times[label].append(seconds_taken)
    return {label: statistics.median(values) for label, values in times.items()}, block * rounds


def step_models(device):
    """(name, make_model(k, mode), inputs, targets): the MNIST MLP and the parser's scorer."""
    from meprop.mnist import MLP, MLPConfig
    from parser.model import ParserConfig, ParserModel

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 784, generator=generator).to(device)
    digits = torch.randint(0, 10, (10,), generator=generator).to(device)
    features = torch.randint(1, 38, (10000, 48), generator=generator).to(device)  # valid ids
    moves = torch.randint(0, 75, (10000,), generator=generator).to(device)
    return [
        ("MNIST MLP 784-500-500-10, batch 10, k=20",
         lambda k, mode: MLP(MLPConfig(k=k, mode=mode)), images, digits),
        ("parser 48x50-500-500-75, batch 10000, k=20",
         lambda k, mode: ParserModel(ParserConfig(n_words=15000, n_tags=90, n_labels=38, k=k,
                                                  mode=mode)), features, moves),
    ]


def bench_steps(device, repeats, warmup, seconds, rounds=5):
    print()
    print("| whole training step | dense ms | per-example ms | unified ms | per-example x | "
          "unified x | steps timed |")
    print("|---|---|---|---|---|---|---|")
    for name, make, inputs, targets in step_models(device):
        runs = []
        for label, k, mode in (("dense", None, "per_example"), ("per_example", 20, "per_example"),
                               ("unified", 20, "unified")):
            torch.manual_seed(0)
            model = make(k, mode).to(device)
            meprop.use_persistent_grad(model, PERSISTENT_GRAD)
            # Adam as the trainers make it (fused on the CPU); --sparse-update: meProp's rows only.
            buffers = touched_weights(model) if SPARSE_UPDATE and k is not None else None
            runs.append((label, model, make_optimizer("adam", model.parameters(), 1e-4,
                                                      buffers=buffers)))
        times, steps = time_training_steps(runs, inputs, targets, device, repeats, warmup,
                                           seconds, rounds)
        ms = {key: value * 1e3 for key, value in times.items()}
        print(f"| {name} | {ms['dense']:.3f} | {ms['per_example']:.3f} | {ms['unified']:.3f} | "
              f"{times['dense'] / times['per_example']:.2f} | "
              f"{times['dense'] / times['unified']:.2f} | {steps} |")
        sys.stdout.flush()


def main(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.cuda_graph and device.type != "cuda":
        sys.exit("--cuda-graph needs --device cuda")
    cases = CASES[2:4] if args.quick else CASES
    # The reference rows need the compiled layers to compare with.
    compare = args.compare_reference and device.type == "cpu" and not args.no_kernels
    if args.gpu_paper:
        cases = GPU_PAPER_CASES
    print(f"# meProp backward benchmark: torch {torch.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}, THP_MEM_ALLOC_ENABLE="
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}, compiled kernels "
          f"{'on' if device.type == 'cpu' and kernels.cpu() is not None else 'off'}, "
          f"persistent grad {'on' if PERSISTENT_GRAD else 'off'}, "
          f"sparse update {'on' if SPARSE_UPDATE else 'off'}"
          f"{', backward captured in a CUDA graph' if args.cuda_graph else ''}")
    if device.type == "cuda":
        print(f"# {torch.cuda.get_device_name(device)}, TF32 matmul "
              f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}")
    compiled = device.type == "cpu" and kernels.cpu() is not None
    level = kernels.level()
    print(f"# CPU: {kernels.cpu_model()}; kernels built for {level}"
          f"{f' ({kernels.native_level()})' if level == 'native' else ''}"
          f"{'' if compiled else ' (not in use)'}; PyTorch's CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}"
          f"{'; MKL held to ' + os.environ['MKL_ENABLE_INSTRUCTIONS'] if ARGS.emulate_isa else ''}"
          f"; {datetime.date.today()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; median of at least {args.repeats} calls and "
          f"{args.layer_seconds:g} s per layer, in {args.rounds} rounds of turns, each block "
          f"after at least {args.warmup} warm-up calls (layers: as many as it times)")
    if args.steps_only:
        bench_steps(device, args.repeats, args.warmup, args.step_seconds, args.rounds)
        return
    print("| layer | shape | batch | k | dense ms | per-example ms | unified ms | "
          "per-example x | unified x |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n_in, n_out, batch, k in cases:
        times = bench_case(n_in, n_out, batch, k, device, args.repeats, args.warmup,
                           args.cuda_graph, args.layer_seconds, args.rounds, compare)
        print_row(name, f"{n_in}->{n_out}", batch, k, times)
    if args.cuda_graph:
        return  # the LSTM, the overhead and the whole steps are timed without graphs
    if args.gpu_paper:
        bench_overhead(device, args.repeats, args.warmup,
                       [case for case in GPU_PAPER_CASES if case[4] == 32], "unified",
                       args.layer_seconds, args.rounds)
        return
    for name, n_in, hidden, length, k in LSTM_CASES:
        times = bench_lstm_case(n_in, hidden, length, k, device, args.repeats, args.warmup,
                                args.layer_seconds, args.rounds, compare=compare)
        print_row(name, f"{n_in}->{hidden} x2, {length} words", 1, k, times)
        times = bench_lstm_case(n_in, hidden, length, k, device, args.repeats, args.warmup,
                                args.layer_seconds, args.rounds, RepeatedBackward())
        print_row(f"{name}, warm caches (diagnostic: backward repeated on one forward)",
                  f"{n_in}->{hidden} x2, {length} words", 1, k, times)
    if not args.quick:
        for mode in ("per_example", "unified"):
            bench_overhead(device, args.repeats, args.warmup, CASES[2:4], mode,
                           args.layer_seconds, args.rounds)
        bench_steps(device, args.repeats, args.warmup, args.step_seconds, args.rounds)


if __name__ == "__main__":
    main(ARGS)
