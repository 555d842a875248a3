import pytest

from pipeline.core import config
from pipeline.core.errors import InputError
from tests.conftest import ROOT


def test_every_shipped_config_loads():
    for path in (ROOT / "configs").glob("*.toml"):
        cfg = config.load(path)
        assert cfg.text.max_length > 0


def test_overrides_are_typed():
    cfg = config.load(None, ["vocab.min_freq=3", "text.lowercase=true", "prepare.target_lang=fr", "embed.oov_scale=1"])
    assert cfg.vocab.min_freq == 3 and cfg.text.lowercase is True and cfg.prepare.target_lang == "fr"
    assert cfg.embed.oov_scale == 1.0 and isinstance(cfg.embed.oov_scale, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("vocab.nope=1", "unknown key vocab.nope"),
        ("nosection.x=1", "unknown section [nosection]"),
        ("vocab.min_freq=two", "expected int, got str"),
        ("vocab.min_freq=true", "expected int, got bool"),
        ("text.normalize=NFD", "is not one of"),
        ("min_freq=2", "expected section.key=value"),
    ],
)
def test_bad_overrides_are_rejected(override, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(None, [override])


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[vocab]\nmin_freq = 'x'\n")
    with pytest.raises(InputError, match=r"bad.toml: vocab.min_freq: expected int"):
        config.load(bad)
    bad.write_text("[vocab\n")
    with pytest.raises(InputError, match="invalid TOML"):
        config.load(bad)
    with pytest.raises(InputError, match="not found"):
        config.load(tmp_path / "missing.toml")


def test_fingerprint_depends_only_on_given_sections():
    a, b = config.load(None), config.load(None, ["vocab.min_freq=5"])
    assert a.fingerprint(("prepare",)) == b.fingerprint(("prepare",))
    assert a.fingerprint(("vocab",)) != b.fingerprint(("vocab",))


def test_describe_lists_keys_and_defaults():
    text = config.describe(("vocab",))
    assert "vocab.min_freq = 2" in text and "[int]" in text
