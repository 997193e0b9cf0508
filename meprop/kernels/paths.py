"""Which path a meProp layer's backward takes on the CPU: the compiled kernels or the
pure-PyTorch code, by rules measured per instruction-set level — never by timing at run time.

Each rule names a layer, a mode and the shapes where the compiled build for an instruction set
was measured slower than the PyTorch path (``scripts/bench_paths.py``, with PyTorch and MKL held
to the same level; the figures and the machine are in docs/RESULTS.md, "Which path each layer
takes"). Where no rule applies, the compiled kernels run. ``python -m meprop.kernels`` prints
the rules that hold for this machine's build.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a rule may look at: the layer (``linear`` or ``lstm``), the mode, the rows of the
    backward (a linear layer's batch; an LSTM's rows per time step), the width top-k selects
    from (``out_features``, or an LSTM gate's ``hidden_size``) and k."""

    layer: str
    mode: str
    rows: int
    width: int
    k: int


@dataclasses.dataclass(frozen=True)
class Rule:
    """The PyTorch path for ``layer`` in ``modes`` on builds for ``isas`` when ``applies``."""

    isas: tuple
    layer: str
    modes: tuple
    applies: object  # Shape -> bool
    when: str  # the condition in words
    why: str  # what was measured


RULES = ()


def rules_for(isa):
    """The rules that hold for a build for ``isa`` (``avx512``, ``avx2``, ``sse``, ``neon``)."""
    return [rule for rule in RULES if isa in rule.isas]


def reference_rule(isa, shape):
    """The rule that sends this shape to the PyTorch path on a build for ``isa``, or None."""
    for rule in rules_for(isa):
        if rule.layer == shape.layer and shape.mode in rule.modes and rule.applies(shape):
            return rule
    return None
