"""Stages `train-ner` and `train-translate` (run_ner, run_translate): early stopping on dev entity F1 / dev
BLEU, resumable. The tagger's files are below; the translator's are listed above run_translate.

    <paths.models>/ner/ckpt/              tf.train checkpoint of the last epoch: model, optimizer, counters
    <paths.models>/ner/ckpt/run.json      the settings the checkpoint belongs to
    <paths.models>/ner/best.weights.h5    weights of the best dev-F1 epoch (what evaluate / predict load)
    <paths.models>/ner/tagger.json        hyper-parameters, sizes and tags needed to rebuild the model
    <paths.models>/ner/logs/              TensorBoard scalars
    <paths.reports>/ner/history.json      per epoch: loss, dev F1, seconds, words/s, padding share, elapsed time

Re-running after an interruption resumes from the last finished epoch. A change of any setting except
ner.epochs, ner.patience and ner.max_minutes starts over, since the old checkpoint belongs to another model
or data.
"""

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from pipeline import data, datasets, embeddings, lexicon, metrics, predict, vocab
from pipeline.config import Config, Ner, Translate
from pipeline.files import write_json
from pipeline.models import seq2seq
from pipeline.models.tagger import Tagger, dummy_inputs
from pipeline.progress import Progress

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "patience", "max_minutes", "strategy")


# tf.summary.scalar needs the tensorboard package; this writes the same event records with core TF alone.
_SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


_TEXT = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))


def scalar_summary(name: str, value: float) -> None:
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR.SerializeToString())


def text_summary(name: str, value: str) -> None:
    """A Markdown text entry (TensorBoard's Text tab), e.g. sample predictions."""
    tf.summary.write(name, tf.constant(value), metadata=_TEXT.SerializeToString())


class LazyAdam(keras.optimizers.Adam):
    """Adam that updates only the rows a batch used when a gradient is sparse (an embedding lookup's).

    Fine-tuning the 28k x 300 word embedding with dense Adam updates all 8.5M weights and both moment
    estimates every step. As tensorflow-addons' LazyAdam, rows that a batch did not use keep their moments
    and weights; every other variable gets plain Adam. On CoNLL-2003 it trained 1.25x faster per epoch on
    CPU; after 3 epochs it trailed Adam by 0.6 dev F1, but the full default run with it reached the best dev F1.
    """

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        rows, where = tf.unique(gradient.indices)  # a word used twice in a batch sends two slices
        grad = tf.math.unsorted_segment_sum(gradient.values, where, tf.shape(rows)[0])
        step = tf.cast(self.iterations + 1, variable.dtype)
        alpha = tf.cast(learning_rate, variable.dtype) * tf.sqrt(1 - self.beta_2**step) / (1 - self.beta_1**step)
        # The tf.Variables themselves: gathering from them reads only the rows, not a copy of the whole matrix.
        m = self._momentums[self._get_variable_index(variable)].value
        v = self._velocities[self._get_variable_index(variable)].value
        m_rows = self.beta_1 * tf.gather(m, rows) + (1 - self.beta_1) * grad
        v_rows = self.beta_2 * tf.gather(v, rows) + (1 - self.beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def make_optimizer(hp: Ner) -> keras.optimizers.Optimizer:
    if hp.optimizer == "sgd":  # applies sparse gradients sparsely already
        return keras.optimizers.SGD(hp.learning_rate, momentum=0.9)
    if hp.optimizer == "lazy_adam":
        return LazyAdam(hp.learning_rate)
    return keras.optimizers.Adam(hp.learning_rate)


def build_optimizer(optimizer, model) -> None:
    """Create the optimizer's slots before tracing: slots created inside the first call make tf.function trace twice."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables)


def make_train_step(model: Tagger, optimizer, hp: Ner, strategy: tf.distribute.Strategy | None = None):
    """One traced step for every batch: unknown batch and time sizes in the signature, so no retracing.

    Returns (the mean loss per sentence and member, real words, positions) of the global batch, whatever the
    strategy. Build model and optimizer inside `strategy.scope()`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    signature = [datasets.feature_signature(hp.max_word_length), tf.TensorSpec([None, None], tf.int32, "tags")]
    with strategy.scope():
        build_optimizer(optimizer, model)
    groups = model.variable_groups()
    variables = [v for group in groups for v in group]
    sizes = [len(group) for group in groups]  # clipped member by member: each trains as it would alone

    def replica_step(features, tags, n_sentences):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model.sentence_losses(features, tags, training=True)) / n_sentences
        replicated_update(optimizer, variables, tape.gradient(loss, variables), hp.clip_norm, sizes)
        return loss

    # No XLA: on CPU it compiles once per batch shape and still ran slower (273 vs 123 ms per batch).
    @tf.function(input_signature=signature, autograph=False)  # no tensor-dependent Python control flow
    def step(features, tags):
        n_sentences = tf.cast(tf.shape(tags)[0], tf.float32)

        def replica(features, tags):
            if strategy.num_replicas_in_sync > 1:
                features, tags = _replica_documents(features, tags)
            return replica_step(features, tags, n_sentences)

        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(features, tags)), axis=None)
        real = tf.reduce_sum(tf.cast(features["words"] != 0, tf.int32))
        return loss / len(groups), real, tf.size(features["words"])

    return step


def _replica_documents(features: dict, tags: tf.Tensor) -> tuple[dict, tf.Tensor]:
    """Documents i, i + n, i + 2n ... of a global batch for replica i of n. The document memory reads only
    within a document, so each replica computes what one device would for its sentences; a batch of lone
    sentences (each its own document) splits into strided rows. Every worker and device sees the same global
    batch (same seed), so no input pipeline needs distributing."""
    ctx = tf.distribute.get_replica_context()
    rank = tf.unique(features["doc"])[1]  # documents numbered in order of appearance
    rows = tf.where(rank % ctx.num_replicas_in_sync == ctx.replica_id_in_sync_group)[:, 0]
    return {k: tf.gather(v, rows) for k, v in features.items()}, tf.gather(tags, rows)


def out_of_time(elapsed_s: float, epochs_done: int, max_minutes: float) -> bool:
    """Whether the next epoch, taking as long as the mean one so far, would end past `max_minutes` (0: never):
    a budget is a promise about the whole run, so training stops before it, not one epoch after."""
    if max_minutes <= 0 or epochs_done == 0:
        return False
    return elapsed_s * (epochs_done + 1) / epochs_done > 60 * max_minutes


def train_epoch(step, dataset, epoch: int, n_batches: int) -> dict:
    progress = Progress(n_batches, f"epoch {epoch} batches")
    start, losses, words, positions = time.perf_counter(), [], 0, 0
    for features, tags in dataset:
        loss, real, size = (x.numpy() for x in step(features, tags))
        losses.append(float(loss))
        words, positions = words + int(real), positions + int(size)
        rate = words / (time.perf_counter() - start)
        progress.update(loss=f"{sum(losses) / len(losses):.3f}", words_per_s=f"{rate:,.0f}")
    progress.close()
    seconds = time.perf_counter() - start
    return {
        "loss": sum(losses) / max(len(losses), 1),
        "train_seconds": seconds,
        "words_per_s": words / seconds,
        "padding": 1 - words / max(positions, 1),
    }


def dev_scores(tagger: predict.TrainedTagger, sentences, doc_ids: list[int]) -> dict:
    pred = predict.predict_tags(tagger, [w for w, _ in sentences], doc_ids)
    return metrics.entity_scores([y for _, y in sentences], pred)


def run_settings(cfg: Config, section: str) -> dict:
    """Every setting a model's training reads (flattened `section.key`), except those that may change on resume."""
    out = {}
    for s in ("paths", "prepare", "text", "vocab", "embed", section):
        for key, value in cfg.section_dict(s).items():
            if not (s == section and key in RESUMABLE_CHANGES):
                out[f"{s}.{key}"] = value
    return out


def settings_diff(old: dict, new: dict) -> list[str]:
    """`key: checkpoint X, config Y` for every setting that differs."""
    return [
        f"{k}: checkpoint {old.get(k, '(unset)')!r}, config {new.get(k, '(unset)')!r}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def open_checkpoints(
    ckpt: tf.train.Checkpoint, where: Path, settings: dict, artifacts: tuple[str, ...]
) -> tf.train.CheckpointManager:
    """Restore the last epoch's checkpoint if it belongs to these settings; otherwise start afresh.

    A checkpoint of other settings is never loaded: the run names each setting that differs (the checkpoint's
    value and the config's), then deletes it with `artifacts` (beside `where`, e.g. the best weights).
    """
    stamp = where / "run.json"
    if where.exists():
        old = json.loads(stamp.read_text()).get("settings") if stamp.is_file() else None
        if old != settings:
            diff = settings_diff(old, settings) if old is not None else ["(no record of the checkpoint's settings)"]
            print(f"  settings changed: discarding the checkpoint in {where} and the best weights beside it:")
            for line in diff[:10]:
                print(f"    {line}")
            shutil.rmtree(where)
            for name in artifacts:
                (where.parent / name).unlink(missing_ok=True)
    manager = tf.train.CheckpointManager(ckpt, str(where), max_to_keep=1)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(f"  resuming after epoch {int(ckpt.epoch.numpy())} from {manager.latest_checkpoint}")
    write_json(stamp, {"settings": settings})
    return manager


def save_best(model: keras.Model, out: Path, meta_name: str, meta: dict) -> None:
    """The best epoch's weights (atomically) and, after them, the metadata that rebuilds the model."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".best.tmp.weights.h5"  # Keras insists on the .weights.h5 suffix
    try:
        model.save_weights(tmp)
        tmp.replace(out / "best.weights.h5")
    finally:
        tmp.unlink(missing_ok=True)
    write_json(out / meta_name, meta)


def load_history(manager: tf.train.CheckpointManager, path: Path, epoch: int) -> list[dict]:
    # The history may hold an epoch the checkpoint does not (interrupted between the two writes).
    resumed = manager.latest_checkpoint and path.is_file()
    return json.loads(path.read_text())[:epoch] if resumed else []


def finish_epoch(e: int, stats: dict, scalars: tuple[str, ...], samples: str, run: dict) -> None:
    """Record epoch `e`: history file, TensorBoard scalars and sample text, then the checkpoint, in that order
    (a resumed run trims the history to the checkpoint's epoch, so the history may run ahead, never behind).

    `run` holds the loop's history list and its path, the summary writer, the epoch counter and the manager.
    """
    run["history"].append(stats)
    write_json(run["history_path"], run["history"])
    with run["writer"].as_default(step=e):
        for key in scalars:
            scalar_summary(key, stats[key])
        text_summary("dev_samples", samples)
    run["epoch"].assign(e)
    run["manager"].save()


def build_tagger(cfg: Config) -> tuple[Tagger, list[str], dict]:
    """The tagger with the pretrained embeddings, its tag set, and the metadata that rebuilds it (tagger.json)."""
    tags = vocab.load_named(cfg, "ner_tags")
    n_chars = len(vocab.load_named(cfg, "ner_chars"))
    matrix = embeddings.load_matrix(cfg, "ner_words")
    model = Tagger(cfg.ner, matrix, n_chars, len(tags), lexicon.for_tagger(cfg), tags)
    model(dummy_inputs(cfg.ner.max_word_length))
    meta = {"ner": cfg.section_dict("ner"), "n_words": matrix.shape[0], "word_dim": matrix.shape[1]}
    return model, tags, meta | {"n_chars": n_chars, "tags": tags}


def tagged_markdown(words: list[str], gold: list[str], pred: list[str]) -> str:
    """A tagged sentence for TensorBoard's text tab: word/TAG for entity words, errors in bold with the gold tag."""
    out = []
    for w, g, p in zip(words, gold, pred, strict=True):
        if g != p:
            out.append(f"**{w}/{p}** (gold {g})")
        elif p != "O":
            out.append(f"{w}/{p}")
        else:
            out.append(w)
    return " ".join(out)


def format_epoch(s: dict, improved: bool) -> str:
    return (
        f"epoch {s['epoch']:3d}  loss {s['loss']:8.3f}  dev F1 {100 * s['dev_f1']:6.2f}{' *' if improved else '  '}"
        f"  {s['train_seconds']:6.1f}s  {s['words_per_s']:7,.0f} words/s  padding {100 * s['padding']:4.1f}%"
        f"  dev {s['dev_seconds']:4.1f}s  elapsed {s['elapsed'] / 60:5.1f} min"
    )


def epoch_batches(cfg: Config, documents, examples, tags, features, seed: int) -> tuple[tf.data.Dataset, int]:
    """One epoch's (features, tags) batches and their count: whole documents for the document memory,
    else sentences bucketed by length (examples: datasets.ner_examples of the same sentences)."""
    if cfg.ner.doc_memory:
        return datasets.ner_document_batches(cfg, documents, tags, features, seed)
    sentences = [s for d in documents for s in d]
    return datasets.ner_train_batches(cfg, examples, features, seed), datasets.count_batches(cfg, sentences)


def run_ner(cfg: Config) -> None:
    hp = cfg.ner
    strategy = make_strategy(hp.strategy)
    keras.utils.set_random_seed(hp.seed)
    out, history_path = predict.ner_dir(cfg), Path(cfg.paths.reports) / "ner/history.json"
    train_docs, valid_docs = data.load_ner_documents(cfg, "train"), data.load_ner_documents(cfg, "valid")
    train, valid = [s for d in train_docs for s in d], [s for d in valid_docs for s in d]
    valid_doc_ids = predict.document_ids(valid_docs)
    with strategy.scope():  # variables (model, optimizer slots) are mirrored across replicas and workers
        model, tags, meta = build_tagger(cfg)
        optimizer = make_optimizer(hp)
        build_optimizer(optimizer, model)  # before the restore, so the checkpoint's slots have somewhere to go
    epoch, best_f1, bad_epochs = tf.Variable(0), tf.Variable(-1.0), tf.Variable(0)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, best_f1=best_f1, bad_epochs=bad_epochs)
    manager = open_checkpoints(ckpt, out / "ckpt", run_settings(cfg, "ner"), ("best.weights.h5", "tagger.json"))
    history = load_history(manager, history_path, int(epoch.numpy()))
    elapsed = history[-1].get("elapsed", 0.0) if history else 0.0  # wall seconds of the finished epochs

    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(
        f"  {len(train)} train / {len(valid)} valid sentences; {n_params:,} trainable parameters; embeddings "
        f"{meta['n_words']}x{meta['word_dim']} {'frozen' if hp.freeze_embeddings else 'fine-tuned'}"
    )
    features = datasets.NerFeatures(cfg)
    examples = datasets.ner_examples(cfg, train, tags)
    step = make_train_step(model, optimizer, hp, strategy)
    tagger = predict.TrainedTagger(model, features, tags, predict.make_decoder(model, features))
    writer = tf.summary.create_file_writer(str(out / "logs"))
    run = {"history": history, "history_path": history_path, "writer": writer, "epoch": epoch, "manager": manager}

    def finished() -> bool:
        e = int(epoch.numpy())
        return e >= hp.epochs or int(bad_epochs.numpy()) >= hp.patience or out_of_time(elapsed, e, hp.max_minutes)

    while not finished():
        e = int(epoch.numpy()) + 1
        started = time.perf_counter()
        optimizer.learning_rate = hp.learning_rate / (1 + hp.lr_decay * (e - 1))
        batches, n_batches = epoch_batches(cfg, train_docs, examples, tags, features, seed=hp.seed + e)
        stats = train_epoch(step, batches, e, n_batches)
        start = time.perf_counter()
        dev = dev_scores(tagger, valid, valid_doc_ids)
        stats |= {
            "epoch": e,
            "dev_f1": dev["f1"],
            "dev_seconds": time.perf_counter() - start,
            "lr": float(optimizer.learning_rate.numpy()),
        }
        improved = dev["f1"] > float(best_f1.numpy())
        if improved:  # weights first: a checkpoint must never claim a best epoch whose weights were not saved
            save_best(model, out, "tagger.json", meta | {"epoch": e, "dev": dev})
        best_f1.assign(max(dev["f1"], float(best_f1.numpy())))
        bad_epochs.assign(0 if improved else int(bad_epochs.numpy()) + 1)
        tagged = predict.predict_tags(tagger, [w for w, _ in valid[:3]])
        samples = "\n\n".join(tagged_markdown(w, g, p) for (w, g), p in zip(valid[:3], tagged, strict=True))
        elapsed += time.perf_counter() - started
        stats["elapsed"] = elapsed
        finish_epoch(e, stats, ("loss", "dev_f1", "words_per_s", "padding", "lr"), samples, run)
        print(format_epoch(stats, improved), flush=True)
    writer.close()
    print(f"  best dev F1 {100 * float(best_f1.numpy()):.2f}; weights in {out / 'best.weights.h5'}")


# ------------------------------------------------------------------------------------------ translation
#
#   <paths.models>/translate/ckpt/              last epoch: model, optimizer, counters (resumable)
#   <paths.models>/translate/best.weights.h5    weights of the best dev-BLEU epoch
#   <paths.models>/translate/translator.json    settings and matrix shapes that rebuild the model
#   <paths.models>/translate/logs/              TensorBoard scalars and sample translations
#   <paths.reports>/translate/history.json      per epoch: loss, dev BLEU, tokens/s, padding, lr, elapsed time


@contextlib.contextmanager
def precision(mixed: bool):
    """Layers built inside compute in float16 with float32 weights when `mixed` (Keras' global dtype policy)."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def build_translator(cfg: Config):
    """The translator and its optimizer: LazyAdam (sparse source-embedding updates; the tied target side is
    dense), wrapped for dynamic loss scaling under mixed precision, which the train step applies itself."""
    hp = cfg.translate
    with precision(hp.mixed_precision):
        model = seq2seq.build(cfg)
    optimizer = LazyAdam(hp.learning_rate)
    if hp.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return model, optimizer


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The configured tf.distribute strategy. Create it first: MultiWorkerMirroredStrategy must exist before
    any other TF op runs, and model and optimizer must be built inside its scope."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # every local GPU (or the CPU when there is none)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # the cluster described by $TF_CONFIG
    return tf.distribute.get_strategy()


def _replica_share(x: tf.Tensor) -> tf.Tensor:
    """Rows i, i + n, i + 2n ... of a global batch for replica i of n: every worker and device sees the same
    global batch (same seed), so no input pipeline needs distributing; strided rows keep lengths mixed."""
    ctx = tf.distribute.get_replica_context()
    return x[ctx.replica_id_in_sync_group :: ctx.num_replicas_in_sync]


def replicated_update(optimizer, variables, grads, clip_norm: float, groups: list[int] | None = None) -> None:
    """Apply the global gradient, clipped by its global norm, on every replica.

    The replicas' gradients are summed first (each replica's loss is already divided by the global token or
    sentence count), so clipping sees the norm of the whole batch's gradient, as on one device. `groups`: the
    sizes of consecutive runs of `variables` clipped each by their own norm (default: one run). Keras'
    apply_gradients sums the replicas' gradients once more, hence the division by the replica count.
    """
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync
    if n > 1:
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if clip_norm > 0:
        # Under loss scaling the gradients are still scaled (the optimizer unscales them): clip at the scaled
        # norm. A non-finite gradient stays non-finite, so the loss-scale optimizer skips the step.
        scale = optimizer.dynamic_scale if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else 1.0
        clipped, start = [], 0
        for size in groups or [len(grads)]:
            clipped += tf.clip_by_global_norm(grads[start : start + size], clip_norm * scale)[0]
            start += size
        grads = clipped
    if n > 1:
        grads = [
            tf.IndexedSlices(g.values / n, g.indices, g.dense_shape) if isinstance(g, tf.IndexedSlices) else g / n
            for g in grads
        ]
    optimizer.apply_gradients(zip(grads, variables, strict=True))


def make_translate_step(model, optimizer, hp: Translate, strategy: tf.distribute.Strategy | None = None):
    """One traced step for every batch shape: [None, None] int32 inputs, so bucketing never retraces.

    Returns (mean loss per real target token, real target tokens) of the global batch, whatever the strategy.
    """
    strategy = strategy or tf.distribute.get_strategy()
    spec = tf.TensorSpec([None, None], tf.int32)
    with strategy.scope():
        build_optimizer(optimizer, model)

    def replica_step(src, tgt_in, tgt_out, n_tokens):
        with tf.GradientTape() as tape:
            logits, labels = model.target_logits((src, tgt_in), tgt_out, training=True)
            total, _ = seq2seq.sequence_loss(logits, labels, hp.label_smoothing)
            loss = total / n_tokens  # this replica's share of the global per-token mean
            scaled = optimizer.scale_loss(loss)  # x the dynamic loss scale under mixed precision, else unchanged
        variables = model.trainable_variables
        replicated_update(optimizer, variables, tape.gradient(scaled, variables), hp.clip_norm)
        return total

    # No XLA: on these CPUs it ran the step 2.4x slower (it compiles per shape and the loop is sequential).
    @tf.function(input_signature=[spec, spec, spec], autograph=False)
    def step(src, tgt_in, tgt_out):
        n_tokens = tf.reduce_sum(tf.cast(tgt_out != vocab.PAD_ID, tf.float32))

        def replica(*batch):
            if strategy.num_replicas_in_sync > 1:
                batch = [_replica_share(x) for x in batch]
            return replica_step(*batch, n_tokens)

        total = strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(src, tgt_in, tgt_out)), axis=None
        )
        return total / n_tokens, n_tokens

    return step


def translate_epoch(step, examples, hp: Translate, epoch: int) -> dict:
    n_batches = -(-len(examples) // hp.batch_size)
    progress = Progress(n_batches, f"epoch {epoch} batches")
    start, loss_sum, targets, tokens, positions = time.perf_counter(), 0.0, 0, 0, 0
    for src, tgt_in, tgt_out in datasets.translation_batches(examples, hp.batch_size, seed=hp.seed + epoch):
        loss, count = step(src, tgt_in, tgt_out)
        count = int(count.numpy())
        loss_sum, targets = loss_sum + float(loss.numpy()) * count, targets + count
        real = int((src != 0).sum()) + count  # source + target tokens, padding not counted
        tokens, positions = tokens + real, positions + src.size + tgt_out.size
        rate = tokens / (time.perf_counter() - start)
        progress.update(loss=f"{loss_sum / targets:.3f}", tokens_per_s=f"{rate:,.0f}")
    progress.close()
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum / max(targets, 1),  # per target token, label smoothing included
        "train_seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "padding": 1 - tokens / max(positions, 1),
    }


def format_translate_epoch(s: dict, improved: bool) -> str:
    return (
        f"epoch {s['epoch']:3d}  loss {s['loss']:6.3f}  dev BLEU {s['dev_bleu']:5.2f}{' *' if improved else '  '}"
        f"  lr {s['lr']:.2e}  {s['train_seconds']:6.1f}s  {s['tokens_per_s']:6,.0f} tokens/s"
        f"  padding {100 * s['padding']:4.1f}%  dev {s['dev_seconds']:4.1f}s  elapsed {s['elapsed'] / 60:5.1f} min"
    )


def run_translate(cfg: Config) -> None:
    hp = cfg.translate
    strategy = make_strategy(hp.strategy)
    keras.utils.set_random_seed(hp.seed)
    out, history_path = predict.translate_dir(cfg), Path(cfg.paths.reports) / "translate/history.json"
    examples = datasets.translation_examples(cfg, data.load_parallel(cfg, "train"))
    valid = data.load_parallel(cfg, "valid")
    with strategy.scope():  # variables (model, optimizer slots) are mirrored across replicas and workers
        model, optimizer = build_translator(cfg)
        build_optimizer(optimizer, model)  # before the restore, so the checkpoint's slots have somewhere to go
    meta = {
        "translate": cfg.section_dict("translate"),
        "src_shape": list(model.src_embed.embeddings.shape),
        "tgt_shape": list(model.tgt_embed.embeddings.shape),
    }
    epoch, best, bad, lr_bad = tf.Variable(0), tf.Variable(-1.0), tf.Variable(0), tf.Variable(0)
    elapsed, lr = tf.Variable(0.0, dtype=tf.float64), tf.Variable(hp.learning_rate, dtype=tf.float64)
    ckpt = tf.train.Checkpoint(
        model=model, optimizer=optimizer, epoch=epoch, best=best, bad=bad, lr_bad=lr_bad, elapsed=elapsed, lr=lr
    )
    settings = run_settings(cfg, "translate")
    manager = open_checkpoints(ckpt, out / "ckpt", settings, ("best.weights.h5", "translator.json"))
    history = load_history(manager, history_path, int(epoch.numpy()))

    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(
        f"  {len(examples)} train / {len(valid)} valid pairs; {n_params:,} trainable parameters; vocabularies "
        f"{meta['src_shape'][0]} / {meta['tgt_shape'][0]}"
    )
    step = make_translate_step(model, optimizer, hp, strategy)
    dev_search = dataclasses.replace(hp, beam_width=hp.dev_beam_width)
    translator = predict.Translator(model, cfg, dev_search)
    sources, references = [s for s, _ in valid], [t for _, t in valid]
    writer = tf.summary.create_file_writer(str(out / "logs"))
    run = {"history": history, "history_path": history_path, "writer": writer, "epoch": epoch, "manager": manager}

    def finished() -> bool:
        e = int(epoch.numpy())
        return e >= hp.epochs or int(bad.numpy()) >= hp.patience or out_of_time(elapsed.numpy(), e, hp.max_minutes)

    while not finished():
        e = int(epoch.numpy()) + 1
        started = time.perf_counter()
        optimizer.learning_rate = float(lr.numpy())
        stats = translate_epoch(step, examples, hp, e)
        t0 = time.perf_counter()
        hyps = predict.translate_texts(translator, sources, batch_size=hp.batch_size)
        dev = metrics.bleu_scores(hyps, references)
        improved = dev["bleu"] > float(best.numpy())
        if improved:  # weights first: a checkpoint must never claim a best epoch whose weights were not saved
            save_best(model, out, "translator.json", meta | {"epoch": e, "dev_bleu": dev["bleu"]})
        best.assign(max(dev["bleu"], float(best.numpy())))
        bad.assign(0 if improved else int(bad.numpy()) + 1)
        lr_bad.assign(0 if improved else int(lr_bad.numpy()) + 1)
        stats |= {"epoch": e, "dev_bleu": dev["bleu"], "dev_chrf": dev["chrf"], "lr": float(lr.numpy())}
        if int(lr_bad.numpy()) > hp.lr_patience:  # a dev plateau: smaller steps (JoeyNMT's plateau schedule)
            lr.assign(float(lr.numpy()) * hp.lr_decay)
            lr_bad.assign(0)
        elapsed.assign_add(time.perf_counter() - started)
        stats |= {"dev_seconds": time.perf_counter() - t0, "elapsed": float(elapsed.numpy())}
        samples = [f"{s}  \n→ {h}  \n(ref: {r})" for s, h, r in zip(sources[:3], hyps, references, strict=False)]
        scalars = ("loss", "dev_bleu", "dev_chrf", "tokens_per_s", "padding", "lr")
        finish_epoch(e, stats, scalars, "\n\n".join(samples), run)
        print(format_translate_epoch(stats, improved), flush=True)
    writer.close()
    print(f"  best dev BLEU {float(best.numpy()):.2f}; weights in {out / 'best.weights.h5'}")
