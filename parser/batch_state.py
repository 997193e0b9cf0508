"""Arc-standard configurations of many sentences held in tensors, for decoding.

One decoding step of a whole batch is then a few dozen tensor operations (feature gathering,
legality, the transition's writes) instead of Python work per sentence, which was most of the
parsing time. The rules are those of :mod:`parser.transition` and the features those of
:mod:`parser.features`; tests compare the two on real treebank sentences.

Layout, for ``L`` = the longest sentence of the batch: per row (one configuration), positions
``0..L`` are ROOT and the words, ``L + 1`` is NULL (absent item: word and tag id NULL, no
children, no label) and ``L + 2`` takes the writes of rows whose transition writes nothing
there, so every write is one unmasked scatter. Rows whose sentences have finished are kept at
the end: callers sort sentences longest first and pass the number of rows still parsing.
"""

import torch

from parser.features import NULL


class ConfigurationBatch:
    """Stacks, buffers, arcs and children of ``rows`` configurations (initially empty parses).

    Args:
        word_ids, tag_ids: per row, the ids of ROOT and the words (lists of equal lengths).
        n_labels: size of the arc label inventory (transitions: 0 shift, 1..L left, L+1.. right).
        device: where the tensors live.
    """

    def __init__(self, word_ids, tag_ids, n_labels, device):
        rows = len(word_ids)
        longest = max(len(ids) for ids in word_ids) - 1
        self.null, self.spare = longest + 1, longest + 2
        width = longest + 3
        self.n_labels = n_labels
        self.lengths = torch.tensor([len(ids) - 1 for ids in word_ids], device=device)
        self.word_ids = _padded(word_ids, width, device)
        self.tag_ids = _padded(tag_ids, width, device)
        absent = torch.full((rows, width), self.null, dtype=torch.long, device=device)
        # Leftmost, second leftmost, rightmost, second rightmost dependent of each position.
        self.lc1, self.lc2, self.rc1, self.rc2 = (absent.clone() for _ in range(4))
        self.heads = torch.full((rows, width), -1, dtype=torch.long, device=device)
        self.labels = self.heads.clone()
        # Two NULL slots below the bottom so s2 and s3 of a shallow stack read NULL; the last
        # column takes the write of rows that pop without writing.
        self.stack = torch.full((rows, longest + 4), self.null, dtype=torch.long, device=device)
        self.stack[:, 2] = 0  # ROOT
        self.depth = torch.ones(rows, dtype=torch.long, device=device)
        self.buffer = torch.ones(rows, dtype=torch.long, device=device)
        self._kinds = torch.tensor([0] + [1] * n_labels + [2] * n_labels, device=device)
        self._ahead = torch.arange(3, device=device)

    def _parse_state(self):
        """What transitions change (a row's sentence — length, word and tag ids — does not)."""
        return (self.lc1, self.lc2, self.rc1, self.rc2, self.heads, self.labels, self.stack,
                self.depth, self.buffer)

    def features(self, n):
        """``[n, 48]`` Chen & Manning feature ids of the first ``n`` rows."""
        top = (self.depth[:n] + 1).unsqueeze(1)
        stack_items = self.stack[:n].gather(1, torch.cat([top, top - 1, top - 2], dim=1))
        buffer_items = self.buffer[:n].unsqueeze(1) + self._ahead
        buffer_items = torch.where(buffer_items <= self.lengths[:n].unsqueeze(1), buffer_items,
                                   self.null)
        s1_s2 = stack_items[:, :2]
        lc1, rc1 = self.lc1[:n].gather(1, s1_s2), self.rc1[:n].gather(1, s1_s2)
        lc2, rc2 = self.lc2[:n].gather(1, s1_s2), self.rc2[:n].gather(1, s1_s2)
        # [n, (s1, s2), 4] -> s1's lc1, rc1, lc2, rc2, then s2's: the order of features.items.
        children = torch.stack([lc1, rc1, lc2, rc2], dim=2).reshape(n, 8)
        grandchildren = torch.stack([self.lc1[:n].gather(1, lc1), self.rc1[:n].gather(1, rc1)],
                                    dim=2).reshape(n, 4)
        positions = torch.cat([stack_items, buffer_items, children, grandchildren], dim=1)
        words = self.word_ids[:n].gather(1, positions)
        tags = self.tag_ids[:n].gather(1, positions)
        labels = self.labels[:n].gather(1, positions[:, 6:]) + 1  # -1 (no arc) -> NULL
        return torch.cat([words, tags, labels], dim=1)

    def legal(self, n):
        """``[n, n_transitions]`` bool: the transitions each of the first ``n`` rows allows."""
        depth = self.depth[:n]
        shift_ok = self.buffer[:n] <= self.lengths[:n]
        left_ok = depth > 2  # s2 exists and is not ROOT
        right_ok = left_ok | ((depth == 2) & ~shift_ok)
        return torch.stack([shift_ok, left_ok, right_ok], dim=1)[:, self._kinds]

    def apply(self, transitions, n):
        """Apply one (legal) transition to each of the first ``n`` rows."""
        labels = self.n_labels
        shift, right = transitions == 0, transitions > labels
        left = ~shift & ~right
        label = torch.where(right, transitions - 1 - labels, transitions - 1).unsqueeze(1)
        top = (self.depth[:n] + 1).unsqueeze(1)
        stack = self.stack[:n]
        s1, s2 = stack.gather(1, top), stack.gather(1, top - 1)
        shift, left, right = shift.unsqueeze(1), left.unsqueeze(1), right.unsqueeze(1)
        dependent = torch.where(left, s2, torch.where(right, s1, self.spare))
        self.heads[:n].scatter_(1, dependent, torch.where(left, s1, s2))
        self.labels[:n].scatter_(1, dependent, label)
        # A new left dependent is the leftmost so far, a new right one the rightmost.
        _push_child(self.lc1[:n], self.lc2[:n], torch.where(left, s1, self.spare), s2)
        _push_child(self.rc1[:n], self.rc2[:n], torch.where(right, s2, self.spare), s1)
        # SHIFT pushes the buffer's first word; LEFT-ARC puts s1 where s2 was; RIGHT-ARC pops.
        slot = torch.where(shift, top + 1, torch.where(left, top - 1, stack.shape[1] - 1))
        buffer = self.buffer[:n].unsqueeze(1)
        stack.scatter_(1, slot, torch.where(shift, buffer, s1))
        self.depth[:n] += torch.where(shift, 1, -1).squeeze(1)
        self.buffer[:n] += shift.squeeze(1)

    def reorder(self, rows, n):
        """Row ``i`` of the first ``n`` takes the parse of row ``rows[i]``, a row of the same
        sentence (beam search), so only the parse state is copied."""
        for tensor in self._parse_state():
            tensor[:n] = tensor[:n].index_select(0, rows)

    def results(self, rows):
        """``(heads, labels)`` of each row in ``rows``: lists over its words (-1 where not
        attached). One copy to the host for all of them, not one per sentence."""
        heads, labels, lengths = self.heads.cpu(), self.labels.cpu(), self.lengths.tolist()
        return [(heads[row, 1:lengths[row] + 1].tolist(), labels[row, 1:lengths[row] + 1].tolist())
                for row in rows]


def _push_child(nearest, second, heads, child):
    """``child`` becomes the outermost dependent of each head in ``heads`` (``[n, 1]``)."""
    second.scatter_(1, heads, nearest.gather(1, heads))
    nearest.scatter_(1, heads, child)


def _padded(id_lists, width, device):
    """``[len(id_lists), width]`` ids, NULL after each list."""
    flat = []
    for ids in id_lists:
        flat += ids
        flat += [NULL] * (width - len(ids))
    return torch.tensor(flat, dtype=torch.long, device=device).view(len(id_lists), width)

