"""Stage `vocab`: build, save and load vocabularies (text files, one token a line, usable as SavedModel assets).

Ids are line numbers: 0 <pad>, 1 <unk>, and for translation targets 2 <s>, 3 </s>. The NER tag file
holds labels only (O first), since tags are outputs and padding is masked.

    paths.vocab/src.txt  tgt.txt  ner_words.txt  ner_chars.txt  ner_tags.txt
    paths.reports/vocab.json      OOV token and type rates per vocabulary and split
"""

import collections
from pathlib import Path

import tensorflow as tf

from pipeline.core.config import Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import write_lines

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


SPECIALS = {"src": (PAD, UNK), "tgt": (PAD, UNK, BOS, EOS), "ner_words": (PAD, UNK), "ner_chars": (PAD, UNK)}


NAMES = ("src", "tgt", "ner_words", "ner_chars", "ner_tags")


def vocab_path(cfg: Config, name: str) -> Path:
    return Path(cfg.paths.vocab) / f"{name}.txt"


def build(counts: collections.Counter, specials: tuple[str, ...], min_freq: int, max_size: int = 0) -> list[str]:
    """Specials first, then tokens by falling frequency (ties alphabetical, so the result is deterministic)."""
    kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in specials), key=lambda t: (-counts[t], t))
    tokens = list(specials) + kept
    return tokens[:max_size] if max_size else tokens


def save(path: Path, tokens: list[str]) -> None:
    write_lines(path, tokens)


def load(path: Path, specials: tuple[str, ...] = ()) -> list[str]:
    """Read a vocabulary and check it: no empty or duplicate entries, specials where the ids expect them."""
    try:
        tokens = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise InputError(f"{path}: vocabulary not found", hint="run `make vocab` first") from None
    if tokens and tokens[-1] == "":
        tokens.pop()
    seen = {}
    for number, tok in enumerate(tokens, start=1):
        if not tok or tok != tok.strip():
            raise at(path, number, f"invalid vocabulary entry {tok!r}")
        if tok in seen:
            raise at(path, number, f"duplicate entry {tok!r} (first on line {seen[tok]})")
        seen[tok] = number
    if tuple(tokens[: len(specials)]) != specials:
        raise InputError(f"{path}: must start with {', '.join(specials)}, found {tokens[: len(specials)]}")
    return tokens


def load_named(cfg: Config, name: str) -> list[str]:
    return load(vocab_path(cfg, name), SPECIALS.get(name, ()))


_TOKEN = (tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
_ID = (tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)


def _file_table(path: Path | str, key: tuple, value: tuple, default) -> tf.lookup.StaticHashTable:
    """A table read from the vocabulary file (tracked as an asset when saved in a SavedModel)."""
    init = tf.lookup.TextFileInitializer(str(path), *key, *value)
    return tf.lookup.StaticHashTable(init, default_value=default)


def lookup_table(path: Path | str, default: int = UNK_ID) -> tf.lookup.StaticHashTable:
    """token -> id."""
    return _file_table(path, _TOKEN, _ID, default)


def inverse_table(path: Path | str) -> tf.lookup.StaticHashTable:
    """id -> token; unknown ids map to <unk>."""
    return _file_table(path, _ID, _TOKEN, UNK)


def encode(tokens: list[str], index: dict[str, int]) -> list[int]:
    return [index.get(t, UNK_ID) for t in tokens]


def decode(ids: list[int], tokens: list[str]) -> list[str]:
    return [tokens[i] if 0 <= i < len(tokens) else UNK for i in ids]


def oov_rates(counts: collections.Counter, known: set[str]) -> dict:
    """Share of running tokens and of distinct types (counts: token -> occurrences) outside the vocabulary."""
    n_tokens = sum(counts.values()) or 1
    oov_tokens = sum(c for t, c in counts.items() if t not in known)
    oov_types = sum(1 for t in counts if t not in known)
    return {
        "tokens": sum(counts.values()),
        "types": len(counts),
        "oov_token_rate": oov_tokens / n_tokens,
        "oov_type_rate": oov_types / (len(counts) or 1),
    }
