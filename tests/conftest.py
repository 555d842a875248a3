"""Shared fixtures: tiny configs whose paths all live in a temp dir, and the real corpora when DATA_MIRROR is set."""

import dataclasses
import os
from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.stages import fetch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
MIRROR = os.environ.get("DATA_MIRROR")
needs_data = pytest.mark.skipif(not MIRROR, reason="needs the real corpora: set DATA_MIRROR=<dir like ../shared/data>")


def path_overrides(base: Path, raw: Path | None = None) -> list[str]:
    """`paths.*=...` overrides that put every artifact under `base` (raw data optionally elsewhere)."""
    out = [f'paths.{f.name}="{base / f.name}"' for f in dataclasses.fields(config.Paths)]
    if raw is not None:
        out.append(f'paths.raw="{raw}"')
    return out


def tiny_config(base: Path, *overrides: str, raw: Path | None = None) -> config.Config:
    return config.load(TINY, [*path_overrides(base, raw), *overrides])


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """The real raw corpora, fetched once per test session by the `data` stage from DATA_MIRROR."""
    if not MIRROR:
        pytest.skip("needs the real corpora: set DATA_MIRROR")

    base = tmp_path_factory.mktemp("raw")
    fetch.run(tiny_config(base, raw=base / "raw"))
    return base / "raw"
