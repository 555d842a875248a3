"""tf.distribute: the translator's and the tagger's train steps give the same loss and update on two replicas as
on one, and two worker processes on localhost (MultiWorkerMirroredStrategy from TF_CONFIG) train to identical
weights.

Both run in subprocesses: logical devices and multi-worker strategies must be set up before TF runs an op."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from tests.conftest import (
    ROOT,
    TINY_NER,
    TINY_TRANSLATE,
    path_overrides,
    synthetic,
    synthetic_pairs,
    tiny_config,
    write_corpus,
    write_parallel,
)

ENV = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_DETERMINISTIC_OPS": "1"}

TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from pipeline.core import config, optim
    from pipeline.translate import batches as translate_batches
    from pipeline.translate import corpus as translate_corpus
    from pipeline.translate import train as translate_train
    cfg = config.load("configs/tiny.toml", sys.argv[1:])
    examples = translate_batches.translation_examples(cfg, translate_corpus.load_parallel(cfg, "train"))
    batch = next(translate_batches.translation_batches(examples, 9, seed=0))  # odd: the replicas get 5 and 4 rows
    out = {}
    for name in ("one device", "two replicas"):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if name == "two replicas" else None
        with (strategy or tf.distribute.get_strategy()).scope():
            model = translate_train.build_translator(cfg)[0]  # seeded: the same initial weights both times
            optimizer = optim.LazyAdam(0.01)
        step = translate_train.make_translate_step(model, optimizer, cfg.translate, strategy)
        losses = [float(step(*batch)[0]) for _ in range(3)]
        out[name] = {"losses": losses, "replicas": (strategy or tf.distribute.get_strategy()).num_replicas_in_sync,
                     "weight": float(tf.reduce_sum(model.trainable_variables[3]))}
    print(json.dumps(out))
    """
)


def one_and_two_replicas(script: str, args: list[str]) -> tuple[dict, dict]:
    """Run a TWO_REPLICAS-style script in a subprocess; its results on one device and on two replicas."""
    run = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    one, two = out["one device"], out["two replicas"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    return one, two


@pytest.mark.slow
def test_two_replicas_match_one_device(tmp_path):
    cfg = tiny_config(tmp_path, *TINY_TRANSLATE)
    write_parallel(cfg, synthetic_pairs(40, seed=6))
    one, two = one_and_two_replicas(TWO_REPLICAS, [*path_overrides(tmp_path), *TINY_TRANSLATE])
    # The same per-token loss of the global batch (not a replica's share, not the sum), then the same updates.
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert one["losses"][2] < one["losses"][0]
    assert two["weight"] == pytest.approx(one["weight"], rel=1e-4)


TAGGER_TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from pipeline.core import config, optim
    from pipeline.ner import train as ner_train
    from pipeline.ner.model import Tagger, dummy_inputs
    cfg = config.load("configs/tiny.toml", sys.argv[1:])
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(30, 8)).astype("float32")
    lengths = np.array([6, 3, 5, 2, 6, 4, 1])
    real = np.arange(6) < lengths[:, None]
    words = np.where(real, rng.integers(2, 30, real.shape), 0).astype("int32")
    chars = np.where(real[..., None], rng.integers(1, 5, (*real.shape, cfg.ner.max_word_length)), 0)
    features = {
        "words": words, "chars": chars.astype("int32"), "casing": np.where(real, 1 + words % 3, 0).astype("int32"),
        "key": np.where(real, words % 4, 0).astype("int32"),  # repeated keys: the memory has something to read
        "doc": np.array([0, 0, 0, 1, 1, 2, 2], "int32"),  # replica 0 takes documents 0 and 2, replica 1 document 1
    }
    tags = np.where(real, rng.integers(0, 3, real.shape), 0).astype("int32")
    soft = ()  # with ner.teacher: a teacher's marginals and transition counts (made up; the step only reads them)
    if cfg.ner.teacher:
        unary = rng.dirichlet(np.ones(3), real.shape).astype("float32") * real[..., None]
        soft = ((unary, np.einsum("bti,btj->bij", unary[:, :-1], unary[:, 1:]).astype("float32")),)
    out = {}
    for name in ("one device", "two replicas"):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if name == "two replicas" else None
        with (strategy or tf.distribute.get_strategy()).scope():
            keras.utils.set_random_seed(0)  # the same initial weights both times
            model = Tagger(cfg.ner, matrix, n_chars=5, n_tags=3)
            model(dummy_inputs(cfg.ner.max_word_length))
            optimizer = optim.LazyAdam(0.01)
        step = ner_train.make_train_step(model, optimizer, cfg.ner, strategy)
        losses = [float(step(features, tags, *soft)[0]) for _ in range(3)]
        # One document in the batch: replica 1 gets no sentence and adds nothing.
        losses.append(float(step(dict(features, doc=np.zeros(7, "int32")), tags, *soft)[0]))
        out[name] = {"losses": losses, "replicas": (strategy or tf.distribute.get_strategy()).num_replicas_in_sync,
                     "weights": [float(tf.reduce_sum(v)) for v in model.trainable_variables]}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("teacher", [[], ["ner.teacher=teacher", "ner.distill_weight=0.5"]], ids=["gold", "distil"])
def test_the_tagger_on_two_replicas_matches_one_device(tmp_path, teacher):
    # An ensemble of two with the document memory, no dropout (replicas draw other random numbers), and a clip
    # norm small enough that every step clips each member.
    settings = ["ner.char_dim=8", "ner.char_filters=8", "ner.units=16", "ner.lexicon=false", "ner.doc_memory=true",
                "ner.ensemble=2", "ner.dropout=0", "ner.word_dropout=0", "ner.pretrained_dropout=0",
                "ner.doc_memory_dropout=0", "ner.clip_norm=0.5", *teacher]  # fmt: skip
    one, two = one_and_two_replicas(TAGGER_TWO_REPLICAS, [*path_overrides(tmp_path), *settings])
    # The mean loss per sentence of the global batch, then the same clipped updates of every variable.
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert one["losses"][2] < one["losses"][0]
    assert two["weights"] == pytest.approx(one["weights"], rel=1e-4, abs=1e-5)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weights(path) -> dict[str, np.ndarray]:
    out = {}

    def keep(name, obj):  # returning anything but None would stop the walk
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(keep)
    return out


def run_workers(tmp_path, stage: str, settings: list[str]) -> list[dict[str, np.ndarray]]:
    """Run `stage` as two MultiWorkerMirroredStrategy workers on localhost, each with its own paths under
    tmp_path/worker<i> (data already there); the weights each one kept."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        base = tmp_path / f"worker{index}"  # each worker writes its own checkpoints; the chief's are the ones to keep
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        command = [sys.executable, "-m", "pipeline", stage, "--config", "configs/tiny.toml",
                   *path_overrides(base), *settings]  # fmt: skip
        procs.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=ENV | {"TF_CONFIG": json.dumps(tf_config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    model = stage.removeprefix("train-")
    return [_weights(tmp_path / f"worker{i}/models/{model}/best.weights.h5") for i in range(2)]


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def history(tmp_path, index: int, model: str) -> list[dict]:
    return json.loads((tmp_path / f"worker{index}/reports/{model}/history.json").read_text())


@pytest.mark.slow
def test_two_workers_on_localhost_agree_on_the_final_weights(tmp_path):
    for index in range(2):
        # The same pairs in another order: the same vocabularies and embeddings, but other batches, so the
        # workers end equal only if they really train together.
        pairs = synthetic_pairs(60, seed=7)
        write_parallel(tiny_config(tmp_path / f"worker{index}"), pairs if index == 0 else pairs[::-1])
    settings = [*TINY_TRANSLATE, "translate.epochs=2", "translate.strategy=multi_worker", "translate.batch_size=8"]
    a, b = run_workers(tmp_path, "train-translate", settings)
    assert [h["loss"] for h in history(tmp_path, 0, "translate")] == pytest.approx(
        [h["loss"] for h in history(tmp_path, 1, "translate")], rel=1e-6
    )
    assert_same_weights(a, b)


@pytest.mark.slow
def test_two_tagger_workers_on_localhost_agree_on_the_final_weights(tmp_path):
    sentences = synthetic(24, seed=3)
    write_corpus(tiny_config(tmp_path / "worker0"), sentences, doc_size=4)
    # Worker 1: the documents in another order, so other batches, but worker 0's vocabularies, embeddings and
    # statistics: the workers end equal only if they really train together.
    reordered = [s for i in reversed(range(0, 24, 4)) for s in sentences[i : i + 4]]
    write_corpus(tiny_config(tmp_path / "worker1"), reordered, doc_size=4)
    for name in ("vocab", "embeddings"):
        shutil.rmtree(tmp_path / "worker1" / name)
        shutil.copytree(tmp_path / "worker0" / name, tmp_path / "worker1" / name)
    settings = [*TINY_NER, "ner.epochs=2", "ner.strategy=multi_worker", "ner.batch_size=8"]
    a, b = run_workers(tmp_path, "train-ner", settings)
    assert [h["loss"] for h in history(tmp_path, 0, "ner")] == pytest.approx(
        [h["loss"] for h in history(tmp_path, 1, "ner")], rel=1e-6
    )
    assert_same_weights(a, b)
