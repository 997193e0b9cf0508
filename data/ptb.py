"""Penn Treebank constituency trees to dependencies (CoNLL-X), as Penn2Malt converts them.

Reads bracketed ``.mrg`` trees with nltk's ``BracketParseCorpusReader`` from either source:

* NLTK's WSJ sample (``treebank.zip``, or an unzipped copy of it): files ``wsj_0001`` ..
  ``wsj_0199`` in one folder, no section subfolders;
* a user's LDC WSJ copy: a folder holding ``wsj/00`` .. ``wsj/24`` (or ``00`` .. ``24``).

Each tree is cleaned (traces and the constituents they leave empty removed, function tags and
indices stripped, the empty root bracket dropped), its heads are found with the head table of
Nivre's Penn2Malt (Yamada & Matsumoto 2003's version of Collins 1999's rules; see
``PENN2MALT_HEAD_RULES``), and every word depends on the head word of the smallest constituent
that it does not head. Labels are not converted: every dependency is ``dep``, the root's
``root``.

``agreement`` compares the conversion with NLTK's ``dependency_treebank.zip`` (the same
sentences converted by others), word by word: ``python -m data.ptb TREEBANK DEPENDENCY_ZIP``.
"""

import re
import zipfile
from collections import Counter
from pathlib import Path

import nltk.data
from nltk.corpus.reader import BracketParseCorpusReader
from nltk.data import FileSystemPathPointer, ZipFilePathPointer
from nltk.tree import Tree

from data.conll import MISSING, Sentence
from data.errors import DataError

# Standard splits of the full WSJ by section: parsing (Collins; Yamada & Matsumoto; McDonald et
# al.) and tagging (Collins 2002; Toutanova et al. 2003).
SPLITS = {
    "parse": {"train": list(range(2, 22)), "dev": [22], "test": [23]},
    "tag": {"train": list(range(0, 19)), "dev": [19, 20, 21], "test": [22, 23, 24]},
}
# The NLTK sample has no sections (it is files 0001-0199 of section 00-01), so it is split by
# file number, the same way for both tasks.
SAMPLE_SPLITS = {
    "train": range(1, 160),
    "dev": range(160, 180),
    "test": range(180, 200),
}
LAST_SAMPLE_FILE = 199

ROOT_LABEL = "root"
DEPENDENCY_LABEL = "dep"

# Penn2Malt's head table for English, in Penn2Malt's own rules-file format (Malt-TAB):
# ``CATEGORY<TAB>item;item;...``, items tried in order. An item is a direction and a set of
# labels: the first child, scanning from the right (``r``) or the left (``l``), whose label is
# in the set is the head; a bare direction takes the first child from that side.
# Source: copied verbatim from the rule strings of markovthebeast
# (github.com/ixaxaar/markovthebeast, src/thebeast/pml/corpora/CoNLL05Converter.java), which
# loads Penn2Malt's rules. The reading of r/l is that of Stanford CoreNLP's MaltTabHeadFinder
# ("rules are read from a Malt-TAB file used for CoNLL07 ... Standard Malt-TAB files can be
# downloaded from http://w3.msi.vxu.se/~nivre/research/Penn2Malt.html"): r = rightdis,
# l = leftdis. (markovthebeast's own scanner reads them the other way round; that reading
# agrees with NLTK's dependency_treebank on 66% of heads, this one on 100%.) The rules are
# Yamada & Matsumoto (2003)'s modification of Collins (1999), Appendix A.
# See docs/ptb_conversion.md.
PENN2MALT_HEAD_RULES = """\
NP\tr POS NN NNP NNPS NNS;r NX;r JJR;r CD;r JJ;r JJS;r RB;r QP;r NP;r
ADJP\tr NNS;r QP;r NN;r $;r ADVP;r JJ;r VBN;r VBG;r ADJP;r JJR;r NP;r JJS;r DT;r FW;r RBR;r RBS;r SBAR;r RB;r
ADVP\tl RB;l RBR;l RBS;l FW;l ADVP;l TO;l CD;l JJR;l JJ;l IN;l NP;l JJS;l NN;l
CONJP\tl CC;l RB;l IN;l
FRAG\tl
INTJ\tr
LST\tl LS;l :;l
NAC\tr NN NNS NNP NNPS;r NP;r NAC;r EX;r $;r CD;r QP;r PRP;r VBG;r JJ;r JJS;r JJR;r ADJP;r FW;r
PP\tl IN;l TO;l VBG;l VBN;l RP;l FW;l
PRN\tr
PRT\tl RP;l
QP\tr $;r IN;r NNS;r NN;r JJ;r RB;r DT;r CD;r NCD;r QP;r JJR;r JJS;r
RRC\tl VP;l NP;l ADVP;l ADJP;l PP;l
S\tr TO;r IN;r VP;r S;r SBAR;r ADJP;r UCP;r NP;r
SBAR\tr WHNP;r WHPP;r WHADVP;r WHADJP;r IN;r DT;r S;r SQ;r SINV;r SBAR;r FRAG;r
SBARQ\tr SQ;r S;r SINV;r SBARQ;r FRAG;r
SINV\tr VBZ;r VBD;r VBP;r VB;r MD;r VP;r S;r SINV;r ADJP;r NP;r
SQ\tr VBZ;r VBD;r VBP;r VB;r MD;r VP;r SQ;r
UCP\tl
VP\tl VBD;l VBN;l MD;l VBZ;l VB;l VBG;l VBP;l VP;l ADJP;l NN;l NNS;l NP;l
WHADJP\tr CC;r WRB;r JJ;r ADJP;r
WHADVP\tl CC;l WRB;l
WHNP\tr WDT;r WP;r WP$;r WHADJP;r WHPP;r WHNP;r
WHPP\tl IN;l TO;l FW;l
NX\tr POS NN NNP NNPS NNS;r NX;r JJR;r CD;r JJ;r JJS;r RB;r QP;r NP;r
X\tr
"""  # noqa: E501 (the ADJP rule, kept on one line as published)


def _parse_head_rules(text):
    """``{category: [(direction, labels), ...]}`` from Malt-TAB head rules.

    ``labels`` is a frozenset; an empty one (a bare direction) matches any child.
    """
    rules = {}
    for line in text.splitlines():
        category, items = line.split("\t")
        rules[category] = [(item.split()[0], frozenset(item.split()[1:]))
                           for item in items.split(";")]
    return rules


HEAD_RULES = _parse_head_rules(PENN2MALT_HEAD_RULES)
# A category without a rule (only an unlabelled root with several children, in practice) is
# headed by its leftmost child, as CoreNLP's MaltTabHeadFinder does.
DEFAULT_RULE = [("l", frozenset())]


# --- reading -------------------------------------------------------------------------------

# Where an LDC copy keeps its sections, relative to the folder the user names.
WSJ_SECTION_PARENTS = ("wsj", ".", "parsed/mrg/wsj", "treebank_3/parsed/mrg/wsj")
# Where the unzipped NLTK sample keeps its files, relative to the folder the user names.
SAMPLE_FOLDERS = (".", "combined", "treebank/combined")
MRG_FILE = re.compile(r"(?:^|/)wsj_(\d{4})\.mrg$")
SECTION_FOLDER = re.compile(r"^\d\d$")


class _Corpus:
    """Where the ``.mrg`` files are: an nltk path pointer, their file ids, sample or full WSJ."""

    def __init__(self, source, root, fileids, is_sample):
        self.source = source  # as the user gave it, for messages
        self.root = root
        self.fileids = fileids  # in file order
        self.is_sample = is_sample


class _StrictBracketReader(BracketParseCorpusReader):
    """nltk's bracketed-tree reader, except that a malformed tree is an error.

    nltk "recovers" a tree it cannot parse by returning its words as one flat ``S`` (with a
    note on standard error), which would silently give wrong dependencies.
    """

    def _parse(self, t):
        try:
            tree = Tree.fromstring(self._normalize(t))
        except ValueError as error:
            # Which tree: nltk parses a block of several trees before yielding the first.
            start = " ".join(t.split())[:60]
            raise ValueError(f"{str(error).splitlines()[0]}, in the tree {start!r}...") from None
        # The unlabelled bracket around each WSJ tree, as nltk's own reader drops it.
        if tree.label() == "" and len(tree) == 1:
            return tree[0]
        return tree


def _open_corpus(source):
    """Find the ``.mrg`` files of ``source``; raise ``DataError`` naming it when there are none."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected treebank.zip, a folder of "
                        "wsj_XXXX.mrg files, or an LDC WSJ folder holding wsj/00 ... wsj/24)")
    _authorize(path)
    if path.is_file():
        return _open_zip(path)
    return _open_folder(path)


def _authorize(path):
    """Let nltk read ``path``: its readers only open files below a folder of ``nltk.data.path``.

    Since nltk 3.9 every corpus-reader access is checked against that list; adding the one
    source the user named is nltk's documented way to allow it.
    """
    resolved = str(path.resolve())
    if resolved not in nltk.data.path:
        nltk.data.path.append(resolved)


def _open_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if MRG_FILE.search(name)]
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path}: not a readable zip file ({error})") from None
    folders = sorted({name.rpartition("/")[0] for name in names})
    if not names:
        raise DataError(f"{path}: the zip file holds no wsj_XXXX.mrg files")
    if len(folders) > 1:
        raise DataError(f"{path}: wsj_XXXX.mrg files in several folders ({', '.join(folders)}); "
                        "expected them in one (treebank/combined/)")
    prefix = folders[0] + "/" if folders[0] else ""
    fileids = sorted(name[len(prefix):] for name in names)
    root = ZipFilePathPointer(str(path), prefix)
    return _Corpus(path, root, fileids, is_sample=_is_sample(fileids))


def _is_sample(flat_fileids):
    """Whether files in one folder (no sections) are NLTK's sample, wsj_0001 .. wsj_0199.

    Files numbered beyond the sample are a full WSJ laid out flat, split by section instead.
    """
    return max(file_number(fileid) for fileid in flat_fileids) <= LAST_SAMPLE_FILE


def _section_folders(folder):
    return sorted(child for child in folder.iterdir()
                  if child.is_dir() and SECTION_FOLDER.match(child.name))


def _open_folder(path):
    # An LDC copy: section folders 00 .. 24 holding wsj_XXXX.mrg.
    for root in (path / parent for parent in WSJ_SECTION_PARENTS):
        if root.is_dir() and _section_folders(root):
            fileids = sorted(f"{section.name}/{mrg.name}"
                             for section in _section_folders(root)
                             for mrg in section.iterdir() if MRG_FILE.search(mrg.name))
            if fileids:
                return _Corpus(path, FileSystemPathPointer(str(root)), fileids, is_sample=False)
    # The sample, unzipped: wsj_XXXX.mrg directly in one folder, no sections.
    for root in (path / folder for folder in SAMPLE_FOLDERS):
        if root.is_dir():
            fileids = sorted(mrg.name for mrg in root.iterdir() if MRG_FILE.search(mrg.name))
            if fileids:
                return _Corpus(path, FileSystemPathPointer(str(root)), fileids,
                               is_sample=_is_sample(fileids))
    raise DataError(f"{path}: holds no wsj_XXXX.mrg files (expected them directly inside, in "
                    "treebank/combined/, or in section folders wsj/00 ... wsj/24)")


def file_number(fileid):
    """The 4-digit number of a WSJ file id: ``02/wsj_0231.mrg`` -> 231."""
    return int(MRG_FILE.search(fileid).group(1))


def _selected_fileids(corpus, split, task):
    """The file ids of one split (all of them when ``split`` is None), in file order."""
    if task not in SPLITS:
        raise DataError(f"unknown task {task!r}; known: {', '.join(SPLITS)}")
    if split is None:
        return list(corpus.fileids)
    if split not in SAMPLE_SPLITS:
        raise DataError(f"unknown split {split!r}; known: {', '.join(SAMPLE_SPLITS)}")
    if corpus.is_sample:
        wanted = SAMPLE_SPLITS[split]
        return [fileid for fileid in corpus.fileids if file_number(fileid) in wanted]
    sections = SPLITS[task][split]
    return [fileid for fileid in corpus.fileids if file_number(fileid) // 100 in sections]


def _file_trees(corpus, reader, fileid):
    """The cleaned trees of one file; ``DataError`` naming the file (and sentence) if one is bad."""
    where = f"{corpus.source}: {fileid}"
    try:
        # Iterated, not list(): nltk's corpus view would read the whole file once more to
        # answer len().
        raw_trees = [tree for tree in reader.parsed_sents(fileid)]
    except ValueError as error:
        raise DataError(f"{where}: unreadable tree ({error})") from None
    except OSError as error:
        raise DataError(f"{where}: cannot read ({error})") from None
    trees = []
    for number, raw in enumerate(raw_trees, start=1):
        try:
            tree = clean_tree(raw)
        except ValueError as error:
            raise DataError(f"{where}: sentence {number}: unreadable tree ({error})") from None
        if tree is None:
            raise DataError(f"{where}: sentence {number} has no words once traces (-NONE-) are "
                            "removed")
        trees.append(tree)
    return trees


def _trees_by_file(source, split=None, task="parse"):
    """``(fileid, [cleaned trees])`` for each selected file, in file order."""
    corpus = _open_corpus(source)
    fileids = _selected_fileids(corpus, split, task)
    reader = _StrictBracketReader(corpus.root, corpus.fileids)
    for fileid in fileids:
        yield fileid, _file_trees(corpus, reader, fileid)


def read_trees(source, split=None, task="parse"):
    """Yield the cleaned trees (``nltk.Tree``) of ``source``, in file order.

    ``source``: treebank.zip, a folder of ``wsj_XXXX.mrg`` files, or an LDC WSJ folder.
    ``split``: ``train``/``dev``/``test`` of ``task`` (``parse`` or ``tag``; see ``SPLITS``;
    the sample is split by file number, ``SAMPLE_SPLITS``), or None for every sentence.
    """
    for _, trees in _trees_by_file(source, split, task):
        yield from trees


# --- cleaning ------------------------------------------------------------------------------

TRACE_TAG = "-NONE-"
FUNCTION_TAG_OR_INDEX = re.compile(r"[-=|]")


def strip_label(label):
    """A category without function tags or indices: ``NP-SBJ-1`` -> ``NP``, ``NP=2`` -> ``NP``.

    Labels that are themselves bracketed by hyphens (``-LRB-``, ``-RRB-``, ``-NONE-``) are
    kept. ``ADVP|PRT`` (an annotator's undecided choice) keeps its first category.
    """
    if len(label) > 1 and label.startswith("-") and label.endswith("-"):
        return label
    return FUNCTION_TAG_OR_INDEX.split(label, maxsplit=1)[0] or label


def _is_preterminal(tree):
    return len(tree) == 1 and isinstance(tree[0], str)


def clean_tree(tree):
    """A copy of ``tree`` without traces, empty constituents, function tags or the empty root.

    Returns None when nothing is left (a tree of traces only).
    """
    cleaned = _clean(tree)
    # nltk already drops the unlabelled bracket around most trees; one left after cleaning
    # (when it wrapped a constituent plus traces) adds nothing.
    while cleaned is not None and cleaned.label() == "" and len(cleaned) == 1 \
            and not _is_preterminal(cleaned):
        cleaned = cleaned[0]
    return cleaned


def _clean(tree):
    if _is_preterminal(tree):
        # Part-of-speech tags are kept as they are: they carry no function tags.
        return None if tree.label() == TRACE_TAG else Tree(tree.label(), [tree[0]])
    for child in tree:
        if isinstance(child, str):
            raise ValueError(f"word {child!r} has no part-of-speech bracket (under "
                             f"{tree.label() or 'the root'})")
    children = [child for child in (_clean(child) for child in tree) if child is not None]
    if not children:
        return None  # a constituent that held only traces
    return Tree(strip_label(tree.label()), children)


# --- heads ---------------------------------------------------------------------------------

# Penn Treebank punctuation tags. Penn2Malt never makes punctuation the head of a phrase that
# has another child: a bare direction in the table takes the first non-punctuation child.
PUNCTUATION_TAGS = frozenset({",", ".", ":", "``", "''", "-LRB-", "-RRB-"})


def head_child(label, child_labels):
    """Index of the head among ``child_labels`` of a constituent ``label``, by the head table."""
    for direction, wanted in HEAD_RULES.get(label, DEFAULT_RULE):
        order = list(range(len(child_labels)))
        if direction == "r":
            order.reverse()
        for index in order:
            if child_labels[index] in wanted:
                return index
        if not wanted:
            words = [index for index in order if child_labels[index] not in PUNCTUATION_TAGS]
            return (words or order)[0]
    return 0  # unreachable: every rule ends in a bare direction


def tree_to_dependencies(tree):
    """``(forms, tags, heads, deprels)`` of a cleaned tree; heads 1-based, 0 for the root."""
    forms, tags = (list(column) for column in zip(*tree.pos(), strict=True))
    heads = [0] * len(forms)
    root = _attach(tree, heads, [0])
    deprels = [DEPENDENCY_LABEL] * len(forms)
    deprels[root] = ROOT_LABEL
    return forms, tags, heads, deprels


def _attach(tree, heads, next_word):
    """Head word (0-based) of ``tree``; sets ``heads`` of the head words of its other children.

    ``next_word`` is a one-item list: the index of the first word not yet seen.
    """
    if _is_preterminal(tree):
        next_word[0] += 1
        return next_word[0] - 1
    child_heads = [_attach(child, heads, next_word) for child in tree]
    head = head_child(tree.label(), [child.label() for child in tree])
    for index, word in enumerate(child_heads):
        if index != head:
            heads[word] = child_heads[head] + 1
    return child_heads[head]


# --- output --------------------------------------------------------------------------------

def to_sentence(forms, tags, heads, deprels, source="<memory>"):
    """A CoNLL-X ``Sentence``: the PTB tag in CPOSTAG and POSTAG, no lemma or features."""
    lines, word_rows, columns = [], [], []
    for index, (form, tag, head, deprel) in enumerate(zip(forms, tags, heads, deprels,
                                                          strict=True), start=1):
        cols = [str(index), form, MISSING, tag, tag, MISSING, str(head), deprel, MISSING,
                MISSING]
        word_rows.append(len(lines))
        lines.append("\t".join(cols) + "\n")
        columns.append(cols)
    lines.append("\n")
    return Sentence(lines, word_rows, columns, source=source)


def convert(source, split=None, task="parse"):
    """Yield ``data.conll.Sentence`` objects (CoNLL-X) for the trees of ``read_trees``."""
    for fileid, trees in _trees_by_file(source, split, task):
        for tree in trees:
            yield to_sentence(*tree_to_dependencies(tree), source=fileid)


# --- agreement with NLTK's dependency_treebank ---------------------------------------------

def _read_dependency_files(path):
    """``{file number: [[(word, tag, head), ...] per sentence]}`` from ``.dp`` files.

    ``path``: dependency_treebank.zip or a folder of ``wsj_XXXX.dp`` files.
    """
    path = Path(path)
    texts = {}
    try:
        if path.is_file():
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    match = re.search(r"wsj_(\d{4})\.dp$", name)
                    if match:
                        texts[int(match.group(1))] = archive.read(name).decode("utf-8")
        elif path.is_dir():
            for dp_file in path.rglob("wsj_*.dp"):
                texts[int(dp_file.stem[4:])] = dp_file.read_text(encoding="utf-8")
        else:
            raise DataError(f"{path}: no such file or folder (expected dependency_treebank.zip)")
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: cannot read the dependency files ({error})") from None
    if not texts:
        raise DataError(f"{path}: holds no wsj_XXXX.dp files")
    return {number: _parse_dependency_text(text, f"{path}: wsj_{number:04d}.dp")
            for number, text in texts.items()}


def _parse_dependency_text(text, name):
    sentences = []
    for block in re.split(r"\n\s*\n", text.strip()):
        rows = []
        for line in block.splitlines():
            fields = line.split("\t")
            if len(fields) != 3 or not fields[2].isdigit():
                raise DataError(f"{name}: expected 'word<TAB>tag<TAB>head', found {line!r}")
            rows.append((fields[0], fields[1], int(fields[2])))
        sentences.append(rows)
    return sentences


def agreement(source, dependency_zip, max_files=None):
    """Compare the conversion of every sentence of ``source`` with ``dependency_zip``.

    Returns a dict: ``sentences`` and ``words`` compared, ``matching_heads``,
    ``head_agreement`` (matching / words, 0-1), ``exact_sentences`` (every head matching),
    ``token_mismatches`` (sentences whose word sequences differ: not compared),
    ``missing_sentences`` (in one source but not the other) and ``disagreements``, a Counter
    of ``(tag of word, our head's tag, reference head's tag)`` for the words that differ.
    ``max_files``: only the first files (for quick checks).
    """
    reference = _read_dependency_files(dependency_zip)
    counts = Counter()
    disagreements = Counter()
    for fileid, trees in _files_limited(_trees_by_file(source), max_files):
        expected = reference.get(file_number(fileid), [])
        counts["missing_sentences"] += abs(len(trees) - len(expected))
        for tree, rows in zip(trees, expected, strict=False):
            forms, tags, heads, _ = tree_to_dependencies(tree)
            if forms != [word for word, _, _ in rows]:
                counts["token_mismatches"] += 1
                continue
            gold = [head for _, _, head in rows]
            matching = sum(ours == theirs for ours, theirs in zip(heads, gold, strict=True))
            counts["sentences"] += 1
            counts["words"] += len(forms)
            counts["matching_heads"] += matching
            counts["exact_sentences"] += matching == len(forms)
            disagreements.update(_disagreement_types(tags, heads, gold))
    words = counts["words"]
    return {
        "sentences": counts["sentences"],
        "words": words,
        "matching_heads": counts["matching_heads"],
        "head_agreement": counts["matching_heads"] / words if words else 0.0,
        "exact_sentences": counts["exact_sentences"],
        "token_mismatches": counts["token_mismatches"],
        "missing_sentences": counts["missing_sentences"],
        "disagreements": disagreements,
    }


def _files_limited(files, max_files):
    for count, item in enumerate(files):
        if max_files is not None and count >= max_files:
            return
        yield item


def _disagreement_types(tags, heads, gold):
    def tag_of(head):
        return "ROOT" if head == 0 else tags[head - 1]

    return [(tag, tag_of(ours), tag_of(theirs))
            for tag, ours, theirs in zip(tags, heads, gold, strict=True) if ours != theirs]


def main(argv=None):
    """``python -m data.ptb TREEBANK DEPENDENCY_ZIP``: print the head agreement."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m data.ptb", description=main.__doc__)
    parser.add_argument("treebank", help="treebank.zip or a folder of .mrg files")
    parser.add_argument("dependencies", help="dependency_treebank.zip or a folder of .dp files")
    parser.add_argument("--max-files", type=int, default=None)
    parser.add_argument("--top", type=int, default=10, help="disagreement types to list")
    args = parser.parse_args(argv)
    result = agreement(args.treebank, args.dependencies, max_files=args.max_files)
    for key in ("sentences", "words", "matching_heads", "exact_sentences", "token_mismatches",
                "missing_sentences"):
        print(f"{key}: {result[key]}")
    print(f"head_agreement: {result['head_agreement']:.4%}")
    for (tag, ours, theirs), count in result["disagreements"].most_common(args.top):
        print(f"  {count:5d}  {tag} attached to {ours}, reference {theirs}")


if __name__ == "__main__":
    main()
