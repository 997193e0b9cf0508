"""meProp LSTM: the ordinary LSTM forward, top-k sparsified back propagation through time.

The rule, for one layer, one direction and one time step t (gates i, f, g, o in ``nn.LSTM``'s
order, each ``hidden`` wide):

    pre_t  = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh                  [batch, 4 * hidden]
    dpre_t = d loss / d pre_t   (from h_t and c_t, with everything later steps sent back)
    kept_t = dpre_t with, in each gate, only its k entries of largest magnitude — per example
             (each row its own k) or unified (one k-set per gate for the batch at this step)
    d x_t       = kept_t @ W_ih            (k rows of W_ih per gate)
    d h_{t-1}   = kept_t @ W_hh            (the recurrence carries only the kept entries)
    d c_{t-1}   = d c_t * f_t              (elementwise, exact)
    d W_ih     += kept_t^T x_t,  d W_hh += kept_t^T h_{t-1}   (only kept rows are written)
    d b_ih = d b_hh = sum_t dpre_t         (the full gate gradient, as ``meprop.linear``'s bias)

Sequences of different lengths travel as ``PackedSequence`` data: rows of the packed tensor are
(time step, sequence) pairs, and at step t only the first ``batch_sizes[t]`` sequences are
active. The input products for all steps are one matmul in the forward pass and one sparse
product over all kept entries in the backward pass; only the recurrent products run per step.

On the CPU (float32/float64, top-k) a layer is one compiled autograd Function
(``meprop.kernels``, ``lstm_layer`` in ``kernels/lstm.h``): the same rule, without eager PyTorch's
per-operation cost at every step, and no Python in the backward. A layer's directions are one
autograd node, so that its forward and backward run a BiLSTM's two directions side by side,
one thread each: every step is a chain of small products waiting on memory, which a second
thread within one direction cannot shorten. The code below is the reference and the path
everywhere else.
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from meprop import kernels
from meprop.functional import has_grad_hooks, sparse_weight_grad
from meprop.kernels.paths import Shape
from meprop.selection import gate_indices

N_GATES = 4


def _step_rows(batch_sizes, reverse):
    """``(first_row, active_rows)`` of each time step in processing order."""
    starts, total = [], 0
    for size in batch_sizes:
        starts.append(total)
        total += size
    steps = list(zip(starts, batch_sizes, strict=True))
    return steps[::-1] if reverse else steps


PARAMS = 6  # per direction: h0, c0, weight_ih, weight_hh, bias_ih, bias_hh
SAVED = 6  # per direction: weight_ih, weight_hh, gates, tanh_cells, h_prev_rows, c_prev_rows
FIXED = 7  # apply's arguments before the parameters


class LSTMLayerFunction(torch.autograd.Function):
    """One LSTM layer, all its directions (1, or 2 with the reverse one second), over packed
    data, in PyTorch operations (the forward's recurrence compiled where it can be): the
    reference for the compiled layer (``lstm_layer`` in ``meprop/kernels/lstm.h``, one C++
    autograd Function with the same arguments), and the path where that cannot run.

    ``apply(data [N, in], batch_sizes (list of ints), k, mode, selection, records,
    grad_buffers, *params)`` with ``params`` per direction ``h0 [B, H], c0 [B, H],
    weight_ih [4H, in], weight_hh [4H, H], bias_ih, bias_hh ([4H] or None)``; ``records`` and
    ``grad_buffers`` (or None) hold one entry per direction; this path does not write the
    persistent buffers, only marks them stale (it may accumulate into one). Returns
    ``(output [N, D * H], then h_n, c_n [B, H] per direction)`` followed by four tensors per
    direction the backward needs (gate activations, tanh of the cells, previous h and c per
    row), which carry no gradient.
    ``k`` None or 0 gives the exact dense BPTT with dense products; ``k >= H`` keeps every
    entry but still runs the sparse products (the tests compare the two).
    """

    @staticmethod
    def forward(data, batch_sizes, k, mode, selection, records, grad_buffers, *params):
        directions = len(params) // PARAMS
        outputs, states, internals = [], [], []
        for output, h_n, c_n, *kept in _directions_forward(data, params, batch_sizes):
            outputs.append(output)
            states += [h_n, c_n]
            internals += kept
        output = outputs[0] if directions == 1 else torch.cat(outputs, dim=1)
        return (output, *states, *internals)

    @staticmethod
    def setup_context(ctx, inputs, output):
        data, batch_sizes, k, mode, selection, records, grad_buffers, *params = inputs
        directions = len(params) // PARAMS
        internals = output[1 + 2 * directions:]
        ctx.mark_non_differentiable(*internals)
        # Outputs nobody used get None, not zeros: materialised, the internals' zero gradients
        # were 0.7 MB to allocate and clear per backward at the tagger's shape.
        ctx.set_materialize_grads(False)
        saved = [data]
        for direction in range(directions):
            weight_ih, weight_hh = params[direction * PARAMS + 2:direction * PARAMS + 4]
            saved += [weight_ih, weight_hh, *internals[4 * direction:4 * (direction + 1)]]
        ctx.save_for_backward(*saved)
        ctx.batch_sizes, ctx.k, ctx.mode, ctx.selection = batch_sizes, k, mode, selection
        ctx.records, ctx.directions, ctx.grad_buffers = records, directions, grad_buffers

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, *grads):
        data, *saved = ctx.saved_tensors
        directions = ctx.directions
        hidden = saved[1].shape[1]
        if grad_output is None:
            grad_output = saved[2].new_zeros(data.shape[0], directions * hidden)
        state_grads = grads[:2 * directions]  # h_n, c_n per direction; None where unused
        needs = ctx.needs_input_grad
        need_data = needs[0]
        param_needs = [needs[FIXED + PARAMS * d:FIXED + PARAMS * (d + 1)]
                       for d in range(directions)]
        dense = ctx.k is None or ctx.k == 0
        k = None if dense else min(ctx.k, hidden)
        grad_outputs = grad_output.split(hidden, dim=1) if directions == 2 else [grad_output]
        state_grads = [saved[2].new_zeros(ctx.batch_sizes[0], hidden) if grad is None
                       else grad for grad in state_grads]
        results = [_reference_backward(ctx, k, data, grad_outputs[d], state_grads[2 * d],
                                       state_grads[2 * d + 1], saved[SAVED * d:SAVED * (d + 1)],
                                       param_needs[d], need_data=need_data, reverse=d == 1)
                   for d in range(directions)]
        for buffer in [buffer for pair in ctx.grad_buffers or () for buffer in pair]:
            buffer.mark_stale()  # a .grad it once was may accumulate these gradients now
        grad_data = None
        param_grads = []
        for direction, (part_data, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias,
                        touched) in enumerate(results):
            if need_data and part_data is not None:
                grad_data = part_data if grad_data is None else grad_data + part_data
            if ctx.records is not None and ctx.records[direction] is not None:
                ctx.records[direction].touched = touched
            need_b_ih, need_b_hh = param_needs[direction][4:6]
            param_grads += [grad_h0, grad_c0, grad_w_ih, grad_w_hh,
                            grad_bias if need_b_ih else None, grad_bias if need_b_hh else None]
        return (grad_data, None, None, None, None, None, None, *param_grads)


def _directions_forward(data, params, batch_sizes):
    """Each direction's forward ``(output, h_n, c_n, gates, tanh_cells, h_prev_rows,
    c_prev_rows)``, ``params`` as :class:`LSTMLayerFunction` takes them. The compiled kernels
    run the directions side by side."""
    projected, h0s, c0s, recurrent = [], [], [], []
    for direction in range(len(params) // PARAMS):
        h0, c0, weight_ih, weight_hh, bias_ih, bias_hh = params[
            direction * PARAMS:(direction + 1) * PARAMS]
        bias = None
        if bias_ih is not None:
            bias = bias_ih + bias_hh
        projected.append(F.linear(data, weight_ih, bias))  # every step's input product at once
        h0s.append(h0)
        c0s.append(c0)
        recurrent.append(weight_hh)
    kernel = kernels.usable(projected[0], *projected[1:], *h0s, *c0s, *recurrent)
    if kernel is not None:
        return kernel.lstm_forward_directions(projected, h0s, c0s, recurrent, list(batch_sizes))
    return [_direction_forward(*args, batch_sizes, reverse=direction == 1)
            for direction, args in enumerate(zip(projected, h0s, c0s, recurrent, strict=True))]


def _direction_forward(projected, h0, c0, weight_hh, batch_sizes, reverse):
    """One direction's forward in PyTorch operations, from its input products ``projected``."""
    hidden = weight_hh.shape[1]
    rows_total = projected.shape[0]
    output = projected.new_empty(rows_total, hidden)
    gates = projected.new_empty(rows_total, N_GATES * hidden)
    tanh_cells = projected.new_empty(rows_total, hidden)
    h_prev_rows = projected.new_empty(rows_total, hidden)
    c_prev_rows = projected.new_empty(rows_total, hidden)
    h, c = h0.clone(), c0.clone()
    for start, size in _step_rows(batch_sizes, reverse):
        rows = slice(start, start + size)
        h_prev_rows[rows], c_prev_rows[rows] = h[:size], c[:size]
        pre = torch.addmm(projected[rows], h[:size], weight_hh.t())
        act = pre.sigmoid()
        act[:, 2 * hidden:3 * hidden] = pre[:, 2 * hidden:3 * hidden].tanh()
        in_gate, forget_gate, cell_gate, out_gate = act.chunk(N_GATES, 1)
        c_new = torch.addcmul(forget_gate * c[:size], in_gate, cell_gate)
        tanh_cell = c_new.tanh()  # kept: the backward needs tanh(c), never c itself
        h_new = out_gate * tanh_cell
        gates[rows], tanh_cells[rows], output[rows] = act, tanh_cell, h_new
        h[:size], c[:size] = h_new, c_new
    return output, h, c, gates, tanh_cells, h_prev_rows, c_prev_rows


def _gate_factors(gates, tanh_cell, c_prev_rows):
    """Everything of the gate derivatives that does not depend on the incoming gradient, for
    all rows at once, so that each time step needs only a few small operations:
    ``d pre = [dc, dc, dc, dh] * factors`` and ``dc += dh * out_factor``. Returns ``factors``
    [rows, 4, hidden] and ``out_factor`` [rows, hidden]."""
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(N_GATES, 1)
    factors = torch.cat([cell_gate * in_gate * (1 - in_gate),
                         c_prev_rows * forget_gate * (1 - forget_gate),
                         in_gate * (1 - cell_gate * cell_gate),
                         tanh_cell * out_gate * (1 - out_gate)], dim=1)
    return factors.view(-1, N_GATES, tanh_cell.shape[1]), out_gate * (1 - tanh_cell * tanh_cell)


def _dense_input_grads(grad_pre, data, weight_ih, h_prev_rows, need_data, need_w_ih, need_w_hh):
    """Dense BPTT's gradients of the inputs and both weights from the full gate gradient
    (None where not needed), and the rows touched: all of them."""
    grad_data = grad_pre @ weight_ih if need_data else None
    grad_w_ih = grad_pre.t() @ data if need_w_ih else None
    grad_w_hh = grad_pre.t() @ h_prev_rows if need_w_hh else None
    return grad_data, grad_w_ih, grad_w_hh, weight_ih.shape[0]


def _sparse_input_grads(kept_columns, kept_values, data, weight_ih, h_prev_rows, gate_rows,
                        need_data, need_w_hh):
    """meProp's gradients of the inputs and both weights from the kept gate entries only
    (W_ih's always: its row counts give the rows touched), and the rows touched."""
    grad_data = None
    if need_data:
        grad_data = F.embedding_bag(kept_columns, weight_ih, per_sample_weights=kept_values,
                                    mode="sum")
    grad_w_ih, counts = sparse_weight_grad(kept_columns, kept_values, data, gate_rows)
    grad_w_hh = None
    if need_w_hh:
        grad_w_hh, _ = sparse_weight_grad(kept_columns, kept_values, h_prev_rows, gate_rows)
    return grad_data, grad_w_ih, grad_w_hh, (counts > 0).sum()


def _reference_backward(ctx, k, data, grad_output, grad_h_n, grad_c_n, saved, needs, need_data,
                        reverse):
    """One direction's sparse (or, k None, dense) BPTT in PyTorch operations: ``(grad_data,
    grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, rows touched)``."""
    weight_ih, weight_hh, gates, tanh_cell, h_prev_rows, c_prev_rows = saved
    _, _, need_w_ih, need_w_hh, need_b_ih, need_b_hh = needs
    hidden = weight_hh.shape[1]
    dense = k is None
    grad_pre = torch.empty_like(gates)  # the full gate gradient, for the biases
    if not dense:
        kept_columns = torch.empty(gates.shape[0], N_GATES * k, dtype=torch.long,
                                   device=gates.device)
        kept_values = gates.new_empty(gates.shape[0], N_GATES * k)
    factors, out_factor = _gate_factors(gates, tanh_cell, c_prev_rows)
    forget_gate = gates[:, hidden:2 * hidden]
    grad_pre_gates = grad_pre.view(-1, N_GATES, hidden)
    grad_h, grad_c = grad_h_n.clone(), grad_c_n.clone()
    for start, size in reversed(_step_rows(ctx.batch_sizes, reverse)):
        rows = slice(start, start + size)
        grad_h_step = grad_output[rows] + grad_h[:size]
        grad_c_step = torch.addcmul(grad_c[:size], grad_h_step, out_factor[rows])
        per_gate = torch.stack([grad_c_step, grad_c_step, grad_c_step, grad_h_step], dim=1)
        torch.mul(per_gate, factors[rows], out=grad_pre_gates[rows])
        step_grad = grad_pre[rows]
        if dense:
            grad_h[:size] = step_grad @ weight_hh
        else:
            columns = gate_indices(step_grad, k, N_GATES, ctx.mode, ctx.selection)
            values = step_grad.gather(1, columns)
            kept_columns[rows], kept_values[rows] = columns, values
            grad_h[:size] = F.embedding_bag(columns, weight_hh, per_sample_weights=values,
                                            mode="sum")
        grad_c[:size] = grad_c_step * forget_gate[rows]

    if dense:
        grad_data, grad_w_ih, grad_w_hh, touched = _dense_input_grads(
            grad_pre, data, weight_ih, h_prev_rows, need_data, need_w_ih, need_w_hh)
    else:
        grad_data, grad_w_ih, grad_w_hh, touched = _sparse_input_grads(
            kept_columns, kept_values, data, weight_ih, h_prev_rows, weight_hh.shape[0],
            need_data, need_w_hh)
    grad_bias = grad_pre.sum(0) if (need_b_ih or need_b_hh) else None
    return (grad_data, grad_h, grad_c, grad_w_ih if need_w_ih else None, grad_w_hh, grad_bias,
            touched)


def _as_packed_data(module, input):
    """``(data [N, in], batch_sizes, restore)``: any ``nn.LSTM`` input as packed rows, and a
    function turning packed output rows back into the caller's layout."""
    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = input

        def restore(output):
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)

        return data, batch_sizes.tolist(), restore, sorted_indices, unsorted_indices
    unbatched = input.dim() == 2
    steps = input.unsqueeze(1) if unbatched else (
        input.transpose(0, 1) if module.batch_first else input)  # [T, B, in]
    length, batch = steps.shape[:2]

    def restore(output):
        output = output.reshape(length, batch, -1)
        if unbatched:
            return output.squeeze(1)
        return output.transpose(0, 1) if module.batch_first else output

    return steps.reshape(length * batch, -1), [batch] * length, restore, None, None


def lstm_forward(module, input, hx=None):
    """The forward of :class:`meprop.nn.LSTM` on its sparse path: ``(output, (h_n, c_n))``."""
    data, batch_sizes, restore, sorted_indices, unsorted_indices = _as_packed_data(module, input)
    unbatched = not isinstance(input, PackedSequence) and input.dim() == 2
    directions = 2 if module.bidirectional else 1
    batch = batch_sizes[0]
    if hx is None:
        zeros = data.new_zeros(module.num_layers * directions, batch, module.hidden_size)
        h0, c0 = zeros, zeros
    else:
        h0, c0 = hx
        if unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        if sorted_indices is not None:
            h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
    layer_input, h_n, c_n = data, [], []
    for layer in range(module.num_layers):
        params, first = [], layer * directions
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            params += [h0[first + direction], c0[first + direction],
                       getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix),
                       getattr(module, "bias_ih" + suffix) if module.bias else None,
                       getattr(module, "bias_hh" + suffix) if module.bias else None]
        buffers = None if module._grad_buffers is None else (
            module._grad_buffers[first:first + directions])
        records = module._part_records[first:first + directions]
        kernel = _compiled(module, layer_input, params, batch)
        if kernel is not None:
            layer_input, *states = kernel.lstm_layer(
                layer_input, params, batch_sizes, min(module.k, module.hidden_size),
                module.meprop_mode == "unified",
                _buffer_tensors(buffers, params))
            for record, touched in zip(records, states[2 * directions:], strict=True):
                record.touched = touched  # -1 until the backward fills it
        else:
            layer_input, *states = LSTMLayerFunction.apply(
                layer_input, batch_sizes, module.k, module.meprop_mode, module.selection,
                records, buffers, *params)
        h_n += states[0:2 * directions:2]
        c_n += states[1:2 * directions:2]
        if module.dropout and module.training and layer < module.num_layers - 1:
            layer_input = F.dropout(layer_input, module.dropout, training=True)
    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    if unsorted_indices is not None:
        h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
    if unbatched:
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return restore(layer_input), (h_n, c_n)


def _compiled(module, data, params, batch):
    """The compiled module when its LSTM layer can take this one: sparse (k given), and what
    ``kernels.for_layer`` asks (``batch``: the sequences, the most rows a step has)."""
    if not module.k:
        return None
    shape = Shape("lstm", module.meprop_mode, int(batch), module.hidden_size,
                  min(module.k, module.hidden_size))
    return kernels.for_layer(module.selection, data, *params, shape=shape)


def _buffer_tensors(buffers, params):
    """Per direction ``[buffer_ih, nonzero_ih, buffer_hh, nonzero_hh]`` for the compiled
    layer: a weight's persistent gradient where it has one, needs a gradient and no hooks
    watch it (they would be skipped), else None."""
    tensors = []
    for direction, pair in enumerate(buffers or [(None, None)] * (len(params) // PARAMS)):
        for buffer, weight in zip(pair, params[direction * PARAMS + 2:direction * PARAMS + 4],
                                  strict=True):
            if buffer is not None and weight.requires_grad and not has_grad_hooks(weight):
                tensors += buffer.tensors(weight)
            else:
                tensors += [None, None]
    return tensors
