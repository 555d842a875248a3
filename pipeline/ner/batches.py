"""Tagger batches: one epoch of whole documents (for the document memory; without it each sentence is its own
document) as (features, tag ids), and the length-sorted batches decoding uses.
"""

import collections

import numpy as np
import tensorflow as tf

from pipeline.core.config import Config
from pipeline.ner.features import NerFeatures, _plain


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
