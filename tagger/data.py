"""Tagger inputs: word ids plus seven affix/shape features per word, and tag targets.

The paper's tagger represents a word by a 50-d word embedding and 7 feature embeddings of 20.
Ours are: the word (lower-cased, digits as 0), its prefixes and suffixes of 1-3 letters (which
carry most of what tells an unknown word's part of speech: -ly, -ing, -ed, un-), and its shape
(capitalisation, digits, hyphen), which lets a capitalised unknown word become a proper noun.
"""

import torch

from data.vocab import UNK, Vocab, normalize_word

COLUMNS = ("upos", "xpos")
AFFIX_LENGTHS = (1, 2, 3)
FEATURE_NAMES = tuple([f"prefix{n}" for n in AFFIX_LENGTHS] + [f"suffix{n}" for n in AFFIX_LENGTHS]
                      + ["shape"])
N_INPUTS = 1 + len(FEATURE_NAMES)  # word id, then the features


def word_shape(form):
    """A coarse class: case pattern (lower, Capitalised, UPPER, mixed, none), digit, hyphen."""
    letters = [ch for ch in form if ch.isalpha()]
    if not letters:
        case = "n"
    elif all(ch.islower() for ch in letters):
        case = "l"
    elif all(ch.isupper() for ch in letters):
        case = "U" if len(letters) > 1 else "C"
    elif form[0].isupper() and all(ch.islower() for ch in letters[1:]):
        case = "C"
    else:
        case = "m"
    return f"{case}{int(any(ch.isdigit() for ch in form))}{int('-' in form)}"


def word_features(form):
    """The seven feature strings of a word, in FEATURE_NAMES order."""
    word = normalize_word(form)
    prefixes = [word[:n] if len(word) >= n else "<short>" for n in AFFIX_LENGTHS]
    suffixes = [word[-n:] if len(word) >= n else "<short>" for n in AFFIX_LENGTHS]
    return prefixes + suffixes + [word_shape(form)]


def sentence_tags(sentence, column):
    return sentence.upos if column == "upos" else sentence.xpos


def build_vocabs(sentences, columns, min_word_freq=2, min_affix_freq=2):
    """Words and features seen often enough to get their own embedding, tags, and
    ``known_words``: every training word (what "unknown word" accuracy is measured against)."""
    words = [[normalize_word(f) for f in s.forms] for s in sentences]
    vocabs = {"words": Vocab.build(words, min_freq=min_word_freq),
              "known_words": Vocab.build(words, pad=False, unk=False)}
    for position, name in enumerate(FEATURE_NAMES):
        vocabs[name] = Vocab.build(([word_features(f)[position] for f in s.forms]
                                    for s in sentences), min_freq=min_affix_freq)
    for column in columns:
        tags = Vocab.build((sentence_tags(s, column) for s in sentences), pad=False, unk=False)
        if "_" in tags:
            raise ValueError(f"the training data has words without a {column.upper()} tag ('_'); "
                             f"train on another column (--column)")
        vocabs[column] = tags
    if {"upos", "xpos"} <= set(columns):
        vocabs[TAG_PAIRS] = Vocab.build(tag_pairs(sentences), pad=False, unk=False)
    return vocabs


def check_dev_tags(dev_sentences, columns):
    """Raise ``ValueError`` unless the dev set has gold tags in every trained column: each
    epoch is scored on them, and a column without any has no accuracy to choose a model by."""
    for column in columns:
        if not any(tag != "_" for s in dev_sentences for tag in sentence_tags(s, column)):
            where = dev_sentences[0].source if dev_sentences else "the dev set"
            raise ValueError(f"{where}: no dev word has a {column.upper()} tag ('_' throughout): "
                             "the dev set must be tagged in each trained column (--column)")


# The vocabulary of UPOS/XPOS pairs seen in training: with both columns, prediction picks the
# best of these pairs rather than each column's best tag alone.
TAG_PAIRS = "tag_pairs"
PAIR_SEPARATOR = "\t"  # no tag of either column holds a tab


def tag_pairs(sentences):
    """Per sentence, each word's ``UPOS<tab>XPOS``."""
    return ([f"{upos}{PAIR_SEPARATOR}{xpos}" for upos, xpos in
             zip(s.upos, s.xpos, strict=True)] for s in sentences)


def encode_word(form, vocabs):
    """The ``N_INPUTS`` ids of one word: word id, then the feature ids."""
    features = word_features(form)
    return [vocabs["words"].index(normalize_word(form))] + [
        vocabs[name].index(value) for name, value in zip(FEATURE_NAMES, features, strict=True)]


def encode_inputs(sentence, vocabs, cache=None):
    """``[n_words, N_INPUTS]`` int64: word id, then the feature ids.

    ``cache`` (a dict kept by the caller for one vocabulary) remembers each form's ids: most
    tokens of a corpus are repeats, and encoding dominated tagging time without it.
    """
    rows = []
    for form in sentence.forms:
        ids = cache.get(form) if cache is not None else None
        if ids is None:
            ids = encode_word(form, vocabs)
            if cache is not None:
                cache[form] = ids
        rows.append(ids)
    return torch.tensor(rows, dtype=torch.long).reshape(len(sentence), N_INPUTS)


def encode_targets(sentence, vocabs, column):
    return torch.tensor(vocabs[column].encode(sentence_tags(sentence, column)), dtype=torch.long)


def word_counts(sentences, vocabs):
    """How often each word id occurs in training (for word dropout)."""
    counts = torch.zeros(len(vocabs["words"]))
    for sentence in sentences:
        for form in sentence.forms:
            counts[vocabs["words"].index(normalize_word(form))] += 1
    counts[vocabs["words"].index(UNK)] = 0
    return counts
