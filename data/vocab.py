"""Vocabularies (words, characters, tags, labels) stored as plain dicts in checkpoints."""

from collections import Counter

PAD, UNK = "<pad>", "<unk>"


def normalize_word(form):
    """Lower-cased, digits mapped to 0: shares statistics across casing and numbers."""
    return "".join("0" if ch.isdigit() else ch for ch in form.lower())


class Vocab:
    """A string <-> index map with optional padding and unknown entries.

    ``to_dict()``/``from_dict()`` give plain data, so checkpoints load with
    ``torch.load(..., weights_only=True)``.
    """

    def __init__(self, tokens, pad=True, unk=True):
        specials = ([PAD] if pad else []) + ([UNK] if unk else [])
        self.itos = specials + [token for token in tokens if token not in specials]
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        self.pad, self.unk = pad, unk

    @classmethod
    def build(cls, sequences, min_freq=1, max_size=None, pad=True, unk=True):
        """From an iterable of token sequences; keeps tokens seen ``min_freq`` times or more.

        Order: by descending frequency, ties broken by first appearance (deterministic).
        """
        counts = Counter()
        for sequence in sequences:
            counts.update(sequence)
        kept = [token for token, count in counts.most_common(max_size) if count >= min_freq]
        return cls(kept, pad=pad, unk=unk)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    @property
    def pad_index(self):
        return self.stoi[PAD] if self.pad else None

    @property
    def unk_index(self):
        return self.stoi[UNK] if self.unk else None

    def index(self, token):
        """Index of ``token``; the unknown entry for an unseen one (KeyError without it)."""
        found = self.stoi.get(token)
        if found is not None:
            return found
        if self.unk:
            return self.stoi[UNK]
        raise KeyError(f"{token!r} is not in the vocabulary (which has no unknown entry)")

    def encode(self, tokens):
        return [self.index(token) for token in tokens]

    def decode(self, indices):
        return [self.itos[index] for index in indices]

    def to_dict(self):
        return {"tokens": list(self.itos), "pad": self.pad, "unk": self.unk}

    @classmethod
    def from_dict(cls, data):
        vocab = cls([], pad=False, unk=False)
        vocab.itos = list(data["tokens"])
        vocab.stoi = {token: index for index, token in enumerate(vocab.itos)}
        vocab.pad, vocab.unk = bool(data["pad"]), bool(data["unk"])
        return vocab
