"""Stages `data` and `prepare`: fetch and verify the raw corpora, then read, check and normalise them.

`data` fills paths.raw with byte-exact copies (from $DATA_MIRROR or the canonical URLs), each checked
against the sha256 table below. `prepare` turns them into plain files under paths.processed:

    ner/{train,valid,test}.conll      token<TAB>IOB2-tag per line, a blank line between sentences
    translate/{train,valid,test}.tsv  source<TAB>target per line, raw (untokenized, cased) text
"""

import gzip
import hashlib
import io
import os
import random
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import InputError, at
from pipeline.files import atomic_path, sha256_file, write_json, write_lines

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
    ),
    Source("vectors/en.cc0.300d.txt.gz", "3c172cf7927cf224e9ab2287e5dddd7d20319e18c9ab5c743d969402a830e35e"),
    Source("vectors/fr.cc0.300d.txt.gz", "fb58f00438fc8522dd1c9717a97cf2894d296d7fe0246cb7a302d3a6083e1795"),
]


# ---------------------------------------------------------------------------------------------- stage data


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


def run_data(cfg: Config) -> None:
    """Fill paths.raw with every source file, verified by sha256; skip files already present and valid."""
    raw = Path(cfg.paths.raw)
    mirror = os.environ.get("DATA_MIRROR")
    problems, cache = [], {}
    for src in SOURCES:
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
                problems.append(f"{dest}: no public download exists; put the file there or set DATA_MIRROR")
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


# ------------------------------------------------------------------------------------------- readers


def read_lines(path: Path):
    """Yield (line_number, text) from a plain or gzipped UTF-8 file; tolerate a BOM and CRLF endings."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise at(path, number, f"invalid UTF-8 at byte {e.start}") from None
                yield number, text.rstrip("\r\n")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found", hint="run `make data` first") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise InputError(f"{path}: not a valid gzip file ({e})") from None


TAG_PREFIXES = ("B", "I", "E", "S")


def _check_tag(path: Path, number: int, tag: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in TAG_PREFIXES or not kind:
        raise at(path, number, f"unknown tag {tag!r} (expected O or B-/I-/E-/S-<TYPE>)")


def to_iob2(tags: list[str]) -> list[str]:
    """Normalise IOB1, IOB2 or BIOES tags to IOB2 (idempotent on valid IOB2).

    IOB1 starts a span with I- unless it directly follows a span of the same type; BIOES marks single
    tokens with S- and span ends with E-. In IOB2 every span starts with B-.
    """
    out, prev = [], "O"
    for tag in tags:
        if tag == "O":
            out.append(tag)
            prev = tag
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "S":
            prefix = "B"
        elif prefix == "E":
            prefix = "I"
        if prefix == "I" and (prev == "O" or prev.split("-", 1)[1] != kind):
            prefix = "B"
        out.append(f"{prefix}-{kind}")
        prev = out[-1]
    return out


def read_conll_documents(path: Path) -> list[list[tuple[list[str], list[str]]]]:
    """Documents of a CoNLL column file, each a list of (tokens, tags) sentences: token first, NER tag last,
    any columns between.

    `-DOCSTART-` lines separate documents (a file without them is one document); tags are normalised to IOB2;
    the column count must not vary.
    """
    documents, sentences, tokens, tags, width, width_line = [], [], [], [], None, None
    for number, line in read_lines(path):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, to_iob2(tags)))
                tokens, tags = [], []
            if cols and sentences:
                documents.append(sentences)
                sentences = []
            continue
        if len(cols) < 2:
            raise at(path, number, f"expected at least 2 columns (token ... tag), got {len(cols)}")
        if width is None:
            width, width_line = len(cols), number
        elif len(cols) != width:
            raise at(path, number, f"expected {width} columns as on line {width_line}, got {len(cols)}")
        _check_tag(path, number, cols[-1])
        tokens.append(cols[0])
        tags.append(cols[-1])
    if tokens:
        sentences.append((tokens, to_iob2(tags)))
    if sentences:
        documents.append(sentences)
    if not documents:
        raise InputError(f"{path}: no sentences found")
    return documents


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """The sentences of a CoNLL column file, documents one after another (see read_conll_documents)."""
    return [sentence for document in read_conll_documents(path) for sentence in document]


def join_sentences(documents: list[list[tuple[list[str], list[str]]]], max_tokens: int) -> list[tuple[list, list]]:
    """Consecutive sentences of each document joined into sequences of at most `max_tokens` tokens (a longer
    sentence stays alone); never across documents. max_tokens = 0 keeps one sentence per sequence."""
    out = []
    for document in documents:
        tokens, tags = [], []
        for words, labels in document:
            if tokens and len(tokens) + len(words) > max_tokens:
                out.append((tokens, tags))
                tokens, tags = [], []
            tokens, tags = tokens + words, tags + labels
        out.append((tokens, tags))
    return out


def _clean(text: str) -> str:
    # Tabs would break our TSV; all other normalisation belongs to the tokenizer (pipeline/text.py).
    return text.replace("\t", " ").strip()


def read_parallel(src_path: Path, tgt_path: Path) -> list[tuple[str, str]]:
    """Aligned sentence pairs from two line-aligned files (plain or .gz)."""
    src, tgt = list(read_lines(src_path)), list(read_lines(tgt_path))
    if len(src) != len(tgt):
        raise InputError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; they must be aligned")
    pairs = []
    for (number, s), (_, t) in zip(src, tgt, strict=True):
        s, t = _clean(s), _clean(t)
        if not s:
            raise at(src_path, number, f"empty sentence (its pair is on the same line of {tgt_path.name})")
        if not t:
            raise at(tgt_path, number, f"empty sentence (its pair is on the same line of {src_path.name})")
        pairs.append((s, t))
    return pairs


def read_tatoeba(path: Path) -> list[tuple[str, str]]:
    """(English, French) pairs from ManyThings' TSV (a third attribution column, if present, is ignored)."""
    pairs = []
    for number, line in read_lines(path):
        cols = line.split("\t")
        if len(cols) not in (2, 3):
            raise at(path, number, f"expected English<TAB>French, got {len(cols)} tab-separated fields")
        en, fr = cols[0].strip(), cols[1].strip()
        if not en or not fr:
            raise at(path, number, "empty side of a pair")
        pairs.append((en, fr))
    return pairs


def split_by_source(pairs, seed: int, n_valid: int, n_test: int) -> dict[str, list]:
    """Deterministic split that keeps every translation of one English sentence in the same split."""
    sources = sorted({en for en, _ in pairs})
    random.Random(seed).shuffle(sources)
    if n_valid + n_test >= len(sources):
        raise InputError(f"tatoeba: {n_valid}+{n_test} held-out sentences leave nothing of {len(sources)} to train")
    where = {en: "valid" for en in sources[:n_valid]}
    where.update({en: "test" for en in sources[n_valid : n_valid + n_test]})
    splits = {"train": [], "valid": [], "test": []}
    for en, fr in pairs:
        splits[where.get(en, "train")].append((en, fr))
    return splits


# ------------------------------------------------------------------------------------------ stage prepare

MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
SPLITS = ("train", "valid", "test")


def translation_splits(cfg: Config) -> dict[str, list[tuple[str, str]]]:
    p, raw = cfg.prepare, Path(cfg.paths.raw)
    if p.source_lang == p.target_lang:
        raise InputError(f"prepare.source_lang and prepare.target_lang are both {p.source_lang!r}")
    if p.translation_corpus == "multi30k":
        return {
            split: read_parallel(
                raw / f"multi30k/{name}.{p.source_lang}.gz", raw / f"multi30k/{name}.{p.target_lang}.gz"
            )
            for split, name in MULTI30K_SPLITS.items()
        }
    if {p.source_lang, p.target_lang} != {"en", "fr"}:
        raise InputError("prepare.translation_corpus=tatoeba has only en and fr")
    splits = split_by_source(read_tatoeba(raw / "tatoeba/fra.txt.gz"), p.tatoeba_seed, p.tatoeba_valid, p.tatoeba_test)
    if p.source_lang == "fr":
        splits = {k: [(fr, en) for en, fr in v] for k, v in splits.items()}
    return splits


def _limit_documents(documents: list, max_tokens: int, split: str, cfg: Config) -> list[list[tuple[list, list]]]:
    """Each document's sentences (joined by join_sentences), cut after prepare.max_train / max_eval in all."""
    n = cfg.prepare.max_train if split == "train" else cfg.prepare.max_eval
    out, total = [], 0
    for document in documents:
        sequences = join_sentences([document], max_tokens)
        if n and total + len(sequences) > n:
            sequences = sequences[: n - total]
        if sequences:
            out.append(sequences)
        total += len(sequences)
        if n and total >= n:
            break
    return out


def _limit(items: list, split: str, cfg: Config) -> list:
    n = cfg.prepare.max_train if split == "train" else cfg.prepare.max_eval
    return items[:n] if n else items


def run_prepare(cfg: Config) -> None:
    """Read every raw corpus, check it, and write the processed splits plus data/reports/data.json."""
    raw, out = Path(cfg.paths.raw), Path(cfg.paths.processed)
    if cfg.prepare.ner_context_tokens > cfg.text.max_length:
        raise InputError(
            f"prepare.ner_context_tokens = {cfg.prepare.ner_context_tokens} is more than text.max_length = "
            f"{cfg.text.max_length}: training would cut the joined sequences"
        )
    # Read and check everything before writing anything, so bad input leaves paths.processed untouched.
    documents = {s: read_conll_documents(raw / f"conll2003/{s}.txt") for s in SPLITS}
    ner = {s: _limit_documents(docs, cfg.prepare.ner_context_tokens, s, cfg) for s, docs in documents.items()}
    parallel = {s: _limit(pairs, s, cfg) for s, pairs in translation_splits(cfg).items()}

    stats = {"ner": {}, "translate": {}}
    for split, docs in ner.items():
        lines = []
        for doc in docs:  # -DOCSTART- lines keep the documents: the tagger's document memory reads them
            lines += ["-DOCSTART-", ""]
            for tokens, tags in doc:
                lines.extend(f"{tok}\t{tag}" for tok, tag in zip(tokens, tags, strict=True))
                lines.append("")
        write_lines(out / f"ner/{split}.conll", lines)
        sentences = [s for doc in docs for s in doc]
        stats["ner"][split] = {
            "documents": len(documents[split]),
            "sentences": sum(len(d) for d in documents[split]),
            "sequences": len(sentences),
            "tokens": sum(len(t) for t, _ in sentences),
            "entities": sum(tag.startswith("B-") for _, tags in sentences for tag in tags),
        }
    for split, pairs in parallel.items():
        write_lines(out / f"translate/{split}.tsv", (f"{s}\t{t}" for s, t in pairs))
        stats["translate"][split] = {"pairs": len(pairs)}
    stats["translate"]["corpus"] = (
        f"{cfg.prepare.translation_corpus} {cfg.prepare.source_lang}-{cfg.prepare.target_lang}"
    )
    write_json(Path(cfg.paths.reports) / "data.json", stats)
    for split in SPLITS:
        n = stats["ner"][split]
        print(
            f"  ner/{split:5s}  {n['sentences']:6d} sentences in {n['sequences']:6d} sequences "
            f"{n['tokens']:7d} tokens {n['entities']:6d} entities"
        )
    for split in SPLITS:
        print(f"  translate/{split:5s}  {stats['translate'][split]['pairs']:6d} pairs")


# ------------------------------------------------------------------------------- readers of processed files


def load_ner(cfg: Config, split: str) -> list[tuple[list[str], list[str]]]:
    path = Path(cfg.paths.processed) / f"ner/{split}.conll"
    return read_conll(path)


def load_ner_documents(cfg: Config, split: str) -> list[list[tuple[list[str], list[str]]]]:
    path = Path(cfg.paths.processed) / f"ner/{split}.conll"
    first = next(read_lines(path), (1, ""))[1]
    if first != "-DOCSTART-":  # all of it would read as one document
        raise InputError(
            f"{path}: no -DOCSTART- line: written by an older `prepare`, before documents were kept",
            hint="run `make prepare` again",
        )
    return read_conll_documents(path)


def load_parallel(cfg: Config, split: str) -> list[tuple[str, str]]:
    path = Path(cfg.paths.processed) / f"translate/{split}.tsv"
    pairs = []
    for number, line in read_lines(path):
        s, sep, t = line.partition("\t")
        if not sep:
            raise at(path, number, "expected source<TAB>target")
        pairs.append((s, t))
    return pairs
