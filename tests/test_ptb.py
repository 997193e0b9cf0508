"""data.ptb: Penn Treebank trees to Penn2Malt-style dependencies (CoNLL-X)."""

import pytest

from data import conll, ptb
from data.errors import DataError

# wsj_0001, sentence 1, as in the treebank (no traces). Heads as in NLTK's dependency_treebank.
PIERRE = """\
( (S
    (NP-SBJ
      (NP (NNP Pierre) (NNP Vinken) )
      (, ,)
      (ADJP
        (NP (CD 61) (NNS years) )
        (JJ old) )
      (, ,) )
    (VP (MD will)
      (VP (VB join)
        (NP (DT the) (NN board) )
        (PP-CLR (IN as)
          (NP (DT a) (JJ nonexecutive) (NN director) ))
        (NP-TMP (NNP Nov.) (CD 29) )))
    (. .) ))
"""
PIERRE_HEADS = [2, 8, 2, 5, 6, 2, 2, 0, 8, 11, 9, 9, 15, 15, 12, 9, 16, 8]

# A passive with a trace object: the NP holding only (-NONE- *-1) must disappear entirely,
# and the co-indexed, function-tagged labels lose their tags.
FOUNDED = """\
( (S
    (NP-SBJ-1 (DT The) (NN company) )
    (VP (VBD was)
      (VP (VBN founded)
        (NP (-NONE- *-1) )
        (PP-TMP (IN in) (NP (CD 1990) ))))
    (. .) ))
"""
FOUNDED_HEADS = [2, 3, 0, 3, 4, 5, 3]

# A relative clause whose subject is a trace (an S left with its VP only), a gapping index
# (NP=2) and a parenthesis: the PRN rule's bare direction must skip the brackets.
SHARES = """\
( (S
    (NP-SBJ
      (NP (DT the) (NNS shares) )
      (SBAR
        (WHNP-1 (WDT that) )
        (S
          (NP-SBJ (-NONE- *T*-1) )
          (VP (VBD rose) ))))
    (VP (VBD fell)
      (NP-EXT=2 (CD 5) (NN %) )
      (PRN (-LRB- -LRB-) (NP (NNP Tuesday) ) (-RRB- -RRB-) ))
    (. .) ))
"""
# that heads the SBAR (WHNP comes first in its rule); % heads "5 %"; Tuesday heads the PRN.
SHARES_HEADS = [2, 5, 2, 3, 0, 7, 5, 9, 5, 9, 5]


def write_mrg(folder, name, *trees):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(trees), encoding="utf-8")
    return path


def one_word_tree(word):
    return f"( (S (NP-SBJ (NNP {word}) ) (VP (VBD left) ) (. .) ))\n"


@pytest.fixture
def sample_folder(tmp_path):
    folder = tmp_path / "combined"
    write_mrg(folder, "wsj_0001.mrg", PIERRE, FOUNDED)
    write_mrg(folder, "wsj_0002.mrg", SHARES)
    return folder


def test_heads_of_known_trees(sample_folder):
    trees = list(ptb.read_trees(sample_folder))
    assert len(trees) == 3
    heads = [ptb.tree_to_dependencies(tree)[2] for tree in trees]
    assert heads == [PIERRE_HEADS, FOUNDED_HEADS, SHARES_HEADS]


def test_dependencies_have_words_tags_and_labels(sample_folder):
    tree = list(ptb.read_trees(sample_folder))[1]
    forms, tags, heads, deprels = ptb.tree_to_dependencies(tree)
    assert forms == ["The", "company", "was", "founded", "in", "1990", "."]
    assert tags == ["DT", "NN", "VBD", "VBN", "IN", "CD", "."]
    assert deprels == ["dep", "dep", "root", "dep", "dep", "dep", "dep"]


@pytest.mark.parametrize("label, expected", [
    ("NP-SBJ-1", "NP"), ("NP=2", "NP"), ("NP-EXT=2", "NP"), ("PP-LOC-CLR", "PP"),
    ("WHNP-1", "WHNP"), ("S", "S"), ("ADVP|PRT", "ADVP"),
    ("-LRB-", "-LRB-"), ("-RRB-", "-RRB-"), ("-NONE-", "-NONE-"),
])
def test_strip_label(label, expected):
    assert ptb.strip_label(label) == expected


def test_cleaning_removes_traces_empty_constituents_and_tags(sample_folder):
    shares = list(ptb.read_trees(sample_folder))[2]
    labels = {subtree.label() for subtree in shares.subtrees()}
    assert "-NONE-" not in labels
    assert labels >= {"S", "NP", "SBAR", "WHNP", "VP", "PRN", "-LRB-", "-RRB-"}
    assert all("-" not in label[1:-1] and "=" not in label for label in labels)
    relative = shares[0][1][1]  # the S under SBAR: its empty subject is gone
    assert relative.label() == "S" and [child.label() for child in relative] == ["VP"]
    assert shares.leaves() == ["the", "shares", "that", "rose", "fell", "5", "%", "-LRB-",
                               "Tuesday", "-RRB-", "."]


def test_convert_builds_conll_x_sentences(sample_folder, tmp_path):
    sentences = list(ptb.convert(sample_folder))
    assert [len(sentence) for sentence in sentences] == [18, 7, 11]
    founded = sentences[1]
    assert founded.lines[0] == "1\tThe\t_\tDT\tDT\t_\t2\tdep\t_\t_\n"
    assert founded.lines[2] == "3\twas\t_\tVBD\tVBD\t_\t0\troot\t_\t_\n"
    assert founded.lines[-1] == "\n"
    assert founded.heads == FOUNDED_HEADS and founded.xpos == founded.upos
    out = tmp_path / "out.conllx"
    conll.write(sentences, out)
    again = list(conll.read(out))
    assert [sentence.heads for sentence in again] == [PIERRE_HEADS, FOUNDED_HEADS, SHARES_HEADS]
    assert out.read_text(encoding="utf-8") == conll.to_string(sentences)


def test_sample_split_by_file_number(tmp_path):
    folder = tmp_path / "sample"
    for number in (1, 159, 160, 179, 180, 199):
        write_mrg(folder, f"wsj_{number:04d}.mrg", one_word_tree(f"w{number}"))

    def words(split, task="parse"):
        return [tree.leaves()[0] for tree in ptb.read_trees(folder, split=split, task=task)]

    assert words(None) == ["w1", "w159", "w160", "w179", "w180", "w199"]
    assert words("train") == ["w1", "w159"]
    assert words("dev") == ["w160", "w179"]
    assert words("test") == ["w180", "w199"]
    assert words("test", task="tag") == words("test")


def test_wsj_split_by_section(tmp_path):
    root = tmp_path / "ldc"
    for number in (1, 231, 1901, 2201, 2301, 2401):
        write_mrg(root / "wsj" / f"{number // 100:02d}", f"wsj_{number:04d}.mrg",
                  one_word_tree(f"w{number}"))

    def words(split, task, source=root):
        return [tree.leaves()[0] for tree in ptb.read_trees(source, split=split, task=task)]

    assert words("train", "parse") == ["w231", "w1901"]
    assert words("dev", "parse") == ["w2201"]
    assert words("test", "parse") == ["w2301"]
    assert words("train", "tag") == ["w1", "w231"]
    assert words("dev", "tag") == ["w1901"]
    assert words("test", "tag") == ["w2201", "w2301", "w2401"]
    # The folder of sections itself works the same.
    assert words("test", "tag", source=root / "wsj") == ["w2201", "w2301", "w2401"]


def test_unknown_split_or_task(sample_folder):
    with pytest.raises(DataError, match="split"):
        list(ptb.read_trees(sample_folder, split="validation"))
    with pytest.raises(DataError, match="task"):
        list(ptb.read_trees(sample_folder, split="train", task="chunk"))


def test_missing_source_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "treebank.zip"
    with pytest.raises(DataError, match=str(missing)):
        list(ptb.convert(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no wsj_XXXX.mrg"):
        list(ptb.read_trees(empty))


def test_unreadable_tree_names_the_file(tmp_path):
    folder = tmp_path / "broken"
    write_mrg(folder, "wsj_0001.mrg", PIERRE)
    write_mrg(folder, "wsj_0002.mrg", "( (S (NP (DT the) (NN cat) (VP (VBD sat) )\n")
    with pytest.raises(DataError, match="wsj_0002.mrg: unreadable tree"):
        list(ptb.read_trees(folder))
    write_mrg(folder, "wsj_0002.mrg", "( (S (NP the (NN cat) ) (. .) ))\n")
    with pytest.raises(DataError, match="wsj_0002.mrg: sentence 1: .*part-of-speech"):
        list(ptb.read_trees(folder))


def test_a_tree_of_traces_only_is_an_error(tmp_path):
    folder = write_mrg(tmp_path / "traces", "wsj_0001.mrg",
                       "( (S (NP-SBJ (-NONE- *) ) (VP (-NONE- *?*) ) ))\n").parent
    with pytest.raises(DataError, match="sentence 1 has no words"):
        list(ptb.read_trees(folder))


# --- real data (skipped without MEPROP_DATA) ------------------------------------------------

def nltk_corpora(data_dir):
    corpora = data_dir / "nltk_data" / "corpora"
    return corpora / "treebank.zip", corpora / "dependency_treebank.zip"


def test_sample_has_3914_sentences(data_dir):
    treebank, _ = nltk_corpora(data_dir)
    assert sum(1 for _ in ptb.read_trees(treebank)) == 3914


def test_sample_agrees_with_nltk_dependency_treebank(data_dir):
    treebank, dependencies = nltk_corpora(data_dir)
    result = ptb.agreement(treebank, dependencies, max_files=20)
    assert result["token_mismatches"] == 0 and result["missing_sentences"] == 0
    assert result["sentences"] > 200 and result["words"] > 5000
    assert result["head_agreement"] >= 0.99
