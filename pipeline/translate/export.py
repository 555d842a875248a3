"""The translator as a TF Serving module: text in, translation (and an n-best list) out."""

import tensorflow as tf

from pipeline.core.config import Config
from pipeline.core.serving import _function, backend_variables
from pipeline.translate import decode as decode_lib
from pipeline.translate import predict


class TranslateServing(tf.Module):
    """The translator (predict.py, as `pipeline translate` runs it) plus an n-best beam search."""

    def __init__(self, translator: predict.Translator):
        super().__init__(name="translate")
        self.translator = translator
        self.weights = backend_variables(translator.model)  # restored by TF Serving's C++ loader too (core/serving.py)
        self.serve = _function(self._serve, tf.TensorSpec([None], tf.string))
        self.nbest = _function(self._nbest, tf.TensorSpec([None], tf.string))

    def _serve(self, text):
        return self.translator(text)

    def _nbest(self, text):
        t, s = self.translator, self.translator.search_cfg
        src_ids, src_tokens, empty = t.source(text)
        k = s.beam_width
        hyps = decode_lib.beam_search(t.model, src_ids, k, s.length_penalty, s.max_length_a, s.max_length_b)
        batch, steps = tf.shape(hyps.ids)[0], tf.shape(hyps.ids)[2]
        # Detokenize all B * K hypotheses as one batch, each beside its own source tokens (for <unk> replacement).
        flat = t.target_text(
            tf.reshape(hyps.ids, [batch * k, steps]),
            tf.reshape(hyps.attention, [batch * k, steps]),
            tf.repeat(src_tokens, k, axis=0),
        )
        out = tf.reshape(flat, [batch, k])
        unfinished = tf.math.is_inf(hyps.scores)
        return {
            "translation": tf.where(empty[:, None] | unfinished, "", out),
            "score": tf.where(empty[:, None], 0.0, hyps.scores),
        }

    def signatures(self) -> dict:
        return {"serving_default": self.serve, "translate_nbest": self.nbest}


def translate_module(cfg: Config) -> TranslateServing:
    translator = predict.load_translator(cfg, use_cudnn=False)
    # predict.py's own tf.function would be saved as a third traced copy of the beam search, outside any signature.
    del translator.translate
    return TranslateServing(translator)
