"""Arc-standard transition system (Nivre 2004) as used by Chen & Manning (2014).

Words are numbered 1..n; 0 is the artificial ROOT, which starts on the stack. Transitions:

* SHIFT: move the first buffer word onto the stack;
* LEFT-ARC(label): s1 (top) becomes the head of s2, which is popped (s2 may not be ROOT);
* RIGHT-ARC(label): s2 becomes the head of s1, which is popped; with s2 = ROOT only once the
  buffer is empty, so the root gets exactly one dependent and every output is a single tree.

Transition ids for L labels: 0 = SHIFT, 1..L = LEFT-ARC(label 0..L-1), L+1..2L = RIGHT-ARC.
"""

SHIFT = 0


class TransitionSystem:
    """Transition ids <-> (action, label) for a fixed label inventory."""

    def __init__(self, n_labels):
        self.n_labels = n_labels

    @property
    def n_transitions(self):
        return 1 + 2 * self.n_labels

    def left(self, label):
        return 1 + label

    def right(self, label):
        return 1 + self.n_labels + label

    def decode(self, transition):
        """``("shift", None)``, ``("left", label)`` or ``("right", label)``."""
        if transition == SHIFT:
            return "shift", None
        if transition <= self.n_labels:
            return "left", transition - 1
        return "right", transition - 1 - self.n_labels

    def legal(self, config):
        """``(shift_ok, left_ok, right_ok)`` for ``config``."""
        stack_size = len(config.stack)
        shift_ok = config.buffer <= config.n_words
        left_ok = stack_size > 2  # s2 exists and is not ROOT
        right_ok = stack_size > 2 or (stack_size == 2 and not shift_ok)
        return shift_ok, left_ok, right_ok

    def apply(self, config, transition):
        action, label = self.decode(transition)
        if action == "shift":
            config.shift()
        elif action == "left":
            config.left_arc(label)
        else:
            config.right_arc(label)


class Configuration:
    """Stack, buffer pointer and the arcs built so far for one sentence of ``n_words`` words."""

    __slots__ = ("n_words", "stack", "buffer", "heads", "labels", "left_children",
                 "right_children")

    def __init__(self, n_words):
        self.n_words = n_words
        self.stack = [0]
        self.buffer = 1  # index of the first buffer word; > n_words when empty
        self.heads = [-1] * (n_words + 1)
        self.labels = [-1] * (n_words + 1)
        # Dependents in left-to-right order: leftmost is [0], rightmost is [-1].
        self.left_children = [()] * (n_words + 1)
        self.right_children = [()] * (n_words + 1)

    def is_terminal(self):
        return self.buffer > self.n_words and len(self.stack) == 1

    def shift(self):
        self.stack.append(self.buffer)
        self.buffer += 1

    def left_arc(self, label):
        head = self.stack[-1]
        dependent = self.stack.pop(-2)
        self._attach(head, dependent, label)
        # Each new left dependent is farther left.
        self.left_children[head] = (dependent, *self.left_children[head])

    def right_arc(self, label):
        dependent = self.stack.pop()
        head = self.stack[-1]
        self._attach(head, dependent, label)
        # Each new right dependent is farther right.
        self.right_children[head] = (*self.right_children[head], dependent)

    def _attach(self, head, dependent, label):
        self.heads[dependent] = head
        self.labels[dependent] = label


def is_projective(heads):
    """True if no two arcs cross (``heads`` 1-based over words, 0 = ROOT)."""
    arcs = [(min(d, h), max(d, h)) for d, h in enumerate(heads, start=1)]
    for left, right in arcs:
        for other_left, other_right in arcs:
            if left < other_left < right < other_right:
                return False
    return True


def oracle(heads, labels, system):
    """Static oracle: the gold transition sequence for a projective tree.

    Args:
        heads: gold head of each word (1-based list, 0 = ROOT).
        labels: gold label id of each word.
    Yields:
        ``(config, transition)``: the configuration before each gold transition. It is the
        same object every time, changed after each yield, so read it before the next step.
    Raises:
        ValueError: when the tree is not projective.
    """
    n_words = len(heads)
    gold_heads = [-1] + list(heads)
    pending = [0] * (n_words + 1)  # dependents of each word not yet attached
    for head in heads:
        pending[head] += 1
    config = Configuration(n_words)
    while not config.is_terminal():
        transition = _oracle_step(config, gold_heads, labels, pending, system)
        yield config, transition
        system.apply(config, transition)


def _oracle_step(config, gold_heads, labels, pending, system):
    stack = config.stack
    if len(stack) > 2:
        top, second = stack[-1], stack[-2]
        if gold_heads[second] == top:
            pending[top] -= 1
            return system.left(labels[second - 1])
    if len(stack) > 1:
        top, second = stack[-1], stack[-2]
        root_ok = second != 0 or config.buffer > config.n_words
        if gold_heads[top] == second and pending[top] == 0 and root_ok:
            pending[second] -= 1
            return system.right(labels[top - 1])
    if config.buffer > config.n_words:
        raise ValueError("the tree is not projective (or not a tree): the oracle is stuck")
    return SHIFT
