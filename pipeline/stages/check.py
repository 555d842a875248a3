"""The data check that `prepare` and `pipeline check-data` run: what a user should know about their corpora
before training on them. Errors stop earlier, at reading (file:line, exit 2); everything here is a count or a
warning, and warnings never stop.

    counts and length percentiles per split, lines longer than text.max_length, source = target copies,
    duplicate pairs, valid/test sentences that also occur in train (a leak), entity counts per type, types
    never seen in train, tag transitions that were repaired (file:line), pairs skipped for an empty side
"""

import array
import collections
import tempfile
from pathlib import Path

import numpy as np

from pipeline.core.config import Config, task_hooks

SHOWN = 5  # file:line examples a warning lists
# Short lines recur in any news corpus (CoNLL-2003: 5.9 % of valid, 3.6 % of test sentences are in train, mostly
# headlines and score lines); above this share the repeats are more than that.
NER_LEAK = 0.10


def percentiles(lengths: list[int]) -> dict:
    if not lengths:
        return {}
    p = np.percentile(lengths, [50, 95, 99])
    return {"p50": float(p[0]), "p95": float(p[1]), "p99": float(p[2]), "max": int(max(lengths))}


def _where(items: list[tuple], total: int = 0) -> str:
    """The first SHOWN items as file:line, and how many more of `total` (default: all of them are listed)."""
    total = total or len(items)
    shown = ", ".join(f"{f}:{n}" for f, n, *_ in items[:SHOWN])
    return shown + (f" and {total - SHOWN} more" if total > SHOWN else "")


def _overlap(train: set, split_items: list) -> dict:
    leaked = [x for x in split_items if x in train]
    return {"count": len(leaked), "share": len(leaked) / (len(split_items) or 1)}


def histogram_percentiles(counts: collections.Counter) -> dict:
    """percentiles() of the lengths a Counter holds ({length: how many}), without listing them: the same figures
    (numpy's linear interpolation)."""
    if not counts:
        return {}
    values = np.array(sorted(counts), dtype=np.float64)
    ends = np.cumsum([counts[v] for v in sorted(counts)])  # the last (0-based) position of each value, plus one
    out = {}
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        pos = p / 100 * (ends[-1] - 1)
        lo, hi = int(np.floor(pos)), int(np.ceil(pos))
        a, b = values[np.searchsorted(ends, lo, side="right")], values[np.searchsorted(ends, hi, side="right")]
        out[name] = float(a + (b - a) * (pos - lo))
    return out | {"max": int(values[-1])}


class DistinctCount:
    """How many distinct 64-bit hashes were added, in bounded memory: each goes to one of BUCKETS temporary files
    by its low bits (through a small buffer), and each file is deduplicated on its own at the end."""

    BUCKETS, BUFFER = 64, 4096

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="pipeline-check-")
        self.buffers = [array.array("q") for _ in range(self.BUCKETS)]
        self.added = 0

    def add(self, h: int) -> None:
        buf = self.buffers[h % self.BUCKETS]
        buf.append(h)
        self.added += 1
        if len(buf) >= self.BUFFER:
            self._flush(h % self.BUCKETS)

    def _flush(self, b: int) -> None:
        with open(Path(self.dir.name) / str(b), "ab") as f:
            self.buffers[b].tofile(f)
        self.buffers[b] = array.array("q")

    def distinct(self) -> int:
        total = 0
        for b in range(self.BUCKETS):
            self._flush(b)
            total += len(np.unique(np.fromfile(Path(self.dir.name) / str(b), np.int64)))
        self.dir.cleanup()
        return total


def check_parallel(cfg: Config, splits: dict, warnings: list[str]) -> dict:
    """splits: {split: an iterable of (source, target) pairs with .skipped / .skipped_count of the last pass}, each
    read once. Held in memory: length histograms, and the hashes of valid and test's source sentences (they go
    first, so that train's pass only marks which of them it contains); duplicates are counted on disk
    (DistinctCount), so memory does not grow with the corpus."""
    out, limit = {}, cfg.text.max_length
    eval_sources: dict[str, np.ndarray] = {}
    wanted, seen_in_train = set(), set()
    order = [s for s in splits if s != "train"] + ["train"]
    for split in order:
        read = splits[split]
        src_len, tgt_len = collections.Counter(), collections.Counter()
        hashes, sources = DistinctCount(), array.array("q")
        longer = copies = 0
        for s, t in read:
            a, b = len(s.split()), len(t.split())
            src_len[a] += 1
            tgt_len[b] += 1
            longer += max(a, b) > limit
            copies += s == t
            hashes.add(hash((s, t)))
            if split != "train":
                sources.append(hash(s))
            elif (key := hash(s)) in wanted:
                seen_in_train.add(key)
        n = hashes.added
        entry = {
            "pairs": n,
            "source_words": histogram_percentiles(src_len),
            "target_words": histogram_percentiles(tgt_len),
            "longer_than_max_length": longer,
            "copies": copies,
            "duplicate_pairs": n - hashes.distinct(),
            "skipped_empty": read.skipped_count,
        }
        if split != "train":
            eval_sources[split] = np.frombuffer(sources, np.int64)
            wanted.update(eval_sources[split].tolist())  # the keys train's pass looks for
        _parallel_warnings(cfg, split, entry, read, warnings)
        out[split] = entry
    for split, keys in eval_sources.items():
        count = int(np.isin(keys, np.fromiter(seen_in_train, np.int64, len(seen_in_train))).sum())
        out[split]["source_in_train"] = {"count": count, "share": count / (len(keys) or 1)}
        if count:
            warnings.append(
                f"translate/{split}: {count} of {len(keys)} source sentences also occur in train (a leak: scores on "
                "them overstate quality)"
            )
    return {s: out[s] for s in splits}


def _parallel_warnings(cfg: Config, split: str, entry: dict, read, warnings: list[str]) -> None:
    limit = cfg.text.max_length
    if read.skipped_count:
        warnings.append(
            f"translate/{split}: {read.skipped_count} pairs skipped for an empty side: "
            f"{_where(read.skipped, read.skipped_count)}"
        )
    if entry["longer_than_max_length"]:
        warnings.append(
            f"translate/{split}: {entry['longer_than_max_length']} pairs have a side over text.max_length={limit} "
            "words (truncated; the tokenizer also splits off punctuation, so a few more are)"
        )
    if entry["copies"] > 0.05 * entry["pairs"]:
        warnings.append(f"translate/{split}: {entry['copies']} pairs have source = target (untranslated copies)")


def check_ner(cfg: Config, splits: dict, warnings: list[str]) -> dict:
    """splits: {split: ConllFile}."""
    out, limit = {}, cfg.text.max_length
    sentences = {s: [x for d in read.documents for x in d] for s, read in splits.items()}
    train_types = {t[2:] for _, tags in sentences["train"] for t in tags if t != "O"}
    train_text = {tuple(tokens) for tokens, _ in sentences["train"]}
    for split, read in splits.items():
        rows = sentences[split]
        types = collections.Counter(t[2:] for _, tags in rows for t in tags if t.startswith("B-"))
        entry = {
            "documents": len(read.documents) if read.docstart else 0,
            "sentences": len(rows),
            "tokens": sum(len(t) for t, _ in rows),
            "entities": sum(types.values()),
            "entity_types": dict(sorted(types.items())),
            "tokens_per_sentence": percentiles([len(t) for t, _ in rows]),
            "longer_than_max_length": sum(len(t) > limit for t, _ in rows),
            "scheme": read.scheme,
            "repaired": len(read.repairs),
        }
        unseen = sorted(set(types) - train_types)
        if split != "train":
            entry["unseen_types"] = unseen
            entry["sentences_in_train"] = _overlap(train_text, [tuple(t) for t, _ in rows])
            if entry["sentences_in_train"]["share"] > NER_LEAK:
                warnings.append(
                    f"ner/{split}: {entry['sentences_in_train']['count']} of {len(rows)} sentences also occur in train "
                    "(a leak: scores on them overstate quality)"
                )
        if unseen:
            counts = ", ".join(f"{t} ({types[t]})" for t in unseen)
            warnings.append(f"ner/{split}: entity types never seen in train, so never predicted: {counts}")
        if read.repairs:
            where = [(read.path, n, why) for n, why in read.repairs]
            warnings.append(
                f"ner/{split}: {len(read.repairs)} invalid {read.scheme.upper()} transitions repaired: {_where(where)} "
                f"(first: {read.repairs[0][1]})"
            )
        if entry["longer_than_max_length"]:
            warnings.append(
                f"ner/{split}: {entry['longer_than_max_length']} sentences over text.max_length={limit} tokens "
                "(training, and tagging raw text, read only the first ones)"
            )
        out[split] = entry
    return out


def format_report(report: dict) -> str:
    lines = []
    for split, n in report.get("ner", {}).get("splits", {}).items():
        lines.append(
            f"  ner/{split:5s}  {n['sentences']:6d} sentences {n['tokens']:7d} tokens {n['entities']:6d} entities "
            f"({len(n['entity_types'])} types, {n['scheme'].upper()}"
            + (f", {n['documents']} documents)" if n["documents"] else ", no documents)")
        )
    for split, n in report.get("translate", {}).get("splits", {}).items():
        lines.append(
            f"  translate/{split:5s}  {n['pairs']:6d} pairs, words per source p50/p95/max "
            f"{n['source_words']['p50']:.0f}/{n['source_words']['p95']:.0f}/{n['source_words']['max']}"
        )
    for task, entry in report.items():
        if task not in ("ner", "translate", "warnings") and (hooks := task_hooks(task)) is not None:
            lines += hooks.format_check(entry)
    for task in report:
        if task == "warnings":
            continue
        for split, how in report.get(task, {}).get("held_out", {}).items():
            lines.append(f"  {task}/{split}: {how}")
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)
