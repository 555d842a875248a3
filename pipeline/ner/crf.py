"""A linear-chain CRF in TensorFlow ops: log-likelihood by the forward algorithm and Viterbi decoding.

Shapes: emissions [batch, time, tags] (float), tags [batch, time] (int), mask [batch, time] (bool, right
padded: the True steps come first). A tag path y of length n scores

    start[y_0] + sum_{t<n} emissions[t, y_t] + sum_{0<t<n} transitions[y_{t-1}, y_t] + end[y_{n-1}]

Padded steps leave every score unchanged: the recursions carry their state through them, and Viterbi's
back-pointers are the identity there. Both loops are `tf.scan`s over time, so they trace once for any
length and run inside a SavedModel. A sequence of length 0 scores 0 and has log-partition 0.
"""

import keras
import numpy as np
import tensorflow as tf


def _time_major(x: tf.Tensor) -> tf.Tensor:
    """[batch, time, ...] -> [time, batch, ...] (tf.scan loops over the first axis)."""
    x = tf.convert_to_tensor(x)
    return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])


def _first_steps(emissions: tf.Tensor) -> tf.Tensor:
    """[time] bool, True at step 0: the recursions start there from `start` instead of a previous step.

    Scanning over every step (not emissions[1:]) keeps the scans non-empty when time == 1.
    """
    return tf.equal(tf.range(tf.shape(emissions)[1]), 0)


def _lengths(mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)


def sequence_score(emissions, tags, mask, transitions, start, end) -> tf.Tensor:
    """[batch] unnormalised score of the given tag paths."""
    emissions, tags = tf.convert_to_tensor(emissions), tf.cast(tags, tf.int32)
    m = tf.cast(mask, emissions.dtype)
    unary = tf.reduce_sum(tf.gather(emissions, tags, batch_dims=2) * m, axis=1)
    pairs = tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1)
    binary = tf.reduce_sum(tf.gather_nd(transitions, pairs) * m[:, 1:], axis=1)  # right padding: m[t] = both
    lengths = _lengths(mask)
    last = tf.gather(tags, tf.maximum(lengths - 1, 0), batch_dims=1)
    bounds = tf.gather(start, tags[:, 0]) + tf.gather(end, last)
    return tf.where(lengths > 0, unary + binary + bounds, tf.zeros_like(unary))


def log_partition(emissions, mask, transitions, start, end) -> tf.Tensor:
    """[batch] log of the summed exp-scores of all tag paths (the forward algorithm, in log space).

    The parameters may also be given per sentence (transitions [batch, tags, tags], start and end [batch, tags]),
    as `posteriors` does to read each sentence's expected transition counts off the gradient."""
    e, m, first = _time_major(emissions), _time_major(mask), _first_steps(emissions)
    transitions = tf.convert_to_tensor(transitions)
    pairwise = transitions if transitions.shape.rank == 3 else transitions[None]

    def step(alpha, inputs):
        e_t, m_t, first_t = inputs
        nxt = tf.reduce_logsumexp(alpha[:, :, None] + pairwise, axis=1) + e_t
        nxt = tf.where(first_t, start + e_t, nxt)
        return tf.where(m_t[:, None], nxt, alpha)

    alpha = tf.foldl(step, (e, m, first), initializer=tf.zeros_like(e[0]))
    log_z = tf.reduce_logsumexp(alpha + end, axis=1)
    return tf.where(_lengths(mask) > 0, log_z, tf.zeros_like(log_z))


def log_likelihood(emissions, tags, mask, transitions, start, end) -> tf.Tensor:
    """[batch] log p(tags | emissions)."""
    return sequence_score(emissions, tags, mask, transitions, start, end) - log_partition(
        emissions, mask, transitions, start, end
    )


def posteriors(emissions, mask, transitions, start, end) -> tuple[tf.Tensor, tf.Tensor]:
    """The CRF's distribution over paths, as the expectations a path score is linear in: tag marginals
    [batch, time, tags] (0 on padding) and expected transition counts [batch, tags, tags] of each sentence.

    Both are gradients of log Z (the forward-backward algorithm by autodiff), with the parameters copied per
    sentence so the transition gradient stays per sentence. Start and end marginals are the first and last rows.
    """
    emissions = tf.convert_to_tensor(emissions, tf.float32)
    b, k = tf.shape(emissions)[0], tf.shape(emissions)[2]
    per_sentence = tf.broadcast_to(transitions, tf.stack([b, k, k]))
    with tf.GradientTape() as tape:
        tape.watch([emissions, per_sentence])
        log_z = tf.reduce_sum(log_partition(emissions, mask, per_sentence, start, end))
    unary, pairs = tape.gradient(log_z, [emissions, per_sentence])
    return unary, pairs


def path_targets(tags, mask, n_tags: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A tag path in the form `posteriors` gives: one-hot marginals and its transition counts."""
    m = tf.cast(mask, tf.float32)
    unary = tf.one_hot(tf.cast(tags, tf.int32), n_tags) * m[..., None]
    return unary, tf.einsum("bti,btj->bij", unary[:, :-1], unary[:, 1:])


def expected_score(emissions, unary, pairs, mask, transitions, start, end) -> tf.Tensor:
    """[batch] the mean path score under a distribution over paths given by its marginals (`posteriors`); the
    score of the path itself when they are a path's (`path_targets`)."""
    emissions = tf.convert_to_tensor(emissions, tf.float32)
    last = tf.gather(unary, tf.maximum(_lengths(mask) - 1, 0), batch_dims=1)
    return (
        tf.reduce_sum(unary * emissions, axis=[1, 2])
        + tf.reduce_sum(pairs * transitions, axis=[1, 2])
        + tf.reduce_sum(unary[:, 0] * start, axis=1)
        + tf.reduce_sum(last * end, axis=1)
    )


def viterbi_decode(emissions, mask, transitions, start, end) -> tuple[tf.Tensor, tf.Tensor]:
    """Best tag paths [batch, time] int32 (0 on padding) and their scores [batch]."""
    e, m, first = _time_major(emissions), _time_major(mask), _first_steps(emissions)
    identity = tf.broadcast_to(tf.range(tf.shape(e)[2]), tf.shape(e[0]))

    def forward(carry, inputs):
        score, _ = carry
        e_t, m_t, first_t = inputs
        cand = score[:, :, None] + transitions[None]  # [batch, from, to]
        best = tf.where(first_t, start + e_t, tf.reduce_max(cand, axis=1) + e_t)
        pointer = tf.where(first_t, identity, tf.argmax(cand, axis=1, output_type=tf.int32))
        return tf.where(m_t[:, None], best, score), tf.where(m_t[:, None], pointer, identity)

    scores, pointers = tf.scan(forward, (e, m, first), initializer=(tf.zeros_like(e[0]), identity))
    final = scores[-1] + end
    last = tf.argmax(final, axis=1, output_type=tf.int32)
    # Walk back with the pointer of step t+1 at step t; after the last step every entry points to `last`.
    ahead = tf.concat([pointers[1:], tf.broadcast_to(last[:, None], tf.shape(identity))[None]], axis=0)

    def backward(tag_next, pointer):
        return tf.gather(pointer, tag_next, batch_dims=1)

    path = tf.transpose(tf.scan(backward, ahead, initializer=last, reverse=True))
    path = tf.where(mask, path, tf.zeros_like(path))
    best = tf.where(_lengths(mask) > 0, tf.reduce_max(final, axis=1), tf.zeros_like(final[:, 0]))
    return path, best


FORBIDDEN = -1e4  # added to a forbidden transition's score: far below any path's, finite so sums stay exact


def iob2_penalties(tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(transitions [tags, tags], start [tags]) of 0 or FORBIDDEN: in IOB2 an I-X follows only B-X or I-X.

    Added to the scores in decoding only. Strict IOB2 scoring (seqeval) never counts a span that an I-X opens,
    so such a tag can only lose an entity; the CRF learns these moves are rare but, averaged over an ensemble,
    still made a few (7 dev and 9 test tags for the seed-4 ensemble)."""
    n = len(tags)
    transitions, start = np.zeros((n, n), np.float32), np.zeros(n, np.float32)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            start[j] = FORBIDDEN
            transitions[:, j] = [0.0 if prev in (f"B-{tag[2:]}", tag) else FORBIDDEN for prev in tags]
    return transitions, start


class CRF(keras.layers.Layer):
    """Holds the transition scores; `loss` and `decode` take the emissions a Dense layer produced."""

    def __init__(self, n_tags: int, **kwargs):
        super().__init__(**kwargs)
        self.n_tags = n_tags
        self.transitions = self.add_weight(shape=(n_tags, n_tags), initializer="zeros", name="transitions")
        # Start/end scores let the CRF learn that a sentence never starts with I-X.
        self.start = self.add_weight(shape=(n_tags,), initializer="zeros", name="start")
        self.end = self.add_weight(shape=(n_tags,), initializer="zeros", name="end")

    def params(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(transitions, start, end)."""
        return tf.convert_to_tensor(self.transitions), tf.convert_to_tensor(self.start), tf.convert_to_tensor(self.end)

    def loss(self, emissions, tags, mask) -> tf.Tensor:
        """[batch] negative log-likelihood of the gold paths."""
        return -log_likelihood(tf.cast(emissions, tf.float32), tags, mask, *self.params())

    def soft_loss(self, emissions, unary, pairs, mask) -> tf.Tensor:
        """[batch] cross-entropy of the CRF's path distribution against a target distribution given by its
        marginals (a teacher's `posteriors`, or a mixture with `path_targets`): log Z - the target's mean score.
        On a single path's targets this is `loss`; it is linear in the targets, so a mixture of targets gives the
        mixture of the losses."""
        emissions = tf.cast(emissions, tf.float32)
        params = self.params()
        return log_partition(emissions, mask, *params) - expected_score(emissions, unary, pairs, mask, *params)

    def decode(self, emissions, mask) -> tf.Tensor:
        return viterbi_decode(tf.cast(emissions, tf.float32), mask, *self.params())[0]

    def get_config(self):
        return super().get_config() | {"n_tags": self.n_tags}
