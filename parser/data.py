"""Parser vocabularies and training examples (configuration features -> gold transition)."""

import torch

from data.vocab import Vocab, normalize_word  # noqa: F401  (re-exported for the parser)
from parser.features import N_FEATURES, extract
from parser.transition import TransitionSystem, is_projective, oracle

ROOT = "<root>"
PUNCT_XPOS = {"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$", "HYPH", "NFP"}


def base_label(deprel):
    """The universal part of a UD relation (``nmod:poss`` -> ``nmod``)."""
    return deprel.split(":")[0]


POS_COLUMNS = ("xpos", "upos", "both")


def tag_columns(pos_column):
    """The file columns a POS setting reads: ``both`` = UPOS and XPOS."""
    return ["upos", "xpos"] if pos_column == "both" else [pos_column]


def sentence_tags(sentence, pos_column):
    """One tag string per word; ``both`` joins UPOS and XPOS (``NOUN|NN``) into one tag."""
    if pos_column == "both":
        return [f"{upos}|{xpos}" for upos, xpos in zip(sentence.upos, sentence.xpos, strict=True)]
    return sentence.xpos if pos_column == "xpos" else sentence.upos


def has_missing_tags(sentence, pos_column):
    return any("_" in getattr(sentence, column) for column in tag_columns(pos_column))


def build_vocabs(sentences, pos_column, min_word_freq=2):
    """Word, tag and label vocabularies (index 0 = NULL/padding in each).

    Labels are the universal parts of DEPREL; the transition label inventory is
    ``labels.itos[1:]`` (everything after NULL).
    """
    words = Vocab.build(([normalize_word(f) for f in s.forms] for s in sentences),
                        min_freq=min_word_freq)
    words = Vocab([ROOT] + words.itos[2:])
    tags = Vocab([ROOT] + Vocab.build(sentence_tags(s, pos_column) for s in sentences).itos[2:])
    labels = Vocab(Vocab.build([base_label(d) for d in s.deprels] for s in sentences).itos[2:],
                   unk=False)
    return {"words": words, "tags": tags, "labels": labels}


def word_counts(sentences, words):
    """Training count of each word id of ``words`` (float; infinite for the special entries
    and ROOT, and for any id seen 0 times, so word dropout never touches them)."""
    counts = torch.zeros(len(words))
    for sentence in sentences:
        ids = torch.tensor(words.encode(normalize_word(form) for form in sentence.forms))
        counts.index_add_(0, ids, torch.ones(len(ids)))
    counts[counts == 0] = float("inf")
    for special in (0, words.unk_index, words.index(ROOT)):
        counts[special] = float("inf")
    return counts


def encode_sentence(sentence, vocabs, pos_column):
    """Word and tag ids with ROOT at position 0."""
    word_ids = [vocabs["words"].index(ROOT)] + vocabs["words"].encode(
        normalize_word(form) for form in sentence.forms)
    tag_ids = [vocabs["tags"].index(ROOT)] + vocabs["tags"].encode(
        sentence_tags(sentence, pos_column))
    return word_ids, tag_ids


def check_same_trees(sentences, other_sentences):
    """Raise ``ValueError`` unless ``other_sentences`` are ``sentences`` with the same words,
    heads and labels (their POS may differ), sentence by sentence."""
    if len(other_sentences) != len(sentences):
        raise ValueError(f"{len(other_sentences)} sentences where {len(sentences)} were expected")
    for number, (sentence, other) in enumerate(zip(sentences, other_sentences, strict=True), 1):
        if (sentence.forms, sentence.heads, sentence.deprels) != (other.forms, other.heads,
                                                                  other.deprels):
            raise ValueError(f"sentence {number} differs in its words, heads or labels")


def check_parsed(train_sentences, dev_sentences):
    """Raise ``ValueError`` (naming file and line) unless the training sentences include parsed
    ones and every dev sentence is parsed: otherwise training stops after its first epoch, or
    finds nothing to learn from. ("_" in HEAD: not parsed.)"""
    if train_sentences and all(None in sentence.heads for sentence in train_sentences):
        raise ValueError(f"{train_sentences[0].source}: no training sentence has its heads ('_' "
                         "in HEAD): training needs a parsed treebank")
    for sentence in dev_sentences:
        if None in sentence.heads:
            raise ValueError(f"{sentence.source}:{sentence.first_line}: a dev sentence without "
                             f"a head for word {sentence.heads.index(None) + 1} ('_' in HEAD): "
                             "the dev set must be parsed, as it is scored")


def make_examples(sentences, vocabs, pos_column):
    """Oracle features and transitions over the projective sentences.

    Returns ``(features [n, 48] int64, transitions [n] int64, n_skipped)``; non-projective
    sentences (and any with unparsed heads) are skipped and counted.
    """
    system = TransitionSystem(len(vocabs["labels"]) - 1)
    features, transitions, skipped = [], [], 0
    for sentence in sentences:
        if any(h is None for h in sentence.heads) or not is_projective(sentence.heads):
            skipped += 1
            continue
        word_ids, tag_ids = encode_sentence(sentence, vocabs, pos_column)
        labels = [vocabs["labels"].index(base_label(d)) - 1 for d in sentence.deprels]
        for config, transition in oracle(sentence.heads, labels, system):
            features.append(extract(config, word_ids, tag_ids))
            transitions.append(transition)
    features = torch.tensor(features, dtype=torch.long).reshape(-1, N_FEATURES)
    return features, torch.tensor(transitions, dtype=torch.long), skipped
