"""The compiled CPU kernels (meprop/kernels) against the pure-PyTorch reference path."""

import ast
import contextlib
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import meprop
from meprop import kernels
from meprop.functional import linear

HAVE_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None
needs_kernels = pytest.mark.skipif(kernels.cpu() is None, reason="compiled kernels unavailable")


def levels_under_test():
    """The instruction-set levels this module's tests run at: ``MEPROP_TEST_LEVELS`` (a comma
    list, or ``all``: every level this CPU runs), else the build the layers use
    (``MEPROP_CPU_ARCH``, default native) and x86-64-v3 (AVX2, the level most users' CPUs have)
    where this CPU runs it. Each level is a build of its own, compiled once and cached."""
    setting = os.environ.get("MEPROP_TEST_LEVELS", "").strip()
    if setting == "all":
        return list(kernels.supported_levels())
    if setting:
        return [name.strip() for name in setting.split(",") if name.strip()]
    levels = [kernels.level()]
    if "x86-64-v3" in kernels.supported_levels() and "x86-64-v3" not in levels:
        levels.append("x86-64-v3")
    return levels


@pytest.fixture(autouse=True, scope="module", params=levels_under_test())
def level(request):
    """Every test here runs once per tested level, the layers using that level's build."""
    if request.param not in kernels.supported_levels():
        pytest.skip(f"this CPU does not run {request.param} code")
    with kernels.using_level(request.param):
        yield request.param


def test_kernels_build_where_a_compiler_exists():
    """CI has a compiler: the fast path must really be built there, not silently skipped."""
    if not HAVE_COMPILER:
        pytest.skip("no C++ compiler")
    assert kernels.cpu() is not None


def _local_includes(source):
    return re.findall(r'^#include "([^"]+)"', source.read_text(), flags=re.MULTILINE)


def test_installed_package_ships_every_file_the_kernels_include():
    """A non-editable install builds the kernels from the installed files: setup.py's
    package_data must take every header cpu.cpp includes, directly or through another."""
    folder = Path(kernels.SOURCE).parent
    setup = Path(__file__).resolve().parents[1] / "setup.py"
    call = next(node for node in ast.walk(ast.parse(setup.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    package_data = ast.literal_eval(next(kw.value for kw in call.keywords
                                         if kw.arg == "package_data"))
    patterns = package_data["meprop"]
    needed, pending = set(), ["cpu.cpp"]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(_local_includes(folder / name))
    assert {"cpu.cpp", "linear.h", "lstm.h", "selection.h"} <= needed
    for name in needed:
        assert (folder / name).exists(), name
        assert any(fnmatch.fnmatch(f"kernels/{name}", pattern) for pattern in patterns), name


def linear_grads(x, weight, bias, grad, k, mode, compiled):
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    if compiled:
        linear(x, weight, bias, k=k, mode=mode).backward(grad)
    else:
        with kernels.disabled():
            linear(x, weight, bias, k=k, mode=mode).backward(grad)
    return x.grad, weight.grad, bias.grad


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("batch, n_in, n_out, k", [
    (1, 7, 5, 1), (13, 37, 41, 7), (13, 37, 41, 41), (9, 300, 64, 3),
    (2500, 40, 30, 4),  # more rows than one block of the grouped weight gradient
    # unified's products: whole 4-vector tiles, a single vector, a scalar tail; row blocks of
    # 6 and 64 with remainders; k not a multiple of the 5 columns taken at once
    (131, 85, 50, 7), (67, 149, 20, 20),
    (1100, 2048, 24, 19),  # an input gradient over 8 MB: written with streaming stores
])
def test_linear_kernels_match_reference(dtype, mode, batch, n_in, n_out, k):
    generator = torch.Generator().manual_seed(batch + n_in)
    x = torch.randn(batch, n_in, generator=generator, dtype=dtype)
    weight = torch.randn(n_out, n_in, generator=generator, dtype=dtype)
    bias = torch.randn(n_out, generator=generator, dtype=dtype)
    grad = torch.randn(batch, n_out, generator=generator, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    compiled = linear_grads(x, weight, bias, grad, k, mode, compiled=True)
    reference = linear_grads(x, weight, bias, grad, k, mode, compiled=False)
    for got, expected in zip(compiled, reference, strict=True):
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    if k < n_out:  # and it is sparse: rows nobody kept stay zero
        untouched = (compiled[1] == 0).all(dim=1).sum().item()
        assert untouched >= n_out - (k if mode == "unified" else batch * k)


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_large_input_gradients_reuse_memory_but_never_alias(mode):
    """Gradients of 1 MB and more come from the kernels' block cache: a gradient still
    held is never handed out again, a freed one is, and the tensors behave as ordinary ones."""
    layer = meprop.Linear(1024, 32, k=4, mode=mode)
    x = torch.randn(1100, 1024, requires_grad=True)  # a 4.5 MB input gradient
    grad = torch.randn(1100, 32)
    layer(x).backward(grad)
    first = x.grad
    expected = first.clone()
    x.grad = None
    layer(x).backward(grad * 2)  # the first gradient is still held: new memory
    second = x.grad
    assert second.data_ptr() != first.data_ptr()
    torch.testing.assert_close(first, expected, atol=0, rtol=0)
    torch.testing.assert_close(second, expected * 2)
    address = second.data_ptr()
    x.grad = None
    del second
    layer(x).backward(grad)  # freed: its memory serves the next gradient of that size
    assert x.grad.data_ptr() == address
    torch.testing.assert_close(x.grad, expected)
    x.grad.resize_(2200, 1024)  # an ordinary, resizable tensor
    assert x.grad.shape == (2200, 1024)


@needs_kernels
def test_linear_kernel_on_strided_input_and_ties():
    """Non-contiguous inputs and a gradient full of exact zeros (ReLU) give the reference's
    gradients; which zero entries are 'kept' does not matter as they contribute nothing."""
    x = torch.randn(40, 24, dtype=torch.float64).t()  # [24, 40], strided
    weight = torch.randn(30, 40, dtype=torch.float64)
    bias = torch.zeros(30, dtype=torch.float64)
    grad = torch.randn(24, 30, dtype=torch.float64).relu()
    grad[:, ::2] = 0
    for mode in ("per_example", "unified"):
        compiled = linear_grads(x, weight, bias, grad, 20, mode, compiled=True)
        reference = linear_grads(x, weight, bias, grad, 20, mode, compiled=False)
        for got, expected in zip(compiled, reference, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


@needs_kernels
def test_rows_touched_from_the_kernel():
    layer = meprop.Linear(16, 50, k=3).double()
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    touched = layer.backward_record.touched
    assert 3 <= int(touched) <= 12
    assert int(touched) == int((layer.weight.grad != 0).any(dim=1).sum())


@needs_kernels
def test_compiled_layer_is_one_autograd_node_without_python():
    """The whole layer is the C++ autograd Function: no Python Function in the graph."""
    layer = meprop.Linear(16, 50, k=3)
    output = layer(torch.randn(4, 16, requires_grad=True))
    assert "MePropLinearFunction" in output.grad_fn.name()
    with kernels.disabled():
        assert "MePropLinearFunction" not in layer(torch.randn(4, 16)).grad_fn.name()


@needs_kernels
def test_compiled_lstm_layer_is_one_autograd_node_without_python():
    """A BiLSTM layer is one C++ autograd Function, whose rows touched fill in at backward."""
    layer = meprop.LSTM(5, 8, bidirectional=True, k=2)
    output, _ = layer(torch.randn(6, 1, 5, requires_grad=True))
    node = output.grad_fn.next_functions[0][0]  # behind the view back to [T, B, 2H]
    assert "MePropLSTMLayerFunction" in node.name()
    assert [part.touched.item() for part in layer._part_records] == [-1, -1]
    output.sum().backward()
    assert all(0 < part.touched.item() <= 4 * 8 for part in layer._part_records)
    with kernels.disabled():
        output, _ = layer(torch.randn(6, 1, 5))
        assert output.grad_fn.next_functions[0][0].name() == "LSTMLayerFunctionBackward"


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_compiled_layer_without_bias_and_frozen_parts(mode):
    """No bias (no third graph input) and inputs that need no gradient: only what is asked
    for is computed, and it equals the reference."""
    weight = torch.randn(30, 12, dtype=torch.float64)
    x = torch.randn(5, 12, dtype=torch.float64)
    grad = torch.randn(5, 30, dtype=torch.float64)
    grads = {}
    for compiled in (True, False):
        w, inputs = weight.clone().requires_grad_(), x.clone()  # input needs no gradient
        context = kernels.disabled() if not compiled else torch.enable_grad()
        with context:
            linear(inputs, w, None, k=4, mode=mode).backward(grad)
        assert inputs.grad is None
        grads[compiled] = w.grad
    torch.testing.assert_close(grads[True], grads[False], atol=1e-12, rtol=0)


@needs_kernels
def test_compiled_layer_rows_touched_only_after_backward_and_accumulates():
    layer = meprop.Linear(16, 50, k=3).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    output = layer(x)
    assert meprop.stats(layer)[""]["rows_touched"] is None  # forward only
    output.sum().backward()
    first = layer.weight.grad.clone()
    assert meprop.stats(layer)[""]["rows_touched"] > 0
    layer(x).sum().backward()  # gradients accumulate as for any autograd Function
    torch.testing.assert_close(layer.weight.grad, 2 * first)


@needs_kernels
def test_compiled_layer_refuses_a_second_derivative():
    layer = meprop.Linear(6, 10, k=2)
    x = torch.randn(3, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(layer(x).sum(), x, create_graph=True)


def lstm_grads(module, sequences, compiled):
    module.zero_grad()
    sequences = [s.detach().clone().requires_grad_() for s in sequences]
    packed = pack_sequence(sequences, enforce_sorted=False)

    def run():
        output, (h_n, c_n) = module(packed)
        (output.data.sin().sum() + h_n.cos().sum() + (c_n * c_n).sum()).backward()

    if compiled:
        run()
    else:
        with kernels.disabled():
            run()
    return [p.grad.clone() for p in module.parameters()] + [s.grad for s in sequences]


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("hidden, lengths", [
    (16, (6, 2, 9, 1, 4)),
    # the forward's recurrent product: 8-row blocks and a remainder, 48-column tiles, a
    # single-vector tail and scalars; its transpose: 16 x 16 blocks and what is left
    (37, (3, 5, 2, 7, 1, 4, 6, 2, 3, 5, 1)),
    (37, (9,)),  # one sentence: the forward's dot products with the weight as stored
])
def test_lstm_kernel_matches_reference(mode, dtype, hidden, lengths):
    torch.manual_seed(3)
    module = meprop.LSTM(11, hidden, num_layers=2, bidirectional=True, k=3, mode=mode).to(dtype)
    sequences = [torch.randn(n, 11, dtype=dtype) for n in lengths]
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    compiled = lstm_grads(module, sequences, compiled=True)
    reference = lstm_grads(module, sequences, compiled=False)
    for got, expected in zip(compiled, reference, strict=True):
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@needs_kernels
def test_lstm_one_sentence_forward_split_across_threads_matches_reference():
    """One direction, one sentence, 2,404 gate rows: on 2 threads the forward's dot products
    split at row 1,202, not a multiple of their 4-row blocks."""
    torch.manual_seed(4)
    module = meprop.LSTM(7, 601, k=3).double()
    sequences = [torch.randn(4, 7, dtype=torch.float64)]
    compiled = lstm_grads(module, sequences, compiled=True)
    reference = lstm_grads(module, sequences, compiled=False)
    for got, expected in zip(compiled, reference, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_lstm_directions_side_by_side_match_reference_with_state_gradients(mode):
    """The compiled forward and backward run a layer's two directions on threads of their own
    (with one thread, one after the other): outputs, final states and the gradients of the
    initial states and parameters agree with the reference, and the states stay in the graph."""
    torch.manual_seed(5)
    module = meprop.LSTM(6, 9, num_layers=2, bidirectional=True, k=3, mode=mode).double()
    x = torch.randn(7, 4, 6, dtype=torch.float64)
    state = torch.randn(2, 4, 4, 9, dtype=torch.float64)
    results = []
    threads = torch.get_num_threads()
    for compiled, n_threads in [(True, 2), (True, 1), (False, 2)]:
        torch.set_num_threads(n_threads)
        module.zero_grad()
        h0, c0 = (part.clone().requires_grad_() for part in state)
        try:
            with contextlib.nullcontext() if compiled else kernels.disabled():
                output, (h_n, c_n) = module(x, (h0, c0))
                assert output.grad_fn is not None and h_n.grad_fn is not None
                (output.sin().sum() + h_n.cos().sum() + (c_n * c_n).sum()).backward()
        finally:
            torch.set_num_threads(threads)
        results.append([output.detach(), h_n.detach(), c_n.detach(), h0.grad, c0.grad]
                       + [p.grad.clone() for p in module.parameters()])
    for other in results[1:]:
        for got, expected in zip(results[0], other, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@needs_kernels
def test_lstm_kernels_with_frozen_weights_no_bias_and_an_unused_state():
    """Frozen weights (one per layer), no biases, persistent buffers, and a loss that uses c_n
    and a few output rows but not h_n: gradients that arrive as None (no zeros are
    materialised) and weights that need none, compiled against the reference."""
    torch.manual_seed(0)
    module = meprop.LSTM(5, 7, num_layers=2, bidirectional=True, k=2, bias=False,
                         persistent_grad=True).double()
    module.weight_hh_l0_reverse.requires_grad_(False)
    module.weight_ih_l1.requires_grad_(False)
    sequences = [torch.randn(n, 5, dtype=torch.float64) for n in (4, 6, 3)]
    results = []
    for compiled in (True, False):
        for _ in range(2):  # the second step rewrites the persistent buffers
            module.zero_grad(set_to_none=True)
            inputs = [s.clone().requires_grad_() for s in sequences]
            with contextlib.nullcontext() if compiled else kernels.disabled():
                output, (_, c_n) = module(pack_sequence(inputs, enforce_sorted=False))
                (output.data[:5].sum() + c_n.sum()).backward()
        results.append([p.grad for p in module.parameters()] + [x.grad for x in inputs])
    frozen = [p is module.weight_ih_l1 for p in module.parameters()].index(True)
    assert results[0][frozen] is None
    for got, expected in zip(*results, strict=True):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_disabled_block_and_environment_switch_the_kernels_off():
    with kernels.disabled():
        assert kernels.cpu() is None
        assert kernels.usable(torch.zeros(2)) is None
    code = "from meprop import kernels; print(kernels.cpu() is None)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "MEPROP_KERNELS": "0"}, check=True)
    assert result.stdout.strip() == "True"


def test_kernels_skip_what_they_cannot_run():
    assert kernels.usable(torch.zeros(2, dtype=torch.float16)) is None
    assert kernels.usable(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) is None


def test_failed_build_falls_back_with_a_warning(monkeypatch):
    from torch.utils import cpp_extension

    def broken_load(*args, **kwargs):
        raise RuntimeError("no compiler here")

    kernels._build.cache_clear()
    monkeypatch.setattr(cpp_extension, "load", broken_load)
    monkeypatch.setattr(kernels, "_required", False)  # MEPROP_KERNELS unset: warn, fall back
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert kernels.cpu() is None
        assert any("unavailable" in str(w.message) for w in caught)
        # The layer still trains through the PyTorch path.
        layer = meprop.Linear(8, 6, k=2)
        x = torch.randn(3, 8, requires_grad=True)
        layer(x).sum().backward()
        assert (layer.weight.grad != 0).any(dim=1).sum() <= 6
    finally:
        kernels._build.cache_clear()


def twin_layers(mode, k=3):
    """A persistent-gradient layer and an ordinary one with the same weights."""
    torch.manual_seed(0)
    plain = meprop.Linear(12, 40, k=k, mode=mode).double()
    buffered = meprop.Linear(12, 40, k=k, mode=mode, persistent_grad=True).double()
    buffered.load_state_dict(plain.state_dict())
    return plain, buffered


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_persistent_grad_equals_a_fresh_gradient_every_step(mode):
    """Over steps whose kept rows differ, the buffer (weight.grad itself) holds exactly the
    fresh gradient: rows written last step and not now are cleared."""
    plain, buffered = twin_layers(mode)
    for _ in range(6):
        x = torch.randn(5, 12, dtype=torch.float64)
        grad = torch.randn(5, 40, dtype=torch.float64)
        for layer in (plain, buffered):
            layer.zero_grad(set_to_none=True)
            layer(x).backward(grad)
        torch.testing.assert_close(buffered.weight.grad, plain.weight.grad, atol=1e-12, rtol=0)
        torch.testing.assert_close(buffered.bias.grad, plain.bias.grad, atol=1e-12, rtol=0)
        # The layer's buffer itself, not a fresh tensor per step.
        assert buffered.weight.grad.data_ptr() == buffered._grad_buffer.tensor.data_ptr()
    assert meprop.stats(buffered)[""]["rows_touched"] == meprop.stats(plain)[""]["rows_touched"]


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_persistent_grad_accumulates_and_recovers(mode):
    """Accumulation without zero_grad, in-place zero_grad, then set_to_none again: every
    gradient equals the ordinary layer's."""
    plain, buffered = twin_layers(mode)
    data = [(torch.randn(4, 12, dtype=torch.float64), torch.randn(4, 40, dtype=torch.float64))
            for _ in range(5)]
    schedule = ["none", "keep", "zero", "keep", "none"]  # what zero_grad does before each step
    for (x, grad), action in zip(data, schedule, strict=True):
        for layer in (plain, buffered):
            if action != "keep":
                layer.zero_grad(set_to_none=action == "none")
            layer(x).backward(grad)
        torch.testing.assert_close(buffered.weight.grad, plain.weight.grad, atol=1e-12, rtol=0)


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("kind", ["linear", "lstm"])
def test_persistent_grad_survives_the_reference_path_accumulating_into_it(kind, mode):
    """The compiled step leaves its buffer as .grad; a step on the PyTorch path (kernels off)
    accumulates into it without zero_grad; after zero_grad(set_to_none) the next compiled step
    must still give the fresh gradient, so the reference path marks the buffer stale (it did
    not for per-example meProp, nor for the LSTM's unified mode: rows stayed behind)."""
    torch.manual_seed(0)
    if kind == "linear":
        plain = meprop.Linear(12, 40, k=3, mode=mode).double()
        buffered = meprop.Linear(12, 40, k=3, mode=mode, persistent_grad=True).double()
        inputs = [torch.randn(4, 12, dtype=torch.float64) for _ in range(3)]
    else:
        plain = meprop.LSTM(5, 6, k=2, mode=mode).double()
        buffered = meprop.LSTM(5, 6, k=2, mode=mode, persistent_grad=True).double()
        inputs = [torch.randn(7, 1, 5, dtype=torch.float64) for _ in range(3)]
    buffered.load_state_dict(plain.state_dict())

    def step(module, x):
        output = module(x)
        (output[0] if kind == "lstm" else output).pow(2).sum().backward()

    step(buffered, inputs[0])
    with kernels.disabled():
        step(buffered, inputs[1])
    buffered.zero_grad(set_to_none=True)
    step(buffered, inputs[2])
    step(plain, inputs[2])
    for name, parameter in plain.named_parameters():
        torch.testing.assert_close(buffered.get_parameter(name).grad, parameter.grad,
                                   atol=1e-12, rtol=0, msg=name)


@needs_kernels
def test_persistent_grad_leaves_autograd_grad_and_hooks_alone():
    plain, buffered = twin_layers("per_example")
    x = torch.randn(4, 12, dtype=torch.float64)
    expected = torch.autograd.grad(plain(x).sum(), plain.weight)[0]
    got = torch.autograd.grad(buffered(x).sum(), buffered.weight)[0]
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert buffered.weight.grad is None  # autograd.grad must not write .grad
    seen = []
    buffered.weight.register_hook(lambda grad: seen.append(grad.clone()))
    buffered(x).sum().backward()
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, atol=1e-12, rtol=0)


@needs_kernels
def test_persistent_grad_follows_a_dtype_change():
    layer = meprop.Linear(6, 20, k=2, persistent_grad=True)
    layer(torch.randn(3, 6)).sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    layer.zero_grad(set_to_none=True)
    layer.double()
    layer(torch.randn(3, 6, dtype=torch.float64)).sum().backward()
    assert layer.weight.grad.dtype == torch.float64
    assert "persistent_grad=True" in repr(layer)


@needs_kernels
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_lstm_persistent_grad_equals_fresh_gradients(mode):
    """Two layers, both directions, packed sentences of unequal length; steps with
    zero_grad(set_to_none), accumulation, and the LSTM called twice in one graph."""
    torch.manual_seed(0)
    plain = meprop.LSTM(5, 7, num_layers=2, bidirectional=True, k=2, mode=mode).double()
    buffered = meprop.LSTM(5, 7, num_layers=2, bidirectional=True, k=2, mode=mode).double()
    buffered.load_state_dict(plain.state_dict())
    assert meprop.use_persistent_grad(torch.nn.Sequential(buffered)) == 1
    for action, calls in [("none", 1), ("none", 1), ("keep", 1), ("none", 2), ("none", 1)]:
        sentences = [pack_sequence([torch.randn(n, 5, dtype=torch.float64) for n in (6, 4, 3)])
                     for _ in range(calls)]
        for module in (plain, buffered):
            if action == "none":
                module.zero_grad(set_to_none=True)
            sum(module(packed)[0].data.pow(2).sum() for packed in sentences).backward()
        for name, parameter in plain.named_parameters():
            torch.testing.assert_close(buffered.get_parameter(name).grad, parameter.grad,
                                       atol=1e-12, rtol=0)
    buffered.zero_grad(set_to_none=True)
    buffered(sentences[0])[0].data.sum().backward()
    first_buffer = buffered._grad_buffers[0][0].tensor
    assert buffered.weight_ih_l0.grad.data_ptr() == first_buffer.data_ptr()


@needs_kernels
def test_persistent_grad_lets_a_computed_weight_pass_its_gradient_on():
    """A weight that is not a leaf (here scaled from a parameter) gets no buffer: its
    gradient reaches the parameter it came from, as without the option."""
    torch.manual_seed(0)
    base = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 6, dtype=torch.float64)
    grads = []
    for buffer in (None, meprop.functional.GradBuffer()):
        base.grad = None
        linear(x, base * 2.0, None, k=3, grad_buffer=buffer).sum().backward()
        grads.append(base.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], atol=0, rtol=0)


def selection_cases():
    generator = torch.Generator().manual_seed(7)
    gaussian = torch.randn(300, 500, generator=generator)
    ties = torch.randint(-3, 4, (64, 500), generator=generator).float()  # many equal magnitudes
    zeros = torch.zeros(4, 500)
    special = torch.randn(6, 500, generator=generator)
    special[0, 17] = float("nan")
    special[1, :40] = float("nan")  # whole groups of NaN: the filter has nothing to go on
    special[2, 3] = float("inf")
    special[3, ::7] = float("-inf")
    narrow = torch.randn(50, 19, generator=generator)  # shorter than a vector per group
    wide_range = torch.randn(20, 333, generator=generator) * torch.logspace(-30, 30, 333)
    return [(gaussian, 20), (gaussian, 1), (gaussian, 500), (gaussian, 499), (ties, 20),
            (zeros, 5), (special, 20), (narrow, 5), (narrow, 19), (wide_range, 25)]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", range(len(selection_cases())))
def test_selection_keeps_the_magnitudes_topk_keeps(dtype, case):
    """The compiled selection (filter, then a search on the bit patterns) keeps k distinct
    columns whose magnitudes are those torch.topk keeps — ties, zeros, NaN and infinities too."""
    grad, k = selection_cases()[case]
    grad = grad.to(dtype)
    columns = kernels.cpu().topk_columns(grad, k)
    assert columns.shape == (grad.shape[0], k)
    assert (columns.sort(dim=1).values.diff(dim=1) > 0).all()  # distinct, in range
    assert columns.min() >= 0 and columns.max() < grad.shape[1]
    kept = grad.abs().gather(1, columns).sort(dim=1).values
    expected = grad.abs().topk(k, dim=1).values.sort(dim=1).values
    torch.testing.assert_close(kept, expected, atol=0, rtol=0, equal_nan=True)
