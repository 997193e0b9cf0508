"""data.conll: lossless round trips, column filling, plain text, and every bad input."""

import filecmp
import io
import sys

import pytest

from data import DataError, conll

FIXTURE = (
    "# newdoc id = fixture\n"
    "# sent_id = 1\n"
    "# text = I don't know.\n"
    "1\tI\tI\tPRON\tPRP\tCase=Nom\t3\tnsubj\t3:nsubj\t_\n"
    "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t3:aux\t_\n"
    "3\tn't\tnot\tPART\tRB\t_\t0\troot\t0:root\tSpaceAfter=No\n"
    "3.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t3:conj\t_\n"
    "4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t3:punct\t_\n"
    "\n"
    "# sent_id = 2\n"
    "1\tGo\tgo\tVERB\tVB\t_\t0\troot\t0:root\t_\n"
    "2\thome\thome\tADV\tRB\t_\t1\tadvmod\t1:advmod\t_\n"
    "\n"
)


def write_file(tmp_path, text, name="in.conllu"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_read_columns_exclude_multiword_and_empty_nodes(tmp_path):
    first, second = conll.read(write_file(tmp_path, FIXTURE))
    assert first.forms == ["I", "do", "n't", "."]
    assert first.upos == ["PRON", "AUX", "PART", "PUNCT"]
    assert first.xpos == ["PRP", "VBP", "RB", "."]
    assert first.heads == [3, 3, 0, 3]
    assert first.deprels == ["nsubj", "aux", "root", "punct"]
    assert len(second) == 2


def test_round_trip_is_byte_identical(tmp_path):
    source = write_file(tmp_path, FIXTURE)
    conll.write(conll.read(source), tmp_path / "out.conllu")
    assert (tmp_path / "out.conllu").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("text", [
    FIXTURE.replace("\n", "\r\n"),  # Windows line ends
    FIXTURE[:-1],  # no final blank line
    FIXTURE + "\n\n",  # extra blank lines at the end
    "\n" + FIXTURE.replace("\n\n# sent_id = 2", "\n\n\n# sent_id = 2"),  # odd spacing
])
def test_round_trip_keeps_odd_layouts(tmp_path, text):
    source = write_file(tmp_path, text)
    assert conll.to_string(conll.read(source)) == text


def test_filled_columns_change_only_those_columns(tmp_path):
    sentences = list(conll.read(write_file(tmp_path, FIXTURE)))
    first = sentences[0]
    first.upos[1] = "VERB"
    first.heads[3] = 1
    first.deprels[3] = "obj"
    text = conll.to_string(sentences)
    expected = FIXTURE.replace("2\tdo\tdo\tAUX\tVBP", "2\tdo\tdo\tVERB\tVBP").replace(
        "4\t.\t.\tPUNCT\t.\t_\t3\tpunct", "4\t.\t.\tPUNCT\t.\t_\t1\tobj")
    assert text == expected


def test_ewt_round_trips_are_byte_identical(data_dir, tmp_path):
    for part, n_sentences in (("train", 12544), ("dev", 2001), ("test", 2077)):
        source = data_dir / "ud_english_ewt" / f"en_ewt-ud-{part}.conllu"
        sentences = list(conll.read(source))
        assert len(sentences) == n_sentences
        out = tmp_path / f"{part}.conllu"
        conll.write(sentences, out)
        assert filecmp.cmp(source, out, shallow=False), part


def test_conllx_file(tmp_path):
    text = "1\tThe\tthe\tDT\tDT\t_\t2\tNMOD\t_\t_\n2\tdog\tdog\tNN\tNN\t_\t0\tROOT\t_\t_\n\n"
    (sentence,) = conll.read(write_file(tmp_path, text, "in.conllx"))
    assert sentence.xpos == ["DT", "NN"] and sentence.heads == [2, 0]


def test_unparsed_heads_are_none(tmp_path):
    text = "1\tThe\t_\t_\t_\t_\t_\t_\t_\t_\n2\tdog\t_\t_\t_\t_\t_\t_\t_\t_\n\n"
    (sentence,) = conll.read(write_file(tmp_path, text))
    assert sentence.heads == [None, None]
    sentence.heads[:] = [2, 0]
    sentence.deprels[:] = ["det", "root"]
    assert conll.to_string([sentence]).splitlines()[0] == "1\tThe\t_\t_\t_\t_\t2\tdet\t_\t_"


def test_plain_text_input(tmp_path):
    sentences = list(conll.read(write_file(tmp_path, "The dog barks .\n\n  Go  home\n", "in.txt")))
    assert [s.forms for s in sentences] == [["The", "dog", "barks", "."], ["Go", "home"]]
    assert sentences[0].heads == [None] * 4
    assert [(s.source, s.first_line) for s in sentences] == [(str(tmp_path / "in.txt"), 1),
                                                             (str(tmp_path / "in.txt"), 3)]
    text = conll.to_string(sentences[1:])
    empty_columns = "\t_" * 8
    assert text == f"# text = Go  home\n1\tGo{empty_columns}\n2\thome{empty_columns}\n\n"


def test_standard_input(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(FIXTURE.encode())))
    assert [len(s) for s in conll.read("-")] == [4, 2]


BAD_INPUTS = [
    ("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\n", 1, "expected 10 tab-separated columns, found 9"),
    ("1\tI\tI\tPRON\tPRP\t_\tx\troot\t_\t_\n", 1, "neither an integer nor _"),
    ("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tgo\t_\t_\t_\t_\t5\tx\t_\t_\n", 2, "out of range"),
    ("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n1\tgo\t_\t_\t_\t_\t1\tx\t_\t_\n", 2,
     "duplicate word id 1"),
    ("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n3\tgo\t_\t_\t_\t_\t1\tx\t_\t_\n", 2, "out-of-order"),
    ("1\tI\t_\t_\t_\t_\t2\tx\t_\t_\n2\tgo\t_\t_\t_\t_\t1\tx\t_\t_\n", 0, "no root"),
    ("1\tI\t_\t_\t_\t_\t0\tx\t_\t_\n2\tgo\t_\t_\t_\t_\t3\tx\t_\t_\n3\ta\t_\t_\t_\t_\t2\tx\t_\t_\n",
     2, "cycle"),
    ("1\tI\t_\t_\t_\t_\t0\tx\t_\t_\n1.x\tgo\t_\t_\t_\t_\t_\t_\t_\t_\n", 2, "not a valid ID"),
]


@pytest.mark.parametrize("body,line,message", BAD_INPUTS)
def test_bad_input_names_file_and_line(tmp_path, body, line, message):
    path = write_file(tmp_path, "# sent_id = bad\n" + body + "\n")
    with pytest.raises(DataError, match=message) as error:
        list(conll.read(path))
    assert f"{path}:{line + 1}:" in str(error.value)


def test_bad_input_in_a_later_sentence_counts_lines_from_file_start(tmp_path):
    path = write_file(tmp_path, FIXTURE + "1\tx\t_\t_\t_\t_\tQ\t_\t_\t_\n\n")
    with pytest.raises(DataError, match=rf"{path}:15: head 'Q'"):
        list(conll.read(path))


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin1.conllu"
    path.write_bytes(FIXTURE.encode() + "1\tcaf\xe9\t_\t_\t_\t_\t0\troot\t_\t_\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}:15: bytes that are not UTF-8"):
        list(conll.read(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        list(conll.read(tmp_path / "absent.conllu"))


def test_failed_write_leaves_no_partial_output(tmp_path):
    good = write_file(tmp_path, FIXTURE + "1\tx\t_\t_\t_\t_\tQ\t_\t_\t_\n\n")
    out = tmp_path / "out.conllu"
    out.write_text("previous content")
    with pytest.raises(DataError):
        conll.write(conll.read(good), out)
    assert out.read_text() == "previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.conllu", "out.conllu"]


def test_tree_problem():
    assert conll.tree_problem([2, 0, 2]) is None
    assert conll.tree_problem([2, 1])[0].startswith("sentence has no root")
    assert "cycle" in conll.tree_problem([0, 3, 2])[0]
