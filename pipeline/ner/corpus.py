"""CoNLL column files: read and checked (IOB1/BIOES converted to IOB2), and the processed splits read back.

<paths.processed>/ner/{train,valid,test}.conll    -DOCSTART- lines, token<TAB>IOB2-tag, blank line between sentences
"""

from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import read_lines

TAG_PREFIXES = ("B", "I", "E", "S")


def _check_tag(path: Path, number: int, tag: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in TAG_PREFIXES or not kind:
        raise at(path, number, f"unknown tag {tag!r} (expected O or B-/I-/E-/S-<TYPE>)")


def to_iob2(tags: list[str]) -> list[str]:
    """Normalise IOB1, IOB2 or BIOES tags to IOB2 (idempotent on valid IOB2).

    IOB1 starts a span with I- unless it directly follows a span of the same type; BIOES marks single
    tokens with S- and span ends with E-. In IOB2 every span starts with B-.
    """
    out, prev = [], "O"
    for tag in tags:
        if tag == "O":
            out.append(tag)
            prev = tag
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "S":
            prefix = "B"
        elif prefix == "E":
            prefix = "I"
        if prefix == "I" and (prev == "O" or prev.split("-", 1)[1] != kind):
            prefix = "B"
        out.append(f"{prefix}-{kind}")
        prev = out[-1]
    return out


def read_conll_documents(path: Path) -> list[list[tuple[list[str], list[str]]]]:
    """Documents of a CoNLL column file, each a list of (tokens, tags) sentences: token first, NER tag last,
    any columns between.

    `-DOCSTART-` lines separate documents (a file without them is one document); tags are normalised to IOB2;
    the column count must not vary.
    """
    documents, sentences, tokens, tags, width, width_line = [], [], [], [], None, None
    for number, line in read_lines(path):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, to_iob2(tags)))
                tokens, tags = [], []
            if cols and sentences:
                documents.append(sentences)
                sentences = []
            continue
        if len(cols) < 2:
            raise at(path, number, f"expected at least 2 columns (token ... tag), got {len(cols)}")
        if width is None:
            width, width_line = len(cols), number
        elif len(cols) != width:
            raise at(path, number, f"expected {width} columns as on line {width_line}, got {len(cols)}")
        _check_tag(path, number, cols[-1])
        tokens.append(cols[0])
        tags.append(cols[-1])
    if tokens:
        sentences.append((tokens, to_iob2(tags)))
    if sentences:
        documents.append(sentences)
    if not documents:
        raise InputError(f"{path}: no sentences found")
    return documents


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """The sentences of a CoNLL column file, documents one after another (see read_conll_documents)."""
    return [sentence for document in read_conll_documents(path) for sentence in document]


def load_ner(cfg: Config, split: str) -> list[tuple[list[str], list[str]]]:
    path = Path(cfg.paths.processed) / f"ner/{split}.conll"
    return read_conll(path)


def load_ner_documents(cfg: Config, split: str) -> list[list[tuple[list[str], list[str]]]]:
    path = Path(cfg.paths.processed) / f"ner/{split}.conll"
    first = next(read_lines(path), (1, ""))[1]
    if first != "-DOCSTART-":  # all of it would read as one document
        raise InputError(
            f"{path}: no -DOCSTART- line: written by an older `prepare`, before documents were kept",
            hint="run `make prepare` again",
        )
    return read_conll_documents(path)
