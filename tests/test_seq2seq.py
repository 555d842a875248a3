"""The translator: masked attention, padding invariance, one step function for training and decoding, and a tiny
model that learns to reverse 50 sentences (and, with DATA_MIRROR, 50 Multi30k pairs to BLEU > 90)."""

import collections
import gzip
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.core import text, vocab
from pipeline.core.config import Text
from pipeline.core.errors import InputError
from pipeline.core.vocab import BOS_ID, EOS_ID
from pipeline.translate import attention, decode
from pipeline.translate import model as seq2seq
from pipeline.translate import train as translate_train
from tests.conftest import MIRROR, needs_data, pad, tiny_config, tiny_model


def teacher_forcing(targets: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Target token rows -> (decoder input <s> y, labels y </s>)."""
    return pad([[BOS_ID, *t] for t in targets]), pad([[*t, EOS_ID] for t in targets])


def fit(model, src, tgt_in, tgt_out, steps: int, learning_rate: float = 0.01) -> float:
    optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=1.0)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            total, count = seq2seq.sequence_loss(model((src, tgt_in), training=True), tgt_out, 0.0)
            loss = total / count
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    for _ in range(steps):
        loss = step()
    return float(loss)


def strip(ids) -> list[list[int]]:
    """Decoded rows up to (not including) </s>."""
    out = []
    for row in np.asarray(ids).tolist():
        out.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    return out


# ------------------------------------------------------------------------------------------------ attention


@pytest.mark.parametrize("kind", ["luong_general", "luong_dot", "bahdanau"])
def test_attention_ignores_padding_and_sums_to_one(kind):
    rng = np.random.default_rng(0)
    layer = attention.make(kind, 8)
    memory = tf.constant(rng.normal(size=(3, 5, 8)).astype(np.float32))
    mask = tf.constant(np.arange(5)[None, :] < np.array([[5], [3], [1]]))
    keys = layer.precompute(memory)
    query = tf.constant(rng.normal(size=(3, 4, 8)).astype(np.float32))
    context, weights = layer(query, keys, memory, mask)
    assert context.shape == (3, 4, 8) and weights.shape == (3, 4, 5)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1), 1.0, rtol=1e-6)
    assert np.all(weights.numpy()[~np.broadcast_to(mask.numpy()[:, None, :], weights.shape)] == 0.0)
    # A single step (rank-2 query) is the same computation as one row of many steps.
    one_context, one_weights = layer(query[:, 2], keys, memory, mask)
    np.testing.assert_allclose(one_weights, weights[:, 2], atol=1e-6)
    np.testing.assert_allclose(one_context, context[:, 2], atol=1e-6)


def test_dot_attention_needs_equal_widths():
    with pytest.raises(ValueError, match="dot attention"):
        attention.make("luong_dot", 8).precompute(tf.zeros((1, 2, 6)))


# ---------------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"cell": "gru", "attention": "bahdanau", "tie_embeddings": False},
        {"encoder_layers": 2, "attention": "luong_dot", "input_feeding": False},
    ],
)
def test_logits_shape_and_padding_invariance(changes):
    """A sentence's logits do not depend on how much padding it or its batch-mates carry."""
    model = tiny_model(**changes)
    src = [[5, 6, 7, 8], [9, 10]]
    tgt_in, _ = teacher_forcing([[4, 5, 6], [7]])
    logits = model((pad(src), tgt_in))
    assert logits.shape == (2, 4, 40)
    alone = model((pad(src[1:]), tgt_in[1:, :2]))
    padded = model((pad(src, width=7), pad(tgt_in.tolist(), width=6)))
    np.testing.assert_allclose(alone[0], logits[1, :2], atol=1e-5)
    np.testing.assert_allclose(padded[:, :4], logits, atol=1e-5)


def test_decode_step_matches_teacher_forcing():
    """Training and decoding share one step function: feeding the gold prefix step by step gives the same logits."""
    model = tiny_model(encoder_layers=2)
    src = pad([[5, 6, 7], [8, 9, 10, 11]])
    tgt_in, _ = teacher_forcing([[4, 5, 6, 7], [8, 9]])
    logits = model((src, tgt_in))
    memory, state = model.encode(src)
    for t in range(tgt_in.shape[1]):
        step_logits, state, weights = model.decode_step(tgt_in[:, t], state, memory)
        np.testing.assert_allclose(step_logits, logits[:, t], atol=1e-5)
    assert np.all(weights.numpy()[0, 3:] == 0.0)


def test_training_mode_is_stochastic_and_inference_is_not():
    model = tiny_model(dropout=0.3, word_dropout=0.2)
    src, (tgt_in, _) = pad([[5, 6, 7, 8]] * 4), teacher_forcing([[4, 5, 6]] * 4)
    a, b = model((src, tgt_in), training=True), model((src, tgt_in), training=True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model((src, tgt_in)), model((src, tgt_in)))


def test_frozen_embeddings_and_cudnn_switch():
    model = tiny_model(freeze_embeddings=True)
    trainable = {v.path for v in model.trainable_variables}
    assert not any("embed" in p for p in trainable) and any("generator" in p for p in trainable)
    model.set_use_cudnn(False)
    assert all(not layer.forward_layer.use_cudnn for layer in model.encoder)


def test_weights_round_trip_into_a_fresh_model(tmp_path):
    model, fresh = tiny_model(seed=0), tiny_model(seed=1)
    src, (tgt_in, _) = pad([[5, 6, 7]]), teacher_forcing([[4, 5]])
    model.save_weights(tmp_path / "translator.weights.h5")
    fresh.load_weights(tmp_path / "translator.weights.h5")
    np.testing.assert_array_equal(fresh((src, tgt_in)), model((src, tgt_in)))


def test_sequence_loss_worked_example():
    logits = tf.math.log(tf.constant([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]]]))
    labels = tf.constant([[1, 0]])  # the second position is padding
    total, count = seq2seq.sequence_loss(logits, labels)
    assert float(count) == 1.0 and np.isclose(float(total), -np.log(0.25))
    # Smoothing 0.3 over 3 classes: target (0.1, 0.8, 0.1).
    total, _ = seq2seq.sequence_loss(logits, labels, 0.3)
    expected = -(0.1 * np.log(0.5) + 0.8 * np.log(0.25) + 0.1 * np.log(0.25))
    assert np.isclose(float(total), expected, rtol=1e-6)


def test_sequence_loss_gradient_is_autodiff_of_its_formula():
    """The hand-written gradient equals TensorFlow's of the same formula, padding and smoothing included."""
    rng = np.random.default_rng(3)
    logits = tf.constant(rng.normal(0, 3, (2, 5, 11)), tf.float32)
    labels = tf.constant(rng.integers(1, 11, (2, 5)) * (np.arange(5) < [[5], [3]]), tf.int32)  # row 2: 2 pads
    for smoothing in (0.0, 0.1):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(logits)
            total, _ = seq2seq.sequence_loss(logits, labels, smoothing)
            log_z = tf.reduce_logsumexp(logits, axis=-1)
            nll = log_z - tf.gather(logits, labels, batch_dims=2)
            formula = (1 - smoothing) * nll + smoothing * (log_z - tf.reduce_mean(logits, axis=-1))
            expected = tf.reduce_sum(formula * tf.cast(labels != 0, tf.float32))
        np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)
        got, want = tape.gradient(total, logits), tape.gradient(expected, logits)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
        assert not np.any(got.numpy()[1, 3:])  # padding positions get no gradient


def test_build_checks_matrix_against_vocabulary(tmp_path):
    cfg = tiny_config(tmp_path)
    vocab.save(vocab.vocab_path(cfg, "src"), ["<pad>", "<unk>", "a", "b"])
    vocab.save(vocab.vocab_path(cfg, "tgt"), ["<pad>", "<unk>", "<s>", "</s>", "x"])
    Path(cfg.paths.embeddings).mkdir(parents=True)
    np.save(Path(cfg.paths.embeddings) / "src.npy", np.zeros((4, 6), np.float32))
    np.save(Path(cfg.paths.embeddings) / "tgt.npy", np.zeros((4, 6), np.float32))
    with pytest.raises(InputError, match="5 lines of tgt.txt"):
        translate_train.build_translator(cfg)[0]
    np.save(Path(cfg.paths.embeddings) / "tgt.npy", np.zeros((5, 6), np.float32))
    model = translate_train.build_translator(cfg)[0]
    assert model.src_embed.output_dim == 6 and model.tgt_embed.input_dim == 5


# ------------------------------------------------------------------------------------------------ learning


def test_tiny_model_learns_to_reverse_50_sentences():
    rng = np.random.default_rng(1)
    sources = [rng.integers(4, 20, rng.integers(3, 9)).tolist() for _ in range(50)]
    targets = [s[::-1] for s in sources]
    model = tiny_model(src_vocab=20, tgt_vocab=20, cell="lstm", encoder_units=32, decoder_units=64)
    src, (tgt_in, tgt_out) = pad(sources), teacher_forcing(targets)
    start = time.perf_counter()
    loss = fit(model, src, tgt_in, tgt_out, steps=80)
    hyps = strip(decode.greedy(model, src, 1.0, 2).ids)
    right = sum(h[: len(t)] == t for h, t in zip(hyps, targets, strict=True))
    assert loss < 0.05 and right >= 49, (loss, right, time.perf_counter() - start)


@needs_data
def test_tiny_model_memorises_50_multi30k_pairs():
    """50 en-de pairs, tokenized by the pipeline's tokenizer, learnt to sacreBLEU > 90 within a minute."""
    import sacrebleu

    base = Path(MIRROR) / "multi30k"
    en, de = ([line.decode().strip() for line in gzip.open(base / f"train.{lang}.gz")][:50] for lang in ("en", "de"))
    cfg = Text()
    src_tok, tgt_tok = text.tokenize_batches(en, cfg), text.tokenize_batches(de, cfg, joiner=True)
    vocabs = [
        vocab.build(collections.Counter(t for s in toks for t in s), vocab.SPECIALS[name], 1)
        for toks, name in ((src_tok, "src"), (tgt_tok, "tgt"))
    ]
    src_index, tgt_index = ({t: i for i, t in enumerate(v)} for v in vocabs)
    src = pad([vocab.encode(s, src_index) for s in src_tok])
    tgt_in, tgt_out = teacher_forcing([vocab.encode(t, tgt_index) for t in tgt_tok])
    model = tiny_model(len(vocabs[0]), len(vocabs[1]), dim=64, encoder_units=64, decoder_units=128)
    fit(model, src, tgt_in, tgt_out, steps=60)
    hyps = [vocab.decode(ids, vocabs[1]) for ids in strip(decode.greedy(model, src).ids)]
    detok = [s.decode() for s in text.detokenize(tf.ragged.constant(hyps, dtype=tf.string)).numpy()]
    assert sacrebleu.corpus_bleu(detok, [de]).score > 90
