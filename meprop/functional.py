"""meProp linear: ordinary forward, top-k sparsified backward (Sun et al., ICML 2017).

With ``dY`` the output gradient flattened to ``[batch, out]`` and ``M`` the mask of kept entries:

    grad_input  = (M * dY) @ W          [batch, in]
    grad_weight = (M * dY)^T @ X        [out, in]   (only the selected rows are non-zero)
    grad_bias   = dY.sum(0)             [out]       (the full gradient, as the authors' code does)

The bias is the one exception to "only k units are updated": it is cheap (O(batch * out)) and
the reference implementation (lancopku/meProp) also gives it the unmasked gradient.

Two autograd Functions, one per mode:

* per example: each row keeps its own k entries. The masked gradient is never built; both
  products are gathers over the kept entries done by ``embedding_bag`` (a weighted sum of
  gathered rows), which has fast kernels on CPU and CUDA: grad_input sums k rows of W per
  example; grad_weight sums, for each output row, the input rows of the examples that kept it.
* unified: one set of k columns for the whole minibatch, so both products are small dense
  matmuls over those k columns, and only those k rows of grad_weight are written.

On the CPU (float32/float64, top-k selection) the whole layer is the compiled autograd Function
of ``meprop.kernels`` when it is available: the same rule, a linear-time top-k, and no Python in
the forward or backward call. The code below is the reference and the path everywhere else (GPU,
half precision, random-k, autocast, or ``MEPROP_KERNELS=0``). That path never waits on the
device, so a CUDA graph can capture its backward (``torch.cuda.graph``).
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from meprop import kernels
from meprop.kernels.paths import Shape
from meprop.selection import (
    check_k,
    check_mode,
    check_selection,
    is_dense,
    per_example_indices,
    unified_indices,
)


def _compute_dtypes(grad_output, input, weight):
    """Under autocast the saved tensors and dY can differ in dtype; compute in dY's dtype."""
    dtype = grad_output.dtype
    if input.dtype == dtype and weight.dtype == dtype:
        return input, weight
    return input.to(dtype), weight.to(dtype)


def sparse_weight_grad(indices, values, inputs, out_features):
    """``(M * dY)^T @ X`` from the kept entries alone, and the kept-entry count per row.

    ``indices``/``values``: ``[batch, k]`` kept columns of dY and their values; ``inputs``:
    ``[batch, in]``. Kept entries are grouped by output row (a stable sort); each row of the
    result is then a weighted sum of the input rows of the examples that kept it, which
    ``embedding_bag`` computes without building the masked gradient. Rows nobody kept are 0.
    """
    k = indices.shape[1]
    rows_sorted, order = torch.sort(indices.reshape(-1), stable=True)
    # Where each row's entries start in the sorted list: a search rather than ``bincount``,
    # whose output size depends on the data and so waits on the device (and breaks CUDA graphs).
    row_ids = torch.arange(out_features + 1, device=indices.device, dtype=rows_sorted.dtype)
    starts = torch.searchsorted(rows_sorted, row_ids)
    offsets = starts[:-1]
    counts = starts[1:] - offsets  # kept entries per row
    examples = torch.div(order, k, rounding_mode="floor")
    grad_weight = F.embedding_bag(
        examples, inputs, offsets, per_sample_weights=values.reshape(-1)[order], mode="sum")
    return grad_weight, counts


class _MePropLinear(torch.autograd.Function):
    """Shared forward (``F.linear``) and context; each subclass is one meProp variant.

    ``apply(input [batch, in], weight [out, in], bias [out] or None, k, selection, record,
    grad_buffer or None)``.
    """

    @staticmethod
    def forward(input, weight, bias, k, selection, record, grad_buffer):
        return F.linear(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, k, selection, record, grad_buffer = inputs
        ctx.save_for_backward(input, weight)
        ctx.k, ctx.selection, ctx.record = k, selection, record
        ctx.grad_buffer = ctx.weight_edge = None
        if grad_buffer is not None and weight.is_leaf and weight.requires_grad:
            ctx.grad_buffer = grad_buffer
            ctx.weight_edge = torch.autograd.graph.get_gradient_edge(weight)


class PerExampleLinear(_MePropLinear):
    """meProp linear keeping the top-k (or random k) entries of each row of dY."""

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        input_c, weight_c = _compute_dtypes(grad_output, input, weight)
        out_features, k = weight.shape[0], ctx.k
        indices = per_example_indices(grad_output, k, ctx.selection)  # [batch, k]
        values = grad_output.gather(1, indices)  # [batch, k]

        grad_input = grad_weight = grad_bias = None
        if need_input:
            # Row b of grad_input = sum_j values[b, j] * W[indices[b, j]].
            grad_input = F.embedding_bag(indices, weight_c, per_sample_weights=values, mode="sum")
            grad_input = grad_input.to(input.dtype)
        if need_weight:
            grad_weight, counts = sparse_weight_grad(indices, values, input_c, out_features)
            grad_weight = grad_weight.to(weight.dtype)
        elif ctx.record is not None:
            counts = torch.bincount(indices.reshape(-1), minlength=out_features)
        if need_bias:
            grad_bias = grad_output.sum(0)
        if ctx.record is not None:
            ctx.record.touched = (counts > 0).sum()
        if ctx.grad_buffer is not None and need_weight:
            ctx.grad_buffer.mark_stale()  # a .grad it once was may accumulate grad_weight now
        return grad_input, grad_weight, grad_bias, None, None, None, None


class UnifiedLinear(_MePropLinear):
    """meProp linear keeping the same k columns of dY for every row of the minibatch."""

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        input_c, weight_c = _compute_dtypes(grad_output, input, weight)
        grad_bias = grad_output.sum(0) if need_bias else None
        if ctx.record is not None:
            ctx.record.touched = min(ctx.k, weight.shape[0])
        columns = unified_indices(grad_output, ctx.k, ctx.selection)  # [k]
        kept = grad_output.index_select(1, columns)  # [batch, k]

        grad_input = grad_weight = None
        if need_input:
            grad_input = (kept @ weight_c.index_select(0, columns)).to(input.dtype)
        if need_weight:
            rows = (kept.t() @ input_c).to(weight.dtype)  # [k, in]
            if _writes_grad_in_place(ctx, weight):
                weight.grad = ctx.grad_buffer.write_rows(weight, columns, rows)
            else:
                if ctx.grad_buffer is not None:
                    ctx.grad_buffer.mark_stale()  # it may be weight.grad and accumulate this
                grad_weight = torch.zeros_like(weight)
                grad_weight.index_copy_(0, columns, rows)
        return grad_input, grad_weight, grad_bias, None, None, None, None


def _writes_grad_in_place(ctx, weight):
    """Whether this backward may write its persistent buffer as ``weight.grad``: a leaf weight
    with no gradient yet, whose gradient this backward pass accumulates into ``.grad`` (not
    ``torch.autograd.grad``, which must get the gradient back, nor ``backward(inputs=...)``
    without it)."""
    if ctx.grad_buffer is None or weight.grad is not None or has_grad_hooks(weight):
        return False
    try:
        return torch._C._will_engine_execute_node(ctx.weight_edge.node)
    except RuntimeError:  # raised for a leaf inside torch.autograd.grad
        return False


FUNCTIONS = {"per_example": PerExampleLinear, "unified": UnifiedLinear}


class GradBuffer:
    """A persistent weight gradient (``persistent_grad=True``).

    The buffer becomes ``weight.grad`` itself, and the next backward (after
    ``zero_grad(set_to_none=True)``) clears only the rows it wrote last time instead of
    allocating and zero-filling a new ``[out, in]`` gradient: with k of out rows kept, most of
    a dense gradient is zeros that cost as much to write as the products (on an H100, zero-filling
    8192 x 8192 floats takes longer than the rest of unified meProp's backward). The contract
    this needs: nothing may keep ``weight.grad`` across ``zero_grad`` and expect it unchanged,
    or write its untouched rows in place. Hooks on the weight bypass it.

    Two writers keep their own record of the rows that may be non-zero: the compiled CPU layer a
    mask (``nonzero``, one byte per row), the PyTorch path of unified meProp (any device) the
    ``rows`` it wrote last. A record is exact only while its own writer wrote last; otherwise the
    writer treats every row as possibly non-zero once.
    """

    def __init__(self):
        self.tensor = self.nonzero = self.rows = None
        self.mask_exact = self.rows_exact = False

    def _fit(self, weight):
        tensor = self.tensor
        if (tensor is None or tensor.shape != weight.shape or tensor.dtype != weight.dtype
                or tensor.device != weight.device):
            self.tensor = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            self.nonzero = torch.zeros(weight.shape[0], dtype=torch.uint8, device=weight.device)
            self.rows = None  # a zero buffer: no row to clear
            self.mask_exact = self.rows_exact = True
        return self.tensor

    def tensors(self, weight):
        """(buffer, nonzero-rows mask) for the compiled layer, fitted to this weight."""
        self._fit(weight)
        if not self.mask_exact:
            self.nonzero.fill_(1)
            self.mask_exact = True
        self.rows_exact = False
        return self.tensor, self.nonzero

    def write_rows(self, weight, rows, values):
        """The buffer holding ``values`` ([n, in]) in ``rows`` ([n], distinct) and zeros elsewhere.

        Only the rows written last time are cleared, so every step costs O(n * in), and the
        indices live in one tensor that is updated in place: a CUDA graph that captured this
        replays it correctly.
        """
        tensor = self._fit(weight)
        if not self.rows_exact:
            tensor.zero_()
        elif self.rows is not None:
            tensor.index_fill_(0, self.rows, 0)
        tensor.index_copy_(0, rows, values)
        if self.rows is None or self.rows.shape != rows.shape or self.rows.device != rows.device:
            self.rows = torch.empty_like(rows)
        self.rows.copy_(rows)
        self.rows_exact, self.mask_exact = True, False
        return tensor

    def written_rows(self, weight):
        """The rows of ``weight.grad`` that may be non-zero (int64 indices), when ``weight.grad``
        is this buffer and its last writer's record says; else None (unknown: all rows)."""
        grad = weight.grad
        if grad is None or self.tensor is None or grad.data_ptr() != self.tensor.data_ptr():
            return None
        if self.rows_exact:
            return self.rows
        if self.mask_exact:
            return self.nonzero.nonzero().squeeze(1)
        return None

    def mark_stale(self):
        """The buffer may have been changed outside its writers (e.g. accumulated into)."""
        self.rows_exact = self.mask_exact = False
        if self.nonzero is not None:
            self.nonzero.fill_(1)


def has_grad_hooks(weight):
    """Whether gradient hooks watch ``weight`` (a buffer written in place would skip them)."""
    return bool(weight._backward_hooks or getattr(weight, "_post_accumulate_grad_hooks", None))


def linear(input, weight, bias=None, k=None, mode="per_example", selection="topk", *, record=None,
           grad_buffer=None):
    """``F.linear`` in the forward pass, meProp in the backward pass.

    Args:
        input: ``[*, in_features]``, any number of leading dims (flattened for the backward).
        weight: ``[out_features, in_features]`` as in ``nn.Linear``.
        bias: ``[out_features]`` or None.
        k: entries of dY kept per example (``per_example``) or per minibatch (``unified``);
            None, 0 or ``k >= out_features`` gives the exact dense gradient.
        mode: ``"per_example"`` or ``"unified"``.
        selection: ``"topk"`` (largest magnitude) or ``"random"`` (ablation; torch's RNG).
        record: optional object (``meprop.stats.BackwardRecord``) whose ``touched`` attribute
            is set to the number of weight rows the backward updates: an int, or for the
            per-example mode a 0-d tensor, so that backward never waits on the device.
        grad_buffer: optional :class:`GradBuffer` to write the weight gradient into: by the
            compiled CPU layer (both modes) and by the unified mode's PyTorch path (any device,
            a GPU included); not written by per-example meProp's PyTorch path (which marks it
            stale: its gradient may be accumulated into the buffer), nor while the weight has
            gradient hooks.

    Returns:
        ``[*, out_features]``.
    """
    k = check_k(k)
    check_mode(mode)
    check_selection(selection)
    out_features = weight.shape[0]
    if is_dense(k, out_features):
        if record is not None:
            record.touched = out_features  # a dense backward updates every row
        return F.linear(input, weight, bias)
    if not torch.is_grad_enabled():  # no backward will follow (inference)
        return F.linear(input, weight, bias)
    # A 2-D input is used as it is: a reshape would add a view node to the graph per call.
    flat_input = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
    compiled = _compiled(flat_input, weight, bias, selection, k, mode)
    if compiled is not None:
        buffer = nonzero = None
        if grad_buffer is not None and weight.requires_grad and not has_grad_hooks(weight):
            buffer, nonzero = grad_buffer.tensors(weight)
        output, touched = compiled.linear(flat_input, weight, bias, k, mode == "unified",
                                          buffer, nonzero)
        if record is not None:
            record.touched = touched  # -1 until the backward fills it
    else:
        output = FUNCTIONS[mode].apply(flat_input, weight, bias, k, selection, record,
                                       grad_buffer)
    return output if input.dim() == 2 else output.reshape(*input.shape[:-1], out_features)


def _compiled(input, weight, bias, selection, k, mode):
    """The compiled module when its linear layer can take this call (``kernels.for_layer``)."""
    shape = Shape("linear", mode, input.shape[0], weight.shape[0], k)
    return kernels.for_layer(selection, input, weight, bias, shape=shape)
