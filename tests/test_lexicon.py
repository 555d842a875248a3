"""The tagger's English word statistics: rows aligned to ner_words, shared by a word's casings, read as constants."""

import collections
import math

import numpy as np
import pytest

from pipeline.core import vocab
from pipeline.core.errors import InputError
from pipeline.core.files import write_lines
from pipeline.ner import lexicon
from pipeline.ner.model import Tagger, dummy_inputs
from tests.conftest import LEXICON_CLUSTERS, LEXICON_PROBS, LEXICON_TOKENS, plain_inputs, tiny_config


def test_rows_share_the_statistics_of_all_casings_and_specials_stay_zero():
    z = lexicon.features(LEXICON_TOKENS, LEXICON_PROBS, LEXICON_CLUSTERS, n_specials=2)
    assert z["dense"].shape == (6, lexicon.DENSE) and z["dense"].dtype == np.float32
    assert not z["dense"][[0, 1, 5]].any() and not z["cluster"][[0, 1, 5]].any()
    p = np.exp([-14.0, -11.0, -16.0])
    expected = [*(p / p.sum()), (math.log(p.sum()) + 20) / 10, 1.0, 1.0]
    np.testing.assert_allclose(z["dense"][2], expected, rtol=1e-6)
    np.testing.assert_array_equal(z["dense"][3], z["dense"][2])  # BRUSSELS reads what Brussels reads
    assert z["dense"][2, 1] > 0.9  # mostly written Capitalised: a name
    assert z["dense"][4, 0] > 0.8 and z["dense"][4, 2] == 0  # "the": mostly lowercase, never THE
    # BRUSSELS has no cluster of its own: it takes that of its most probable form, Brussels.
    assert z["cluster"][3] == z["cluster"][2] > 0 and z["prefix"][3] == z["prefix"][2] > 0
    # 3 distinct clusters (0 is none) and 2 distinct 7-bit prefixes ("1110100" and "1011"), plus the zero row.
    assert z["sizes"].tolist() == [4, 3] and z["cluster"].max() < 4 and z["prefix"].max() < 3


def test_coverage_counts_types_and_running_tokens():
    z = lexicon.features(LEXICON_TOKENS, LEXICON_PROBS, LEXICON_CLUSTERS, n_specials=2)
    train = collections.Counter(["the", "Xyzzy", "zzz", "BRUSSELS"])
    cov = lexicon.coverage(z, LEXICON_TOKENS, 2, {"train": train, "test": collections.Counter()})
    assert cov["types"] == {"count": 4, "prob": 0.75, "cluster": 0.75, "names": 0.0}  # no name lists given
    assert cov["tokens"]["train"] == {"count": 4, "prob": 0.5, "cluster": 0.5, "names": 0.0}  # "zzz" is <unk>
    assert cov["tokens"]["test"] == {"count": 0, "prob": 0.0, "cluster": 0.0, "names": 0.0}


def test_the_installed_tables_know_capitalised_names():
    probs, clusters = lexicon.source_tables()
    z = lexicon.features(["<pad>", "<unk>", "Germany", "GERMANY", "the"], probs, clusters, n_specials=2)
    assert z["dense"][2, 1] > 0.5 and z["dense"][4, 0] > 0.5  # Germany is mostly Capitalised, "the" lowercase
    assert z["cluster"][2] > 0 and z["sizes"][0] == 1000  # 999 Brown clusters, and none


def test_load_checks_the_rows_against_the_vocabulary(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(InputError, match="ner_lexicon.npz: the word statistics are missing") as e:
        lexicon.load(cfg)
    assert "make embed" in e.value.hint
    write_lines(vocab.vocab_path(cfg, "ner_words"), LEXICON_TOKENS)
    lexicon.save(cfg, lexicon.features(LEXICON_TOKENS[:-1], LEXICON_PROBS, LEXICON_CLUSTERS, 2))
    with pytest.raises(InputError, match="does not match the 6 lines of ner_words.txt"):
        lexicon.load(cfg)
    lexicon.save(cfg, lexicon.features(LEXICON_TOKENS, LEXICON_PROBS, LEXICON_CLUSTERS, 2))
    assert lexicon.load(cfg)["dense"].shape == (6, lexicon.DENSE)
    assert [p.name for p in lexicon.path(cfg).parent.iterdir()] == ["ner_lexicon.npz"]  # no temporary left


def test_the_tagger_reads_the_statistics_as_constants_and_not_for_unk(tmp_path):

    cfg = tiny_config(tmp_path, "ner.lexicon=true", "ner.word_dropout=0", "ner.dropout=0")
    z = lexicon.features(LEXICON_TOKENS, LEXICON_PROBS, LEXICON_CLUSTERS, 2)
    model = Tagger(cfg.ner, np.zeros((6, 4), "float32"), n_chars=5, n_tags=3, lexicon=z)
    model(dummy_inputs(cfg.ner.max_word_length))
    [member] = model.members
    inputs = plain_inputs([[2, 4], [1, 0]], cfg.ner.max_word_length)
    before = model(inputs).numpy()
    member.cluster_emb.embeddings.assign(member.cluster_emb.embeddings + np.arange(4)[:, None].clip(0, 1))
    after = model(inputs).numpy()
    assert not np.allclose(after[0], before[0])  # Brussels and "the" read their clusters
    np.testing.assert_allclose(after[1, 0], before[1, 0], rtol=1e-6)  # <unk> reads none
    # The statistics are constants: only the two cluster embeddings are new weights.
    plain = Tagger(tiny_config(tmp_path, "ner.lexicon=false").ner, np.zeros((6, 4), "float32"), n_chars=5, n_tags=3)
    plain(dummy_inputs(cfg.ner.max_word_length))
    assert len(model.weights) == len(plain.weights) + 2
