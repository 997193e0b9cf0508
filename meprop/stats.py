"""What a meProp backward touched: the paper's "1-4 % of weights updated"."""

from dataclasses import dataclass

import torch


@dataclass
class BackwardRecord:
    """Filled by the backward of one meProp layer; read by :func:`stats`."""

    touched: object = None  # rows updated by the last backward: int or 0-d tensor; None = none yet


class CompositeRecord(BackwardRecord):
    """The rows touched by several Functions of one module (an LSTM's layers and directions)."""

    def __init__(self, parts):
        self.parts = parts

    @property
    def touched(self):
        values = [part.touched for part in self.parts]
        return None if any(value is None for value in values) else sum(values)


def _meprop_layers(model):
    for name, module in model.named_modules():
        record = getattr(module, "backward_record", None)
        if isinstance(record, BackwardRecord):
            yield name, module, record


def stats(model):
    """Per meProp layer of ``model``, after a backward pass.

    Returns ``{layer_name: {"rows_touched": float, "k_ratio": float, "rows": int}}`` where
    ``rows_touched`` is the fraction (0-1) of weight rows the last backward updated (the union
    over the minibatch), ``k_ratio`` is k / out_features (the fraction each example keeps; 1.0
    for a dense layer) and ``rows`` the layer's number of weight rows (output units). Layers
    that have not run a backward yet report ``rows_touched`` as None.
    """
    result = {}
    for name, module, record in _meprop_layers(model):
        rows = module.out_rows
        touched = record.touched
        if isinstance(touched, torch.Tensor):
            touched = touched.item()
            if touched < 0:  # the compiled layer's "no backward yet"
                touched = None
        result[name] = {
            "rows_touched": None if touched is None else touched / rows,
            "k_ratio": module.k_ratio,
            "rows": rows,
        }
    return result


def rows_touched(model):
    """Fraction of all meProp weight rows of ``model`` that the last backward updated."""
    layers = [s for s in stats(model).values() if s["rows_touched"] is not None]
    total = sum(s["rows"] for s in layers)
    if not total:
        return None
    return sum(s["rows_touched"] * s["rows"] for s in layers) / total
