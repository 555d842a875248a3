"""Stage `train-ner`: the tagger's training step and dev metric; the loop is core/trainer.fit.

<paths.models>/ner/ckpt/              tf.train checkpoint of the last epoch: model, optimizer, counters
<paths.models>/ner/ckpt/run.json      the settings the checkpoint belongs to
<paths.models>/ner/best.weights.h5    weights of the best dev-F1 epoch (what evaluate / predict load)
<paths.models>/ner/tagger.json        hyper-parameters, sizes and tags needed to rebuild the model
<paths.models>/ner/logs/              TensorBoard scalars and tagged dev sentences
<paths.reports>/ner/history.json      per epoch: loss, dev F1, seconds, words/s, padding share, elapsed time
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from pipeline.core import cluster, optim, trainer, vocab
from pipeline.core.averaging import WeightAverage, unaveraged
from pipeline.core.config import Config
from pipeline.core.optim import LazyAdam, build_optimizer, replicated_update
from pipeline.core.progress import Progress
from pipeline.core.vectors import load_matrix
from pipeline.ner import batches, corpus, distill, lexicon, metrics, predict
from pipeline.ner.config import Ner
from pipeline.ner.features import NerFeatures, feature_signature
from pipeline.ner.model import Tagger, build


def make_optimizer(hp: Ner) -> keras.optimizers.Optimizer:
    if hp.optimizer == "sgd":  # applies sparse gradients sparsely already
        return keras.optimizers.SGD(hp.learning_rate, momentum=0.9)
    if hp.optimizer == "lazy_adam":
        return LazyAdam(hp.learning_rate)
    return keras.optimizers.Adam(hp.learning_rate)


def make_train_step(
    model: Tagger,
    optimizer,
    hp: Ner,
    strategy: tf.distribute.Strategy | None = None,
    average: WeightAverage | None = None,
):
    """One traced step for every batch: unknown batch and time sizes in the signature, so no retracing.

    Returns (the mean loss per sentence and member, real words, positions) of the global batch, whatever the
    strategy. Build model and optimizer inside `strategy.scope()`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    signature = [feature_signature(hp.max_word_length), tf.TensorSpec([None, None], tf.int32, "tags")]
    if hp.teacher:  # the teacher's (marginals, transition counts) of the batch's sentences
        k = model.n_tags
        signature.append((tf.TensorSpec([None, None, k], tf.float32), tf.TensorSpec([None, k, k], tf.float32)))
    with strategy.scope():
        build_optimizer(optimizer, model)
    groups = model.variable_groups()
    variables = [v for group in groups for v in group]
    sizes = [len(group) for group in groups]  # clipped member by member: each trains as it would alone

    def replica_step(features, tags, teacher, n_sentences):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model.sentence_losses(features, tags, True, teacher)) / n_sentences
        replicated_update(optimizer, variables, tape.gradient(loss, variables), hp.clip_norm, sizes)
        return loss

    # No XLA: on CPU it compiles once per batch shape and still ran slower (273 vs 123 ms per batch).
    @tf.function(input_signature=signature, autograph=False)  # no tensor-dependent Python control flow
    def step(features, tags, *teacher):
        n_sentences = tf.cast(tf.shape(tags)[0], tf.float32)

        def replica(features, tags, teacher):
            if strategy.num_replicas_in_sync > 1:
                features, tags, teacher = _replica_documents(features, tags, teacher)
            return replica_step(features, tags, teacher, n_sentences)

        args = (features, tags, teacher[0] if teacher else None)
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=args), axis=None)
        if average is not None:
            average.update()
        real = tf.reduce_sum(tf.cast(features["words"] != 0, tf.int32))
        return loss / len(groups), real, tf.size(features["words"])

    return step


def _replica_documents(features: dict, tags: tf.Tensor, teacher=None) -> tuple[dict, tf.Tensor, tuple | None]:
    """Documents i, i + n, i + 2n ... of a global batch for replica i of n. The document memory reads only
    within a document, so each replica computes what one device would for its sentences; a batch of lone
    sentences (each its own document) splits into strided rows. Every worker and device sees the same global
    batch (same seed), so no input pipeline needs distributing."""
    ctx = tf.distribute.get_replica_context()
    rank = tf.unique(features["doc"])[1]  # documents numbered in order of appearance
    rows = tf.where(rank % ctx.num_replicas_in_sync == ctx.replica_id_in_sync_group)[:, 0]
    take = lambda x: tf.gather(x, rows)  # noqa: E731
    return {k: take(v) for k, v in features.items()}, take(tags), None if teacher is None else tuple(map(take, teacher))


def run_epoch(step, dataset, epoch: int, n_batches: int, cursor: trainer.Cursor) -> dict:
    """Epoch `epoch`'s batches from where the cursor stands to the end, or to the cursor's next evaluation."""
    progress = Progress(n_batches, f"epoch {epoch} batches", done=cursor.skip)
    sums = cursor.carry  # since the last evaluation, carried across a resumption
    for key in ("loss_sum", "batches", "words", "positions", "seconds"):
        sums.setdefault(key, 0)
    last = time.perf_counter()
    # (features, tags) or, distilling, (features, tags, teacher targets)
    for batch in cursor.batches(dataset.skip(cursor.skip), n_batches, skipped=True):
        loss, real, size = (x.numpy() for x in step(*batch))
        sums["loss_sum"] += float(loss)
        sums["batches"] += 1
        sums["words"] += int(real)
        sums["positions"] += int(size)
        sums["seconds"] += time.perf_counter() - last
        last = time.perf_counter()
        rate = sums["words"] / sums["seconds"]
        progress.update(loss=f"{sums['loss_sum'] / sums['batches']:.3f}", words_per_s=f"{rate:,.0f}")
    progress.close()
    seconds = max(sums["seconds"], 1e-9)
    return {
        "loss": sums["loss_sum"] / max(sums["batches"], 1),
        "train_seconds": seconds,
        "words_per_s": sums["words"] / seconds,
        "padding": 1 - sums["words"] / max(sums["positions"], 1),
    }


def dev_scores(tagger: predict.TrainedTagger, sentences, doc_ids: list[int]) -> dict:
    pred = predict.predict_tags(tagger, [w for w, _ in sentences], doc_ids)
    return metrics.entity_scores([y for _, y in sentences], pred)


def build_tagger(cfg: Config) -> tuple[Tagger, list[str], dict]:
    """The tagger with the pretrained embeddings, its tag set, and the metadata that rebuilds it (tagger.json)."""
    tags = vocab.load_named(cfg, "ner_tags")
    n_chars = len(vocab.load_named(cfg, "ner_chars"))
    matrix = load_matrix(cfg, "ner_words")
    hp = lexicon.tagger_hparams(cfg)
    model = build(hp, matrix, n_chars, tags, lexicon.for_tagger(cfg))
    meta = {"ner": dataclasses.asdict(hp), "n_words": matrix.shape[0], "word_dim": matrix.shape[1]}
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
        f"epoch {trainer.epoch_label(s)}  loss {s['loss']:8.3f}  dev F1 {100 * s['dev_f1']:6.2f}"
        f"{' *' if improved else '  '}"
        + unaveraged(s, "dev_f1", 100)
        + f"  {s['train_seconds']:6.1f}s  {s['words_per_s']:7,.0f} words/s  padding {100 * s['padding']:4.1f}%"
        f"  dev {s['dev_seconds']:4.1f}s  elapsed {s['elapsed'] / 60:5.1f} min"
    )


def epoch_batches(cfg: Config, documents, tags, features, seed: int, targets=None) -> tuple[tf.data.Dataset, int]:
    """One epoch's (features, tags) batches and their count: whole documents, for the document memory or a
    teacher's targets; else each sentence alone (as its own document), batched with sentences of similar length."""
    if not (cfg.ner.doc_memory or targets is not None):
        documents = [[s] for d in documents for s in d]
    return batches.ner_document_batches(cfg, documents, tags, features, seed, targets)


def teacher_targets(cfg: Config, train_docs, tags: list[str]):
    """The teacher's targets of the training documents (ner.teacher), summarised on screen; None without one."""
    hp = cfg.ner
    if not hp.teacher:
        return None
    targets = distill.teacher_targets(cfg, train_docs, tags)
    settings = f"temperature {hp.distill_temperature}, share of the target {hp.distill_weight}"
    print(f"  {distill.summary(train_docs, targets, tags)}; {settings}")
    return targets


def run(cfg: Config) -> None:
    """Stage `train-ner`: the tagger, early-stopped on dev entity F1 by the shared loop (core/trainer.py)."""
    hp = cfg.ner
    if (hp.lexicon or hp.gazetteer) and not lexicon.english(cfg):
        print(
            f"  ner.data.lang = {cfg.ner_data.lang!r}: the tagger is built without the English word statistics and "
            "name lists (ner.lexicon, ner.gazetteer)"
        )
    strategy = optim.make_strategy(hp.strategy)
    keras.utils.set_random_seed(hp.seed)
    train_docs, valid_docs = corpus.load_ner_documents(cfg, "train"), corpus.load_ner_documents(cfg, "valid")
    train, valid = [s for d in train_docs for s in d], [s for d in valid_docs for s in d]
    valid_doc_ids = predict.document_ids(valid_docs)
    with strategy.scope():  # variables (model, optimizer slots) are mirrored across replicas and workers
        model, tags, meta = build_tagger(cfg)
        optimizer = make_optimizer(hp)
        build_optimizer(optimizer, model)  # before the restore, so the checkpoint's slots have somewhere to go
        average = WeightAverage.of(model, hp.average_decay)
    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(
        f"  {len(train)} train / {len(valid)} valid sentences; {n_params:,} trainable parameters; embeddings "
        f"{meta['n_words']}x{meta['word_dim']} {'frozen' if hp.freeze_embeddings else 'fine-tuned'}"
    )
    features = NerFeatures(cfg)
    step = make_train_step(model, optimizer, hp, strategy, average)
    targets = teacher_targets(cfg, train_docs, tags)
    tagger = predict.TrainedTagger(model, features, tags, predict.make_decoder(model, features))

    def train_epoch(e: int, cursor: trainer.Cursor) -> dict:
        epoch, n_batches = epoch_batches(cfg, train_docs, tags, features, hp.seed + e, targets)
        return run_epoch(step, epoch, e, n_batches, cursor)

    def evaluate() -> tuple[dict, dict, str]:
        dev = dev_scores(tagger, valid, valid_doc_ids)
        tagged = predict.predict_tags(tagger, [w for w, _ in valid[:3]])
        samples = "\n\n".join(tagged_markdown(w, g, p) for (w, g), p in zip(valid[:3], tagged, strict=True))
        return {"dev_f1": dev["f1"]}, {"dev": dev}, samples

    task = trainer.Task(
        "ner",
        model,
        optimizer,
        "tagger.json",
        meta,
        train_epoch,
        evaluate,
        "dev_f1",
        ("loss", "dev_f1", "words_per_s", "padding", "lr"),
        format_epoch,
        lr_at=lambda e, _: hp.learning_rate / (1 + hp.lr_decay * (e - 1)),
        strategy=strategy,
        average=average,
    )
    schedule = trainer.Schedule.of(hp)
    best = trainer.fit(cfg, task, schedule)
    if cluster.is_chief(strategy):  # the others wrote no weights
        print(f"  best dev F1 {100 * best:.2f}; weights in {predict.ner_dir(cfg) / 'best.weights.h5'}")
