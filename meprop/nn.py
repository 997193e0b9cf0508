"""Drop-in meProp layers with ``torch.nn`` parameter names, shapes and initialisation."""

import torch
import torch.nn as nn

from meprop.functional import GradBuffer, linear
from meprop.lstm import lstm_forward
from meprop.selection import check_k, check_mode, check_selection, is_dense
from meprop.stats import BackwardRecord, CompositeRecord


class Linear(nn.Linear):
    """``nn.Linear`` whose backward keeps only k entries of the output gradient.

    Same parameters (``weight [out, in]``, ``bias [out]``) and initialisation as ``nn.Linear``,
    so state dicts interchange both ways. ``k=None``/``0``/``>= out_features`` is dense.

    ``persistent_grad=True`` keeps one weight-gradient tensor across steps and rewrites only
    the rows the backward touches (the compiled CPU layer, and unified meProp on any device; see
    :class:`meprop.functional.GradBuffer` for the contract): faster where the dense gradient's
    zero-filling dominates (small batches on the CPU, wide layers on a GPU).
    """

    def __init__(self, in_features, out_features, k=None, bias=True, mode="per_example",
                 selection="topk", device=None, dtype=None, persistent_grad=False):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.k = check_k(k)
        self.mode = check_mode(mode)
        self.selection = check_selection(selection)
        self.backward_record = BackwardRecord()
        self.set_persistent_grad(persistent_grad)

    def set_persistent_grad(self, enabled):
        """Switch the persistent weight gradient on or off (see the class docstring)."""
        self.persistent_grad = bool(enabled)
        self._grad_buffer = GradBuffer() if enabled else None

    @property
    def out_rows(self):
        return self.out_features

    @property
    def k_ratio(self):
        return 1.0 if is_dense(self.k, self.out_features) else self.k / self.out_features

    def forward(self, input):
        return linear(input, self.weight, self.bias, self.k, self.mode, self.selection,
                      record=self.backward_record, grad_buffer=self._grad_buffer)

    def extra_repr(self):
        text = f"{super().extra_repr()}, k={self.k}, mode={self.mode}"
        if self.persistent_grad:
            text += ", persistent_grad=True"
        return text if self.selection == "topk" else f"{text}, selection={self.selection}"


def use_persistent_grad(model, enabled=True):
    """Switch ``persistent_grad`` on (or off) for every meProp :class:`Linear` and
    :class:`LSTM` in ``model``; returns how many layers it set."""
    layers = [module for module in model.modules() if isinstance(module, (Linear, LSTM))]
    for layer in layers:
        layer.set_persistent_grad(enabled)
    return len(layers)


class LSTM(nn.LSTM):
    """``nn.LSTM`` whose back propagation through time keeps only k entries of each gate's
    gradient (the rule is in :mod:`meprop.lstm`).

    Same constructor arguments (``proj_size`` excepted), parameters (``weight_ih_l0``,
    ``weight_hh_l0_reverse``, ...), inputs (a padded tensor or a ``PackedSequence``, optional
    ``(h0, c0)``) and return value ``(output, (h_n, c_n))`` as ``nn.LSTM``, so state dicts
    interchange. With k None, 0 or >= hidden_size it *is* ``nn.LSTM`` (PyTorch's own kernels).
    The meProp mode is the attribute ``meprop_mode`` (``mode`` is nn.LSTM's own, "LSTM").
    ``persistent_grad`` as for :class:`Linear`, for every ``weight_ih``/``weight_hh``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, k=None, mode="per_example", selection="topk",
                 device=None, dtype=None, persistent_grad=False):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, device=device, dtype=dtype)
        self.k = check_k(k)
        # Not ``self.mode``: nn.LSTM's own ``mode`` ("LSTM") selects its cuDNN kernels.
        self.meprop_mode = check_mode(mode)
        self.selection = check_selection(selection)
        self._part_records = [BackwardRecord() for _ in range(num_layers * self._directions)]
        self.backward_record = CompositeRecord(self._part_records)
        self.set_persistent_grad(persistent_grad)

    def set_persistent_grad(self, enabled):
        """Switch the persistent weight gradients on or off (see :class:`Linear`)."""
        self.persistent_grad = bool(enabled)
        self._grad_buffers = [(GradBuffer(), GradBuffer()) for _ in self._part_records] if (
            enabled) else None

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    @property
    def out_rows(self):
        """Gate rows of all layers and directions (each W_ih/W_hh pair shares its rows)."""
        return 4 * self.hidden_size * self.num_layers * self._directions

    @property
    def k_ratio(self):
        return 1.0 if is_dense(self.k, self.hidden_size) else self.k / self.hidden_size

    def forward(self, input, hx=None):
        if is_dense(self.k, self.hidden_size):
            for record in self._part_records:
                record.touched = 4 * self.hidden_size
            return super().forward(input, hx)
        if not torch.is_grad_enabled():
            # No backward will follow (inference): the forward is the ordinary LSTM, so
            # PyTorch's fused kernels (oneDNN, cuDNN) compute it.
            return super().forward(input, hx)
        return lstm_forward(self, input, hx)

    def extra_repr(self):
        text = f"{super().extra_repr()}, k={self.k}, mode={self.meprop_mode}"
        if self.persistent_grad:
            text += ", persistent_grad=True"
        return text if self.selection == "topk" else f"{text}, selection={self.selection}"
