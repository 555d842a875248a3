"""Typed configuration: one frozen dataclass per stage, loaded from TOML plus `section.key=value` overrides.

Every value is set once, here or in a config file. Values that follow from data (vocabulary sizes, the
embedding width) are never configured: later stages read them from the artifacts that earlier stages write.
This module imports nothing heavy so that `make` can fingerprint configs without starting TensorFlow.
"""

import dataclasses
import hashlib
import importlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.options import opt


@dataclass(frozen=True)
class Paths:
    """Where every artifact lives. The Makefile mirrors these as file targets."""

    raw: str = opt("data/raw", "verified raw corpora and vectors, as downloaded or copied")
    processed: str = opt("data/processed", "normalised corpora in plain TSV / CoNLL")
    vocab: str = opt("data/vocab", "vocabularies, one token a line")
    embeddings: str = opt("data/embeddings", "embedding matrices (.npy) and trained word vectors")
    reports: str = opt("data/reports", "JSON / Markdown / HTML reports")
    models: str = opt("saved_models", "checkpoints and exported SavedModels")
    stamps: str = opt("data/stamps", "per-stage config fingerprints and completion stamps used by make")


@dataclass(frozen=True)
class Prepare:
    """Stage `prepare`: which corpora to read and how to split them."""

    translation_corpus: str = opt("multi30k", "parallel corpus for the translator", ("multi30k", "tatoeba"))
    source_lang: str = opt("en", "source language code", ("en", "de", "fr"))
    target_lang: str = opt("de", "target language code", ("en", "de", "fr"))
    max_train: int = opt(0, "keep only the first N training sentences / pairs (0 = all); for tiny configs")
    max_eval: int = opt(0, "keep only the first N valid/test sentences / pairs (0 = all)")
    tatoeba_seed: int = opt(1234, "seed of Tatoeba's deterministic train/valid/test split")
    tatoeba_valid: int = opt(2000, "Tatoeba English sentences held out for valid")
    tatoeba_test: int = opt(2000, "Tatoeba English sentences held out for test")


@dataclass(frozen=True)
class Text:
    """The one tokenizer (pipeline/core/text.py), shared by tf.data and the exported serving graphs."""

    normalize: str = opt(
        "basic",
        "basic = core-TF whitespace/control/quote clean-up (runs in stock TF Serving); "
        "NFC/NFKC also apply Unicode normalisation (tensorflow-text op)",
        ("none", "basic", "NFC", "NFKC"),
    )
    lowercase: bool = opt(False, "lowercase everything (keep False for cased BLEU)")
    max_length: int = opt(100, "tokens kept per sentence; longer input is truncated")


@dataclass(frozen=True)
class Vocab:
    """Stage `vocab`: sizes and cut-offs. Ids: 0 <pad>, 1 <unk>, then <s>, </s> for translation."""

    min_freq: int = opt(2, "translation vocabularies keep tokens seen at least this often in train")
    max_size: int = opt(0, "cap on translation vocabulary size, specials included (0 = no cap)")
    ner_min_freq: int = opt(1, "NER word vocabulary keeps train words seen at least this often")
    char_min_freq: int = opt(1, "NER character vocabulary keeps characters seen at least this often")
    ner_pretrained_words: bool = opt(
        True,
        "also keep valid/test words that have a pretrained English vector (embed.en): their rows keep the "
        "pretrained values, so no label is seen, and the tagger does not map them to <unk>",
    )


# ---- stage `embed` (owned by pipeline/stages/embed.py) ----
@dataclass(frozen=True)
class Embed:
    """Stage `embed`: word vectors per language -> embedding matrices aligned to the vocabularies."""

    en: str = opt("vectors/en.cc0.300d.txt.gz", "English vectors, relative to paths.raw; empty = train Word2Vec")
    fr: str = opt("vectors/fr.cc0.300d.txt.gz", "French vectors, relative to paths.raw; empty = train Word2Vec")
    de: str = opt("", "German vectors, relative to paths.raw; empty = train Word2Vec (no German file ships)")
    format: str = opt("auto", "vectors file format", ("auto", "glove", "word2vec", "word2vec_binary", "fasttext"))
    oov_init: str = opt("normal", "rows of words without a vector", ("normal", "zeros"))
    oov_scale: float = opt(0.1, "standard deviation of the seeded normal init of rows without a vector")
    seed: int = opt(1, "seed of the OOV rows and of Word2Vec training")
    w2v_dim: int = opt(300, "Word2Vec dimension")
    w2v_window: int = opt(5, "Word2Vec context window")
    w2v_min_count: int = opt(2, "Word2Vec ignores words rarer than this")
    w2v_epochs: int = opt(10, "Word2Vec epochs")
    w2v_sg: bool = opt(True, "Word2Vec skip-gram (true) or CBOW (false)")


# ---- stage `export` (owned by pipeline/stages/export.py) ----
@dataclass(frozen=True)
class Export:
    """Stage `export`: TF Serving SavedModels of both models (the search settings come from [translate])."""

    serving_root: str = opt(
        "/models",
        "where TF Serving sees paths.models (the docker mount): models.config names <root>/ner, <root>/translate",
    )


# Each task's section lives in its own folder; registering a task here is one line (a third task: one more).
TASK_SECTIONS = {"ner": "pipeline.ner.config:Ner", "translate": "pipeline.translate.config:Translate"}


def _task_section(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


SECTIONS = {
    "paths": Paths,
    "prepare": Prepare,
    "text": Text,
    "vocab": Vocab,
    "embed": Embed,
    **{name: _task_section(target) for name, target in TASK_SECTIONS.items()},
    "export": Export,
}
SPLITS = ("train", "valid", "test")
# Keys that existed once: a config that still sets one gets told why it is gone, not just "unknown key".
REMOVED = {
    "prepare.ner_context_tokens": "each CoNLL sentence is its own sequence; ner.doc_memory reads the document instead",
}


class _ConfigMethods:
    def section_dict(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))

    def fingerprint(self, sections: tuple[str, ...]) -> str:
        """A stable digest of the given sections; a stage reruns when the digest of what it reads changes."""
        blob = json.dumps({s: self.section_dict(s) for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {name: self.section_dict(name) for name in SECTIONS}


# cfg.<section> for every section, each defaulting to its dataclass defaults.
Config = dataclasses.make_dataclass(
    "Config",
    [(name, cls, field(default_factory=cls)) for name, cls in SECTIONS.items()],
    bases=(_ConfigMethods,),
    frozen=True,
)
Config.__module__ = __name__


def _coerce(where: str, value, ftype, choices):
    """Check one value against its declared type; ints are accepted where floats are expected."""
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, ftype) and not (ftype is int and isinstance(value, bool))
    if not ok:
        raise InputError(f"{where}: expected {ftype.__name__}, got {type(value).__name__} {value!r}")
    if choices and value not in choices:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _parse_override(text: str) -> tuple[str, str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise InputError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    section, name = key.split(".", 1)
    try:  # a TOML literal (42, 0.5, true, "x"); anything else is a bare string
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, name, value


def build(values: dict, source: str = "config") -> Config:
    """Validate a {section: {key: value}} mapping into a Config; unknown or mistyped keys are errors."""
    sections = {}
    for sname, entries in values.items():
        if sname not in SECTIONS:
            raise InputError(f"{source}: unknown section [{sname}] (known: {', '.join(SECTIONS)})")
        if not isinstance(entries, dict):
            raise InputError(f"{source}: [{sname}] must be a table")
        cls = SECTIONS[sname]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in entries.items():
            if f"{sname}.{key}" in REMOVED:
                raise InputError(f"{source}: {sname}.{key} was removed: {REMOVED[f'{sname}.{key}']}")
            if key not in fields:
                raise InputError(f"{source}: unknown key {sname}.{key} (known: {', '.join(fields)})")
            f = fields[key]
            kwargs[key] = _coerce(f"{source}: {sname}.{key}", value, f.type, f.metadata.get("choices"))
        sections[sname] = cls(**kwargs)
    return Config(**sections)


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a TOML config (or the defaults when path is None) and apply `section.key=value` overrides."""
    values: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: invalid TOML: {e}") from None
    for text in overrides:
        section, name, value = _parse_override(text)
        values.setdefault(section, {})
        if not isinstance(values[section], dict):
            raise InputError(f"override {text!r}: {section} is not a section")
        values[section][name] = value
    return build(values, source)


def describe(sections: tuple[str, ...]) -> str:
    """Help text: every key of the given sections with its default, type and meaning."""
    lines = []
    for sname in sections:
        cls = SECTIONS[sname]
        lines.append(f"[{sname}]  {cls.__doc__.strip().splitlines()[0]}")
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            extra = f" (one of: {', '.join(map(str, choices))})" if choices else ""
            lines.append(f"  {sname}.{f.name} = {f.default!r}  [{f.type.__name__}] {f.metadata['help']}{extra}")
    return "\n".join(lines)
