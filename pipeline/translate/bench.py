"""Training and decoding speed of the translator on real batches (for `make bench`)."""

import dataclasses
import itertools
import time

from pipeline.core.config import Config
from pipeline.core.optim import LazyAdam
from pipeline.core.trainer import timed_steps
from pipeline.core.vocab import PAD_ID
from pipeline.translate import batches, corpus, predict, train
from pipeline.translate.model import sequence_loss

DECODE_SENTENCES = 256


def bench_translate(cfg: Config) -> dict:
    import keras

    hp = cfg.translate
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    model, optimizer = train.build_translator(cfg)
    speeds = input_speeds(cfg, model, optimizer, examples)
    out = {
        "model": {k: getattr(hp, k) for k in ("encoder_units", "decoder_units", "attention", "batch_size")},
        "train_tokens_per_s": speeds["memory"],
        "train_tokens_per_s_files": speeds["files"],  # translate.input = "files", timed alternately with memory
        "files_over_memory": round(speeds["files"] / speeds["memory"], 3),
        "train_steps_timed": speeds["steps"],
    }
    sources = [s for s, _ in corpus.load_parallel(cfg, "valid")][:DECODE_SENTENCES]
    for name, width in (("greedy", 1), ("beam5", 5)):
        translator, trained = _translator(cfg, width, model)
        predict.translate_texts(translator, sources[:64], batch_size=64)  # trace
        start = time.perf_counter()
        predict.translate_texts(translator, sources, batch_size=64)
        out[f"{name}_sentences_per_s"] = round(len(sources) / (time.perf_counter() - start), 1)
    out["decoded_with"] = "trained model" if trained else "untrained model"
    keras.backend.clear_session()
    return out


def real_tokens(batch) -> int:
    """Source + target tokens of a (src, tgt_in, tgt_out) batch, padding not counted; tgt_out is y </s>."""
    return int((batch[0] != PAD_ID).sum() + (batch[2] != PAD_ID).sum())


def endless(epoch) -> itertools.chain:
    """Epochs `epoch(0)`, `epoch(1)`, ... one after another, so that any number of steps can be timed."""
    return itertools.chain.from_iterable(epoch(e) for e in itertools.count())


def train_speed(model, optimizer, hp, examples, warmup: int = 3, steps: int = 40) -> dict:
    """Real tokens/s of the training step on bucketed in-memory batches (timed_steps' dict)."""
    step = train.make_translate_step(model, optimizer, hp)
    epochs = endless(lambda e: batches.translation_batches(examples, hp.batch_size, hp.seed + e, hp.batch_tokens))
    return timed_steps(epochs, step, real_tokens, warmup, steps)


def input_speeds(cfg: Config, model, optimizer, examples, rounds: int = 2, steps: int = 40) -> dict:
    """Training tokens/s from each input (translate.input: memory, files), one step function, timed in alternate
    rounds so that a change in the host's load falls on both; the mean of the rounds."""
    hp, step = cfg.translate, train.make_translate_step(model, optimizer, cfg.translate)
    files = corpus.train_files(cfg)
    inputs = {
        "memory": lambda e: batches.translation_batches(examples, hp.batch_size, hp.seed + e, hp.batch_tokens),
        "files": lambda e: batches.file_batches(cfg, files, hp.batch_size, hp.seed + e).as_numpy_iterator(),
    }
    rates = {name: [] for name in inputs}
    for _ in range(rounds):
        for name, epoch in inputs.items():
            rates[name].append(timed_steps(endless(epoch), step, real_tokens, 3, steps)["units_per_s"])
    return {name: round(sum(r) / rounds, 1) for name, r in rates.items()} | {"steps": rounds * steps}


def profile_translate(cfg: Config, n_batches: int = 20) -> dict:
    """Milliseconds per batch of each part of the translator's train step, by subtraction of nested programs:

    input pipeline (numpy batching) | encoder fwd+bwd | + decoder recurrence fwd+bwd | + output softmax and
    loss | + optimizer update = the whole step. Each program is one tf.function over the same real batches.
    """
    import tensorflow as tf

    hp = cfg.translate
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    start = time.perf_counter()
    sample = list(
        itertools.islice(batches.translation_batches(examples, hp.batch_size, hp.seed, hp.batch_tokens), n_batches)
    )
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


def profile_beam_step(cfg: Config, batch: int = 64, width: int = 5, calls: int = 30) -> dict:
    """Milliseconds of each part of one beam-search step at batch x width rows, on real valid sentences and the
    trained model when there is one: the parts of `decode._beam_step` timed alone (each a tf.function over the
    same tensors, median of `calls`), then the whole step; also the flat top-k the two-stage one replaced."""
    import tensorflow as tf

    from pipeline.translate import decode

    translator, trained = _translator(cfg, width, None)
    model, k, hp = translator.model, width, translator.search_cfg
    sources = [s for s, _ in corpus.load_parallel(cfg, "valid")][:batch]
    src_ids = translator.source(tf.constant(sources))[0]
    memory, state = model.encode(src_ids, training=False)
    memory, state = tf.nest.map_structure(lambda x: tf.repeat(x, k, axis=0), (memory, state))
    rows = tf.shape(src_ids)[0] * k
    prev = tf.random.stateless_uniform([rows], (1, 2), 4, model.generator.bias.shape[0], tf.int32)
    emb = model.tgt_embed(prev)
    cell_state, feed = state
    x = tf.concat([emb, feed], axis=-1) if model.cfg.input_feeding else emb
    h, _ = model.decoder_cell(x, cell_state)
    context, _ = model.attention(h, memory.keys, memory.values, memory.mask)
    out = model.combine(tf.concat([context, h], axis=-1))
    logits = model.generate(out)
    max_len = tf.fill([rows], 1000)
    logp = decode._log_probs(logits, 0, max_len)
    alive = tf.random.stateless_normal([rows // k, k], (3, 4)) - 5.0
    origin = tf.random.stateless_uniform([rows // k, k], (5, 6), 0, k, tf.int32)
    flat = tf.reshape(alive[:, :, None] + tf.reshape(logp, [rows // k, k, -1]), [rows // k, -1])
    parts = {
        "decoder cell": lambda: model.decoder_cell(x, cell_state),
        "attention": lambda: model.attention(h, memory.keys, memory.values, memory.mask),
        "combine (context + cell output)": lambda: model.combine(tf.concat([context, h], axis=-1)),
        "output projection": lambda: model.generate(out),
        "log-softmax": lambda: decode._log_probs(logits, 0, max_len),
        "top-k (per beam, then per sentence)": lambda: decode._candidates(alive, logp, 2 * k),
        "top-k, flat (the search before)": lambda: tf.math.top_k(flat, 2 * k),
        "gather (reorder beam states)": lambda: decode._gather_beams(state, origin, rows // k, k),
    }
    ms = {name: _median_ms(tf.function(fn, autograph=False), calls) for name, fn in parts.items()}
    live = decode.initial_live(model, src_ids, k, hp.length_penalty, hp.max_length_a, hp.max_length_b)
    positions = tf.range(tf.shape(live.alive_seq)[-1])
    step = tf.function(
        lambda: decode._beam_step(model, tf.constant(0), live, hp.length_penalty, k, positions), autograph=False
    )
    ms = {name: round(v, 2) for name, v in ms.items()}
    return {"rows": int(rows), "trained": trained, "ms": ms, "step_ms": round(_median_ms(step, calls), 2)}


def _median_ms(fn, calls: int) -> float:
    fn()  # trace
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()  # on the CPU a call returns once its outputs are computed
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def _translator(cfg: Config, width: int, untrained):
    """(translator searching with this beam width, whether it is the trained one): the trained translator when
    there is one, else `untrained` (a model, or None to build one)."""
    hp = dataclasses.replace(cfg.translate, beam_width=width)
    if (predict.translate_dir(cfg) / "translator.json").is_file():
        return predict.load_translator(cfg, hp), True
    model = untrained if untrained is not None else train.build_translator(cfg)[0]
    return predict.Translator(model, cfg, hp), False
