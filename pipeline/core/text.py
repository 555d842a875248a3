"""The one tokenizer, written as TF ops so that tf.data and the exported serving graphs run the same code.

Only core `tf.strings` ops are used by default (they exist in every TensorFlow and TF Serving build);
`text.normalize = "NFC"/"NFKC"` adds tensorflow-text's NormalizeUTF8 op.

Words are runs of letters, marks, digits and `_`; every other visible character is a token of its own.
With `joiner=True` (translation targets) a punctuation token carries the mark JOINER on each side that
touched its neighbour with no space between, OpenNMT-style, so `detokenize` restores the exact spacing:

    "A man, (smiling)."  ->  A  man  ￭,  (￭  smiling  ￭)  ￭.   ->  "A man, (smiling)."
"""

import tensorflow as tf

from pipeline.core.config import Text

JOINER = "\uffed"  # U+FFED HALFWIDTH BLACK SQUARE, as OpenNMT's tokenizer; stripped from input text
_GAP = "\x01"  # marks a split we inserted, as opposed to a space in the input (control chars are removed)
_PUNCT = r"([^\pL\pM\pN_\s\pZ])"


def normalize(text: tf.Tensor, cfg: Text) -> tf.Tensor:
    """Clean a batch of strings: Unicode form (optional), no control or zero-width chars, single spaces."""
    if cfg.normalize in ("NFC", "NFKC"):
        import tensorflow_text as tf_text  # only this option needs the tensorflow-text ops

        text = tf_text.normalize_utf8(text, cfg.normalize)
    if cfg.normalize != "none":
        text = tf.strings.regex_replace(text, r"[\p{Cc}\x{FFED}]", " ")
        text = tf.strings.regex_replace(text, r"[\x{200B}\x{FEFF}]", "")
    text = tf.strings.regex_replace(text, r"[\s\pZ]+", " ")
    text = tf.strings.strip(text)
    if cfg.lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    return text


def tokenize(text: tf.Tensor, cfg: Text, joiner: bool = False) -> tf.RaggedTensor:
    """[batch] strings -> [batch, (tokens)] ragged strings, truncated to cfg.max_length tokens."""
    text = normalize(tf.convert_to_tensor(text, tf.string), cfg)
    # Surround every punctuation char with inserted gaps and joiners, then drop the joiners that face a
    # real space or an end of the string: what remains marks exactly the places where no space was.
    text = tf.strings.regex_replace(text, _PUNCT, _GAP + JOINER + r"\1" + JOINER + _GAP)
    text = tf.strings.regex_replace(text, JOINER + _GAP + "( |$)", _GAP + r"\1")
    text = tf.strings.regex_replace(text, "(^| )" + _GAP + JOINER, r"\1" + _GAP)
    tokens = tf.strings.split(tf.strings.regex_replace(text, _GAP, " "))
    if not joiner:
        tokens = tf.ragged.map_flat_values(tf.strings.regex_replace, tokens, JOINER, "")
    return tokens[:, : cfg.max_length]


def normalize_tokens(tokens: tf.RaggedTensor, cfg: Text) -> tf.RaggedTensor:
    """Pre-tokenized input (CoNLL words): normalise each token, drop tokens that become empty, truncate."""
    flat = normalize(tokens.flat_values, cfg)
    tokens = tokens.with_flat_values(flat)
    tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
    return tokens[:, : cfg.max_length]


def detokenize(tokens: tf.RaggedTensor) -> tf.Tensor:
    """[batch, (tokens)] -> [batch] strings: join with spaces and glue joiner-marked punctuation."""
    text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
    return tf.strings.regex_replace(text, " ?" + JOINER + " ?", "")


def strip_joiners(token: str) -> str:
    """The plain form of a target token (for embedding lookups and reports)."""
    return token.replace(JOINER, "")


def to_lists(tokens: tf.RaggedTensor) -> list[list[str]]:
    """Ragged string tensor -> Python lists of str (for vocab counting and reports)."""
    return [[t.decode("utf-8") for t in row] for row in tokens.to_list()]


def tokenize_batches(texts: list[str], cfg: Text, joiner: bool = False, batch: int = 8192) -> list[list[str]]:
    """Tokenize many sentences eagerly, a batch at a time, for building vocabularies and reports."""
    out = []
    for i in range(0, len(texts), batch):
        out.extend(to_lists(tokenize(tf.constant(texts[i : i + batch]), cfg, joiner)))
    return out
