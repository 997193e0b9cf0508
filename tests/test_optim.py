"""Optimizers that update only the rows meProp touched (meprop/optim.py)."""

import pytest
import torch

import meprop
from meprop import optim
from meprop.mnist import MLP, MLPConfig
from meprop.training import make_optimizer


@pytest.fixture(params=["compiled", "pytorch"])
def update_path(request, monkeypatch):
    """The compiled row update where it builds, and the PyTorch ops it falls back to."""
    if request.param == "compiled":
        if meprop.kernels.cpu() is None:
            pytest.skip("compiled kernels unavailable")
    else:
        monkeypatch.setattr(optim, "_kernel_for", lambda *tensors: None)
    return request.param


def small_mlp(mode, k, sparse, hidden=12, seed=0, device="cpu"):
    torch.manual_seed(seed)
    model = MLP(MLPConfig(in_features=8, hidden=hidden, layers=2, classes=3, k=k, mode=mode))
    model = model.double().to(device)
    meprop.use_persistent_grad(model, sparse)
    return model


def batches(count, size=4, seed=1, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 8, generator=generator, dtype=torch.float64).to(device),
             torch.randint(0, 3, (size,), generator=generator).to(device))
            for _ in range(count)]


def train(model, optimizer, data):
    for inputs, targets in data:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


def lazy_adam_reference(param, grad, rows, state, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam on ``rows`` only, written from the update rule with a row mask."""
    state["step"] = state.get("step", 0) + 1
    step = state["step"]
    mask = torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
    mask[rows] = 1
    exp_avg = state.setdefault("exp_avg", torch.zeros_like(param))
    exp_avg_sq = state.setdefault("exp_avg_sq", torch.zeros_like(param))
    new_avg = betas[0] * exp_avg + (1 - betas[0]) * grad
    new_avg_sq = betas[1] * exp_avg_sq + (1 - betas[1]) * grad * grad
    exp_avg.copy_(torch.where(mask.bool(), new_avg, exp_avg))
    exp_avg_sq.copy_(torch.where(mask.bool(), new_avg_sq, exp_avg_sq))
    denominator = (exp_avg_sq / (1 - betas[1] ** step)).sqrt() + eps
    update = lr / (1 - betas[0] ** step) * exp_avg / denominator
    param.sub_(mask * update)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_adagrad_on_touched_rows_equals_adagrad(mode, update_path, device):
    """A zero gradient row changes neither AdaGrad's sums nor its weights: skipping the rows
    meProp did not touch gives the dense optimizer's result. (On a GPU: only unified meProp
    keeps persistent gradients there, so per-example takes the dense step, as it must.)"""
    data = batches(8, device=device)
    dense = small_mlp(mode, 3, False, device=device)
    sparse = small_mlp(mode, 3, True, device=device)
    train(dense, make_optimizer("adagrad", dense.parameters(), 0.1), data)
    optimizer = make_optimizer("adagrad", sparse.parameters(), 0.1,
                               buffers=optim.touched_weights(sparse))
    assert isinstance(optimizer, optim.TouchedRowsAdagrad)
    train(sparse, optimizer, data)
    for (name, expected), got in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12, msg=name)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_lazy_adam_updates_the_touched_rows_by_adams_rule(mode, update_path, device):
    if device == "cuda" and mode == "per_example":
        pytest.skip("per-example meProp keeps no persistent gradient on a GPU")
    data = batches(6, device=device)
    model = small_mlp(mode, 3, True, device=device)
    reference = small_mlp(mode, 3, True, device=device)
    optimizer = make_optimizer("adam", model.parameters(), 0.01,
                               buffers=optim.touched_weights(model))
    reference_states = {name: {} for name, _ in reference.named_parameters()}
    plain = torch.optim.Adam([reference.linears[2].weight, *[layer.bias for layer in
                                                              reference.linears]], lr=0.01)
    untouched_seen = False
    for inputs, targets in data:
        before = model.linears[0].weight.detach().clone()
        train(model, optimizer, [(inputs, targets)])
        reference.zero_grad(set_to_none=True)
        plain.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(reference(inputs), targets).backward()
        with torch.no_grad():
            for index in (0, 1):  # the meProp hidden layers: only their touched rows
                weight = reference.linears[index].weight
                rows = reference.linears[index]._grad_buffer.written_rows(weight)
                lazy_adam_reference(weight, weight.grad, rows,
                                    reference_states[f"linears.{index}.weight"], lr=0.01)
        plain.step()  # the output layer (k >= 3 classes: dense) and the biases: plain Adam
        for (name, expected), got in zip(reference.named_parameters(), model.parameters(),
                                         strict=True):
            torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10, msg=name)
        unchanged = (model.linears[0].weight == before).all(dim=1)
        untouched_seen |= bool(unchanged.any())
    assert untouched_seen  # some rows were skipped, so the test tells lazy from dense Adam


def test_lazy_adam_equals_adam_when_every_row_is_touched(update_path):
    """With every row touched each step lazy Adam is Adam (a batch of 40, k=3 of 4 rows)."""
    data = batches(5, size=40)
    dense, sparse = small_mlp("per_example", 3, False, hidden=4), small_mlp(
        "per_example", 3, True, hidden=4)
    train(dense, make_optimizer("adam", dense.parameters(), 0.01), data)
    train(sparse, make_optimizer("adam", sparse.parameters(), 0.01,
                                 buffers=optim.touched_weights(sparse)), data)
    for got, expected in zip(sparse.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


def test_accumulated_gradients_and_unbuffered_weights_get_the_dense_step():
    """Two backward passes before a step (the second accumulates into the buffer): the rows
    are unknown, so the whole weight gets Adam's update, as with torch.optim.Adam."""
    data = batches(2)
    dense, sparse = small_mlp("unified", 3, False), small_mlp("unified", 3, True)
    optimizers = [make_optimizer("adam", dense.parameters(), 0.01),
                  make_optimizer("adam", sparse.parameters(), 0.01,
                                 buffers=optim.touched_weights(sparse))]
    for model, optimizer in zip((dense, sparse), optimizers, strict=True):
        optimizer.zero_grad(set_to_none=True)
        for inputs, targets in data:
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    for got, expected in zip(sparse.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


def test_state_dict_resumes_the_same_training():
    data = batches(6)
    whole = small_mlp("per_example", 3, True)
    optimizer = make_optimizer("adam", whole.parameters(), 0.01,
                               buffers=optim.touched_weights(whole))
    train(whole, optimizer, data)
    halves = small_mlp("per_example", 3, True)
    first = make_optimizer("adam", halves.parameters(), 0.01,
                           buffers=optim.touched_weights(halves))
    train(halves, first, data[:3])
    resumed = small_mlp("per_example", 3, True)
    resumed.load_state_dict(halves.state_dict())
    second = make_optimizer("adam", resumed.parameters(), 0.01,
                            buffers=optim.touched_weights(resumed))
    second.load_state_dict(first.state_dict())
    train(resumed, second, data[3:])
    for got, expected in zip(resumed.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_lstm_weights_are_found_with_their_buffers():
    lstm = meprop.LSTM(5, 7, num_layers=2, bidirectional=True, k=2, persistent_grad=True)
    buffers = optim.touched_weights(torch.nn.Sequential(lstm, meprop.Linear(14, 3, k=1)))
    assert len(buffers) == 8  # the linear layer has no persistent gradient
    assert buffers[lstm.weight_hh_l1_reverse] is lstm._grad_buffers[3][1]
    assert buffers[lstm.weight_ih_l0] is lstm._grad_buffers[0][0]


def test_unsupported_options_are_refused():
    model = small_mlp("unified", 3, True)
    with pytest.raises(ValueError, match="amsgrad"):
        optim.TouchedRowsAdam(model.parameters(), optim.touched_weights(model), amsgrad=True)
    with pytest.raises(ValueError, match="closure"):
        optim.TouchedRowsAdam(model.parameters(), {}).step(lambda: 0.0)
