"""The tensor configurations used for decoding against the Python reference
(``parser.transition.Configuration`` and ``parser.features.extract``) on real EWT sentences."""

import copy
import itertools
import random
import zlib

import torch

from data import conll
from parser.batch_state import ConfigurationBatch
from parser.features import extract
from parser.transition import Configuration, TransitionSystem, is_projective, oracle

N_LABELS = 5


def ewt_sentences(data_dir, count):
    """The first ``count`` projective EWT dev sentences, longest first (as decoding orders them),
    with arbitrary word/tag ids and gold label ids below ``N_LABELS``."""
    path = data_dir / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
    chosen = [s for s in itertools.islice(conll.read(path), 3 * count) if is_projective(s.heads)]
    chosen = sorted(chosen[:count], key=len, reverse=True)
    encoded = []
    for sentence in chosen:
        word_ids = [1] + [2 + zlib.crc32(form.encode()) % 97 for form in sentence.forms]
        tag_ids = [1] + [2 + zlib.crc32(upos.encode()) % 13 for upos in sentence.upos]
        labels = [len(deprel) % N_LABELS for deprel in sentence.deprels]
        encoded.append((sentence.heads, labels, word_ids, tag_ids))
    return encoded


def legal_row(system, config):
    shift_ok, left_ok, right_ok = system.legal(config)
    return [shift_ok] + [left_ok] * system.n_labels + [right_ok] * system.n_labels


def check_rows(state, configs, encoded, system, rows):
    """Features and legality of the first ``rows`` rows equal the Python reference's."""
    features = state.features(rows).tolist()
    legal = state.legal(rows).tolist()
    for row in range(rows):
        _, _, word_ids, tag_ids = encoded[row]
        assert features[row] == extract(configs[row], word_ids, tag_ids), row
        assert legal[row] == legal_row(system, configs[row]), row


def active(encoded, step):
    return sum(2 * len(heads) > step for heads, _, _, _ in encoded)


def test_gold_transitions_rebuild_the_trees_with_the_reference_features(data_dir, device):
    encoded = ewt_sentences(data_dir, 120)
    system = TransitionSystem(N_LABELS)
    gold = [[t for _, t in oracle(heads, labels, system)] for heads, labels, _, _ in encoded]
    state = ConfigurationBatch([e[2] for e in encoded], [e[3] for e in encoded], N_LABELS,
                               device)
    configs = [Configuration(len(heads)) for heads, _, _, _ in encoded]
    for step in range(len(gold[0])):
        rows = active(encoded, step)
        check_rows(state, configs, encoded, system, rows)
        transitions = [gold[row][step] for row in range(rows)]
        state.apply(torch.tensor(transitions, device=device), rows)
        for config, transition in zip(configs[:rows], transitions, strict=True):
            system.apply(config, transition)
    results = state.results(range(len(encoded)))
    assert results == [(heads, labels) for heads, labels, _, _ in encoded]
    assert not state.legal(len(encoded)).any()  # every parse complete


def test_random_legal_transitions_and_row_copies_match_the_reference(data_dir, device):
    """Arbitrary (not gold) trees, and beam search's row copies: each sentence owns three rows,
    which after every step are refilled from random rows of the same sentence."""
    rng = random.Random(0)
    sentences = ewt_sentences(data_dir, 40)
    encoded = [entry for entry in sentences for _ in range(3)]
    system = TransitionSystem(N_LABELS)
    state = ConfigurationBatch([e[2] for e in encoded], [e[3] for e in encoded], N_LABELS,
                               device)
    configs = [Configuration(len(heads)) for heads, _, _, _ in encoded]
    for step in range(2 * len(encoded[0][0])):
        rows = active(encoded, step)
        check_rows(state, configs, encoded, system, rows)
        sources = [3 * (row // 3) + rng.randrange(3) for row in range(rows)]
        state.reorder(torch.tensor(sources, device=device), rows)
        configs[:rows] = [copy.deepcopy(configs[source]) for source in sources]
        transitions = []
        for config in configs[:rows]:
            allowed = [t for t, ok in enumerate(legal_row(system, config)) if ok]
            transitions.append(rng.choice(allowed))
            system.apply(config, transitions[-1])
        state.apply(torch.tensor(transitions, device=device), rows)
    assert state.results(range(len(configs))) == [(c.heads[1:], c.labels[1:]) for c in configs]
    assert all(conll.tree_problem(config.heads[1:]) is None for config in configs)
