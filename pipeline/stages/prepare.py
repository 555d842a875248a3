"""Stages `prepare` and `check-data`: read and check every task's corpus (the files [<task>.data] names), split
off the valid/test sets it does not give, then write the processed splits. Nothing is written until everything
has been read and checked; `check-data` stops there and writes only the report. A translation corpus is streamed:
read once to check it, again to write it (translate/corpus.py), never held.

    <paths.processed>/ner/{train,valid,test}.conll     -DOCSTART- lines, token<TAB>IOB2 tag, blank line after sentences
    <paths.processed>/translate/{split}-0000i-of-0000N.tsv, manifest.json   source<TAB>target shards (corpus.py)
    <paths.reports>/data.json                           counts, lengths, overlaps and warnings (stages/check.py)
"""

import array
import dataclasses
import hashlib
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.config import SPLITS, Config, corpus_files, hooked, tasks
from pipeline.core.errors import InputError
from pipeline.core.files import write_json, write_lines
from pipeline.ner import corpus as ner_corpus
from pipeline.stages import check
from pipeline.translate import config as translate_config
from pipeline.translate import corpus as translate_corpus


@dataclass
class Corpora:
    """Every defined task's splits as read, split and cut to prepare.max_*; held_out says how missing splits were
    made."""

    ner: dict[str, ner_corpus.ConllFile] | None = None
    translate: dict[str, "SplitOf"] | None = None
    held_out: dict[str, dict[str, str]] = field(default_factory=dict)
    hooked: dict[str, dict] = field(default_factory=dict)  # task -> its splits, read by its hooks (lm)


MIN_DOCUMENTS = 20  # fewer documents than this in a train file to split: hold out sentences instead


def held_out_count(size: float, n: int) -> int:
    if size <= 0:
        raise InputError(f"prepare.valid_size / test_size must be > 0 to hold out a split, got {size}")
    return max(1, round(size * n)) if size < 1 else int(size)


def held_out_sizes(n: int, missing: list[str], cfg: Config, what: str) -> dict[str, int]:
    p = cfg.prepare
    sizes = {s: held_out_count(p.valid_size if s == "valid" else p.test_size, n) for s in missing}
    if sum(sizes.values()) >= n:
        raise InputError(
            f"{what}: holding out {' + '.join(map(str, sizes.values()))} for {' and '.join(missing)} leaves "
            f"nothing of {n} to train",
            hint="name valid/test files in the config, or lower prepare.valid_size / prepare.test_size",
        )
    return sizes


def deal_held_out(order, sizes: dict[str, int]) -> dict:
    """The first sizes["valid"] keys of `order` to valid, the next sizes["test"] to test."""
    where, start = {}, 0
    for split in ("valid", "test"):
        for k in order[start : start + sizes.get(split, 0)]:
            where[k] = split
        start += sizes.get(split, 0)
    return where


def split_off(keys: list, missing: list[str], cfg: Config, what: str) -> dict:
    """Which held-out split each key goes to: the sorted keys shuffled by prepare.split_seed, valid first."""
    order = sorted(set(keys))
    random.Random(cfg.prepare.split_seed).shuffle(order)
    return deal_held_out(order, held_out_sizes(len(order), missing, cfg, what))


def _missing(data) -> list[str]:
    return [s for s in ("valid", "test") if not getattr(data, s)]


def read_ner(cfg: Config, out: Corpora) -> None:
    d = cfg.ner_data
    out.ner = {s: ner_corpus.read_conll_file(Path(getattr(d, s)), d.scheme, d.repair) for s in SPLITS if getattr(d, s)}
    missing, train = _missing(d), out.ner["train"]
    if missing and len(train.documents) < MIN_DOCUMENTS:  # one -DOCSTART- at the top, or a handful: by sentence
        train = out.ner["train"] = dataclasses.replace(train, documents=[[s] for doc in train.documents for s in doc])
    if missing:  # whole documents (or sentences, in a file with few or no documents), by seed
        unit = "documents" if len(train.documents) < sum(map(len, train.documents)) else "sentences"
        where = split_off(list(range(len(train.documents))), missing, cfg, d.train)
        for split in ["train", *missing]:
            docs = [doc for i, doc in enumerate(train.documents) if where.get(i, "train") == split]
            out.ner[split] = dataclasses.replace(
                train, documents=docs, repairs=train.repairs if split == "train" else []
            )
        out.held_out["ner"] = {
            s: f"{len(out.ner[s].documents)} {unit} split off {d.train} (prepare.split_seed {cfg.prepare.split_seed})"
            for s in missing
        }


@dataclass
class SplitOf:
    """One processed translation split as a stream: the pairs of `read` that `keep` accepts (all if None), the first
    `limit` of them (0 = all). Iterating reads the corpus again; nothing is held."""

    read: translate_corpus.ParallelFile
    keep: object = None  # source sentence -> bool
    limit: int = 0
    skipped: list = field(default_factory=list)  # of the last pass (train only: held-out splits skip nothing)
    skipped_count: int = 0

    def __iter__(self):
        pairs = (p for p in self.read if self.keep is None or self.keep(p[0]))
        yield from itertools.islice(pairs, self.limit or None)
        if self.keep is None or self.keep.split == "train":
            self.skipped, self.skipped_count = self.read.skipped, self.read.skipped_count

    @property
    def files(self) -> list[str]:
        return self.read.files

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(self)


def source_key(source: str) -> int:
    """A stable 64-bit key of a source sentence (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(source.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class HeldOut:
    """Which source sentences (by key) each held-out split took; `keep` for one split."""

    where: dict[int, str]
    split: str

    def __call__(self, source: str) -> bool:
        return self.where.get(source_key(source), "train") == self.split


def hold_out_sources(read: translate_corpus.ParallelFile, missing: list[str], cfg: Config, what: str) -> dict:
    """split_off by source sentence, streamed: the distinct keys (8 bytes each) are what is held, not the text."""
    keys = array.array("Q", (source_key(s) for s, _ in read))
    distinct = np.unique(np.frombuffer(keys, np.uint64))
    del keys
    sizes = held_out_sizes(len(distinct), missing, cfg, what)
    picked = np.random.default_rng(cfg.prepare.split_seed).permutation(len(distinct))[: sum(sizes.values())]
    return deal_held_out(distinct[picked].tolist(), sizes)


def read_translate(cfg: Config, out: Corpora) -> None:
    d = cfg.translate_data
    if not d.source_lang or not d.target_lang:
        raise InputError("translate.data.source_lang and target_lang must be set when translate.data.train is")
    if d.source_lang == d.target_lang:
        raise InputError(f"translate.data.source_lang and target_lang are both {d.source_lang!r}")
    if cfg.prepare.shard_pairs < 1:
        raise InputError(f"prepare.shard_pairs must be >= 1, got {cfg.prepare.shard_pairs}")
    read = {
        s: translate_corpus.read_split(getattr(d, s), d.source_lang, d.target_lang) for s in SPLITS if getattr(d, s)
    }
    splits = {s: SplitOf(r) for s, r in read.items()}
    missing = _missing(d)
    if missing:  # by source sentence, so all translations of one sentence land in the same split
        where = hold_out_sources(read["train"], missing, cfg, d.train)
        for split in ["train", *missing]:
            splits[split] = SplitOf(read["train"], HeldOut(where, split))
        out.held_out["translate"] = {  # data_report puts the count of pairs first
            s: f"pairs split off {d.train} by source sentence (prepare.split_seed {cfg.prepare.split_seed})"
            for s in missing
        }
    for split, stream in splits.items():
        stream.limit = cfg.prepare.max_train if split == "train" else cfg.prepare.max_eval
    out.translate = splits


def read_corpora(cfg: Config) -> Corpora:
    """Read and check every defined task's corpus (errors name file:line), splitting off what is missing."""
    defined = tasks(cfg)
    if not defined:
        raise InputError(
            "the config defines no task: name a corpus in [ner.data] train or [translate.data] train",
            hint="see README 'Train on your own data', or use configs/default.toml",
        )
    out = Corpora()
    if "ner" in defined:
        read_ner(cfg, out)
        for split, read in out.ner.items():
            read.documents = _limit(read.documents, split, cfg, size=len)
    if "translate" in defined:
        read_translate(cfg, out)  # streams: read when checked, and again when written
    for task, hooks in hooked(cfg).items():
        out.hooked[task], held = hooks.read(cfg)
        if held:
            out.held_out[task] = held
    return out


def data_report(cfg: Config, corpora: Corpora) -> dict:
    warnings: list[str] = []
    report = {}
    if corpora.ner:
        files = {s: r.path for s, r in corpora.ner.items()}
        report["ner"] = {"splits": check.check_ner(cfg, corpora.ner, warnings), "files": files}
    if corpora.translate:
        files = {s: r.files for s, r in corpora.translate.items()}
        report["translate"] = {"splits": check.check_parallel(cfg, corpora.translate, warnings), "files": files}
        report["translate"]["languages"] = [cfg.translate_data.source_lang, cfg.translate_data.target_lang]
    for task, splits in corpora.hooked.items():
        hooks = hooked(cfg)[task]
        files = {s: r.files for s, r in splits.items()}
        report[task] = {"splits": hooks.check(cfg, splits, warnings), "files": files}
    for task, held in corpora.held_out.items():
        report[task]["held_out"] = held
        if task == "translate":  # counted by the check's pass
            report[task]["held_out"] = {s: f"{report[task]['splits'][s]['pairs']} {how}" for s, how in held.items()}
    return report | {"warnings": warnings}


def _limit(items: list, split: str, cfg: Config, size=lambda item: 1) -> list:
    """The first prepare.max_train / max_eval sentences (whole documents, the last one cut)."""
    n = cfg.prepare.max_train if split == "train" else cfg.prepare.max_eval
    if not n:
        return items
    out, total = [], 0
    for item in items:
        if total >= n:
            break
        if size(item) > n - total:  # a document: keep its first sentences
            item = item[: n - total]
        out.append(item)
        total += size(item)
    return out


def stamp_inputs(cfg: Config, stage: str = "prepare") -> dict:
    """What `prepare`'s config stamp covers: the sections it reads and each corpus file's size and mtime, so an
    edited corpus of the user's own reruns it (and what follows) as a changed setting does."""
    sections = translate_config.stage_inputs(cfg, stage)  # not the tokenizer's keys
    files = {}
    for name in corpus_files(cfg):
        stat = Path(name).stat() if Path(name).is_file() else None
        files[name] = [stat.st_size, stat.st_mtime_ns] if stat else "missing"
    return sections | {"files": files}


def check_data(cfg: Config) -> dict:
    """Stage `check-data`: read and check, write data.json and print it; no processed file is written."""
    report = data_report(cfg, read_corpora(cfg))
    write_json(Path(cfg.paths.reports) / "data.json", report)
    print(check.format_report(report))
    return report


def run(cfg: Config) -> None:
    """Read every defined corpus, check it, and write the processed splits plus data/reports/data.json."""
    corpora = read_corpora(cfg)  # everything is read and checked before anything is written
    report = data_report(cfg, corpora)
    out = Path(cfg.paths.processed)
    for split, read in (corpora.ner or {}).items():
        lines = []
        for doc in read.documents:  # -DOCSTART- lines keep the documents
            lines += ["-DOCSTART-", ""]
            for tokens, tags in doc:
                lines.extend(f"{tok}\t{tag}" for tok, tag in zip(tokens, tags, strict=True))
                lines.append("")
        write_lines(out / f"ner/{split}.conll", lines)
    if corpora.translate:
        counts = {split: n["pairs"] for split, n in report["translate"]["splits"].items()}
        translate_corpus.write_processed(cfg, corpora.translate, counts)
    for task, splits in corpora.hooked.items():
        hooked(cfg)[task].write(cfg, splits)
    write_json(Path(cfg.paths.reports) / "data.json", report)
    print(check.format_report(report))
