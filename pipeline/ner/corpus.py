"""CoNLL column files: read and checked (IOB1/BIOES/BILOU converted to IOB2), and the processed splits read back.

<paths.processed>/ner/{train,valid,test}.conll    -DOCSTART- lines, token<TAB>IOB2-tag, blank line between sentences
"""

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import read_lines

# Span prefixes per scheme; BILOU's U-/L- are BIOES's S-/E- under other names.
SCHEMES = {"iob1": ("B", "I"), "iob2": ("B", "I"), "bioes": ("B", "I", "E", "S")}
RAW_PREFIXES = {"iob1": "BI", "iob2": "BI", "bioes": "BIES", "bilou": "BILU"}  # as written, for ner.data.scheme
ALIASES = {"U": "S", "L": "E"}


@dataclass
class ConllFile:
    """One read column file: its documents of (tokens, IOB2 tags) sentences and what reading it found."""

    path: str
    documents: list[list[tuple[list[str], list[str]]]]
    scheme: str  # as read: iob1, iob2 or bioes
    docstart: bool  # it had -DOCSTART- lines (without them every sentence is its own document)
    repairs: list[tuple[int, str]] = field(default_factory=list)  # (line, what was repaired)


def _split_tag(path: Path, number: int, tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    prefix = ALIASES.get(prefix, prefix)
    if prefix not in SCHEMES["bioes"] or not kind:
        raise at(
            path,
            number,
            f"unknown tag {tag!r}: not a tag of IOB1, IOB2, BIOES or BILOU (expected O or B-/I-/E-/S-/L-/U-<TYPE>)",
        )
    return prefix, kind


def detect_scheme(sentences: list[list[tuple[str, str]]]) -> str:
    """bioes if any E-/S- tag; iob2 if some B- opens a span (follows O or another type); else iob1."""
    prefixes = {p for s in sentences for p, _ in s}
    if prefixes & {"E", "S"}:
        return "bioes"
    for sentence in sentences:
        prev = ("O", "")
        for prefix, kind in sentence:
            if prefix == "B" and (prev[0] == "O" or prev[1] != kind):
                return "iob2"
            prev = (prefix, kind)
    return "iob2" if "I" not in prefixes else "iob1"


def _invalid(scheme: str, prev: tuple[str, str], tag: tuple[str, str], nxt: tuple[str, str]) -> str:
    """Why a transition is invalid in `scheme` ("" if it is valid)."""
    (pp, pk), (p, k), (np_, nk) = prev, tag, nxt
    inside = pp in ("B", "I") and pk == k
    if scheme == "iob2" and p == "I" and not inside:
        return f"I-{k} opens a span (IOB2 starts every span with B-)"
    if scheme == "bioes":
        if p in ("I", "E") and not inside:
            return f"{p}-{k} does not continue a B-{k} / I-{k}"
        if p in ("B", "I") and not (np_ in ("I", "E") and nk == k):
            return f"{p}-{k} is not followed by I-{k} or E-{k}"
    return ""


def to_iob2(tags: list[str]) -> list[str]:
    """Normalise IOB1, IOB2 or BIOES tags to IOB2 (idempotent on valid IOB2).

    IOB1 starts a span with I- unless it directly follows a span of the same type; BIOES marks single
    tokens with S- and span ends with E-. In IOB2 every span starts with B-.
    """
    out, prev, closed = [], "O", True  # closed: the last span ended (O, or BIOES's S-/E-)
    for tag in tags:
        if tag == "O":
            out.append(tag)
            prev, closed = tag, True
            continue
        prefix, kind = tag.split("-", 1)
        prefix = ALIASES.get(prefix, prefix)
        ends = prefix in ("S", "E")
        prefix = {"S": "B", "E": "I"}.get(prefix, prefix)
        if prefix == "I" and (closed or prev.split("-", 1)[1] != kind):
            prefix = "B"  # an I- that cannot continue a span opens one (IOB1's rule; a repair elsewhere)
        out.append(f"{prefix}-{kind}")
        prev, closed = out[-1], ends
    return out


def _rows(path: Path):
    """Sentences of (line number, token, tag) rows, grouped in documents; -DOCSTART- seen or not."""
    documents, sentences, rows, width, width_line, docstart = [], [], [], None, None, False
    for number, line in read_lines(path):
        # Tab-separated if the line has a tab (a token may then hold a space), else split on whitespace.
        stripped = line.strip()
        cols = [c.strip() for c in stripped.split("\t")] if "\t" in stripped else stripped.split()
        if not cols or cols[0] == "-DOCSTART-":
            if rows:
                sentences.append(rows)
                rows = []
            if cols:
                docstart = True
                if sentences:
                    documents.append(sentences)
                    sentences = []
            continue
        if len(cols) < 2:
            raise at(path, number, f"expected at least 2 columns (token ... tag), got {len(cols)}")
        if width is None:
            width, width_line = len(cols), number
        elif len(cols) != width:
            raise at(path, number, f"expected {width} columns as on line {width_line}, got {len(cols)}")
        rows.append((number, cols[0], cols[-1], _split_tag(path, number, cols[-1])))
    if rows:
        sentences.append(rows)
    if sentences:
        documents.append(sentences)
    if not documents:
        raise InputError(f"{path}: no sentences found (an empty split)")
    return documents, docstart


def read_conll_file(path: Path, scheme: str = "auto", repair: bool = True) -> ConllFile:
    """A CoNLL column file: token first, NER tag last, any columns between (their count must not vary).

    `-DOCSTART-` lines separate documents; a file without them has no documents, so each sentence is its own.
    Tags are IOB1, IOB2 or BIOES (BILOU too), detected unless `scheme` names one, and come out as IOB2. An
    invalid transition is repaired (and listed in `repairs`) or, with repair=False, an error at its line.
    """
    documents, docstart = _rows(path)
    sentences = [[r[3] for r in s] for d in documents for s in d]
    if scheme != "auto":
        for number, _, tag, _ in (r for d in documents for s in d for r in s):
            if tag != "O" and tag.partition("-")[0] not in RAW_PREFIXES[scheme]:
                raise at(path, number, f"{tag!r} is not a {scheme.upper()} tag (ner.data.scheme = {scheme})")
    scheme = detect_scheme(sentences) if scheme == "auto" else "bioes" if scheme == "bilou" else scheme
    for number, _, tag, (prefix, _) in (r for d in documents for s in d for r in s):
        if prefix != "O" and prefix not in SCHEMES[scheme]:
            raise at(path, number, f"{tag!r} is not a {scheme.upper()} tag (detected; set ner.data.scheme)")
    repairs = []
    for rows in (s for d in documents for s in d):
        tags = [("O", "")] + [r[3] for r in rows] + [("O", "")]
        for i, (number, *_) in enumerate(rows, start=1):
            reason = _invalid(scheme, tags[i - 1], tags[i], tags[i + 1])
            if reason and not repair:
                raise at(path, number, f"invalid {scheme.upper()}: {reason} (ner.data.repair = true repairs it)")
            if reason:
                repairs.append((number, reason))
    out = [[([r[1] for r in s], to_iob2([r[2] for r in s])) for s in d] for d in documents]
    if not docstart:
        out = [[sentence] for document in out for sentence in document]
    return ConllFile(str(path), out, scheme, docstart, repairs)


def read_conll_documents(path: Path) -> list[list[tuple[list[str], list[str]]]]:
    """The documents of a CoNLL column file (see read_conll_file), each a list of (tokens, IOB2 tags)."""
    return read_conll_file(path).documents


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """The sentences of a CoNLL column file, documents one after another (see read_conll_file)."""
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
