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


def _greedy(model, table, encoded, n_labels, device):
    word_ids, tag_ids = zip(*encoded, strict=True)
    state = ConfigurationBatch(word_ids, tag_ids, n_labels, device)
    lengths = [len(ids) - 1 for ids in word_ids]
    for step in range(2 * lengths[0]):
        _, rows = _active_rows(lengths, step)
        scores = model.score_precomputed(table, state.features(rows))
        scores.masked_fill_(~state.legal(rows), NEG_INF)
        state.apply(scores.argmax(dim=1), rows)
    return state.results(range(len(encoded)))


def _beam(model, table, encoded, n_labels, device, beam):
    """Beam search: per sentence, the ``beam`` partial parses of highest summed log-probability
    (softmax over the legal transitions) survive each step; sentence i owns rows
    ``i * beam .. i * beam + beam - 1``."""
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
    winners = first_rows.flatten() + totals.argmax(dim=1)
    return state.results(winners.tolist())


@torch.no_grad()
def parse_sentences(model, sentences, vocabs, batch_size=DECODE_BATCH, beam=1):
    """Fill ``heads`` and ``deprels`` of each sentence (in place) with the model's parse.

    ``beam`` 1 is greedy decoding; more keeps that many partial parses per sentence (slower by
    about that factor). Only legal transitions are taken, so every output is a tree with
    exactly one root word. Sentences with no words are left as they are. ``batch_size``
    bounds the configurations scored together (sentences times ``beam``).
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    model.eval()
    device = next(model.parameters()).device
    n_labels = model.config.n_labels - 1
    label_names = vocabs["labels"].itos[1:]
    # Longest first: the rows still parsing are always a prefix (see the module's docstring).
    ordered = sorted((s for s in sentences if len(s)), key=len, reverse=True)
    per_batch = max(1, batch_size // beam) if beam > 1 else batch_size
    for start in range(0, len(ordered), per_batch):
        batch = ordered[start:start + per_batch]
        encoded = [encode_sentence(s, vocabs, model.config.pos_column) for s in batch]
        # Every word id a feature can take in this batch: the sentences' words, NULL, ROOT.
        batch_words = sorted({w for word_ids, _ in encoded for w in word_ids} | {NULL})
        table = model.precompute(torch.tensor(batch_words, device=device))
        if beam == 1:
            parses = _greedy(model, table, encoded, n_labels, device)
        else:
            parses = _beam(model, table, encoded, n_labels, device, beam)
        for sentence, (heads, labels) in zip(batch, parses, strict=True):
            sentence.heads[:] = heads
            sentence.deprels[:] = [label_names[label] for label in labels]
    return sentences
