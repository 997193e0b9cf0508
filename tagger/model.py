"""BiLSTM tagger: word + affix/shape embeddings -> meProp BiLSTM -> one softmax per tag column."""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import meprop
from tagger.data import FEATURE_NAMES


@dataclass
class TaggerConfig:
    """Everything needed to rebuild the network; saved inside every checkpoint."""

    n_words: int
    feature_sizes: list  # vocabulary size of each feature in FEATURE_NAMES order
    tag_sizes: dict  # column ("upos"/"xpos") -> number of tags
    word_dim: int = 50
    feature_dim: int = 20
    hidden: int = 500
    k: int = 5  # None = dense back propagation
    mode: str = "per_example"
    dropout: float = 0.3
    word_dropout: float = 0.25  # alpha: a training word becomes UNK w.p. alpha / (alpha + count)
    columns: list = field(default_factory=lambda: ["upos", "xpos"])


class TaggerModel(nn.Module):
    """``forward(inputs)`` takes a list of ``[n_words, 8]`` id tensors (one per sentence) and
    returns ``{column: logits}`` over the packed words (``pack_sequence`` order)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.words = nn.Embedding(config.n_words, config.word_dim, padding_idx=0)
        self.features = nn.ModuleList(
            nn.Embedding(size, config.feature_dim, padding_idx=0) for size in config.feature_sizes)
        input_size = config.word_dim + config.feature_dim * len(FEATURE_NAMES)
        # The paper sparsifies the LSTM and leaves the tagging output layer dense.
        self.lstm = meprop.LSTM(input_size, config.hidden, bidirectional=True, k=config.k,
                                mode=config.mode)
        self.dropout = meprop.Dropout(config.dropout)
        self.outputs = nn.ModuleDict(
            {column: nn.Linear(2 * config.hidden, config.tag_sizes[column])
             for column in config.columns})

    def embed(self, ids):
        """``[rows, 8]`` ids -> ``[rows, word_dim + 7 * feature_dim]``."""
        parts = [self.words(ids[:, 0])]
        parts += [embedding(ids[:, i + 1]) for i, embedding in enumerate(self.features)]
        return torch.cat(parts, dim=1)

    def forward(self, inputs, word_dropout_ids=None):
        packed = pack_sequence(inputs, enforce_sorted=False)
        ids = packed.data if word_dropout_ids is None else word_dropout_ids(packed.data)
        embedded = self.dropout(self.embed(ids))
        output, _ = self.lstm(PackedSequence(embedded, packed.batch_sizes, packed.sorted_indices,
                                             packed.unsorted_indices))
        hidden = self.dropout(output.data)
        return {column: layer(hidden) for column, layer in self.outputs.items()}, packed

    @torch.no_grad()
    def predict(self, inputs, pairs=None):
        """Best tag index per word: ``{column: [tensor [n_words] per sentence]}``.

        ``pairs`` (``{column: tensor [n_pairs]}`` over two columns): the tag combinations
        allowed; each word gets the allowed combination of highest summed log-probability
        instead of each column's best tag alone, which can be a pair never seen in training.
        """
        self.eval()
        logits, packed = self(inputs)
        if pairs:
            best_pair = _pair_log_probs(logits, pairs).argmax(dim=1)
            best = {column: tags[best_pair] for column, tags in pairs.items()}
        else:
            best = {column: scores.argmax(1) for column, scores in logits.items()}
        return {column: _unpack(tag_ids, packed, inputs) for column, tag_ids in best.items()}

    @torch.no_grad()
    def choice_log_probs(self, inputs, pairs=None):
        """Per sentence, ``[n_words, n_choices]`` log-probabilities of each word's tag choices:
        the allowed pairs (``pairs``, as for :meth:`predict`; renormalised over them) or, for a
        model of one column, its tags. Raises ``ValueError`` for two columns without pairs."""
        self.eval()
        logits, packed = self(inputs)
        if pairs:
            choices = torch.log_softmax(_pair_log_probs(logits, pairs), dim=1)
        elif len(logits) == 1:
            choices = torch.log_softmax(next(iter(logits.values())), dim=1)
        else:
            raise ValueError("a tagger of two columns needs the pairs seen in training")
        return _unpack(choices, packed, inputs)


def _pair_log_probs(logits, pairs):
    """``[packed words, n_pairs]``: each pair's summed log-probability over the columns."""
    return sum(torch.log_softmax(logits[column], dim=1)[:, tags]
               for column, tags in pairs.items())


def _unpack(values, packed, inputs):
    """Per-word ``values`` in ``packed`` order -> one tensor per sentence of ``inputs``."""
    values = PackedSequence(values, packed.batch_sizes, packed.sorted_indices,
                            packed.unsorted_indices)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(values, batch_first=True)
    return [padded[i, :len(words)] for i, words in enumerate(inputs)]
