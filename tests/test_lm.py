"""The character language model: the stage chain on a small text of its own, carried state, sampling, and the
exported `generate` signature reloaded in a fresh process."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.core import config, stages, trainer
from pipeline.core.errors import InputError
from pipeline.lm import corpus, generate, train
from pipeline.lm import model as lm_model
from pipeline.lm.config import Lm
from tests.conftest import ROOT, assert_best_weights_are_the_average, path_overrides, write_file

TINY_LM = ROOT / "configs" / "tiny-lm.toml"
# A 2,000-character text with a few hundred distinct words: enough to overfit, not a repeated phrase.
WORDS = "the king and queen of england went to see a play about rome while it rained on the tower bridge".split()


def small_text(n: int = 2000, seed: int = 0) -> str:
    rng, out = np.random.default_rng(seed), []
    while sum(map(len, out)) < n:
        out.append(" ".join(rng.choice(WORDS, size=rng.integers(3, 9))).capitalize() + ".\n")
    return "".join(out)[:n]


def lm_config(base, *overrides) -> config.Config:
    return config.load(TINY_LM, [*path_overrides(base / "run"), *overrides])


def run_stages(cfg, *names):
    for name in names:
        stages.run(cfg, name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny model trained on a 2,000-character text read as train and as valid (so it can overfit)."""
    base = tmp_path_factory.mktemp("lm")
    text = write_file(base / "text.txt", small_text())
    cfg = lm_config(
        base,
        f'lm.data.train="{text}"',
        f'lm.data.valid="{text}"',
        "lm.units=128",
        "lm.dropout=0.0",
        "lm.learning_rate=0.01",
        "lm.epochs=60",
        "lm.patience=60",
        "lm.lr_patience=60",
    )
    run_stages(cfg, "prepare", "vocab", "embed", "train-lm", "evaluate-lm")
    return cfg


def test_tiny_model_overfits_a_2000_character_text(trained):
    metrics = json.loads((config_reports(trained) / "lm/metrics.json").read_text())
    assert metrics["valid"]["nats_per_char"] < 0.3
    assert metrics["valid"]["bits_per_char"] == pytest.approx(metrics["valid"]["nats_per_char"] / math.log(2))
    assert {s["temperature"] for s in metrics["samples"]} == {0.5, 0.8, 1.0}


def config_reports(cfg):
    from pathlib import Path

    return Path(cfg.paths.reports)


def test_the_state_is_carried_between_windows_and_reset_between_epochs():
    """run_epoch hands each window the state the previous one ended in, and starts every epoch from zeros."""
    hp = Lm(units=4, layers=1, embed_dim=2, batch_size=2, bptt=3)
    model = lm_model.build(hp, 6)
    seen = []

    def step(x, y, states):
        seen.append([s.numpy().copy() for s in states])
        return tf.constant(1.0), [s + 1.0 for s in states]

    x = np.zeros((2, 9), np.int32)
    state = trainer.LoopState(hp.learning_rate)
    for epoch in (1, 2):
        cursor = trainer.Cursor(state, trainer.Schedule(2, 1, 0, hp.learning_rate), manager=None)
        train.run_epoch(step, x, x, model, hp, epoch, cursor)
    assert state["epoch"] == 2 and state["step"] == 6
    sums = [float(sum(s.sum() for s in states)) for states in seen]
    per_state = 2 * 4  # [batch, units] ones added per state per window
    assert sums == [0, 2 * per_state, 4 * per_state, 0, 2 * per_state, 4 * per_state]


def test_carried_state_changes_the_next_windows_predictions():
    keras.utils.set_random_seed(3)
    model = lm_model.build(Lm(units=16, layers=2, embed_dim=8), 10)
    first, second = (tf.constant(np.random.default_rng(i).integers(2, 10, (1, 12)), tf.int32) for i in (0, 1))
    _, after_first = model(first, model.zero_states(1))
    carried, _ = model(second, after_first)
    reset, _ = model(second, model.zero_states(1))
    assert np.abs(carried.numpy() - reset.numpy()).max() > 1e-4
    # and one call over both windows equals the two calls with the state carried
    whole, _ = model(tf.concat([first, second], 1), model.zero_states(1))
    np.testing.assert_allclose(whole.numpy()[:, 12:], carried.numpy(), atol=1e-5)


def test_the_step_by_step_cell_path_equals_the_layer_path():
    for cell in ("lstm", "gru"):
        model = lm_model.build(Lm(cell=cell, units=8, layers=2, embed_dim=4), 7)
        ids = tf.constant(np.random.default_rng(0).integers(0, 7, (3, 5)), tf.int32)
        logits, _ = model(ids, model.zero_states(3))
        states = model.zero_states(3)
        for t in range(5):
            step, states = model.step(ids[:, t], states)
        np.testing.assert_allclose(step.numpy(), logits.numpy()[:, -1], atol=1e-5)


@pytest.fixture(scope="module")
def sampler(trained):
    return generate.sampler(trained)


def greedy(s: generate.Sampler, prompt: str, n: int) -> str:
    """Greedy decoding written out in Python: argmax of the model's next-character logits, n times."""
    chars = s.chars
    ids = train.encode(prompt, chars)
    states = s.model.zero_states(1)
    for i in ids:
        logits, states = s.model.step(tf.constant([i], tf.int32), states)
    out = []
    for _ in range(n):
        masked = logits.numpy()[0].copy()
        masked[:2] = -np.inf
        best = int(masked.argmax())
        out.append(chars[best])
        logits, states = s.model.step(tf.constant([best], tf.int32), states)
    return "".join(out)


def test_temperature_towards_zero_is_greedy_decoding(sampler):
    want = greedy(sampler, "The king", 60)
    assert generate.generate_texts(sampler, ["The king"], 0.0, 60, 1) == [want]
    assert generate.generate_texts(sampler, ["The king"], 1e-4, 60, 7) == [want]


def test_the_same_seed_gives_the_same_text_and_another_seed_another(sampler):
    a = generate.generate_texts(sampler, ["The", "The"], 1.0, 200, 5)
    assert a == generate.generate_texts(sampler, ["The", "The"], 1.0, 200, 5)
    assert a[0] == a[1]  # a row's draw depends on its own seed, not on its neighbours
    assert a[0] != generate.generate_texts(sampler, ["The"], 1.0, 200, 6)[0]


def test_prompts_outside_the_vocabulary_and_empty_prompts_work(sampler):
    assert "Ж" not in sampler.chars and "😀" not in sampler.chars
    ids = sampler.encode(tf.constant(["ЖThe😀", "", b"\xff\xfe".decode("latin-1")]))
    assert ids.row_lengths().numpy().tolist() == [6, 1, 3]  # the start id, then one id per character
    assert ids[0].numpy().tolist()[1] == 1 and ids[0].numpy().tolist()[-1] == 1  # <unk>
    out = generate.generate_texts(sampler, ["ЖThe😀", ""], 0.8, 50, 1)
    assert [len(t) for t in out] == [50, 50]
    assert all(c in sampler.chars for t in out for c in t)


def test_lengths_are_per_row_and_capped(sampler):
    fn = tf.function(sampler.generate, input_signature=generate.SIGNATURE, autograph=False)
    out = fn(
        tf.constant(["a", "b", "c"]),
        tf.constant([0.8, 0.8, 0.8]),
        tf.constant([0, 5, 10**9]),
        tf.constant([1, 2, 3], tf.int64),
    )
    assert [len(t.decode()) for t in out["text"].numpy()] == [0, 5, sampler.max_generate]


def test_the_exported_signature_gives_python_s_text_in_a_fresh_process(trained, sampler):
    run_stages(trained, "export-lm")
    export_dir = generate.lm_dir(trained) / "1"
    want = generate.generate_texts(sampler, ["The king", ""], 0.8, 120, 11)
    script = (
        "import json, sys, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "out = m.signatures['generate'](prompt=tf.constant(['The king', '']), temperature=tf.constant([0.8, 0.8]),\n"
        "    length=tf.constant([120, 120]), seed=tf.constant([11, 11], tf.int64))\n"
        "print(json.dumps([t.decode() for t in out['text'].numpy()]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(export_dir)], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == want
    info = json.loads((export_dir / "assets.extra/export.json").read_text())
    assert info["model"] == "lm" and "generate" in info["signatures"]
    expected = json.loads((export_dir / "assets.extra/expected_outputs.json").read_text())
    assert any(len(c["inputs"]["prompt"][0]) > 10_000 for c in expected["calls"])  # the hostile long prompt


def test_the_generate_command(trained, capsys):
    from pipeline.__main__ import main

    args = ["generate", "The king", "--length", "40", "--seed", "3", "--config", str(TINY_LM)]
    args += [x for o in path_overrides(config_reports(trained).parent) for x in ("--set", o)]
    args += ["--set", f"lm.data.train={trained.lm_data.train}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("The king") and len(out.rstrip("\n")) == len("The king") + 40
    assert main([*args, "--length", "-1"]) == 2


def test_bad_text_is_an_error_naming_the_line(tmp_path):
    bad = write_file(tmp_path / "bad.txt", b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"bad.txt:3: invalid UTF-8"):
        corpus.read_text(bad)
    with pytest.raises(InputError, match="no text"):
        corpus.read_text(write_file(tmp_path / "empty.txt", "  \n"))
    cfg = lm_config(tmp_path, f'lm.data.train="{bad}"')
    with pytest.raises(InputError):
        stages.run(cfg, "prepare")
    assert not (tmp_path / "run/processed/lm").exists()  # nothing half-written


def test_an_averaged_lm_is_scored_and_saved_as_its_average(tmp_path, capsys):
    text = write_file(tmp_path / "t.txt", small_text(1500))
    cfg = lm_config(tmp_path, f'lm.data.train="{text}"', "lm.epochs=1", "lm.average_decay=0.9")
    run_stages(cfg, "prepare", "vocab", "train-lm")
    assert "(weights " in capsys.readouterr().out  # the weights' own valid loss beside the average's
    history = json.loads((tmp_path / "run/reports/lm/history.json").read_text())
    assert set(history[0]) >= {"valid_loss", "valid_loss_unaveraged"}
    assert history[0]["valid_loss"] != history[0]["valid_loss_unaveraged"]
    assert_best_weights_are_the_average(generate.load_model(cfg), generate.lm_dir(cfg))


def test_the_customary_split_is_the_last_tenth(tmp_path):
    text = write_file(tmp_path / "t.txt", "abcdefghij" * 100)
    cfg = lm_config(tmp_path, f'lm.data.train="{text}"', "lm.data.max_chars=0")
    stages.run(cfg, "prepare")
    assert corpus.load_text(cfg, "train") == ("abcdefghij" * 100)[:900]
    assert corpus.load_text(cfg, "valid") == ("abcdefghij" * 100)[900:]
    report = json.loads((tmp_path / "run/reports/data.json").read_text())
    assert report["lm"]["splits"]["valid"]["characters"] == 100 and "last 100" in report["lm"]["held_out"]["valid"]


def test_make_lm_on_a_users_own_text_runs_every_stage_once(tmp_path):
    """`make lm` on a config beside the user's own UTF-8 text (Greek here): the chain, the report and the export,
    and a second run does nothing."""
    import dataclasses
    import os

    write_file(tmp_path / "text/mine.txt", "Καλημέρα κόσμε. Ένα μικρό κείμενο.\n" * 60)
    paths = "\n".join(f'{f.name} = "{tmp_path / f.name}"' for f in dataclasses.fields(config.Paths))
    cfg_file = tmp_path / "my.toml"
    cfg_file.write_text(
        f'base = "{TINY_LM}"\n[lm.data]\ntrain = "text/mine.txt"\nmax_chars = 0\n[paths]\n{paths}\n', encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def make(*args):
        proc = subprocess.run(
            ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return {
            line[1:].split("]")[0] for line in proc.stdout.splitlines() if line.startswith("[") and "] done" in line
        }

    assert {"prepare", "vocab", "train-lm", "evaluate-lm", "export-lm", "report"} <= make("lm", f"CONFIG={cfg_file}")
    assert make("lm", f"CONFIG={cfg_file}") == set()
    assert (tmp_path / "models/lm/1/saved_model.pb").is_file()
    assert "Character language model" in (tmp_path / "reports/index.md").read_text()
    assert (
        json.loads((tmp_path / "vocab/lm_chars.txt").read_text().splitlines()[2])
        in "Καλημέρα κόσμε. Ένα μικρό κείμενο.\n"
    )
