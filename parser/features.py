"""Chen & Manning's (2014) 48 features of an arc-standard configuration.

Items, in this order (18): s1, s2, s3, b1, b2, b3, then for s1 and then s2: lc1, rc1, lc2, rc2,
then lc1(lc1(s1)), rc1(rc1(s1)), lc1(lc1(s2)), rc1(rc1(s2)). Features: the word of each of the
18 items, the POS tag of each of the 18 items, and the arc label of the 12 child items (all but
the first six). Absent items get the NULL id (0 in every vocabulary here).
"""

N_WORD_FEATURES, N_TAG_FEATURES, N_LABEL_FEATURES = 18, 18, 12
N_FEATURES = N_WORD_FEATURES + N_TAG_FEATURES + N_LABEL_FEATURES
NULL = 0


def items(config):
    """The 18 positions (word indices, 0 = ROOT) or None where absent.

    Written out flat (no helper calls): decoding calls this once per configuration and it was
    the largest Python cost of parsing.
    """
    stack, n_words, buffer = config.stack, config.n_words, config.buffer
    depth = len(stack)
    s1 = stack[-1] if depth >= 1 else None
    s2 = stack[-2] if depth >= 2 else None
    result = [s1, s2, stack[-3] if depth >= 3 else None,
              buffer if buffer <= n_words else None,
              buffer + 1 if buffer + 1 <= n_words else None,
              buffer + 2 if buffer + 2 <= n_words else None]
    left, right = config.left_children, config.right_children
    grandchildren = []
    for item in (s1, s2):
        if item is None:
            result += (None, None, None, None)
            grandchildren += (None, None)
            continue
        lefts, rights = left[item], right[item]
        lc1 = lefts[0] if lefts else None
        rc1 = rights[-1] if rights else None
        result += (lc1, rc1, lefts[1] if len(lefts) > 1 else None,
                   rights[-2] if len(rights) > 1 else None)
        grandchildren += (left[lc1][0] if lc1 is not None and left[lc1] else None,
                          right[rc1][-1] if rc1 is not None and right[rc1] else None)
    return result + grandchildren


def extract(config, word_ids, tag_ids):
    """48 feature ids: 18 word ids, 18 tag ids, 12 label ids (label id = arc label + 1).

    ``word_ids``/``tag_ids`` have the ROOT token's id at position 0 and word i at position i.
    """
    positions = items(config)
    words = [NULL if p is None else word_ids[p] for p in positions]
    tags = [NULL if p is None else tag_ids[p] for p in positions]
    labels = [NULL if p is None else config.labels[p] + 1 for p in positions[6:]]
    return words + tags + labels
