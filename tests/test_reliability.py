"""Faults a long run meets on a shared machine: kills, full disks, reruns. Each guarantee has a test here."""

import errno
import filecmp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import __main__ as cli
from pipeline.core import files, vocab
from pipeline.stages import embed as embed_stage
from pipeline.stages import prepare as prepare_stage
from pipeline.stages import vocab as vocab_stage
from tests.conftest import (
    ROOT,
    TINY_TRANSLATE,
    fake_raw,
    needs_data,
    path_overrides,
    synthetic_pairs,
    tiny_config,
    write_parallel,
)


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "artifact.txt"
    files.write_text(target, "old\n")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["artifact.txt"]


def test_disk_full_is_a_clear_error_and_earlier_artifacts_survive(tmp_path, monkeypatch, capsys):
    cfg_file = tmp_path / "c.toml"
    base = ROOT / "configs/default.toml"
    cfg_file.write_text(
        f'base = "{base}"\n[paths]\nraw = "{fake_raw(tmp_path / "raw")}"\nprocessed = "{tmp_path / "p"}"\n'
    )
    assert cli.main(["prepare", "--config", str(cfg_file)]) == 0
    before = (tmp_path / "p/ner/train.conll").read_text()

    real_replace, calls = os.replace, []

    def full_disk(src, dst):  # the third file of the stage hits a full disk
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    (tmp_path / "raw/conll2003/train.txt").write_text("Other NNP B-NP B-PER\n")
    assert cli.main(["prepare", "--config", str(cfg_file)]) == 2
    assert "no space left on the device" in capsys.readouterr().err
    assert (tmp_path / "p/ner/test.conll").read_text() == before  # not yet rewritten: intact
    assert not [p for p in (tmp_path / "p").rglob(".*.tmp")]


@pytest.mark.slow
@needs_data
def test_same_config_gives_identical_vocabularies_and_embeddings(raw_dir, tmp_path):

    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(tmp_path / name, raw=raw_dir)
        prepare_stage.run(cfg)
        vocab_stage.run(cfg)
        embed_stage.run(cfg)  # includes German Word2Vec, trained with embed.seed and one worker thread
        runs.append(tmp_path / name)
    names = [f"{n}.txt" for n in vocab.NAMES]
    match, mismatch, errors = filecmp.cmpfiles(runs[0] / "vocab", runs[1] / "vocab", names, shallow=False)
    assert len(match) == len(vocab.NAMES) and not mismatch and not errors
    matrices = ["ner_words.npy", "src.npy", "tgt.npy"]
    match, mismatch, errors = filecmp.cmpfiles(runs[0] / "embeddings", runs[1] / "embeddings", matrices, shallow=False)
    assert match == matrices, (mismatch, errors)


# The prepare stage as `python -m pipeline` runs it, except that its STALL_AT-th file opened for writing under
# WATCHED gets half of its text, flushed to disk, and then waits to be killed, after naming that file in MARKER.
# A kill that waits for the marker lands mid-write every time, not just when a fixed sleep happens to hit a write.
# Usage: python -c STALLING STALL_AT MARKER WATCHED STAGE-ARGS...
STALLING = """
import builtins, io, os, runpy, sys, time

stall_at, marker, watched = int(sys.argv[1]), sys.argv[2], os.path.realpath(sys.argv[3]) + os.sep
real_open, opened = io.open, [0]


class Stalling:
    def __init__(self, f, path):
        self.f, self.path = f, path

    def write(self, text):
        self.f.write(text[: len(text) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        with real_open(marker + ".part", "w") as m:
            m.write(self.path)
        os.replace(marker + ".part", marker)
        time.sleep(3600)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)


def stalling_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    path = os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else ""
    if set(mode) & set("wax") and path.startswith(watched):
        opened[0] += 1
        if opened[0] == stall_at:
            return Stalling(f, path)
    return f


io.open = builtins.open = stalling_open
sys.argv = ["pipeline", *sys.argv[4:]]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""


@needs_data
def test_a_stage_killed_while_writing_leaves_no_partial_artifact(raw_dir, tmp_path):
    """SIGKILL the prepare stage halfway through its first, second and last file: each time the kill lands
    mid-write, every visible file is complete, and a rerun finishes."""
    reference = tiny_config(tmp_path / "ref", "prepare.max_train=0", "prepare.max_eval=0", raw=raw_dir)
    prepare_stage.run(reference)
    ref_files = {p.relative_to(tmp_path / "ref/processed"): p for p in (tmp_path / "ref/processed").rglob("*.*")}
    processed = tmp_path / "run/processed"
    args = [f'paths.{k}="{tmp_path / "run" / k}"' for k in ("processed", "reports", "stamps")]
    stage = ["prepare", "--config", "configs/default.toml", f'paths.raw="{raw_dir}"', *args]
    assert len(ref_files) > 2
    for stall_at in (1, 2, len(ref_files)):
        marker, log = tmp_path / f"stalled-{stall_at}", tmp_path / f"stderr-{stall_at}"
        with log.open("w") as err:
            command = [sys.executable, "-c", STALLING, str(stall_at), str(marker), str(processed), *stage]
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 300
            while not marker.exists():  # the kill waits until the stage is halfway through that write
                assert proc.poll() is None, f"prepare ended before its write {stall_at}: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"prepare never reached its write {stall_at}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # The kill landed mid-write: the file being written holds the first part of an artifact, no more ...
        partial = Path(marker.read_text()).read_bytes()
        refs = [ref.read_bytes() for ref in ref_files.values()]
        assert any(0 < len(partial) < len(ref) and ref.startswith(partial) for ref in refs), "the kill missed"
        # ... and no visible artifact is that partial file, or any other incomplete one.
        for rel, ref in ref_files.items():
            out = processed / rel
            assert not out.exists() or filecmp.cmp(out, ref, shallow=False), f"partial {rel}, kill {stall_at}"
        assert not (tmp_path / "run/stamps/prepare.done").exists()
    rerun = subprocess.run([sys.executable, "-m", "pipeline", *stage], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for rel, ref in ref_files.items():
        assert filecmp.cmp(processed / rel, ref, shallow=False)
    assert (tmp_path / "run/stamps/prepare.done").is_file()


def test_artifacts_get_ordinary_permissions(tmp_path):
    files.write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o644 == 0o644


def _train_command(base, *overrides) -> list[str]:
    settings = (*TINY_TRANSLATE, "translate.epochs=4", "translate.patience=9", "translate.batch_size=8")
    return [sys.executable, "-m", "pipeline", "train-translate", "--config", "configs/tiny.toml",
            *path_overrides(base), *settings, *overrides]  # fmt: skip


def _history(base) -> list[dict]:
    import json

    path = base / "reports/translate/history.json"
    return json.loads(path.read_text()) if path.is_file() else []


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    """SIGKILL train-translate in its third epoch; the rerun resumes after epoch 2 and ends with the same numbers."""
    env = os.environ | {"TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in ("whole", "killed"):
        write_parallel(tiny_config(tmp_path / name), synthetic_pairs(300, seed=3))
    whole = subprocess.run(_train_command(tmp_path / "whole"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]

    proc = subprocess.Popen(
        _train_command(tmp_path / "killed"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:  # kill a moment after the third epoch's first progress line
        if line.lstrip().startswith("epoch 3 batches"):
            time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed mid-epoch"
    assert [h["epoch"] for h in _history(tmp_path / "killed")] == [1, 2]

    rerun = subprocess.run(_train_command(tmp_path / "killed"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming after epoch 2" in rerun.stdout
    done, ref = _history(tmp_path / "killed"), _history(tmp_path / "whole")
    assert [h["epoch"] for h in done] == [1, 2, 3, 4]
    for a, b in zip(done, ref, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["dev_bleu"] == pytest.approx(
            b["dev_bleu"], abs=0.5
        )


@pytest.mark.slow
def test_training_killed_between_saved_steps_resumes_on_the_same_batches(tmp_path):
    """save_every = 3: SIGKILL just after a checkpoint inside epoch 2 (38 batches an epoch); the rerun resumes at
    that step, not at the epoch's start, and ends with the numbers of an uninterrupted run, epoch 2 included.
    Dropout and word dropout are on: their random states are part of the checkpoint."""
    env = os.environ | {"TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in ("whole", "killed"):
        write_parallel(tiny_config(tmp_path / name), synthetic_pairs(300, seed=3))
    steps = ("translate.save_every=3", "translate.epochs=3", "translate.dropout=0.3", "translate.word_dropout=0.1")
    command = _train_command(tmp_path / "whole", *steps)
    whole = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "checkpoint at step 42" in whole.stdout

    command = _train_command(tmp_path / "killed", *steps)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.strip() == "checkpoint at step 42":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed mid-epoch"
    assert [h["epoch"] for h in _history(tmp_path / "killed")] == [1]

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = re.search(r"resuming at step (\d+) \(batch (\d+) of epoch 2\)", rerun.stdout)
    assert resumed and int(resumed[1]) >= 42 and int(resumed[2]) < 38, rerun.stdout[:2000]
    done, ref = _history(tmp_path / "killed"), _history(tmp_path / "whole")
    assert [(h["epoch"], h["step"]) for h in done] == [(1, 38), (2, 76), (3, 114)]
    for a, b in zip(done, ref, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["dev_bleu"] == pytest.approx(b["dev_bleu"])


def test_steps_schedule_evaluates_every_n_steps_and_stops_at_max_steps(tmp_path, capsys):
    """eval_every = 10 inside 38-batch epochs: evaluations at steps 10, 20, 30, at the end of epoch 1 (38) ...,
    until max_steps = 45 (an evaluation there too); the history says where in the epochs each one fell."""
    cfg = tiny_config(tmp_path)
    write_parallel(cfg, synthetic_pairs(300, seed=3))
    settings = (
        *TINY_TRANSLATE,
        "translate.batch_size=8",
        "translate.patience=9",
        "translate.eval_every=10",
        "translate.max_steps=45",
    )
    assert cli.main(["train-translate", "--config", "configs/tiny.toml", *path_overrides(tmp_path), *settings]) == 0
    history = _history(tmp_path)
    assert [h["step"] for h in history] == [10, 20, 30, 38, 40, 45]
    assert [h["epoch"] for h in history] == [round(10 / 38, 3), round(20 / 38, 3), round(30 / 38, 3), 1, 1.053, 1.184]
    assert history[-1]["stopped_by"] == "max_steps"
    out = capsys.readouterr().out
    assert "epoch 0.26  loss" in out and "stopped by the step limit (max_steps)" in out


@pytest.mark.slow
def test_same_seed_trains_to_identical_numbers(tmp_path):
    """Two runs of one config and seed (TF op determinism on, CPU): identical losses and dev scores."""
    env = os.environ | {"TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = []
    for name in ("a", "b"):
        write_parallel(tiny_config(tmp_path / name), synthetic_pairs(100, seed=4))
        cmd = _train_command(
            tmp_path / name, "translate.epochs=2", "translate.dropout=0.3", "translate.word_dropout=0.1"
        )
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append([(h["loss"], h["dev_bleu"]) for h in _history(tmp_path / name)])
    assert runs[0] == runs[1] and len(runs[0]) == 2
