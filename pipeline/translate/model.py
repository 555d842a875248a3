"""The translator: a bidirectional LSTM encoder and an attentional LSTM decoder with input feeding (Luong et al. 2015).

    src ids -> src_embed -> encoder_0..n (BiLSTM, residual from layer 2 on) -> memory [B, S, 2E]
                                                     \\-> bridge -> decoder state
    for t:  x_t = [tgt_embed(y_{t-1}); h~_{t-1}]          input feeding
            h_t = decoder_cell(x_t)
            c_t = attention(h_t, memory)
            h~_t = tanh(combine([c_t; h_t]))              attentional hidden, fed to step t+1
    logits = generator(h~)                                 optionally tied to tgt_embed

Teacher forcing runs the step in one `tf.while_loop` over time (input feeding makes it sequential) and applies
the 8k-way output projection once, outside the loop, to all steps together. Decoding (decode.py)
calls `encode` once and then `decode_step`, the very same step with cached attention keys. This module is
TensorFlow-backend Keras: the loop and the decoders are TF ops so they trace into a SavedModel.
"""

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pipeline.core.vocab import PAD_ID, UNK_ID
from pipeline.translate import attention as attention_lib
from pipeline.translate.config import Translate


class Memory(NamedTuple):
    """What the decoder attends to, computed once per sentence (tiled per beam by the decoder)."""

    values: tf.Tensor  # [B, S, 2 * encoder_units] encoder states
    keys: tf.Tensor  # [B, S, K] their attention projection
    mask: tf.Tensor  # [B, S] bool, True at real source tokens


class TiedOutput(keras.layers.Layer):
    """Logits against the target embedding matrix (Press & Wolf 2017): fewer parameters, faster convergence."""

    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(self.embedding.input_dim,), initializer="zeros", name="bias")

    def call(self, x):
        # Rank 2 and transpose_b: no copy of the [V, E] matrix per call (per step when decoding).
        flat = tf.reshape(x, (-1, x.shape[-1]))
        logits = tf.matmul(flat, self.embedding.embeddings, transpose_b=True) + self.bias
        # The vocabulary width stays static, as the beam search's two-stage top-k needs.
        return tf.reshape(logits, tf.concat([tf.shape(x)[:-1], [self.embedding.input_dim]], axis=0))


def _embedding(matrix: np.ndarray, trainable: bool, name: str) -> keras.layers.Embedding:
    rows, dim = matrix.shape
    return keras.layers.Embedding(rows, dim, weights=[matrix.astype(np.float32)], trainable=trainable, name=name)


class Seq2Seq(keras.Model):
    """Attentional encoder-decoder; `model((src_ids, tgt_in_ids), training=True)` -> logits [B, T, V].

    Embedding widths and vocabulary sizes come from the matrices (rows aligned with src.txt / tgt.txt).
    Ids are right-padded with PAD_ID; every source row needs at least one real token.
    """

    def __init__(self, src_matrix: np.ndarray, tgt_matrix: np.ndarray, cfg: Translate, use_cudnn="auto", **kwargs):
        super().__init__(name="seq2seq", **kwargs)
        self.cfg = cfg
        rnn = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cfg.cell]
        cell = {"lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}[cfg.cell]
        units, dec_units = cfg.encoder_units, cfg.decoder_units
        self.src_embed = _embedding(src_matrix, not cfg.freeze_embeddings, "src_embed")
        self.tgt_embed = _embedding(tgt_matrix, not cfg.freeze_embeddings, "tgt_embed")
        self.dropout = keras.layers.Dropout(cfg.dropout, name="dropout")
        # Default activations, no recurrent dropout, right-padded masks: the encoder stays cuDNN-eligible on GPU.
        self.encoder = [
            keras.layers.Bidirectional(
                rnn(units, return_sequences=True, return_state=True, use_cudnn=use_cudnn), name=f"encoder_{i}"
            )
            for i in range(cfg.encoder_layers)
        ]
        self.bridge = [
            keras.layers.Dense(dec_units, activation="tanh" if i == 0 else None, name=f"bridge_{i}")
            for i in range(2 if cfg.cell == "lstm" else 1)
        ]
        self.attention = attention_lib.make(cfg.attention, dec_units)
        self.decoder_cell = cell(dec_units, name="decoder_cell")
        self.combine = keras.layers.Dense(dec_units, activation="tanh", use_bias=False, name="combine")
        tgt_dim = tgt_matrix.shape[1]
        # Tying needs h~ in the embedding space; the projection also shrinks the 8k-way softmax matmul.
        self.out_proj = (
            keras.layers.Dense(tgt_dim, use_bias=False, name="out_proj")
            if cfg.tie_embeddings and tgt_dim != dec_units
            else None
        )
        self.generator = (
            TiedOutput(self.tgt_embed, name="generator")
            if cfg.tie_embeddings
            else keras.layers.Dense(tgt_matrix.shape[0], name="generator")
        )
        self.noise = keras.random.SeedGenerator(cfg.seed)
        self.decoder_cell.build((None, tgt_dim + dec_units if cfg.input_feeding else tgt_dim))
        self((np.full((1, 2), UNK_ID, np.int32), np.full((1, 2), UNK_ID, np.int32)))  # build every weight now

    # ------------------------------------------------------------------------------------------ encoder

    def _word_dropout(self, ids, training):
        """Replace random real tokens by <unk> (Sennrich & Zhang 2019): teaches the model to cope with OOVs."""
        if not training or self.cfg.word_dropout <= 0:
            return ids
        drop = keras.random.uniform(ops.shape(ids), seed=self.noise) < self.cfg.word_dropout
        return ops.where(drop & (ids != PAD_ID), ops.cast(UNK_ID, ids.dtype), ids)

    def encode(self, src_ids, training=False):
        """[B, S] ids -> (Memory, initial decoder state)."""
        src_ids = ops.convert_to_tensor(src_ids)
        mask = src_ids != PAD_ID
        x = self.dropout(self.src_embed(self._word_dropout(src_ids, training)), training=training)
        for i, layer in enumerate(self.encoder):
            out, *states = layer(x, mask=mask, training=training)
            # Residual connections between stacked layers (GNMT) keep deep encoders trainable.
            x = self.dropout(out, training=training) + (x if i > 0 else 0)
        half = len(states) // 2  # forward states, then backward states: (h, c) each for LSTM, (h,) for GRU
        finals = [ops.concatenate([f, b], axis=-1) for f, b in zip(states[:half], states[half:], strict=True)]
        cell_state = [bridge(s) for bridge, s in zip(self.bridge, finals, strict=True)]
        feed = ops.zeros_like(cell_state[0])  # h~_0: nothing attended yet
        return Memory(x, self.attention.precompute(x), mask), (cell_state, feed)

    # ------------------------------------------------------------------------------------------ decoder

    def _step(self, emb, state, memory: Memory, training=False, drop=None):
        """One decoder step: emb [B, E], state -> (h~ [B, D], new state, attention weights [B, S])."""
        cell_state, feed = state
        x = ops.concatenate([emb, feed], axis=-1) if self.cfg.input_feeding else emb
        h, cell_state = self.decoder_cell(x, cell_state, training=training)
        context, weights = self.attention(h, memory.keys, memory.values, memory.mask)
        out = self.combine(ops.concatenate([context, h], axis=-1))
        if drop is not None:  # the dropped h~ is both the output and the next step's input (OpenNMT)
            out = out * drop
        return out, (cell_state, out), weights

    def decode_step(self, prev_ids, state, memory: Memory):
        """Inference step: [B] previous ids -> (logits [B, V], new state, attention weights [B, S])."""
        out, state, weights = self._step(self.tgt_embed(prev_ids), state, memory)
        return self.generate(out), state, weights

    def features(self, inputs, training=False):
        """Teacher forcing: (src [B, S], tgt_in [B, T]) ids -> attentional hidden states h~ [B, T, D]."""
        src_ids, tgt_in = inputs
        memory, state = self.encode(src_ids, training)
        emb = self.dropout(self.tgt_embed(self._word_dropout(tgt_in, training)), training=training)
        emb = tf.transpose(emb, (1, 0, 2))  # time-major for the loop
        steps, batch = tf.shape(emb)[0], tf.shape(emb)[1]
        # One dropout mask for all steps, drawn outside the loop: cheaper, and no RNG state inside the loop.
        drop = self.dropout(tf.ones((steps, batch, self.cfg.decoder_units), emb.dtype), training=training)
        outputs = tf.TensorArray(emb.dtype, size=steps, element_shape=(None, self.cfg.decoder_units))

        def body(t, state, outputs):
            out, state, _ = self._step(emb[t], state, memory, training, drop[t] if training else None)
            return t + 1, state, outputs.write(t, out)

        loop_vars = (tf.constant(0), state, outputs)
        _, _, outputs = tf.while_loop(lambda t, *_: t < steps, body, loop_vars, maximum_iterations=steps)
        return tf.transpose(outputs.stack(), (1, 0, 2))

    def generate(self, features):
        """h~ [..., D] -> logits [..., V]."""
        if self.out_proj is not None:
            features = self.out_proj(features)
        return self.generator(features)

    def call(self, inputs, training=False):
        return self.generate(self.features(inputs, training))

    def target_logits(self, inputs, labels, training=False):
        """Logits [N, V] and labels [N] at the N real (non-PAD) label positions only, for the training loss.

        Skipping padding in the 8k-way output projection saves ~5% of a bucketed training step.
        """
        keep = labels != PAD_ID
        features = tf.boolean_mask(self.features(inputs, training), keep)
        return self.generate(features), tf.boolean_mask(labels, keep)

    def set_use_cudnn(self, flag) -> None:
        """cuDNN kernels do not load in TF Serving / on CPU-only hosts; export switches them off (False)."""
        for layer in self.encoder:
            layer.forward_layer.use_cudnn = flag
            layer.backward_layer.use_cudnn = flag


def sequence_loss(logits, labels, smoothing: float = 0.0):
    """Label-smoothed cross-entropy summed over real tokens -> (loss sum, token count); labels == PAD_ID are masked.

    The smoothed target puts 1 - smoothing on the label and spreads `smoothing` uniformly over the whole
    vocabulary (as fairseq); dividing the sum by the count gives the per-token loss.
    """
    logits = tf.cast(logits, tf.float32)
    mask = tf.cast(labels != PAD_ID, tf.float32)
    flat = tf.reshape(logits, tf.stack([-1, tf.shape(logits)[-1]]))
    loss = smoothed_cross_entropy(flat, tf.reshape(tf.cast(labels, tf.int32), [-1]), smoothing)
    return tf.reduce_sum(loss * tf.reshape(mask, [-1])), tf.reduce_sum(mask)


def smoothed_cross_entropy(logits, labels, smoothing: float):
    """[N, V] float32 logits, [N] labels -> [N] label-smoothed cross-entropy, with its gradient written out:
    softmax - (1 - smoothing) one_hot - smoothing / V. Autodiff of the same formula held about eight [N, V] tensors
    at once (logsumexp's, the mean's and the gather's gradients); this holds about three, which bounds a step's
    memory on long batches with a large output vocabulary, at the same speed."""
    size = tf.cast(tf.shape(logits)[-1], tf.float32)

    @tf.custom_gradient
    def rows(logits):
        log_z = tf.reduce_logsumexp(logits, axis=-1)
        gold = tf.gather(logits, labels, batch_dims=1)
        loss = log_z - (1.0 - smoothing) * gold - smoothing * tf.reduce_mean(logits, axis=-1)

        def grad(upstream):
            at_label = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)
            d = tf.exp(logits - log_z[:, None]) - smoothing / size
            d = tf.tensor_scatter_nd_sub(d, at_label, tf.fill(tf.shape(labels), 1.0 - smoothing))
            return d * upstream[:, None]

        return loss, grad

    return rows(logits)


def build(hp: Translate, src_matrix: np.ndarray, tgt_matrix: np.ndarray, use_cudnn="auto") -> Seq2Seq:
    """The one builder of the translator (training, prediction, export, bench, tests), every weight built.

    The matrices' rows align with src.txt / tgt.txt: pretrained values for training, any array of the
    trained shapes before loading weights.
    """
    return Seq2Seq(src_matrix, tgt_matrix, hp, use_cudnn=use_cudnn)
