"""The beam search of commit 381510e (before finished sentences left the batch and the top-k went two-stage),
kept verbatim as the reference the faster search must match token for token and score for score. The helpers
the change left as they were (_argmax, _gather_beams, length_penalty, max_lengths) are imported, not copied."""

import tensorflow as tf

from pipeline.core.vocab import BOS_ID, EOS_ID
from pipeline.translate.decode import NEG_INF, Hypotheses, _argmax, _gather_beams, length_penalty, max_lengths


def _log_probs(logits, step, max_len):
    """log-softmax of [N, V] logits; rows at their last allowed position may only emit </s>."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    only_eos = tf.one_hot(EOS_ID, tf.shape(logp)[-1], on_value=0.0, off_value=NEG_INF)
    return tf.where((step + 1 >= max_len)[:, None], logp + only_eos, logp)


def reference_beam_search(
    model, src_ids, beam_width: int = 5, alpha: float = 0.6, max_length_a: float = 1.5, max_length_b: int = 10
) -> Hypotheses:
    """Batched beam search; [B, S] ids -> Hypotheses with ids [B, K, T], best first (see the module doc)."""
    if alpha < 0:
        raise ValueError(f"length penalty alpha must be >= 0, got {alpha}")
    k = beam_width
    src_ids = tf.cast(src_ids, tf.int32)
    batch = tf.shape(src_ids)[0]
    max_len = max_lengths(src_ids, max_length_a, max_length_b)
    steps = tf.maximum(tf.reduce_max(max_len), 1)  # an empty batch must still give valid buffer shapes
    memory, state = model.encode(src_ids, training=False)
    memory, state = tf.nest.map_structure(lambda x: tf.repeat(x, k, axis=0), (memory, state))
    beam_max_len = tf.repeat(max_len, k)
    best_possible = length_penalty(max_len, alpha)  # largest penalty divisor a live hypothesis can reach
    positions = tf.range(steps)

    def body(t, prev, state, alive_seq, alive_attn, alive_logp, fin_seq, fin_attn, fin_score, fin_logp):
        logits, state, weights = model.decode_step(prev, state, memory)
        logp = _log_probs(logits, t, beam_max_len)
        vocab = tf.shape(logp)[-1]
        # Extend every live hypothesis by every token; keep 2K so K survive even if K of them end here.
        cand = tf.reshape(alive_logp[:, :, None] + tf.reshape(logp, [batch, k, vocab]), [batch, k * vocab])
        top_logp, top = tf.math.top_k(cand, 2 * k)
        origin, tok = top // vocab, top % vocab
        now = positions == t
        seq = tf.where(now, tok[:, :, None], tf.gather(alive_seq, origin, batch_dims=1))
        step_attn = tf.gather(tf.reshape(_argmax(weights), [batch, k]), origin, batch_dims=1)
        attn = tf.where(now, step_attn[:, :, None], tf.gather(alive_attn, origin, batch_dims=1))
        ended = tok == EOS_ID

        alive_logp, keep = tf.math.top_k(tf.where(ended, NEG_INF, top_logp), k)
        alive_seq, alive_attn = tf.gather(seq, keep, batch_dims=1), tf.gather(attn, keep, batch_dims=1)
        state = _gather_beams(state, tf.gather(origin, keep, batch_dims=1), batch, k)
        prev = tf.reshape(tf.gather(tok, keep, batch_dims=1), [-1])

        score = tf.where(ended, top_logp / length_penalty(t + 1, alpha), NEG_INF)
        fin_score, pick = tf.math.top_k(tf.concat([fin_score, score], axis=1), k)
        fin_seq = tf.gather(tf.concat([fin_seq, seq], axis=1), pick, batch_dims=1)
        fin_attn = tf.gather(tf.concat([fin_attn, attn], axis=1), pick, batch_dims=1)
        fin_logp = tf.gather(tf.concat([fin_logp, top_logp], axis=1), pick, batch_dims=1)
        return t + 1, prev, state, alive_seq, alive_attn, alive_logp, fin_seq, fin_attn, fin_score, fin_logp

    def cond(t, prev, state, alive_seq, alive_attn, alive_logp, fin_seq, fin_attn, fin_score, fin_logp):
        # log P only falls as a hypothesis grows, so alive_logp / lp(max_len) bounds any live one's final score.
        done = fin_score[:, -1] >= alive_logp[:, 0] / best_possible
        return ~tf.reduce_all(done)

    empty = tf.zeros([batch, k, steps], tf.int32)
    no_scores = tf.fill([batch, k], NEG_INF)
    first = tf.concat([tf.zeros([batch, 1]), no_scores[:, 1:]], axis=1)  # one live beam, not K copies of it
    bos = tf.fill([batch * k], BOS_ID)
    loop = (tf.constant(0), bos, state, empty, empty, first, empty, empty, no_scores, no_scores)
    t, *_, fin_seq, fin_attn, fin_score, fin_logp = tf.while_loop(cond, body, loop, maximum_iterations=steps)
    return Hypotheses(fin_seq[:, :, :t], fin_score, fin_logp, fin_attn[:, :, :t])


def reference_translations(translator, cfg, texts: list[str], batch: int = 64) -> tuple[list[str], list[float]]:
    """`translator`'s model and settings (its vocabularies those of `cfg`) decoded by the reference search:
    (translations, scores), in order."""
    from pipeline.translate.predict import Translator

    class Reference(Translator):
        def __call__(self, text):
            src_ids, src_tokens, empty = self.source(text)
            s = self.search_cfg
            hyps = reference_beam_search(
                self.model, src_ids, s.beam_width, s.length_penalty, s.max_length_a, s.max_length_b
            )
            out = self.target_text(hyps.ids[:, 0], hyps.attention[:, 0], src_tokens)
            return {"translation": tf.where(empty, "", out), "score": tf.where(empty, 0.0, hyps.scores[:, 0])}

    return _translate(Reference(translator.model, cfg, translator.search_cfg), texts, batch)


def _translate(translator, texts: list[str], batch: int) -> tuple[list[str], list[float]]:
    outs, scores = [], []
    for i in range(0, len(texts), batch):  # in file order, as requests come: lengths mixed within a batch
        got = translator.translate(tf.constant(texts[i : i + batch]))
        outs += [t.decode("utf-8") for t in got["translation"].numpy()]
        scores += got["score"].numpy().tolist()
    return outs, scores


def translations(translator, texts: list[str], batch: int = 64) -> tuple[list[str], list[float]]:
    """The same, by the translator's own (current) search."""
    return _translate(translator, texts, batch)
