"""meProp: sparsified back propagation (Sun et al., "meProp: Sparsified Back Propagation for
Accelerated Deep Learning with Reduced Overfitting", ICML 2017)."""

from meprop.dropout import Dropout, dropout
from meprop.functional import PerExampleLinear, UnifiedLinear, linear
from meprop.nn import LSTM, Linear, use_persistent_grad
from meprop.stats import BackwardRecord, rows_touched, stats

__version__ = "0.1.0"

__all__ = [
    "BackwardRecord",
    "Dropout",
    "LSTM",
    "Linear",
    "PerExampleLinear",
    "UnifiedLinear",
    "dropout",
    "linear",
    "rows_touched",
    "stats",
    "use_persistent_grad",
]
