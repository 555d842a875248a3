"""Shared fixtures and helpers: tiny configs whose paths all live in a temp dir, synthetic corpora written as the
earlier stages would, tiny models trained once per session, and the real corpora when DATA_MIRROR is set.

Test files import what they need from here (`from tests.conftest import ...`), never from each other."""

import collections
import dataclasses
import gzip
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import config, stages, text, vocab
from pipeline.core.config import SPLITS
from pipeline.core.files import write_lines
from pipeline.core.vocab import PAD_ID
from pipeline.ner import evaluate as ner_evaluate
from pipeline.ner import lexicon
from pipeline.ner import train as ner_train
from pipeline.stages import fetch
from pipeline.translate import corpus as translate_corpus
from pipeline.translate import evaluate as translate_evaluate
from pipeline.translate import model as seq2seq
from pipeline.translate import train as translate_train
from pipeline.translate.config import Translate

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
MIRROR = os.environ.get("DATA_MIRROR")
needs_data = pytest.mark.skipif(not MIRROR, reason="needs the real corpora: set DATA_MIRROR=<dir like ../shared/data>")


def path_overrides(base: Path, raw: Path | None = None) -> list[str]:
    """`paths.*=...` overrides that put every artifact under `base` (raw data optionally elsewhere)."""
    out = [f'paths.{f.name}="{base / f.name}"' for f in dataclasses.fields(config.Paths)]
    if raw is not None:
        out.append(f'paths.raw="{raw}"')
    return out


def tiny_config(base: Path, *overrides: str, raw: Path | None = None) -> config.Config:
    return config.load(TINY, [*path_overrides(base, raw), *overrides])


# ------------------------------------------------------------------------------------------------ raw files


RAW_CONLL = (
    "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\nPeter NNP B-NP B-PER\n"
)


def write_file(path: Path, text, gz: bool = False) -> Path:
    """Write str or bytes (gzipped text if gz), creating the parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def fake_raw(raw: Path, conll: str = RAW_CONLL) -> Path:
    """A raw dir with synthetic CoNLL, Multi30k and Shakespeare files, laid out like the real one."""
    for split in ("train", "valid", "test"):
        write_file(raw / f"conll2003/{split}.txt", conll)
    for name in ("train", "val", "test_2016_flickr"):
        write_file(raw / f"multi30k/{name}.en.gz", "A man .\nTwo dogs run.\n", gz=True)
        write_file(raw / f"multi30k/{name}.de.gz", "Ein Mann .\nZwei Hunde rennen.\n", gz=True)
        write_file(raw / f"multi30k/{name}.fr.gz", "Un homme .\nDeux chiens courent.\n", gz=True)
    write_file(raw / "shakespeare/input.txt", "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3)
    return raw


# ------------------------------------------------------------------------------------- synthetic NER corpus

NAMES = (["John", "Smith"], ["Mary"], ["Angela", "Merkel"], ["Peter", "Blackburn"])
PLACES = (["Paris"], ["New", "York"], ["Germany"], ["Los", "Angeles"])
ORGS = (["EU"], ["Reuters"], ["European", "Commission"], ["FIFA"])
MISC = (["German"], ["British"], ["French"])
TEMPLATES = (
    ("{PER} visited {LOC} on Monday .", ()),
    ("{ORG} rejects {MISC} call to boycott {MISC} lamb .", ()),
    ("{PER} , who works for {ORG} , lives in {LOC} .", ()),
    ("the {MISC} team lost 3-1 to {ORG} in {LOC} .", ()),
)

# Word statistics for the synthetic tagger's lexicon (a made-up table: names mostly Capitalised, with their own
# clusters).
SYNTHETIC_PROBS = {w: -12.0 for w in ("john", "mary", "paris", "monday", "the", "to", "in", "on")}
SYNTHETIC_PROBS |= {w: -10.0 for w in ("John", "Mary", "Paris", "Monday", "Germany", "EU", "FIFA")}
SYNTHETIC_CLUSTERS = {
    "John": 0b100, "Mary": 0b100, "Paris": 0b101, "Germany": 0b101, "EU": 0b110, "the": 0b111, "Monday": 0b1000,
}  # fmt: skip

TINY_NER = [
    "ner.char_dim=8",
    "ner.char_filters=8",
    "ner.units=16",
    "ner.dropout=0.0",
    "ner.batch_size=4",
    "ner.bucket_width=8",
    "ner.learning_rate=0.02",
    "ner.epochs=40",
    "ner.patience=3",
]


def synthetic(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """n sentences from the templates, with IOB2 tags."""
    rng, pools = random.Random(seed), {"PER": NAMES, "LOC": PLACES, "ORG": ORGS, "MISC": MISC}
    out = []
    for _ in range(n):
        template, _ = rng.choice(TEMPLATES)
        words, tags = [], []
        for piece in template.split():
            if piece.startswith("{"):
                kind = piece[1:-1]
                span = rng.choice(pools[kind])
                words += span
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(span) - 1)
            else:
                words.append(piece)
                tags.append("O")
        out.append((words, tags))
    return out


def plain_inputs(words, max_word_length: int) -> dict:
    """Tagger inputs for word ids [batch, time]: one character and one casing class for every word, no memory
    keys, each sentence its own document."""
    import tensorflow as tf

    words = tf.constant(words)
    return {
        "words": words,
        "chars": tf.ones([*words.shape, max_word_length], tf.int32),
        "casing": tf.ones_like(words),
        "key": tf.zeros_like(words),
        "doc": tf.range(words.shape[0]),
    }


def write_corpus(cfg, sentences, dim: int = 16, doc_size: int = 0) -> None:
    """What the prepare, vocab and embed stages would write, for these sentences as every split
    (in documents of doc_size sentences, or one document)."""

    for split in ("train", "valid", "test"):
        lines = []
        for i, (words, tags) in enumerate(sentences):
            if i % (doc_size or len(sentences)) == 0:
                lines += ["-DOCSTART-", ""]
            lines += [*map("\t".join, zip(words, tags, strict=True)), ""]
        write_lines(Path(cfg.paths.processed) / f"ner/{split}.conll", lines)
    words = collections.Counter(w for s, _ in sentences for w in s)
    chars = collections.Counter(c for w in words for c in w)
    vocab.save(vocab.vocab_path(cfg, "ner_words"), vocab.build(words, vocab.SPECIALS["ner_words"], 1))
    vocab.save(vocab.vocab_path(cfg, "ner_chars"), vocab.build(chars, vocab.SPECIALS["ner_chars"], 1))
    tags = sorted({t for _, y in sentences for t in y} - {"O"}, key=lambda t: (t[2:], t))
    vocab.save(vocab.vocab_path(cfg, "ner_tags"), ["O", *tags])
    n = len(vocab.load_named(cfg, "ner_words"))
    matrix = np.random.default_rng(0).normal(0, 0.1, (n, dim)).astype("float32")
    matrix[0] = 0
    Path(cfg.paths.embeddings).mkdir(parents=True, exist_ok=True)
    np.save(Path(cfg.paths.embeddings) / "ner_words.npy", matrix)
    rows = vocab.load_named(cfg, "ner_words")
    lexicon.save(cfg, lexicon.features(rows, SYNTHETIC_PROBS, SYNTHETIC_CLUSTERS, 2))


# ------------------------------------------------------------------------ a hand-made lexicon vocabulary

LEXICON_TOKENS = ["<pad>", "<unk>", "Brussels", "BRUSSELS", "the", "Xyzzy"]
LEXICON_PROBS = {"brussels": -14.0, "Brussels": -11.0, "BRUSSELS": -16.0, "the": -3.0, "The": -5.0}
LEXICON_CLUSTERS = {"Brussels": 0b1110100110, "the": 0b1011, "The": 0b1011, "cat": 0b1110100111, "Paris": 0}


# ----------------------------------------------------------------------------- synthetic parallel corpus

WORDS = "man woman dog child ball red blue runs jumps sits on the a in park street water green big small".split()
TINY_TRANSLATE = ("translate.dropout=0.0", "translate.word_dropout=0.0", "translate.label_smoothing=0.0")


def synthetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """A word-for-word 'translation': reversed word order, capitalised, with a full stop glued on."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(3, 8))]
        pairs.append((" ".join(words), " ".join(w.capitalize() for w in reversed(words)) + "."))
    return pairs


def write_processed_pairs(cfg, pairs) -> None:
    """`pairs` as every processed translation split, written as `prepare` writes them (shards and manifest)."""
    translate_corpus.write_processed(cfg, dict.fromkeys(SPLITS, pairs), dict.fromkeys(SPLITS, len(pairs)))


def write_parallel(cfg, pairs, dim: int = 16) -> None:
    """What the prepare, vocab and embed stages would write, with these pairs as every split."""

    write_processed_pairs(cfg, pairs)
    rng = np.random.default_rng(0)
    for name, side, joiner in (("src", 0, False), ("tgt", 1, True)):
        tokens = text.tokenize_batches([p[side] for p in pairs], cfg.text, joiner=joiner)
        vocab.save(
            vocab.vocab_path(cfg, name),
            vocab.build(collections.Counter(t for s in tokens for t in s), vocab.SPECIALS[name], 1),
        )
        matrix = rng.normal(0, 0.1, (len(vocab.load_named(cfg, name)), dim)).astype("float32")
        Path(cfg.paths.embeddings).mkdir(parents=True, exist_ok=True)
        np.save(Path(cfg.paths.embeddings) / f"{name}.npy", matrix)


# ------------------------------------------------------------------------------- a tiny seq2seq model

TINY_SEQ2SEQ = Translate(encoder_units=16, decoder_units=32, dropout=0.0, word_dropout=0.0, label_smoothing=0.0)


def tiny_model(src_vocab=30, tgt_vocab=40, dim=16, seed=0, **changes):
    """A seeded Seq2Seq on random embedding matrices, with TINY_SEQ2SEQ's sizes and `changes`."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    matrices = [rng.normal(0, 0.3, (rows, dim)).astype(np.float32) for rows in (src_vocab, tgt_vocab)]
    return seq2seq.Seq2Seq(*matrices, dataclasses.replace(TINY_SEQ2SEQ, **changes))


def pad(rows: list[list[int]], width: int | None = None) -> np.ndarray:
    """Token rows right-padded with PAD_ID to one width (the longest row's, or `width`)."""

    out = np.full((len(rows), width or max(map(len, rows))), PAD_ID, np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


# ------------------------------------------------------------------ tiny models, trained once per session

# A few seconds of training on the synthetic corpora: enough for both models to give varied output (what export
# parity needs), with the default tagger's ensemble, pretrained dropout and document memory.
TRAINED_SETTINGS = (
    *TINY_NER,
    "ner.ensemble=2",
    "ner.pretrained_dropout=0.25",
    "ner.doc_memory=true",
    "ner.epochs=8",
    "ner.patience=8",
    *TINY_TRANSLATE,
    "translate.epochs=12",
    "translate.patience=12",
    "translate.lr_patience=99",
    "translate.learning_rate=0.01",
    "translate.batch_size=10",
    "translate.encoder_units=32",
    "translate.decoder_units=64",
)


def copy_run(source: Path, dest: Path, *overrides: str, raw: Path | None = None) -> config.Config:
    """A private copy of a trained run's artifact tree, and the tiny config that points at it."""
    shutil.copytree(source, dest)
    return tiny_config(dest, *overrides, raw=raw)


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """Both tiny models trained (train-ner, train-translate) and evaluated on the synthetic corpora, once per
    session, with TRAINED_SETTINGS: the base dir. Take a copy (copy_run) rather than writing into it."""

    base = tmp_path_factory.mktemp("synthetic-run")
    cfg = tiny_config(base, *TRAINED_SETTINGS)
    write_corpus(cfg, synthetic(20, seed=0), doc_size=5)
    write_parallel(cfg, synthetic_pairs(30, seed=0))
    ner_train.run(cfg)
    ner_evaluate.run(cfg)
    translate_train.run(cfg)
    translate_evaluate.run(cfg)
    return base


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """The real raw corpora, fetched once per test session by the `data` stage from DATA_MIRROR."""
    if not MIRROR:
        pytest.skip("needs the real corpora: set DATA_MIRROR")

    base = tmp_path_factory.mktemp("raw")
    fetch.fetch(tiny_config(base, raw=base / "raw"), fetch.SOURCES)
    return base / "raw"


# The tagger settings of the real-corpora run: the tiny sizes, a few epochs at a rate that learns something.
REAL_SETTINGS = (*TINY_NER, "ner.epochs=3", "ner.learning_rate=0.01", "translate.epochs=1")
REAL_STAGES = (
    "data", "prepare", "vocab", "embed", "train-ner", "evaluate-ner", "train-translate", "evaluate-translate", "export",
)  # fmt: skip


@pytest.fixture(scope="session")
def real_run(tmp_path_factory, raw_dir) -> config.Config:
    """Every stage from the raw corpora to export on the tiny config (REAL_SETTINGS), once per session: the
    config. Tests read its artifacts and must leave them as they found them."""

    cfg = tiny_config(tmp_path_factory.mktemp("real-run"), *REAL_SETTINGS, raw=raw_dir)
    for name in REAL_STAGES:
        stages.run(cfg, name)
    return cfg


def assert_best_weights_are_the_average(model, out: Path) -> None:
    """<out>/best.weights.h5, loaded into `model`, equals the weight average the checkpoint in <out>/ckpt holds
    (after a one-epoch run, whose one evaluation saved both)."""
    import tensorflow as tf

    model.load_weights(out / "best.weights.h5")
    reader = tf.train.load_checkpoint(str(out / "ckpt"))
    assert reader.get_tensor("average/updates/.ATTRIBUTES/VARIABLE_VALUE") > 0
    for i, v in enumerate(model.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), reader.get_tensor(f"average/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
