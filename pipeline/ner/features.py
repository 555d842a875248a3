"""The tagger's inputs from token strings, in TF ops: word / character / casing ids and document keys.

`NerFeatures` turns a dense [batch, time] string tensor of tokens ("" = padding) into the tagger's
inputs with vocabulary lookups in the graph, so the exported serving graph can reuse it unchanged:

    words   [batch, time]        int32  ids in ner_words.txt, 0 = <pad>, 1 = <unk>
    chars   [batch, time, W]     int32  ids in ner_chars.txt of the first W = ner.max_word_length chars
    casing  [batch, time]        int32  index into CASES

Tokens are normalised by `text.normalize` exactly as the vocab stage normalised them (it is what
`text.normalize_tokens` applies to each token). We apply it token by token and keep tokens that become
empty (they look up as <unk>) instead of dropping them, so tags stay aligned with their tokens.
"""

import tensorflow as tf

from pipeline.core import text, vocab
from pipeline.core.config import Config

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
