"""parse predict on text without POS tags: the tagger fills them, internally or written."""

import pytest
from click.testing import CliRunner

from data import conll
from parser.cli import main as parse_main
from tagger.cli import main as tag_main
from tests.test_parser import SENTENCES, conllu_text


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small tagger and parser, trained once for this module: ``(tagger, parser)`` paths."""
    tmp_path = tmp_path_factory.mktemp("models")
    treebank = tmp_path / "train.conllu"
    treebank.write_text(conllu_text(SENTENCES, 10))
    runner = CliRunner()
    result = runner.invoke(tag_main, [
        "train", "--train", str(treebank), "--dev", str(treebank), "--epochs", "15",
        "--hidden", "32", "--k", "4", "--dropout", "0", "--word-dropout", "0", "--lr", "0.01",
        "--min-word-freq", "1", "--out", str(tmp_path / "tagger.pt"), "--quiet", "--device",
        "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(parse_main, [
        "train", "--train", str(treebank), "--dev", str(treebank), "--epochs", "20",
        "--batch-size", "50", "--hidden", "64", "--layers", "1", "--k", "8", "--dropout", "0",
        "--lr", "0.01", "--min-word-freq", "1", "--out", str(tmp_path / "parser.pt"), "--quiet",
        "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return tmp_path / "tagger.pt", tmp_path / "parser.pt"


def test_untagged_input_is_tagged_internally_or_written(tmp_path, models):
    tagger, parser = models
    text = tmp_path / "in.txt"
    text.write_text("The dog barks .\nA cat sees the bird .\n")
    runner = CliRunner()
    common = ["predict", str(text), "--model", str(parser), "--tagger", str(tagger)]

    result = runner.invoke(parse_main, common + ["-o", str(tmp_path / "plain.conllu")])
    assert result.exit_code == 0, result.output
    plain = list(conll.read(tmp_path / "plain.conllu"))
    assert plain[0].xpos == ["_"] * 4 and plain[0].upos == ["_"] * 4  # tags used, not written
    assert plain[0].heads == [2, 3, 0, 3]

    result = runner.invoke(parse_main, common + ["--write-tags", "-o",
                                                 str(tmp_path / "tags.conllu")])
    assert result.exit_code == 0, result.output
    tagged = list(conll.read(tmp_path / "tags.conllu"))
    assert tagged[0].xpos == ["DT", "NN", "VBZ", "."]
    assert tagged[1].upos == ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]
    assert [s.heads for s in tagged] == [s.heads for s in plain]


def test_tagged_input_keeps_its_tags_and_needs_no_tagger(tmp_path, models):
    _, parser = models
    gold = tmp_path / "gold.conllu"
    gold.write_text(conllu_text(SENTENCES))
    result = CliRunner().invoke(parse_main, [
        "predict", str(gold), "--model", str(parser), "--tagger", str(tmp_path / "none.pt"),
        "--write-tags", "-o", str(tmp_path / "out.conllu")])
    assert result.exit_code == 0, result.output
    for before, after in zip(conll.read(gold), conll.read(tmp_path / "out.conllu"), strict=True):
        assert before.xpos == after.xpos and before.upos == after.upos


def test_missing_tagger_is_a_clear_error(tmp_path, models):
    _, parser = models
    text = tmp_path / "in.txt"
    text.write_text("The dog barks .\n")
    result = CliRunner().invoke(parse_main, ["predict", str(text), "--model", str(parser),
                                             "--tagger", str(tmp_path / "none.pt")])
    assert result.exit_code == 1 and "no XPOS tags" in result.output
