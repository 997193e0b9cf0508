"""meprop.Dropout: the compiled kernels' hashed mask against what dropout must be."""

import pytest
import torch

import meprop
from meprop import kernels

needs_kernels = pytest.mark.skipif(kernels.cpu() is None, reason="compiled kernels unavailable")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_one_minus_p_scaled_and_passes_the_gradient_through_the_mask(dtype, p):
    x = torch.randn(400, 500, dtype=dtype, requires_grad=True)
    y = meprop.dropout(x, p)
    kept = y != 0
    # 200,000 draws: the kept share is within 5 standard deviations of 1 - p.
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.to(dtype).mean().item() - (1 - p)) < 5 * sigma
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    grad = torch.randn_like(x)
    y.backward(grad)
    torch.testing.assert_close(x.grad, grad * kept.to(dtype) / (1 - p))


@needs_kernels
def test_masks_look_independent_across_neighbours_rows_and_calls():
    x = torch.ones(1000, 500)
    first = (meprop.dropout(x, 0.5) != 0).float()
    second = (meprop.dropout(x, 0.5) != 0).float()
    def correlation(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].abs().item()
    assert correlation(first[:, :-1], first[:, 1:]) < 0.02  # neighbours in a row
    assert correlation(first[:-1], first[1:]) < 0.02  # the same column, rows apart
    assert correlation(first, second) < 0.02  # two calls


@needs_kernels
def test_the_seed_fixes_the_mask_whatever_the_threads():
    x = torch.randn(300, 700)
    threads = torch.get_num_threads()
    masks = []
    try:
        for count in (1, threads, 1):
            torch.set_num_threads(count)
            torch.manual_seed(11)
            masks.append(meprop.dropout(x, 0.3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])
    torch.manual_seed(12)
    assert not torch.equal(meprop.dropout(x, 0.3), masks[0])


def test_module_is_identity_in_eval_and_nn_dropout_elsewhere():
    layer = meprop.Dropout(0.5)
    x = torch.randn(20, 30)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    with kernels.disabled():  # no kernels (as on a GPU): torch's own dropout
        torch.manual_seed(5)
        expected = torch.nn.functional.dropout(x, 0.5)
        torch.manual_seed(5)
        assert torch.equal(layer(x), expected)
    assert torch.equal(meprop.dropout(x, 0.0), x)
    assert meprop.Dropout(0.5).state_dict() == {}  # checkpoints unchanged
