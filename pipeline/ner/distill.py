"""A trained tagger as teacher (`ner.teacher`): its distribution over each training sentence's tag paths.

Sequence-level distillation with soft targets (Hinton et al. 2015; Kim & Rush 2016 take the teacher's best path
instead): the student's CRF is trained on the cross-entropy against a mixture of the gold path and the teacher's
path distribution, which its marginals give exactly (crf.soft_loss). The teacher tags as in evaluation: each
document whole, no dropout, an ensemble's averaged scores kept to valid IOB2 paths.
"""

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.progress import Progress
from pipeline.ner import batches, predict


def load_teacher(cfg: Config, tags: list[str]) -> predict.TrainedTagger:
    """The tagger under ner.teacher (a paths.models directory), read with this config's vocabularies."""
    where = Path(cfg.ner.teacher)
    if where.resolve() == Path(cfg.paths.models).resolve():
        raise InputError(
            f"ner.teacher = {where}: that is paths.models, where this run writes its own tagger",
            hint="train the teacher with its own paths.models, then point ner.teacher there",
        )
    teacher = predict.load_tagger(dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, models=str(where))))
    if teacher.tags != tags:
        raise InputError(
            f"{where / 'ner' / 'tagger.json'}: the teacher's tags {teacher.tags} are not this corpus's {tags}",
            hint="distil a tagger trained on the same corpus",
        )
    return teacher


def teacher_targets(cfg: Config, documents, tags: list[str]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per document, per sentence (truncated to text.max_length as training is): the teacher's tag marginals
    [time, tags] and expected transition counts [tags, tags]."""
    teacher = load_teacher(cfg, tags)
    n = cfg.text.max_length
    token_lists = [w[:n] for d in documents for w, _ in d]
    doc_ids = predict.document_ids(documents) if teacher.model.hp.doc_memory else None

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None], tf.int32)], autograph=False
    )
    def posteriors(tokens, doc):
        return teacher.model.posteriors(teacher.features(tokens, doc), cfg.ner.distill_temperature)

    out: list = [None] * len(token_lists)
    plan = list(batches.sorted_batches(token_lists, doc_ids))
    progress = Progress(len(plan), f"teacher {cfg.ner.teacher} batches")
    for idx, batch, doc in plan:
        unary, pairs = (x.numpy() for x in posteriors(batch, doc))
        for row, k in enumerate(idx):
            out[k] = (unary[row, : len(token_lists[k])], pairs[row])
        progress.update()
    progress.close()
    sizes = np.cumsum([0] + [len(d) for d in documents])
    return [out[a:b] for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def summary(documents, targets, tags: list[str]) -> str:
    """How the teacher's distribution stands to the gold tags: agreement of its most likely tags, its confidence."""
    index = {t: i for i, t in enumerate(tags)}
    gold = np.concatenate(
        [
            [index[t] for t in y[: len(u)]]
            for d, td in zip(documents, targets, strict=True)
            for (_, y), (u, _) in zip(d, td, strict=True)
        ]
    )
    unary = np.concatenate([u for td in targets for u, _ in td])
    agree = float(np.mean(unary.argmax(axis=1) == gold))
    return (
        f"teacher: most likely tag = gold on {100 * agree:.2f}% of {len(gold):,} training tokens; mean probability "
        f"of its tag {unary.max(axis=1).mean():.4f}, of the gold tag {unary[np.arange(len(gold)), gold].mean():.4f}"
    )
