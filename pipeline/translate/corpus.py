"""Parallel corpora: line-aligned file pairs and Tatoeba's TSV, read and checked; the processed splits read back.

<paths.processed>/translate/{train,valid,test}.tsv    source<TAB>target per line, raw (untokenized, cased) text
"""

import random
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import read_lines


def _clean(text: str) -> str:
    # Tabs would break our TSV; all other normalisation belongs to the tokenizer (pipeline/core/text.py).
    return text.replace("\t", " ").strip()


def read_parallel(src_path: Path, tgt_path: Path) -> list[tuple[str, str]]:
    """Aligned sentence pairs from two line-aligned files (plain or .gz)."""
    src, tgt = list(read_lines(src_path)), list(read_lines(tgt_path))
    if len(src) != len(tgt):
        raise InputError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; they must be aligned")
    pairs = []
    for (number, s), (_, t) in zip(src, tgt, strict=True):
        s, t = _clean(s), _clean(t)
        if not s:
            raise at(src_path, number, f"empty sentence (its pair is on the same line of {tgt_path.name})")
        if not t:
            raise at(tgt_path, number, f"empty sentence (its pair is on the same line of {src_path.name})")
        pairs.append((s, t))
    return pairs


def read_tatoeba(path: Path) -> list[tuple[str, str]]:
    """(English, French) pairs from ManyThings' TSV (a third attribution column, if present, is ignored)."""
    pairs = []
    for number, line in read_lines(path):
        cols = line.split("\t")
        if len(cols) not in (2, 3):
            raise at(path, number, f"expected English<TAB>French, got {len(cols)} tab-separated fields")
        en, fr = cols[0].strip(), cols[1].strip()
        if not en or not fr:
            raise at(path, number, "empty side of a pair")
        pairs.append((en, fr))
    return pairs


def split_by_source(pairs, seed: int, n_valid: int, n_test: int) -> dict[str, list]:
    """Deterministic split that keeps every translation of one English sentence in the same split."""
    sources = sorted({en for en, _ in pairs})
    random.Random(seed).shuffle(sources)
    if n_valid + n_test >= len(sources):
        raise InputError(f"tatoeba: {n_valid}+{n_test} held-out sentences leave nothing of {len(sources)} to train")
    where = {en: "valid" for en in sources[:n_valid]}
    where.update({en: "test" for en in sources[n_valid : n_valid + n_test]})
    splits = {"train": [], "valid": [], "test": []}
    for en, fr in pairs:
        splits[where.get(en, "train")].append((en, fr))
    return splits


MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def translation_splits(cfg: Config) -> dict[str, list[tuple[str, str]]]:
    p, raw = cfg.prepare, Path(cfg.paths.raw)
    if p.source_lang == p.target_lang:
        raise InputError(f"prepare.source_lang and prepare.target_lang are both {p.source_lang!r}")
    if p.translation_corpus == "multi30k":
        return {
            split: read_parallel(
                raw / f"multi30k/{name}.{p.source_lang}.gz", raw / f"multi30k/{name}.{p.target_lang}.gz"
            )
            for split, name in MULTI30K_SPLITS.items()
        }
    if {p.source_lang, p.target_lang} != {"en", "fr"}:
        raise InputError("prepare.translation_corpus=tatoeba has only en and fr")
    splits = split_by_source(read_tatoeba(raw / "tatoeba/fra.txt.gz"), p.tatoeba_seed, p.tatoeba_valid, p.tatoeba_test)
    if p.source_lang == "fr":
        splits = {k: [(fr, en) for en, fr in v] for k, v in splits.items()}
    return splits


def load_parallel(cfg: Config, split: str) -> list[tuple[str, str]]:
    path = Path(cfg.paths.processed) / f"translate/{split}.tsv"
    pairs = []
    for number, line in read_lines(path):
        s, sep, t = line.partition("\t")
        if not sep:
            raise at(path, number, "expected source<TAB>target")
        pairs.append((s, t))
    return pairs
