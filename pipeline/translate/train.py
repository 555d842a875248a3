"""Stage `train-translate`: the translator's training step and dev metric; the loop is core/trainer.fit.

<paths.models>/translate/ckpt/              last epoch: model, optimizer, counters (resumable)
<paths.models>/translate/best.weights.h5    weights of the best dev-BLEU epoch
<paths.models>/translate/translator.json    settings and matrix shapes that rebuild the model
<paths.models>/translate/logs/              TensorBoard scalars and sample translations
<paths.reports>/translate/history.json      per epoch: loss, dev BLEU, tokens/s, padding, lr, elapsed time
"""

import dataclasses
import hashlib
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.core import cluster, optim, trainer, vocab
from pipeline.core.averaging import WeightAverage, unaveraged
from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.optim import LazyAdam, build_optimizer, replicated_update
from pipeline.core.progress import Progress
from pipeline.core.vectors import load_matrix
from pipeline.translate import batches, corpus, metrics, predict, subword
from pipeline.translate import model as seq2seq
from pipeline.translate.config import Translate


def build_translator(cfg: Config, matrices: list | None = None):
    """The translator and its optimizer: LazyAdam (sparse source-embedding updates; the tied target side is
    dense), wrapped for dynamic loss scaling under float16, which the train step applies itself. `matrices`:
    the (source, target) embedding matrices to start from; default the embed stage's."""
    hp = cfg.translate
    matrices = matrices or [load_matrix(cfg, name) for name in ("src", "tgt")]
    keras.utils.set_random_seed(hp.seed)
    with optim.precision(hp.mixed_precision):
        model = seq2seq.build(hp, *matrices)
    return model, new_optimizer(hp)


def new_optimizer(hp: Translate):
    """LazyAdam, wrapped for dynamic loss scaling under float16 (bfloat16 has float32's exponent range)."""
    optimizer = LazyAdam(hp.learning_rate)
    return keras.optimizers.LossScaleOptimizer(optimizer) if hp.mixed_precision == "float16" else optimizer


def make_translate_step(
    model, optimizer, hp: Translate, strategy: tf.distribute.Strategy | None = None, spec=None, average=None
):
    """One traced step for every batch shape: [None, None] int32 inputs, so bucketing never retraces.

    Every replica takes its rows of one global batch, or with `spec` (a distributed dataset's element_spec) its
    own batch (sharded_batches). Returns (mean loss per real target token, [real target tokens, real tokens of
    both sides, padded positions]) of the global batch, whatever the strategy.
    """
    strategy = strategy or tf.distribute.get_strategy()
    spec = spec or [tf.TensorSpec([None, None], tf.int32)] * 3
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

    def replica(src, tgt_in, tgt_out):
        ctx = tf.distribute.get_replica_context()
        if ctx.num_replicas_in_sync > 1 and isinstance(spec[0], tf.TensorSpec):
            src, tgt_in, tgt_out = (optim.replica_share(x) for x in (src, tgt_in, tgt_out))
        targets = tf.reduce_sum(tf.cast(tgt_out != vocab.PAD_ID, tf.float32))
        real = targets + tf.reduce_sum(tf.cast(src != vocab.PAD_ID, tf.float32))
        counts = tf.stack([targets, real, tf.cast(tf.size(src) + tf.size(tgt_out), tf.float32)])
        if ctx.num_replicas_in_sync > 1:
            counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM, counts)  # the global batch's
        return replica_step(src, tgt_in, tgt_out, counts[0]), counts

    # No XLA: on these CPUs it ran the step 2.4x slower (it compiles per shape and the loop is sequential).
    @tf.function(input_signature=list(spec), autograph=False)
    def step(src, tgt_in, tgt_out):
        total, counts = strategy.run(replica, args=(src, tgt_in, tgt_out))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None)
        counts = strategy.experimental_local_results(counts)[0]  # the same on every replica
        if average is not None:
            average.update()
        return total / counts[0], counts

    return step


def sharded_batches(cfg: Config, strategy: tf.distribute.Strategy, examples, epoch: int, skip: int):
    """Epoch `epoch` of translate.input = "files" on several replicas: each worker reads its own shards (worker i
    of n: shards i, i + n, ...) in batches of its share of translate.batch_size, and every worker takes the same
    number of steps, ceil(pairs of the smallest share / its batch), cycling through its shards if it runs short.
    Returns (the distributed dataset from step `skip` on, steps in the epoch, this worker's shards)."""
    files, counts = examples
    hp = cfg.translate
    holder = {}

    def worker_batches(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        n = ctx.num_input_pipelines
        if len(files) < n:
            raise InputError(
                f"{corpus.directory(cfg)}: {len(files)} training shard(s) for {n} workers: each worker reads its own",
                hint=f"set prepare.shard_pairs to at most {sum(counts) // n} and run `make prepare` again",
            )
        if hp.batch_size % ctx.num_replicas_in_sync:
            raise InputError(
                f"translate.batch_size = {hp.batch_size} does not split evenly over {ctx.num_replicas_in_sync} replicas"
            )
        per_pipeline, local = hp.batch_size // n, ctx.num_replicas_in_sync // n  # pairs, replicas of a step
        holder["steps"] = min(-(-sum(counts[i::n]) // per_pipeline) for i in range(n))
        holder["mine"] = files[ctx.input_pipeline_id :: n]
        each = batches.file_batches(cfg, holder["mine"], ctx.get_per_replica_batch_size(hp.batch_size), hp.seed + epoch)
        return each.repeat().take(holder["steps"] * local).skip(skip * local)

    dataset = strategy.distribute_datasets_from_function(worker_batches)
    return dataset, holder["steps"], holder["mine"]


def epoch_batches(cfg: Config, examples, epoch: int, cursor: trainer.Cursor, strategy=None) -> tuple:
    """Epoch `epoch`'s batches from the cursor's position, and about how many the epoch has: in memory (`examples`,
    a list of pairs) or read from files (`examples`, [files, pairs in each]); on several replicas the files are
    shared out (sharded_batches)."""
    hp = cfg.translate
    if hp.input == "memory":
        plan = batches.batch_plan(examples, hp.batch_size, hp.seed + epoch, hp.batch_tokens)
        return cursor.batches(batches.padded_batches(examples, plan), len(plan)), len(plan)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        dataset, n_batches, _ = sharded_batches(cfg, strategy, examples, epoch, cursor.skip)
        return cursor.batches(dataset, n_batches, skipped=True), n_batches
    files, counts = examples
    dataset = batches.file_batches(cfg, files, hp.batch_size, hp.seed + epoch).skip(cursor.skip)
    n_batches = -(-sum(counts) // hp.batch_size)  # fewer where pairs with an empty side are dropped, more if capped
    return cursor.batches(dataset.as_numpy_iterator(), n_batches, skipped=True), n_batches


def run_epoch(step, cfg: Config, examples, epoch: int, cursor: trainer.Cursor, strategy=None) -> dict:
    """Epoch `epoch`'s batches from where the cursor stands to the end, or to the cursor's next evaluation."""
    walk, n_batches = epoch_batches(cfg, examples, epoch, cursor, strategy)
    progress = Progress(n_batches, f"epoch {epoch} batches", done=cursor.skip)
    sums = cursor.carry  # since the last evaluation, carried across a resumption
    for key in ("loss_sum", "targets", "tokens", "positions", "seconds"):
        sums.setdefault(key, 0)
    last = time.perf_counter()
    for batch in walk:
        loss, counts = step(*batch)
        targets, tokens, positions = (int(c) for c in counts.numpy())
        sums["loss_sum"] += float(loss.numpy()) * targets
        sums["targets"] += targets
        sums["tokens"] += tokens  # source + target tokens of every worker, padding not counted
        sums["positions"] += positions
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
    """input = memory: the tokenized training pairs; files: the processed training files and the pairs in each."""
    if cfg.translate.input == "memory":
        return batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    return corpus.train_files(cfg), corpus.shard_pairs(cfg, "train")


def data_digest(cfg: Config) -> str:
    """sha256 of the training shards (the manifest's hashes) and both vocabularies: what workers must share."""
    h = hashlib.sha256()
    for entry in corpus.read_manifest(cfg)["splits"]["train"]["shards"]:
        h.update(entry["sha256"].encode())
    for side in subword.SIDES:
        h.update(vocab.vocab_path(cfg, side).read_bytes())
    return h.hexdigest()


def format_translate_epoch(s: dict, improved: bool) -> str:
    return (
        f"epoch {trainer.epoch_label(s)}  loss {s['loss']:6.3f}  dev BLEU {s['dev_bleu']:5.2f}"
        f"{' *' if improved else '  '}"
        + unaveraged(s, "dev_bleu")
        + f"  lr {s['lr']:.2e}  {s['train_seconds']:6.1f}s  {s['tokens_per_s']:6,.0f} tokens/s"
        f"  padding {100 * s['padding']:4.1f}%  dev {s['dev_seconds']:4.1f}s  elapsed {s['elapsed'] / 60:5.1f} min"
    )


def run(cfg: Config) -> None:
    """Stage `train-translate`: the translator, early-stopped on dev BLEU by the shared loop (core/trainer.py);
    the learning rate is multiplied by lr_decay after lr_patience epochs without a better dev BLEU (JoeyNMT)."""
    hp = cfg.translate
    strategy = optim.make_strategy(hp.strategy)
    keras.utils.set_random_seed(hp.seed)
    examples = training_input(cfg)
    if hp.input == "files" and cluster.several_workers(strategy):  # before the first collective of the build
        cluster.agree(strategy, "the training shards or vocabularies", data_digest(cfg))
    valid = corpus.load_parallel(cfg, "valid")
    with strategy.scope():  # variables (model, optimizer slots) are mirrored across replicas and workers
        model, optimizer = build_translator(cfg)
        build_optimizer(optimizer, model)  # before the restore, so the checkpoint's slots have somewhere to go
        average = WeightAverage.of(model, hp.average_decay)
    meta = {
        "translate": cfg.section_dict("translate"),
        "src_shape": list(model.src_embed.embeddings.shape),
        "tgt_shape": list(model.tgt_embed.embeddings.shape),
        "subword": subword.fingerprint(cfg),
    }
    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    n_train = len(examples) if hp.input == "memory" else f"{sum(examples[1])} (read from files)"
    print(
        f"  {n_train} train / {len(valid)} valid pairs; {n_params:,} trainable parameters; vocabularies "
        f"{meta['src_shape'][0]} / {meta['tgt_shape'][0]}"
    )
    spec = None
    if hp.input == "files" and strategy.num_replicas_in_sync > 1:  # each replica reads its own batches
        dataset, steps, mine = sharded_batches(cfg, strategy, examples, 1, 0)
        spec, (index, workers) = dataset.element_spec, cluster.worker_index(strategy)
        names = ", ".join(Path(f).name for f in mine)
        print(f"  worker {index} of {workers} reads {len(mine)} of {len(examples[0])} shards ({names}), {steps} steps")
    step = make_translate_step(model, optimizer, hp, strategy, spec, average)
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
        lambda e, cursor: run_epoch(step, cfg, examples, e, cursor, strategy),
        evaluate,
        "dev_bleu",
        ("loss", "dev_bleu", "dev_chrf", "tokens_per_s", "padding", "lr"),
        format_translate_epoch,
        strategy=strategy,
        average=average,
    )
    schedule = trainer.Schedule.of(hp, plateau_patience=hp.lr_patience, plateau_decay=hp.lr_decay)
    best = trainer.fit(cfg, task, schedule)
    if cluster.is_chief(strategy):  # the others wrote no weights
        print(f"  best dev BLEU {best:.2f}; weights in {predict.translate_dir(cfg) / 'best.weights.h5'}")
