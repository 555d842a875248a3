"""Training and decoding speed of the translator on real batches (for `make bench`)."""

import dataclasses
import itertools
import time

from pipeline.core.config import Config
from pipeline.core.optim import LazyAdam
from pipeline.core.trainer import timed_steps
from pipeline.translate import batches, corpus, predict, train
from pipeline.translate.model import sequence_loss

DECODE_SENTENCES = 256


def bench_translate(cfg: Config) -> dict:
    import keras

    hp = cfg.translate
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    model, optimizer = train.build_translator(cfg)
    step = train.make_translate_step(model, optimizer, hp)
    epoch = batches.translation_batches(examples, hp.batch_size, seed=hp.seed)
    speed = timed_steps(epoch, step, lambda b: int((b[0] != 0).sum() + (b[2] != 0).sum()))
    out = {
        "model": {k: getattr(hp, k) for k in ("encoder_units", "decoder_units", "attention", "batch_size")},
        "train_tokens_per_s": speed["units_per_s"],
        "train_steps_timed": speed["steps"],
    }
    trained = (predict.translate_dir(cfg) / "translator.json").is_file()
    sources = [s for s, _ in corpus.load_parallel(cfg, "valid")][:DECODE_SENTENCES]
    for name, width in (("greedy", 1), ("beam5", 5)):
        search = dataclasses.replace(hp, beam_width=width)
        translator = predict.load_translator(cfg, search) if trained else predict.Translator(model, cfg, search)
        predict.translate_texts(translator, sources[:64], batch_size=64)  # trace
        start = time.perf_counter()
        predict.translate_texts(translator, sources, batch_size=64)
        out[f"{name}_sentences_per_s"] = round(len(sources) / (time.perf_counter() - start), 1)
    out["decoded_with"] = "trained model" if trained else "untrained model"
    keras.backend.clear_session()
    return out


def profile_translate(cfg: Config, n_batches: int = 20) -> dict:
    """Milliseconds per batch of each part of the translator's train step, by subtraction of nested programs:

    input pipeline (numpy batching) | encoder fwd+bwd | + decoder recurrence fwd+bwd | + output softmax and
    loss | + optimizer update = the whole step. Each program is one tf.function over the same real batches.
    """
    import tensorflow as tf

    hp = cfg.translate
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    start = time.perf_counter()
    sample = list(itertools.islice(batches.translation_batches(examples, hp.batch_size, seed=hp.seed), n_batches))
    n_batches = len(sample)
    input_ms = 1000 * (time.perf_counter() - start) / n_batches
    model = train.build_translator(cfg)[0]
    spec = [tf.TensorSpec([None, None], tf.int32)] * 3

    def grads_of(loss_fn):
        @tf.function(input_signature=spec, autograph=False)
        def run(src, tgt_in, tgt_out):
            with tf.GradientTape() as tape:
                loss = loss_fn(src, tgt_in, tgt_out)
            # Every gradient is an output, so none of the backward pass is pruned from the graph.
            return [g for g in tape.gradient(loss, model.trainable_variables) if g is not None]

        return run

    def encoder(src, tgt_in, tgt_out):
        memory, _ = model.encode(src, training=True)
        return tf.reduce_sum(memory.values)

    def recurrence(src, tgt_in, tgt_out):
        return tf.reduce_sum(model.features((src, tgt_in), training=True))

    def softmax_loss(src, tgt_in, tgt_out):
        logits, labels = model.target_logits((src, tgt_in), tgt_out, training=True)
        total, count = sequence_loss(logits, labels, hp.label_smoothing)
        return total / count

    programs = {
        "encoder": grads_of(encoder),
        "+ decoder recurrence": grads_of(recurrence),
        "+ output softmax and loss": grads_of(softmax_loss),
        "+ optimizer update (whole step)": train.make_translate_step(model, LazyAdam(hp.learning_rate), hp),
    }
    cumulative = {}
    for name, fn in programs.items():
        fn(*sample[0])  # trace
        start = time.perf_counter()
        for b in sample:
            fn(*b)  # on the CPU a call returns once its outputs are computed
        cumulative[name] = 1000 * (time.perf_counter() - start) / n_batches
    parts, before = {"input pipeline (numpy batching)": round(input_ms, 2)}, 0.0
    for name, ms in cumulative.items():
        parts[name] = round(ms - before, 1)
        before = ms
    return {"ms_per_batch": parts, "step_ms": round(before, 1)}
