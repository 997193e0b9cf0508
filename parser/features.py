"""Chen & Manning's (2014) 48 features of an arc-standard configuration.

Items, in this order (18): s1, s2, s3, b1, b2, b3, then for s1 and then s2: lc1, rc1, lc2, rc2,
then lc1(lc1(s1)), rc1(rc1(s1)), lc1(lc1(s2)), rc1(rc1(s2)). Features: the word of each of the
18 items, the POS tag of each of the 18 items, and the arc label of the 12 child items (all but
the first six). Absent items get the NULL id (0 in every vocabulary here).
"""

N_WORD_FEATURES, N_TAG_FEATURES, N_LABEL_FEATURES = 18, 18, 12
N_FEATURES = N_WORD_FEATURES + N_TAG_FEATURES + N_LABEL_FEATURES
NULL = 0


def _leftmost(children, item, rank):
    if item is None:
        return None
    kids = children[item]
    return kids[rank] if len(kids) > rank else None


def _rightmost(children, item, rank):
    if item is None:
        return None
    kids = children[item]
    return kids[-1 - rank] if len(kids) > rank else None


def items(config):
    """The 18 positions (word indices, 0 = ROOT) or None where absent."""
    stack, n_words = config.stack, config.n_words
    top = [stack[-i] if len(stack) >= i else None for i in (1, 2, 3)]
    buffer = [b if b <= n_words else None for b in range(config.buffer, config.buffer + 3)]
    left, right = config.left_children, config.right_children
    children = []
    for item in top[:2]:
        children += [_leftmost(left, item, 0), _rightmost(right, item, 0),
                     _leftmost(left, item, 1), _rightmost(right, item, 1)]
    grandchildren = []
    for item in top[:2]:
        grandchildren += [_leftmost(left, _leftmost(left, item, 0), 0),
                          _rightmost(right, _rightmost(right, item, 0), 0)]
    return top + buffer + children + grandchildren


def extract(config, word_ids, tag_ids):
    """48 feature ids: 18 word ids, 18 tag ids, 12 label ids (label id = arc label + 1).

    ``word_ids``/``tag_ids`` have the ROOT token's id at position 0 and word i at position i.
    """
    positions = items(config)
    words = [NULL if p is None else word_ids[p] for p in positions]
    tags = [NULL if p is None else tag_ids[p] for p in positions]
    labels = [NULL if p is None else config.labels[p] + 1 for p in positions[6:]]
    return words + tags + labels
