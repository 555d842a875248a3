"""Greedy and beam search: worked examples on a Markov-chain "model" with known step probabilities, bookkeeping
checks against teacher forcing on a real tiny model, length limits, one trace for every input shape, and the
search token for token against the reference search it replaced (tests/reference_beam.py)."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.core.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from pipeline.translate import corpus, decode, predict
from pipeline.translate.config import Translate
from tests.conftest import TRAINED_SETTINGS, copy_run, needs_data, pad, tiny_model

A, B = 4, 5  # the toy vocabulary: <pad> <unk> <s> </s> A B


class ChainModel:
    """P(next | previous token) from a fixed table: no encoder, no recurrence, attention on the last source word."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 6):
        probs = np.full((vocab, vocab), 1e-9)
        for prev, row in table.items():
            for tok, p in row.items():
                probs[prev, tok] = p
        self.logits = tf.constant(np.log(probs / probs.sum(1, keepdims=True)), tf.float32)

    def encode(self, src_ids, training=False):
        lengths = tf.reduce_sum(tf.cast(src_ids != PAD_ID, tf.int32), axis=1)
        return (tf.one_hot(lengths - 1, tf.shape(src_ids)[1]),), (tf.zeros([tf.shape(src_ids)[0], 1]),)

    def decode_step(self, prev_ids, state, memory):
        return tf.gather(self.logits, prev_ids), state, memory[0]


def best(hyps) -> list[list[int]]:
    ids = hyps.ids.numpy()
    return (ids[:, 0] if ids.ndim == 3 else ids).tolist()


def test_beam_finds_the_better_sequence_that_greedy_misses():
    # Greedy takes A (0.6) and then must end (0.5): 0.30. Beam keeps B (0.4), which ends with 0.9: 0.36.
    model = ChainModel({BOS_ID: {A: 0.6, B: 0.4}, A: {EOS_ID: 0.5, A: 0.25, B: 0.25}, B: {EOS_ID: 0.9, A: 0.1}})
    src = pad([[7, 8]])
    greedy = decode.greedy(model, src, 0.0, 5)
    beam = decode.beam_search(model, src, beam_width=2, alpha=0.0, max_length_a=0.0, max_length_b=5)
    assert best(greedy) == [[A, EOS_ID]] and np.isclose(greedy.log_probs[0], np.log(0.3), atol=1e-5)
    assert best(beam)[0][:2] == [B, EOS_ID] and np.isclose(beam.scores[0, 0], np.log(0.36), atol=1e-5)
    assert beam.scores[0, 0] >= beam.scores[0, 1]
    np.testing.assert_array_equal(beam.attention[0, 0, :2], [1, 1])  # the toy attends to the last source word


def test_length_penalty_prefers_longer_output():
    # "</s>" alone: log 0.5 = -0.69. "A </s>": log 0.475 = -0.74, but / lp(2) = 7/6 with alpha 1 it is -0.64.
    model = ChainModel({BOS_ID: {EOS_ID: 0.5, A: 0.5}, A: {EOS_ID: 0.95, B: 0.05}})
    src = pad([[7]])
    short = decode.beam_search(model, src, 2, alpha=0.0, max_length_a=0.0, max_length_b=5)
    long = decode.beam_search(model, src, 2, alpha=1.0, max_length_a=0.0, max_length_b=5)
    assert best(short)[0][0] == EOS_ID and best(long)[0][:2] == [A, EOS_ID]
    assert np.isclose(long.scores[0, 0], np.log(0.475) / (7 / 6), atol=1e-5)
    assert np.isclose(long.log_probs[0, 0], np.log(0.475), atol=1e-5)


def test_output_stops_at_the_length_limit_with_a_forced_end():
    model = ChainModel({t: {A: 0.7, B: 0.3} for t in range(6)})  # never wants to stop
    src = pad([[7], [7, 8, 9, 10]])
    limits = [int(1.5 * n + 2) for n in (1, 4)]  # 3 and 8
    for hyps in (decode.greedy(model, src, 1.5, 2), decode.beam_search(model, src, 3, 0.6, 1.5, 2)):
        rows = hyps.ids.numpy().reshape(-1, hyps.ids.shape[-1]).tolist()
        assert hyps.ids.shape[-1] == max(limits)
        for row, limit in zip(rows, np.repeat(limits, len(rows) // 2), strict=True):
            assert row.index(EOS_ID) == limit - 1 and set(row[limit:]) <= {PAD_ID}


def test_search_stops_early_when_every_sentence_has_ended():
    model = ChainModel({BOS_ID: {A: 0.6, B: 0.4}, A: {EOS_ID: 0.9, B: 0.1}, B: {EOS_ID: 0.9, A: 0.1}})
    hyps = decode.beam_search(model, pad([[7, 8, 9]]), 2, 0.0, 10.0, 50)
    assert hyps.ids.shape[-1] <= 4  # far below the limit of 80 steps


@pytest.fixture(scope="module")
def model():
    return tiny_model(src_vocab=30, tgt_vocab=12, encoder_layers=2)


SRC = pad([[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]])


def test_beam_of_one_is_greedy(model):
    greedy = decode.greedy(model, SRC, 1.5, 3)
    beam = decode.beam_search(model, SRC, 1, 0.0, 1.5, 3)
    np.testing.assert_array_equal(beam.ids[:, 0], greedy.ids)
    np.testing.assert_allclose(beam.log_probs[:, 0], greedy.log_probs, atol=1e-5)
    np.testing.assert_array_equal(beam.attention[:, 0], greedy.attention)


def test_beam_scores_match_teacher_forcing(model):
    """Every returned hypothesis, re-scored by the training graph, has the log-probability the search reported."""
    width = 4
    hyps = decode.beam_search(model, SRC, width, 0.6, 1.5, 3)
    ids = hyps.ids.numpy().reshape(-1, hyps.ids.shape[-1])
    tgt_in = np.concatenate([np.full((len(ids), 1), BOS_ID), ids[:, :-1]], axis=1)
    logp = tf.nn.log_softmax(model((np.repeat(SRC, width, axis=0), tgt_in)))
    token_logp = tf.gather(logp, ids, batch_dims=2).numpy() * (ids != PAD_ID)
    np.testing.assert_allclose(token_logp.sum(1).reshape(-1, width), hyps.log_probs, atol=1e-4)
    lengths = (ids != PAD_ID).sum(1).reshape(-1, width)
    np.testing.assert_allclose(hyps.scores, hyps.log_probs / ((5 + lengths) / 6) ** 0.6, rtol=1e-5)
    assert np.all(np.diff(hyps.scores.numpy(), axis=1) <= 0)


def test_traced_once_for_all_batch_sizes_and_lengths(model):
    cfg = Translate(beam_width=3)
    signature = [tf.TensorSpec([None, None], tf.int32)]
    beam = tf.function(lambda src: decode.search(model, src, cfg), input_signature=signature)
    greedy = tf.function(lambda src: decode.greedy(model, src), input_signature=signature)
    for src in (SRC, SRC[:1, :2], pad([[5] * 9] * 4)):
        assert beam(src).ids.shape[0] == greedy(src).ids.shape[0] == len(src)
    np.testing.assert_array_equal(beam(SRC).ids, decode.search(model, SRC, cfg).ids)
    assert beam.experimental_get_tracing_count() == greedy.experimental_get_tracing_count() == 1


def test_replace_unknowns_copies_the_most_attended_source_token():
    out = decode.replace_unknowns(
        tf.constant([["Ein", "<unk>", "."]]),
        tf.constant([[7, UNK_ID, 9]]),
        tf.constant([[0, 2, 3]]),
        tf.constant([["A", "man", "Zidane", "."]]),
    )
    assert out.numpy().tolist() == [[b"Ein", b"Zidane", b"."]]


# ---------------------------------------------------------------- the faster search against the reference one


def test_two_stage_top_k_is_top_k_ties_and_infinities_included():
    rng = np.random.default_rng(0)
    width, k = 4 * 10 * decode.CHUNK + 77, 10  # wide enough for the two-stage path, not a multiple of CHUNK
    x = np.round(rng.normal(0, 1, (40, width)), 1).astype(np.float32)  # many equal values
    x[3] = -np.inf  # a row with nothing finite (a beam that is not live)
    x[4, :] = -np.inf
    x[4, [3, 4000]] = 0.5  # two finite entries, far apart (a row at its length limit keeps only </s>)
    x[5, decode.CHUNK * 7 : decode.CHUNK * 8] = 9.0  # every one of k best in a single chunk
    got, want = decode.top_k_rows(tf.constant(x), k), tf.math.top_k(tf.constant(x), k)
    np.testing.assert_array_equal(got[0], want.values)
    np.testing.assert_array_equal(got[1], want.indices)


def _reference_agrees(model, src, *settings):
    from tests.reference_beam import reference_beam_search

    signature = [tf.TensorSpec([None, None], tf.int32)]
    new = tf.function(lambda s: decode.beam_search(model, s, *settings), input_signature=signature)(src)
    old = tf.function(lambda s: reference_beam_search(model, s, *settings), input_signature=signature)(src)
    np.testing.assert_array_equal(new.ids, old.ids)
    np.testing.assert_array_equal(new.attention, old.attention)
    # Sentences that finish leave the batch, and a matmul over fewer rows may round its last bit differently.
    np.testing.assert_allclose(new.scores, old.scores, rtol=1e-5)
    np.testing.assert_allclose(new.log_probs, old.log_probs, rtol=1e-5)
    return new


def test_beam_search_matches_the_reference_search_on_an_8k_vocabulary():
    model = tiny_model(src_vocab=30, tgt_vocab=8000)
    bias = model.generator.bias.numpy()
    bias[EOS_ID] = 0.2  # some sentences end by choice, early or late, others at their limit: the batch shrinks
    model.generator.bias.assign(bias)
    rng = np.random.default_rng(1)
    src = pad([rng.integers(4, 30, n).tolist() for n in rng.integers(1, 15, 24)])
    new = _reference_agrees(model, src, 5, 0.6, 1.5, 10)
    lengths = (new.ids.numpy()[:, 0] != PAD_ID).sum(1)
    assert len(set(lengths.tolist())) > 3, lengths  # the shrinking batch was exercised


def test_beam_search_matches_the_reference_search_on_the_chain_and_an_empty_batch():
    chain = ChainModel({BOS_ID: {A: 0.6, B: 0.4}, A: {A: 0.5, EOS_ID: 0.5}, B: {EOS_ID: 0.9, B: 0.1}})
    _reference_agrees(chain, pad([[7, 8, 9], [7], [7, 8, 9, 9, 9, 9]]), 3, 0.6, 1.5, 4)
    empty = _reference_agrees(chain, np.zeros((0, 3), np.int32), 3, 0.6, 1.5, 4)
    assert empty.ids.shape[0] == 0


def _parity_on_test_split(cfg):
    from tests.reference_beam import reference_translations, translations

    translator = predict.load_translator(cfg, use_cudnn=False)
    texts = [source for source, _ in corpus.load_parallel(cfg, "test")]
    new, old = translations(translator, texts), reference_translations(translator, cfg, texts)
    assert new[0] == old[0]
    np.testing.assert_allclose(new[1], old[1], rtol=1e-5)


def test_translations_match_the_reference_search_on_the_tiny_model(synthetic_run, tmp_path):
    _parity_on_test_split(copy_run(synthetic_run, tmp_path / "run", *TRAINED_SETTINGS))


@needs_data
def test_test2016_translations_match_the_reference_search(real_run):
    _parity_on_test_split(real_run)  # the tiny model trained on Multi30k, all of test2016 translated
