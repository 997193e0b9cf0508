"""Which output-gradient entries meProp keeps (Sun et al., 2017, section 2).

This is the only module that picks k. Every function takes the 2-D output gradient
``grad_output`` of shape ``[batch, out_features]`` and returns indices into it.
"""

import numbers

import torch

MODES = ("per_example", "unified")
SELECTIONS = ("topk", "random")


def check_k(k):
    """Return ``k`` as an int (or None); reject negatives, non-integers and bools."""
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be a non-negative integer or None, got {k!r}")
    if k < 0:
        raise ValueError(f"k must be a non-negative integer or None, got {k!r}")
    return int(k)


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown meProp mode {mode!r}; expected one of {MODES}")
    return mode


def check_selection(selection):
    if selection not in SELECTIONS:
        raise ValueError(f"unknown meProp selection {selection!r}; expected one of {SELECTIONS}")
    return selection


def is_dense(k, out_features):
    """k=None, k=0 and k >= out_features all mean the exact dense gradient."""
    return k is None or k == 0 or k >= out_features


def per_example_indices(grad_output, k, selection="topk"):
    """Per row, the k columns to keep: ``[batch, k]`` (int64, unsorted).

    ``topk`` keeps the k entries of largest magnitude of each row; ``random`` keeps k distinct
    entries of each row drawn uniformly with torch's RNG on the gradient's device.
    """
    if selection == "topk":
        scores = grad_output.abs()
    else:
        scores = torch.rand(grad_output.shape, device=grad_output.device)
    return scores.topk(k, dim=1, sorted=False).indices


def unified_indices(grad_output, k, selection="topk"):
    """The k columns shared by the whole minibatch: ``[k]`` (int64, unsorted).

    ``topk`` ranks columns by their summed magnitude over the batch, as the authors' unified
    meProp does; ``random`` draws k distinct columns.
    """
    if selection == "topk":
        # Summed in float32 at least, so half-precision gradients cannot overflow. The L1 norm
        # of each column reads dY once; |dY| and then a sum would also write and reread it.
        dtype = torch.promote_types(grad_output.dtype, torch.float32)
        scores = torch.linalg.vector_norm(grad_output, ord=1, dim=0, dtype=dtype)
        return largest_indices(scores, k)
    return torch.randperm(grad_output.shape[1], device=grad_output.device)[:k]


def largest_indices(scores, k):
    """Indices of the k largest entries of the 1-D ``scores`` (unsorted).

    Inside a CUDA graph capture, where device time is all that is left, one long row is a poor
    fit for ``torch.topk`` (one thread block does it all); taking the top k of each chunk of at
    least 4k entries and then the top k of those candidates gives the same set faster (on an
    H100 at 8,192 entries, k=32: unified meProp's captured backward 0.162 -> 0.146 ms). Run
    eagerly, the extra launches cost more than they save, so there it is one ``topk``. Ties may
    be broken differently, as between any two top-k implementations.
    """
    chunk = max(128, 4 * k)
    n = scores.shape[0]
    if (n < 4 * chunk or n % chunk or not scores.is_cuda
            or not torch.cuda.is_current_stream_capturing()):
        return scores.topk(k, sorted=False).indices
    return two_stage_topk(scores, k, chunk)


def two_stage_topk(scores, k, chunk):
    """:func:`largest_indices` by chunks: ``scores`` split into rows of ``chunk`` (which must
    divide its length and be at least k); every overall top-k entry is in its chunk's top k."""
    rows = scores.view(-1, chunk)
    candidates, within = rows.topk(k, dim=1, sorted=False)  # [chunks, k]
    best = candidates.reshape(-1).topk(k, sorted=False).indices
    starts = torch.arange(0, scores.shape[0], chunk, device=scores.device).unsqueeze(1)
    return (within + starts).reshape(-1)[best]


def gate_indices(grad_gates, k, n_gates, mode="per_example", selection="topk"):
    """Kept entries of a recurrent layer's gate gradient: ``[batch, n_gates * k]`` columns.

    ``grad_gates`` is ``[batch, n_gates * hidden]`` (an LSTM's i, f, g, o pre-activations side
    by side). Each gate keeps its own k of its ``hidden`` entries — per row (``per_example``),
    or one set per gate shared by every row (``unified``, returned expanded to every row).
    """
    batch = grad_gates.shape[0]
    hidden = grad_gates.shape[1] // n_gates
    offsets = torch.arange(n_gates, device=grad_gates.device).unsqueeze(1) * hidden  # [gates, 1]
    if mode == "per_example":
        per_gate = per_example_indices(grad_gates.reshape(batch * n_gates, hidden), k, selection)
        return (per_gate.reshape(batch, n_gates, k) + offsets).reshape(batch, n_gates * k)
    per_gate = torch.stack([unified_indices(chunk, k, selection)
                            for chunk in grad_gates.split(hidden, dim=1)])  # [gates, k]
    return (per_gate + offsets).reshape(1, n_gates * k).expand(batch, -1)
