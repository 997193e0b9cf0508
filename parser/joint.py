"""POS and parse chosen together for sentences the tagger tags: the parser weighs in where the
tagger is unsure.

A pipeline parses with the tagger's best tags and inherits its errors: with the shipped models,
EWT dev UAS falls from 88.8 (gold POS) to 84.8. Yet where the tagger errs its second choice is
often right: giving the gold tag to the words whose best tag has probability below 0.99, when
it is among the two best, would lift greedy dev UAS from 84.2 to 86.0. So, for each sentence,
the tagger's best tagging is parsed, and so is, for each such unsure word, the best tagging
with that word's second choice; the tagging and parse kept maximise

    parse log-probability + TAG_WEIGHT * tagging log-probability.

TAG_WEIGHT and THRESHOLD were chosen on EWT dev (docs/RESULTS.md, "Tags and parse chosen
together"). The cost: about 1 + (unsure words per sentence) parses per sentence instead of one.
"""

import math

from parser.decode import DECODE_BATCH, parse_log_probs

THRESHOLD = 0.99  # a word whose best tag choice is less probable than this is unsure
TAG_WEIGHT = 0.3  # weight of the tagging's log-probability against the parse's


def candidate_taggings(alternatives, threshold=THRESHOLD):
    """The taggings to parse for one sentence, the tagger's best first: ``[(choice per word,
    tagging log-probability)]``. ``alternatives``: per word, its choices best first, as
    ``(tags, log-probability)`` (``tagger.predict.tag_alternatives``). Each further tagging
    differs from the best in one unsure word, which takes its second choice."""
    best = [choices[0] for choices in alternatives]
    best_log_prob = sum(log_prob for _, log_prob in best)
    taggings = [([tags for tags, _ in best], best_log_prob)]
    for word, choices in enumerate(alternatives):
        if len(choices) > 1 and choices[0][1] < math.log(threshold):
            tagging = list(taggings[0][0])
            tagging[word] = choices[1][0]
            taggings.append((tagging, best_log_prob - choices[0][1] + choices[1][1]))
    return taggings


def tag_and_parse(model, vocabs, sentences, alternatives, beam=1, threshold=THRESHOLD,
                  tag_weight=TAG_WEIGHT, batch_size=DECODE_BATCH):
    """Fill the tag columns, ``heads`` and ``deprels`` of ``sentences`` in place with the
    tagging and parse of highest combined score (see the module's docstring).
    ``alternatives``: per sentence, ``tagger.predict.tag_alternatives``'s choices."""
    candidates, owners, tag_log_probs = [], [], []
    for index, (sentence, choices) in enumerate(zip(sentences, alternatives, strict=True)):
        for tagging, log_prob in candidate_taggings(choices, threshold):
            candidate = sentence.copy()
            for column in (tagging[0] if tagging else {}):
                setattr(candidate, column, [tags[column] for tags in tagging])
            candidates.append(candidate)
            owners.append(index)
            tag_log_probs.append(log_prob)
    parse_scores = parse_log_probs(model, candidates, vocabs, batch_size, beam)
    best = {}
    for candidate, owner, tag_log_prob, parse_log_prob in zip(
            candidates, owners, tag_log_probs, parse_scores, strict=True):
        total = parse_log_prob + tag_weight * tag_log_prob
        if owner not in best or total > best[owner][0]:
            best[owner] = (total, candidate)
    for index, sentence in enumerate(sentences):
        chosen = best[index][1]
        sentence.upos, sentence.xpos = chosen.upos, chosen.xpos
        sentence.heads, sentence.deprels = chosen.heads, chosen.deprels
    return sentences
