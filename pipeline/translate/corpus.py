"""Parallel corpora: a source<TAB>target TSV or two line-aligned files, read and checked as a stream; the processed
splits written as shards with a manifest, and read back through it.

<paths.processed>/translate/{split}-00000-of-0000N.tsv   source<TAB>target per line, raw (untokenized, cased) text
<paths.processed>/translate/manifest.json                each split's shards: pairs, bytes and sha256 of each

Nothing here holds a whole corpus: readers yield pairs, and `prepare` writes each pair as it reads it. The training
split is dealt to shards of at most prepare.shard_pairs pairs at random (seeded), then each shard is shuffled, one in
memory at a time (about 13 MB of text at the default size): dealing alone keeps the corpus order inside a shard. So
every shard is a sample of the whole corpus in random order, and reading a few shards at a time through a shuffle
buffer mixes all of it. Valid and test keep their order (reports list sentences as given); so does a corpus of one
shard.
"""

import contextlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.config import SPLITS, Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import atomic_path, read_lines, sha256_file, write_json

LANG = "{lang}"  # in a path: two files, one per language, aligned by line
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SKIPPED_KEPT = 100  # skipped lines listed by file:line (the check shows 5); more are only counted


@dataclass
class ParallelFile:
    """One split as named in [translate.data]: its pairs are read again on each pass (`for s, t in read`), never
    held. Each pass recounts the lines skipped because a side was empty."""

    source_file: str
    target_file: str  # the same file for a TSV
    rows: Callable[[], Iterator[tuple[int, str, str]]]  # (line, source, target) as read, before cleaning
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # the first SKIPPED_KEPT (file, line, why)
    skipped_count: int = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.skipped, self.skipped_count, found = [], 0, False
        src_name, tgt_name = self.source_file, self.target_file
        for number, s, t in self.rows():
            s, t = _clean(s), _clean(t)
            if s and t:
                found = True
                yield s, t
            else:  # common in real corpora (filtered lines); a pair with an empty side teaches nothing
                self.skipped_count += 1
                if len(self.skipped) < SKIPPED_KEPT:
                    side, name = ("source", src_name) if not s else ("target", tgt_name)
                    self.skipped.append((name, number, f"empty {side} sentence: pair skipped"))
        if not found:
            raise InputError(f"{' / '.join(self.files)}: no sentence pairs found (an empty split)")

    @property
    def files(self) -> list[str]:
        return sorted({self.source_file, self.target_file})

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every pair in memory: for small files (tests, the bench's own corpora)."""
        return list(self)


def _clean(text: str) -> str:
    # Tabs would break our TSV; all other normalisation belongs to the tokenizer (pipeline/core/text.py).
    return text.replace("\t", " ").strip()


def read_parallel(src_path: Path, tgt_path: Path) -> ParallelFile:
    """Aligned sentence pairs from two line-aligned files (plain or .gz)."""

    def rows():
        src, tgt, n = read_lines(src_path), read_lines(tgt_path), 0
        for a, b in itertools.zip_longest(src, tgt):
            if a is None or b is None:  # one file ended: count the rest of the other for the message
                longer = n + 1 + sum(1 for _ in (tgt if a is None else src))
                n_src, n_tgt = (n, longer) if a is None else (longer, n)
                raise InputError(
                    f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}; they must be aligned line by line"
                )
            n += 1
            yield a[0], a[1], b[1]

    return ParallelFile(str(src_path), str(tgt_path), rows)


def read_tsv(path: Path) -> ParallelFile:
    """Pairs of a source<TAB>target file (plain or .gz); further tab-separated fields (e.g. Tatoeba's
    attribution) are ignored."""

    def rows():
        for number, line in read_lines(path):
            cols = line.split("\t")
            if len(cols) < 2:
                raise at(path, number, "expected source<TAB>target, found no tab")
            yield number, cols[0], cols[1]

    return ParallelFile(str(path), str(path), rows)


def read_split(spec: str, source_lang: str, target_lang: str) -> ParallelFile:
    """One split named in [translate.data]: `x.{lang}` = two aligned files, anything else a TSV."""
    if LANG in spec:
        return read_parallel(Path(spec.replace(LANG, source_lang)), Path(spec.replace(LANG, target_lang)))
    return read_tsv(Path(spec))


# The processed splits: shards and their manifest.


def directory(cfg: Config) -> Path:
    return Path(cfg.paths.processed) / "translate"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tsv"


SHARD = re.compile(r"^(train|valid|test)-\d{5}-of-\d{5}\.tsv$")


def write_processed(cfg: Config, splits: dict[str, Iterable[tuple[str, str]]], counts: dict[str, int]) -> dict:
    """Write each split's pairs (streamed once; counts[split] of them) as shards, then the manifest, then remove the
    shards of an earlier run. Every file is written beside its name and renamed once complete."""
    out = directory(cfg)
    manifest = {"format": MANIFEST_FORMAT, "splits": {}}
    for split, pairs in splits.items():
        n = counts[split]
        shards = max(1, -(-n // cfg.prepare.shard_pairs))
        names = [shard_name(split, i, shards) for i in range(shards)]
        deal = _dealer(shards, cfg.prepare.split_seed) if split == "train" and shards > 1 else None
        sizes = [0] * shards
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(atomic_path(out / name)) for name in names]
            files = [stack.enter_context(open(tmp, "w", encoding="utf-8", newline="\n")) for tmp in tmps]
            written = 0
            for s, t in pairs:
                i = next(deal) if deal else min(written * shards // max(n, 1), shards - 1)
                files[i].write(f"{s}\t{t}\n")
                sizes[i] += 1
                written += 1
            if written != n:
                raise RuntimeError(f"translate/{split}: {written} pairs read on the second pass, {n} on the first")
            for f in files:
                f.close()
            if deal:  # dealing keeps the corpus order inside a shard: shuffle each, one shard in memory at a time
                rng = np.random.default_rng([cfg.prepare.split_seed, 1])  # not the dealer's stream
                for tmp in tmps:
                    _shuffle_lines(tmp, rng)
            entries = [
                {"file": name, "pairs": size, "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}
                for name, size, tmp in zip(names, sizes, tmps, strict=True)
            ]
        manifest["splits"][split] = {"pairs": n, "shards": entries}
    write_json(out / MANIFEST, manifest)
    kept = {e["file"] for entry in manifest["splits"].values() for e in entry["shards"]}
    for path in out.iterdir():  # the shards of an earlier run with another count, and the single files before shards
        if (SHARD.match(path.name) and path.name not in kept) or path.name in {f"{s}.tsv" for s in SPLITS}:
            path.unlink()
    return manifest


def _shuffle_lines(path: Path, rng: np.random.Generator, chunk: int = 1 << 20) -> None:
    """Rewrite a file's lines in a random order, holding only their offsets (8 bytes a line), not the text."""
    ends = []
    with open(path, "rb") as f:
        pos = 0
        while block := f.read(chunk):
            ends.append(np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n")) + pos + 1)
            pos += len(block)
    end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    start = np.concatenate([[0], end[:-1]])
    shuffled = path.with_name(path.name + ".shuffled")
    try:
        with open(path, "rb") as src, open(shuffled, "wb") as out:
            for i in rng.permutation(len(end)):
                out.write(os.pread(src.fileno(), int(end[i] - start[i]), int(start[i])))
        os.replace(shuffled, path)
    finally:
        shuffled.unlink(missing_ok=True)


def _dealer(shards: int, seed: int, block: int = 1 << 16) -> Iterator[int]:
    """An endless seeded sequence of shard numbers, drawn a block at a time."""
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.integers(0, shards, block).tolist()


def read_manifest(cfg: Config) -> dict:
    path = directory(cfg) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found (the processed corpus)", hint="run `make prepare` first") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})", hint="run `make prepare` again") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: written by another version of `prepare`", hint="run `make prepare` again")
    return manifest


def shards(cfg: Config, split: str, verify: bool = True) -> list[Path]:
    """The split's shard files, each checked against the manifest: present, of the recorded size and sha256 (a
    truncated or edited shard is named, not trained on)."""
    manifest, out = read_manifest(cfg), directory(cfg)
    if split not in manifest["splits"]:
        raise InputError(f"{out / MANIFEST}: no {split} split", hint="run `make prepare` again")
    paths = []
    for entry in manifest["splits"][split]["shards"]:
        path = out / entry["file"]
        if not path.is_file():
            raise InputError(f"{path}: listed in {out / MANIFEST} but missing", hint="run `make prepare` again")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise InputError(
                f"{path}: {size:,} bytes, but {out / MANIFEST} records {entry['bytes']:,} (truncated or edited since "
                "`prepare` wrote it)",
                hint="run `make prepare` again",
            )
        if verify and sha256_file(path) != entry["sha256"]:
            raise InputError(
                f"{path}: its sha256 differs from the one in {out / MANIFEST} (edited since `prepare` wrote it)",
                hint="run `make prepare` again",
            )
        paths.append(path)
    return paths


def shard_pairs(cfg: Config, split: str) -> list[int]:
    """The pairs in each of the split's shards, in shard order (the manifest's counts)."""
    return [entry["pairs"] for entry in read_manifest(cfg)["splits"][split]["shards"]]


def train_files(cfg: Config) -> list[str]:
    """The checked training shards that translate.input = "files" reads."""
    return [str(p) for p in shards(cfg, "train")]


def iter_pairs(cfg: Config, split: str) -> Iterator[tuple[str, str]]:
    """The processed pairs of one split, shard after shard, checked against the manifest; nothing is held."""
    for path in shards(cfg, split):
        for number, line in read_lines(path):
            s, sep, t = line.partition("\t")
            if not sep:
                raise at(path, number, "expected source<TAB>target")
            yield s, t


def iter_batches(cfg: Config, split: str, size: int = 8192) -> Iterator[list[tuple[str, str]]]:
    pairs = iter_pairs(cfg, split)
    while batch := list(itertools.islice(pairs, size)):
        yield batch


def load_parallel(cfg: Config, split: str) -> list[tuple[str, str]]:
    """Every pair of a split in memory (valid and test; the training pairs with translate.input = "memory")."""
    return list(iter_pairs(cfg, split))
