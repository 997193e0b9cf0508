"""meprop.LSTM against nn.LSTM (k=None) and against an explicit masked-BPTT reference (k < H)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import meprop
from meprop.lstm import lstm_forward

F64 = torch.float64


def loss_of(output, h_n, c_n):
    """A loss that gives every output, h_n and c_n entry a different gradient."""
    data = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    return data.sin().sum() + h_n.cos().sum() + (c_n * c_n).sum()


def gradients(module, forward, x, hx):
    x = x.detach().requires_grad_()
    module.zero_grad()
    output, (h_n, c_n) = forward(x)
    loss_of(output, h_n, c_n).backward()
    grads = {name: param.grad.clone() for name, param in module.named_parameters()}
    out = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    return out.detach(), h_n.detach(), c_n.detach(), x.grad, grads


def assert_same(first, second, tol=1e-8):
    for a, b in zip(first[:4], second[:4], strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
    assert first[4].keys() == second[4].keys()
    for name in first[4]:
        torch.testing.assert_close(first[4][name], second[4][name], atol=tol, rtol=0, msg=name)


CONFIGS = [  # (num_layers, bidirectional, batch_first, packed)
    (1, False, False, False),
    (1, True, True, False),
    (2, True, False, True),
    (2, False, True, True),
]


def make_pair(num_layers, bidirectional, batch_first, k, device, bias=True, mode="per_example"):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(5, 6, num_layers, bias=bias, batch_first=batch_first,
                              bidirectional=bidirectional, dtype=F64, device=device)
    layer = meprop.LSTM(5, 6, num_layers, bias=bias, batch_first=batch_first,
                        bidirectional=bidirectional, k=k, mode=mode, dtype=F64, device=device)
    layer.load_state_dict(reference.state_dict())
    return reference, layer


def make_inputs(num_layers, bidirectional, batch_first, device):
    torch.manual_seed(1)
    shape = (3, 7, 5) if batch_first else (7, 3, 5)
    x = torch.randn(shape, dtype=F64, device=device)
    states = num_layers * (2 if bidirectional else 1)
    hx = (torch.randn(states, 3, 6, dtype=F64, device=device),
          torch.randn(states, 3, 6, dtype=F64, device=device))
    return x, hx


def forward_fn(module, call, hx, packed, batch_first):
    lengths = torch.tensor([5, 7, 2])

    def run(x):
        inputs = pack_padded_sequence(x, lengths, batch_first=batch_first,
                                      enforce_sorted=False) if packed else x
        return call(module, inputs, hx)
    return run


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,packed", CONFIGS)
@pytest.mark.parametrize("k", [None, 6])
def test_full_k_equals_nn_lstm(num_layers, bidirectional, batch_first, packed, k, device):
    """k=None: the manual BPTT with dense products; k=H: the sparse kernels keeping every entry.
    Both must reproduce nn.LSTM's outputs and gradients (float64, 1e-8)."""
    reference, layer = make_pair(num_layers, bidirectional, batch_first, k, device)
    x, hx = make_inputs(num_layers, bidirectional, batch_first, device)
    expected = gradients(reference, forward_fn(reference, lambda m, i, h: m(i, h), hx, packed,
                                               batch_first), x, hx)
    got = gradients(layer, forward_fn(layer, lstm_forward, hx, packed, batch_first), x, hx)
    assert_same(expected, got)


def test_dense_k_is_nn_lstm(device):
    reference, layer = make_pair(1, True, False, None, device)
    x, hx = make_inputs(1, True, False, device)
    expected = gradients(reference, lambda inputs: reference(inputs, hx), x, hx)
    got = gradients(layer, lambda inputs: layer(inputs, hx), x, hx)
    assert_same(expected, got)
    assert meprop.stats(torch.nn.Sequential(layer))["0"]["rows_touched"] == 1.0


def reference_masked_lstm(module, x, hx, k, mode):
    """Explicit meProp BPTT on the padded input (no packing): per step, gates' products
    ``W_ih x + W_hh h`` get a hook that masks their gradient to each gate's top-k (chosen by a
    full sort); the biases are added after the hook, so they see the full gradient."""
    hidden = module.hidden_size
    directions = 2 if module.bidirectional else 1
    layer_input, h_n, c_n = x, [], []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih = getattr(module, "weight_ih" + suffix)
            w_hh = getattr(module, "weight_hh" + suffix)
            bias = getattr(module, "bias_ih" + suffix) + getattr(module, "bias_hh" + suffix)
            index = layer * directions + direction
            h, c = hx[0][index], hx[1][index]
            steps = range(layer_input.shape[0])
            step_outputs = {}
            for t in (reversed(steps) if direction else steps):
                products = layer_input[t] @ w_ih.t() + h @ w_hh.t()
                products.register_hook(lambda grad: grad * topk_gate_mask(grad, k, mode, hidden))
                i, f, g, o = (products + bias).chunk(4, 1)
                c = i.sigmoid() * g.tanh() + f.sigmoid() * c
                h = o.sigmoid() * c.tanh()
                step_outputs[t] = h
            outputs.append(torch.stack([step_outputs[t] for t in steps]))
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=2)
    return layer_input, (torch.stack(h_n), torch.stack(c_n))


def topk_gate_mask(grad, k, mode, hidden):
    mask = torch.zeros_like(grad)
    for gate in range(4):
        columns = slice(gate * hidden, (gate + 1) * hidden)
        scores = grad[:, columns].abs()
        if mode == "per_example":
            order = scores.argsort(dim=1, descending=True)[:, :k] + gate * hidden
            mask.scatter_(1, order, 1.0)
        else:
            order = scores.sum(0).argsort(descending=True)[:k] + gate * hidden
            mask[:, order] = 1.0
    return mask


@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_sparse_bptt_matches_masked_reference(mode, num_layers, bidirectional, k, device):
    reference, layer = make_pair(num_layers, bidirectional, False, k, device, mode=mode)
    x, hx = make_inputs(num_layers, bidirectional, False, device)
    expected = gradients(layer, lambda inputs: reference_masked_lstm(layer, inputs, hx, k, mode),
                         x, hx)
    got = gradients(layer, lambda inputs: layer(inputs, hx), x, hx)
    assert_same(expected, got)
    dense = gradients(reference, lambda inputs: reference(inputs, hx), x, hx)
    # The rule really drops something: gradients differ from the dense ones.
    assert not torch.allclose(dense[4]["weight_hh_l0"], got[4]["weight_hh_l0"])


def test_packed_output_matches_padded_run_of_each_sequence(device):
    """Packing must not mix sequences: each sequence alone gives the same output and h_n."""
    _, layer = make_pair(1, True, True, 2, device)
    x, _ = make_inputs(1, True, True, device)
    lengths = torch.tensor([5, 7, 2])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    output, (h_n, _) = layer(packed)
    padded, _ = pad_packed_sequence(output, batch_first=True)
    for b, length in enumerate(lengths.tolist()):
        alone, (h_alone, _) = layer(x[b:b + 1, :length])
        torch.testing.assert_close(padded[b, :length], alone[0])
        torch.testing.assert_close(h_n[:, b], h_alone[:, 0])


def test_unbatched_input_and_default_state(device):
    _, layer = make_pair(1, False, False, 3, device)
    reference = torch.nn.LSTM(5, 6, dtype=F64, device=device)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(4, 5, dtype=F64, device=device)
    output, (h_n, c_n) = layer(x)
    expected, (h_expected, c_expected) = reference(x)
    assert output.shape == (4, 6) and h_n.shape == (1, 6)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(c_n, c_expected)


def test_state_dicts_interchange_and_rows_touched():
    reference = torch.nn.LSTM(5, 20, 2, bidirectional=True)
    layer = meprop.LSTM(5, 20, 2, bidirectional=True, k=3)
    assert layer.state_dict().keys() == reference.state_dict().keys()
    layer.load_state_dict(reference.state_dict())
    reference.load_state_dict(layer.state_dict())
    output, _ = layer(torch.randn(1, 1, 5))  # one example, one step: at most 4 * k rows per part
    output.sum().backward()
    stats = meprop.stats(torch.nn.Sequential(layer))["0"]
    assert stats["rows"] == 4 * 20 * 2 * 2
    assert stats["k_ratio"] == pytest.approx(3 / 20)
    assert 0 < stats["rows_touched"] <= 4 * 3 * 4 / stats["rows"]
    assert 0 < (layer.weight_ih_l0.grad.abs().sum(1) > 0).sum() <= 4 * 3


def test_moves_between_devices_and_keeps_lstm_mode(device):
    """nn.LSTM's own ``mode`` must stay "LSTM": moving to CUDA flattens weights for cuDNN."""
    layer = meprop.LSTM(5, 6, k=2, mode="unified").to(device)
    assert layer.mode == "LSTM" and layer.meprop_mode == "unified"
    output, _ = layer(torch.randn(3, 2, 5, device=device))
    output.sum().backward()
    dense = meprop.LSTM(5, 6).to(device)
    dense(torch.randn(3, 2, 5, device=device))[0].sum().backward()


def test_inference_without_grad_gives_the_same_outputs(device):
    """Under no_grad the layer runs nn.LSTM's fused forward; results must not change."""
    _, layer = make_pair(2, True, True, 3, device)
    x, hx = make_inputs(2, True, True, device)
    packed = pack_padded_sequence(x, torch.tensor([5, 7, 2]), batch_first=True,
                                  enforce_sorted=False)
    for inputs in (x, packed):
        output, (h_n, c_n) = layer(inputs, hx)
        with torch.no_grad():
            fused, (h_fused, c_fused) = layer(inputs, hx)
        data = (lambda o: o.data) if inputs is packed else (lambda o: o)
        torch.testing.assert_close(data(fused), data(output).detach(), atol=1e-10, rtol=0)
        torch.testing.assert_close(h_fused, h_n.detach(), atol=1e-10, rtol=0)
        torch.testing.assert_close(c_fused, c_n.detach(), atol=1e-10, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        meprop.LSTM(3, 4, k=-1)
    with pytest.raises(ValueError):
        meprop.LSTM(3, 4, k=2, mode="sometimes")
    with pytest.raises(ValueError):
        meprop.LSTM(3, 4, k=2, selection="best")
