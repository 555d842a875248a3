"""Translator batches: id sequences of every pair (tokenized once), one epoch of length-pooled padded
batches, the same read from files in the graph (translate.input = "files"), and the length-sorted text batches
decoding uses.
"""

import numpy as np
import tensorflow as tf

from pipeline.core import vocab
from pipeline.core.config import Config
from pipeline.translate import subword


def translation_examples(cfg: Config, pairs: list[tuple[str, str]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(source ids, target ids) per pair, tokenized by the one tokenizer; pairs with an empty side are dropped.

    Tokenized once, eagerly, with the same tokenizer ops the serving graph runs (subword.py: words or pieces), and
    looked up in Python: 29k pairs take a few seconds, and the training loop then only pads and slices numpy arrays.
    """
    src_index = {t: i for i, t in enumerate(vocab.load_named(cfg, "src"))}
    tgt_index = {t: i for i, t in enumerate(vocab.load_named(cfg, "tgt"))}
    src = subword.Tokenizer(cfg, "src").tokenize_batches([s for s, _ in pairs])
    tgt = subword.Tokenizer(cfg, "tgt").tokenize_batches([t for _, t in pairs])
    return [
        (np.array(vocab.encode(s, src_index), np.int32), np.array(vocab.encode(t, tgt_index), np.int32))
        for s, t in zip(src, tgt, strict=True)
        if s and t
    ]


def pad_ids(rows: list[np.ndarray], prefix: int | None = None, suffix: int | None = None) -> np.ndarray:
    """Right-pad id rows with PAD_ID into [len(rows), width], optionally adding a first / last id to each."""
    extra = (prefix is not None) + (suffix is not None)
    out = np.full((len(rows), max(len(r) for r in rows) + extra), vocab.PAD_ID, np.int32)
    for i, r in enumerate(rows):
        start = int(prefix is not None)
        if prefix is not None:
            out[i, 0] = prefix
        out[i, start : start + len(r)] = r
        if suffix is not None:
            out[i, start + len(r)] = suffix
    return out


# Batches sorted by length together: little padding, yet every epoch a new mix (torchtext's BucketIterator).
POOL = 50


def capped(rows, width: int, max_tokens: int) -> list:
    """One length-sorted batch as batches of at most `max_tokens` padded positions (rows x width, `width` the
    batch's longest pair), each of the same number of rows, at least one: a batch of long pairs is cut up, so
    training memory is bounded by the cap, not by the corpus's longest pairs. 0 = no cap."""
    per = max(1, max_tokens // width) if max_tokens else len(rows)
    return [rows[i : i + per] for i in range(0, len(rows), per)]


def batch_plan(examples, batch_size: int, seed: int, max_tokens: int = 0, pool: int = POOL) -> list[np.ndarray]:
    """One epoch's batches as index arrays: pairs shuffled, then sorted by length within pools of `pool` batches
    and cut into batches (capped), whose order is shuffled again (torchtext's BucketIterator)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    length = np.array([max(len(s), len(t) + 1) for s, t in examples])
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(length[chunk], kind="stable")]
        for rows in (chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)):
            batches += capped(rows, int(length[rows].max()), max_tokens)
    return [batches[b] for b in rng.permutation(len(batches))]


def translation_batches(examples, batch_size: int, seed: int, max_tokens: int = 0):
    """One epoch of (src [B, S], tgt_in [B, T] = <s> y, tgt_out [B, T] = y </s>) right-padded int32 batches."""
    return padded_batches(examples, batch_plan(examples, batch_size, seed, max_tokens))


def padded_batches(examples, plan: list[np.ndarray]):
    """The batches of a batch_plan, padded: (src, tgt_in, tgt_out) per index array."""
    for rows in plan:
        src = [examples[i][0] for i in rows]
        tgt = [examples[i][1] for i in rows]
        yield pad_ids(src), pad_ids(tgt, prefix=vocab.BOS_ID), pad_ids(tgt, suffix=vocab.EOS_ID)


def file_batches(cfg: Config, files: list[str], batch_size: int, seed: int) -> tf.data.Dataset:
    """One epoch of (src, tgt_in, tgt_out) int32 batches read from source<TAB>target files, all in the graph.

    Files in a seeded order, interleaved line by line; a shuffle buffer of translate.shuffle_buffer pairs (the
    seed makes the epoch's order, so a resumed run can skip to its position); tokenization and id lookup by the
    ops serving runs; pairs with an empty side dropped; then as batch_plan: pools of POOL batches sorted by
    length and cut into batches (capped by translate.batch_tokens), whose order is shuffled again (here within 4
    pools); prefetch. Memory holds the buffers, not the corpus. (Length buckets of `bucket_by_sequence_length`
    ended every epoch with a sweep of part-full buckets, short to long, down to one pair a batch, and scored far
    lower dev BLEU at the same loss.)
    """
    max_tokens = cfg.translate.batch_tokens
    tokenizers = {side: subword.Tokenizer(cfg, side) for side in subword.SIDES}
    tables = {side: vocab.lookup_table(vocab.vocab_path(cfg, side)) for side in subword.SIDES}

    def ids(lines):
        cols = tf.strings.split(lines, "\t", maxsplit=1).to_tensor(shape=[None, 2])
        src, tgt = (
            tf.cast(tables[s].lookup(tokenizers[s].tokenize(cols[:, i])), tf.int32) for i, s in enumerate(subword.SIDES)
        )
        return src, tgt

    def with_markers(src, tgt):
        return src, tf.concat([[vocab.BOS_ID], tgt], 0), tf.concat([tgt, [vocab.EOS_ID]], 0)

    def real(x):  # non-padding ids per row
        return tf.reduce_sum(tf.cast(x != vocab.PAD_ID, tf.int32), 1)

    def length(src, tgt_in):  # as batch_plan's: the longer side, </s> included
        return tf.maximum(real(src), real(tgt_in))

    def sorted_batches(src, tgt_in, tgt_out):  # one pool, right-padded to its longest pair
        order = tf.argsort(length(src, tgt_in), stable=True)
        pool = tf.data.Dataset.from_tensor_slices(tuple(tf.gather(x, order) for x in (src, tgt_in, tgt_out)))
        return pool.batch(batch_size).flat_map(capped_batches) if max_tokens else pool.batch(batch_size).map(trimmed)

    def capped_batches(*batch):  # as `capped`: batches of at most max_tokens padded positions, each trimmed
        per = tf.maximum(1, max_tokens // tf.reduce_max(length(*batch[:2])))
        return tf.data.Dataset.from_tensor_slices(batch).batch(tf.cast(per, tf.int64)).map(trimmed)

    def trimmed(*batch):  # each batch cut to its own longest row
        return tuple(x[:, : tf.reduce_max(real(x))] for x in batch)

    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TextLineDataset, cycle_length=min(len(files), 4), **parallel)
    ds = ds.shuffle(cfg.translate.shuffle_buffer, seed=seed)
    ds = ds.batch(512).map(ids, **parallel).unbatch()  # the tokenizer ops take 512 lines at a time: far faster
    ds = ds.filter(lambda s, t: tf.logical_and(tf.size(s) > 0, tf.size(t) > 0)).map(with_markers)
    ds = ds.padded_batch(batch_size * POOL, padding_values=vocab.PAD_ID).flat_map(sorted_batches)
    return ds.shuffle(4 * POOL, seed=seed).prefetch(tf.data.AUTOTUNE)


def sorted_text_batches(texts: list[str], batch_size: int):
    """(indices, [batch] strings) in order of word count, for decoding: similar lengths share a batch."""
    order = np.argsort([len(t.split()) for t in texts], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, tf.constant([texts[i] for i in idx], tf.string)
