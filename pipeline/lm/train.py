"""Stage `train-lm`: truncated backpropagation through time over contiguous streams; the loop is core/trainer.fit.

The training text is cut into lm.batch_size contiguous streams, one row of every batch; each batch is the next
lm.bptt characters of every stream, and the state a window ends in is where the next one starts. The state is
reset at the start of each epoch. Early stopping follows the valid loss, read with the state carried across the
whole valid text.

<paths.models>/lm/ckpt/              last epoch: model, optimizer, counters (resumable)
<paths.models>/lm/best.weights.h5    weights of the best valid-loss epoch
<paths.models>/lm/lm.json            settings and sizes that rebuild the model
<paths.models>/lm/logs/              TensorBoard scalars and samples
<paths.reports>/lm/history.json      per epoch: loss, valid loss (nats and bits per character), chars/s, lr
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf

from pipeline.core import optim, trainer
from pipeline.core.averaging import WeightAverage, unaveraged
from pipeline.core.config import Config
from pipeline.core.progress import Progress
from pipeline.lm import corpus, generate
from pipeline.lm import model as lm_model
from pipeline.lm.config import Lm

EVAL_WINDOW = 2048  # characters per call when reading a whole text with one stream


def encode(text: str, chars: list[str]) -> np.ndarray:
    """Character ids of a text, <unk> for characters outside the vocabulary, after the start id (a line break)."""
    index = {c: i for i, c in enumerate(chars) if i >= 2}
    start = index.get("\n", 1)
    return np.array([start] + [index.get(c, 1) for c in text], np.int32)


def streams(ids: np.ndarray, batch: int, bptt: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) [batch, n * bptt]: row r is the r-th contiguous stretch of the text, cut to whole windows."""
    per_row = (len(ids) - 1) // batch // bptt * bptt
    if per_row == 0:
        raise ValueError(f"{len(ids) - 1} training characters are too few for {batch} streams of {bptt}")
    x = ids[: batch * per_row].reshape(batch, per_row)
    y = ids[1 : batch * per_row + 1].reshape(batch, per_row)
    return x, y


def make_train_step(model: lm_model.CharLM, optimizer, hp: Lm, average: WeightAverage | None = None):
    """One traced step for every window: fixed [batch, bptt] shapes, so it never retraces."""
    window = tf.TensorSpec([hp.batch_size, hp.bptt], tf.int32)
    states = [tf.TensorSpec([hp.batch_size, hp.units], tf.float32)] * (hp.layers * model.states_per_layer)
    optim.build_optimizer(optimizer, model)

    @tf.function(input_signature=[window, window, states], autograph=False)
    def step(x, y, states):
        with tf.GradientTape() as tape:
            logits, new_states = model(x, states, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        optim.replicated_update(
            optimizer, model.trainable_variables, tape.gradient(loss, model.trainable_variables), hp.clip_norm
        )
        if average is not None:
            average.update()
        return loss, new_states

    return step


def make_reader(model: lm_model.CharLM, n_streams: int = 1):
    """Mean nats per character of a whole text, the state carried from window to window as in training: one stream
    (evaluate-lm: every character after the first is predicted from all before it), or n_streams contiguous ones
    read side by side (the per-epoch valid loss: as many times faster; each stream starts from a zero state, and
    the last len % n_streams characters are not read)."""
    states = [tf.TensorSpec([n_streams, model.units], tf.float32)] * (len(model.rnns) * model.states_per_layer)

    @tf.function(input_signature=[tf.TensorSpec([n_streams, None], tf.int32), states], autograph=False)
    def window(ids, states):
        logits, states = model(ids[:, :-1], states)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[:, 1:], logits=logits)
        return tf.reduce_sum(nll), states

    def read(ids: np.ndarray) -> float:
        per_row = (len(ids) - 1) // n_streams
        rows = np.stack([ids[r * per_row : (r + 1) * per_row + 1] for r in range(n_streams)])
        states, total = model.zero_states(n_streams), 0.0
        for start in range(0, per_row, EVAL_WINDOW):
            nll, states = window(tf.constant(rows[:, start : start + EVAL_WINDOW + 1]), states)
            total += float(nll)
        return total / (per_row * n_streams)

    return read


def run_epoch(step, x: np.ndarray, y: np.ndarray, model, hp: Lm, epoch: int, cursor: trainer.Cursor) -> dict:
    """One epoch of TBPTT windows. The LM has no step schedule (save_every, eval_every), so the cursor always walks
    whole epochs from a zero state: a mid-epoch resumption would need the carried states too."""
    n = x.shape[1] // hp.bptt
    progress = Progress(n, f"epoch {epoch} windows")
    states, start, loss_sum = model.zero_states(hp.batch_size), time.perf_counter(), 0.0
    for i in cursor.batches(range(n), n):
        cut = slice(i * hp.bptt, (i + 1) * hp.bptt)
        loss, states = step(x[:, cut], y[:, cut], states)
        loss_sum += float(loss)
        rate = (i + 1) * x.shape[0] * hp.bptt / (time.perf_counter() - start)
        progress.update(loss=f"{loss_sum / (i + 1):.3f}", chars_per_s=f"{rate:,.0f}")
    progress.close()
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / n, "train_seconds": seconds, "chars_per_s": x.size / seconds, "padding": 0.0}


def format_lm_epoch(s: dict, improved: bool) -> str:
    return (
        f"epoch {trainer.epoch_label(s)}  loss {s['loss']:6.3f}  valid {s['valid_loss']:6.4f} nats/char"
        f" ({s['valid_bpc']:5.3f} bits){' *' if improved else '  '}"
        + unaveraged(s, "valid_loss", digits=4)
        + f"  lr {s['lr']:.2e}  {s['train_seconds']:6.1f}s"
        f"  {s['chars_per_s']:6,.0f} chars/s  valid {s['dev_seconds']:4.1f}s  elapsed {s['elapsed'] / 60:5.1f} min"
    )


def run(cfg: Config) -> None:
    """Stage `train-lm`: the character LM, early-stopped on valid loss by the shared loop (core/trainer.py)."""
    hp = cfg.lm
    keras.utils.set_random_seed(hp.seed)
    chars = generate.load_chars(cfg)
    train_ids = encode(corpus.load_text(cfg, "train"), chars)
    valid_ids = encode(corpus.load_text(cfg, "valid"), chars)
    x, y = streams(train_ids, hp.batch_size, hp.bptt)
    model = lm_model.build(hp, len(chars))
    optimizer = keras.optimizers.Adam(hp.learning_rate)
    average = WeightAverage.of(model, hp.average_decay)
    meta = {"n_chars": len(chars), "model": lm_model.settings(hp)}
    n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(
        f"  {len(train_ids) - 1:,} train / {len(valid_ids) - 1:,} valid characters; {len(chars)} characters in the "
        f"vocabulary; {n_params:,} trainable parameters; {x.shape[1] // hp.bptt} windows of {hp.batch_size} x "
        f"{hp.bptt} per epoch"
    )
    step, read = make_train_step(model, optimizer, hp, average), make_reader(model, hp.dev_streams)
    sampler = generate.sampler(cfg, model)

    def evaluate() -> tuple[dict, dict, str]:
        nats = read(valid_ids)
        sample = generate.generate_texts(sampler, [""], hp.temperature, 300, hp.seed)[0]
        stats = {"valid_loss": nats, "valid_bpc": nats / math.log(2)}
        return stats, stats, f"```\n{sample}\n```"

    task = trainer.Task(
        "lm",
        model,
        optimizer,
        "lm.json",
        meta,
        lambda e, cursor: run_epoch(step, x, y, model, hp, e, cursor),
        evaluate,
        "valid_loss",
        ("loss", "valid_loss", "valid_bpc", "chars_per_s", "lr"),
        format_lm_epoch,
        higher_is_better=False,
        average=average,
    )
    schedule = trainer.Schedule.of(hp, plateau_patience=hp.lr_patience, plateau_decay=hp.lr_decay)
    best = trainer.fit(cfg, task, schedule)
    print(f"  best valid loss {best:.4f} nats/char ({best / math.log(2):.3f} bits); weights in {generate.lm_dir(cfg)}")
