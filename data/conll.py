"""CoNLL-U and CoNLL-X files, read and written losslessly; plain text input for ``predict``.

Each :class:`Sentence` keeps every original line of its block (comments, multiword-token lines
``3-4``, empty nodes ``8.1``, blank lines, line terminators), so a file read and written unchanged
is byte-identical. A model fills ``upos``/``xpos``/``heads``/``deprels``; on writing, only word
lines whose values changed are rebuilt, and only in those columns. Field values are parsed with
the ``conllu`` library's parsers (IDs and heads).

Both formats have ten tab-separated columns, with the tags in columns 4 and 5 (CoNLL-U: UPOS,
XPOS; CoNLL-X: CPOSTAG, POSTAG). A file whose first content line has tab-separated columns is
read as CoNLL (and a column count other than ten is an error); anything else is plain text, one
sentence per line, tokens separated by spaces.
``-`` means standard input (or output).
"""

import copy
import io
import sys
from pathlib import Path

from conllu.exceptions import ParseException
from conllu.parser import parse_id_value, parse_int_value

from data.atomic import atomic_path
from data.errors import DataError

N_COLUMNS = 10
ID, FORM, LEMMA, UPOS, XPOS, FEATS, HEAD, DEPREL, DEPS, MISC = range(N_COLUMNS)
MISSING = "_"


class Sentence:
    """One sentence: word-level columns as lists, plus every original line of its block.

    Attributes (lists over the words; multiword-token lines and empty nodes excluded):
        forms, upos, xpos, deprels: strings (``"_"`` where the file has none);
        heads: ints, ``None`` where the file has ``_``.
    """

    def __init__(self, lines, word_rows, columns, source="<memory>", first_line=1):
        self.lines = lines  # raw lines with their terminators
        self.word_rows = word_rows  # index into ``lines`` of each word line
        self.forms = [cols[FORM] for cols in columns]
        self.upos = [cols[UPOS] for cols in columns]
        self.xpos = [cols[XPOS] for cols in columns]
        self.heads = [_parse_head(cols[HEAD]) for cols in columns]
        self.deprels = [cols[DEPREL] for cols in columns]
        self._original = self._editable()
        self.source, self.first_line = source, first_line

    @classmethod
    def from_tokens(cls, tokens, text=None, source="<memory>", first_line=1):
        """A sentence from plain tokens, as CoNLL-U lines with every other column ``_``;
        ``source`` and ``first_line``: where it was read, for messages."""
        lines = [f"# text = {text}\n"] if text else []
        word_rows, columns = [], []
        for index, form in enumerate(tokens, start=1):
            cols = [str(index), form] + [MISSING] * (N_COLUMNS - 2)
            word_rows.append(len(lines))
            lines.append("\t".join(cols) + "\n")
            columns.append(cols)
        lines.append("\n")
        return cls(lines, word_rows, columns, source=source, first_line=first_line)

    def __len__(self):
        return len(self.forms)

    def copy(self):
        """A copy whose columns can be filled without touching this sentence."""
        clone = copy.copy(self)
        clone.upos, clone.xpos = list(self.upos), list(self.xpos)
        clone.heads, clone.deprels = list(self.heads), list(self.deprels)
        return clone

    def _editable(self):
        return list(zip(self.upos, self.xpos, self.heads, self.deprels, strict=True))

    def to_text(self):
        """The sentence block as text: original lines, with changed columns rewritten."""
        changed = [
            i for i, (now, before) in enumerate(zip(self._editable(), self._original, strict=True))
            if now != before
        ]
        if not changed:
            return "".join(self.lines)
        lines = list(self.lines)
        for i in changed:
            row = self.word_rows[i]
            content, terminator = _split_terminator(lines[row])
            cols = content.split("\t")
            cols[UPOS], cols[XPOS], cols[DEPREL] = self.upos[i], self.xpos[i], self.deprels[i]
            cols[HEAD] = MISSING if self.heads[i] is None else str(self.heads[i])
            lines[row] = "\t".join(cols) + terminator
        return "".join(lines)


def _parse_head(value):
    return parse_int_value(value)  # validated when the line was read


def _split_terminator(raw):
    if raw.endswith("\r\n"):
        return raw[:-2], "\r\n"
    if raw.endswith("\n"):
        return raw[:-1], "\n"
    return raw, ""


def _open_binary(path):
    if str(path) == "-":
        return sys.stdin.buffer, "<stdin>"
    try:
        return open(path, "rb"), str(path)
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None


def _decoded_lines(handle, name):
    """``(line_number, raw_line)`` for each line, decoded as strict UTF-8."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{name}:{number}: bytes that are not UTF-8 ({error.reason} at "
                            f"byte {error.start})") from None


def _is_conll_line(content):
    # Plain text separates tokens by spaces; a tab means a CoNLL file (whose column count is
    # then checked, so a broken first line gets an error rather than a silent plain-text read).
    return "\t" in content


def read(path):
    """Yield the sentences of a CoNLL-U/CoNLL-X or plain-text file (``-``: standard input).

    Streams: one sentence block is held in memory at a time. Raises ``DataError`` naming the
    file and the 1-based line on malformed input.
    """
    handle, name = _open_binary(path)
    try:
        lines = _decoded_lines(handle, name)
        buffered = []
        for number, raw in lines:
            buffered.append((number, raw))
            content = _split_terminator(raw)[0]
            if content.strip() and not content.startswith("#"):
                break
        is_conll = bool(buffered) and _is_conll_line(_split_terminator(buffered[-1][1])[0])

        def all_lines():
            yield from buffered
            yield from lines

        if is_conll:
            yield from _read_conll(all_lines(), name)
        else:
            yield from _read_plain(all_lines(), name)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _read_plain(lines, name):
    for number, raw in lines:
        text = _split_terminator(raw)[0].strip()
        if text:
            yield Sentence.from_tokens(text.split(), text=text, source=name, first_line=number)


def _read_conll(lines, name):
    block = []  # (line_number, raw)
    seen_blank_after_content = False
    has_content = False
    for number, raw in lines:
        is_blank = not _split_terminator(raw)[0].strip()
        if not is_blank and seen_blank_after_content:
            yield _parse_block(block, name)
            block, seen_blank_after_content, has_content = [], False, False
        block.append((number, raw))
        if is_blank and has_content:
            seen_blank_after_content = True
        has_content = has_content or not is_blank
    if block:
        yield _parse_block(block, name)


def _parse_block(block, name):
    lines = [raw for _, raw in block]
    word_rows, columns = [], []
    last_empty_node = 0
    for row, (number, raw) in enumerate(block):
        content = _split_terminator(raw)[0]
        if not content.strip() or content.startswith("#"):
            continue
        cols = content.split("\t")
        if len(cols) != N_COLUMNS:
            raise DataError(f"{name}:{number}: expected {N_COLUMNS} tab-separated columns, "
                            f"found {len(cols)}")
        try:
            token_id = parse_id_value(cols[ID])
        except ParseException:
            raise DataError(f"{name}:{number}: {cols[ID]!r} is not a valid ID") from None
        expected = len(columns) + 1
        if isinstance(token_id, tuple):
            start, kind, end = token_id
            if kind == "-" and start != expected:
                raise DataError(f"{name}:{number}: multiword token {cols[ID]} out of order "
                                f"(next word is {expected})")
            if kind == "." and (start != expected - 1 or end <= last_empty_node):
                raise DataError(f"{name}:{number}: empty node {cols[ID]} out of order")
            last_empty_node = end if kind == "." else last_empty_node
            continue
        if token_id != expected:
            repeated = token_id is not None and 0 < token_id < expected
            problem = "duplicate" if repeated else "out-of-order"
            raise DataError(f"{name}:{number}: {problem} word id {cols[ID]} (expected {expected})")
        last_empty_node = 0
        try:
            parse_int_value(cols[HEAD])
        except ParseException:
            raise DataError(f"{name}:{number}: head {cols[HEAD]!r} is neither an integer nor "
                            "_") from None
        word_rows.append(row)
        columns.append(cols)
    sentence = Sentence(lines, word_rows, columns, source=name, first_line=block[0][0])
    _check_tree(sentence, [block[row][0] for row in word_rows], name)
    return sentence


def _check_tree(sentence, line_numbers, name):
    n_words = len(sentence)
    for head, number in zip(sentence.heads, line_numbers, strict=True):
        if head is not None and not 0 <= head <= n_words:
            raise DataError(f"{name}:{number}: head {head} out of range (sentence has "
                            f"{n_words} words)")
    if n_words == 0 or any(head is None for head in sentence.heads):
        return  # "_" means not parsed yet
    problem = tree_problem(sentence.heads)
    if problem is not None:
        message, word = problem
        line = line_numbers[word - 1] if word else sentence.first_line
        raise DataError(f"{name}:{line}: {message}")


def tree_problem(heads):
    """``None`` if ``heads`` (1-based, 0 = root) form a tree, else ``(message, word)``."""
    if 0 not in heads:
        return "sentence has no root (no word with head 0)", 0
    state = [0] * (len(heads) + 1)  # 0 unvisited, 1 on the current path, 2 reaches the root
    state[0] = 2
    for start in range(1, len(heads) + 1):
        path, word = [], start
        while state[word] == 0:
            state[word] = 1
            path.append(word)
            word = heads[word - 1]
        if state[word] == 1:
            return f"cycle in the heads through word {word}", word
        for visited in path:
            state[visited] = 2
    return None


def write(sentences, path):
    """Write sentences to ``path`` (``-``: standard output) atomically: temp file, then rename."""
    if str(path) == "-":
        _write_to(sentences, sys.stdout)
        sys.stdout.flush()
        return
    with atomic_path(Path(path)) as temporary, open(temporary, "w", encoding="utf-8",
                                                    newline="") as handle:
        _write_to(sentences, handle)


def _write_to(sentences, handle):
    for sentence in sentences:
        handle.write(sentence.to_text())


def to_string(sentences):
    buffer = io.StringIO()
    _write_to(sentences, buffer)
    return buffer.getvalue()
