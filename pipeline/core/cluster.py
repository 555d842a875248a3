"""Several workers (MultiWorkerMirroredStrategy): which one writes, and how the others take the chief's state.

The chief (worker 0) alone restores and writes checkpoints, evaluates on dev and writes reports. The other
workers take every variable's value from it after a restore and the loop's counters after every evaluation, so
all of them stop at the same step; nothing needs a file system that the machines share.
"""

import numpy as np
import tensorflow as tf


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
def _chiefs(strategy: tf.distribute.Strategy, values: list[tf.Tensor]) -> list[tf.Tensor]:
    """The chief's copy of each value, on every worker: a sum over replicas in which only replica 0 (the chief's
    first device) contributes."""

    def replica(values):
        ctx = tf.distribute.get_replica_context()
        first = ctx.replica_id_in_sync_group == 0
        out = [tf.where(first, v, tf.zeros_like(v)) for v in values]
        for dtype in sorted({v.dtype for v in values}, key=str):  # a traced all-reduce packs: one dtype at a time
            at = [i for i, v in enumerate(values) if v.dtype == dtype]
            for i, v in zip(at, ctx.all_reduce(tf.distribute.ReduceOp.SUM, [out[i] for i in at]), strict=True):
                out[i] = v
        return out

    out = strategy.run(replica, args=(values,))
    return [strategy.experimental_local_results(v)[0] for v in out]


def take_from_chief(strategy: tf.distribute.Strategy, variables: list[tf.Variable]) -> None:
    """Assign every worker's variables the chief's values (string variables are left alone)."""
    if not several_workers(strategy):
        return
    variables = [v for v in variables if v.dtype != tf.string]
    for v, value in zip(variables, _chiefs(strategy, [tf.convert_to_tensor(v) for v in variables]), strict=True):
        v.assign(value)


def broadcast(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
    """The chief's floats, on every worker (the others pass anything, e.g. zeros)."""
    if not several_workers(strategy):
        return values
    return _chiefs(strategy, [tf.constant(values, tf.float64)])[0].numpy().tolist()


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
