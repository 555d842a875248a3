"""`make bench-peer`: training speed of the translator side by side with OpenNMT-tf 2.32's at the same size.

    <paths.reports>/bench_peer.json   {"peer": {...}, "ours": {...}, "ratio": ours / peer, "goal_met": ..., ...}

Both sides train on the same Multi30k training pairs, tokenized once here by the project's tokenizer and looked up
in its vocabularies; the peer gets them back as text (one sentence a line, tokens joined by spaces, which OpenNMT-tf
splits on) with vocabularies in its format, so both see the same tokens. Same sizes (embeddings 256, randomly
initialised on both sides; the encoder, decoder, attention, dropout, label smoothing, clipping, learning rate and
batch size of [translate]), batches of `translate.batch_size` pairs of equal length (OpenNMT-tf
`length_bucket_width: 1`; ours: length-sorted pools), Adam. One difference stays, by design: ours ties the output
layer to the target embeddings when `translate.tie_embeddings` is on (the default); set it to false for the
untied output layer the peer has.

The peer runs first, in .venv-peer (TensorFlow 2.13, which cannot share a process with this one's TensorFlow), as
a subprocess on the same CPU cores (it inherits this process's affinity: pin both with `taskset`); then ours. Each
side takes BENCH_PEER_WARMUP untimed steps (default 10: tracing, first allocations), then BENCH_PEER_STEPS timed
ones (default 300, a multiple of the warm-up: the peer's Trainer reports every warm-up-many steps). Speed is real
source tokens + target tokens (with </s>) per second, padding not counted: OpenNMT-tf's own report counts exactly
that, and `translate.bench.real_tokens` does for ours. An absolute figure differs 2x from host to host; the ratio
ours / peer is the result. Weights are not kept.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import keras
import numpy as np

from pipeline.core import vocab
from pipeline.core.config import Config, tasks
from pipeline.core.errors import InputError
from pipeline.core.files import write_json, write_lines
from pipeline.stages.bench import machine
from pipeline.translate import batches, bench, corpus, train

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER_SCRIPT = ROOT / "tools" / "peer" / "opennmt_train.py"
EMBEDDING_SIZE = 256  # the issue's reference size; random on both sides, as the peer has no pretrained vectors
GOAL = 1.5  # ours / peer (issue #26)
# OpenNMT-tf's vocabulary files start with these three (ids 0, 1, 2); <unk> is the out-of-vocabulary bucket after
# the last line, so a token written as <unk> (absent from the file) gets that bucket.
PEER_SPECIALS = ("<blank>", "<s>", "</s>")


def steps_from_env(env=os.environ) -> tuple[int, int]:
    """(warm-up steps, timed steps): BENCH_PEER_WARMUP (default 10) and BENCH_PEER_STEPS (default 300)."""
    try:  # `make bench-peer` passes them on, empty when unset
        warmup, steps = int(env.get("BENCH_PEER_WARMUP") or 10), int(env.get("BENCH_PEER_STEPS") or 300)
    except ValueError as e:
        raise InputError(f"bench-peer: BENCH_PEER_WARMUP / BENCH_PEER_STEPS must be integers ({e})") from None
    if warmup < 1 or steps < warmup or steps % warmup:
        raise InputError(
            f"bench-peer: BENCH_PEER_STEPS={steps} must be a positive multiple of BENCH_PEER_WARMUP={warmup}",
            hint="the peer's Trainer reports every warm-up-many steps, and only whole reports are timed",
        )
    return warmup, steps


def check_model(hp) -> None:
    """The peer's reference model is an LSTM with Luong general attention and input feeding: ours must be too."""
    if hp.cell != "lstm" or hp.attention != "luong_general" or not hp.input_feeding:
        raise InputError(
            f"bench-peer: the peer's model is LSTM + Luong general attention + input feeding; this config has "
            f"translate.cell={hp.cell}, translate.attention={hp.attention}, translate.input_feeding={hp.input_feeding}"
        )


def peer_vocabulary(tokens: list[str]) -> list[str]:
    """One of our vocabularies in OpenNMT-tf's format: its three specials first, then our tokens in our order."""
    return [*PEER_SPECIALS, *(t for t in tokens if t not in vocab.SPECIALS["tgt"])]


def detokenized(ids: np.ndarray, tokens: list[str]) -> str:
    """Our ids back as one line of space-joined tokens (<unk> for ours), which OpenNMT-tf splits on spaces."""
    return " ".join(tokens[i] for i in ids)


def write_peer_inputs(cfg: Config, examples, out: Path) -> dict:
    """train.src / train.tgt (our tokens, one pair a line) and src_vocab.txt / tgt_vocab.txt; returns their paths."""
    files = {}
    for side, name in ((0, "src"), (1, "tgt")):
        tokens = vocab.load_named(cfg, name)
        spaced = [t for t in tokens if any(c.isspace() for c in t)]
        if spaced:  # OpenNMT-tf would split such a token in two and count one token more than we do
            raise InputError(f"bench-peer: {name} vocabulary has tokens with white space: {spaced[:3]}")
        files[f"{name}_text"] = out / f"train.{name}"
        files[f"{name}_vocab"] = out / f"{name}_vocab.txt"
        write_lines(files[f"{name}_text"], [detokenized(pair[side], tokens) for pair in examples])
        write_lines(files[f"{name}_vocab"], peer_vocabulary(tokens))
    return files


def peer_run(hp, files: dict, model_dir: Path, warmup: int, steps: int) -> dict:
    """What tools/peer/opennmt_train.py reads: the model's sizes and OpenNMT-tf's run config (its YAML, as a dict)."""
    params = {"optimizer": "Adam", "learning_rate": hp.learning_rate, "label_smoothing": hp.label_smoothing}
    if hp.clip_norm > 0:
        params["optimizer_params"] = {"global_clipnorm": hp.clip_norm}
    return {
        "warmup": warmup,
        "steps": steps,
        "model": {
            "embedding_size": EMBEDDING_SIZE,
            "encoder_layers": hp.encoder_layers,
            "encoder_units": hp.encoder_units,  # per direction, as ours
            "decoder_layers": 1,
            "decoder_units": hp.decoder_units,
            "dropout": hp.dropout,
        },
        "opennmt": {
            "model_dir": str(model_dir),
            "data": {
                "train_features_file": str(files["src_text"]),
                "train_labels_file": str(files["tgt_text"]),
                "source_vocabulary": str(files["src_vocab"]),
                "target_vocabulary": str(files["tgt_vocab"]),
            },
            "params": params,
            "train": {
                "batch_size": hp.batch_size,
                "batch_type": "examples",
                "length_bucket_width": 1,
                "max_step": warmup + steps,
                "save_summary_steps": warmup,  # a report every warm-up-many steps: the first is the warm-up
                "save_checkpoints_steps": None,  # no checkpoint inside the timed steps
                "keep_checkpoint_max": 1,
            },
        },
    }


def check_peer(python: Path = PEER_PYTHON) -> None:
    if not python.is_file():
        raise InputError(
            f"bench-peer: {python} not found: the peer's virtualenv (OpenNMT-tf 2.32, TensorFlow 2.13) is missing",
            hint="`make bench-peer` creates .venv-peer, then runs this",
        )


def run_peer(run_dir: Path, run: dict, python: Path = PEER_PYTHON) -> dict:
    """Train the peer in its own virtualenv; its result.json."""
    check_peer(python)
    write_json(run_dir / "run.json", run)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    done = subprocess.run([str(python), str(PEER_SCRIPT), str(run_dir)], env=env, check=False)
    if done.returncode != 0:
        raise InputError(f"bench-peer: the peer's training failed (exit code {done.returncode}; its log is above)")
    return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))


def run_ours(cfg: Config, examples, warmup: int, steps: int) -> dict:
    """Our translator's training step at the same size, 256-d random embeddings in place of the pretrained ones."""
    hp = cfg.translate
    rng = np.random.default_rng(hp.seed)
    # Keras' default Embedding initialiser, uniform(-0.05, 0.05), as any randomly initialised embedding would be.
    src, tgt = (rng.uniform(-0.05, 0.05, (len(vocab.load_named(cfg, n)), EMBEDDING_SIZE)) for n in ("src", "tgt"))
    model, optimizer = train.build_translator(cfg, [src, tgt])  # in translate.mixed_precision, as training is
    speed = bench.train_speed(model, optimizer, hp, examples, warmup, steps)
    parameters = model.count_params()
    keras.backend.clear_session()
    return {
        "parameters": parameters,
        "train_tokens_per_s": speed["units_per_s"],
        "train_steps_timed": speed["steps"],
        "seconds": speed["seconds"],
    }


def summary(peer: dict, ours: dict, hp, host: dict) -> dict:
    """The report: both speeds, their ratio and whether it meets the goal, the sizes, the host."""
    ratio = ours["train_tokens_per_s"] / peer["train_tokens_per_s"]
    sizes = ("encoder_layers", "encoder_units", "decoder_units", "attention", "input_feeding", "batch_size")
    return {
        "unit": "real source + target tokens per second (target with </s>; padding not counted), warm-up excluded",
        "peer": {"name": "OpenNMT-tf SequenceToSequence", **peer},
        "ours": ours,
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "goal_met": ratio >= GOAL,
        "model": {"embedding_size": EMBEDDING_SIZE, **{k: getattr(hp, k) for k in sizes}},
        "ours_ties_output_to_embeddings": hp.tie_embeddings,
        "ours_mixed_precision": hp.mixed_precision,  # the peer computes in float32
        "machine": host,
    }


def run(cfg: Config) -> None:
    if "translate" not in tasks(cfg):
        raise InputError("bench-peer: the config defines no translate task ([translate.data] train is empty)")
    hp = cfg.translate
    check_model(hp)
    warmup, steps = steps_from_env()
    check_peer()  # before tokenizing, not after
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    host = {**machine(), "affinity": sorted(os.sched_getaffinity(0))}
    print(f"  {len(examples):,} pairs; {warmup} warm-up + {steps} timed steps a side, cores {host['affinity']}")
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        run_dir = Path(tmp)
        files = write_peer_inputs(cfg, examples, run_dir)
        peer = run_peer(run_dir, peer_run(hp, files, run_dir / "model", warmup, steps))
    print(f"  peer (OpenNMT-tf {peer['versions']['opennmt-tf']}): {peer['train_tokens_per_s']:,.0f} tokens/s")
    ours = run_ours(cfg, examples, warmup, steps)
    compute = "" if hp.mixed_precision == "off" else f" ({hp.mixed_precision} compute)"
    print(f"  ours{compute}: {ours['train_tokens_per_s']:,.0f} tokens/s")
    report = summary(peer, ours, hp, host)
    write_json(Path(cfg.paths.reports) / "bench_peer.json", report)
    met = "met" if report["goal_met"] else "not met"
    print(f"  ours / peer = {report['ratio']:.2f} (goal >= {GOAL}: {met})")
