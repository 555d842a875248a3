"""Write-then-rename helpers: a stage killed mid-write never leaves a half-written artifact behind."""

import contextlib
import gzip
import hashlib
import importlib.resources
import json
import os
import tempfile
from pathlib import Path

from pipeline.core.errors import InputError, at

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success rename it over `path`, on any error delete it.

    The temporary file lives in the same directory, so the final os.replace is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artifacts get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_lines(path: str | Path, lines) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def package_file(package: str, name: str):
    """A data file shipped inside an installed package (a project dependency), as a path on disk."""
    try:
        where = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise InputError(
            f"the {package} package is not installed", hint="run `make setup` (it is a project dependency)"
        ) from None
    with importlib.resources.as_file(where / name) as path:
        yield path


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
