"""An exponential moving average of a model's trainable weights (Polyak averaging), kept beside training and
swapped in to evaluate and to save the best weights (a relative of the stochastic weight averaging behind
flair's `use_swa`)."""

import contextlib

import keras
import tensorflow as tf


class WeightAverage:
    """average <- d * average + (1 - d) * weight after every step, with d = min(decay, (1 + t) / (10 + t)) at
    update t, tf.train.ExponentialMovingAverage's `num_updates` rule: the average spans about the last ninth of the
    steps so far ((10 + t) / 9), so it follows the fast-moving early weights closely, and about 1 / (1 - decay)
    steps once t passes (10 * decay - 1) / (1 - decay) (8,990 for 0.999). Create it in the strategy's scope (the
    averages are mirrored like the weights) and call `update` in cross-replica context, after the optimizer's
    update. Checkpoint `checkpoint()` with the model.
    """

    @classmethod
    def of(cls, model, decay: float) -> "WeightAverage | None":
        """The average of a model's trainable weights, or None for decay 0 (a section's `average_decay`)."""
        return cls(model.trainable_variables, decay) if decay else None

    def __init__(self, variables: list, decay: float):
        self.decay = decay
        self.weights = [v.value if isinstance(v, keras.Variable) else v for v in variables]
        self.averages = [tf.Variable(w, trainable=False, name="average") for w in self.weights]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")

    @property
    def variables(self) -> list[tf.Variable]:
        return [*self.averages, self.updates]

    def checkpoint(self) -> tf.train.Checkpoint:
        """The averages and their count, without the model's weights (the model's own checkpoint has those)."""
        return tf.train.Checkpoint(averages=self.averages, updates=self.updates)

    def update(self) -> None:
        t = tf.cast(self.updates.assign_add(1), tf.float32)
        d = tf.minimum(self.decay, (1 + t) / (10 + t))
        for average, weight in zip(self.averages, self.weights, strict=True):
            average.assign_sub((average - tf.cast(weight, average.dtype)) * (1 - d))

    def _swap(self) -> None:
        for average, weight in zip(self.averages, self.weights, strict=True):
            held = tf.identity(weight)
            weight.assign(average)
            average.assign(held)

    @contextlib.contextmanager
    def swapped(self):
        """The model holds the averaged weights inside the block and its own again after it."""
        self._swap()
        try:
            yield
        finally:
            self._swap()


def unaveraged(stats: dict, metric: str, scale: float = 1.0, digits: int = 2) -> str:
    """The console's note of the weights' own dev score beside their average's, when the task keeps one."""
    value = stats.get(f"{metric}_unaveraged")
    return "" if value is None else f" (weights {scale * value:6.{digits}f})"
