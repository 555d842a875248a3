"""The tagger as a TF Serving module: raw text or tokens in, tag strings out (signatures in stages/export.py)."""

import tensorflow as tf

from pipeline.core import text as text_lib
from pipeline.core.config import Config
from pipeline.core.serving import _function, backend_variables
from pipeline.ner import predict


class NerServing(tf.Module):
    """The tagger with its feature tables: raw text or tokens in, tag strings out."""

    def __init__(self, tagger: predict.TrainedTagger, cfg: Config):
        super().__init__(name="ner")
        self.model, self.features, self.tag_names, self.text_cfg = tagger.model, tagger.features, tagger.tags, cfg.text
        self.weights = backend_variables(tagger.model)  # restored by TF Serving's C++ loader too (core/serving.py)
        self.serve = _function(self._serve, tf.TensorSpec([None], tf.string))
        self.tag_tokens = _function(self._tag, tf.TensorSpec([None, None], tf.string))
        self.tag_document = _function(self._serve_document, tf.TensorSpec([None], tf.string))

    def _tag(self, tokens: tf.Tensor, one_document: bool = False) -> dict[str, tf.Tensor]:
        """[B, n] tokens ("" padded) -> tags [B, n] ("" on padding) and lengths [B]; each row is its own
        document unless one_document."""
        b, n = tf.unstack(tf.shape(tokens))
        # The CRF scans over time and needs one step, and the char features of an empty batch lose the time
        # axis: give the model at least one row and one column of padding, and cut them off again.
        padded = tf.pad(tokens, [[0, tf.maximum(1 - b, 0)], [0, tf.maximum(1 - n, 0)]], constant_values="")
        rows = tf.shape(padded)[0]
        doc = tf.zeros([rows], tf.int32) if one_document else tf.range(rows, dtype=tf.int32)
        ids = self.model.decode(self.features(padded, doc))[:b, :n]
        tags = tf.where(tokens == "", "", tf.gather(tf.constant(self.tag_names), ids))
        return {"tags": tags, "lengths": tf.reduce_sum(tf.cast(tokens != "", tf.int32), axis=1)}

    def _serve(self, text):
        tokens = text_lib.tokenize(text, self.text_cfg, joiner=False).to_tensor("")
        return {"tokens": tokens, **self._tag(tokens)}

    def _serve_document(self, text):
        tokens = text_lib.tokenize(text, self.text_cfg, joiner=False).to_tensor("")
        return {"tokens": tokens, **self._tag(tokens, one_document=True)}

    def signatures(self) -> dict:
        return {"serving_default": self.serve, "tag_tokens": self.tag_tokens, "tag_document": self.tag_document}


def ner_module(cfg: Config) -> NerServing:
    tagger = predict.load_tagger(cfg)
    for layer in tagger.model.recurrent_layers():
        layer.use_cudnn = False  # decided when traced: no CudnnRNN op, so the graph runs without a GPU
    return NerServing(tagger, cfg)
