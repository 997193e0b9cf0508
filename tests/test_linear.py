"""meprop.linear / meprop.Linear against a masked-dense reference (float64)."""

import pytest
import torch
import torch.nn.functional as F

import meprop
from meprop.selection import per_example_indices, unified_indices

SHAPES = [  # (leading dims of the input, in_features, out_features, k)
    ((6,), 9, 11, 3),
    ((4, 5), 7, 13, 4),
    ((2, 3, 4), 8, 10, 1),
    ((1,), 5, 6, 5),
    ((17,), 12, 40, 7),
]


def masked_reference(x, weight, bias, grad_output, mask):
    """Gradients of F.linear with dY replaced by mask * dY (bias keeps the full dY)."""
    x2 = x.reshape(-1, x.shape[-1])
    dy = grad_output.reshape(-1, weight.shape[0])
    kept = dy * mask
    grad_input = (kept @ weight).reshape(x.shape)
    grad_weight = kept.t() @ x2
    grad_bias = dy.sum(0) if bias is not None else None
    return grad_input, grad_weight, grad_bias


def run_meprop(x, weight, bias, grad_output, k, mode, selection):
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    bias = bias.detach().requires_grad_() if bias is not None else None
    out = meprop.linear(x, weight, bias, k=k, mode=mode, selection=selection)
    out.backward(grad_output)
    return out, x.grad, weight.grad, (bias.grad if bias is not None else None)


def make_mask(grad_output, k, mode, selection):
    dy = grad_output.reshape(-1, grad_output.shape[-1])
    mask = torch.zeros_like(dy)
    if mode == "per_example":
        mask.scatter_(1, per_example_indices(dy, k, selection), 1.0)
    else:
        mask[:, unified_indices(dy, k, selection)] = 1.0
    return mask


def independent_topk_mask(grad_output, k, mode):
    """Top-k mask built by full sorting, not by the library's selection code."""
    dy = grad_output.reshape(-1, grad_output.shape[-1])
    mask = torch.zeros_like(dy)
    if mode == "per_example":
        order = dy.abs().argsort(dim=1, descending=True)[:, :k]
        mask.scatter_(1, order, 1.0)
    else:
        mask[:, dy.abs().sum(0).argsort(descending=True)[:k]] = 1.0
    return mask


def random_problem(lead, n_in, n_out, device, dtype=torch.float64, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n_in, generator=gen, dtype=dtype).to(device)
    weight = torch.randn(n_out, n_in, generator=gen, dtype=dtype).to(device)
    b = torch.randn(n_out, generator=gen, dtype=dtype).to(device) if bias else None
    grad_output = torch.randn(*lead, n_out, generator=gen, dtype=dtype).to(device)
    return x, weight, b, grad_output


@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("lead,n_in,n_out,k", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_topk_matches_masked_dense(device, mode, lead, n_in, n_out, k, bias):
    x, weight, b, grad_output = random_problem(lead, n_in, n_out, device, bias=bias)
    out, gx, gw, gb = run_meprop(x, weight, b, grad_output, k, mode, "topk")
    torch.testing.assert_close(out, F.linear(x, weight, b), rtol=0, atol=0)
    mask = independent_topk_mask(grad_output, k, mode)
    rx, rw, rb = masked_reference(x, weight, b, grad_output, mask)
    torch.testing.assert_close(gx, rx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(gb, rb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("lead,n_in,n_out,k", SHAPES)
def test_random_matches_masked_dense(device, mode, lead, n_in, n_out, k):
    x, weight, b, grad_output = random_problem(lead, n_in, n_out, device, seed=1)
    torch.manual_seed(123)
    _, gx, gw, gb = run_meprop(x, weight, b, grad_output, k, mode, "random")
    torch.manual_seed(123)  # the forward draws nothing, so the backward's draw repeats
    mask = make_mask(grad_output, k, mode, "random")
    rx, rw, rb = masked_reference(x, weight, b, grad_output, mask)
    torch.testing.assert_close(gx, rx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, rb, rtol=1e-12, atol=1e-12)


def test_random_selection_keeps_k_distinct_entries_and_is_seedable():
    grad_output = torch.randn(50, 30, dtype=torch.float64)
    torch.manual_seed(5)
    first = per_example_indices(grad_output, 4, "random")
    torch.manual_seed(5)
    again = per_example_indices(grad_output, 4, "random")
    assert torch.equal(first, again)
    assert first.shape == (50, 4)
    assert all(len(set(row.tolist())) == 4 for row in first)
    assert first.min() >= 0 and first.max() < 30
    topk = per_example_indices(grad_output, 4, "topk")
    assert not torch.equal(first.sort(1).values, topk.sort(1).values)
    columns = unified_indices(grad_output, 6, "random")
    assert len(set(columns.tolist())) == 6


@pytest.mark.parametrize("k", [None, 0, 13, 20])
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_dense_k_equals_nn_linear(device, k, mode):
    x, weight, b, grad_output = random_problem((4, 3), 6, 13, device)
    _, gx, gw, gb = run_meprop(x, weight, b, grad_output, k, mode, "topk")
    rx, rw, rb = masked_reference(x, weight, b, grad_output, torch.ones(12, 13, device=device,
                                                                         dtype=x.dtype))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, rb)


@pytest.mark.parametrize("function", [meprop.PerExampleLinear, meprop.UnifiedLinear])
def test_gradcheck_sparse_kernels_with_full_selection(function):
    # With k = out_features every entry is kept, so each sparse kernel must give the exact
    # Jacobian of F.linear; this is gradcheck through the real meProp backward.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: function.apply(a, w, b, 3, "topk", None, None), (x, weight, bias)
    )


def test_gradcheck_dense_path():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: meprop.linear(a, w, k=0), (x, weight))


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_input_without_grad(device, mode):
    x, weight, b, grad_output = random_problem((7,), 5, 9, device)
    weight = weight.requires_grad_()
    out = meprop.linear(x, weight, b, k=2, mode=mode)
    out.backward(grad_output)
    mask = independent_topk_mask(grad_output, 2, mode)
    _, rw, _ = masked_reference(x, weight.detach(), b, grad_output, mask)
    torch.testing.assert_close(weight.grad, rw)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_float32_close_to_float64_reference(device, mode):
    x, weight, b, grad_output = random_problem((32,), 24, 50, device)
    _, gx, gw, gb = run_meprop(x.float(), weight.float(), b.float(), grad_output.float(), 5, mode,
                               "topk")
    mask = independent_topk_mask(grad_output, 5, mode)
    rx, rw, rb = masked_reference(x, weight, b, grad_output, mask)
    assert gx.dtype == gw.dtype == gb.dtype == torch.float32
    torch.testing.assert_close(gx.double(), rx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw.double(), rw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_rows_touched_are_the_selected_rows(mode):
    x, weight, b, grad_output = random_problem((6,), 8, 40, "cpu")
    layer = meprop.Linear(8, 40, k=3, mode=mode).double()
    assert meprop.stats(layer)[""]["rows_touched"] is None  # no backward yet
    layer(x).backward(grad_output)
    selected = independent_topk_mask(grad_output, 3, mode).any(dim=0)
    nonzero_rows = layer.weight.grad.abs().sum(dim=1) != 0
    assert torch.equal(nonzero_rows, selected)
    stats = meprop.stats(layer)[""]
    assert stats["rows_touched"] == pytest.approx(selected.sum().item() / 40)
    assert stats["k_ratio"] == pytest.approx(3 / 40)
    if mode == "unified":
        assert selected.sum() == 3
    else:
        assert 3 < selected.sum() <= 18


def test_stats_over_a_model():
    model = torch.nn.Sequential(meprop.Linear(4, 10, k=2), torch.nn.ReLU(),
                                meprop.Linear(10, 3, k=5))
    model(torch.randn(1, 4)).sum().backward()
    stats = meprop.stats(model)
    assert set(stats) == {"0", "2"}
    assert stats["0"]["rows_touched"] == pytest.approx(0.2)  # one example keeps 2 of 10 rows
    assert stats["2"]["rows_touched"] == 1.0 and stats["2"]["k_ratio"] == 1.0  # k >= out: dense
    assert meprop.rows_touched(model) == pytest.approx((2 + 3) / 13)


def test_state_dict_interchanges_with_nn_linear():
    torch.manual_seed(0)
    dense = torch.nn.Linear(6, 4)
    torch.manual_seed(0)
    sparse = meprop.Linear(6, 4, k=2)
    # Same initialisation under the same seed, same names and shapes.
    pairs = zip(dense.state_dict().items(), sparse.state_dict().items(), strict=True)
    for (name_a, a), (name_b, b) in pairs:
        assert name_a == name_b and torch.equal(a, b)
    other = meprop.Linear(6, 4, k=1, mode="unified")
    other.load_state_dict(dense.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(other(x), dense(x))
    back = torch.nn.Linear(6, 4)
    back.load_state_dict(other.state_dict())
    torch.testing.assert_close(back(x), dense(x))
    no_bias = meprop.Linear(6, 4, k=2, bias=False)
    assert set(no_bias.state_dict()) == {"weight"}


def test_extra_repr_shows_k_and_mode():
    text = repr(meprop.Linear(3, 4, k=2, mode="unified", selection="random"))
    assert "k=2" in text and "mode=unified" in text and "selection=random" in text


@pytest.mark.parametrize("bad_k", [-1, 2.5, "3", True])
def test_bad_k_raises(bad_k):
    with pytest.raises(ValueError, match=repr(bad_k).strip("'")):
        meprop.linear(torch.randn(2, 3), torch.randn(4, 3), k=bad_k)
    with pytest.raises(ValueError, match="k must be"):
        meprop.Linear(3, 4, k=bad_k)


def test_bad_mode_and_selection_raise():
    with pytest.raises(ValueError, match="'rowwise'"):
        meprop.linear(torch.randn(2, 3), torch.randn(4, 3), k=2, mode="rowwise")
    with pytest.raises(ValueError, match="'bottomk'"):
        meprop.Linear(3, 4, k=2, selection="bottomk")


def test_cpu_autocast_bfloat16():
    """Autocast runs the products in bfloat16: the Python Function's path, not the compiled
    one (which does float32/float64 only)."""
    layer = meprop.Linear(8, 16, k=4)
    x = torch.randn(5, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    assert "MePropLinearFunction" not in out.grad_fn.name()
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    assert (layer.weight.grad.abs().sum(1) != 0).sum() <= 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_cuda_half_precision(dtype, mode):
    x, weight, b, grad_output = random_problem((16,), 32, 64, "cuda")
    _, gx, gw, _ = run_meprop(x.to(dtype), weight.to(dtype), b.to(dtype), grad_output.to(dtype),
                              8, mode, "topk")
    assert gx.dtype == gw.dtype == dtype
    mask = independent_topk_mask(grad_output.to(dtype).double(), 8, mode)
    rx, rw, _ = masked_reference(x.to(dtype).double(), weight.to(dtype).double(), b,
                                 grad_output.to(dtype).double(), mask)
    torch.testing.assert_close(gx.double(), rx, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(gw.double(), rw, rtol=2e-2, atol=5e-2)
