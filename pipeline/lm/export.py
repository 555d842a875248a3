"""The language model as a TF Serving module: prompt in, sampled continuation out, the sampling loop in the graph.

generate / serving_default   prompt [B] string, temperature [B] float32, length [B] int32, seed [B] int64
                             -> text [B] string: `length` characters (at most lm.max_generate) after the prompt
"""

import tensorflow as tf

from pipeline.core.config import Config
from pipeline.core.serving import backend_variables
from pipeline.lm import generate


class LmServing(tf.Module):
    def __init__(self, sampler: generate.Sampler):
        super().__init__(name="lm")
        self.sampler = sampler
        self.weights = backend_variables(sampler.model)  # restored by TF Serving's C++ loader too (core/serving.py)
        self.generate = tf.function(sampler.generate, input_signature=generate.SIGNATURE, autograph=False)

    def signatures(self) -> dict:
        return {"serving_default": self.generate, "generate": self.generate}


def lm_module(cfg: Config) -> LmServing:
    return LmServing(generate.sampler(cfg))


def serving_inputs(texts: list[str]) -> dict:
    """Feeds of the warm-up requests and recorded calls: each text as a prompt, a few temperatures and lengths."""
    n = len(texts)
    return {
        "serving_default": {
            "prompt": list(texts),
            "temperature": [(0.0, 0.5, 0.8, 1.0)[i % 4] for i in range(n)],
            "length": [(40, 0, 80, 120)[i % 4] for i in range(n)],
            "seed": [i + 1 for i in range(n)],
        }
    }
