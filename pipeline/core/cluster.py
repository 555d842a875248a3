"""Several workers (MultiWorkerMirroredStrategy): which one writes, and how the others take the chief's state.

The chief (worker 0) alone restores and writes checkpoints, evaluates on dev and writes reports. The other
workers take every variable's value from it after a restore and the loop's counters after every evaluation, so
all of them stop at the same step; nothing needs a file system that the machines share.
"""

import numpy as np
import tensorflow as tf

from pipeline.core.errors import InputError


def several_workers(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """This process writes checkpoints and reports: the chief of a cluster, or the only process."""
    return strategy.extended.should_checkpoint


def worker_index(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(this worker's index, the number of workers); (0, 1) outside a cluster."""
    if not several_workers(strategy):
        return 0, 1
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    index = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in spec else 0)
    return index, workers


@tf.function(autograph=False)  # collectives run eagerly are slow, TF warns
def _summed(strategy: tf.distribute.Strategy, values: list[tf.Tensor], chief_only: bool) -> list[tf.Tensor]:
    """Each value summed over the replicas, on every worker; with `chief_only` only replica 0 (the chief's first
    device) contributes, which gives everyone the chief's copy."""

    def replica(values):
        ctx = tf.distribute.get_replica_context()
        first = ctx.replica_id_in_sync_group == 0
        # Computed here, on the replica's device (an all-reduce of the bare input has no device to go to).
        out = [tf.where(first, v, tf.zeros_like(v)) if chief_only else tf.identity(v) for v in values]
        # int32 as int64: GPU collectives do not reduce int32 (tensorflow#56184).
        out = [tf.cast(v, tf.int64) if v.dtype == tf.int32 else v for v in out]
        for dtype in sorted({v.dtype for v in out}, key=str):  # a traced all-reduce packs: one dtype at a time
            at = [i for i, v in enumerate(out) if v.dtype == dtype]
            for i, v in zip(at, ctx.all_reduce(tf.distribute.ReduceOp.SUM, [out[i] for i in at]), strict=True):
                out[i] = v
        return [tf.cast(v, values[i].dtype) for i, v in enumerate(out)]

    out = strategy.run(replica, args=(values,))
    return [strategy.experimental_local_results(v)[0] for v in out]


def take_from_chief(strategy: tf.distribute.Strategy, variables: list[tf.Variable]) -> None:
    """Assign every worker's variables the chief's values (string variables are left alone).

    Only the chief saves checkpoints, which is safe while no variable is ON_READ (reading one all-reduces it, so
    every worker would have to save): a Keras metric in the model would be one, and is refused here."""
    if not several_workers(strategy):
        return
    on_read = [v.name for v in variables if getattr(v, "synchronization", None) == tf.VariableSynchronization.ON_READ]
    if on_read:
        raise RuntimeError(f"multi_worker: the chief alone checkpoints, but {', '.join(on_read)} is ON_READ")
    variables = [v for v in variables if v.dtype != tf.string]
    for v, value in zip(variables, _summed(strategy, [tf.convert_to_tensor(v) for v in variables], True), strict=True):
        v.assign(value)


def broadcast(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
    """The chief's floats, on every worker (the others pass anything, e.g. zeros)."""
    if not several_workers(strategy):
        return values
    return _summed(strategy, [tf.constant(values, tf.float64)], True)[0].numpy().tolist()


def agree(strategy: tf.distribute.Strategy, what: str, digest: str) -> None:
    """Stop every worker, naming `what`, unless all of them hold the same (e.g. the same training shards): workers
    on different data would run different numbers of steps and wait on each other for ever."""
    if not several_workers(strategy):
        return
    mine = float(int(digest[:12], 16))  # 48 bits: exact in a float64
    differs = float(broadcast(strategy, [mine])[0] != mine)
    if _summed(strategy, [tf.constant(differs, tf.float64)], False)[0] > 0:  # any worker's
        index, workers = worker_index(strategy)
        raise InputError(
            f"{what} differs between the {workers} workers (worker {index}: {digest[:12]})",
            hint="give every worker the chief's files (README: Several machines)",
        )


def weights_fingerprint(variables: list) -> float:
    """One number that differs when any weight does: a weighted sum of every variable's values."""
    return float(sum((i + 1) * np.sum(np.asarray(v, np.float64)) for i, v in enumerate(variables)))


def check_same_weights(strategy: tf.distribute.Strategy, variables: list) -> None:
    """After training: print whether this worker's weights equal the chief's (they must: every step applies the
    same summed gradient everywhere)."""
    if not several_workers(strategy):
        return
    index, workers = worker_index(strategy)
    mine = weights_fingerprint(variables)
    chiefs = broadcast(strategy, [mine])[0]
    verdict = "the same as the chief's" if mine == chiefs else f"DIFFERENT from the chief's ({chiefs!r})"
    print(f"  worker {index} of {workers}: weights fingerprint {mine!r}, {verdict}", flush=True)
