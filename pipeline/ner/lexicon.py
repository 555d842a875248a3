"""English word statistics for the tagger, aligned to the ner_words vocabulary (written by stage `embed`).

    paths.embeddings/ner_lexicon.npz   dense   float32 [vocab size, 6]  capitalisation prior and frequency
                                       cluster int32 [vocab size]      Brown cluster (1..999; 0 = none)
                                       prefix  int32 [vocab size]      its first PREFIX_BITS bits (0 = none)
                                       gazetteer float32 [vocab size, 8] place and person name lists (gazetteer.py)

The source is the spacy-lookups-data package (MIT): English unigram log-probabilities of a million case-sensitive
word forms and Brown clusters (999) of about 190,000 of them, counted on far more text than CoNLL-2003. The vectors
we have keep only 20,000 distinct rows (data/raw/vectors/SOURCE.md), so a rare name mostly shares its row with
others; how often a word is written capitalised, and its cluster, are evidence the tagger lacks for names it
never saw in training, and for ALL-CAPS headlines, where the token's own casing says nothing.

Each row reads the statistics of the token's lowercase, Capitalised and UPPER forms, so "BRUSSELS", "Brussels"
and "brussels" share the capitalisation prior (the casing class tells them apart):
    0-2  the share of each form in their summed probability  (what a word usually looks like)
    3    (log of that sum + 20) / 10                          ("the" 1.7, "Germany" 1.0, rare names 0.1-0.3)
    4    whether any form has a probability at all
    5    whether the token itself, as written, has one
The cluster is that of the token as written, else of its most probable form. Rows of <pad>, <unk> and tokens
without statistics are zero, as are the rows of words that word dropout turns into <unk> in training.
"""

import collections
import dataclasses
import gzip
import json
import math
from pathlib import Path

import numpy as np

from pipeline.core import vocab
from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.files import atomic_path, package_file
from pipeline.ner import gazetteer

DENSE = 6
PREFIX_BITS = 7  # 117 prefixes of the 999 clusters: coarse classes that rare words share with frequent ones
FLOOR = -20.0  # a little below the table's smallest log-probability (-19.5)
PACKAGE = "spacy_lookups_data"


def source_tables() -> tuple[dict[str, float], dict[str, int]]:
    """(log-probability, Brown cluster) by word form, from the installed spacy-lookups-data package."""
    tables = []
    for name in ("en_lexeme_prob.json.gz", "en_lexeme_cluster.json.gz"):
        with package_file(PACKAGE, f"data/{name}") as path, gzip.open(path, "rt", encoding="utf-8") as f:
            tables.append(json.load(f))
    return tables[0], tables[1]


def forms(token: str) -> tuple[str, str, str]:
    lower = token.lower()
    return lower, lower.capitalize(), lower.upper()


def features(
    tokens: list[str], probs: dict[str, float], clusters: dict[str, int], n_specials: int, names: dict | None = None
) -> dict:
    """The arrays of ner_lexicon.npz for vocabulary `tokens` (the first n_specials rows stay zero). `names`:
    gazetteer.source_tables(); without them the gazetteer columns are zero."""
    ids = {c: i + 1 for i, c in enumerate(sorted({c for c in clusters.values() if c}))}
    prefixes = {p: i + 1 for i, p in enumerate(sorted({bin(c)[2 : 2 + PREFIX_BITS] for c in ids}))}
    dense = np.zeros((len(tokens), DENSE), np.float32)
    cluster = np.zeros(len(tokens), np.int32)
    prefix = np.zeros(len(tokens), np.int32)
    for i, token in enumerate(tokens[n_specials:], start=n_specials):
        shapes = forms(token)
        p = [math.exp(probs[f]) if f in probs else 0.0 for f in shapes]
        total = sum(p)
        if total > 0:
            dense[i, :3] = [x / total for x in p]
            dense[i, 3] = (math.log(total) - FLOOR) / 10
            dense[i, 4] = 1.0
        dense[i, 5] = float(token in probs)
        c = clusters.get(token, 0) or (clusters.get(shapes[int(np.argmax(p))], 0) if total > 0 else 0)
        if c:
            cluster[i], prefix[i] = ids[c], prefixes[bin(c)[2 : 2 + PREFIX_BITS]]
    sizes = np.array([len(ids) + 1, len(prefixes) + 1], np.int32)
    if names is None:
        lists = np.zeros((len(tokens), gazetteer.WIDTH), np.float32)
    else:
        lists = gazetteer.features(tokens, names, n_specials)
    return {"dense": dense, "cluster": cluster, "prefix": prefix, "sizes": sizes, "gazetteer": lists}


def path(cfg: Config) -> Path:
    return Path(cfg.paths.embeddings) / "ner_lexicon.npz"


def save(cfg: Config, arrays: dict) -> None:
    with atomic_path(path(cfg)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load(cfg: Config) -> dict[str, np.ndarray]:
    """The arrays this stage wrote, checked to have one row per line of ner_words.txt."""
    where = path(cfg)
    try:
        with np.load(where, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{where}: the word statistics are missing", hint="run `make embed` first") from None
    rows = len(vocab.load_named(cfg, "ner_words"))
    shapes = {"dense": (rows, DENSE), "gazetteer": (rows, gazetteer.WIDTH)}
    if set(arrays) != {"dense", "cluster", "prefix", "sizes", "gazetteer"} or any(
        arrays[k].shape != shape for k, shape in shapes.items()
    ):
        raise InputError(
            f"{where}: does not match the {rows} lines of ner_words.txt",
            hint="run `make embed` again after `make vocab`",
        )
    return arrays


def english(cfg: Config) -> bool:
    """The statistics and name lists are English: they serve only an English NER corpus (en, en-GB, ...)."""
    return cfg.ner_data.lang.split("-")[0].lower() == "en"


def tagger_hparams(cfg: Config):
    """cfg.ner as the tagger is built: without word statistics and name lists unless the language is English."""
    return cfg.ner if english(cfg) else dataclasses.replace(cfg.ner, lexicon=False, gazetteer=False)


def for_tagger(cfg: Config) -> dict[str, np.ndarray] | None:
    """The arrays the tagger reads, when ner.lexicon or ner.gazetteer asks for them (English only)."""
    hp = tagger_hparams(cfg)
    return load(cfg) if hp.lexicon or hp.gazetteer else None


def coverage(arrays: dict, tokens: list[str], n_specials: int, splits: dict[str, collections.Counter]) -> dict:
    """Shares of vocabulary types (specials excluded) and of running tokens per split (token counts) that have
    statistics / a cluster. A running token outside the vocabulary maps to <unk> and so has neither."""
    has = {"prob": arrays["dense"][:, 4] > 0, "cluster": arrays["cluster"] > 0, "names": arrays["gazetteer"].any(1)}
    index = {t: i for i, t in enumerate(tokens)}

    def shares(rows: np.ndarray, weights: np.ndarray | None = None) -> dict:
        w = np.ones(len(rows)) if weights is None else weights
        total = int(w.sum())
        return {"count": total} | {k: float((v[rows] * w).sum() / total) if total else 0.0 for k, v in has.items()}

    out = {"types": shares(np.arange(n_specials, len(tokens))), "tokens": {}}
    for split, counts in splits.items():
        rows = np.array(vocab.encode(list(counts), index), np.int64)
        out["tokens"][split] = shares(rows, np.array(list(counts.values()), np.float64))
    return out
