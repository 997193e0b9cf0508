"""data.vocab and data.batching."""

import pytest
import torch

from data.batching import bucket_batches
from data.vocab import PAD, UNK, Vocab


def test_vocab_build_min_freq_and_unknown():
    vocab = Vocab.build([["the", "dog", "the"], ["a", "dog", "the"]], min_freq=2)
    assert vocab.itos == [PAD, UNK, "the", "dog"]
    assert vocab.encode(["the", "cat"]) == [2, 1]
    assert vocab.decode([3]) == ["dog"]
    assert "cat" not in vocab and len(vocab) == 4


def test_vocab_without_unknown_raises_on_unseen():
    tags = Vocab.build([["NN", "VB"]], pad=False, unk=False)
    assert tags.pad_index is None and tags.unk_index is None
    with pytest.raises(KeyError, match="'JJ'"):
        tags.index("JJ")


def test_vocab_round_trips_as_plain_data(tmp_path):
    vocab = Vocab.build([list("hello")], pad=True, unk=True)
    path = tmp_path / "vocab.pt"
    torch.save({"vocab": vocab.to_dict()}, path)
    loaded = Vocab.from_dict(torch.load(path, weights_only=True)["vocab"])
    assert loaded.itos == vocab.itos and loaded.index("l") == vocab.index("l")
    assert loaded.index("z") == vocab.unk_index


def test_bucket_batches_cover_everything_once_and_group_lengths():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 1, 4]
    batches = bucket_batches(lengths, 3, seed=1)
    assert sorted(i for batch in batches for i in batch) == list(range(10))
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spreads) <= 3
    assert batches == bucket_batches(lengths, 3, seed=1)  # seeded
    assert batches != bucket_batches(lengths, 3, seed=2)


def test_bucket_batches_by_tokens():
    lengths = [4, 4, 4, 10, 1]
    batches = bucket_batches(lengths, 8, shuffle=False, by_tokens=True)
    assert batches == [[4, 0], [1, 2], [3]]
    with pytest.raises(ValueError):
        bucket_batches(lengths, 0)
