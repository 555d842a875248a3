"""Stage `train-ner`: train the tagger with early stopping on dev entity F1; resumable.

    <paths.models>/ner/ckpt/              tf.train checkpoint of the last epoch: model, optimizer, counters
    <paths.models>/ner/ckpt/run.json      fingerprint of the settings the checkpoint belongs to
    <paths.models>/ner/best.weights.h5    weights of the best dev-F1 epoch (what evaluate / predict load)
    <paths.models>/ner/tagger.json        hyper-parameters, sizes and tags needed to rebuild the model
    <paths.models>/ner/logs/              TensorBoard scalars
    <paths.reports>/ner/history.json      per epoch: loss, dev F1, seconds, words/s, padding share

Re-running after an interruption resumes from the last finished epoch. A change of any setting except
ner.epochs and ner.patience starts over, since the old checkpoint belongs to another model or data.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from pipeline import data, datasets, embeddings, metrics, predict, vocab
from pipeline.config import Config, Ner
from pipeline.files import write_json
from pipeline.models.tagger import Tagger, dummy_inputs
from pipeline.progress import Progress

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "patience")


# tf.summary.scalar needs the tensorboard package; this writes the same event records with core TF alone.
_SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def scalar_summary(name: str, value: float) -> None:
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR.SerializeToString())


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


def make_train_step(model: Tagger, optimizer, hp: Ner):
    """One traced step for every batch: unknown batch and time sizes in the signature, so no retracing."""
    signature = [datasets.feature_signature(hp.max_word_length), tf.TensorSpec([None, None], tf.int32, "tags")]

    # No XLA: on CPU it compiles once per batch shape and still ran slower (273 vs 123 ms per batch).
    @tf.function(input_signature=signature, autograph=False)  # no tensor-dependent Python control flow
    def step(features, tags):
        with tf.GradientTape() as tape:
            loss = model.sequence_loss(features, tags, training=True)
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        if hp.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, hp.clip_norm)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, tf.reduce_sum(tf.cast(features["words"] != 0, tf.int32)), tf.size(features["words"])

    return step


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


def dev_scores(tagger: predict.TrainedTagger, sentences) -> dict:
    pred = predict.predict_tags(tagger, [w for w, _ in sentences])
    return metrics.entity_scores([y for _, y in sentences], pred)


def run_fingerprint(cfg: Config) -> str:
    sections = {s: cfg.section_dict(s) for s in ("paths", "prepare", "text", "vocab", "embed", "ner")}
    for key in RESUMABLE_CHANGES:
        del sections["ner"][key]
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def open_checkpoints(cfg: Config, ckpt: tf.train.Checkpoint, where: Path) -> tf.train.CheckpointManager:
    """Restore the last epoch's checkpoint if it belongs to these settings; otherwise start afresh."""
    stamp, fingerprint = where / "run.json", run_fingerprint(cfg)
    if where.exists() and (not stamp.is_file() or json.loads(stamp.read_text())["fingerprint"] != fingerprint):
        print(f"  settings changed: discarding the checkpoint in {where} and the best weights beside it")
        shutil.rmtree(where)
        for name in ("best.weights.h5", "tagger.json"):
            (where.parent / name).unlink(missing_ok=True)
    manager = tf.train.CheckpointManager(ckpt, str(where), max_to_keep=1)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(f"  resuming after epoch {int(ckpt.epoch.numpy())} from {manager.latest_checkpoint}")
    write_json(stamp, {"fingerprint": fingerprint})
    return manager


def save_best(model: Tagger, cfg: Config, meta: dict) -> None:
    out = predict.ner_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".best.tmp.weights.h5"  # Keras insists on the .weights.h5 suffix
    try:
        model.save_weights(tmp)
        tmp.replace(out / "best.weights.h5")
    finally:
        tmp.unlink(missing_ok=True)
    write_json(out / "tagger.json", meta)


def build_tagger(cfg: Config) -> tuple[Tagger, list[str], dict]:
    """The tagger with the pretrained embeddings, its tag set, and the metadata that rebuilds it (tagger.json)."""
    tags = vocab.load_named(cfg, "ner_tags")
    n_chars = len(vocab.load_named(cfg, "ner_chars"))
    matrix = embeddings.load_matrix(cfg, "ner_words")
    model = Tagger(cfg.ner, matrix, n_chars, len(tags))
    model(dummy_inputs(cfg.ner.max_word_length))
    meta = {"ner": cfg.section_dict("ner"), "n_words": matrix.shape[0], "word_dim": matrix.shape[1]}
    return model, tags, meta | {"n_chars": n_chars, "tags": tags}


def format_epoch(s: dict, improved: bool) -> str:
    return (
        f"epoch {s['epoch']:3d}  loss {s['loss']:8.3f}  dev F1 {100 * s['dev_f1']:6.2f}{' *' if improved else '  '}"
        f"  {s['train_seconds']:6.1f}s  {s['words_per_s']:7,.0f} words/s  padding {100 * s['padding']:4.1f}%"
        f"  dev {s['dev_seconds']:4.1f}s"
    )


def run_ner(cfg: Config) -> None:
    hp = cfg.ner
    keras.utils.set_random_seed(hp.seed)
    out, history_path = predict.ner_dir(cfg), Path(cfg.paths.reports) / "ner/history.json"
    train, valid = data.load_ner(cfg, "train"), data.load_ner(cfg, "valid")
    model, tags, meta = build_tagger(cfg)
    optimizer = make_optimizer(hp)
    optimizer.build(model.trainable_variables)
    epoch, best_f1, bad_epochs = tf.Variable(0), tf.Variable(-1.0), tf.Variable(0)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, best_f1=best_f1, bad_epochs=bad_epochs)
    manager = open_checkpoints(cfg, ckpt, out / "ckpt")
    # The history may hold an epoch the checkpoint does not (interrupted between the two writes).
    resumed = manager.latest_checkpoint and history_path.is_file()
    history = json.loads(history_path.read_text())[: int(epoch.numpy())] if resumed else []

    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(
        f"  {len(train)} train / {len(valid)} valid sentences; {n_params:,} trainable parameters; embeddings "
        f"{meta['n_words']}x{meta['word_dim']} {'frozen' if hp.freeze_embeddings else 'fine-tuned'}"
    )
    features = datasets.NerFeatures(cfg)
    examples, n_batches = datasets.ner_examples(cfg, train, tags), datasets.count_batches(cfg, train)
    step = make_train_step(model, optimizer, hp)
    tagger = predict.TrainedTagger(model, features, tags, predict.make_decoder(model, features))
    writer = tf.summary.create_file_writer(str(out / "logs"))
    while int(epoch.numpy()) < hp.epochs and int(bad_epochs.numpy()) < hp.patience:
        e = int(epoch.numpy()) + 1
        optimizer.learning_rate = hp.learning_rate / (1 + hp.lr_decay * (e - 1))
        batches = datasets.ner_train_batches(cfg, examples, features, seed=hp.seed + e)
        stats = train_epoch(step, batches, e, n_batches)
        start = time.perf_counter()
        dev = dev_scores(tagger, valid)
        stats |= {
            "epoch": e,
            "dev_f1": dev["f1"],
            "dev_seconds": time.perf_counter() - start,
            "lr": float(optimizer.learning_rate.numpy()),
        }
        improved = dev["f1"] > float(best_f1.numpy())
        if improved:  # weights first: a checkpoint must never claim a best epoch whose weights were not saved
            save_best(model, cfg, meta | {"epoch": e, "dev": dev})
        best_f1.assign(max(dev["f1"], float(best_f1.numpy())))
        bad_epochs.assign(0 if improved else int(bad_epochs.numpy()) + 1)
        history.append(stats)
        write_json(history_path, history)
        with writer.as_default(step=e):
            for key in ("loss", "dev_f1", "words_per_s", "padding", "lr"):
                scalar_summary(key, stats[key])
        epoch.assign(e)
        manager.save()
        print(format_epoch(stats, improved), flush=True)
    writer.close()
    print(f"  best dev F1 {100 * float(best_f1.numpy()):.2f}; weights in {out / 'best.weights.h5'}")
