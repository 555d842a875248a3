"""Stage `embed`: word vectors -> one embedding matrix per vocabulary, rows aligned with the vocab files.

    paths.embeddings/{ner_words,src,tgt}.npy   float32 [vocab size, dim]; row i is line i of the vocab file
    paths.embeddings/w2v.<lang>.<key>.bin      gensim-trained vectors (word2vec binary) + .json with settings
    paths.embeddings/ner_lexicon.npz           English word statistics aligned to ner_words (pipeline/lexicon.py)
    paths.reports/embeddings.json              source, dim, load time and coverage per vocabulary

ner_words takes English vectors, src and tgt those of prepare.source_lang / target_lang. `embed.<lang>` names
a vectors file under paths.raw: GloVe text (no header), word2vec text or binary, or fastText .vec, plain or
.gz, read by gensim. An empty `embed.<lang>` trains Word2Vec on that language's training text instead; the
result is keyed on a hash of the settings and the text, so a rerun with the same inputs reuses it. Training
runs one worker thread, the only way gensim is reproducible (a second thread saves ~15% on two cores).

A vocabulary token takes the first vector found for: itself, its lowercase, its capitalized form
(str.capitalize: "GERMANY" and "germany" find "Germany"; str.title would give "3Rd" for "3rd"), and for
targets the same three after stripping joiner marks ("￭," finds ","). Other rows are seeded noise (or zeros);
row 0, <pad>, is always zero. The width is the vectors', never configured.
"""

import collections
import contextlib
import gzip
import hashlib
import json
import math
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors, Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from pipeline import data, gazetteer, lexicon, vocab
from pipeline.config import Config
from pipeline.errors import InputError, at
from pipeline.files import atomic_path, write_json
from pipeline.progress import Progress
from pipeline.text import strip_joiners

NAMES = ("ner_words", "src", "tgt")  # the vocabularies that get a matrix (chars and tags do not)
KINDS = ("exact", "case", "joiner", "missing")  # how a vocabulary token found its vector
FORMATS = {  # embed.format -> (binary, has a "count dim" header)
    "glove": (False, False),
    "word2vec": (False, True),
    "fasttext": (False, True),  # fastText .vec is word2vec text
    "word2vec_binary": (True, True),
}
LOW_COVERAGE = 0.8  # warn when fewer running tokens of a split than this have a vector


def language(cfg: Config, name: str) -> str:
    return {"ner_words": "en", "src": cfg.prepare.source_lang, "tgt": cfg.prepare.target_lang}[name]


# ------------------------------------------------------------------------------------------- progress


@contextlib.contextmanager
def ticking(desc: str, every: float = 5.0):
    """Print the elapsed time every few seconds while an opaque call (gensim's loader) runs."""
    stop, start = threading.Event(), time.perf_counter()

    def tick():
        while not stop.wait(every):
            print(f"  {desc} {time.perf_counter() - start:.0f}s", flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------ reading vectors files


@contextlib.contextmanager
def reading(path: Path):
    """The file's bytes, gunzipped when it is named .gz (gensim, via smart_open, decides by the name too)."""
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        if gzipped != (path.suffix == ".gz"):
            named = "named .gz but not gzip data" if not gzipped else "gzip data not named .gz"
            raise InputError(f"{path}: {named}; gensim picks the decompression by the file name")
        with (gzip.open if gzipped else open)(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise InputError(
            f"{path}: vectors file not found", hint='run `make data`, or set the language\'s embed key to ""'
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise InputError(f"{path}: damaged gzip file ({e})") from None


def _is_header(line: bytes) -> bool:
    parts = line.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def _is_text(chunk: bytes) -> bool:
    """UTF-8 without NUL bytes; a multi-byte char cut off at the chunk's end still counts as text."""
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        if not (e.reason == "unexpected end of data" and e.start >= len(chunk) - 3):
            return False
    return b"\x00" not in chunk


def sniff(path: Path) -> tuple[bool, bool]:
    """(first line is a `count dim` header, the bytes after it decode as text)."""
    with reading(path) as f:
        first = f.readline(1 << 16)
        body = f.read(4096)
    return _is_header(first), _is_text(body)


def detect_format(path: Path, fmt: str = "auto") -> str:
    """Resolve `auto` (no header: GloVe; header and text: word2vec; else binary) or check a given format."""
    header, text = sniff(path)
    if fmt == "auto":
        return ("word2vec" if text else "word2vec_binary") if header else "glove"
    if header and not FORMATS[fmt][1]:
        raise at(path, 1, f"a 'count dim' header, which {fmt} files lack: use embed.format=auto or word2vec")
    if not header and FORMATS[fmt][1]:
        raise at(path, 1, f"expected a 'count dim' header for {fmt}: use embed.format=glove (no header) or auto")
    if FORMATS[fmt][0] and text:
        raise at(path, 2, f"text, not binary vectors: use embed.format=word2vec or auto, not {fmt}")
    return fmt


def check_text(path: Path, header: bool) -> tuple[int, int]:
    """Validate the layout of a text vectors file, fast: every line `word v1 ... vN` with one N, UTF-8,
    matching the header. Returns (vectors, dim). Values are parsed by gensim; see `find_bad_value`.
    """
    declared, dim, dim_line, count, number = None, None, 0, 0, 0
    with reading(path) as f:
        for number, line in enumerate(f, start=1):
            if header and number == 1:
                declared = [int(x) for x in line.split()]
                continue
            line = line.rstrip()  # split exactly as gensim does: rstrip, then single spaces
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise at(path, number, f"not UTF-8 text at byte {e.start}; a binary file? (embed.format)") from None
            if not line:
                raise at(path, number, "blank line")
            if line.startswith(b" "):
                raise at(path, number, "line starts with a space: empty word")
            n = line.count(b" ")
            if dim is None:
                if n == 0:
                    raise at(path, number, "a word without values")
                dim, dim_line = n, number
            elif n != dim:
                raise at(path, number, f"{n} values, but line {dim_line} has {dim}")
            count += 1
    if count == 0:
        raise at(path, number + 1, "no vectors (empty file)")
    if declared and declared != [count, dim]:
        raise at(path, 1, f"header says {declared[0]} x {declared[1]}, the file has {count} x {dim}")
    return count, dim


def find_bad_value(path: Path, header: bool) -> InputError | None:
    """Re-scan for the first non-numeric or non-finite value (slow; only after gensim failed or found one)."""
    with reading(path) as f:
        for number, line in enumerate(f, start=1):
            if header and number == 1:
                continue
            for value in line.rstrip().split(b" ")[1:]:
                try:
                    ok = math.isfinite(float(value))
                except ValueError:
                    ok = False
                if not ok:
                    return at(path, number, f"{value.decode('utf-8', 'replace')!r} is not a finite number")
    return None


def _read_word(f) -> bytes | None:
    """Bytes up to the next space (None at the end of the file); some writers put a newline before words."""
    word = bytearray()
    while (c := f.read(1)) != b" ":
        if not c:
            return None
        word += c
    return bytes(word).lstrip(b"\n")


def check_binary(path: Path) -> tuple[int, int]:
    """Walk a binary word2vec file record by record: UTF-8 words, whole finite float32 vectors, no excess."""
    with reading(path) as f:
        count, dim = (int(x) for x in f.readline().split())
        for i in range(1, count + 1):
            word, values = _read_word(f), f.read(4 * dim)
            if word is None or len(values) < 4 * dim:
                raise at(path, None, f"ends inside vector {i} of the {count} its header declares")
            try:
                word.decode("utf-8")
            except UnicodeDecodeError:
                raise at(path, None, f"vector {i}: the word {word!r} is not UTF-8") from None
            if not np.isfinite(np.frombuffer(values, np.float32)).all():
                raise at(path, None, f"vector {i} ({word.decode()!r}) has a non-finite value")
        if f.read(64).strip():
            raise at(path, None, f"more data after the {count} vectors its header declares")
    return count, dim


def read_text_vectors(path: Path, header: bool, dim: int) -> KeyedVectors:
    """Text vectors into gensim KeyedVectors, parsed by numpy's C reader: about 5x faster than gensim's
    line-by-line Python parser on the 64k x 300 English file (8 s instead of 40 s on 2 busy cores).
    Lines are split exactly as gensim splits them (rstrip, then single spaces); a repeated word keeps its
    first vector, as in gensim.
    """
    with reading(path) as f:
        lines = f.read().decode("utf-8").splitlines()[1 if header else 0 :]
    lines = [line.rstrip() for line in lines]
    values = np.loadtxt(
        (line.partition(" ")[2] for line in lines),
        dtype=np.float32,
        delimiter=" ",
        comments=None,
        quotechar=None,
        ndmin=2,
    )
    kv = KeyedVectors(vector_size=dim, dtype=np.float32)
    kv.add_vectors([line.partition(" ")[0] for line in lines], values)
    return kv


def load_vectors(path: Path, fmt: str = "auto") -> tuple[KeyedVectors, str]:
    """Check a vectors file, then read it into gensim KeyedVectors. Returns the vectors and the resolved format.

    Every problem is an InputError naming the file and line, raised before anything is written.
    """
    fmt = detect_format(path, fmt)
    binary, header = FORMATS[fmt]
    count, dim = check_binary(path) if binary else check_text(path, header)
    print(f"  {path}: {fmt}, {count:,} vectors x {dim}", flush=True)
    try:
        with ticking(f"reading {path.name} ..."):
            if binary:
                kv = KeyedVectors.load_word2vec_format(str(path), binary=True)
            else:
                kv = read_text_vectors(path, header, dim)
    except (ValueError, UnicodeDecodeError, EOFError) as e:  # the layout was checked, so this is a value
        found = None if binary else find_bad_value(path, header)
        raise found or InputError(f"{path}: gensim could not read it: {e}") from None
    if not np.isfinite(kv.vectors).all():  # gensim reads "nan" and "inf" without complaint
        raise find_bad_value(path, header) or InputError(f"{path}: non-finite values")
    return kv, fmt


# -------------------------------------------------------------------------------- trained Word2Vec


def training_text(corpus: dict, names: list[str]) -> list[list[str]]:
    """The train split of every vocabulary that uses the language, tokenized as the vocab stage did."""
    return [sentence for name in names for sentence in corpus[name]["train"]]


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


def w2v_key(cfg: Config, lang: str, sentences: list[list[str]]) -> str:
    """Hash of everything the trained vectors depend on: settings, tokenizer config and the text itself."""
    h = hashlib.sha256(json.dumps([lang, w2v_settings(cfg), cfg.section_dict("text")], sort_keys=True).encode())
    h.update(json.dumps(sentences, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


class EpochProgress(CallbackAny2Vec):
    def __init__(self, progress: Progress):
        self.progress = progress

    def on_epoch_end(self, model):
        self.progress.update(1)


def train_word2vec(cfg: Config, lang: str, sentences: list[list[str]]) -> tuple[Path, float | None]:
    """Train Word2Vec unless vectors for the same settings and text exist. Returns (file, train seconds)."""
    path = Path(cfg.paths.embeddings) / f"w2v.{lang}.{w2v_key(cfg, lang, sentences)}.bin"
    if path.is_file():
        print(f"  {lang}: reusing {path} (same Word2Vec settings and training text)", flush=True)
        return path, None
    s = w2v_settings(cfg)
    counts = collections.Counter(t for sentence in sentences for t in sentence)
    if not any(c >= s["min_count"] for c in counts.values()):
        raise InputError(f"{lang}: no training word occurs embed.w2v_min_count={s['min_count']} times")
    print(
        f"  {lang}: training Word2Vec on {len(sentences):,} sentences, {counts.total():,} tokens "
        f"({s['dim']}-d, {'skip-gram' if s['sg'] else 'CBOW'}, {s['epochs']} epochs, 1 worker for reproducibility)",
        flush=True,
    )
    progress = Progress(s["epochs"], f"{lang} word2vec epoch", every=0.0)
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
    about = {"language": lang, "settings": s, "text": cfg.section_dict("text"), "sentences": len(sentences)}
    about |= {"tokens": counts.total(), "words": len(model.wv), "seconds": round(seconds, 2)}
    write_json(path.with_suffix(".json"), about)
    with atomic_path(path) as tmp:  # the .bin last: its presence means a complete training
        model.wv.save_word2vec_format(str(tmp), binary=True)
    print(f"  {lang}: trained {len(model.wv):,} vectors in {seconds:.1f}s -> {path}", flush=True)
    return path, round(seconds, 2)


# ---------------------------------------------------------------------------------------- alignment


def _forms(token: str, joiners: bool):
    yield "exact", token
    yield "case", token.lower()
    yield "case", token.capitalize()
    plain = strip_joiners(token) if joiners else token
    if plain and plain != token:
        for form in (plain, plain.lower(), plain.capitalize()):
            yield "joiner", form


def align(tokens: list[str], kv: KeyedVectors, n_specials: int, joiners: bool) -> tuple[np.ndarray, list[str]]:
    """Per vocabulary row: the row of its vector in `kv` (-1: none) and how it matched (a KINDS entry;
    "special" for <pad>, <unk>, ... which never take a pretrained vector)."""
    index = kv.key_to_index
    rows, kinds = np.full(len(tokens), -1, np.int64), ["special"] * n_specials
    for i, token in enumerate(tokens[n_specials:], start=n_specials):
        found = next(((how, index[form]) for how, form in _forms(token, joiners) if form in index), None)
        kinds.append(found[0] if found else "missing")
        rows[i] = found[1] if found else -1
    return rows, kinds


def build_matrix(rows: np.ndarray, kv: KeyedVectors, cfg: Config, name: str) -> np.ndarray:
    """Vectors where found; elsewhere seeded normal(0, oov_scale) noise or zeros; <pad> zero."""
    e, shape = cfg.embed, (len(rows), kv.vector_size)
    if e.oov_init == "normal":
        # One stream per vocabulary, so src and ner_words do not share noise rows under the same seed.
        rng = np.random.default_rng([e.seed, zlib.crc32(name.encode())])
        matrix = rng.normal(0.0, e.oov_scale, shape).astype(np.float32)
    else:
        matrix = np.zeros(shape, np.float32)
    found = rows >= 0
    matrix[found] = kv.vectors[rows[found]]
    matrix[vocab.PAD_ID] = 0.0
    return matrix


def load_matrix(cfg: Config, name: str) -> np.ndarray:
    """The matrix this stage wrote for vocabulary `name`, checked to have one row per vocabulary line."""
    path = Path(cfg.paths.embeddings) / f"{name}.npy"
    try:
        matrix = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: embedding matrix not found", hint="run `make embed` first") from None
    rows = len(vocab.load_named(cfg, name))
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise InputError(
            f"{path}: shape {matrix.shape} does not match the {rows} lines of {name}.txt",
            hint="run `make embed` again after `make vocab`",
        )
    return matrix.astype(np.float32)


def save_matrix(path: Path, matrix: np.ndarray) -> None:
    # np.save appends ".npy" to a name without it, so write through a file object to the temporary path.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, matrix, allow_pickle=False)


# ----------------------------------------------------------------------------------------- coverage


def _shares(counts: collections.Counter) -> dict:
    total = sum(counts.values())
    return {"count": total} | {k: counts[k] / (total or 1) for k in KINDS}


def coverage(tokens: list[str], kinds: list[str], splits: dict[str, list[list[str]]]) -> dict:
    """How vocabulary types (specials excluded) and running tokens per split found vectors.
    A running token outside the vocabulary maps to <unk> and so counts as missing."""
    kind_of = {t: k for t, k in zip(tokens, kinds, strict=True) if k != "special"}
    out = {"types": _shares(collections.Counter(kind_of.values())), "tokens": {}}
    for split, sentences in splits.items():
        counts = collections.Counter()
        for token, n in collections.Counter(t for s in sentences for t in s).items():
            counts[kind_of.get(token, "missing")] += n
        out["tokens"][split] = _shares(counts)
    return out


def format_report(report: dict) -> str:
    lines = [f"{'vocabulary':<10} {'size':>6}  lang {'dim':>4} {'load s':>7}  vectors"]
    for name, r in report.items():
        source = f"{r['vectors']} ({r['format']})"
        if "reused" in r:
            done = "reused" if r["reused"] else f"trained in {r['train_seconds']:.1f}s"
            source = f"word2vec-trained {r['file']} ({done})"
        cells = f"{r['size']:>6}  {r['language']:<4} {r['dim']:>4} {r['load_seconds']:>7.1f}"
        lines.append(f"{name:<10} {cells}  {source}")
    lines += ["", f"{'coverage':<10} {'over':<6} {'count':>8} " + " ".join(f"{k:>8}" for k in KINDS)]
    for name, r in report.items():
        for over, shares in [("types", r["types"])] + list(r["tokens"].items()):
            cells = " ".join(f"{100 * shares[k]:7.2f}%" for k in KINDS)
            lines.append(f"{name:<10} {over:<6} {shares['count']:>8} {cells}")
    for name, r in report.items():
        if "lexicon" in r:
            lines += ["", f"{'statistics':<10} {'over':<6} {'count':>8} {'prob':>8} {'cluster':>8} {'names':>8}"]
            for over, shares in [("types", r["lexicon"]["types"])] + list(r["lexicon"]["tokens"].items()):
                cells = " ".join(f"{100 * shares[k]:7.2f}%" for k in ("prob", "cluster", "names"))
                lines.append(f"{name:<10} {over:<6} {shares['count']:>8} {cells}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- stage


@dataclass
class Vectors:
    kv: KeyedVectors
    info: dict  # what the report says about the source


def pretrained(cfg: Config, lang: str) -> Vectors:
    path = Path(cfg.paths.raw) / getattr(cfg.embed, lang)
    start = time.perf_counter()
    kv, fmt = load_vectors(path, cfg.embed.format)
    seconds = time.perf_counter() - start
    print(f"  {lang}: {len(kv):,} x {kv.vector_size} loaded in {seconds:.1f}s", flush=True)
    return Vectors(kv, {"vectors": str(path), "format": fmt, "load_seconds": round(seconds, 2)})


def trained(cfg: Config, lang: str, sentences: list[list[str]]) -> Vectors:
    path, train_seconds = train_word2vec(cfg, lang, sentences)
    start = time.perf_counter()
    kv, _ = load_vectors(path, "word2vec_binary")  # from the file, so a reuse gives the very same matrix
    seconds = time.perf_counter() - start
    info = {"vectors": "word2vec-trained", "file": str(path), "format": "word2vec_binary"}
    info |= {"load_seconds": round(seconds, 2), "train_seconds": train_seconds, "reused": train_seconds is None}
    return Vectors(kv, info)


def run(cfg: Config) -> None:
    vocabs = {name: vocab.load_named(cfg, name) for name in NAMES}
    users = collections.defaultdict(list)  # language -> the vocabularies that take its vectors
    for name in NAMES:
        users[language(cfg, name)].append(name)
    # Vectors files first: bad input fails in seconds, before any tokenizing, training or writing.
    sources = {lang: pretrained(cfg, lang) for lang in users if getattr(cfg.embed, lang)}
    corpus = vocab.corpus_tokens(cfg)
    for lang in [lang for lang in users if lang not in sources]:
        sources[lang] = trained(cfg, lang, training_text(corpus, users[lang]))

    matrices, report = {}, {}
    for name, tokens in vocabs.items():
        lang = language(cfg, name)
        source = sources[lang]
        rows, kinds = align(tokens, source.kv, len(vocab.SPECIALS[name]), joiners=name == "tgt")
        matrices[name] = build_matrix(rows, source.kv, cfg, name)
        report[name] = {"language": lang, "size": len(tokens), "dim": source.kv.vector_size} | source.info
        report[name] |= coverage(tokens, kinds, {s: corpus[name][s] for s in data.SPLITS})

    probs, clusters = lexicon.source_tables()
    n_specials = len(vocab.SPECIALS["ner_words"])
    lex = lexicon.features(vocabs["ner_words"], probs, clusters, n_specials, gazetteer.source_tables())
    splits = {s: corpus["ner_words"][s] for s in data.SPLITS}
    report["ner_words"]["lexicon"] = lexicon.coverage(lex, vocabs["ner_words"], n_specials, splits)

    for name, matrix in matrices.items():
        save_matrix(Path(cfg.paths.embeddings) / f"{name}.npy", matrix)
    lexicon.save(cfg, lex)
    write_json(Path(cfg.paths.reports) / "embeddings.json", report)
    print(format_report(report))
    for name, r in report.items():
        for split, shares in r["tokens"].items():
            if 1 - shares["missing"] < LOW_COVERAGE:
                print(f"warning: {name} vectors cover only {100 * (1 - shares['missing']):.1f}% of {split} tokens")
