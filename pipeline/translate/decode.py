"""Greedy and batched beam search, written as TF ops (`tf.while_loop`) so they trace into a SavedModel.

Both run the encoder once and then one `model.decode_step` per output position, carrying the recurrent state
and reusing the attention keys: nothing recomputes the prefix. Any model with this interface works:

    memory, state = model.encode(src_ids)                  # nests of [B, ...] tensors
    logits, state, attention = model.decode_step(prev_ids, state, memory)   # [B, V], state, [B, S]

Output length. Sentence i may emit at most max_len_i = floor(a * src_len_i + b) tokens, </s> included; at that
position </s> is forced, so every hypothesis ends (as fairseq's max_len_a / max_len_b).

Length penalty (GNMT, Wu et al. 2016). Finished hypotheses are ranked by
    score = log P(y | x) / lp(|y|),   lp(n) = ((5 + n) / 6) ** alpha,   |y| counting </s>.
alpha = 0 ranks by log P, which favours short output; alpha = 1 is close to per-token normalisation
(lp(n) ~ n for long n, but gentler on very short output); alpha must be >= 0 for early stopping to be exact.
Live hypotheses are ranked by log P, and a sentence stops as soon as no live hypothesis can still beat its
worst finished one; the whole batch stops when every sentence has.
"""

from typing import NamedTuple

import tensorflow as tf

from pipeline.core.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from pipeline.translate.config import Translate

NEG_INF = float("-inf")


class Hypotheses(NamedTuple):
    """Decoder output; beam search adds a beam axis after the batch axis, best hypothesis first."""

    ids: tf.Tensor  # [B, (K,) T] int32 tokens, </s> included, then PAD_ID
    scores: tf.Tensor  # [B, (K)] length-penalised log-probabilities (what the search ranked by)
    log_probs: tf.Tensor  # [B, (K)] log P(ids | source)
    attention: tf.Tensor  # [B, (K,) T] int32: the most attended source position at each output step


def max_lengths(src_ids, a: float, b: int):
    """[B, S] source ids -> [B] output length limits floor(a * src_len + b), at least 1."""
    src_len = tf.reduce_sum(tf.cast(src_ids != PAD_ID, tf.float32), axis=-1)
    return tf.maximum(tf.cast(tf.floor(a * src_len + b), tf.int32), 1)


def length_penalty(length, alpha: float):
    return ((5.0 + tf.cast(length, tf.float32)) / 6.0) ** alpha


def _log_probs(logits, step, max_len):
    """log-softmax of [N, V] logits; rows at their last allowed position may only emit </s>."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    at_limit = step + 1 >= max_len

    def only_eos():
        return tf.where(at_limit[:, None] & (tf.range(tf.shape(logp)[-1]) != EOS_ID)[None, :], NEG_INF, logp)

    # A full [N, V] pass, needed only at the steps where some row reaches its limit.
    return tf.cond(tf.reduce_any(at_limit), only_eos, lambda: logp)


def _argmax(attention):
    return tf.argmax(attention, axis=-1, output_type=tf.int32)


def greedy(model, src_ids, max_length_a: float = 1.5, max_length_b: int = 10) -> Hypotheses:
    """The most probable next token at every step; [B, S] ids -> Hypotheses with ids [B, T], scores = log P."""
    src_ids = tf.cast(src_ids, tf.int32)
    batch = tf.shape(src_ids)[0]
    max_len = max_lengths(src_ids, max_length_a, max_length_b)
    memory, state = model.encode(src_ids, training=False)

    def body(t, prev, state, done, log_prob, ids, attn):
        logits, state, weights = model.decode_step(prev, state, memory)
        logp = _log_probs(logits, t, max_len)
        tok = tf.where(done, PAD_ID, tf.argmax(logp, axis=-1, output_type=tf.int32))
        log_prob += tf.where(done, 0.0, tf.gather(logp, tok, batch_dims=1))
        ids, attn = ids.write(t, tok), attn.write(t, tf.where(done, 0, _argmax(weights)))
        return t + 1, tok, state, done | (tok == EOS_ID), log_prob, ids, attn

    def cond(t, prev, state, done, *_):
        return ~tf.reduce_all(done)

    loop = (
        tf.constant(0),
        tf.fill([batch], BOS_ID),
        state,
        tf.zeros([batch], tf.bool),
        tf.zeros([batch]),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
    )
    # Every row ends by its max_len (</s> is forced there), so the loop is bounded by the longest limit.
    *_, log_prob, ids, attn = tf.while_loop(cond, body, loop, maximum_iterations=tf.reduce_max(max_len))
    ids, attn = tf.transpose(ids.stack()), tf.transpose(attn.stack())
    return Hypotheses(ids, log_prob, log_prob, attn)


def _gather_beams(nest, beams, batch, width):
    """Reorder [B * K, ...] tensors so row (b, k) takes row (b, beams[b, k])."""

    def gather(x):
        x = tf.reshape(x, tf.concat([[batch, width], tf.shape(x)[1:]], axis=0))
        x = tf.gather(x, beams, batch_dims=1)
        return tf.reshape(x, tf.concat([[batch * width], tf.shape(x)[2:]], axis=0))

    return tf.nest.map_structure(gather, nest)


CHUNK = 128  # top-k over chunk maxima first: only rows this many times wider than k take the two-stage path


def top_k_rows(x, k: int):
    """tf.math.top_k(x, k) over the last axis of [N, V], ties to the lower index as top_k breaks them.

    One top-k over 8k-wide rows is a large part of a beam step on CPU. The k best entries lie in the k
    chunks (of CHUNK columns) with the best maxima, so a row's maxima are ranked first and only those k
    chunks are searched: rank the elements by (value, then lower index); a chunk holding one of the k best
    has a maximum that is beaten by fewer than k other chunks' maxima, which are all better elements.
    The chunks are searched in column order, so equal values still come out lower index first.
    """
    width = x.shape[-1]
    if width is None or width < 4 * k * CHUNK:
        return tf.math.top_k(x, k)
    chunks = -(-width // CHUNK)
    padded = tf.pad(x, [[0, 0], [0, chunks * CHUNK - width]], constant_values=NEG_INF)  # after every real column
    blocks = tf.reshape(padded, [-1, chunks, CHUNK])
    _, best = tf.math.top_k(tf.reduce_max(blocks, axis=-1), k)
    best = tf.sort(best, axis=-1)
    values, inner = tf.math.top_k(tf.reshape(tf.gather(blocks, best, batch_dims=1), [-1, k * CHUNK]), k)
    return values, tf.gather(best, inner // CHUNK, batch_dims=1) * CHUNK + inner % CHUNK


def _candidates(alive_logp, logp, n):
    """The n best one-token extensions of a sentence's K live hypotheses, as one top-k over its K * V
    candidates would give them (same values, same order on ties): [B, K] + [B * K, V] -> [B, n] values, origin
    beam, token. Each beam's n best first (summed with its log P, so ties rank as in the flat top-k), then the
    best n of those K * n; equal values keep beam order, then token order, i.e. the flat index order."""
    batch, k = tf.shape(alive_logp)[0], tf.shape(alive_logp)[1]
    cand = tf.reshape(alive_logp, [-1, 1]) + logp
    per_beam, tokens = top_k_rows(cand, n)
    values, pick = tf.math.top_k(tf.reshape(per_beam, [batch, k * n]), n)
    return values, pick // n, tf.gather(tf.reshape(tokens, [batch, k * n]), pick, batch_dims=1)


class _Live(NamedTuple):
    """The sentences still searching, row r being sentence `rows[r]`; finished ones leave the batch (as in
    fairseq), which changes no result: a sentence stops once no live hypothesis can beat its worst finished
    one, and from then on its finished list could not change."""

    rows: tf.Tensor  # [L] sentence indices
    prev: tf.Tensor  # [L * K] last tokens
    state: object  # decoder state, [L * K, ...] tensors
    memory: object  # attention memory, [L * K, ...] tensors
    max_len: tf.Tensor  # [L * K] length limits
    best_possible: tf.Tensor  # [L] largest length-penalty divisor a live hypothesis can reach
    alive_seq: tf.Tensor  # [L, K, T]
    alive_attn: tf.Tensor  # [L, K, T]
    alive_logp: tf.Tensor  # [L, K]
    fin_seq: tf.Tensor  # [L, K, T]
    fin_attn: tf.Tensor  # [L, K, T]
    fin_score: tf.Tensor  # [L, K]
    fin_logp: tf.Tensor  # [L, K]


def _keep(live: _Live, keep, k: int) -> _Live:
    """The live sentences where keep [L] is True."""
    rows = tf.where(keep)[:, 0]
    beam_rows = tf.reshape(rows[:, None] * k + tf.range(k, dtype=rows.dtype), [-1])
    by_beam = lambda x: tf.gather(x, beam_rows)  # noqa: E731
    by_sentence = lambda x: tf.gather(x, rows)  # noqa: E731
    nested = {"prev", "state", "memory", "max_len"}
    return _Live(
        **{f: tf.nest.map_structure(by_beam if f in nested else by_sentence, getattr(live, f)) for f in _Live._fields}
    )


def _loose(x):
    """The shape of a loop variable whose first axis shrinks."""
    return tf.TensorShape([None]).concatenate(x.shape[1:])


def _beam_step(model, t, live: _Live, alpha: float, k: int, positions) -> _Live:
    """One output position for every live sentence (the search itself, unchanged by the batch's shrinking)."""
    batch = tf.shape(live.rows)[0]
    logits, state, weights = model.decode_step(live.prev, live.state, live.memory)
    logp = _log_probs(logits, t, live.max_len)
    # Extend every live hypothesis by every token; keep 2K so K survive even if K of them end here.
    top_logp, origin, tok = _candidates(live.alive_logp, logp, 2 * k)
    now = positions == t
    seq = tf.where(now, tok[:, :, None], tf.gather(live.alive_seq, origin, batch_dims=1))
    step_attn = tf.gather(tf.reshape(_argmax(weights), [batch, k]), origin, batch_dims=1)
    attn = tf.where(now, step_attn[:, :, None], tf.gather(live.alive_attn, origin, batch_dims=1))
    ended = tok == EOS_ID

    alive_logp, keep = tf.math.top_k(tf.where(ended, NEG_INF, top_logp), k)
    alive_seq, alive_attn = tf.gather(seq, keep, batch_dims=1), tf.gather(attn, keep, batch_dims=1)
    state = _gather_beams(state, tf.gather(origin, keep, batch_dims=1), batch, k)
    prev = tf.reshape(tf.gather(tok, keep, batch_dims=1), [-1])

    score = tf.where(ended, top_logp / length_penalty(t + 1, alpha), NEG_INF)
    fin_score, pick = tf.math.top_k(tf.concat([live.fin_score, score], axis=1), k)
    fin_seq = tf.gather(tf.concat([live.fin_seq, seq], axis=1), pick, batch_dims=1)
    fin_attn = tf.gather(tf.concat([live.fin_attn, attn], axis=1), pick, batch_dims=1)
    fin_logp = tf.gather(tf.concat([live.fin_logp, top_logp], axis=1), pick, batch_dims=1)
    return live._replace(
        prev=prev, state=state, alive_seq=alive_seq, alive_attn=alive_attn, alive_logp=alive_logp,
        fin_seq=fin_seq, fin_attn=fin_attn, fin_score=fin_score, fin_logp=fin_logp,
    )  # fmt: skip


def _store(out, live: _Live, which):
    """Write the finished lists of the live sentences where which [L] is True into the per-sentence output."""
    rows = tf.boolean_mask(live.rows, which)[:, None]
    parts = (live.fin_seq, live.fin_attn, live.fin_score, live.fin_logp)
    pairs = zip(out, parts, strict=True)
    return tuple(tf.tensor_scatter_nd_update(o, rows, tf.boolean_mask(x, which)) for o, x in pairs)


def initial_live(model, src_ids, k: int, alpha: float, max_length_a: float, max_length_b: int) -> _Live:
    """Every sentence live with one hypothesis, <s>: the source encoded once and repeated for the K beams."""
    src_ids = tf.cast(src_ids, tf.int32)
    batch = tf.shape(src_ids)[0]
    max_len = max_lengths(src_ids, max_length_a, max_length_b)
    steps = tf.maximum(tf.reduce_max(max_len), 1)  # an empty batch must still give valid buffer shapes
    memory, state = model.encode(src_ids, training=False)
    memory, state = tf.nest.map_structure(lambda x: tf.repeat(x, k, axis=0), (memory, state))
    empty = tf.zeros([batch, k, steps], tf.int32)
    no_scores = tf.fill([batch, k], NEG_INF)
    first = tf.concat([tf.zeros([batch, 1]), no_scores[:, 1:]], axis=1)  # one live beam, not K copies of it
    bos = tf.fill([batch * k], BOS_ID)
    return _Live(
        tf.range(batch), bos, state, memory, tf.repeat(max_len, k), length_penalty(max_len, alpha),
        empty, empty, first, empty, empty, no_scores, no_scores,
    )  # fmt: skip


def beam_search(
    model, src_ids, beam_width: int = 5, alpha: float = 0.6, max_length_a: float = 1.5, max_length_b: int = 10
) -> Hypotheses:
    """Batched beam search; [B, S] ids -> Hypotheses with ids [B, K, T], best first (see the module doc)."""
    if alpha < 0:
        raise ValueError(f"length penalty alpha must be >= 0, got {alpha}")
    k = beam_width
    live = initial_live(model, src_ids, k, alpha, max_length_a, max_length_b)
    steps = tf.shape(live.alive_seq)[-1]
    positions = tf.range(steps)
    out = (live.fin_seq, live.fin_attn, live.fin_score, live.fin_logp)  # per sentence, as the search ends

    def body(t, live, out):
        live = _beam_step(model, t, live, alpha, k, positions)
        # log P only falls as a hypothesis grows, so alive_logp / lp(max_len) bounds any live one's final score.
        done = live.fin_score[:, -1] >= live.alive_logp[:, 0] / live.best_possible
        out = _store(out, live, done)
        live = tf.cond(tf.reduce_any(done), lambda: _keep(live, ~done, k), lambda: live)
        return t + 1, live, out

    def cond(t, live, out):
        return tf.size(live.rows) > 0

    shapes = tf.nest.map_structure(lambda x: x.shape, out)
    invariants = (tf.TensorShape([]), tf.nest.map_structure(_loose, live), shapes)
    t, live, out = tf.while_loop(
        cond, body, (tf.constant(0), live, out), shape_invariants=invariants, maximum_iterations=steps
    )
    fin_seq, fin_attn, fin_score, fin_logp = _store(out, live, tf.ones_like(live.rows, tf.bool))  # hit the limit
    return Hypotheses(fin_seq[:, :, :t], fin_score, fin_logp, fin_attn[:, :, :t])


def search(model, src_ids, cfg: Translate) -> Hypotheses:
    """The configured search (greedy when beam_width is 1), reduced to the best hypothesis: ids [B, T]."""
    if cfg.beam_width == 1:
        return greedy(model, src_ids, cfg.max_length_a, cfg.max_length_b)
    hyps = beam_search(model, src_ids, cfg.beam_width, cfg.length_penalty, cfg.max_length_a, cfg.max_length_b)
    return Hypotheses(*(x[:, 0] for x in hyps))


def replace_unknowns(tokens, ids, attention, src_tokens):
    """Replace each <unk> in [B, T] output tokens by the source token it attended most (Luong et al. 2015b).

    tokens: [B, T] strings of `ids`; attention: [B, T] source positions; src_tokens: [B, S] padded strings.
    """
    return tf.where(ids == UNK_ID, tf.gather(src_tokens, attention, batch_dims=1), tokens)
