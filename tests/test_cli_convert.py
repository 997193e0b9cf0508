"""meprop convert-ptb through CliRunner: output is valid CoNLL-X that the reader accepts."""

from click.testing import CliRunner

from data import conll
from meprop.cli import main


def test_convert_ptb_sample_dev_split(data_dir, tmp_path):
    out = tmp_path / "dev.conllx"
    result = CliRunner().invoke(main, ["convert-ptb", "ptb-sample", "-o", str(out), "--split",
                                       "dev", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    sentences = list(conll.read(out))  # the reader checks every tree (one root, no cycle)
    assert len(sentences) == 273
    assert all(s.heads.count(0) == 1 for s in sentences)
    assert {d for s in sentences for d in s.deprels} == {"dep", "root"}


def test_convert_ptb_missing_source_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["convert-ptb", str(tmp_path / "absent.zip"), "-o",
                                       str(tmp_path / "out.conllx")])
    assert result.exit_code == 1
    assert "no such file or folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.conllx").exists()
