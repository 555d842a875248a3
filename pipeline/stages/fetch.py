"""Stage `data`: fill paths.raw with byte-exact copies of the shipped corpora and vectors that the config names
(from $DATA_MIRROR or the canonical URLs), each checked against the sha256 table below. This table is the one
place that knows corpus names; a config names files (configs/*.toml), and files of the user's own are not
fetched but read where they are.
"""

import gzip
import hashlib
import io
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import vector_packages  # not core.vectors: this stage runs without TensorFlow
from pipeline.core.config import Config, corpus_files, languages
from pipeline.core.errors import InputError
from pipeline.core.files import atomic_path, sha256_file

MULTI30K_URL = (
    "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/"
)


# ManyThings' own zip has moved on to newer releases; this GitHub copy is byte-identical to the 2017-09-29
# release whose checksums are below (see ../shared/data/tatoeba/SOURCE.md).
TATOEBA_ZIP_URL = (
    "https://raw.githubusercontent.com/genimind/seq2seq/4f3f8eb0adde54fcc8b89394336b002e7961244c/fra-eng.zip"
)


TATOEBA_ZIP_SHA256 = "16c4f7d0df9e7c5e6c54cdb0447f3f4a18a55052ff5e2e0b27dd4a06c0e49d04"


@dataclass(frozen=True)
class Source:
    path: str  # relative to paths.raw and to $DATA_MIRROR
    sha256: str  # of the file as stored
    url: str | None = None  # canonical download; None where no public canonical URL exists
    content_sha256: str | None = None  # of the decompressed content, for files we re-compress ourselves
    with_: str = ""  # fetched along with this source (its license notice)


def _multi30k() -> list[Source]:
    shas = {
        "train.en": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
        "train.de": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
        "train.fr": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
        "val.en": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
        "val.de": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
        "val.fr": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
        "test_2016_flickr.en": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
        "test_2016_flickr.de": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
        "test_2016_flickr.fr": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    }
    return [Source(f"multi30k/{name}.gz", sha, MULTI30K_URL + f"{name}.gz") for name, sha in shas.items()]


SOURCES: list[Source] = [
    *_multi30k(),
    Source("conll2003/train.txt", "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423"),
    Source("conll2003/valid.txt", "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b"),
    Source("conll2003/test.txt", "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b"),
    Source(
        "tatoeba/fra.txt.gz",
        "ec59d6aaba2103a1320330f39bec51dbebbb20cb6bbe9976bd16b0622c965a50",
        TATOEBA_ZIP_URL,
        content_sha256="2546838ae46e0eac4c02ab7032ea0a02a006074a5340077a36a9444f41e02888",
    ),
    Source(
        "tatoeba/_about.txt",
        "359011f5738272138286287b44db215d184823911eb049da2160a6ac6933d6c9",
        TATOEBA_ZIP_URL,
        with_="tatoeba/fra.txt.gz",
    ),
    Source(
        "shakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/"
        "tinyshakespeare/input.txt",
    ),
    Source("vectors/en.cc0.300d.txt.gz", "3c172cf7927cf224e9ab2287e5dddd7d20319e18c9ab5c743d969402a830e35e"),
    Source("vectors/fr.cc0.300d.txt.gz", "fb58f00438fc8522dd1c9717a97cf2894d296d7fe0246cb7a302d3a6083e1795"),
]


def named(cfg: Config) -> list[Source]:
    """The sources the config's tasks read: the corpus files and the vectors (embed.vectors.<lang> of the tasks'
    languages) it names under paths.raw."""
    raw = Path(cfg.paths.raw)
    langs = languages(cfg)  # a vocabulary's own sets (embed.vectors.ner_words.en) count where its language does
    named = []
    for key in cfg.embed.vectors:
        vocabulary, _, lang = key.rpartition(".")  # "en" -> ("", "en"); "ner_words.en" -> ("ner_words", "en")
        if lang in langs:
            named.append(vector_packages.sources(cfg, lang, vocabulary))
    files = set(corpus_files(cfg)) | {s for sets in named for s in sets}
    files = {os.path.normpath(f) for f in files if f}
    wanted = {src.path for src in SOURCES if os.path.normpath(raw / src.path) in files}
    return [src for src in SOURCES if src.path in wanted or src.with_ in wanted]


def stamp_inputs(cfg: Config, stage: str = "data") -> dict:
    """What the stage's config fingerprint covers: the files it would fetch (not the whole embed section, whose
    Word2Vec settings must not rerun everything from `data` on)."""
    return {"raw": cfg.paths.raw, "sources": [src.path for src in named(cfg)]}


def _verified(path: Path, src: Source) -> bool:
    """True when `path` holds exactly the expected bytes (or, for re-compressed files, content)."""
    if not path.is_file():
        return False
    if sha256_file(path) == src.sha256:
        return True
    if src.content_sha256:
        h = hashlib.sha256()
        try:
            with gzip.open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        except (OSError, EOFError):
            return False
        return h.hexdigest() == src.content_sha256
    return False


def _copy_from_mirror(mirror: Path, src: Source, dest: Path) -> None:
    origin = mirror / src.path
    if not origin.is_file():
        raise InputError(f"{origin}: missing from DATA_MIRROR={mirror}")
    with atomic_path(dest) as tmp:
        shutil.copyfile(origin, tmp)
        if not _verified(tmp, src):
            raise InputError(f"{origin}: sha256 {sha256_file(tmp)} does not match the expected {src.sha256}")


def _download(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        return response.read()


def _fetch(src: Source, dest: Path, cache: dict) -> None:
    """Download one source; the Tatoeba zip is fetched once and unpacked into its two files."""
    if src.url not in cache:
        cache[src.url] = _download(src.url)
    payload = cache[src.url]
    if src.url == TATOEBA_ZIP_URL:
        if hashlib.sha256(payload).hexdigest() != TATOEBA_ZIP_SHA256:
            raise InputError(f"{src.url}: sha256 does not match the 2017-09-29 release")
        member = zipfile.ZipFile(io.BytesIO(payload)).read(Path(src.path).name.removesuffix(".gz"))
        payload = gzip.compress(member, compresslevel=9, mtime=0) if src.path.endswith(".gz") else member
    with atomic_path(dest) as tmp:
        tmp.write_bytes(payload)
        if not _verified(tmp, src):
            raise InputError(f"{src.url}: downloaded file does not match sha256 {src.sha256}")


def run(cfg: Config) -> None:
    """Stage `data`: the shipped files the config names, verified by sha256 (see `fetch`)."""
    sources = named(cfg)
    if not sources:
        print("  nothing to fetch: the config names no shipped corpus or vectors (its own files are read in place)")
    fetch(cfg, sources)


def fetch(cfg: Config, sources: list[Source]) -> None:
    """Fill paths.raw with these source files, verified by sha256; skip files already present and valid."""
    raw = Path(cfg.paths.raw)
    mirror = os.environ.get("DATA_MIRROR")
    problems, cache = [], {}
    for src in sources:
        dest = raw / src.path
        if _verified(dest, src):
            print(f"  ok        {dest}")
            continue
        try:
            if mirror:
                _copy_from_mirror(Path(mirror), src, dest)
            elif src.url:
                _fetch(src, dest, cache)
            else:
                also = (
                    ' (or set embed.vectors.<lang> = "" to train Word2Vec instead)'
                    if src.path.startswith("vectors/")
                    else ""
                )
                problems.append(f"{dest}: no public download exists; put the file there or set DATA_MIRROR{also}")
                continue
            print(f"  fetched   {dest}")
        except InputError as e:
            problems.append(str(e))
        except (urllib.error.URLError, OSError, zipfile.BadZipFile) as e:
            problems.append(f"{src.url}: download failed ({e}); put {src.path} into {raw} or set DATA_MIRROR")
    if problems:
        raise InputError(
            f"{len(problems)} raw file(s) missing or invalid:\n  " + "\n  ".join(problems),
            hint="set DATA_MIRROR=<dir laid out like ../shared/data> (e.g. DATA_MIRROR=../shared/data make data)",
        )
