"""The language model's text: one UTF-8 file, read whole and checked; the processed splits read back.

<paths.processed>/lm/{train,valid[,test]}.txt    the text exactly as read (CRLF line ends become LF)
"""

import gzip
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import InputError, at


@dataclass
class TextFile:
    text: str
    files: list[str]
    held_out: str = ""  # how this split was made, when it was cut off another file


def read_text(path: Path) -> TextFile:
    """A whole UTF-8 file (plain or .gz; a BOM is dropped, CRLF becomes LF); invalid bytes are an error naming the
    line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(
            f"{path}: file not found", hint="run `make data` first, or name your own file in [lm.data]"
        ) from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise InputError(f"{path}: not a valid gzip file ({e})") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise at(path, raw.count(b"\n", 0, e.start) + 1, f"invalid UTF-8 at byte {e.start}") from None
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise InputError(f"{path}: no text (an empty file)")
    return TextFile(text, [str(path)])


def split_tail(read: TextFile, share: float) -> tuple[TextFile, TextFile]:
    """(first 1 - share, last share) of the characters: the customary tiny-Shakespeare split (char-rnn, nanoGPT)."""
    if not 0 < share < 1:
        raise InputError(f"lm.data.valid_share must be between 0 and 1 to hold out valid, got {share}")
    cut = int(len(read.text) * (1 - share))
    if cut == 0 or cut == len(read.text):
        raise InputError(f"{read.files[0]}: {len(read.text)} characters are too few to hold out {share:.0%} as valid")
    how = f"the last {len(read.text) - cut:,} characters ({share:.0%}) of {read.files[0]}"
    return TextFile(read.text[:cut], read.files), TextFile(read.text[cut:], read.files, how)


def processed_path(cfg: Config, split: str) -> Path:
    return Path(cfg.paths.processed) / "lm" / f"{split}.txt"


def splits(cfg: Config) -> tuple[str, ...]:
    """The splits this config has: train, valid, and test only when a test file is named."""
    return ("train", "valid", "test") if cfg.lm_data.test else ("train", "valid")


def load_text(cfg: Config, split: str) -> str:
    path = processed_path(cfg, split)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: processed text not found", hint="run `make prepare` first") from None
