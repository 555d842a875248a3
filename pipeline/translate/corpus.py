"""Parallel corpora: a source<TAB>target TSV or two line-aligned files, read and checked; the processed splits
read back.

<paths.processed>/translate/{train,valid,test}.tsv    source<TAB>target per line, raw (untokenized, cased) text
"""

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import read_lines

LANG = "{lang}"  # in a path: two files, one per language, aligned by line


@dataclass
class ParallelFile:
    """The pairs of one split as read, and the lines skipped because a side was empty."""

    pairs: list[tuple[str, str]]
    files: list[str]
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, why)


def _clean(text: str) -> str:
    # Tabs would break our TSV; all other normalisation belongs to the tokenizer (pipeline/core/text.py).
    return text.replace("\t", " ").strip()


def _pairs(rows, src_name: str, tgt_name: str) -> ParallelFile:
    out = ParallelFile([], sorted({src_name, tgt_name}))
    for number, s, t in rows:
        s, t = _clean(s), _clean(t)
        if s and t:
            out.pairs.append((s, t))
        else:  # common in real corpora (filtered lines); a pair with an empty side teaches nothing
            side, name = ("source", src_name) if not s else ("target", tgt_name)
            out.skipped.append((name, number, f"empty {side} sentence: pair skipped"))
    if not out.pairs:
        raise InputError(f"{' / '.join(out.files)}: no sentence pairs found (an empty split)")
    return out


def read_parallel(src_path: Path, tgt_path: Path) -> ParallelFile:
    """Aligned sentence pairs from two line-aligned files (plain or .gz)."""
    src, tgt = list(read_lines(src_path)), list(read_lines(tgt_path))
    if len(src) != len(tgt):
        raise InputError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; they must be aligned line by line"
        )
    rows = ((number, s, t) for (number, s), (_, t) in zip(src, tgt, strict=True))
    return _pairs(rows, str(src_path), str(tgt_path))


def read_tsv(path: Path) -> ParallelFile:
    """Pairs of a source<TAB>target file (plain or .gz); further tab-separated fields (e.g. Tatoeba's
    attribution) are ignored."""

    def rows():
        for number, line in read_lines(path):
            cols = line.split("\t")
            if len(cols) < 2:
                raise at(path, number, "expected source<TAB>target, found no tab")
            yield number, cols[0], cols[1]

    return _pairs(rows(), str(path), str(path))


def read_split(spec: str, source_lang: str, target_lang: str) -> ParallelFile:
    """One split named in [translate.data]: `x.{lang}` = two aligned files, anything else a TSV."""
    if LANG in spec:
        return read_parallel(Path(spec.replace(LANG, source_lang)), Path(spec.replace(LANG, target_lang)))
    return read_tsv(Path(spec))


def split_path(cfg: Config, split: str) -> Path:
    return Path(cfg.paths.processed) / f"translate/{split}.tsv"


def train_files(cfg: Config) -> list[str]:
    """The processed training files that translate.input = "files" reads."""
    return [str(split_path(cfg, "train"))]


def count_lines(path: str | Path) -> int:
    """Lines of a processed file, counted in 1 MiB chunks: nothing of the corpus is held."""
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def load_parallel(cfg: Config, split: str) -> list[tuple[str, str]]:
    path = split_path(cfg, split)
    pairs = []
    for number, line in read_lines(path):
        s, sep, t = line.partition("\t")
        if not sep:
            raise at(path, number, "expected source<TAB>target")
        pairs.append((s, t))
    return pairs
