"""Sampling in the graph: prompt -> state -> one character at a time, used alike by `pipeline generate`, the
evaluation samples and the exported `generate` signature, so the same seed gives the same text everywhere.

Randomness is a counter-based hash (splitmix64 of seed, step and character id) turned into Gumbel noise:
argmax(logits / temperature + Gumbel) is a draw from softmax(logits / temperature), each row has its own seed,
and the draw depends on nothing but integer ops, so TF Serving's runtime reproduces it. Temperature 0 is
greedy decoding, and as temperature -> 0 sampling becomes greedy. <pad> and <unk> are never generated.
"""

import json
from pathlib import Path

import keras
import tensorflow as tf

from pipeline.core import vocab
from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.lm import model as lm_model

_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_U64 = tf.uint64


def _splitmix(z: tf.Tensor) -> tf.Tensor:
    def shift_xor(x, n):
        return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(n, _U64)))

    z = shift_xor(z, 30) * tf.constant(_MIX1, _U64)
    z = shift_xor(z, 27) * tf.constant(_MIX2, _U64)
    return shift_xor(z, 31)


def gumbel_noise(seed: tf.Tensor, step: tf.Tensor, n: int) -> tf.Tensor:
    """[B, n] float64 Gumbel(0, 1) noise, a pure function of each row's int64 seed, the step and the column."""
    s = tf.bitcast(tf.cast(seed, tf.int64), _U64)[:, None]
    t = tf.cast(tf.cast(step, tf.int64), _U64)
    z = (
        s * tf.constant(_GOLDEN, _U64)
        + (t + 1) * tf.constant(_MIX1, _U64)
        + tf.cast(tf.range(n, dtype=tf.int64), _U64)[None]
    )
    z = _splitmix(_splitmix(z))
    u = (tf.cast(tf.bitwise.right_shift(z, tf.constant(11, _U64)), tf.float64) + 0.5) * 2.0**-53  # in (0, 1)
    return -tf.math.log(-tf.math.log(u))


def char_table(chars: list[str]) -> tf.lookup.StaticHashTable:
    """character -> id, the specials excluded; anything else is <unk>."""
    keys = tf.constant(chars[2:])
    init = tf.lookup.KeyValueTensorInitializer(keys, tf.range(2, len(chars), dtype=tf.int64))
    return tf.lookup.StaticHashTable(init, default_value=vocab.UNK_ID)


class Sampler(tf.Module):
    """The model, its character table and the sampling loop; `generate` is what the SavedModel signs."""

    def __init__(self, model: lm_model.CharLM, chars: list[str], top_k: int, max_generate: int, prompt_chars: int):
        super().__init__(name="sampler")
        self.model, self.chars = model, chars
        self.table = char_table(chars)
        self.id_chars = tf.constant(["", ""] + chars[2:])  # the specials print as nothing
        # Texts are read as if after a line break, so an empty prompt starts where a new line would.
        self.start_id = chars.index("\n") if "\n" in chars else vocab.UNK_ID
        self.top_k, self.max_generate, self.prompt_chars = top_k, max_generate, prompt_chars

    def encode(self, prompt: tf.Tensor) -> tf.RaggedTensor:
        """[B] strings -> ragged [B, None] ids: the start id, then the prompt's last prompt_chars characters."""
        chars = tf.strings.unicode_split(prompt, "UTF-8", errors="replace")  # bad bytes -> U+FFFD -> <unk>
        chars = chars[:, -self.prompt_chars :]
        ids = tf.cast(self.table.lookup(chars), tf.int32)
        start = tf.fill([tf.shape(prompt)[0], 1], tf.constant(self.start_id, tf.int32))
        return tf.concat([start, ids], axis=1)

    def read_prompt(self, ids: tf.RaggedTensor):
        """Run each row's ids through the model one character at a time: (logits after its last id, states)."""
        dense, lengths = ids.to_tensor(vocab.PAD_ID), ids.row_lengths()
        batch = tf.shape(dense)[0]
        states = self.model.zero_states(batch)
        logits = tf.zeros([batch, self.model.n_chars])

        def body(t, logits, *states):
            new_logits, new_states = self.model.step(dense[:, t], list(states))
            live = (tf.cast(t, tf.int64) < lengths)[:, None]  # rows whose prompt has ended keep their state
            logits = tf.where(live, new_logits, logits)
            return (t + 1, logits, *[tf.where(live, n, s) for n, s in zip(new_states, states, strict=True)])

        _, logits, *states = tf.while_loop(
            lambda t, *_: t < tf.shape(dense)[1], body, (tf.constant(0), logits, *states)
        )
        return logits, states

    def pick(self, logits, temperature, seed, step):
        """One character per row: a draw at `temperature` (greedy where it is 0), among the top_k when set."""
        specials = tf.one_hot([vocab.PAD_ID, vocab.UNK_ID], self.model.n_chars, on_value=True, off_value=False)
        logits = tf.where(tf.reduce_any(specials, 0)[None], tf.constant(-1e9, logits.dtype), logits)
        if self.top_k:
            kth = tf.math.top_k(logits, min(self.top_k, self.model.n_chars)).values[:, -1:]
            logits = tf.where(logits < kth, tf.constant(-1e9, logits.dtype), logits)
        logits = tf.cast(logits, tf.float64)
        t = tf.cast(temperature, tf.float64)[:, None]
        noisy = logits / tf.maximum(t, 1e-30) + gumbel_noise(seed, step, self.model.n_chars)
        return tf.cast(tf.argmax(tf.where(t > 0, noisy, logits), axis=1), tf.int32)

    def generate(self, prompt, temperature, length, seed):
        """prompt [B] string, temperature [B] float32, length [B] int32, seed [B] int64 -> text [B] string: `length`
        characters (at most lm.max_generate) continuing each prompt."""
        length = tf.clip_by_value(tf.cast(length, tf.int32), 0, self.max_generate)
        logits, states = self.read_prompt(self.encode(prompt))
        steps = tf.reduce_max(tf.concat([length, [1]], 0))  # one at least: an empty TensorArray cannot stack
        out = tf.TensorArray(tf.int32, size=steps, element_shape=tf.TensorShape([None]))

        def body(t, logits, out, *states):
            ids = self.pick(logits, temperature, seed, t)
            logits, states = self.model.step(ids, list(states))
            return (t + 1, logits, out.write(t, ids), *states)

        _, _, out, *_ = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), logits, out, *states))
        ids = tf.transpose(out.stack())  # [B, steps]
        keep = tf.sequence_mask(length, steps)
        chars = tf.where(keep, tf.gather(self.id_chars, ids), "")
        return {"text": tf.strings.reduce_join(chars, axis=1)}


SIGNATURE = [
    tf.TensorSpec([None], tf.string, name="prompt"),
    tf.TensorSpec([None], tf.float32, name="temperature"),
    tf.TensorSpec([None], tf.int32, name="length"),
    tf.TensorSpec([None], tf.int64, name="seed"),
]


def lm_dir(cfg: Config) -> Path:
    return Path(cfg.paths.models) / "lm"


def load_chars(cfg: Config) -> list[str]:
    path = Path(cfg.paths.vocab) / "lm_chars.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: vocabulary not found", hint="run `make vocab` first") from None
    return [json.loads(line) for line in lines]


def load_model(cfg: Config) -> lm_model.CharLM:
    """The best valid-loss weights of train-lm, rebuilt from lm.json."""
    where = lm_dir(cfg)
    meta_path, weights = where / "lm.json", where / "best.weights.h5"
    if not weights.is_file() or not meta_path.is_file():
        raise InputError(f"{weights}: no trained language model", hint="run `make train-lm` first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    model = lm_model.CharLM(meta["n_chars"], **meta["model"], name="char_lm")
    model(tf.zeros([1, 1], tf.int32), model.zero_states(1))
    model.load_weights(weights)
    return model


def sampler(cfg: Config, model: keras.Model | None = None, top_k: int | None = None) -> Sampler:
    hp = cfg.lm
    model = model or load_model(cfg)
    top_k = hp.top_k if top_k is None else top_k
    return Sampler(model, load_chars(cfg), top_k, hp.max_generate, hp.prompt_chars)


def generate_texts(s: Sampler, prompts: list[str], temperature: float, length: int, seed: int) -> list[str]:
    """Python's way in: the same traced graph the SavedModel signs."""
    fn = getattr(s, "_traced", None)
    if fn is None:
        fn = s._traced = tf.function(s.generate, input_signature=SIGNATURE, autograph=False)
    n = len(prompts)
    out = fn(
        tf.constant(prompts, tf.string),
        tf.fill([n], float(temperature)),
        tf.fill([n], int(length)),
        tf.fill([n], tf.constant(seed, tf.int64)),
    )
    return [t.decode("utf-8") for t in out["text"].numpy().tolist()]


def generate_main(
    cfg: Config, prompt: str, temperature: float | None, length: int, seed: int, top_k: int | None
) -> None:
    """`pipeline generate`: the prompt, then its sampled continuation, on stdout."""
    if length < 0 or length > cfg.lm.max_generate:
        raise InputError(f"--length must be between 0 and lm.max_generate = {cfg.lm.max_generate}, got {length}")
    if top_k is not None and top_k < 0:
        raise InputError(f"--top-k must be >= 0, got {top_k}")
    temperature = cfg.lm.temperature if temperature is None else temperature
    if temperature < 0:
        raise InputError(f"--temperature must be >= 0, got {temperature}")
    s = sampler(cfg, top_k=top_k)
    print(prompt + generate_texts(s, [prompt], temperature, length, seed)[0])
