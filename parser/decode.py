"""Batched decoding: every sentence of a batch advances one transition per step — greedily, or
with a beam of the best-scoring partial parses (sum of the transitions' log-probabilities)."""

from array import array

import torch

from parser.data import encode_sentence
from parser.features import N_FEATURES, NULL, extract
from parser.transition import Configuration, TransitionSystem

NEG_INF = float("-inf")


def legality_mask(system, configs, device):
    """``[n_configs, n_transitions]`` bool: which transitions each configuration allows."""
    legal = torch.tensor([system.legal(config) for config in configs], dtype=torch.bool,
                         device=device)  # [n_configs, 3]: shift, left, right
    kinds = torch.tensor([0] + [1] * system.n_labels + [2] * system.n_labels, device=device)
    return legal[:, kinds]


# Sentences decoded together: each transition step's Python and tensor overhead is shared by
# the whole batch. 2,048 parsed EWT dev at 2,064 sentences/s against 1,735 with 512 (2 cores);
# the first-layer table for a batch's distinct words is then ~200 MB.
DECODE_BATCH = 2048


def _features(items, encoded, device):
    """``[len(items), 48]`` feature ids of ``(sentence index, configuration)`` pairs."""
    flat = []  # one flat list: much faster for torch.tensor than a list of lists
    for i, config in items:
        flat += extract(config, *encoded[i])
    # An int64 array's buffer becomes a tensor without a per-element conversion.
    features = torch.frombuffer(array("q", flat), dtype=torch.int64)
    return features.view(len(items), N_FEATURES).to(device)


def _greedy(model, system, table, encoded, configs, device):
    active = list(range(len(configs)))
    while active:
        features = _features([(i, configs[i]) for i in active], encoded, device)
        scores = model.score_precomputed(table, features)
        scores.masked_fill_(~legality_mask(system, [configs[i] for i in active], device),
                            NEG_INF)
        for i, transition in zip(active, scores.argmax(dim=1).tolist(), strict=True):
            system.apply(configs[i], transition)
        active = [i for i in active if not configs[i].is_terminal()]
    return configs


def _beam(model, system, table, encoded, configs, device, beam):
    """Beam search: per sentence, the ``beam`` partial parses of highest summed log-probability
    (softmax over the legal transitions) survive each step. In the arc-standard system every
    parse of an n-word sentence takes 2n transitions, so a sentence's hypotheses end together."""
    n_transitions = system.n_transitions
    hypotheses = [[(0.0, config)] for config in configs]  # per sentence: (score, configuration)
    active = list(range(len(configs)))
    while active:
        items = [(i, config) for i in active for _, config in hypotheses[i]]
        features = _features(items, encoded, device)
        scores = model.score_precomputed(table, features)
        scores.masked_fill_(~legality_mask(system, [config for _, config in items], device),
                            NEG_INF)
        scores = torch.log_softmax(scores, dim=1)
        # [sentences, beam, transitions], missing hypotheses at -inf, so one topk per sentence.
        totals = torch.full((len(active), beam, n_transitions), NEG_INF, device=device)
        prior = torch.tensor([score for i in active for score, _ in hypotheses[i]],
                             device=device)
        rows = torch.tensor([slot for i in active for slot in range(len(hypotheses[i]))],
                            device=device)
        owners = torch.repeat_interleave(
            torch.arange(len(active), device=device),
            torch.tensor([len(hypotheses[i]) for i in active], device=device))
        totals[owners, rows] = scores + prior.unsqueeze(1)
        best, chosen = totals.view(len(active), -1).topk(beam, dim=1)
        for i, values, picks in zip(active, best.tolist(), chosen.tolist(), strict=True):
            used, extended = set(), []
            for value, pick in zip(values, picks, strict=True):
                if value == NEG_INF:  # fewer legal continuations than the beam
                    break
                slot, transition = divmod(pick, n_transitions)
                config = hypotheses[i][slot][1]
                # The first extension of a hypothesis takes it over; later ones copy it. No
                # transition is applied before every copy is made, so copies see the original.
                extended.append((value, config.copy() if slot in used else config, transition))
                used.add(slot)
            for _, config, transition in extended:
                system.apply(config, transition)
            hypotheses[i] = [(value, config) for value, config, _ in extended]
        active = [i for i in active if not hypotheses[i][0][1].is_terminal()]
    return [max(entries, key=lambda entry: entry[0])[1] for entries in hypotheses]


@torch.no_grad()
def parse_sentences(model, sentences, vocabs, batch_size=DECODE_BATCH, beam=1):
    """Fill ``heads`` and ``deprels`` of each sentence (in place) with the model's parse.

    ``beam`` 1 is greedy decoding; more keeps that many partial parses per sentence (slower by
    about that factor). Only legal transitions are taken, so every output is a tree with
    exactly one root word. Sentences with no words are left as they are.
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    model.eval()
    device = next(model.parameters()).device
    system = TransitionSystem(model.config.n_labels - 1)
    label_names = vocabs["labels"].itos[1:]
    for start in range(0, len(sentences), batch_size):
        batch = [s for s in sentences[start:start + batch_size] if len(s)]
        encoded = [encode_sentence(s, vocabs, model.config.pos_column) for s in batch]
        configs = [Configuration(len(s)) for s in batch]
        # Every word id a feature can take in this batch: the sentences' words, NULL, ROOT.
        batch_words = sorted({w for word_ids, _ in encoded for w in word_ids} | {NULL})
        table = model.precompute(torch.tensor(batch_words, device=device))
        if beam == 1:
            configs = _greedy(model, system, table, encoded, configs, device)
        else:
            configs = _beam(model, system, table, encoded, configs, device, beam)
        for sentence, config in zip(batch, configs, strict=True):
            sentence.heads[:] = config.heads[1:]
            sentence.deprels[:] = [label_names[label] for label in config.labels[1:]]
    return sentences
