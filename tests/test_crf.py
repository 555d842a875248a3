"""The CRF against brute-force enumeration of every tag path, and its indifference to padding."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from pipeline.ner import crf

K = 3  # tags


def _params(rng, boundaries=True):
    trans = rng.normal(size=(K, K)).astype("float32")
    start, end = (rng.normal(size=K).astype("float32") if boundaries else np.zeros(K, "float32") for _ in "se")
    return trans, start, end


def _path_score(em, path, trans, start, end):
    s = start[path[0]] + end[path[-1]] + sum(em[t, y] for t, y in enumerate(path))
    return s + sum(trans[a, b] for a, b in itertools.pairwise(path))


def _brute(em, n, trans, start, end):
    """log Z, best path and best score of one sequence of length n by enumerating all K**n paths."""
    scores = {p: _path_score(em, p, trans, start, end) for p in itertools.product(range(K), repeat=n)}
    best = max(scores, key=scores.get)
    return np.logaddexp.reduce(list(scores.values())), list(best), scores[best]


def _batch(rng, lengths, time):
    em = rng.normal(size=(len(lengths), time, K)).astype("float32")
    mask = np.arange(time)[None, :] < np.array(lengths)[:, None]
    tags = rng.integers(0, K, size=(len(lengths), time)).astype("int32")
    return em, mask, tags


@pytest.mark.parametrize("boundaries", [True, False])
def test_matches_brute_force(boundaries):
    rng = np.random.default_rng(0)
    for _ in range(5):
        trans, start, end = _params(rng, boundaries)
        lengths = [4, 1, 3, 2]
        em, mask, tags = _batch(rng, lengths, time=4)
        log_z = crf.log_partition(em, mask, trans, start, end).numpy()
        score = crf.sequence_score(em, tags, mask, trans, start, end).numpy()
        path, best = (x.numpy() for x in crf.viterbi_decode(em, mask, trans, start, end))
        for b, n in enumerate(lengths):
            want_z, want_path, want_best = _brute(em[b], n, trans, start, end)
            np.testing.assert_allclose(log_z[b], want_z, rtol=1e-5)
            np.testing.assert_allclose(score[b], _path_score(em[b], tags[b, :n], trans, start, end), rtol=1e-5)
            assert path[b, :n].tolist() == want_path
            assert (path[b, n:] == 0).all()
            np.testing.assert_allclose(best[b], want_best, rtol=1e-5)


def test_likelihoods_sum_to_one():
    rng = np.random.default_rng(1)
    trans, start, end = _params(rng)
    em, mask, _ = _batch(rng, [3], time=3)
    paths = np.array(list(itertools.product(range(K), repeat=3)), "int32")
    n = len(paths)
    ll = crf.log_likelihood(np.repeat(em, n, 0), paths, np.repeat(mask, n, 0), trans, start, end)
    np.testing.assert_allclose(tf.reduce_logsumexp(ll).numpy(), 0.0, atol=1e-5)


def test_padding_never_changes_a_result():
    rng = np.random.default_rng(2)
    trans, start, end = _params(rng)
    lengths = [3, 1, 2]
    em, mask, tags = _batch(rng, lengths, time=3)
    pad = 4  # more steps with random emissions and tags, all masked
    em2 = np.concatenate([em, rng.normal(size=(3, pad, K)).astype("float32") * 10], axis=1)
    mask2 = np.concatenate([mask, np.zeros((3, pad), bool)], axis=1)
    tags2 = np.concatenate([tags, rng.integers(0, K, size=(3, pad)).astype("int32")], axis=1)
    np.testing.assert_allclose(
        crf.log_likelihood(em, tags, mask, trans, start, end),
        crf.log_likelihood(em2, tags2, mask2, trans, start, end),
        rtol=1e-5,
    )
    path, best = crf.viterbi_decode(em, mask, trans, start, end)
    path2, best2 = crf.viterbi_decode(em2, mask2, trans, start, end)
    np.testing.assert_array_equal(path2[:, :3], path)
    np.testing.assert_allclose(best2, best, rtol=1e-5)


def test_empty_sequence_scores_zero():
    rng = np.random.default_rng(3)
    trans, start, end = _params(rng)
    em, mask, tags = _batch(rng, [0, 2], time=2)
    assert crf.log_likelihood(em, tags, mask, trans, start, end).numpy()[0] == 0.0
    assert crf.viterbi_decode(em, mask, trans, start, end)[0].numpy()[0].tolist() == [0, 0]


def test_viterbi_in_a_fixed_signature_function_traces_once():
    rng = np.random.default_rng(4)
    layer = crf.CRF(K)
    layer.transitions.assign(rng.normal(size=(K, K)))
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, None, K], tf.float32), tf.TensorSpec([None, None], tf.bool)])
    def decode(emissions, mask):
        traces.append(1)
        return layer.decode(emissions, mask)

    for time, lengths in ((4, [4, 2]), (1, [1]), (6, [6, 3, 5])):
        em, mask, _ = _batch(rng, lengths, time)
        got = decode(em, mask).numpy()
        want = crf.viterbi_decode(em, mask, *layer.params())[0].numpy()
        np.testing.assert_array_equal(got, want)
    assert len(traces) == 1


def test_gradients_flow_to_the_transitions():
    rng = np.random.default_rng(5)
    layer = crf.CRF(K)
    em, mask, tags = _batch(rng, [3, 2], time=3)
    em = tf.constant(em)
    with tf.GradientTape() as tape:
        tape.watch(em)
        loss = tf.reduce_mean(layer.loss(em, tags, mask))
    g_em, g_trans = tape.gradient(loss, [em, layer.transitions.value])
    assert np.isfinite(g_em.numpy()).all() and np.abs(g_trans.numpy()).sum() > 0
    np.testing.assert_array_equal(g_em.numpy()[1, 2], 0)  # a padded step gets no gradient


def test_iob2_penalties_keep_viterbi_to_valid_paths():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    pen_trans, pen_start = crf.iob2_penalties(tags)
    allowed = {(a, b) for a in tags for b in tags if not b.startswith("I-") or a in (f"B-{b[2:]}", b)}
    assert {(a, b) for i, a in enumerate(tags) for j, b in enumerate(tags) if pen_trans[i, j] == 0} == allowed
    assert [t for t, p in zip(tags, pen_start, strict=True) if p == 0] == ["O", "B-PER", "B-LOC"]

    def valid(path):
        names = ["O", *(tags[y] for y in path)]  # "O" before the first tag: a path never opens with I-X
        return all((a, b) in allowed for a, b in itertools.pairwise(names))

    rng = np.random.default_rng(3)
    n, k = 4, len(tags)
    em = rng.normal(scale=3.0, size=(8, n, k)).astype("float32")
    em[:, :, [2, 4]] += 2.0  # the I- tags favoured: unconstrained, most best paths are invalid IOB2
    trans, start, end = (rng.normal(size=s).astype("float32") for s in ((k, k), k, k))
    mask = np.ones((8, n), bool)
    free = crf.viterbi_decode(em, mask, trans, start, end)[0].numpy()
    kept = crf.viterbi_decode(em, mask, trans + pen_trans, start + pen_start, end)[0].numpy()
    assert not all(valid(p) for p in free)  # so the next line can fail
    for b in range(len(em)):
        paths = [p for p in itertools.product(range(k), repeat=n) if valid(p)]
        best = max(paths, key=lambda p: _path_score(em[b], p, trans, start, end))
        assert kept[b].tolist() == list(best)


def test_posteriors_match_brute_force_marginals():
    rng = np.random.default_rng(5)
    trans, start, end = _params(rng)
    lengths = [4, 1, 3, 0]
    em, mask, _ = _batch(rng, lengths, time=4)
    unary, pairs = (x.numpy() for x in crf.posteriors(em, mask, trans, start, end))
    for b, n in enumerate(lengths):
        want_u, want_p = np.zeros((4, K)), np.zeros((K, K))
        if n:
            log_z = _brute(em[b], n, trans, start, end)[0]
            for path in itertools.product(range(K), repeat=n):
                p = np.exp(_path_score(em[b], path, trans, start, end) - log_z)
                for t, y in enumerate(path):
                    want_u[t, y] += p
                for a, c in itertools.pairwise(path):
                    want_p[a, c] += p
        np.testing.assert_allclose(unary[b], want_u, atol=1e-5)
        np.testing.assert_allclose(pairs[b], want_p, atol=1e-5)


def test_soft_loss_is_the_likelihood_on_a_path_and_least_at_the_crfs_own_distribution():
    rng = np.random.default_rng(6)
    layer = crf.CRF(K)
    layer.build(None)
    for w, value in zip(layer.weights, _params(rng), strict=True):
        w.assign(value)
    em, mask, tags = _batch(rng, [4, 2, 1], time=4)
    # On a single path's targets: the negative log-likelihood.
    gold = crf.path_targets(tags, mask, K)
    np.testing.assert_allclose(layer.soft_loss(em, *gold, mask), layer.loss(em, tags, mask), rtol=1e-5)
    # On the CRF's own posteriors the cross-entropy is at its minimum: zero gradient in the emissions.
    own = crf.posteriors(em, mask, *layer.params())
    x = tf.constant(em)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer.soft_loss(x, *own, mask))
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 0.0, atol=1e-5)
    # Linear in the targets: a mixture of targets gives the mixture of the losses.
    mixed = [0.3 * g + 0.7 * o for g, o in zip(gold, own, strict=True)]
    want = 0.3 * layer.soft_loss(em, *gold, mask) + 0.7 * layer.soft_loss(em, *own, mask)
    np.testing.assert_allclose(layer.soft_loss(em, *mixed, mask), want, rtol=1e-5)
