"""Parser end to end: scorer, decoding always gives trees, CLI train/predict/evaluate."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from data import conll
from parser.cli import main
from parser.data import build_vocabs, make_examples
from parser.decode import parse_sentences
from parser.model import ParserConfig, ParserModel
from parser.scorer import AttachmentScore
from parser.trainer import load_model

SENTENCES = [
    # (form, upos, xpos, head, deprel)
    [("The", "DET", "DT", 2, "det"), ("dog", "NOUN", "NN", 3, "nsubj"),
     ("barks", "VERB", "VBZ", 0, "root"), (".", "PUNCT", ".", 3, "punct")],
    [("A", "DET", "DT", 2, "det"), ("cat", "NOUN", "NN", 3, "nsubj"),
     ("sees", "VERB", "VBZ", 0, "root"), ("the", "DET", "DT", 5, "det"),
     ("bird", "NOUN", "NN", 3, "obj"), (".", "PUNCT", ".", 3, "punct")],
    [("Birds", "NOUN", "NNS", 2, "nsubj"), ("fly", "VERB", "VBP", 0, "root"),
     ("south", "ADV", "RB", 2, "advmod")],
    [("She", "PRON", "PRP", 2, "nsubj"), ("gave", "VERB", "VBD", 0, "root"),
     ("him", "PRON", "PRP", 2, "iobj"), ("a", "DET", "DT", 5, "det"),
     ("book", "NOUN", "NN", 2, "obj"), ("in", "ADP", "IN", 7, "case"),
     ("Paris", "PROPN", "NNP", 2, "obl:loc")],
]


def conllu_text(sentences, repeat=1):
    blocks = []
    for number, words in enumerate(sentences * repeat, start=1):
        lines = [f"# sent_id = {number}"]
        for index, (form, upos, xpos, head, deprel) in enumerate(words, start=1):
            lines.append(f"{index}\t{form}\t_\t{upos}\t{xpos}\t_\t{head}\t{deprel}\t_\t_")
        blocks.append("\n".join(lines) + "\n\n")
    return "".join(blocks)


def write_treebank(path, repeat=1):
    path.write_text(conllu_text(SENTENCES, repeat), encoding="utf-8")
    return path


def test_attachment_score(tmp_path):
    gold = list(conll.read(write_treebank(tmp_path / "gold.conllu")))
    predicted = [s.copy() for s in gold]
    predicted[0].heads[0] = 3  # wrong head on a word
    predicted[0].deprels[1] = "obj"  # right head, wrong label
    predicted[3].deprels[6] = "obl"  # subtype dropped: still right for LAS
    score = AttachmentScore()
    for g, p in zip(gold, predicted, strict=True):
        score.add(g, p)
    assert score.words == 20
    assert score.uas == 100 * 19 / 20 and score.las == 100 * 18 / 20
    assert score.uas_no_punct == 100 * 17 / 18  # two PUNCT words excluded


def test_random_model_always_outputs_trees(tmp_path):
    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    vocabs = build_vocabs(sentences, "xpos", min_word_freq=1)
    torch.manual_seed(0)
    model = ParserModel(ParserConfig(len(vocabs["words"]), len(vocabs["tags"]),
                                     len(vocabs["labels"]), hidden=16, layers=1, k=4))
    torch.nn.init.normal_(model.output.weight, std=5.0)  # strong, arbitrary preferences
    parsed = parse_sentences(model, [s.copy() for s in sentences] * 5, vocabs, batch_size=3)
    for sentence in parsed:
        assert conll.tree_problem(sentence.heads) is None
        assert sentence.heads.count(0) == 1
        assert all(d in vocabs["labels"].itos[1:] for d in sentence.deprels)


def test_make_examples_counts_two_transitions_per_word(tmp_path):
    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    vocabs = build_vocabs(sentences, "upos", min_word_freq=1)
    features, transitions, skipped = make_examples(sentences, vocabs, "upos")
    assert skipped == 0
    assert features.shape == (2 * 20, 48) and transitions.shape == (40,)


def test_cli_train_predict_evaluate_round_trip(tmp_path):
    treebank = write_treebank(tmp_path / "train.conllu", repeat=10)
    model_path = tmp_path / "model.pt"
    metrics_path = tmp_path / "train.json"
    runner = CliRunner()
    result = runner.invoke(main, [
        "train", "--train", str(treebank), "--dev", str(treebank), "--epochs", "20",
        "--batch-size", "50", "--hidden", "64", "--layers", "1", "--k", "8", "--dropout", "0",
        "--lr", "0.01", "--out", str(model_path), "--metrics-json", str(metrics_path),
        "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_path.read_text())
    assert metrics["dev_uas"] > 90.0  # the dev set is the training set: it must be learnt
    for key in ("dev_uas", "dev_las", "dev_uas_no_punct", "best_epoch", "train_seconds",
                "backprop_seconds"):
        assert key in metrics
    model, vocabs = load_model(model_path)  # weights_only load
    assert model.config.k == 8 and model.config.hidden == 64

    predicted_path = tmp_path / "pred.conllu"
    unparsed = tmp_path / "unparsed.conllu"
    unparsed.write_text(conllu_text(SENTENCES).replace("\t3\tnsubj\t", "\t_\t_\t"))
    result = runner.invoke(main, ["predict", str(unparsed), "--model", str(model_path), "-o",
                                  str(predicted_path)])
    assert result.exit_code == 0, result.output
    predicted = list(conll.read(predicted_path))
    original = list(conll.read(unparsed))
    for before, after in zip(original, predicted, strict=True):
        assert before.forms == after.forms and before.xpos == after.xpos
        assert None not in after.heads
    assert "# sent_id = 4" in predicted_path.read_text()

    result = runner.invoke(main, ["evaluate", str(treebank), "--model", str(model_path),
                                  "--beam", "1", "--metrics-json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert abs(scores["uas"] - metrics["dev_uas"]) < 1e-9  # training scores dev greedily

    result = runner.invoke(main, ["evaluate", str(treebank), "--pred", str(treebank)])
    assert json.loads(result.output)["las"] == 100.0


def test_cli_evaluate_refuses_a_gold_file_without_heads(tmp_path):
    """Unparsed text would otherwise score 0 UAS, as if every head were wrong."""
    plain = tmp_path / "plain.txt"
    plain.write_text("The dog barks .\n")
    unparsed = tmp_path / "unparsed.conllu"
    unparsed.write_text(conllu_text(SENTENCES).replace("\t3\tnsubj\t", "\t_\t_\t"))
    runner = CliRunner()
    for gold, where in ((plain, f"{plain}:1"), (unparsed, f"{unparsed}:")):
        result = runner.invoke(main, ["evaluate", str(gold), "--pred", str(gold)])
        assert result.exit_code != 0
        assert "has no gold head for word" in result.output and where in result.output
        assert "uas" not in result.output


def test_cli_train_refuses_unparsed_training_or_dev_files_before_training(tmp_path):
    treebank = write_treebank(tmp_path / "parsed.conllu")
    unparsed = tmp_path / "unparsed.conllu"
    unparsed.write_text(conllu_text(SENTENCES).replace("\t3\tnsubj\t", "\t_\t_\t"))
    no_heads = tmp_path / "no_heads.conllu"
    no_heads.write_text("\n".join(
        "\t".join(cols[:6] + ["_", "_"] + cols[8:]) if len(cols) == 10 else line
        for line in conllu_text(SENTENCES).splitlines() for cols in [line.split("\t")]) + "\n")
    runner = CliRunner()
    common = ["--epochs", "1", "--hidden", "8", "--device", "cpu", "--quiet",
              "--out", str(tmp_path / "m.pt")]
    result = runner.invoke(main, ["train", "--train", str(treebank), "--dev", str(unparsed),
                                  *common])
    assert result.exit_code == 1
    assert f"{unparsed}:1: a dev sentence without a head for word 2" in result.output
    result = runner.invoke(main, ["train", "--train", str(no_heads), "--dev", str(treebank),
                                  *common])
    assert result.exit_code == 1 and "no training sentence has its heads" in result.output
    assert not (tmp_path / "m.pt").exists()


def test_cli_names_a_model_file_that_is_not_a_parser(tmp_path):
    from tagger.cli import DEFAULT_MODEL as TAGGER_MODEL

    plain = tmp_path / "plain.txt"
    plain.write_text("The dog barks .\n")
    not_torch = tmp_path / "notes.pt"
    not_torch.write_text("not a checkpoint\n")
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(plain), "--model", str(TAGGER_MODEL)])
    assert result.exit_code == 1 and f"{TAGGER_MODEL} is not a parser checkpoint" in result.output
    result = runner.invoke(main, ["predict", str(plain), "--model", str(not_torch)])
    assert result.exit_code == 1 and "not a readable meprop checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1  # not torch's paragraph of advice


def test_cli_predict_refuses_to_overwrite_input_and_reports_bad_files(tmp_path):
    treebank = write_treebank(tmp_path / "t.conllu")
    model_path = tmp_path / "m.pt"
    runner = CliRunner()
    runner.invoke(main, ["train", "--train", str(treebank), "--dev", str(treebank), "--epochs",
                         "1", "--hidden", "8", "--layers", "1", "--out", str(model_path),
                         "--quiet", "--device", "cpu"])
    result = runner.invoke(main, ["predict", str(treebank), "--model", str(model_path), "-o",
                                  str(treebank)])
    assert result.exit_code == 1 and "refusing to overwrite" in result.output
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tThe\t_\tDET\tDT\t_\tx\tdet\t_\t_\n\n")
    result = runner.invoke(main, ["predict", str(bad), "--model", str(model_path)])
    assert result.exit_code == 1
    assert f"{bad}:1:" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["predict", str(treebank), "--model", str(tmp_path / "no.pt")])
    assert result.exit_code == 1 and "no parser model" in result.output


def test_precomputed_first_layer_gives_the_same_scores(tmp_path):
    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    vocabs = build_vocabs(sentences, "xpos", min_word_freq=1)
    torch.manual_seed(1)
    for layers, activation in ((1, "cube"), (2, "relu")):
        model = ParserModel(ParserConfig(len(vocabs["words"]), len(vocabs["tags"]),
                                         len(vocabs["labels"]), hidden=12, layers=layers,
                                         activation=activation)).eval()
        features, _, _ = make_examples(sentences, vocabs, "xpos")
        batch_words = torch.unique(torch.cat([features[:, :18].flatten(), torch.tensor([0])]))
        table = model.precompute(batch_words)
        torch.testing.assert_close(model.score_precomputed(table, features), model(features),
                                   rtol=1e-4, atol=1e-4)


def test_shipped_default_model_parses_without_model_option(tmp_path):
    from parser.cli import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        import pytest

        pytest.skip("no shipped parser model in this checkout")
    unparsed = tmp_path / "in.conllu"
    unparsed.write_text(conllu_text(SENTENCES).replace("\t3\tnsubj\t", "\t_\t_\t"))
    result = CliRunner().invoke(main, ["predict", str(unparsed), "-o", str(tmp_path / "o.conllu")])
    assert result.exit_code == 0, result.output
    parsed = list(conll.read(tmp_path / "o.conllu"))  # the reader validates every tree
    assert [len(s) for s in parsed] == [4, 6, 3, 7]
    assert parsed[0].heads[2] == 0  # "barks" is the root of "The dog barks ."


def test_cli_resume_continues_an_interrupted_run(tmp_path):
    treebank = write_treebank(tmp_path / "t.conllu", repeat=3)
    model_path = tmp_path / "m.pt"
    common = ["train", "--train", str(treebank), "--dev", str(treebank), "--hidden", "16",
              "--layers", "1", "--out", str(model_path), "--quiet", "--device", "cpu"]
    runner = CliRunner()
    first = runner.invoke(main, common + ["--epochs", "2"])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(main, common + ["--epochs", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch 2" in resumed.output
    assert "epoch 3:" in resumed.output and "epoch 1:" not in resumed.output
    state = torch.load(str(model_path) + ".resume", weights_only=True)
    assert state["epoch"] == 3 and "optimizer" in state


def test_pos_column_both_joins_upos_and_xpos(tmp_path):
    from parser.data import has_missing_tags, sentence_tags

    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    assert sentence_tags(sentences[0], "both") == ["DET|DT", "NOUN|NN", "VERB|VBZ", "PUNCT|."]
    vocabs = build_vocabs(sentences, "both", min_word_freq=1)
    assert "PROPN|NNP" in vocabs["tags"] and "NN" not in vocabs["tags"]
    assert not has_missing_tags(sentences[0], "both")
    sentences[0].xpos[1] = "_"
    assert has_missing_tags(sentences[0], "both") and not has_missing_tags(sentences[0], "upos")


def test_punctuation_from_ud_or_ptb_tags():
    from parser.scorer import is_punct

    assert is_punct("PUNCT", ",") and not is_punct("NOUN", "NN")
    assert is_punct("_", ",") and is_punct(",", ",")  # CoNLL-X: CPOSTAG is the PTB tag
    assert is_punct("-LRB-", "-LRB-") and not is_punct("NN", "NN")
    assert not is_punct("SYM", "$")  # a UD tag decides, even where the PTB tag is punctuation


def test_cli_persistent_grad_trains_the_same_model(tmp_path):
    """--persistent-grad changes how gradients are stored, not what they are."""
    treebank = write_treebank(tmp_path / "t.conllu", repeat=3)
    states = []
    for flag in ([], ["--persistent-grad"]):
        out = tmp_path / f"m{len(flag)}.pt"
        result = CliRunner().invoke(main, ["train", "--train", str(treebank), "--dev",
                                           str(treebank), "--hidden", "16", "--layers", "1",
                                           "--k", "4", "--epochs", "2", "--batch-size", "8",
                                           "--out",
                                           str(out), "--quiet", "--device", "cpu", *flag])
        assert result.exit_code == 0, result.output
        states.append(torch.load(out, weights_only=True)["model"])
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name


def test_cli_sparse_update_reaches_the_optimizer(tmp_path):
    """--sparse-update trains (lazy Adam on the rows meProp touched: tests/test_optim.py) and
    so gives another model than the dense update from the same seed."""
    treebank = write_treebank(tmp_path / "t.conllu", repeat=3)
    states = []
    for flag in (["--persistent-grad"], ["--sparse-update"]):
        out = tmp_path / f"m{flag[0]}.pt"
        result = CliRunner().invoke(main, ["train", "--train", str(treebank), "--dev",
                                           str(treebank), "--hidden", "64", "--layers", "1",
                                           "--k", "2", "--epochs", "2", "--batch-size", "4",
                                           "--out", str(out), "--quiet", "--device", "cpu",
                                           *flag])
        assert result.exit_code == 0, result.output
        states.append(torch.load(out, weights_only=True)["model"])
    hidden = "hidden_layers.0.weight"
    assert not torch.equal(states[0][hidden], states[1][hidden])
    assert torch.isfinite(states[1][hidden]).all()


def test_word_dropout_replaces_rare_words_only(tmp_path):
    from parser.data import word_counts
    from parser.trainer import word_dropout

    sentences = list(conll.read(write_treebank(tmp_path / "t.conllu")))
    vocabs = build_vocabs(sentences, "xpos", min_word_freq=1)
    counts = word_counts(sentences, vocabs["words"])
    words = vocabs["words"]
    assert counts[words.index("the")] == 2 and counts[words.index("birds")] == 1
    assert torch.isinf(counts[:3]).all()  # NULL, UNK and ROOT are never dropped
    torch.manual_seed(0)
    transform = word_dropout(counts, 1.0, words.unk_index)
    features = torch.zeros(4000, 48, dtype=torch.long)
    features[:, :18] = words.index("birds")  # seen once: dropped w.p. 1/2
    features[:2000, 0] = words.index("the")  # seen twice: w.p. 1/3
    features[:, 18:] = 7  # tags and labels are never touched
    dropped = transform(features)
    assert torch.equal(dropped[:, 18:], features[:, 18:])
    rate_rare = (dropped[:, 1:18] == words.unk_index).float().mean().item()
    rate_the = (dropped[:2000, 0] == words.unk_index).float().mean().item()
    assert abs(rate_rare - 0.5) < 0.03 and abs(rate_the - 1 / 3) < 0.03
    assert set(dropped[:, 1:18].unique().tolist()) == {words.index("birds"), words.unk_index}


def test_tag_dropout_hides_real_tags_only():
    from parser.trainer import tag_dropout

    torch.manual_seed(0)
    features = torch.arange(48).repeat(5000, 1)  # words 0-17, tags 18-35, labels 36-47
    features[:, 18] = 0  # NULL tag (absent item): never dropped
    features[:, 19] = 2  # ROOT's tag: never dropped
    dropped = tag_dropout(0.25, unk_id=1, first_tag_id=3)(features)
    assert torch.equal(dropped[:, :20], features[:, :20])
    assert torch.equal(dropped[:, 36:], features[:, 36:])
    real = dropped[:, 20:36]
    assert abs((real == 1).float().mean().item() - 0.25) < 0.02
    assert torch.equal(real[real != 1], features[:, 20:36][real != 1])
    assert (tag_dropout(1.0, 1, 3)(features)[:, 20:36] == 1).all()


def _retagged(sentences, tag_map):
    return [[(form, upos, tag_map.get(xpos, xpos), head, deprel)
             for form, upos, xpos, head, deprel in words] for words in sentences]


def test_predicted_tags_replace_the_pos_columns_of_the_chosen_rows(tmp_path):
    from parser.trainer import mix_predicted_tags, predicted_tag_features

    gold = list(conll.read(write_treebank(tmp_path / "gold.conllu")))
    tagged_path = tmp_path / "tagged.conllu"
    tagged_path.write_text(conllu_text(_retagged(SENTENCES, {"NN": "NNS", "VBZ": "VBP"})))
    tagged = list(conll.read(tagged_path))
    vocabs = build_vocabs(gold, "xpos", 1)
    features, transitions, _ = make_examples(gold, vocabs, "xpos")
    predicted = predicted_tag_features(gold, tagged, vocabs, "xpos", transitions)
    assert predicted.shape == (len(features), 18)
    differs = (predicted != features[:, 18:36]).any(1)
    assert 0 < differs.sum() < len(features)  # configurations with an NN/VBZ word in view
    assert (predicted[differs] == vocabs["tags"].index("NNS")).any()

    assert torch.equal(mix_predicted_tags(features, predicted, 0.0, torch.Generator()), features)
    every = mix_predicted_tags(features, predicted, 1.0, torch.Generator())
    assert torch.equal(every[:, 18:36], predicted)
    assert torch.equal(every[:, :18], features[:, :18])
    assert torch.equal(every[:, 36:], features[:, 36:])
    many = features.repeat(50, 1)
    half = mix_predicted_tags(many, predicted.repeat(50, 1), 0.5,
                              torch.Generator().manual_seed(0))
    took_predicted = (half[:, 18:36] != many[:, 18:36]).any(1)
    assert abs(took_predicted.float().mean().item() - 0.5 * differs.float().mean().item()) < 0.05
    # A row keeps either all its gold tags or all its predicted ones.
    gold_rows = (half[:, 18:36] == many[:, 18:36]).all(1)
    predicted_rows = (half[:, 18:36] == predicted.repeat(50, 1)).all(1)
    assert (gold_rows | predicted_rows).all()


def test_cli_train_tags_must_be_the_same_trees(tmp_path):
    treebank = write_treebank(tmp_path / "t.conllu", repeat=2)
    tagged = tmp_path / "tagged.conllu"
    tagged.write_text(conllu_text(_retagged(SENTENCES, {"NN": "NNS"}), repeat=2))
    common = ["train", "--train", str(treebank), "--dev", str(treebank), "--hidden", "16",
              "--layers", "1", "--k", "4", "--batch-size", "8", "--quiet", "--device", "cpu",
              "--epochs", "1"]
    runner = CliRunner()
    result = runner.invoke(main, common + ["--out", str(tmp_path / "m.pt"), "--train-tags",
                                           str(tagged), "--train-tags-rate", "0.5"])
    assert result.exit_code == 0, result.output
    assert "predicted POS for 50% of the transitions" in result.output
    moved = _retagged(SENTENCES, {})
    moved[1][5] = (".", "PUNCT", ".", 5, "punct")  # attached to "bird", not "sees"
    other = tmp_path / "other.conllu"
    other.write_text(conllu_text(moved, repeat=2))
    result = runner.invoke(main, common + ["--out", str(tmp_path / "n.pt"), "--train-tags",
                                           str(other)])
    assert result.exit_code != 0
    assert "sentence 2 differs in its words, heads or labels" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "n.pt").exists()


def test_cli_weight_average_is_saved_and_resumed(tmp_path):
    """--average keeps an EMA of the weights: the saved model is the average (not the last
    weights), and --resume restores it."""
    treebank = write_treebank(tmp_path / "t.conllu", repeat=3)
    out = tmp_path / "m.pt"
    common = ["train", "--train", str(treebank), "--dev", str(treebank), "--hidden", "16",
              "--layers", "1", "--k", "4", "--batch-size", "8", "--out", str(out), "--quiet",
              "--device", "cpu", "--average", "0.9", "--word-dropout", "0.25",
              "--tag-dropout", "0.1"]
    runner = CliRunner()
    result = runner.invoke(main, common + ["--epochs", "2"])
    assert result.exit_code == 0, result.output
    state = torch.load(str(out) + ".resume", weights_only=True)
    averaged = {name[len("module."):]: value for name, value in state["average"].items()
                if name.startswith("module.")}
    assert state["average"]["n_averaged"] > 1
    assert any(not torch.equal(value, averaged[name]) for name, value in state["model"].items())
    saved = torch.load(out, weights_only=True)["model"]
    if json.loads(result.output[result.output.index("{"):])["best_epoch"] == 2:
        for name, value in saved.items():
            assert torch.equal(value, averaged[name]), name
    resumed = runner.invoke(main, common + ["--epochs", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    after = torch.load(str(out) + ".resume", weights_only=True)["average"]["n_averaged"]
    assert after > state["average"]["n_averaged"]  # went on from the restored average


def _exhaustive_best(model, sentence, vocabs):
    """The highest-scoring complete parse by enumerating every legal transition sequence
    (the sum of log-softmax over legal transitions, as beam search scores it)."""
    from parser.data import encode_sentence
    from parser.features import extract
    from parser.transition import Configuration, TransitionSystem

    system = TransitionSystem(model.config.n_labels - 1)
    word_ids, tag_ids = encode_sentence(sentence, vocabs, model.config.pos_column)

    def search(config, score, greedy=False):
        if config.is_terminal():
            return score, config.heads[1:], config.labels[1:]
        features = torch.tensor([extract(config, word_ids, tag_ids)])
        shift_ok, left_ok, right_ok = system.legal(config)
        legal = torch.tensor([shift_ok] + [left_ok] * system.n_labels
                             + [right_ok] * system.n_labels)
        scores = model(features).masked_fill(~legal, float("-inf"))
        log_probs = torch.log_softmax(scores, dim=1)[0]
        best = None
        legal_transitions = torch.nonzero(torch.isfinite(log_probs)).flatten().tolist()
        if greedy:
            legal_transitions = [log_probs.argmax().item()]
        for transition in legal_transitions:
            child = copy.deepcopy(config)
            system.apply(child, transition)
            found = search(child, score + log_probs[transition].item(), greedy)
            best = found if best is None or found[0] > best[0] else best
        return best

    with torch.no_grad():
        model.eval()
        return search(Configuration(len(sentence)), 0.0), search(Configuration(len(sentence)),
                                                                0.0, greedy=True)


def test_wide_beam_finds_the_best_parse_and_beams_give_trees(tmp_path):
    """With a beam wider than the number of partial parses, beam search is exact: it returns
    the parse that exhaustive enumeration scores highest, and that parse's log-probability.
    Greedy decoding reports its own path's. Any beam gives valid trees."""
    from parser.decode import parse_log_probs

    path = tmp_path / "t.conllu"
    path.write_text(conllu_text([SENTENCES[2]] + [SENTENCES[0]]), encoding="utf-8")
    sentences = list(conll.read(path))
    vocabs = build_vocabs(sentences, "xpos", min_word_freq=1)
    for seed in range(3):
        torch.manual_seed(seed)
        model = ParserModel(ParserConfig(len(vocabs["words"]), len(vocabs["tags"]),
                                         len(vocabs["labels"]), hidden=16, layers=1, k=4))
        torch.nn.init.normal_(model.output.weight, std=2.0)
        for sentence in sentences:  # 3 and 4 words, 4 labels: at most a few thousand parses
            (score, heads, labels), (greedy_score, greedy_heads, _) = _exhaustive_best(
                model, sentence, vocabs)
            parsed = parse_sentences(model, [sentence.copy()], vocabs, beam=4096)[0]
            assert parsed.heads == heads
            assert parsed.deprels == [vocabs["labels"].itos[1 + label] for label in labels]
            # The log-probabilities the decoders report are those of the parses they return.
            copies = [sentence.copy(), sentence.copy()]
            assert parse_log_probs(model, copies[:1], vocabs, beam=4096) == pytest.approx(
                [score], abs=1e-4)
            assert parse_log_probs(model, copies[1:], vocabs) == pytest.approx(
                [greedy_score], abs=1e-4)
            assert copies[1].heads == greedy_heads and greedy_score <= score + 1e-6
        many = parse_sentences(model, [s.copy() for s in sentences] * 4, vocabs,
                               batch_size=3, beam=3)
        for sentence in many:
            assert conll.tree_problem(sentence.heads) is None and sentence.heads.count(0) == 1


def test_beam_one_is_greedy_and_beam_is_a_cli_option(tmp_path):
    treebank = write_treebank(tmp_path / "t.conllu", repeat=2)
    sentences = list(conll.read(treebank))
    vocabs = build_vocabs(sentences, "xpos", min_word_freq=1)
    torch.manual_seed(0)
    model = ParserModel(ParserConfig(len(vocabs["words"]), len(vocabs["tags"]),
                                     len(vocabs["labels"]), hidden=16, layers=1, k=4))
    greedy = parse_sentences(model, [s.copy() for s in sentences], vocabs)
    one = parse_sentences(model, [s.copy() for s in sentences], vocabs, beam=1)
    assert [s.heads for s in greedy] == [s.heads for s in one]
    model_path = tmp_path / "m.pt"
    runner = CliRunner()
    trained = runner.invoke(main, ["train", "--train", str(treebank), "--dev", str(treebank),
                                   "--hidden", "16", "--layers", "1", "--epochs", "2", "--out",
                                   str(model_path), "--quiet", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    outputs = []
    for command in (["evaluate", str(treebank)], ["predict", str(treebank)]):
        result = runner.invoke(main, command + ["--model", str(model_path), "--beam", "3"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert json.loads(outputs[0])["beam"] == 3  # the scores say how they were decoded
    bad = runner.invoke(main, ["evaluate", str(treebank), "--model", str(model_path), "--beam",
                               "0"])
    assert bad.exit_code != 0 and "--beam" in bad.output
