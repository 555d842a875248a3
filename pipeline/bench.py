"""`make bench`: training and decoding speed of both models at the configured sizes, on real batches.

    <paths.reports>/bench.json    {"machine": ..., "translate": {...}, "ner": {...}, "peak_rss_mb": ...}

Training speed runs the very train steps of `pipeline/train.py` on length-bucketed batches of the real
training data (after warm-up steps that trace the step), counting real tokens only, never padding:
source + target tokens for the translator, words for the tagger. Decoding runs greedy and beam search
at batch 64 on the first valid sentences with the trained translator (an untrained one where there is none
yet: it emits longer output, so its numbers are pessimistic). Weights are not saved.
"""

import dataclasses
import itertools
import os
import platform
import resource
import time
from pathlib import Path

from pipeline import data, datasets, predict, train
from pipeline.config import Config
from pipeline.files import write_json

WARMUP, STEPS = 3, 40
DECODE_SENTENCES = 256


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
    }


def _timed(batches, step, count) -> dict:
    """Run WARMUP untimed steps, then STEPS timed ones: {"steps", "seconds", "units_per_s"}."""
    batches = iter(batches)
    for b in itertools.islice(batches, WARMUP):
        step(*b)
    units, start, n = 0, time.perf_counter(), 0
    for b in itertools.islice(batches, STEPS):
        out = step(*b)
        float(out[0].numpy())  # wait for the step to finish
        units, n = units + count(b), n + 1
    seconds = time.perf_counter() - start
    return {"steps": n, "seconds": round(seconds, 2), "units_per_s": round(units / seconds, 1)}


def bench_translate(cfg: Config) -> dict:
    import keras

    hp = cfg.translate
    examples = datasets.translation_examples(cfg, data.load_parallel(cfg, "train"))
    model, optimizer = train.build_translator(cfg)
    step = train.make_translate_step(model, optimizer, hp)
    batches = datasets.translation_batches(examples, hp.batch_size, seed=hp.seed)
    speed = _timed(batches, step, lambda b: int((b[0] != 0).sum() + (b[2] != 0).sum()))
    out = {
        "model": {k: getattr(hp, k) for k in ("encoder_units", "decoder_units", "attention", "batch_size")},
        "train_tokens_per_s": speed["units_per_s"],
        "train_steps_timed": speed["steps"],
    }
    trained = (predict.translate_dir(cfg) / "translator.json").is_file()
    sources = [s for s, _ in data.load_parallel(cfg, "valid")][:DECODE_SENTENCES]
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

    from pipeline.models import seq2seq

    hp = cfg.translate
    examples = datasets.translation_examples(cfg, data.load_parallel(cfg, "train"))
    start = time.perf_counter()
    batches = list(itertools.islice(datasets.translation_batches(examples, hp.batch_size, seed=hp.seed), n_batches))
    n_batches = len(batches)
    input_ms = 1000 * (time.perf_counter() - start) / n_batches
    model = seq2seq.build(cfg)
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
        total, count = seq2seq.sequence_loss(logits, labels, hp.label_smoothing)
        return total / count

    programs = {
        "encoder": grads_of(encoder),
        "+ decoder recurrence": grads_of(recurrence),
        "+ output softmax and loss": grads_of(softmax_loss),
        "+ optimizer update (whole step)": train.make_translate_step(model, train.LazyAdam(hp.learning_rate), hp),
    }
    cumulative = {}
    for name, fn in programs.items():
        fn(*batches[0])  # trace
        start = time.perf_counter()
        for b in batches:
            fn(*b)  # on the CPU a call returns once its outputs are computed
        cumulative[name] = 1000 * (time.perf_counter() - start) / n_batches
    parts, before = {"input pipeline (numpy batching)": round(input_ms, 2)}, 0.0
    for name, ms in cumulative.items():
        parts[name] = round(ms - before, 1)
        before = ms
    return {"ms_per_batch": parts, "step_ms": round(before, 1)}


def bench_ner(cfg: Config) -> dict:
    hp = cfg.ner
    documents = data.load_ner_documents(cfg, "train")
    model, tags, _ = train.build_tagger(cfg)
    step = train.make_train_step(model, train.make_optimizer(hp), hp)
    features = datasets.NerFeatures(cfg)
    examples = datasets.ner_examples(cfg, [s for d in documents for s in d], tags)
    batches, _ = train.epoch_batches(cfg, documents, examples, tags, features, seed=hp.seed)
    speed = _timed(batches, step, lambda b: int((b[0]["words"].numpy() != 0).sum()))
    return {
        "model": {
            k: getattr(hp, k)
            for k in ("units", "char_encoder", "output", "batch_size", "ensemble", "doc_memory", "lexicon", "gazetteer")
        },
        "train_words_per_s": speed["units_per_s"],
        # An ensemble's step trains every member on each word: this is the speed of one tagger's training.
        "train_member_words_per_s": speed["units_per_s"] * hp.ensemble,
        "train_steps_timed": speed["steps"],
    }


def run(cfg: Config) -> None:
    results = {"machine": machine(), "translate": bench_translate(cfg), "ner": bench_ner(cfg)}
    results["translate_profile"] = profile_translate(cfg)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write_json(Path(cfg.paths.reports) / "bench.json", results)
    t, n, m = results["translate"], results["ner"], results["machine"]
    print(f"  machine: {m['cpu']}, {m['cores']} cores, GPUs {m['gpus'] or 'none'}")
    rows = [
        ("translator training", f"{t['train_tokens_per_s']:,.0f} tokens/s (source + target)", "2,300"),
        (
            "NER training",
            f"{n['train_words_per_s']:,.0f} words/s"
            + (f" ({n['train_member_words_per_s']:,.0f} per tagger)" if cfg.ner.ensemble > 1 else ""),
            "5,000 per tagger",
        ),
        ("greedy decoding, batch 64", f"{t['greedy_sentences_per_s']:,.1f} sentences/s", "-"),
        ("beam-5 decoding, batch 64", f"{t['beam5_sentences_per_s']:,.1f} sentences/s", "30"),
        ("peak memory", f"{results['peak_rss_mb']:,.0f} MB resident", "-"),
    ]
    print(f"  {'measure':<28}{'result':<40}target (2 CPU cores)")
    for name, value, target in rows:
        print(f"  {name:<28}{value:<40}{target}")
    prof = results["translate_profile"]
    print(f"  translator train step, {prof['step_ms']:.0f} ms per batch of {cfg.translate.batch_size}:")
    for name, ms in prof["ms_per_batch"].items():
        print(f"    {name:<36}{ms:8.1f} ms  {100 * ms / prof['step_ms']:5.1f}%")
