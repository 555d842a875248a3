"""The character-level language model: character embedding -> stacked LSTM (or GRU) -> logits over characters.

The recurrent state is explicit: `call` takes the state a window starts from and returns the one it ends in, so
training carries it from one window to the next (truncated backpropagation through time), evaluation carries it
across the whole valid text, and sampling steps one character at a time through the same weights (`step`).
Recurrent dropout stays 0 and the activations default, so a GPU runs the layers on cuDNN.
"""

import keras
import tensorflow as tf

from pipeline.lm.config import Lm


class CharLM(keras.Model):
    def __init__(self, n_chars: int, cell: str, layers: int, units: int, embed_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.n_chars, self.cell, self.units = n_chars, cell, units
        self.states_per_layer = 2 if cell == "lstm" else 1  # LSTM: h and c; GRU: h
        rnn = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
        self.embed = keras.layers.Embedding(n_chars, embed_dim, name="char_embed")
        self.rnns = [rnn(units, return_sequences=True, return_state=True, name=f"{cell}_{i}") for i in range(layers)]
        self.drop = keras.layers.Dropout(dropout, name="dropout")
        self.logits = keras.layers.Dense(n_chars, name="char_logits")

    def zero_states(self, batch) -> list[tf.Tensor]:
        """The state of every layer at the start of a text: [h, c] per LSTM layer (h per GRU layer), each [B, units]."""
        return [tf.zeros([batch, self.units]) for _ in range(len(self.rnns) * self.states_per_layer)]

    def _per_layer(self, states):
        k = self.states_per_layer
        return [list(states[i * k : (i + 1) * k]) for i in range(len(self.rnns))]

    def call(self, ids, states=None, training=False):
        """ids [B, T] int32, states (zero_states; None = zero) -> (logits [B, T, n_chars], the states after)."""
        states = self.zero_states(tf.shape(ids)[0]) if states is None else states
        h, out = self.drop(self.embed(ids), training=training), []
        for rnn, state in zip(self.rnns, self._per_layer(states), strict=True):
            h, *new = rnn(h, initial_state=state, training=training)
            h = self.drop(h, training=training)
            out += new
        return self.logits(h), out

    def step(self, ids, states):
        """One character per row: ids [B] -> (logits [B, n_chars], next states). The layers' cells, as in inference
        no cuDNN kernel is involved (the exported graph must hold none)."""
        h, out = self.embed(ids), []
        for rnn, state in zip(self.rnns, self._per_layer(states), strict=True):
            h, new = rnn.cell(h, state if self.cell == "lstm" else state[0])
            out += list(new) if self.cell == "lstm" else [new[0] if isinstance(new, (list, tuple)) else new]
        return self.logits(h), out


def build(hp: Lm, n_chars: int) -> CharLM:
    model = CharLM(n_chars, hp.cell, hp.layers, hp.units, hp.embed_dim, hp.dropout, name="char_lm")
    model(tf.zeros([1, 1], tf.int32), model.zero_states(1))  # create the weights
    return model


def settings(hp: Lm) -> dict:
    """What rebuilds the model (beside its weights): lm.json."""
    return {k: getattr(hp, k) for k in ("cell", "layers", "units", "embed_dim", "dropout")}
