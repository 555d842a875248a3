"""Stage `train-translate`: the translator's training step and dev metric; the loop is core/trainer.fit.

<paths.models>/translate/ckpt/              last epoch: model, optimizer, counters (resumable)
<paths.models>/translate/best.weights.h5    weights of the best dev-BLEU epoch
<paths.models>/translate/translator.json    settings and matrix shapes that rebuild the model
<paths.models>/translate/logs/              TensorBoard scalars and sample translations
<paths.reports>/translate/history.json      per epoch: loss, dev BLEU, tokens/s, padding, lr, elapsed time
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from pipeline.core import optim, trainer, vocab
from pipeline.core.config import Config
from pipeline.core.optim import LazyAdam, build_optimizer, replicated_update
from pipeline.core.progress import Progress
from pipeline.core.vectors import load_matrix
from pipeline.translate import batches, corpus, metrics, predict, subword
from pipeline.translate import model as seq2seq
from pipeline.translate.config import Translate


def build_translator(cfg: Config):
    """The translator and its optimizer: LazyAdam (sparse source-embedding updates; the tied target side is
    dense), wrapped for dynamic loss scaling under mixed precision, which the train step applies itself."""
    hp = cfg.translate
    matrices = [load_matrix(cfg, name) for name in ("src", "tgt")]
    keras.utils.set_random_seed(hp.seed)
    with optim.precision(hp.mixed_precision):
        model = seq2seq.build(hp, *matrices)
    optimizer = LazyAdam(hp.learning_rate)
    if hp.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return model, optimizer


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
                batch = [optim.replica_share(x) for x in batch]
            return replica_step(*batch, n_tokens)

        total = strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(src, tgt_in, tgt_out)), axis=None
        )
        return total / n_tokens, n_tokens

    return step


def epoch_batches(cfg: Config, examples, epoch: int, cursor: trainer.Cursor) -> tuple:
    """Epoch `epoch`'s numpy batches from the cursor's position, and about how many the epoch has: in memory
    (`examples`, a list of pairs) or read from files (`examples`, [files, pairs in them])."""
    hp = cfg.translate
    if hp.input == "memory":
        n_batches = -(-len(examples) // hp.batch_size)
        epoch_order = batches.translation_batches(examples, hp.batch_size, hp.seed + epoch)
        return cursor.batches(epoch_order, n_batches), n_batches
    files, pairs = examples
    dataset = batches.file_batches(cfg, files, hp.batch_size, hp.seed + epoch).skip(cursor.skip)
    n_batches = -(-pairs // hp.batch_size)  # an estimate: a few partial batches more, one a bucket, end the epoch
    return cursor.batches(dataset.as_numpy_iterator(), n_batches, skipped=True), n_batches


def run_epoch(step, cfg: Config, examples, epoch: int, cursor: trainer.Cursor) -> dict:
    """Epoch `epoch`'s batches from where the cursor stands to the end, or to the cursor's next evaluation."""
    walk, n_batches = epoch_batches(cfg, examples, epoch, cursor)
    progress = Progress(n_batches, f"epoch {epoch} batches", done=cursor.skip)
    sums = cursor.carry  # since the last evaluation, carried across a resumption
    for key in ("loss_sum", "targets", "tokens", "positions", "seconds"):
        sums.setdefault(key, 0)
    last = time.perf_counter()
    for src, tgt_in, tgt_out in walk:
        loss, count = step(src, tgt_in, tgt_out)
        count = int(count.numpy())
        sums["loss_sum"] += float(loss.numpy()) * count
        sums["targets"] += count
        sums["tokens"] += int((src != 0).sum()) + count  # source + target tokens, padding not counted
        sums["positions"] += src.size + tgt_out.size
        sums["seconds"] += time.perf_counter() - last  # batching included, as a user waits for it
        last = time.perf_counter()
        rate = sums["tokens"] / sums["seconds"]
        progress.update(loss=f"{sums['loss_sum'] / sums['targets']:.3f}", tokens_per_s=f"{rate:,.0f}")
    progress.close()
    seconds = max(sums["seconds"], 1e-9)
    return {
        "loss": sums["loss_sum"] / max(sums["targets"], 1),  # per target token, label smoothing included
        "train_seconds": seconds,
        "tokens_per_s": sums["tokens"] / seconds,
        "padding": 1 - sums["tokens"] / max(sums["positions"], 1),
    }


def training_input(cfg: Config):
    """input = memory: the tokenized training pairs; files: the processed training files and their pair count."""
    if cfg.translate.input == "memory":
        return batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    return corpus.train_files(cfg), corpus.count_pairs(cfg, "train")


def format_translate_epoch(s: dict, improved: bool) -> str:
    return (
        f"epoch {trainer.epoch_label(s)}  loss {s['loss']:6.3f}  dev BLEU {s['dev_bleu']:5.2f}"
        f"{' *' if improved else '  '}"
        f"  lr {s['lr']:.2e}  {s['train_seconds']:6.1f}s  {s['tokens_per_s']:6,.0f} tokens/s"
        f"  padding {100 * s['padding']:4.1f}%  dev {s['dev_seconds']:4.1f}s  elapsed {s['elapsed'] / 60:5.1f} min"
    )


def run(cfg: Config) -> None:
    """Stage `train-translate`: the translator, early-stopped on dev BLEU by the shared loop (core/trainer.py);
    the learning rate is multiplied by lr_decay after lr_patience epochs without a better dev BLEU (JoeyNMT)."""
    hp = cfg.translate
    strategy = optim.make_strategy(hp.strategy)
    keras.utils.set_random_seed(hp.seed)
    examples = training_input(cfg)
    valid = corpus.load_parallel(cfg, "valid")
    with strategy.scope():  # variables (model, optimizer slots) are mirrored across replicas and workers
        model, optimizer = build_translator(cfg)
        build_optimizer(optimizer, model)  # before the restore, so the checkpoint's slots have somewhere to go
    meta = {
        "translate": cfg.section_dict("translate"),
        "src_shape": list(model.src_embed.embeddings.shape),
        "tgt_shape": list(model.tgt_embed.embeddings.shape),
        "subword": subword.fingerprint(cfg),
    }
    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    n_train = len(examples) if hp.input == "memory" else f"{examples[1]} (read from files)"
    print(
        f"  {n_train} train / {len(valid)} valid pairs; {n_params:,} trainable parameters; vocabularies "
        f"{meta['src_shape'][0]} / {meta['tgt_shape'][0]}"
    )
    step = make_translate_step(model, optimizer, hp, strategy)
    translator = predict.Translator(model, cfg, dataclasses.replace(hp, beam_width=hp.dev_beam_width))
    sources, references = [s for s, _ in valid], [t for _, t in valid]

    def evaluate() -> tuple[dict, dict, str]:
        hyps = predict.translate_texts(translator, sources, batch_size=hp.batch_size)
        dev = metrics.bleu_scores(hyps, references, cfg.translate_data.target_lang)
        samples = [f"{s}  \n→ {h}  \n(ref: {r})" for s, h, r in zip(sources[:3], hyps, references, strict=False)]
        return {"dev_bleu": dev["bleu"], "dev_chrf": dev["chrf"]}, {"dev_bleu": dev["bleu"]}, "\n\n".join(samples)

    task = trainer.Task(
        "translate",
        model,
        optimizer,
        "translator.json",
        meta,
        lambda e, cursor: run_epoch(step, cfg, examples, e, cursor),
        evaluate,
        "dev_bleu",
        ("loss", "dev_bleu", "dev_chrf", "tokens_per_s", "padding", "lr"),
        format_translate_epoch,
    )
    schedule = trainer.Schedule.of(hp, plateau_patience=hp.lr_patience, plateau_decay=hp.lr_decay)
    best = trainer.fit(cfg, task, schedule)
    print(f"  best dev BLEU {best:.2f}; weights in {predict.translate_dir(cfg) / 'best.weights.h5'}")
