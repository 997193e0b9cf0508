"""Tagger end to end: features, scorer, CLI train/predict/evaluate, resume, shipped model."""

import json

import pytest
import torch
from click.testing import CliRunner

from data import conll
from tagger.cli import DEFAULT_MODEL, main
from tagger.data import (
    FEATURE_NAMES,
    PAIR_SEPARATOR,
    TAG_PAIRS,
    build_vocabs,
    encode_inputs,
    word_features,
    word_shape,
)
from tagger.model import TaggerConfig, TaggerModel
from tagger.predict import allowed_pairs, load_model, tag_sentences
from tagger.scorer import TagScore
from tests.test_parser import SENTENCES, conllu_text


def write_treebank(path, repeat=1):
    path.write_text(conllu_text(SENTENCES, repeat), encoding="utf-8")
    return path


def test_word_shape_and_features():
    assert word_shape("dog") == "l00" and word_shape("Paris") == "C00"
    assert word_shape("USA") == "U00" and word_shape("iPhone") == "m00"
    assert word_shape("1990s") == "l10" and word_shape("well-known") == "l01"
    assert word_shape(",") == "n00" and word_shape("A") == "C00"
    assert word_features("Walking") == ["w", "wa", "wal", "g", "ng", "ing", "C00"]
    assert word_features("at")[2] == "<short>" and word_features("1984")[5] == "000"


def test_vocabs_and_encoding(tmp_path):
    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    vocabs = build_vocabs(sentences, ["upos", "xpos"], min_word_freq=2)
    assert "the" in vocabs["words"] and "paris" not in vocabs["words"]  # seen once
    assert "paris" in vocabs["known_words"]
    ids = encode_inputs(sentences[3], vocabs)
    assert ids.shape == (7, 8) and ids.dtype == torch.long
    assert ids[6, 0] == vocabs["words"].unk_index  # Paris: no embedding of its own
    assert vocabs["upos"].itos[0] != "<pad>"  # tag vocabularies have no specials


def test_vocabs_refuse_missing_tags(tmp_path):
    path = tmp_path / "t.conllu"
    path.write_text(conllu_text(SENTENCES).replace("\tDT\t", "\t_\t"))
    sentences = list(conll.read(path))
    with pytest.raises(ValueError, match="XPOS"):
        build_vocabs(sentences, ["xpos"])
    build_vocabs(sentences, ["upos"])  # the other column is fine


def test_tag_score_counts_unknown_words(tmp_path):
    gold = list(conll.read(write_treebank(tmp_path / "gold.conllu")))
    predicted = [s.copy() for s in gold]
    predicted[0].upos[1] = "VERB"  # "dog": known word, wrong
    predicted[3].upos[6] = "NOUN"  # "Paris": unknown word, wrong
    score = TagScore(["upos", "xpos"], seen_words={"the", "dog", "barks", "."})
    for g, p in zip(gold, predicted, strict=True):
        score.add(g, p)
    metrics = score.metrics()
    assert metrics["upos_accuracy"] == pytest.approx(100 * 18 / 20)
    assert metrics["xpos_accuracy"] == 100.0
    unknown = 20 - 6  # all of sentence 1, and "the" and "." in sentence 2 are known
    assert metrics["unknown_words"] == unknown
    assert metrics["unknown_upos_accuracy"] == pytest.approx(100 * (unknown - 1) / unknown)


def train_small(tmp_path, extra=(), repeat=10, epochs="15"):
    treebank = write_treebank(tmp_path / "train.conllu", repeat=repeat)
    model_path = tmp_path / "model.pt"
    result = CliRunner().invoke(main, [
        "train", "--train", str(treebank), "--dev", str(treebank), "--epochs", epochs,
        "--hidden", "32", "--k", "4", "--dropout", "0", "--word-dropout", "0", "--lr", "0.01",
        "--min-word-freq", "1", "--out", str(model_path), "--metrics-json",
        str(tmp_path / "train.json"), "--device", "cpu", "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return treebank, model_path, json.loads((tmp_path / "train.json").read_text())


def test_cli_train_refuses_a_dev_set_without_tags_before_training(tmp_path):
    treebank = tmp_path / "train.conllu"
    treebank.write_text(conllu_text(SENTENCES))
    untagged = tmp_path / "dev.txt"
    untagged.write_text("The dog barks .\n")
    result = CliRunner().invoke(main, [
        "train", "--train", str(treebank), "--dev", str(untagged), "--epochs", "1", "--hidden",
        "8", "--device", "cpu", "--quiet", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert f"{untagged}: no dev word has a UPOS tag" in result.output
    assert not (tmp_path / "m.pt").exists()


def test_cli_evaluate_refuses_a_gold_file_without_tags(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("The dog barks .\n")
    result = CliRunner().invoke(main, ["evaluate", str(plain), "--pred", str(plain)])
    assert result.exit_code != 0 and "has no gold UPOS or XPOS tags to score" in result.output


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_cli_train_predict_evaluate_round_trip(tmp_path, mode):
    treebank, model_path, metrics = train_small(tmp_path, ["--mode", mode])
    assert metrics["dev_upos_accuracy"] > 95.0 and metrics["dev_xpos_accuracy"] > 95.0
    for key in ("dev_upos_accuracy", "dev_xpos_accuracy", "best_epoch", "train_seconds",
                "backprop_seconds", "rows_touched"):
        assert key in metrics
    assert 0 < metrics["rows_touched"] <= 1
    model, vocabs = load_model(model_path)  # weights_only load
    assert model.config.k == 4 and model.config.mode == mode

    untagged = tmp_path / "untagged.conllu"
    untagged.write_text(conllu_text(SENTENCES).replace("\tNOUN\tNN\t", "\t_\t_\t"))
    out = tmp_path / "pred.conllu"
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(untagged), "--model", str(model_path), "-o",
                                  str(out)])
    assert result.exit_code == 0, result.output
    gold = list(conll.read(treebank))[:4]
    for before, after, expected in zip(conll.read(untagged), conll.read(out), gold, strict=True):
        assert after.forms == before.forms and after.heads == before.heads
        assert after.deprels == before.deprels
        assert after.upos == expected.upos and after.xpos == expected.xpos
    assert "# sent_id = 4" in out.read_text()

    result = runner.invoke(main, ["evaluate", str(treebank), "--model", str(model_path),
                                  "--metrics-json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["upos_accuracy"] == pytest.approx(metrics["dev_upos_accuracy"])
    assert "unknown_upos_accuracy" in scores

    result = runner.invoke(main, ["evaluate", str(treebank), "--pred", str(treebank)])
    assert json.loads(result.output)["xpos_accuracy"] == 100.0


def test_cli_plain_text_in_conllu_out_and_single_column(tmp_path):
    _, model_path, _ = train_small(tmp_path, ["--column", "upos", "--k", "0"], epochs="10")
    model, _ = load_model(model_path)
    assert model.config.columns == ["upos"] and model.config.k is None
    text = tmp_path / "in.txt"
    text.write_text("The dog barks .\nShe gave him a book in Paris\n")
    result = CliRunner().invoke(main, ["predict", str(text), "--model", str(model_path)])
    assert result.exit_code == 0, result.output
    output = tmp_path / "o.conllu"
    output.write_text(result.output)
    sentences = list(conll.read(output))
    assert [s.forms for s in sentences][0] == ["The", "dog", "barks", "."]
    assert sentences[0].upos == ["DET", "NOUN", "VERB", "PUNCT"]
    assert sentences[0].xpos == ["_"] * 4  # the model predicts UPOS only


def test_cli_refuses_overwrite_bad_input_and_missing_model(tmp_path):
    treebank, model_path, _ = train_small(tmp_path, repeat=1, epochs="1")
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(treebank), "--model", str(model_path), "-o",
                                  str(treebank)])
    assert result.exit_code == 1 and "refusing to overwrite" in result.output
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tThe\t_\tDET\tDT\t_\t0\troot\t_\n\n")  # nine columns
    result = runner.invoke(main, ["predict", str(bad), "--model", str(model_path)])
    assert result.exit_code == 1 and f"{bad}:1:" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["predict", str(treebank), "--model", str(tmp_path / "no.pt")])
    assert result.exit_code == 1 and "no tagger model" in result.output
    result = runner.invoke(main, ["evaluate", str(treebank), "--model", str(model_path),
                                  "--pred", str(treebank)])
    assert result.exit_code == 1 and "not both" in result.output


def test_cli_resume_continues_an_interrupted_run(tmp_path):
    treebank = write_treebank(tmp_path / "t.conllu", repeat=2)
    common = ["train", "--train", str(treebank), "--dev", str(treebank), "--hidden", "8",
              "--out", str(tmp_path / "m.pt"), "--quiet", "--device", "cpu"]
    runner = CliRunner()
    first = runner.invoke(main, common + ["--epochs", "2"])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(main, common + ["--epochs", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch 2" in resumed.output
    assert "epoch 3:" in resumed.output and "epoch 1:" not in resumed.output
    state = torch.load(str(tmp_path / "m.pt") + ".resume", weights_only=True)
    assert state["epoch"] == 3 and "optimizer" in state


def test_training_is_deterministic_under_seed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = train_small(tmp_path / "a", epochs="2", repeat=2)
    second = train_small(tmp_path / "b", epochs="2", repeat=2)
    one, _ = load_model(first[1])
    two, _ = load_model(second[1])
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_both_columns_predict_pairs_seen_in_training(tmp_path):
    """With UPOS and XPOS, each word gets the best pair seen in training: the columns' own best
    tags where they form such a pair, another seen pair where they do not."""
    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    vocabs = build_vocabs(sentences, ["upos", "xpos"], min_word_freq=1)
    seen = {(u, x) for s in sentences for u, x in zip(s.upos, s.xpos, strict=True)}
    assert {tuple(p.split(PAIR_SEPARATOR)) for p in vocabs[TAG_PAIRS].itos} == seen
    assert TAG_PAIRS not in build_vocabs(sentences, ["xpos"])
    torch.manual_seed(0)
    model = TaggerModel(TaggerConfig(
        n_words=len(vocabs["words"]), feature_sizes=[len(vocabs[n]) for n in FEATURE_NAMES],
        tag_sizes={c: len(vocabs[c]) for c in ("upos", "xpos")}, hidden=8))
    for layer in model.outputs.values():  # arbitrary strong preferences per column
        torch.nn.init.normal_(layer.weight, std=3.0)
    inputs = [encode_inputs(s, vocabs) for s in sentences]
    alone = model.predict(inputs)
    joint = model.predict(inputs, allowed_pairs(vocabs, "cpu"))
    changed = 0
    for i in range(len(sentences)):
        for u_alone, x_alone, u, x in zip(alone["upos"][i], alone["xpos"][i], joint["upos"][i],
                                          joint["xpos"][i], strict=True):
            pair = (vocabs["upos"].itos[u], vocabs["xpos"].itos[x])
            assert pair in seen
            if (vocabs["upos"].itos[u_alone], vocabs["xpos"].itos[x_alone]) in seen:
                assert (u, x) == (u_alone, x_alone)
            else:
                changed += 1
    assert changed > 0  # the columns alone did form unseen pairs here


def test_shipped_default_model_tags_ewt_dev(data_dir):
    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped tagger model in this checkout")
    model, vocabs = load_model(DEFAULT_MODEL)
    gold = [s for s in conll.read(data_dir / "ud_english_ewt" / "en_ewt-ud-dev.conllu")][:300]
    predicted = tag_sentences(model, [s.copy() for s in gold], vocabs)
    score = TagScore(model.config.columns)
    for g, p in zip(gold, predicted, strict=True):
        score.add(g, p)
    assert score.accuracy("upos") > 90.0 and score.accuracy("xpos") > 90.0
    pairs = set(vocabs[TAG_PAIRS].itos)
    assert all(f"{u}{PAIR_SEPARATOR}{x}" in pairs for s in predicted
               for u, x in zip(s.upos, s.xpos, strict=True))


def train_with_flags(tmp_path, flag_sets, *options):
    """The state dicts of taggers trained by the CLI on one small treebank, one per flag set."""
    treebank = write_treebank(tmp_path / "t.conllu", repeat=2)
    states = []
    for index, flags in enumerate(flag_sets):
        out = tmp_path / f"m{index}.pt"
        result = CliRunner().invoke(main, ["train", "--train", str(treebank), "--dev",
                                           str(treebank), "--hidden", "8", "--epochs", "2",
                                           "--out", str(out), "--quiet", "--device", "cpu",
                                           *options, *flags])
        assert result.exit_code == 0, result.output
        states.append(load_model(out)[0].state_dict())
    return states


def test_cli_sparse_update_with_adagrad_trains_the_same_model(tmp_path):
    """--sparse-update skips the rows meProp did not touch; for AdaGrad that changes nothing
    (up to rounding), in the BiLSTM's gate rows and the output layer alike."""
    states = train_with_flags(tmp_path, [[], ["--sparse-update"]], "--k", "2", "--optimizer",
                              "adagrad")
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, atol=1e-5, rtol=1e-5, msg=name)


def test_cli_persistent_grad_trains_the_same_model(tmp_path):
    """--persistent-grad changes how gradients are stored, not what they are."""
    states = train_with_flags(tmp_path, [[], ["--persistent-grad"]])
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
