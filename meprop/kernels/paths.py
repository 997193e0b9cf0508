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


# Measured on an Intel Xeon (Sapphire Rapids, 2 cores), 2 threads, torch 2.13.0, each level's
# build against the PyTorch path held to the same level (scripts/bench_paths.py --emulate-isa).
# Neither NEON build has been measured: it has no rule, and takes the compiled kernels.
RULES = (
    Rule(isas=("avx512", "avx2"), layer="linear", modes=("unified",),
         applies=lambda shape: shape.rows >= 1000 and shape.k >= 80,
         when="the batch is 1,000 or more and k 80 or more",
         why="500->500 at a batch of 1,000, k 80 and 160: compiled 0.89x and 0.75x of the "
             "PyTorch path with AVX-512, 0.92x and 0.89x with AVX2; its products are then "
             "large enough for MKL's matmuls"),
    Rule(isas=("sse",), layer="linear", modes=("per_example",),
         applies=lambda shape: shape.rows >= 100 and shape.k >= 80,
         when="the batch is 100 or more and k 80 or more",
         why="at batches of 100 and 1,000, k 80 and 160: compiled 0.62-0.99x of the PyTorch "
             "path; the 128-bit scatter of the weight gradient is the slow part"),
    Rule(isas=("sse",), layer="linear", modes=("unified",),
         applies=lambda shape: shape.rows >= 1000 and shape.k >= 160,
         when="the batch is 1,000 or more and k 160 or more",
         why="500->500 at a batch of 1,000, k 160: compiled 0.93x of the PyTorch path"),
)


def rules_for(isa):
    """The rules that hold for a build for ``isa`` (``avx512``, ``avx2``, ``sse``, ``neon``)."""
    return [rule for rule in RULES if isa in rule.isas]


def reference_rule(isa, shape):
    """The rule that sends this shape to the PyTorch path on a build for ``isa``, or None."""
    for rule in rules_for(isa):
        if rule.layer == shape.layer and shape.mode in rule.modes and rule.applies(shape):
            return rule
    return None
