"""Drop-in meProp layers with ``torch.nn`` parameter names, shapes and initialisation."""

import torch.nn as nn

from meprop.functional import linear
from meprop.selection import check_k, check_mode, check_selection, is_dense
from meprop.stats import BackwardRecord


class Linear(nn.Linear):
    """``nn.Linear`` whose backward keeps only k entries of the output gradient.

    Same parameters (``weight [out, in]``, ``bias [out]``) and initialisation as ``nn.Linear``,
    so state dicts interchange both ways. ``k=None``/``0``/``>= out_features`` is dense.
    """

    def __init__(self, in_features, out_features, k=None, bias=True, mode="per_example",
                 selection="topk", device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.k = check_k(k)
        self.mode = check_mode(mode)
        self.selection = check_selection(selection)
        self.backward_record = BackwardRecord()

    @property
    def out_rows(self):
        return self.out_features

    @property
    def k_ratio(self):
        return 1.0 if is_dense(self.k, self.out_features) else self.k / self.out_features

    def forward(self, input):
        return linear(input, self.weight, self.bias, self.k, self.mode, self.selection,
                      record=self.backward_record)

    def extra_repr(self):
        text = f"{super().extra_repr()}, k={self.k}, mode={self.mode}"
        return text if self.selection == "topk" else f"{text}, selection={self.selection}"
