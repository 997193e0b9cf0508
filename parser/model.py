"""Chen & Manning's (2014) feed-forward transition scorer, with meProp hidden and output layers.

The paper's meProp setting (Sun et al. 2017): 2 hidden layers of 500, ReLU, the same k for
hidden and output layers. Chen & Manning's: 1 hidden layer of 200 with the cube activation.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.dropout import Dropout
from meprop.nn import Linear
from parser.features import N_FEATURES, N_LABEL_FEATURES, N_TAG_FEATURES, N_WORD_FEATURES

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "cube": lambda x: x * x * x}


@dataclass
class ParserConfig:
    n_words: int
    n_tags: int
    n_labels: int  # label vocabulary size, NULL included
    embedding_dim: int = 50
    hidden: int = 500
    layers: int = 2
    activation: str = "relu"
    dropout: float = 0.5
    k: int = 20  # None or 0: dense
    mode: str = "per_example"
    selection: str = "topk"  # "random": random-k ablation
    pos_column: str = "xpos"

    @property
    def n_transitions(self):
        return 1 + 2 * (self.n_labels - 1)


class ParserModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {config.activation!r}; expected one of "
                             f"{sorted(ACTIVATIONS)}")
        self.config = config
        dim = config.embedding_dim
        self.word_embedding = nn.Embedding(config.n_words, dim)
        self.tag_embedding = nn.Embedding(config.n_tags, dim)
        self.label_embedding = nn.Embedding(config.n_labels, dim)
        # Embeddings keep PyTorch's N(0, 1) initialisation: Chen & Manning's U(-0.01, 0.01)
        # (meant to sit beside pre-trained vectors) learnt more slowly on EWT dev here.
        widths = [N_FEATURES * dim] + [config.hidden] * config.layers
        self.hidden_layers = nn.ModuleList(
            Linear(n_in, n_out, k=config.k, mode=config.mode, selection=config.selection)
            for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.output = Linear(widths[-1], config.n_transitions, k=config.k, mode=config.mode,
                             selection=config.selection)
        self.dropout = Dropout(config.dropout)
        self.activation = ACTIVATIONS[config.activation]

    def embed(self, features):
        """``features [batch, 48]`` -> concatenated embeddings ``[batch, 48 * dim]``.

        One lookup in the three tables stacked (each feature's id offset to its table's rows):
        three lookups and a concatenation of their [batch, 48 * dim] result, then three
        embedding backwards, took twice as long at the training batch of 10,000, for dense and
        meProp alike. The tables stay separate parameters (checkpoints are unchanged)."""
        offsets = features.new_tensor(
            [0] * N_WORD_FEATURES + [self.config.n_words] * N_TAG_FEATURES
            + [self.config.n_words + self.config.n_tags] * N_LABEL_FEATURES)
        table = torch.cat([self.word_embedding.weight, self.tag_embedding.weight,
                           self.label_embedding.weight])
        return F.embedding(features + offsets, table).reshape(len(features), -1)

    def forward(self, features):
        """``features [batch, 48]`` int64 -> transition scores ``[batch, n_transitions]``."""
        hidden = self.embed(features)
        for layer in self.hidden_layers:
            hidden = self.dropout(self.activation(layer(hidden)))
        return self.output(hidden)

    @torch.no_grad()
    def precompute(self, word_ids):
        """Chen & Manning's precomputation of the first layer, for decoding (eval mode).

        The first layer is a sum over the 48 feature positions of ``W_f @ embedding``; this
        tabulates every product a batch of sentences can need: for each word position, the
        words in ``word_ids`` (the distinct word ids of the batch, NULL and ROOT included);
        for tags and labels, the whole vocabularies. Returns a :class:`FirstLayerTable`.
        """
        dim, hidden = self.config.embedding_dim, self.config.hidden
        first = self.hidden_layers[0]
        # [hidden, 48 * dim] -> [dim, 48, hidden]: for each embedding dimension, the weights of
        # every feature position, so one matrix product per group fills rows laid out value by
        # value (value v, position f at v * positions + f) with no copy of the large result.
        blocks = first.weight.t().reshape(N_FEATURES, dim, hidden).transpose(0, 1)
        groups = list(zip((self.word_embedding.weight[word_ids], self.tag_embedding.weight,
                           self.label_embedding.weight),
                          blocks.split([N_WORD_FEATURES, N_TAG_FEATURES, N_LABEL_FEATURES],
                                       dim=1), strict=True))
        table = first.weight.new_empty(sum(len(v) * b.shape[1] for v, b in groups), hidden)
        start = 0
        for vectors, block in groups:
            end = start + len(vectors) * block.shape[1]
            torch.mm(vectors, block.reshape(dim, -1), out=table[start:end].view(len(vectors), -1))
            start = end
        return FirstLayerTable(table, first.bias, word_ids, self.config.n_tags)

    @torch.no_grad()
    def score_precomputed(self, table, features):
        """Same scores as ``forward`` (eval mode) from a :class:`FirstLayerTable`."""
        hidden = self.activation(table.first_layer(features))
        for layer in self.hidden_layers[1:]:
            hidden = self.activation(layer(hidden))
        return self.output(hidden)

    def load_pretrained(self, path, words_vocab, normalize):
        """Copy vectors from a text file (``word v1 v2 ...`` per line) into the word embedding.

        Returns the number of vocabulary words found. Vectors of another size raise ValueError.
        """
        found = 0
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.rstrip().split(" ")
                if len(parts) <= 2:
                    continue  # word2vec's header line
                word = normalize(parts[0])
                if word not in words_vocab:
                    continue
                if len(parts) - 1 != self.config.embedding_dim:
                    raise ValueError(f"{path}: vectors have {len(parts) - 1} dimensions, the "
                                     f"model {self.config.embedding_dim}")
                with torch.no_grad():
                    self.word_embedding.weight[words_vocab.index(word)] = torch.tensor(
                        [float(value) for value in parts[1:]])
                found += 1
        return found


class FirstLayerTable:
    """Rows of precomputed first-layer products, and the row of each feature value.

    Row layout: batch word j at word position f -> ``j * 18 + f``; then tag t at tag position
    f -> ``words_end + t * 18 + f``; then label l at label position f likewise (``* 12``).
    """

    def __init__(self, table, bias, word_ids, n_tags):
        self.table, self.bias = table, bias
        device = table.device
        n_words = len(word_ids)
        # Global word id -> row within the batch's words (-1 where absent).
        self.word_row = torch.full((int(word_ids.max()) + 1,), -1, dtype=torch.long,
                                   device=device)
        self.word_row[word_ids] = torch.arange(n_words, device=device)
        sizes = (N_WORD_FEATURES, N_TAG_FEATURES, N_LABEL_FEATURES)
        starts = (0, n_words * N_WORD_FEATURES,
                  n_words * N_WORD_FEATURES + n_tags * N_TAG_FEATURES)
        self.scale = torch.tensor([size for size in sizes for _ in range(size)], device=device)
        self.offsets = torch.cat([start + torch.arange(size, device=device)
                                  for start, size in zip(starts, sizes, strict=True)])

    def first_layer(self, features):
        """``features [batch, 48]`` (vocabulary ids) -> first layer pre-activation."""
        rows = features.clone()
        rows[:, :N_WORD_FEATURES] = self.word_row[features[:, :N_WORD_FEATURES]]
        rows = rows * self.scale + self.offsets
        return torch.nn.functional.embedding_bag(rows, self.table, mode="sum") + self.bias
