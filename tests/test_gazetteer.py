"""The tagger's name lists: columns of ner_lexicon.npz from the installed place and person name packages."""

import numpy as np

from pipeline.ner import gazetteer, lexicon
from pipeline.ner.model import Tagger, dummy_inputs
from tests.conftest import LEXICON_CLUSTERS, LEXICON_PROBS, LEXICON_TOKENS, plain_inputs, tiny_config

NAMES = {
    "place": {"brussels": 1_000_000.0, "bath": 90_000.0},
    "place_first": {"new"},
    "place_later": {"york"},
    "region": {"belgium"},
    "first_name": {"john"},
    "surname_rank": {"smith": 1, "brussels": 100},
    "surnames": 1000,
}


def test_columns_read_the_lowercase_word_and_specials_stay_zero():
    tokens = ["<pad>", "<unk>", "BRUSSELS", "Brussels", "New", "york", "Belgium", "John", "Smith", "the"]
    g = gazetteer.features(tokens, NAMES, n_specials=2)
    assert g.shape == (10, gazetteer.WIDTH) and g.dtype == np.float32
    assert not g[[0, 1, 9]].any()  # specials, and a word in no list
    np.testing.assert_array_equal(g[2], g[3])  # BRUSSELS reads what Brussels reads
    assert g[2, 0] == 1 and np.isclose(g[2, 1], np.log10(1_000_001) / 8)
    assert np.isclose(g[2, 6], 1 - np.log(100) / np.log(1000)) and g[2, 7] == 1  # also a (rare) surname
    assert g[4].tolist() == [0, 0, 1, 0, 0, 0, 0, 0] and g[5].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert g[6, 4] == 1 and g[7, 5] == 1 and g[8, 6] == 1.0  # region, first name, the commonest surname


def test_the_installed_lists_know_places_and_people():
    names = gazetteer.source_tables()
    tokens = ["<pad>", "<unk>", "Chittagong", "Munich", "Germany", "Hampshire", "John", "Smith", "Xyzzyq"]
    g = gazetteer.features(tokens, names, n_specials=2)
    assert g[2, 0] == 1 and g[3, 0] == 1 and g[3, 1] > 0.6  # cities of over a million people
    assert g[4, 4] == 1 and g[5, 4] == 1  # a country, a county
    assert g[6, 5] == 1 and g[7, 6] == 1.0 and not g[8].any()


def test_lexicon_file_carries_the_columns_and_the_tagger_reads_them_as_constants(tmp_path):
    z = lexicon.features(LEXICON_TOKENS, LEXICON_PROBS, LEXICON_CLUSTERS, 2, NAMES)
    assert (
        z["gazetteer"][2, 0] == 1
        and not lexicon.features(LEXICON_TOKENS, LEXICON_PROBS, LEXICON_CLUSTERS, 2)["gazetteer"].any()
    )
    cfg = tiny_config(tmp_path, "ner.lexicon=false", "ner.gazetteer=true", "ner.word_dropout=0", "ner.dropout=0")
    model = Tagger(cfg.ner, np.zeros((6, 4), "float32"), n_chars=5, n_tags=3, lexicon=z)
    model(dummy_inputs(cfg.ner.max_word_length))
    plain = Tagger(tiny_config(tmp_path, "ner.lexicon=false").ner, np.zeros((6, 4), "float32"), n_chars=5, n_tags=3)
    plain(dummy_inputs(cfg.ner.max_word_length))
    assert len(model.weights) == len(plain.weights)  # no new variables: only wider inputs
    # Brussels (row 2) and the unknown Xyzzy (row 5) differ only in their list columns: so do their scores.
    inputs = plain_inputs([[2], [5]], cfg.ner.max_word_length)
    scores = model(inputs).numpy()
    assert not np.allclose(scores[0], scores[1])
    z["gazetteer"][2] = 0
    same = Tagger(cfg.ner, np.zeros((6, 4), "float32"), n_chars=5, n_tags=3, lexicon=z)
    same(dummy_inputs(cfg.ner.max_word_length))
    same.set_weights(model.get_weights())
    scores = same(inputs).numpy()
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6)
