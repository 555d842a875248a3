"""A parallel corpus of any size, derived from a real one, for `make bench-scale` (pipeline/stages/bench_scale.py).

    <prefix>.<source_lang>.gz, <prefix>.<target_lang>.gz    aligned by line, one raw sentence a line

How a pair is made, from a seeded random stream (the same seed gives the same bytes, and the first n pairs of a
larger corpus are the smaller one):

1. Take a random pair of the real corpus (Multi30k's 29,000 training pairs in the default config).
2. With probability `join`, append another random pair to it, on both sides: a longer tail of lengths, as corpora
   of mixed sources have (sentence-split errors, two-sentence captions), while the median length stays the real one.
3. Replace some of its words (alphabetic, 3+ letters; each with probability `replace`) by a pseudo-word, the same
   one on both sides at the same relative position: the copied names, numbers and rare compounds that make up the
   long tail of real vocabularies. A pseudo-word is the spelling of an integer drawn from a Zipf law (a Pareto
   draw, rounded down) in consonant-vowel syllables, so it is deterministic and any two ids differ.

Why its statistics stay realistic: every sentence is a real one, so lengths, punctuation, casing and the frequent
words are the real corpus's; only the rare tail is made up. Types among M draws of a Zipf law of exponent
s = 1 + `tail` grow as M ** (1 / s) (about M ** 0.63 by default): Heaps' law with beta 0.6, within the 0.4-0.7 of
real text, so the vocabulary keeps growing with N, as a real corpus's does, instead of stopping at the source's.
Repeating the source's sentences makes the corpus more redundant than real text of that size (more duplicate
pairs, fewer types per token); the type and token counts of every corpus are reported beside its measurements.

Pairs are generated one at a time and written as they come: memory does not grow with N.
"""

import gzip
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.files import atomic_path

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = [c + v for c in CONSONANTS for v in VOWELS]
MAX_SYLLABLES = 6  # ids beyond len(SYLLABLES) ** 6 (1.2e11) wrap around: Pareto draws are unbounded


@dataclass(frozen=True)
class Recipe:
    """How source pairs are recombined and perturbed (see the module docstring)."""

    join: float = 0.1  # probability that a pair is two source pairs joined
    replace: float = 0.1  # probability that an eligible word is replaced by a pseudo-word
    tail: float = 0.6  # Pareto index of pseudo-word ids: types grow as draws ** (1 / (1 + tail))
    # Pseudo-word ids are scale * a Pareto draw: a flat head (no made-up word is among the frequent ones) and
    # about scale ** (tail / (1 + tail)) = 8.5 times the types of unscaled draws.
    scale: float = 300.0


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    eligible: tuple[int, ...]  # indices of the words a pseudo-word may replace


def _sentence(text: str) -> Sentence:
    words = tuple(text.split())
    return Sentence(words, tuple(i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()))


def pseudo_word(number: int) -> str:
    """The spelling of a positive integer in syllables (at least two): distinct numbers give distinct words."""
    n = (number - 1) % len(SYLLABLES) ** MAX_SYLLABLES
    out = []
    while n or len(out) < 2:
        n, digit = divmod(n, len(SYLLABLES))
        out.append(SYLLABLES[digit])
    return "".join(reversed(out))


def _cased_like(word: str, model: str) -> str:
    # German capitalises nouns, English names: a pseudo-word keeps the case of the word it stands for.
    return word.capitalize() if model[:1].isupper() else word


def _gaps(rng: random.Random, p: float):
    """Positions skipped before each next success of independent p-trials: one draw per replacement, not per word."""
    log_q = math.log1p(-p)
    while True:
        yield int(math.log(1.0 - rng.random()) / log_q)


def _perturb(rng: random.Random, gaps, recipe: Recipe, src: Sentence, tgt: Sentence) -> tuple[str, str]:
    s, t = list(src.words), list(tgt.words)
    pos = next(gaps)
    while pos < len(src.eligible):
        word = pseudo_word(int(recipe.scale * rng.paretovariate(recipe.tail)))
        i = src.eligible[pos]
        s[i] = _cased_like(word, s[i])
        if tgt.eligible:  # the target word at the same relative position: a rough alignment, enough for statistics
            share = pos / max(len(src.eligible) - 1, 1)
            j = tgt.eligible[round(share * (len(tgt.eligible) - 1))]
            t[j] = _cased_like(word, t[j])
        pos += 1 + next(gaps)
    return " ".join(s), " ".join(t)


def generate(source: list[tuple[str, str]], n: int, seed: int, recipe: Recipe = Recipe()) -> Iterator[tuple[str, str]]:
    """n (source, target) pairs derived from `source` (see the module docstring), one at a time."""
    if not source:
        raise InputError("bench-scale: the source corpus has no pairs")
    sentences = [(_sentence(s), _sentence(t)) for s, t in source]
    rng = random.Random(seed)
    gaps = _gaps(rng, recipe.replace)
    for _ in range(n):
        src, tgt = rng.choice(sentences)
        if rng.random() < recipe.join:
            src2, tgt2 = rng.choice(sentences)
            src = Sentence(src.words + src2.words, src.eligible + tuple(len(src.words) + i for i in src2.eligible))
            tgt = Sentence(tgt.words + tgt2.words, tgt.eligible + tuple(len(tgt.words) + i for i in tgt2.eligible))
        yield _perturb(rng, gaps, recipe, src, tgt)


def write(pairs, prefix: Path, langs: tuple[str, str]) -> dict:
    """Write pairs as two aligned gzip files <prefix>.<lang>.gz (each written, then renamed); their counts:
    {"pairs", "source" / "target": {"lang", "tokens", "types"}}, tokens split on white space (not the pipeline's
    tokenizer, which also splits off punctuation)."""
    paths = [prefix.parent / f"{prefix.name}.{lang}.gz" for lang in langs]
    types, tokens, count = (set(), set()), [0, 0], 0
    with atomic_path(paths[0]) as tmp_src, atomic_path(paths[1]) as tmp_tgt:
        # Level 1: generating a 4M-pair corpus is not what is measured; reading it back costs the same at any level.
        with (
            gzip.open(tmp_src, "wt", encoding="utf-8", compresslevel=1) as f_src,
            gzip.open(tmp_tgt, "wt", encoding="utf-8", compresslevel=1) as f_tgt,
        ):
            for pair in pairs:
                for side, (f, line) in enumerate(((f_src, pair[0]), (f_tgt, pair[1]))):
                    words = line.split()
                    types[side].update(words)
                    tokens[side] += len(words)
                    f.write(line + "\n")
                count += 1
    stats = {"pairs": count}
    for side, name in enumerate(("source", "target")):
        stats[name] = {"lang": langs[side], "tokens": tokens[side], "types": len(types[side])}
    return stats
