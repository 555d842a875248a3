"""The one training loop (`fit`): epochs or steps, dev score, early stopping, learning-rate plateaus, a wall-time
budget, checkpoints that resume at any saved step, history and TensorBoard. A task supplies its step (inside
`Task.train_epoch`, which walks its batches through a `Cursor`) and its dev metric (`Task.evaluate`).

Under several workers (MultiWorkerMirroredStrategy) the chief alone checkpoints, evaluates and writes history
and TensorBoard; the others take its state after a restore and its counters after each evaluation (core/cluster.py).

Re-running after an interruption resumes from the last checkpoint: the end of an epoch or an evaluation, or every
`save_every` steps inside an epoch. An epoch's batch order is a function of its seed, so a resumed run replays the
order to the saved position and goes on with the same batches. A change of any setting except the section's epochs,
patience, max_minutes, strategy and the step schedule starts over, since the old checkpoint belongs to another
model or data.
"""

import contextlib
import itertools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from pipeline.core import cluster, stages
from pipeline.core.averaging import WeightAverage
from pipeline.core.config import Config
from pipeline.core.files import write_json

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "patience", "max_minutes", "strategy", "save_every", "eval_every", "max_steps")
# Written with a run's settings: a checkpoint of an older loop (other counters) is discarded like other settings'.
CHECKPOINT_FORMAT = {"trainer.checkpoint_format": 2}


# tf.summary.scalar needs the tensorboard package; this writes the same event records with core TF alone.
_SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


_TEXT = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))


def scalar_summary(name: str, value: float) -> None:
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR.SerializeToString())


def text_summary(name: str, value: str) -> None:
    """A Markdown text entry (TensorBoard's Text tab), e.g. sample predictions."""
    tf.summary.write(name, tf.constant(value), metadata=_TEXT.SerializeToString())


def out_of_time(elapsed_s: float, epochs_done: int, max_minutes: float) -> bool:
    """Whether the next epoch, taking as long as the mean one so far, would end past `max_minutes` (0: never):
    a budget is a promise about the whole run, so training stops before it, not one epoch after."""
    if max_minutes <= 0 or epochs_done == 0:
        return False
    return elapsed_s * (epochs_done + 1) / epochs_done > 60 * max_minutes


def run_settings(cfg: Config, section: str) -> dict:
    """Every setting a model's training reads (flattened `section.key`: what its train stage's config stamp covers),
    except those that may change on resume."""
    out = {}
    for s, values in stages.reads(cfg, f"train-{section}").items():
        for key, value in values.items():
            if not (s == section and key in RESUMABLE_CHANGES):
                out[f"{s}.{key}"] = value
    return out | CHECKPOINT_FORMAT


def same_places(settings: dict) -> dict:
    """The settings with every `paths.*` value resolved: `data/processed` and its absolute spelling are one place."""
    return {k: str(Path(v).resolve()) if k.startswith("paths.") else v for k, v in settings.items()}


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
        if old is None or same_places(old) != same_places(settings):
            diff = ["(no record of the checkpoint's settings)"]
            if old is not None:
                diff = settings_diff(same_places(old), same_places(settings))
            print(f"  settings changed: discarding the checkpoint in {where} and the best weights beside it:")
            for line in diff[:10]:
                print(f"    {line}")
            shutil.rmtree(where)
            for name in artifacts:
                (where.parent / name).unlink(missing_ok=True)
    manager = tf.train.CheckpointManager(ckpt, str(where), max_to_keep=1)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        loop = ckpt.loop
        where = f"after epoch {loop['epoch']}"
        if loop["epoch_step"]:
            where = f"at step {loop['step']} (batch {loop['epoch_step']} of epoch {loop['epoch'] + 1})"
        print(f"  resuming {where} from {manager.latest_checkpoint}")
    write_json(stamp, {"settings": settings})
    return manager


def seed_states(model: keras.Model) -> list[tf.Variable]:
    """The states of the model's random seed generators (dropout, word dropout), which Keras leaves out of a
    checkpoint of the model: saved too, a resumed run draws the masks an uninterrupted one would."""
    return [sg.state.value for layer in model._flatten_layers() for sg in layer._seed_generators]


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


def load_history(manager: tf.train.CheckpointManager, path: Path, evaluations: int) -> list[dict]:
    # The history may hold an evaluation the checkpoint does not (interrupted between the two writes).
    resumed = manager is not None and manager.latest_checkpoint and path.is_file()
    return json.loads(path.read_text())[:evaluations] if resumed else []


def finish_evaluation(stats: dict, scalars: tuple[str, ...], samples: str, run: dict) -> None:
    """Record an evaluation: history file, TensorBoard scalars and sample text, then the checkpoint, in that order
    (a resumed run trims the history to the checkpoint's count, so the history may run ahead, never behind).

    `run` holds the loop's history list and its path, the summary writer, the loop state and the manager.
    """
    run["history"].append(stats)
    write_json(run["history_path"], run["history"])
    state = run["state"]
    with run["writer"].as_default(step=state["evaluations"] + 1):
        for key in scalars:
            scalar_summary(key, stats[key])
        text_summary("dev_samples", samples)
    state.evaluations.assign_add(1)
    state.carry.assign("")
    run["manager"].save()


def epoch_label(stats: dict) -> str:
    """An evaluation's epoch for a console line: `3` at an epoch's end, `2.50` inside one (eval_every)."""
    e = stats["epoch"]
    return f"{e:3d}" if isinstance(e, int) else f"{e:.2f}"


def timed_steps(batches, step, count, warmup: int = 3, steps: int = 40) -> dict:
    """`warmup` untimed steps (they trace the step), then `steps` timed ones: {"steps", "seconds", "units_per_s"}."""
    batches = iter(batches)
    for b in itertools.islice(batches, warmup):
        step(*b)
    units, start, n = 0, time.perf_counter(), 0
    for b in itertools.islice(batches, steps):
        out = step(*b)
        float(out[0].numpy())  # wait for the step to finish
        units, n = units + count(b), n + 1
    seconds = time.perf_counter() - start
    return {"steps": n, "seconds": round(seconds, 2), "units_per_s": round(units / seconds, 1)}


@dataclass
class Task:
    """What a task gives the loop: its model and optimizer, one epoch of training, and its dev score."""

    name: str  # <paths.models>/<name>/ and <paths.reports>/<name>/history.json
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    meta_file: str  # beside the best weights: what rebuilds the model (tagger.json, translator.json)
    meta: dict
    # epoch e, its cursor -> {"loss", "train_seconds", <speed>, "padding"} of the batches since the last evaluation
    train_epoch: Callable[[int, "Cursor"], dict]
    evaluate: Callable[[], tuple[dict, dict, str]]  # -> (dev stats with `metric`, best-epoch metadata, samples)
    metric: str  # the dev stat early stopping and the best weights follow, e.g. "dev_f1"
    scalars: tuple[str, ...]  # history keys written to TensorBoard
    describe: Callable[[dict, bool], str]  # the console line of an epoch (stats, improved)
    lr_at: Callable[[int, float], float] = lambda epoch, lr: lr  # epoch e's learning rate, given the current
    higher_is_better: bool = True  # False for a loss (the language model's valid nats per character)
    strategy: tf.distribute.Strategy | None = None  # several workers: the chief alone writes and evaluates
    average: WeightAverage | None = None  # evaluated and saved in place of the weights; their score beside it


@dataclass(frozen=True)
class Schedule:
    epochs: int
    patience: int  # evaluations without a better dev score before training stops
    max_minutes: float  # 0 = no wall-time budget
    learning_rate: float
    plateau_patience: int | None = None  # evaluations without improvement before the rate is x plateau_decay
    plateau_decay: float = 1.0
    save_every: int = 0  # steps between checkpoints inside an epoch (0 = at evaluations only)
    eval_every: int = 0  # steps between dev evaluations (0 = at each epoch's end)
    max_steps: int = 0  # stop after this many training steps (0 = no limit; epochs still applies)

    @classmethod
    def of(cls, hp, **kwargs) -> "Schedule":
        """A section's schedule: epochs, patience, max_minutes, learning_rate and, where it has them, the step keys."""
        steps = {k: getattr(hp, k) for k in ("save_every", "eval_every", "max_steps") if hasattr(hp, k)}
        return cls(hp.epochs, hp.patience, hp.max_minutes, hp.learning_rate, **steps, **kwargs)


class LoopState(tf.Module):
    """The loop's counters, checkpointed beside the model and optimizer, so a resumed run continues exactly."""

    def __init__(self, learning_rate: float):
        super().__init__(name="loop")
        self.epoch, self.best, self.bad, self.plateau = (
            tf.Variable(0),  # finished epochs
            tf.Variable(-np.inf),  # the best score so far, negated for a loss
            tf.Variable(0),
            tf.Variable(0),
        )
        self.elapsed, self.lr = tf.Variable(0.0, dtype=tf.float64), tf.Variable(learning_rate, dtype=tf.float64)
        self.step = tf.Variable(0, dtype=tf.int64)  # training steps, all epochs
        self.epoch_step = tf.Variable(0, dtype=tf.int64)  # batches of the unfinished epoch already trained
        self.evaluations = tf.Variable(0, dtype=tf.int64)
        self.carry = tf.Variable("")  # the task's running sums since the last evaluation (JSON), see Cursor

    def __getitem__(self, name: str):
        value = getattr(self, name).numpy()
        return value.decode() if isinstance(value, bytes) else value.item()

    def record(self, score: float, improved: bool, schedule: Schedule) -> None:
        """Best score, epochs without improvement, and the plateau rule (lr *= decay after a dev plateau)."""
        self.best.assign(max(score, self["best"]))
        self.bad.assign(0 if improved else self["bad"] + 1)
        self.plateau.assign(0 if improved else self["plateau"] + 1)
        if schedule.plateau_patience is not None and self["plateau"] > schedule.plateau_patience:
            self.lr.assign(self["lr"] * schedule.plateau_decay)
            self.plateau.assign(0)

    def stop_reason(self, schedule: Schedule) -> str:
        """Why training stops now (a STOPPED key), or "" while it goes on."""
        if self["epoch"] >= schedule.epochs:
            return "epochs"
        if schedule.max_steps and self["step"] >= schedule.max_steps:
            return "max_steps"
        if self["bad"] >= schedule.patience:
            return "patience"
        return "max_minutes" if out_of_time(self["elapsed"], self["evaluations"], schedule.max_minutes) else ""


class Cursor:
    """Where training stands in an epoch. A task's epoch walks its batches as `for b in cursor.batches(all, n)`.

    The cursor skips the batches a resumed run already trained (the epoch's order comes from its seed, so the
    replay reaches the same position), counts steps, saves a checkpoint every `save_every` steps, and ends the
    walk early for an evaluation (`eval_every`) or at `max_steps`. `carry` is the task's dict of running sums
    since the last evaluation, to update after every step: it is saved with the checkpoint, so a resumed epoch
    reports what an uninterrupted one would.
    """

    def __init__(self, state: LoopState, schedule: Schedule, manager: tf.train.CheckpointManager):
        self.state, self.schedule, self.manager = state, schedule, manager
        self.skip = state["epoch_step"]
        self.carry = json.loads(state["carry"] or "{}")
        self.finished, self.total = False, 0  # the epoch's last batch has been trained; its batches
        self.clock = time.perf_counter()

    def batches(self, iterable, total: int, skipped: bool = False):
        """`iterable`: all batches of the epoch, about `total` of them (exact in memory, estimated from files; the
        epoch ends where the batches do), or with `skipped` those after the first `self.skip` (a tf.data pipeline
        skips them cheaper than Python)."""
        state, s, self.total = self.state, self.schedule, total
        rest = iter(enumerate(iterable, start=self.skip if skipped else 0))
        ahead = next(rest, None)  # one batch ahead: whether this one is the epoch's last is known before it trains
        while ahead is not None:
            (i, batch), ahead = ahead, next(rest, None)
            if i < self.skip:
                continue
            yield batch
            step = state["step"] + 1
            state.step.assign(step)
            state.epoch_step.assign(i + 1)
            if ahead is None:
                break
            if (s.max_steps and step >= s.max_steps) or (s.eval_every and step % s.eval_every == 0):
                return
            if s.save_every and step % s.save_every == 0:
                self.save()
        self.finished = True
        state.epoch.assign_add(1)
        state.epoch_step.assign(0)

    def position(self, epoch: int) -> int | float:
        """Where the walk stopped, in epochs: `epoch` at its end, else e.g. 2.5 halfway through the second."""
        if self.finished:
            return epoch
        return round(epoch - 1 + min(self.state["epoch_step"] / max(self.total, 1), 0.999), 3)

    def tick(self) -> None:
        """Add the time since the last tick to the run's elapsed time."""
        now = time.perf_counter()
        self.state.elapsed.assign_add(now - self.clock)
        self.clock = now

    def save(self) -> None:
        if self.manager is None:  # a worker that is not the chief
            return
        self.tick()
        self.state.carry.assign(json.dumps(self.carry))
        self.manager.save()
        print(f"  checkpoint at step {self.state['step']}", flush=True)


STOPPED = {  # history's last epoch says which rule ended training ("stopped_by"), and so does the report
    "epochs": "the epoch limit",
    "patience": "early stopping (no better dev score for `patience` evaluations)",
    "max_steps": "the step limit (max_steps)",
    "max_minutes": "the wall-time budget (max_minutes): another host's speed gives another result",
}


def evaluation(task: Task, out: Path, stats: dict, cursor: Cursor, e: int, rate: float, schedule, run: dict) -> None:
    """The dev score after training epoch `e` up to the cursor, the best weights when it improved (before the
    checkpoint, which must never claim a best epoch whose weights were not saved), the plateau rule, then
    history, TensorBoard and the checkpoint (finish_evaluation)."""
    state, t0 = run["state"], time.perf_counter()
    own = {f"{task.metric}_unaveraged": task.evaluate()[0][task.metric]} if task.average else {}
    with task.average.swapped() if task.average else contextlib.nullcontext():
        dev, best_meta, samples = task.evaluate()
        at = cursor.position(e)
        stats |= {"epoch": at, "step": state["step"], **dev, **own, "dev_seconds": time.perf_counter() - t0, "lr": rate}
        # As the checkpointed best is float32: a score equal to it in float32 (BLEU 100 again) is no improvement.
        score = dev[task.metric] if task.higher_is_better else -dev[task.metric]
        improved = float(np.float32(score)) > state["best"]
        if improved:
            save_best(task.model, out, task.meta_file, task.meta | {"epoch": at} | best_meta)
    state.record(score, improved, schedule)
    cursor.tick()
    stats["elapsed"] = state["elapsed"]
    finish_evaluation(stats, task.scalars, samples, run)
    print(task.describe(stats, improved), flush=True)


def fit(cfg: Config, task: Task, schedule: Schedule) -> float:
    """Train until `schedule` says stop, evaluating at each epoch's end (or every eval_every steps); resumable at
    every checkpoint. Returns the best dev score.

    Per evaluation: the task's training since the last one, then its `evaluation`.
    """
    out, history_path = Path(cfg.paths.models) / task.name, Path(cfg.paths.reports) / task.name / "history.json"
    strategy = task.strategy or tf.distribute.get_strategy()
    chief = cluster.is_chief(strategy)
    state = LoopState(schedule.learning_rate)
    rng = seed_states(task.model)
    averaged = {"average": task.average.checkpoint()} if task.average else {}
    ckpt = tf.train.Checkpoint(model=task.model, optimizer=task.optimizer, loop=state, rng=rng, **averaged)
    manager, writer = None, tf.summary.create_noop_writer()
    if chief:
        settings = run_settings(cfg, task.name)
        manager = open_checkpoints(ckpt, out / "ckpt", settings, ("best.weights.h5", task.meta_file))
        writer = tf.summary.create_file_writer(str(out / "logs"))
    variables = [v.value for v in (*task.model.variables, *task.optimizer.variables)]
    variables += task.average.variables if task.average else []
    cluster.take_from_chief(strategy, [*variables, *rng, *state.variables])
    history = load_history(manager, history_path, state["evaluations"])
    run = {"history": history, "history_path": history_path, "writer": writer, "state": state, "manager": manager}
    while not state.stop_reason(schedule):
        e = state["epoch"] + 1
        rate = task.lr_at(e, state["lr"])
        task.optimizer.learning_rate = rate
        cursor = Cursor(state, schedule, manager)
        stats = task.train_epoch(e, cursor)
        if chief:
            evaluation(task, out, stats, cursor, e, rate, schedule, run)
        else:
            cursor.tick()
            print(f"  epoch {e}: trained to step {state['step']}; the chief evaluates", flush=True)
        cluster.take_from_chief(strategy, state.variables)  # its best score, patience and counters: the same stop
    writer.close()
    reason = state.stop_reason(schedule)
    cluster.check_same_weights(strategy, task.model.weights)
    if history:
        history[-1]["stopped_by"] = reason
        write_json(history_path, history)
    print(f"  stopped by {STOPPED[reason]}", flush=True)
    return state["best"] if task.higher_is_better else -state["best"]
