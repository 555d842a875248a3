"""Stage `embed`: word vectors -> one embedding matrix per vocabulary, rows aligned with the vocab files.

    paths.embeddings/{ner_words,src,tgt}.npy   float32 [vocab size, dim]; row i is line i of the vocab file
    paths.embeddings/w2v.<lang>.<key>.bin      gensim-trained vectors (word2vec binary) + .json with settings
    paths.embeddings/ner_lexicon.npz           English word statistics aligned to ner_words (English NER only)
    paths.reports/embeddings.json              source, dim, load time and coverage per vocabulary, and per set

Only the defined tasks' vocabularies get a matrix: ner_words takes the vectors of ner.data.lang, src and tgt
those of translate.data.source_lang / target_lang. `embed.vectors.<lang>` names a vectors file: GloVe text (no
header), word2vec text or binary, or fastText .vec, plain or .gz, read by gensim; or `package:NAME`, vectors in an
installed Python package (pipeline/core/vector_packages.py); or a list of those, whose rows are concatenated in
that order (each set looked up on its own, its missing rows seeded on their own); `embed.vectors.<vocabulary>.<lang>`
(ner_words.en, src.en, tgt.de) overrides the language's entry for that vocabulary alone. A language without one (or
with "") gets Word2Vec trained on its training text instead; the
result is keyed on a hash of the settings and the text, so a rerun with the same inputs reuses it. Training
runs one worker thread, the only way gensim is reproducible (a second thread saves ~15% on two cores).

A vocabulary token takes the first vector found for: itself, its lowercase, its capitalized form
(str.capitalize: "GERMANY" and "germany" find "Germany"; str.title would give "3Rd" for "3rd"), and for
targets the same three after stripping joiner marks ("￭," finds ","). Other rows are seeded noise (or zeros);
row 0, <pad>, is always zero. The width is the vectors', never configured.

SentencePiece vocabularies (translate.data.tokenizer = "sentencepiece") take no pretrained word vectors: their
pieces get Word2Vec trained on the piece-tokenized training text (one model for a joint vocabulary, which both
sides share), or seeded noise with translate.data.subword_vectors = "random".
"""

import collections
import hashlib
import json
import os
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from pipeline.core import vocab
from pipeline.core.config import SPLITS, Config, tasks
from pipeline.core.errors import InputError
from pipeline.core.files import atomic_path, write_json
from pipeline.core.progress import Progress
from pipeline.core.text import strip_joiners
from pipeline.core.vector_packages import Table, set_name, sources
from pipeline.core.vectors import load_vectors, read_source, save_matrix
from pipeline.ner import gazetteer, lexicon
from pipeline.stages import vocab as vocab_stage
from pipeline.translate import subword

MATRICES = {"ner": ("ner_words",), "translate": ("src", "tgt")}  # the vocabularies that get one (not chars, tags)


KINDS = ("exact", "case", "joiner", "missing")  # how a vocabulary token found its vector


LOW_COVERAGE = 0.8  # warn when fewer running tokens of a split than this have a vector


def names(cfg: Config) -> list[str]:
    return [name for task in tasks(cfg) for name in MATRICES.get(task, ())]


def language(cfg: Config, name: str) -> str:
    d = cfg.translate_data
    return {"ner_words": cfg.ner_data.lang, "src": d.source_lang, "tgt": d.target_lang}[name]


def pieces(cfg: Config, name: str) -> bool:
    return name in subword.SIDES and subword.enabled(cfg)


def trained_as(cfg: Config, name: str) -> str:
    """The Word2Vec model a vocabulary without pretrained vectors shares: one per language, or per piece model
    (a side of its own when each side has its model, even in one language)."""
    if not pieces(cfg, name):
        return language(cfg, name)
    d = cfg.translate_data
    return f"{d.source_lang}+{d.target_lang}.pieces" if d.subword_joint else f"{language(cfg, name)}.{name}.pieces"


class TokenFile:
    """Tokenized sentences written once to a file beside the vectors (tokens tab-separated, a sentence a line) and
    read back on each of gensim's passes: the training text is never held in memory. Tokens hold no tab or line
    break (the tokenizers split there), so a sentence reads back exactly as written."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self):
        with open(self.path, encoding="utf-8", newline="\n") as f:
            for line in f:
                yield line[:-1].split("\t") if line != "\n" else []


def write_training_text(cfg: Config, lang: str, names: list[str], path: Path) -> tuple[str, collections.Counter, int]:
    """The train split of every vocabulary that uses the language, tokenized as the vocab stage does, written to
    `path`; returns the Word2Vec cache key, the token counts and the number of sentences."""
    h = hashlib.sha256(json.dumps([lang, w2v_settings(cfg), cfg.section_dict("text")], sort_keys=True).encode())
    h.update(b"[")  # the key hashes json.dumps(list of sentences), written here a sentence at a time
    counts, n = collections.Counter(), 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for name in names:
            for sentence in vocab_stage.train_sentences(cfg, name):
                h.update((", " if n else "").encode() + json.dumps(sentence, ensure_ascii=False).encode())
                f.write("\t".join(sentence) + "\n")
                counts.update(sentence)
                n += 1
    h.update(b"]")
    return h.hexdigest()[:16], counts, n


def w2v_settings(cfg: Config) -> dict:
    e = cfg.embed
    return {
        "dim": e.w2v_dim,
        "window": e.w2v_window,
        "min_count": e.w2v_min_count,
        "epochs": e.w2v_epochs,
        "sg": e.w2v_sg,
        "seed": e.seed,
        "workers": 1,  # gensim is only reproducible with one worker thread (batch order and update races)
    }


class EpochProgress(CallbackAny2Vec):
    def __init__(self, progress: Progress):
        self.progress = progress

    def on_epoch_end(self, model):
        self.progress.update(1)


def train_word2vec(cfg: Config, lang: str, names: list[str]) -> tuple[Path, float | None]:
    """Train Word2Vec on the training text of `names` unless vectors for the same settings and text exist.
    Returns (file, train seconds)."""
    out = Path(cfg.paths.embeddings)
    out.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".w2v.{lang}.", suffix=".text", dir=out)
    os.close(fd)
    text_path = Path(name)
    try:  # the text file is removed however this ends
        key, counts, n = write_training_text(cfg, lang, names, text_path)
        path = out / f"w2v.{lang}.{key}.bin"
        if path.is_file():
            print(f"  {lang}: reusing {path} (same Word2Vec settings and training text)", flush=True)
            return path, None
        return path, _train_word2vec(cfg, lang, TokenFile(text_path), counts, n, path)
    finally:
        text_path.unlink(missing_ok=True)


def _train_word2vec(cfg: Config, lang: str, sentences, counts: collections.Counter, n: int, path: Path) -> float:
    s = w2v_settings(cfg)
    if not any(c >= s["min_count"] for c in counts.values()):
        raise InputError(f"{lang}: no training word occurs embed.w2v_min_count={s['min_count']} times")
    print(
        f"  {lang}: training Word2Vec on {n:,} sentences, {counts.total():,} tokens "
        f"({s['dim']}-d, {'skip-gram' if s['sg'] else 'CBOW'}, {s['epochs']} epochs, 1 worker for reproducibility)",
        flush=True,
    )
    progress = Progress(s["epochs"], f"{lang} word2vec epoch", every=5.0)
    start = time.perf_counter()
    model = Word2Vec(
        sentences,
        vector_size=s["dim"],
        window=s["window"],
        min_count=s["min_count"],
        epochs=s["epochs"],
        sg=int(s["sg"]),
        seed=s["seed"],
        workers=s["workers"],
        callbacks=[EpochProgress(progress)],
    )
    progress.close()
    seconds = time.perf_counter() - start
    about = {"language": lang, "settings": s, "text": cfg.section_dict("text"), "sentences": n}
    about |= {"tokens": counts.total(), "words": len(model.wv), "seconds": round(seconds, 2)}
    write_json(path.with_suffix(".json"), about)
    with atomic_path(path) as tmp:  # the .bin last: its presence means a complete training
        model.wv.save_word2vec_format(str(tmp), binary=True)
    print(f"  {lang}: trained {len(model.wv):,} vectors in {seconds:.1f}s -> {path}", flush=True)
    return round(seconds, 2)


def _forms(token: str, joiners: bool):
    yield "exact", token
    yield "case", token.lower()
    yield "case", token.capitalize()
    plain = strip_joiners(token) if joiners else token
    if plain and plain != token:
        for form in (plain, plain.lower(), plain.capitalize()):
            yield "joiner", form


def align(tokens: list[str], kv: Table, n_specials: int, joiners: bool) -> tuple[np.ndarray, list[str]]:
    """Per vocabulary row: the row of its vector in `kv` (-1: none) and how it matched (a KINDS entry;
    "special" for <pad>, <unk>, ... which never take a pretrained vector)."""
    index = kv.key_to_index
    rows, kinds = np.full(len(tokens), -1, np.int64), ["special"] * n_specials
    for i, token in enumerate(tokens[n_specials:], start=n_specials):
        found = next(((how, index[form]) for how, form in _forms(token, joiners) if form in index), None)
        kinds.append(found[0] if found else "missing")
        rows[i] = found[1] if found else -1
    return rows, kinds


def build_matrix(rows: np.ndarray, kv: Table, cfg: Config, name: str, part: int = 0) -> np.ndarray:
    """Vectors where found; elsewhere seeded normal(0, oov_scale) noise or zeros; <pad> zero.
    `part` numbers the vector sets of one vocabulary; each has its own noise."""
    e, shape = cfg.embed, (len(rows), kv.vector_size)
    if e.oov_init == "normal":
        # One stream per vocabulary and set, so src and ner_words do not share noise rows under the same seed.
        rng = np.random.default_rng([e.seed, zlib.crc32(name.encode())] + ([part] if part else []))
        matrix = rng.normal(0.0, e.oov_scale, shape).astype(np.float32)
    else:
        matrix = np.zeros(shape, np.float32)
    found = rows >= 0
    matrix[found] = kv.vectors[rows[found]]
    matrix[vocab.PAD_ID] = 0.0
    return matrix


def _shares(counts: collections.Counter) -> dict:
    total = sum(counts.values())
    return {"count": total} | {k: counts[k] / (total or 1) for k in KINDS}


def coverage(tokens: list[str], kinds: list[str], splits: dict[str, collections.Counter]) -> dict:
    """How vocabulary types (specials excluded) and running tokens per split (token counts) found vectors.
    A running token outside the vocabulary maps to <unk> and so counts as missing."""
    kind_of = {t: k for t, k in zip(tokens, kinds, strict=True) if k != "special"}
    out = {"types": _shares(collections.Counter(kind_of.values())), "tokens": {}}
    for split, split_counts in splits.items():
        counts = collections.Counter()
        for token, n in split_counts.items():
            counts[kind_of.get(token, "missing")] += n
        out["tokens"][split] = _shares(counts)
    return out


def format_report(report: dict) -> str:
    lines = [f"{'vocabulary':<10} {'size':>6}  lang {'dim':>4} {'load s':>7}  vectors"]
    for name, r in report.items():
        for s in r["sets"]:
            source = f"{s['vectors']} ({s['format']})"
            if "reused" in s:
                done = "reused" if s["reused"] else f"trained in {s['train_seconds']:.1f}s"
                source = f"word2vec-trained {s['file']} ({done})"
            cells = f"{r['size']:>6}  {r['language']:<4} {s['dim']:>4} {s['load_seconds']:>7.1f}"
            lines.append(f"{name:<10} {cells}  {source}")
    # The kinds are of the first set that has the word; with several sets, one more column per set: found there.
    sets = max(len(r["sets"]) for r in report.values()) if report else 0
    extra = [f"set {i + 1}" for i in range(sets)] if sets > 1 else []
    lines += ["", f"{'coverage':<10} {'over':<6} {'count':>8} " + " ".join(f"{k:>8}" for k in KINDS + tuple(extra))]
    for name, r in report.items():
        for over, shares in [("types", r["types"])] + list(r["tokens"].items()):
            cells = [f"{100 * shares[k]:7.2f}%" for k in KINDS]
            if extra:
                found = [s["types"] if over == "types" else s["tokens"][over] for s in r["sets"]]
                cells += [f"{100 * (1 - f['missing']):7.2f}%" for f in found]
            lines.append(f"{name:<10} {over:<6} {shares['count']:>8} {' '.join(cells)}")
    if extra:
        lines.append("  " + "; ".join(f"set {i + 1}: {set_name(s['vectors'])}" for i, s in enumerate(_longest(report))))
    for name, r in report.items():
        if "lexicon" in r:
            lines += ["", f"{'statistics':<10} {'over':<6} {'count':>8} {'prob':>8} {'cluster':>8} {'names':>8}"]
            for over, shares in [("types", r["lexicon"]["types"])] + list(r["lexicon"]["tokens"].items()):
                cells = " ".join(f"{100 * shares[k]:7.2f}%" for k in ("prob", "cluster", "names"))
                lines.append(f"{name:<10} {over:<6} {shares['count']:>8} {cells}")
    return "\n".join(lines)


def _longest(report: dict) -> list[dict]:
    return max((r["sets"] for r in report.values()), key=len)


@dataclass
class Vectors:
    kv: Table  # word -> row of its vectors
    info: dict  # what the report says about the source


def trained(cfg: Config, lang: str, names: list[str]) -> Vectors:
    path, train_seconds = train_word2vec(cfg, lang, names)
    start = time.perf_counter()
    kv, _ = load_vectors(path, "word2vec_binary")  # from the file, so a reuse gives the very same matrix
    seconds = time.perf_counter() - start
    info = {"vectors": "word2vec-trained", "file": str(path), "format": "word2vec_binary"}
    info |= {"load_seconds": round(seconds, 2), "train_seconds": train_seconds, "reused": train_seconds is None}
    return Vectors(Table(kv.key_to_index, kv.vectors), info)


def random_rows(cfg: Config) -> Vectors:
    """No vectors at all: every row is seeded noise (translate.data.subword_vectors = "random")."""
    table = Table({}, np.zeros((0, cfg.embed.w2v_dim), np.float32))
    return Vectors(table, {"vectors": "random", "format": "none", "load_seconds": 0.0})


def combined_kinds(per_set: list[list[str]]) -> list[str]:
    """Per vocabulary row, how the first set that has the word matched it ("missing" if none has)."""
    return [next((k for k in kinds if k != "missing"), "missing") for kinds in zip(*per_set, strict=True)]


def embed_vocabulary(cfg: Config, name: str, tokens: list[str], sets: list[Vectors], splits: dict) -> tuple:
    """One matrix: the rows of each set side by side (each looked up on its own); and its report entry."""
    parts, kinds, entries = [], [], []
    for part, source in enumerate(sets):
        rows, found = align(tokens, source.kv, len(vocab.SPECIALS[name]), joiners=name == "tgt")
        parts.append(build_matrix(rows, source.kv, cfg, name, part))
        kinds.append(found)
        entries.append(source.info | {"dim": source.kv.vector_size} | coverage(tokens, found, splits))
    matrix = np.concatenate(parts, axis=1)
    first = {k: v for k, v in entries[0].items() if k not in ("types", "tokens")}
    about = first if len(sets) == 1 else {"vectors": " + ".join(e["vectors"] for e in entries), "format": "concat"}
    entry = {"language": language(cfg, name), "size": len(tokens)} | about | {"dim": matrix.shape[1]}
    return matrix, entry | coverage(tokens, combined_kinds(kinds), splits) | {"sets": entries}


def run(cfg: Config) -> None:
    vocabs = {name: vocab.load_named(cfg, name) for name in names(cfg)}
    wanted = {name: [] if pieces(cfg, name) else sources(cfg, language(cfg, name), name) for name in vocabs}
    # Vectors files and packages first, each once: bad input fails in seconds, before any tokenizing or writing.
    read = {s: Vectors(*read_source(s, cfg.embed.format)) for s in dict.fromkeys(x for v in wanted.values() for x in v)}
    sets = {name: [read[s] for s in wanted[name]] for name in vocabs}
    corpus = vocab_stage.token_counts(cfg).counts
    untrained = collections.defaultdict(list)  # language -> its vocabularies without pretrained vectors
    for name in vocabs:
        if pieces(cfg, name) and cfg.translate_data.subword_vectors == "random":
            sets[name] = [random_rows(cfg)]
        elif not sets[name]:
            untrained[trained_as(cfg, name)].append(name)
    for lang, users in untrained.items():
        w2v = trained(cfg, lang, users)
        sets |= {name: [w2v] for name in users}

    matrices, report = {}, {}
    for name, tokens in vocabs.items():
        splits = {s: corpus[name][s] for s in SPLITS}
        matrices[name], report[name] = embed_vocabulary(cfg, name, tokens, sets[name], splits)

    lex = None
    if "ner_words" in vocabs and lexicon.english(cfg):
        probs, clusters = lexicon.source_tables()
        n_specials = len(vocab.SPECIALS["ner_words"])
        lex = lexicon.features(vocabs["ner_words"], probs, clusters, n_specials, gazetteer.source_tables())
        splits = {s: corpus["ner_words"][s] for s in SPLITS}
        report["ner_words"]["lexicon"] = lexicon.coverage(lex, vocabs["ner_words"], n_specials, splits)

    for name, matrix in matrices.items():
        save_matrix(Path(cfg.paths.embeddings) / f"{name}.npy", matrix)
    if lex is not None:
        lexicon.save(cfg, lex)
    write_json(Path(cfg.paths.reports) / "embeddings.json", report)
    print(format_report(report))
    for name, r in report.items():
        if r["vectors"] == "random":  # no vectors, by choice
            continue
        for split, shares in r["tokens"].items():
            if 1 - shares["missing"] < LOW_COVERAGE:
                print(f"warning: {name} vectors cover only {100 * (1 - shares['missing']):.1f}% of {split} tokens")
