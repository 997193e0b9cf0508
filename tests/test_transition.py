"""Arc-standard system, static oracle and Chen & Manning's features."""

import itertools
import random

import pytest

from data import conll
from parser.features import N_FEATURES, NULL, extract, items
from parser.transition import SHIFT, Configuration, TransitionSystem, is_projective, oracle


def run_oracle(heads, labels, system):
    config = None
    transitions = []
    for config, transition in oracle(heads, labels, system):
        legal = system.legal(config)
        action, _ = system.decode(transition)
        assert legal[("shift", "left", "right").index(action)], "oracle chose an illegal move"
        transitions.append(transition)
    return config, transitions


def test_oracle_on_a_small_tree():
    # "He ate fish ." heads: He->ate, ate->ROOT, fish->ate, .->ate
    heads, labels = [2, 0, 2, 2], [0, 1, 2, 3]
    system = TransitionSystem(4)
    config, transitions = run_oracle(heads, labels, system)
    assert transitions == [SHIFT, SHIFT, system.left(0), SHIFT, system.right(2), SHIFT,
                           system.right(3), system.right(1)]
    assert config.heads[1:] == heads and config.labels[1:] == labels
    assert config.is_terminal() and system.legal(config) == (False, False, False)


def test_root_gets_one_dependent_only_at_the_end():
    system = TransitionSystem(1)
    config = Configuration(2)
    system.apply(config, SHIFT)
    assert system.legal(config) == (True, False, False)  # RIGHT-ARC to ROOT must wait
    system.apply(config, SHIFT)
    assert system.legal(config) == (False, True, True)


def test_projectivity():
    assert is_projective([2, 0, 2, 3])
    assert not is_projective([3, 4, 0, 3])  # 1->3 crosses 2->4


def test_oracle_round_trip_on_real_ewt(data_dir):
    path = data_dir / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
    sentences = list(itertools.islice(conll.read(path), 400))
    deprels = sorted({d.split(":")[0] for s in sentences for d in s.deprels})
    system = TransitionSystem(len(deprels))
    checked = skipped = 0
    for sentence in sentences:
        labels = [deprels.index(d.split(":")[0]) for d in sentence.deprels]
        if not is_projective(sentence.heads):
            with pytest.raises(ValueError, match="not projective"):
                run_oracle(sentence.heads, labels, system)
            skipped += 1
            continue
        config, transitions = run_oracle(sentence.heads, labels, system)
        assert config.heads[1:] == sentence.heads
        assert config.labels[1:] == labels
        assert len(transitions) == 2 * len(sentence)
        assert system.legal(config) == (False, False, False)
        checked += 1
    assert checked > 350 and skipped > 0


def test_hand_worked_features():
    # "The cat sat on the mat" with arcs The<-cat built and cat, sat on the stack.
    system = TransitionSystem(3)  # labels: 0 det, 1 nsubj, 2 prep
    config = Configuration(6)
    for transition in (SHIFT, SHIFT, system.left(0), SHIFT):
        system.apply(config, transition)
    # stack: ROOT cat sat ; buffer: on the mat
    word_ids = [1, 10, 11, 12, 13, 14, 15]  # ROOT token id 1, word i -> 10 + i - 1
    tag_ids = [1, 20, 21, 22, 23, 20, 21]
    positions = items(config)
    assert positions[:6] == [3, 2, 0, 4, 5, 6]
    # lc1(s1)=None (sat has no children); lc1(s2)=The (1)
    assert positions[6:10] == [None] * 4
    assert positions[10:14] == [1, None, None, None]
    assert positions[14:] == [None] * 4
    features = extract(config, word_ids, tag_ids)
    assert len(features) == N_FEATURES == 48
    assert features[:6] == [12, 11, 1, 13, 14, 15]
    assert features[18:24] == [22, 21, 1, 23, 20, 21]
    assert features[36:] == [NULL] * 4 + [0 + 1] + [NULL] * 7
    assert features[6:18] == [NULL] * 4 + [10] + [NULL] * 7


def test_grandchildren_features():
    system = TransitionSystem(2)
    # "a b c": a<-b, b<-c (left chain), so lc1(lc1(s1)) of c is a.
    config = Configuration(3)
    for transition in (SHIFT, SHIFT, system.left(0), SHIFT, system.left(1)):
        system.apply(config, transition)
    positions = items(config)
    assert positions[0] == 3 and positions[6] == 2 and positions[14] == 1


def test_random_legal_sequences_always_give_trees():
    rng = random.Random(0)
    system = TransitionSystem(2)
    for _ in range(200):
        n_words = rng.randint(1, 12)
        config = Configuration(n_words)
        while not config.is_terminal():
            legal = system.legal(config)
            options = [t for t in range(system.n_transitions)
                       if legal[("shift", "left", "right").index(system.decode(t)[0])]]
            system.apply(config, rng.choice(options))
        heads = config.heads[1:]
        assert heads.count(0) == 1 and all(h >= 0 for h in heads)
        assert conll.tree_problem(heads) is None
