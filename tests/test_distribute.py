"""tf.distribute: the translator's and the tagger's train steps give the same loss and update on two replicas as
on one, and two worker processes on localhost (MultiWorkerMirroredStrategy from TF_CONFIG) train to identical
weights.

Both run in subprocesses: logical devices and multi-worker strategies must be set up before TF runs an op."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.translate import corpus as translate_corpus
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


FILES_TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from pipeline.core import config, vocab
    from pipeline.translate import corpus
    from pipeline.translate import train as translate_train
    cfg = config.load("configs/tiny.toml", sys.argv[1:])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model, optimizer = translate_train.build_translator(cfg)
    examples = (corpus.train_files(cfg), corpus.shard_pairs(cfg, "train"))
    dataset, steps, mine = translate_train.sharded_batches(cfg, strategy, examples, 1, 0)
    step = translate_train.make_translate_step(model, optimizer, cfg.translate, strategy, dataset.element_spec)
    out = []
    for batch in dataset:
        parts = [strategy.experimental_local_results(x) for x in batch]
        targets = sum(int(tf.reduce_sum(tf.cast(t != vocab.PAD_ID, tf.int32))) for t in parts[2])
        loss, counts = step(*batch)
        out.append({"rows": [int(t.shape[0]) for t in parts[0]], "targets": targets, "counted": float(counts[0]),
                    "loss": float(loss)})
    traces = step.experimental_get_tracing_count()
    print(json.dumps({"steps": steps, "mine": len(mine), "batches": out, "traces": traces}))
    """
)


@pytest.mark.slow
def test_two_replicas_of_one_worker_read_their_own_file_batches(tmp_path):
    """translate.input = files on two local replicas: each replica gets its own batch of half the global size from
    the worker's one input pipeline, and the step's token count is both replicas' together."""
    cfg = tiny_config(tmp_path, "prepare.shard_pairs=20")
    write_parallel(cfg, synthetic_pairs(60, seed=7))
    args = [*path_overrides(tmp_path), *TINY_TRANSLATE, "translate.batch_size=8"]
    run = subprocess.run([sys.executable, "-c", FILES_TWO_REPLICAS, *args], cwd=ROOT, env=ENV, capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    pairs = sum(translate_corpus.shard_pairs(cfg, "train"))
    assert out["mine"] == 3 and out["steps"] == -(-pairs // 8) == len(out["batches"])  # one worker reads every shard
    assert all(len(b["rows"]) == 2 and max(b["rows"]) <= 4 for b in out["batches"])  # 4 pairs a replica at most
    assert [b["counted"] for b in out["batches"]] == [b["targets"] for b in out["batches"]]
    assert all(np.isfinite(b["loss"]) for b in out["batches"]) and out["traces"] == 1  # one trace for every shape


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


def start_workers(run: Path, stage: str, settings: list[str], data: Path | None = None) -> list[subprocess.Popen]:
    """Start `stage` as two MultiWorkerMirroredStrategy workers on localhost, each with its own paths under
    run/worker<i> (with `data`: the processed corpus, vocabularies and embeddings there, shared), logging to
    run/worker<i>.log."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    shared = [f'paths.{name}="{data / name}"' for name in ("processed", "vocab", "embeddings")] if data else []
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        command = [sys.executable, "-m", "pipeline", stage, "--config", "configs/tiny.toml",
                   *path_overrides(run / f"worker{index}"), *shared, *settings]  # fmt: skip
        log = open(run / f"worker{index}.log", "w")  # noqa: SIM115 (the child holds it)
        env = ENV | {"TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    return procs


def run_workers(run: Path, stage: str, settings: list[str], data: Path | None = None, code: int = 0) -> list[str]:
    """Run two workers (start_workers) to the end, each expected to exit with `code`; their logs."""
    run.mkdir(parents=True, exist_ok=True)
    procs = start_workers(run, stage, settings, data)
    try:
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:  # a worker left waiting on a collective of one that failed
            p.kill()
    logs = [(run / f"worker{i}.log").read_text() for i in range(2)]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == code, log[-4000:]
    return logs


FINGERPRINT = re.compile(r"worker (\d) of 2: weights fingerprint (\S+), the same as the chief's")


def assert_same_weights_chief_writes(run: Path, logs: list[str], model: str) -> list[dict]:
    """Both workers end with the chief's weights (each prints its fingerprint beside the chief's); only the chief
    wrote weights, checkpoints and history. The chief's history."""
    prints = [FINGERPRINT.search(log) for log in logs]
    assert all(prints), [log[-2000:] for log in logs]
    assert [int(p[1]) for p in prints] == [0, 1] and prints[0][2] == prints[1][2]
    assert (run / f"worker0/models/{model}/best.weights.h5").is_file()
    assert not (run / "worker1/models").exists() and not (run / "worker1/reports").exists()
    return json.loads((run / f"worker0/reports/{model}/history.json").read_text())


@pytest.mark.slow
def test_two_workers_on_localhost_agree_on_the_final_weights(tmp_path):
    for index in range(2):
        # The same pairs in another order: the same vocabularies and embeddings, but other batches, so the
        # workers end equal only if they really train together.
        pairs = synthetic_pairs(60, seed=7)
        write_parallel(tiny_config(tmp_path / f"worker{index}"), pairs if index == 0 else pairs[::-1])
    settings = [*TINY_TRANSLATE, "translate.epochs=2", "translate.strategy=multi_worker", "translate.batch_size=8"]
    logs = run_workers(tmp_path, "train-translate", settings)
    assert len(assert_same_weights_chief_writes(tmp_path, logs, "translate")) == 2
    assert "the chief evaluates" in logs[1] and "dev BLEU" not in logs[1]


@pytest.mark.slow
def test_two_workers_read_disjoint_shards_and_resume_after_one_is_killed(tmp_path):
    """translate.input = files on two workers: each reads its own shards, both end with the same weights, and a
    run whose second worker is killed mid-training resumes (both restarted) to the uninterrupted run's losses."""
    data = tmp_path / "data"
    cfg = tiny_config(data, "prepare.shard_pairs=20")
    write_parallel(cfg, synthetic_pairs(60, seed=7))  # 3 training shards
    counts = translate_corpus.shard_pairs(cfg, "train")
    steps = min(-(-(counts[0] + counts[2]) // 4), -(-counts[1] // 4))  # the smaller share, 4 pairs a worker a step
    settings = [
        *TINY_TRANSLATE,
        "translate.input=files",
        "translate.strategy=multi_worker",
        "translate.batch_size=8",
        "translate.epochs=6",
        "translate.patience=9",
        "translate.save_every=2",
        "translate.dropout=0.2",  # random masks: their generators' states must resume too
        "translate.word_dropout=0.1",
    ]
    logs = run_workers(tmp_path / "whole", "train-translate", settings, data)
    read = [re.search(r"reads (\d) of 3 shards \((.*)\), (\d+) steps", log) for log in logs]
    shards = [set(r[2].split(", ")) for r in read]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 3  # disjoint, together the corpus
    assert int(read[0][3]) == int(read[1][3]) == steps
    whole = assert_same_weights_chief_writes(tmp_path / "whole", logs, "translate")
    whole_weights = float(FINGERPRINT.search(logs[0])[2])

    killed = tmp_path / "killed"
    killed.mkdir()
    procs = start_workers(killed, "train-translate", settings, data)
    chief_log = killed / "worker0.log"
    try:
        deadline = time.monotonic() + 300
        while "checkpoint at step 2" not in chief_log.read_text():
            assert procs[0].poll() is None and time.monotonic() < deadline, chief_log.read_text()[-3000:]
            time.sleep(0.02)
        procs[1].kill()  # the second machine dies; the chief then waits on it, so the job is stopped and restarted
        assert procs[0].poll() is None, "the run ended before the kill"
        time.sleep(1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    logs = run_workers(killed, "train-translate", settings, data)
    assert re.search(r"resuming (at step|after epoch) \d+", logs[0]), logs[0][-3000:]
    resumed = assert_same_weights_chief_writes(killed, logs, "translate")
    assert [h["step"] for h in resumed] == [h["step"] for h in whole] == [steps * e for e in range(1, 7)]
    np.testing.assert_allclose([h["loss"] for h in resumed], [h["loss"] for h in whole], rtol=1e-5)
    assert float(FINGERPRINT.search(logs[0])[2]) == pytest.approx(whole_weights, rel=1e-6)


@pytest.mark.slow
def test_workers_with_other_shards_stop_at_once_naming_them(tmp_path):
    for index in range(2):  # a copy of the processed corpus that went wrong on one machine
        write_parallel(tiny_config(tmp_path / f"worker{index}", "prepare.shard_pairs=20"), synthetic_pairs(60, index))
    settings = [*TINY_TRANSLATE, "translate.input=files", "translate.strategy=multi_worker", "translate.batch_size=8"]
    logs = run_workers(tmp_path, "train-translate", settings, code=2)
    for index, log in enumerate(logs):
        assert f"the training shards or vocabularies differs between the 2 workers (worker {index}:" in log, log[-2000:]
        assert "Several machines" in log


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
    logs = run_workers(tmp_path, "train-ner", settings)
    assert len(assert_same_weights_chief_writes(tmp_path, logs, "ner")) == 2
