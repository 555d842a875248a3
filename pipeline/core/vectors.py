"""Word vectors files (GloVe, word2vec text or binary, fastText .vec; plain or gzipped) read into gensim
KeyedVectors with every malformed line reported as file:line, vectors in installed packages (vector_packages),
the sets a language names, and the embedding matrices (.npy) the tasks load.
"""

import contextlib
import gzip
import math
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors

from pipeline.core import vector_packages, vocab
from pipeline.core.config import Config
from pipeline.core.errors import InputError, at
from pipeline.core.files import atomic_path

FORMATS = {  # embed.format -> (binary, has a "count dim" header)
    "glove": (False, False),
    "word2vec": (False, True),
    "fasttext": (False, True),  # fastText .vec is word2vec text
    "word2vec_binary": (True, True),
}


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


def read_source(source: str, fmt: str = "auto") -> tuple[vector_packages.Table, dict]:
    """One vector set, a file or `package:NAME`, as (word -> row table, what the report says about it)."""
    if vector_packages.is_package(source):
        table, info = vector_packages.load(source)
    else:
        start = time.perf_counter()
        kv, fmt = load_vectors(Path(source), fmt)
        table = vector_packages.Table(kv.key_to_index, kv.vectors)
        info = {"vectors": source, "format": fmt, "load_seconds": round(time.perf_counter() - start, 2)}
    took = f"{len(table):,} words x {table.vector_size} loaded in {info['load_seconds']:.1f}s"
    print(f"  {vector_packages.set_name(source)}: {took}", flush=True)
    return table, info


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
