"""Batched decoding: every sentence of a batch advances one transition per step — greedily, or
with a beam of the best-scoring partial parses (sum of the transitions' log-probabilities).

The configurations live in tensors (:class:`parser.batch_state.ConfigurationBatch`). In the
arc-standard system an n-word sentence takes exactly 2n transitions, so with the sentences
sorted longest first, those still parsing at a step are always the first rows.
"""

import bisect

import torch

from parser.batch_state import ConfigurationBatch
from parser.data import encode_sentence
from parser.features import NULL

NEG_INF = float("-inf")

# Sentences decoded together: each transition step's tensor overhead is shared by the whole
# batch; the first-layer table for a batch's distinct words is then ~200 MB.
DECODE_BATCH = 2048


def _active_rows(lengths, step, per_sentence=1):
    """``(sentences, rows)`` still parsing at ``step``: the sentences (``lengths`` longest
    first) with more than ``step`` transitions to take, and the rows they own."""
    count = bisect.bisect_left(lengths, -step, key=lambda length: -2 * length)
    return count, count * per_sentence


def _greedy(model, table, encoded, n_labels, device, with_log_probs=False):
    """The greedy parses, and (``with_log_probs``) each one's summed log-probability of its
    transitions (softmax over the legal ones), else None."""
    word_ids, tag_ids = zip(*encoded, strict=True)
    state = ConfigurationBatch(word_ids, tag_ids, n_labels, device)
    lengths = [len(ids) - 1 for ids in word_ids]
    totals = torch.zeros(len(encoded), device=device) if with_log_probs else None
    for step in range(2 * lengths[0]):
        _, rows = _active_rows(lengths, step)
        scores = model.score_precomputed(table, state.features(rows))
        scores.masked_fill_(~state.legal(rows), NEG_INF)
        best, transitions = scores.max(dim=1)
        if with_log_probs:
            totals[:rows] += best - torch.logsumexp(scores, dim=1)
        state.apply(transitions, rows)
    return state.results(range(len(encoded))), totals


def _beam(model, table, encoded, n_labels, device, beam):
    """Beam search: per sentence, the ``beam`` partial parses of highest summed log-probability
    (softmax over the legal transitions) survive each step; sentence i owns rows
    ``i * beam .. i * beam + beam - 1``. Returns the best parses and their log-probabilities."""
    word_ids, tag_ids = zip(*encoded, strict=True)
    repeated = [ids for ids in word_ids for _ in range(beam)]
    state = ConfigurationBatch(repeated, [ids for ids in tag_ids for _ in range(beam)],
                               n_labels, device)
    lengths = [len(ids) - 1 for ids in word_ids]
    n_transitions = 1 + 2 * n_labels
    totals = torch.full((len(encoded), beam), NEG_INF, device=device)
    totals[:, 0] = 0.0  # one empty parse per sentence to start from
    first_rows = torch.arange(len(encoded), device=device).unsqueeze(1) * beam
    for step in range(2 * lengths[0]):
        sentences, rows = _active_rows(lengths, step, beam)
        scores = model.score_precomputed(table, state.features(rows))
        scores.masked_fill_(~state.legal(rows), NEG_INF)
        scores = torch.log_softmax(scores, dim=1) + totals[:sentences].reshape(rows, 1)
        best, picks = scores.view(sentences, beam * n_transitions).topk(beam, dim=1)
        # Where a sentence has fewer legal continuations than the beam, the extra picks (at
        # -inf) repeat its best one, so every row holds a legal configuration; the -inf score
        # keeps them from ever winning.
        picks = torch.where(best == NEG_INF, picks[:, :1], picks)
        parents, transitions = picks // n_transitions, picks % n_transitions
        state.reorder((first_rows[:sentences] + parents).flatten(), rows)
        state.apply(transitions.flatten(), rows)
        totals[:sentences] = best
    best, winners = totals.max(dim=1)
    return state.results((first_rows.flatten() + winners).tolist()), best


def parse_sentences(model, sentences, vocabs, batch_size=DECODE_BATCH, beam=1):
    """Fill ``heads`` and ``deprels`` of each sentence (in place) with the model's parse.

    ``beam`` 1 is greedy decoding; more keeps that many partial parses per sentence (slower by
    about that factor). Only legal transitions are taken, so every output is a tree with
    exactly one root word. Sentences with no words are left as they are. ``batch_size``
    bounds the configurations scored together (sentences times ``beam``).
    """
    _decode(model, sentences, vocabs, batch_size, beam, with_log_probs=False)
    return sentences


def parse_log_probs(model, sentences, vocabs, batch_size=DECODE_BATCH, beam=1):
    """As :func:`parse_sentences`, and return each parse's log-probability under the model
    (the sum over its transitions of the log-softmax over the legal ones; 0 for a sentence
    with no words), in the order of ``sentences``."""
    return _decode(model, sentences, vocabs, batch_size, beam, with_log_probs=True)


@torch.no_grad()
def _decode(model, sentences, vocabs, batch_size, beam, with_log_probs):
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    model.eval()
    device = next(model.parameters()).device
    n_labels = model.config.n_labels - 1
    label_names = vocabs["labels"].itos[1:]
    log_probs = [0.0] * len(sentences)
    # Longest first: the rows still parsing are always a prefix (see the module's docstring).
    ordered = sorted((i for i, s in enumerate(sentences) if len(s)),
                     key=lambda i: len(sentences[i]), reverse=True)
    per_batch = max(1, batch_size // beam) if beam > 1 else batch_size
    for start in range(0, len(ordered), per_batch):
        batch = ordered[start:start + per_batch]
        encoded = [encode_sentence(sentences[i], vocabs, model.config.pos_column) for i in batch]
        # Every word id a feature can take in this batch: the sentences' words, NULL, ROOT.
        batch_words = sorted({w for word_ids, _ in encoded for w in word_ids} | {NULL})
        table = model.precompute(torch.tensor(batch_words, device=device))
        if beam == 1:
            parses, totals = _greedy(model, table, encoded, n_labels, device, with_log_probs)
        else:
            parses, totals = _beam(model, table, encoded, n_labels, device, beam)
        for i, (heads, labels) in zip(batch, parses, strict=True):
            sentences[i].heads[:] = heads
            sentences[i].deprels[:] = [label_names[label] for label in labels]
        if with_log_probs:
            for i, total in zip(batch, totals.tolist(), strict=True):
                log_probs[i] = total
    return log_probs
