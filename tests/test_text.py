import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import text
from pipeline.core.config import Text

CFG = Text()


def tok(sentences, joiner=False, cfg=CFG):
    return text.to_lists(text.tokenize(tf.constant(sentences), cfg, joiner))


def test_words_and_punctuation():
    assert tok(["A man, (smiling)."]) == [["A", "man", ",", "(", "smiling", ")", "."]]
    assert tok(["Zwei Männer stehen à côté."]) == [["Zwei", "Männer", "stehen", "à", "côté", "."]]
    assert tok(["  spaced\u00a0out\t\n text "]) == [["spaced", "out", "text"]]
    assert tok([""]) == [[]] and tok(["   "]) == [[]]


def test_joiners_mark_attached_punctuation():
    assert tok(["A man, (smiling)."], joiner=True) == [["A", "man", "￭,", "(￭", "smiling", "￭)￭", "￭."]]
    assert tok(["a , b"], joiner=True) == [["a", ",", "b"]]


def test_detokenize_restores_spacing():
    sentences = ["A man, (smiling).", "Zwei Männer... stehen", "don't  stop", "😀中文 עברית!", "x\u00a0y"]
    restored = text.detokenize(text.tokenize(tf.constant(sentences), CFG, joiner=True)).numpy()
    assert [s.decode() for s in restored] == [
        "A man, (smiling).",
        "Zwei Männer... stehen",
        "don't stop",
        "😀中文 עברית!",
        "x y",
    ]


def test_options_lowercase_truncate_and_unicode_normalisation():
    cfg = Text(lowercase=True, max_length=3)
    assert tok(["ÄPFEL Und Birnen sind gut"], cfg=cfg) == [["äpfel", "und", "birnen"]]
    assert tok(["ﬁne"], cfg=Text(normalize="NFKC")) == [["fine"]]
    assert tok(["a\u200bb"]) == [["ab"]]


def test_pretokenized_words_are_normalised_not_split():
    words = tf.ragged.constant([["U.S.", "x\u00a0", "  "], ["EU"]])
    assert text.to_lists(text.normalize_tokens(words, Text(lowercase=True))) == [["u.s.", "x"], ["eu"]]


def test_works_inside_a_graph():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def roundtrip(s):
        return text.detokenize(text.tokenize(s, CFG, joiner=True))

    assert roundtrip(tf.constant(["Hi, there!"])).numpy().tolist() == [b"Hi, there!"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_detokenize_inverts_tokenize_on_any_unicode(sentences):
    """detokenize(tokenize(x)) is exactly the normalised x: no text is lost or invented."""
    cfg = Text(max_length=1000)
    tokens = text.tokenize(tf.constant(sentences), cfg, joiner=True)
    normalised = text.normalize(tf.constant(sentences), cfg).numpy()
    assert text.detokenize(tokens).numpy().tolist() == normalised.tolist()
    for row in text.to_lists(tokens):
        assert all(t and " " not in t and t != text.JOINER for t in row)
