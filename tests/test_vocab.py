import collections
import subprocess
import sys

import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import vocab
from pipeline.core.errors import InputError
from pipeline.stages import prepare as prepare_stage
from pipeline.stages import vocab as vocab_stage
from tests.conftest import ROOT, needs_data, tiny_config


def test_build_orders_by_frequency_then_alphabet():
    counts = collections.Counter({"b": 3, "a": 3, "c": 1, "d": 2})
    assert vocab.build(counts, (vocab.PAD, vocab.UNK), min_freq=2) == ["<pad>", "<unk>", "a", "b", "d"]
    assert vocab.build(counts, (vocab.PAD, vocab.UNK), min_freq=1, max_size=4) == ["<pad>", "<unk>", "a", "b"]


def test_load_checks_the_file(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("<pad>\n<unk>\nx\ny\nx\n")
    with pytest.raises(InputError, match=r"v.txt:5: duplicate entry 'x' \(first on line 3\)"):
        vocab.load(path, (vocab.PAD, vocab.UNK))
    path.write_text("<unk>\n<pad>\n")
    with pytest.raises(InputError, match="must start with <pad>, <unk>"):
        vocab.load(path, (vocab.PAD, vocab.UNK))
    with pytest.raises(InputError, match="run `make vocab` first|vocabulary not found"):
        vocab.load(tmp_path / "missing.txt")


WORDS = ["<pad>", "<unk>", "<s>", "</s>", "ein", "Mann", "￭.", "Hund"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS[4:]), max_size=12), st.lists(st.text(min_size=1, max_size=8), max_size=5))
def test_encode_decode_roundtrip_and_unk(known, unknown):
    index = {t: i for i, t in enumerate(WORDS)}
    assert vocab.decode(vocab.encode(known, index), WORDS) == known
    unknown = [u for u in unknown if u not in index]
    assert vocab.encode(unknown, index) == [vocab.UNK_ID] * len(unknown)


def test_graph_lookup_tables_agree_with_the_file(tmp_path):
    path = tmp_path / "tgt.txt"
    vocab.save(path, WORDS)
    table, inverse = vocab.lookup_table(path), vocab.inverse_table(path)
    ids = table.lookup(tf.constant(["Mann", "nope", "<pad>", "￭."]))
    assert ids.numpy().tolist() == [5, vocab.UNK_ID, vocab.PAD_ID, 6]
    assert inverse.lookup(tf.constant([5, 99], tf.int64)).numpy().tolist() == [b"Mann", b"<unk>"]


def test_oov_rates():
    rates = vocab.oov_rates(collections.Counter(["a", "b", "a", "c"]), {"a"})
    assert rates["oov_token_rate"] == 0.5 and rates["oov_type_rate"] == pytest.approx(2 / 3)


@needs_data
def test_vocab_stage_on_the_tiny_config(raw_dir, tmp_path):
    cfg = tiny_config(tmp_path, raw=raw_dir)
    prepare_stage.run(cfg)
    vocab_stage.run(cfg)
    tgt = vocab.load_named(cfg, "tgt")
    assert tgt[:4] == ["<pad>", "<unk>", "<s>", "</s>"] and "￭." in tgt
    assert vocab.load_named(cfg, "ner_tags")[0] == "O" and len(vocab.load_named(cfg, "ner_tags")) == 9
    report = (tmp_path / "reports" / "vocab.json").read_text()
    assert '"oov_token_rate"' in report


def test_cli_help_lists_stages_and_keys():
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "vocab" in out.stdout and "Exit codes" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "vocab", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert "vocab.min_freq = 2" in out.stdout


def test_cli_rejects_unknown_key_before_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "vocab", "vocab.bogus=1", f'paths.vocab="{tmp_path}/v"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "unknown key vocab.bogus" in proc.stderr
    assert not (tmp_path / "v").exists()


def test_pretrained_extras_adds_only_heldout_words_with_vectors(tmp_path):
    vectors = tmp_path / "raw" / "vec.txt"
    vectors.parent.mkdir()
    vectors.write_text("paris 0.1 0.2\nLondon 0.3 0.4\nberlin 0.5 0.6\n")
    cfg = tiny_config(tmp_path, 'embed.vectors.en="{raw}/vec.txt"')
    words = {"train": {"Berlin": 1}, "valid": {"Paris": 1, "Xyzzy": 1}, "test": {"London": 1, "Berlin": 2}}
    assert vocab_stage.pretrained_extras(cfg, words, known={"<pad>", "<unk>", "Berlin"}) == ["London", "Paris"]
