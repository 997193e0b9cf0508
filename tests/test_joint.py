"""Tags and parse chosen together (parser.joint) and the tagger's choices behind it."""

import json
import math
from itertools import islice

import pytest
import torch
from click.testing import CliRunner
from test_parser import SENTENCES, conllu_text

from data import conll
from parser.cli import main
from parser.data import build_vocabs
from parser.decode import parse_log_probs
from parser.joint import candidate_taggings, tag_and_parse
from parser.model import ParserConfig, ParserModel


def _dev_sentences(data_dir, count):
    return list(islice(conll.read(data_dir / "ud_english_ewt" / "en_ewt-ud-dev.conllu"), count))


def test_candidate_taggings_swap_one_unsure_word_at_a_time():
    sure = [({"xpos": "DT"}, math.log(0.999)), ({"xpos": "NN"}, math.log(0.001))]
    unsure_noun = [({"xpos": "NN"}, math.log(0.6)), ({"xpos": "VB"}, math.log(0.4))]
    unsure_verb = [({"xpos": "VBZ"}, math.log(0.95)), ({"xpos": "NNS"}, math.log(0.05))]
    only = [({"xpos": "."}, 0.0)]
    taggings = candidate_taggings([sure, unsure_noun, unsure_verb, only])
    best = [{"xpos": "DT"}, {"xpos": "NN"}, {"xpos": "VBZ"}, {"xpos": "."}]
    best_log_prob = math.log(0.999 * 0.6 * 0.95)
    assert taggings[0][0] == best and taggings[0][1] == pytest.approx(best_log_prob)
    assert [tagging for tagging, _ in taggings[1:]] == [
        [best[0], {"xpos": "VB"}, best[2], best[3]],
        [best[0], best[1], {"xpos": "NNS"}, best[3]]]
    assert [log_prob for _, log_prob in taggings[1:]] == pytest.approx(
        [math.log(0.999 * 0.4 * 0.95), math.log(0.999 * 0.6 * 0.05)])
    assert len(candidate_taggings([sure, unsure_noun], threshold=0.5)) == 1
    assert candidate_taggings([]) == [([], 0)]


def _model_and_sentences(tmp_path, seed):
    path = tmp_path / "t.conllu"
    path.write_text(conllu_text(SENTENCES), encoding="utf-8")
    sentences = list(conll.read(path))
    vocabs = build_vocabs(sentences, "xpos", min_word_freq=1)
    torch.manual_seed(seed)
    model = ParserModel(ParserConfig(len(vocabs["words"]), len(vocabs["tags"]),
                                     len(vocabs["labels"]), hidden=16, layers=1, k=4))
    torch.nn.init.normal_(model.output.weight, std=2.0)
    return model, vocabs, sentences


def _alternatives(sentence, generator):
    """Per word: its gold XPOS and another tag, with random probabilities."""
    tags = ["NN", "VBZ", "DT", "NNS", "IN"]
    result = []
    for gold in sentence.xpos:
        other = next(tag for tag in tags if tag != gold)
        first = 0.3 + 0.7 * torch.rand(1, generator=generator).item()
        choices = [({"xpos": gold}, math.log(first)), ({"xpos": other}, math.log(1 - first))]
        result.append(sorted(choices, key=lambda choice: -choice[1]))
    return result


@pytest.mark.parametrize("beam", [1, 3])
def test_tag_and_parse_keeps_the_candidate_of_highest_combined_score(tmp_path, beam):
    for seed in range(3):
        model, vocabs, sentences = _model_and_sentences(tmp_path, seed)
        generator = torch.Generator().manual_seed(seed)
        alternatives = [_alternatives(sentence, generator) for sentence in sentences]
        chosen = tag_and_parse(model, vocabs, [s.copy() for s in sentences], alternatives,
                               beam=beam, tag_weight=0.5)
        for sentence, choices, result in zip(sentences, alternatives, chosen, strict=True):
            scored = []
            for tagging, tag_log_prob in candidate_taggings(choices):
                candidate = sentence.copy()
                candidate.xpos = [tags["xpos"] for tags in tagging]
                parse_log_prob, = parse_log_probs(model, [candidate], vocabs, beam=beam)
                scored.append((parse_log_prob + 0.5 * tag_log_prob, candidate))
            best = max(scored, key=lambda pair: pair[0])[1]
            assert result.xpos == best.xpos and result.heads == best.heads
            assert result.deprels == best.deprels
            assert conll.tree_problem(result.heads) is None
        # Weighing the tagger heavily keeps its best tags.
        heavy = tag_and_parse(model, vocabs, [s.copy() for s in sentences], alternatives,
                              beam=beam, tag_weight=1e6)
        for result, choices in zip(heavy, alternatives, strict=True):
            assert result.xpos == [word[0][0]["xpos"] for word in choices]


def test_tagger_choices_are_seen_pairs_normalised_and_led_by_its_best_tags(data_dir):
    from tagger.cli import DEFAULT_MODEL
    from tagger.predict import allowed_pairs, load_model, tag_alternatives, tag_sentences

    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped tagger in this checkout")
    tagger, vocabs = load_model(DEFAULT_MODEL)
    sentences = _dev_sentences(data_dir, 60)
    alternatives = tag_alternatives(tagger, [s.copy() for s in sentences], vocabs, count=3)
    tagged = tag_sentences(tagger, [s.copy() for s in sentences], vocabs)
    pairs = allowed_pairs(vocabs, "cpu")
    seen = {(vocabs["upos"].itos[u], vocabs["xpos"].itos[x])
            for u, x in zip(pairs["upos"].tolist(), pairs["xpos"].tolist(), strict=True)}
    unsure = 0
    for sentence, per_word in zip(tagged, alternatives, strict=True):
        assert len(per_word) == len(sentence)
        for word, choices in enumerate(per_word):
            assert len(choices) == 3
            assert choices[0][0] == {"upos": sentence.upos[word], "xpos": sentence.xpos[word]}
            log_probs = [log_prob for _, log_prob in choices]
            assert log_probs == sorted(log_probs, reverse=True)
            assert sum(math.exp(p) for p in log_probs) <= 1 + 1e-5
            assert all((tags["upos"], tags["xpos"]) in seen for tags, _ in choices)
            assert len({(tags["upos"], tags["xpos"]) for tags, _ in choices}) == 3
            unsure += log_probs[0] < math.log(0.99)
    assert unsure > 0  # real text has words the tagger is unsure of


def test_cli_predict_chooses_tags_for_untagged_sentences_only(tmp_path, data_dir):
    from parser.cli import DEFAULT_MODEL
    from tagger.cli import DEFAULT_MODEL as DEFAULT_TAGGER
    from tagger.cli import main as tag_main

    if not DEFAULT_MODEL.exists() or not DEFAULT_TAGGER.exists():
        pytest.skip("no shipped models in this checkout")
    sentences = _dev_sentences(data_dir, 80)
    for sentence in sentences[:60]:  # the last 20 keep their gold tags
        sentence.upos, sentence.xpos = ["_"] * len(sentence), ["_"] * len(sentence)
    source = tmp_path / "in.conllu"
    conll.write(sentences, source)
    runner = CliRunner()
    outputs = {}
    for choose in ("--choose-tags", "--no-choose-tags"):
        out = tmp_path / f"{choose}.conllu"
        result = runner.invoke(main, ["predict", str(source), "--write-tags", choose, "--beam",
                                      "2", "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs[choose] = list(conll.read(out))
    gold = _dev_sentences(data_dir, 80)
    joint, pipeline = outputs["--choose-tags"], outputs["--no-choose-tags"]
    for parsed in (joint, pipeline):
        assert all(conll.tree_problem(s.heads) is None for s in parsed)
        assert [(s.upos, s.xpos) for s in parsed[60:]] == [(s.upos, s.xpos) for s in gold[60:]]
    assert [s.heads for s in joint[60:]] == [s.heads for s in pipeline[60:]]
    # Without the joint choice: the tagger's tags, as `tag predict` writes them.
    tagged = tmp_path / "tagged.conllu"
    assert runner.invoke(tag_main, ["predict", str(source), "-o", str(tagged)]).exit_code == 0
    assert [(s.upos, s.xpos) for s in pipeline[:60]] == \
        [(s.upos, s.xpos) for s in list(conll.read(tagged))[:60]]
    # With it, some unsure words of these 60 sentences take another tag.
    assert [s.xpos for s in joint[:60]] != [s.xpos for s in pipeline[:60]]


def test_cli_evaluate_with_tagger_pos_scores_parsing_without_gold_tags(tmp_path, data_dir):
    from parser.cli import DEFAULT_MODEL
    from tagger.cli import DEFAULT_MODEL as DEFAULT_TAGGER

    if not DEFAULT_MODEL.exists() or not DEFAULT_TAGGER.exists():
        pytest.skip("no shipped models in this checkout")
    gold = tmp_path / "gold.conllu"
    conll.write(_dev_sentences(data_dir, 40), gold)
    blanked = _dev_sentences(data_dir, 40)
    for sentence in blanked:
        sentence.upos, sentence.xpos = ["_"] * len(sentence), ["_"] * len(sentence)
    conll.write(blanked, tmp_path / "blank.conllu")
    runner = CliRunner()
    parsed = tmp_path / "parsed.conllu"
    assert runner.invoke(main, ["predict", str(tmp_path / "blank.conllu"), "--beam", "2",
                                "--write-tags", "-o", str(parsed)]).exit_code == 0
    piped = runner.invoke(main, ["evaluate", str(gold), "--pred", str(parsed)])
    direct = runner.invoke(main, ["evaluate", str(gold), "--tagger-pos", "--beam", "2"])
    assert direct.exit_code == 0, direct.output
    scores = json.loads(direct.output)
    for key, value in json.loads(piped.output).items():
        assert scores[key] == value, key
    tags = list(conll.read(parsed))
    right = sum(g == p for s, t in zip(_dev_sentences(data_dir, 40), tags, strict=True)
                for g, p in zip(s.upos, t.upos, strict=True))
    assert scores["upos_accuracy"] == pytest.approx(100 * right / scores["words"])
    with_gold = json.loads(runner.invoke(main, ["evaluate", str(gold), "--beam", "2"]).output)
    assert "upos_accuracy" not in with_gold and with_gold["uas"] != scores["uas"]
    refused = runner.invoke(main, ["evaluate", str(gold), "--pred", str(parsed), "--tagger-pos"])
    assert refused.exit_code != 0 and "not with --pred" in refused.output
