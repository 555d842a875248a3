"""tf.data input pipelines. NER: tokens -> word / character / casing ids, in TF ops, bucketed by length.

`NerFeatures` turns a dense [batch, time] string tensor of tokens ("" = padding) into the tagger's
inputs with vocabulary lookups in the graph, so the exported serving graph can reuse it unchanged:

    words   [batch, time]        int32  ids in ner_words.txt, 0 = <pad>, 1 = <unk>
    chars   [batch, time, W]     int32  ids in ner_chars.txt of the first W = ner.max_word_length chars
    casing  [batch, time]        int32  index into CASES

Tokens are normalised by `text.normalize` exactly as the vocab stage normalised them (it is what
`text.normalize_tokens` applies to each token). We apply it token by token and keep tokens that become
empty (they look up as <unk>) instead of dropping them, so tags stay aligned with their tokens.
"""

import bisect
import collections
import math

import numpy as np
import tensorflow as tf

from pipeline import text, vocab
from pipeline.config import Config

# Casing classes, in the order their regexes are tried (first match wins); 0 is padding.
CASES = ("<pad>", "numeric", "has_digit", "upper", "title", "lower", "punct", "other")
_CASE_PATTERNS = (
    ("numeric", r"[\pN.,:/-]*\pN[\pN.,:/-]*"),  # 1996, 3-1, 12.5, 10/12
    ("has_digit", r".*\pN.*"),
    ("upper", r"\p{Lu}[\p{Lu}\pM.&-]*"),  # EU, U.S., AT&T
    ("title", r"\p{Lu}.*"),
    ("lower", r"[\p{Ll}\pM]+"),
    ("punct", r"[^\pL\pN]+"),
)


# Functions traced here have no tensor-dependent Python control flow, so they skip autograph, which would
# re-read their source from disk when each epoch's dataset is built: a file edited during a long training
# run would then be traced with the wrong lines.
_plain = tf.autograph.experimental.do_not_convert


def feature_signature(max_word_length: int) -> dict[str, tf.TensorSpec]:
    """The input signature of NerFeatures' output: any batch size and sentence length, W characters."""
    return {
        "words": tf.TensorSpec([None, None], tf.int32, name="words"),
        "chars": tf.TensorSpec([None, None, max_word_length], tf.int32, name="chars"),
        "casing": tf.TensorSpec([None, None], tf.int32, name="casing"),
        "key": tf.TensorSpec([None, None], tf.int32, name="key"),
        "doc": tf.TensorSpec([None], tf.int32, name="doc"),
    }


def casing_classes(tokens: tf.Tensor) -> tf.Tensor:
    """Casing class ids (see CASES) of a string tensor of any shape; "" -> 0."""
    out = tf.fill(tf.shape(tokens), CASES.index("other"))
    for name, pattern in reversed(_CASE_PATTERNS):  # reversed, so the earliest pattern wins
        out = tf.where(tf.strings.regex_full_match(tokens, pattern), CASES.index(name), out)
    return tf.where(tokens == "", 0, out)


class NerFeatures(tf.Module):
    """Token strings -> tagger inputs, with the vocabularies as hash tables (SavedModel assets)."""

    def __init__(self, cfg: Config):
        super().__init__(name="ner_features")
        self.text_cfg = cfg.text
        self.max_word_length = cfg.ner.max_word_length
        self.word_table = vocab.lookup_table(vocab.vocab_path(cfg, "ner_words"))
        self.char_table = vocab.lookup_table(vocab.vocab_path(cfg, "ner_chars"))

    def __call__(self, tokens: tf.Tensor, doc: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """tokens [batch, time] ("" = padding); doc [batch]: the document of each sentence (default: its own)."""
        pad = tokens == ""
        norm = text.normalize(tokens, self.text_cfg)
        words = self.word_table.lookup(norm)
        # Fall back to the lowercase form, as common NER practice does for embedding lookups (ANCHORS.md).
        lower = self.word_table.lookup(tf.strings.lower(norm, encoding="utf-8"))
        words = tf.where(words == vocab.UNK_ID, lower, words)
        # Split the flat tokens: a ragged [batch, time, chars] loses the time axis of an empty batch.
        flat = tf.strings.unicode_split(tf.reshape(norm, [-1]), "UTF-8")
        chars = tf.ragged.map_flat_values(self.char_table.lookup, flat).to_tensor(0, shape=[None, self.max_word_length])
        chars = tf.reshape(chars, tf.concat([tf.shape(norm), [self.max_word_length]], 0))
        casing = casing_classes(tf.where(pad, "", norm))
        # The document memory's key: capitalised words, matched in lowercase ("BOLTON" meets "Bolton"); 0 = none.
        lower_hash = tf.strings.to_hash_bucket_fast(tf.strings.lower(norm, encoding="utf-8"), 2**31 - 2) + 1
        keyed = (casing == CASES.index("upper")) | (casing == CASES.index("title"))
        return {
            "words": tf.cast(tf.where(pad, tf.constant(vocab.PAD_ID, tf.int64), words), tf.int32),
            "chars": tf.cast(chars, tf.int32),
            "casing": tf.cast(casing, tf.int32),
            "key": tf.cast(tf.where(keyed, lower_hash, 0), tf.int32),
            "doc": tf.range(tf.shape(tokens)[0], dtype=tf.int32) if doc is None else tf.cast(doc, tf.int32),
        }


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


def ner_document_batches(cfg: Config, documents, tags: list[str], features: NerFeatures, seed: int):
    """(batches of features with doc ids, tag ids) of whole documents for one epoch, and how many batches."""
    n, index = cfg.text.max_length, {t: i for i, t in enumerate(tags)}
    docs = [[(w[:n], [index[t] for t in y[:n]]) for w, y in d] for d in documents]
    rng = np.random.default_rng(seed)
    plan = document_batches([[len(w) for w, _ in d] for d in docs], cfg.ner.batch_size, 2 * cfg.ner.bucket_width, rng)

    def generate():
        for batch in plan:
            rows = [(w, y, j) for j, i in enumerate(batch) for w, y in docs[i]]
            width = max(len(w) for w, _, _ in rows)
            tokens = np.array([w + [""] * (width - len(w)) for w, _, _ in rows], dtype=object)
            tag_ids = np.array([y + [0] * (width - len(y)) for _, y, _ in rows], np.int32)
            yield tokens, np.array([j for _, _, j in rows], np.int32), tag_ids

    signature = (
        tf.TensorSpec([None, None], tf.string),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None, None], tf.int32),
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(_plain(lambda w, d, y: (features(w, d), y)), num_parallel_calls=tf.data.AUTOTUNE)
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


# ------------------------------------------------------------------------------------------ translation


def translation_examples(cfg: Config, pairs: list[tuple[str, str]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(source ids, target ids) per pair, tokenized by the one tokenizer; pairs with an empty side are dropped.

    Tokenized once, eagerly, with the same `text.tokenize` the serving graph runs, and looked up in Python:
    29k pairs take a few seconds, and the training loop then only pads and slices numpy arrays.
    """
    src_index = {t: i for i, t in enumerate(vocab.load_named(cfg, "src"))}
    tgt_index = {t: i for i, t in enumerate(vocab.load_named(cfg, "tgt"))}
    src = text.tokenize_batches([s for s, _ in pairs], cfg.text, joiner=False)
    tgt = text.tokenize_batches([t for _, t in pairs], cfg.text, joiner=True)
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


def translation_batches(examples, batch_size: int, seed: int, pool: int = 50):
    """One epoch of (src [B, S], tgt_in [B, T] = <s> y, tgt_out [B, T] = y </s>) right-padded int32 batches.

    Pairs are shuffled, then sorted by length within pools of `pool` batches and cut into batches whose
    order is shuffled again (torchtext's BucketIterator): little padding, yet every epoch is a new mix.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    length = np.array([max(len(s), len(t) + 1) for s, t in examples])
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(length[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    for b in rng.permutation(len(batches)):
        src = [examples[i][0] for i in batches[b]]
        tgt = [examples[i][1] for i in batches[b]]
        yield pad_ids(src), pad_ids(tgt, prefix=vocab.BOS_ID), pad_ids(tgt, suffix=vocab.EOS_ID)


def sorted_text_batches(texts: list[str], batch_size: int):
    """(indices, [batch] strings) in order of word count, for decoding: similar lengths share a batch."""
    order = np.argsort([len(t.split()) for t in texts], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, tf.constant([texts[i] for i in idx], tf.string)
