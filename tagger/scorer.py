"""Per-word tagging accuracy for each predicted column, overall and on unknown words."""

from data.vocab import normalize_word


class TagScore:
    """Adds up over sentences. ``seen_words``: the (normalised) training words; words outside
    it count as unknown. Words whose gold tag is ``_`` are not scored."""

    def __init__(self, columns, seen_words=None):
        self.columns = list(columns)
        self.seen_words = seen_words
        self.correct = dict.fromkeys(self.columns, 0)
        self.total = dict.fromkeys(self.columns, 0)
        self.unknown_correct = dict.fromkeys(self.columns, 0)
        self.unknown_total = dict.fromkeys(self.columns, 0)

    def add(self, gold, predicted):
        if gold.forms != predicted.forms:
            raise ValueError(f"sentence at {gold.source}:{gold.first_line} has different words "
                             "in the prediction")
        for column in self.columns:
            gold_tags, predicted_tags = getattr(gold, column), getattr(predicted, column)
            for form, gold_tag, predicted_tag in zip(gold.forms, gold_tags, predicted_tags,
                                                     strict=True):
                if gold_tag == "_":
                    continue
                right = gold_tag == predicted_tag
                self.correct[column] += right
                self.total[column] += 1
                if self.seen_words is not None and normalize_word(form) not in self.seen_words:
                    self.unknown_correct[column] += right
                    self.unknown_total[column] += 1

    def accuracy(self, column):
        return 100.0 * self.correct[column] / self.total[column] if self.total[column] else None

    def metrics(self, prefix=""):
        """Flat dict: ``{prefix}{column}_accuracy`` and ``unknown_{column}_accuracy`` (percent)."""
        result = {}
        for column in self.columns:
            result[f"{prefix}{column}_accuracy"] = self.accuracy(column)
            if self.seen_words is not None:
                total = self.unknown_total[column]
                result[f"{prefix}unknown_{column}_accuracy"] = (
                    100.0 * self.unknown_correct[column] / total if total else None)
            result[f"{prefix}{column}_words"] = self.total[column]
        if self.seen_words is not None and self.columns:
            result[f"{prefix}unknown_words"] = self.unknown_total[self.columns[0]]
        return result
