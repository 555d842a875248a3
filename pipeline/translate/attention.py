"""Attention over encoder states: Luong "general" / "dot" and Bahdanau (additive, "concat") scores.

The encoder side of every score is computed once per sentence by `precompute(memory)` (the keys), so a
decoder step only pays for its query:

    keys = attention.precompute(memory)                 # [B, S, K], once per sentence
    context, weights = attention(query, keys, memory, mask)   # per step: query [B, D] or [B, T, D]

Padding (mask False) gets exactly zero weight, and the weights sum to one over the real positions.
"""

import keras
from keras import ops

# Masked scores are pushed this far down before the softmax: exp(-1e9 - max) underflows to exactly 0.0 in
# float32, and unlike -inf it cannot produce NaN when a row is all padding.
_MASKED = -1e9


def _masked_softmax(scores, mask):
    """Softmax over the last axis (source positions) with padded positions excluded."""
    # In float32 even under mixed precision: -1e9 is -inf in float16, and the weights must sum to one.
    dtype = scores.dtype
    scores = ops.where(mask, ops.cast(scores, "float32"), _MASKED)
    return ops.cast(ops.softmax(scores, axis=-1), dtype)


class _Attention(keras.layers.Layer):
    """Shared plumbing: rank-2 queries are one step, rank-3 queries are many steps at once."""

    def precompute(self, memory):
        raise NotImplementedError

    def score(self, query, keys):
        """[B, T, D] queries, [B, S, K] keys -> [B, T, S] scores."""
        raise NotImplementedError

    def call(self, query, keys, values, mask):
        """-> context [B, (T,) V] and weights [B, (T,) S]; mask [B, S] is True at real source positions."""
        one_step = len(query.shape) == 2
        if one_step:
            query = query[:, None, :]
        weights = _masked_softmax(self.score(query, keys), mask[:, None, :])
        context = ops.matmul(weights, values)
        if one_step:
            return context[:, 0], weights[:, 0]
        return context, weights


class LuongAttention(_Attention):
    """Multiplicative attention (Luong et al. 2015): score(h_t, h_s) = h_t . W h_s ("general") or h_t . h_s ("dot").

    "general" projects the memory to the query width once per sentence (keys = memory W^T), which also lets a
    512-unit decoder attend over a 2x256 BiLSTM; "dot" needs equal widths.
    """

    def __init__(self, units: int, score: str = "general", **kwargs):
        super().__init__(**kwargs)
        if score not in ("general", "dot"):
            raise ValueError(f"unknown Luong score {score!r} (general or dot)")
        self.units, self.score_kind = units, score
        self.key_proj = keras.layers.Dense(units, use_bias=False, name="key_proj") if score == "general" else None

    def build(self, query_shape, keys_shape=None, values_shape=None, mask_shape=None):
        self.built = True

    def precompute(self, memory):
        if self.key_proj is None:
            if memory.shape[-1] != self.units:
                raise ValueError(f"dot attention needs memory width {memory.shape[-1]} == query width {self.units}")
            return memory
        return self.key_proj(memory)

    def score(self, query, keys):
        return ops.matmul(query, ops.transpose(keys, (0, 2, 1)))


class BahdanauAttention(_Attention):
    """Additive attention (Bahdanau et al. 2015): score(h_t, h_s) = v . tanh(W_k h_s + W_q h_t).

    W_k h_s is the precomputed key; per step only the query is projected, then broadcast over the source.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.key_proj = keras.layers.Dense(units, use_bias=True, name="key_proj")
        self.query_proj = keras.layers.Dense(units, use_bias=False, name="query_proj")
        self.v = keras.layers.Dense(1, use_bias=False, name="v")

    def build(self, query_shape, keys_shape=None, values_shape=None, mask_shape=None):
        self.query_proj.build(query_shape)
        self.v.build((None, self.units))
        self.built = True

    def precompute(self, memory):
        return self.key_proj(memory)

    def score(self, query, keys):
        hidden = ops.tanh(keys[:, None, :, :] + self.query_proj(query)[:, :, None, :])  # [B, T, S, U]
        return self.v(hidden)[..., 0]


def make(kind: str, units: int, name: str = "attention") -> _Attention:
    """The attention named by config `translate.attention`; `units` is the query (decoder) width."""
    if kind == "luong_general":
        return LuongAttention(units, "general", name=name)
    if kind == "luong_dot":
        return LuongAttention(units, "dot", name=name)
    if kind == "bahdanau":
        return BahdanauAttention(units, name=name)
    raise ValueError(f"unknown attention {kind!r} (luong_general, luong_dot or bahdanau)")
