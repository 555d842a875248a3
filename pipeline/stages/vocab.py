"""Stage `vocab`: the vocabularies of every defined task, one token a line, and their out-of-vocabulary report.

<paths.vocab>/{src,tgt}.txt, {ner_words,ner_chars,ner_tags}.txt    the id of a token is its line number
<paths.vocab>/{src,tgt}.spm      SentencePiece models, with translate.data.tokenizer = "sentencepiece" (subword.py)
<paths.reports>/vocab.json                                   size and OOV rates per split
"""

import collections
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from pipeline.core import text, vector_packages
from pipeline.core.config import SPLITS, Config, hooked, tasks
from pipeline.core.files import read_lines, write_json
from pipeline.core.vocab import SPECIALS, build, oov_rates, save, vocab_path
from pipeline.ner import corpus as ner_corpus
from pipeline.translate import corpus as translate_corpus
from pipeline.translate import subword

Counts = dict[str, dict[str, collections.Counter]]  # vocabulary -> split -> token counts


@dataclass
class Counted:
    """Token counts per vocabulary and split, exactly as the training input pipelines will tokenize the text, and
    per piece vocabulary the sentences cut at translate.data.subword_max_length."""

    counts: Counts
    cut: dict[str, dict[str, int]]


def translate_batches(cfg: Config, split: str, sides: tuple[str, ...] = subword.SIDES):
    """The tokens of `sides` of a processed translation split, a batch of sentences at a time: the corpus is
    streamed from its shards, never held."""
    tokenizers = {side: subword.Tokenizer(cfg, side) for side in sides}
    for batch in translate_corpus.iter_batches(cfg, split):
        yield {side: tokenizers[side].tokenize_batches([p[subword.SIDES.index(side)] for p in batch]) for side in sides}


def train_sentences(cfg: Config, name: str):
    """The tokenized training sentences of one vocabulary (src, tgt or ner_words), streamed for Word2Vec."""
    if name in subword.SIDES:
        for batch in translate_batches(cfg, "train", (name,)):  # the other side is not tokenized
            yield from batch[name]
        return
    yield from ner_words(cfg, "train")


def ner_words(cfg: Config, split: str) -> list[list[str]]:
    """The normalised words of each sentence of a processed NER split, as the tagger's input sees them."""
    sentences = ner_corpus.load_ner(cfg, split)
    return text.to_lists(text.normalize_tokens(tf.ragged.constant([w for w, _ in sentences]), cfg.text))


def token_counts(cfg: Config) -> Counted:
    """Counted tokens of every defined task's splits (the translation corpus streamed; CoNLL files are small)."""
    out = Counted({}, {})
    limit = cfg.translate_data.subword_max_length
    if "translate" in tasks(cfg):
        for side in subword.SIDES:
            out.counts[side] = {s: collections.Counter() for s in SPLITS}
            out.cut[side] = dict.fromkeys(SPLITS, 0)
        for split in SPLITS:
            for batch in translate_batches(cfg, split):
                for side, sentences in batch.items():
                    for sentence in sentences:
                        out.counts[side][split].update(sentence)
                    out.cut[side][split] += sum(len(x) >= limit for x in sentences)
    if "ner" in tasks(cfg):
        out.counts |= {"ner_words": {}, "ner_chars": {}}
        for split in SPLITS:
            words = ner_words(cfg, split)
            out.counts["ner_words"][split] = collections.Counter(w for s in words for w in s)
            chars = collections.Counter()
            for word, n in out.counts["ner_words"][split].items():
                for c in word:
                    chars[c] += n
            out.counts["ner_chars"][split] = chars
    return out


def vector_words(path: Path) -> set[str]:
    """The words of a text-format vectors file (first field of each line), without parsing the vectors."""
    return {line.split(" ", 1)[0] for _, line in read_lines(path)}


def pretrained_extras(cfg: Config, words: dict[str, collections.Counter], known: set[str]) -> list[str]:
    """Valid/test words outside the train vocabulary that have a pretrained vector (exact or lowercase).

    Common practice on CoNLL-2003 (see ANCHORS.md): their embedding rows keep the pretrained values and are
    never trained towards a label, so no test label leaks, but the tagger sees a meaningful vector.
    """
    with_vector = set()
    for source in ner_vectors(cfg):
        is_package = vector_packages.is_package(source)
        with_vector |= set(vector_packages.load(source)[0].key_to_index) if is_package else vector_words(Path(source))
    candidates = (set(words["valid"]) | set(words["test"])) - known
    return sorted(w for w in candidates if w in with_vector or w.lower() in with_vector)


def ner_vectors(cfg: Config) -> list[str]:
    """The pretrained vector sets of the NER language ([] = none: Word2Vec is trained instead)."""
    return vector_packages.sources(cfg, cfg.ner_data.lang, "ner_words")


def run(cfg: Config) -> None:
    v = cfg.vocab
    pieces = {}
    if subword.enabled(cfg):  # the pieces are the vocabularies, written first: tokenizing the corpus reads them
        pieces = subword.train(cfg)
        for name, tokens in pieces.items():
            save(vocab_path(cfg, name), tokens)
    counted = token_counts(cfg)
    corpus = counted.counts
    min_freq = {
        "src": v.min_freq,
        "tgt": v.min_freq,
        "ner_words": v.ner_min_freq,
        "ner_chars": v.char_min_freq,
    }
    vocabs = {}
    for name, splits in corpus.items():
        max_size = v.max_size if name in ("src", "tgt") else 0
        vocabs[name] = pieces.get(name) or build(splits["train"], SPECIALS[name], min_freq[name], max_size)
    if "ner" in tasks(cfg):
        if v.ner_pretrained_words and ner_vectors(cfg):
            vocabs["ner_words"] += pretrained_extras(cfg, corpus["ner_words"], set(vocabs["ner_words"]))
        train_tags = [tags for _, tags in ner_corpus.load_ner(cfg, "train")]
        tags = {t for tags in train_tags for t in tags} - {"O"}
        vocabs["ner_tags"] = ["O"] + sorted(tags, key=lambda t: (t[2:], t))  # B-X before I-X, types in order

    written = set(pieces)
    for hooks in hooked(cfg).values():  # a task that writes its own vocabulary files (lm_chars: JSON lines)
        for name, (tokens, splits) in hooks.vocabularies(cfg).items():
            vocabs[name] = tokens
            corpus[name] = {s: collections.Counter(t for x in sentences for t in x) for s, sentences in splits.items()}
            written.add(name)
    report = {}
    for name, tokens in vocabs.items():
        if name not in written:
            save(vocab_path(cfg, name), tokens)
        if name in corpus:
            known = set(tokens)
            rates = {s: oov_rates(corpus[name][s], known) for s in SPLITS if s in corpus[name]}
            report[name] = {"size": len(tokens)} | rates
        else:
            report[name] = {"size": len(tokens)}
    limit = cfg.translate_data.subword_max_length
    for name in pieces:  # text.max_length counts words, so the data check cannot see a sentence cut into pieces
        report[name]["cut"] = cut = counted.cut[name]
        if any(cut.values()):
            print(
                f"warning: {name}: {', '.join(f'{n} {split}' for split, n in cut.items() if n)} sentences reach "
                f"translate.data.subword_max_length={limit} pieces and are cut there"
            )
    write_json(Path(cfg.paths.reports) / "vocab.json", report)
    print(format_report(report))


def format_report(report: dict) -> str:
    lines = [f"{'vocabulary':<10} {'size':>7}  " + "  ".join(f"{s + ' OOV tok/type':>20}" for s in SPLITS)]
    for name, entry in report.items():
        cells = [
            f"{100 * entry[s]['oov_token_rate']:8.2f}% /{100 * entry[s]['oov_type_rate']:6.2f}%".rjust(20)
            if s in entry
            else " " * 20
            for s in SPLITS
        ]
        lines.append(f"{name:<10} {entry['size']:>7}  " + "  ".join(cells))
    return "\n".join(lines)
