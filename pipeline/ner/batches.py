"""Tagger batches: one epoch of bucketed sentences or of whole documents (for the document memory) as
(features, tag ids), and the length-sorted batches decoding uses.
"""

import bisect
import collections
import math

import numpy as np
import tensorflow as tf

from pipeline.core.config import Config
from pipeline.ner.features import NerFeatures, _plain


def bucket_boundaries(width: int, max_length: int) -> list[int]:
    """Upper bounds (exclusive) of the length buckets: width+1, 2*width+1, ... below max_length."""
    return list(range(width + 1, max_length + 1, width))


def count_batches(cfg: Config, sentences) -> int:
    """How many batches ner_train_batches makes of these sentences (for progress bars)."""
    n = cfg.text.max_length
    buckets = collections.Counter(
        bisect.bisect_right(bucket_boundaries(cfg.ner.bucket_width, n), min(len(w), n)) for w, _ in sentences
    )
    return sum(math.ceil(c / cfg.ner.batch_size) for c in buckets.values())


def ner_examples(cfg: Config, sentences, tags: list[str]) -> tf.data.Dataset:
    """(tokens [time] string, tag ids [time] int32) per sentence, truncated to text.max_length; built once."""
    n, index = cfg.text.max_length, {t: i for i, t in enumerate(tags)}
    words = tf.ragged.constant([w[:n] for w, _ in sentences], tf.string, ragged_rank=1)
    tag_ids = tf.ragged.constant([[index[t] for t in y[:n]] for _, y in sentences], tf.int32, ragged_rank=1)
    # Rows of a ragged tensor come out as ragged-rank-0 values; an identity map makes them plain tensors,
    # which bucket_by_sequence_length's padded batching needs.
    return tf.data.Dataset.from_tensor_slices((words, tag_ids)).map(_plain(lambda w, y: (w, y))).cache()


def ner_train_batches(cfg: Config, examples: tf.data.Dataset, features: NerFeatures, seed: int) -> tf.data.Dataset:
    """One epoch of shuffled (features, tag ids) batches of sentences of similar length.

    Bucketing keeps the padding share low; the training step's input signature leaves batch size and
    length unknown, so no batch shape causes a retrace.
    """
    boundaries = bucket_boundaries(cfg.ner.bucket_width, cfg.text.max_length)
    ds = examples.shuffle(examples.cardinality(), seed=seed)
    ds = ds.bucket_by_sequence_length(
        _plain(lambda w, _: tf.shape(w)[0]),
        boundaries,
        [cfg.ner.batch_size] * (len(boundaries) + 1),
        padded_shapes=([None], [None]),
        padding_values=("", 0),
    )
    ds = ds.map(_plain(lambda w, y: (features(w), y)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def document_batches(documents: list[list[int]], batch_size: int, noise: float, rng) -> list[list[int]]:
    """Indices of whole documents per batch, from documents given as their sentence lengths.

    Documents are sorted by their longest sentence (plus uniform noise of `noise` tokens, so batches differ
    between epochs) and taken in order until a batch holds batch_size sentences; the batches come out shuffled.
    """
    keys = [max(d) + rng.uniform(0, noise) for d in documents]
    batches, current, size = [], [], 0
    for i in np.argsort(keys, kind="stable"):
        current.append(int(i))
        size += len(documents[i])
        if size >= batch_size:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


def ner_document_batches(cfg: Config, documents, tags: list[str], features: NerFeatures, seed: int, targets=None):
    """(batches of features with doc ids, tag ids) of whole documents for one epoch, and how many batches.

    targets: a teacher's (marginals, transition counts) per document and sentence (distill.teacher_targets); the
    batches then carry them as a third element, (marginals [batch, time, tags], counts [batch, tags, tags])."""
    n, index = cfg.text.max_length, {t: i for i, t in enumerate(tags)}
    docs = [[(w[:n], [index[t] for t in y[:n]]) for w, y in d] for d in documents]
    rng = np.random.default_rng(seed)
    plan = document_batches([[len(w) for w, _ in d] for d in docs], cfg.ner.batch_size, 2 * cfg.ner.bucket_width, rng)
    k = len(tags)

    def generate():
        for batch in plan:
            rows = [(w, y, j) for j, i in enumerate(batch) for w, y in docs[i]]
            width = max(len(w) for w, _, _ in rows)
            tokens = np.array([w + [""] * (width - len(w)) for w, _, _ in rows], dtype=object)
            tag_ids = np.array([y + [0] * (width - len(y)) for _, y, _ in rows], np.int32)
            out = (tokens, np.array([j for _, _, j in rows], np.int32), tag_ids)
            if targets is not None:
                soft = [t for i in batch for t in targets[i]]
                unary = np.zeros((len(rows), width, k), np.float32)
                for r, (u, _) in enumerate(soft):
                    unary[r, : len(u)] = u
                out += (unary, np.stack([p for _, p in soft]).astype(np.float32))
            yield out

    signature = (
        tf.TensorSpec([None, None], tf.string),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None, None], tf.int32),
    )
    if targets is not None:
        signature += (tf.TensorSpec([None, None, k], tf.float32), tf.TensorSpec([None, k, k], tf.float32))
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(_plain(lambda w, d, y, *soft: (features(w, d), y, *soft)), num_parallel_calls=tf.data.AUTOTUNE)
    if targets is not None:
        ds = ds.map(lambda x, y, u, p: (x, y, (u, p)))
    return ds.prefetch(tf.data.AUTOTUNE), len(plan)


def sorted_batches(token_lists: list[list[str]], doc_ids: list[int] | None = None, batch_tokens: int = 4096):
    """(indices, dense [batch, time] tokens "" padded, doc ids [batch]) for decoding, about `batch_tokens`
    positions a batch: whole documents (doc_ids: the document of each sentence; by default each sentence is its
    own) in order of their longest sentence. Nothing is truncated and little is padded; the caller puts results
    back by `indices`. Doc ids are numbered within each batch."""
    docs: dict[int, list[int]] = collections.defaultdict(list)
    for i, d in enumerate(range(len(token_lists)) if doc_ids is None else doc_ids):
        docs[d].append(i)
    groups = sorted(docs.values(), key=lambda idx: max(len(token_lists[i]) for i in idx))  # a stable sort
    widths = [max(1, *(len(token_lists[i]) for i in idx)) for idx in groups]  # ascending
    start = 0
    while start < len(groups):
        stop = start + 1
        size = len(groups[start])
        while stop < len(groups) and (size + len(groups[stop])) * widths[stop] <= batch_tokens:
            size, stop = size + len(groups[stop]), stop + 1
        idx = [i for group in groups[start:stop] for i in group]
        local = [j for j, group in enumerate(groups[start:stop]) for _ in group]
        rows = [list(token_lists[i]) + [""] * (widths[stop - 1] - len(token_lists[i])) for i in idx]
        yield np.array(idx), tf.constant(rows, tf.string), tf.constant(local, tf.int32)
        start = stop
