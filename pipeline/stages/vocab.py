"""Stage `vocab`: the vocabularies of every defined task, one token a line, and their out-of-vocabulary report.

<paths.vocab>/{src,tgt}.txt, {ner_words,ner_chars,ner_tags}.txt    the id of a token is its line number
<paths.vocab>/{src,tgt}.spm      SentencePiece models, with translate.data.tokenizer = "sentencepiece" (subword.py)
<paths.reports>/vocab.json                                   size and OOV rates per split
"""

import collections
from pathlib import Path

import tensorflow as tf

from pipeline.core import text, vector_packages
from pipeline.core.config import SPLITS, Config, hooked, tasks
from pipeline.core.files import read_lines, write_json
from pipeline.core.vocab import SPECIALS, build, oov_rates, save, vocab_path
from pipeline.ner import corpus as ner_corpus
from pipeline.translate import corpus as translate_corpus
from pipeline.translate import subword


def corpus_tokens(cfg: Config) -> dict[str, dict[str, list[list[str]]]]:
    """Tokenized text per vocabulary and split of the defined tasks, exactly as the training input pipelines will
    see it."""
    out = {}
    if "translate" in tasks(cfg):
        out |= {"src": {}, "tgt": {}}
        tokenizers = {side: subword.Tokenizer(cfg, side) for side in subword.SIDES}
        for split in SPLITS:
            pairs = translate_corpus.load_parallel(cfg, split)
            out["src"][split] = tokenizers["src"].tokenize_batches([s for s, _ in pairs])
            out["tgt"][split] = tokenizers["tgt"].tokenize_batches([t for _, t in pairs])
    if "ner" in tasks(cfg):
        out |= {"ner_words": {}, "ner_chars": {}}
        for split in SPLITS:
            sentences = ner_corpus.load_ner(cfg, split)
            words = text.to_lists(text.normalize_tokens(tf.ragged.constant([w for w, _ in sentences]), cfg.text))
            out["ner_words"][split] = words
            out["ner_chars"][split] = [list(w) for s in words for w in s]
    return out


def vector_words(path: Path) -> set[str]:
    """The words of a text-format vectors file (first field of each line), without parsing the vectors."""
    return {line.split(" ", 1)[0] for _, line in read_lines(path)}


def pretrained_extras(cfg: Config, words: dict[str, list[list[str]]], known: set[str]) -> list[str]:
    """Valid/test words outside the train vocabulary that have a pretrained vector (exact or lowercase).

    Common practice on CoNLL-2003 (see ANCHORS.md): their embedding rows keep the pretrained values and are
    never trained towards a label, so no test label leaks, but the tagger sees a meaningful vector.
    """
    with_vector = set()
    for source in ner_vectors(cfg):
        is_package = vector_packages.is_package(source)
        with_vector |= set(vector_packages.load(source)[0].key_to_index) if is_package else vector_words(Path(source))
    candidates = {w for split in ("valid", "test") for sentence in words[split] for w in sentence} - known
    return sorted(w for w in candidates if w in with_vector or w.lower() in with_vector)


def ner_vectors(cfg: Config) -> list[str]:
    """The pretrained vector sets of the NER language ([] = none: Word2Vec is trained instead)."""
    return vector_packages.sources(cfg, cfg.ner_data.lang, "ner_words")


def run(cfg: Config) -> None:
    v = cfg.vocab
    pieces = {}
    if subword.enabled(cfg):  # the pieces are the vocabularies, written first: tokenizing the corpus reads them
        pieces = subword.train(cfg, translate_corpus.load_parallel(cfg, "train"))
        for name, tokens in pieces.items():
            save(vocab_path(cfg, name), tokens)
    corpus = corpus_tokens(cfg)
    min_freq = {
        "src": v.min_freq,
        "tgt": v.min_freq,
        "ner_words": v.ner_min_freq,
        "ner_chars": v.char_min_freq,
    }
    vocabs = {}
    for name, splits in corpus.items():
        counts = collections.Counter(t for s in splits["train"] for t in s)
        max_size = v.max_size if name in ("src", "tgt") else 0
        vocabs[name] = pieces.get(name) or build(counts, SPECIALS[name], min_freq[name], max_size)
    if "ner" in tasks(cfg):
        if v.ner_pretrained_words and ner_vectors(cfg):
            vocabs["ner_words"] += pretrained_extras(cfg, corpus["ner_words"], set(vocabs["ner_words"]))
        train_tags = [tags for _, tags in ner_corpus.load_ner(cfg, "train")]
        tags = {t for tags in train_tags for t in tags} - {"O"}
        vocabs["ner_tags"] = ["O"] + sorted(tags, key=lambda t: (t[2:], t))  # B-X before I-X, types in order

    written = set(pieces)
    for hooks in hooked(cfg).values():  # a task that writes its own vocabulary files (lm_chars: JSON lines)
        for name, (tokens, splits) in hooks.vocabularies(cfg).items():
            vocabs[name], corpus[name] = tokens, splits
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
        report[name]["cut"] = cut = {split: sum(len(s) >= limit for s in corpus[name][split]) for split in SPLITS}
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
