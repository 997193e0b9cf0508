"""Attachment scores: UAS, LAS (universal relation, as the CoNLL 2018 evaluation) and UAS
without punctuation."""

from parser.data import PUNCT_XPOS, base_label

UD_UPOS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
           "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"}


def is_punct(upos, xpos):
    """PUNCT in UPOS; where the column holds no UD tag (empty, or CoNLL-X whose CPOSTAG is a
    Penn Treebank tag, as our PTB conversion writes), a Penn Treebank punctuation XPOS."""
    if upos in UD_UPOS:
        return upos == "PUNCT"
    return xpos in PUNCT_XPOS


class AttachmentScore:
    """Adds up over sentences; properties give percentages."""

    def __init__(self):
        self.words = self.heads = self.labelled = 0
        self.content_words = self.content_heads = 0

    def add(self, gold, predicted):
        if gold.forms != predicted.forms:
            raise ValueError(f"sentence at {gold.source}:{gold.first_line} has different words "
                             "in the prediction")
        if None in gold.heads:
            # A word without a gold head would count as an error: unparsed text (plain text,
            # or "_" in HEAD) would score 0 instead of failing.
            word = gold.heads.index(None) + 1
            raise ValueError(f"sentence at {gold.source}:{gold.first_line} has no gold head for "
                             f"word {word} ('_' in HEAD): the gold file must be parsed")
        for i in range(len(gold)):
            head_ok = gold.heads[i] == predicted.heads[i]
            label_ok = base_label(gold.deprels[i]) == base_label(predicted.deprels[i])
            self.words += 1
            self.heads += head_ok
            self.labelled += head_ok and label_ok
            if not is_punct(gold.upos[i], gold.xpos[i]):
                self.content_words += 1
                self.content_heads += head_ok

    @staticmethod
    def _percent(part, whole):
        return 100.0 * part / whole if whole else 0.0

    @property
    def uas(self):
        return self._percent(self.heads, self.words)

    @property
    def las(self):
        return self._percent(self.labelled, self.words)

    @property
    def uas_no_punct(self):
        return self._percent(self.content_heads, self.content_words)

    def metrics(self, prefix=""):
        return {f"{prefix}uas": self.uas, f"{prefix}las": self.las,
                f"{prefix}uas_no_punct": self.uas_no_punct, f"{prefix}words": self.words}
