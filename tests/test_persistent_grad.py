"""Persistent weight gradients on unified meProp's PyTorch path (any device), its hand-over
with the compiled CPU layer, the GPU's top-k by chunks, and CUDA-graph capture of the backward.

The compiled layer's own persistent gradients are tested in test_kernels.py.
"""

import pytest
import torch

import meprop
from meprop import functional, kernels
from meprop.selection import largest_indices, two_stage_topk

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture
def reference_path(monkeypatch):
    """Every layer call takes the PyTorch path, as on a GPU or without the kernels."""
    monkeypatch.setattr(functional, "_compiled", lambda *args: None)


def twin_layers(device, k=3, n_in=12, n_out=40):
    """An ordinary unified layer and a persistent-gradient one with the same weights."""
    torch.manual_seed(0)
    plain = meprop.Linear(n_in, n_out, k=k, mode="unified", device=device).double()
    buffered = meprop.Linear(n_in, n_out, k=k, mode="unified", device=device,
                             persistent_grad=True).double()
    buffered.load_state_dict(plain.state_dict())
    return plain, buffered


def random_steps(device, count, batch=5, n_in=12, n_out=40):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, n_in, generator=generator, dtype=torch.float64).to(device),
             torch.randn(batch, n_out, generator=generator, dtype=torch.float64).to(device))
            for _ in range(count)]


def assert_same_grads(buffered, plain):
    torch.testing.assert_close(buffered.weight.grad, plain.weight.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(buffered.bias.grad, plain.bias.grad, atol=1e-12, rtol=0)


def test_buffer_is_the_fresh_gradient_every_step(device, reference_path):
    """Steps whose kept rows differ: the rows written last step and not now are cleared, and
    ``weight.grad`` is the layer's buffer itself."""
    plain, buffered = twin_layers(device)
    kept_rows = []
    for x, grad in random_steps(device, 6):
        for layer in (plain, buffered):
            layer.zero_grad(set_to_none=True)
            layer(x).backward(grad)
        assert_same_grads(buffered, plain)
        assert buffered.weight.grad.data_ptr() == buffered._grad_buffer.tensor.data_ptr()
        kept_rows.append(set(buffered.weight.grad.abs().sum(1).nonzero().flatten().tolist()))
    assert all(len(rows) == 3 for rows in kept_rows)
    assert len(set.union(*kept_rows)) > 3  # the kept rows did change between steps


def test_accumulation_and_in_place_zeroing(device, reference_path):
    plain, buffered = twin_layers(device)
    schedule = ["none", "keep", "zero", "keep", "none", "none"]  # zero_grad before each step
    for (x, grad), action in zip(random_steps(device, len(schedule)), schedule, strict=True):
        for layer in (plain, buffered):
            if action != "keep":
                layer.zero_grad(set_to_none=action == "none")
            layer(x).backward(grad)
        assert_same_grads(buffered, plain)


def test_autograd_grad_partial_backward_and_hooks_get_the_gradient(device, reference_path):
    plain, buffered = twin_layers(device)
    (x, grad), = random_steps(device, 1)
    expected = torch.autograd.grad(plain(x), plain.weight, grad)[0]
    got = torch.autograd.grad(buffered(x), buffered.weight, grad)[0]
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert buffered.weight.grad is None  # autograd.grad must not write .grad
    x_leaf = x.clone().requires_grad_()
    buffered(x_leaf).backward(grad, inputs=[x_leaf])
    assert buffered.weight.grad is None and x_leaf.grad is not None
    buffered(x).backward(grad, inputs=[buffered.weight])
    torch.testing.assert_close(buffered.weight.grad, expected, atol=1e-12, rtol=0)
    buffered.zero_grad(set_to_none=True)
    seen = []
    buffered.weight.register_hook(lambda gradient: seen.append(gradient.clone()))
    buffered(x).backward(grad)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, atol=1e-12, rtol=0)


@pytest.mark.skipif(kernels.cpu() is None, reason="compiled kernels unavailable")
def test_compiled_and_reference_paths_share_one_buffer(monkeypatch):
    """The two writers alternate on one buffer (as when autocast or ``MEPROP_KERNELS`` switch
    paths): each clears what the other wrote, so every step still equals a fresh gradient."""
    plain, buffered = twin_layers("cpu")
    compiled = functional._compiled
    paths = ["compiled", "reference", "reference", "compiled", "compiled", "reference"]
    for (x, grad), path in zip(random_steps("cpu", len(paths)), paths, strict=True):
        monkeypatch.setattr(functional, "_compiled",
                            compiled if path == "compiled" else lambda *args: None)
        for layer in (plain, buffered):
            layer.zero_grad(set_to_none=True)
            layer(x).backward(grad)
        assert_same_grads(buffered, plain)
        assert buffered.weight.grad.data_ptr() == buffered._grad_buffer.tensor.data_ptr()


@pytest.mark.parametrize("k,chunk", [(1, 16), (4, 16), (16, 16), (5, 32)])
def test_two_stage_topk_finds_the_k_largest(k, chunk):
    scores = torch.randperm(256, generator=torch.Generator().manual_seed(k)).float()
    expected = set(scores.topk(k).indices.tolist())
    assert set(two_stage_topk(scores, k, chunk).tolist()) == expected


def test_largest_indices_eagerly_and_in_a_cuda_graph(device):
    scores = torch.randperm(8192, generator=torch.Generator().manual_seed(0)).float().to(device)
    for k in (8, 32, 512, 3000):
        expected = set(scores.topk(k).indices.tolist())
        assert set(largest_indices(scores, k).tolist()) == expected
        if device == "cuda":  # captured, it takes the top k by chunks
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = largest_indices(scores, k)
            graph.replay()
            assert set(captured.tolist()) == expected


@needs_cuda
@pytest.mark.parametrize("mode,persistent", [("unified", False), ("unified", True),
                                             ("per_example", False)])
def test_whole_step_captured_in_a_cuda_graph_matches_eager(mode, persistent):
    """A training step's forward and backward captured once (PyTorch's whole-network capture)
    and replayed on new data in the static tensors gives the eager gradients each time."""
    torch.manual_seed(0)
    eager = meprop.Linear(64, 256, k=8, mode=mode, device="cuda")
    graphed = meprop.Linear(64, 256, k=8, mode=mode, device="cuda", persistent_grad=persistent)
    graphed.load_state_dict(eager.state_dict())
    static_x = torch.randn(32, 64, device="cuda")
    static_grad = torch.randn(32, 256, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            graphed.zero_grad(set_to_none=True)
            graphed(static_x).backward(static_grad)
    torch.cuda.current_stream().wait_stream(side)
    graphed.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed(static_x).backward(static_grad)
    generator = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(4):
        static_x.copy_(torch.randn(32, 64, device="cuda", generator=generator))
        static_grad.copy_(torch.randn(32, 256, device="cuda", generator=generator))
        graph.replay()
        eager.zero_grad(set_to_none=True)
        eager(static_x).backward(static_grad)
        torch.testing.assert_close(graphed.weight.grad, eager.weight.grad)
        torch.testing.assert_close(graphed.bias.grad, eager.bias.grad)
