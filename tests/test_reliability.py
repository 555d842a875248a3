"""Faults a long run meets on a shared machine: kills, full disks, reruns. Each guarantee has a test here."""

import errno
import filecmp
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import __main__ as cli
from pipeline.core import files, vocab
from pipeline.stages import embed as embed_stage
from pipeline.stages import prepare as prepare_stage
from pipeline.stages import vocab as vocab_stage
from tests.conftest import ROOT, needs_data, tiny_config


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "artifact.txt"
    files.write_text(target, "old\n")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["artifact.txt"]


def test_disk_full_is_a_clear_error_and_earlier_artifacts_survive(tmp_path, monkeypatch, capsys):
    from tests.test_data import fake_raw

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[paths]\nraw = "{fake_raw(tmp_path / "raw")}"\nprocessed = "{tmp_path / "p"}"\n')
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


@needs_data
def test_a_stage_killed_while_writing_leaves_no_partial_artifact(raw_dir, tmp_path):
    """SIGKILL the prepare stage at several moments: each visible file is complete, and a rerun finishes."""
    reference = tiny_config(tmp_path / "ref", "prepare.max_train=0", "prepare.max_eval=0", raw=raw_dir)
    prepare_stage.run(reference)
    ref_files = {p.relative_to(tmp_path / "ref/processed"): p for p in (tmp_path / "ref/processed").rglob("*.*")}
    args = [f'paths.{k}="{tmp_path / "run" / k}"' for k in ("processed", "reports", "stamps")]
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "prepare",
        "--config",
        "configs/default.toml",
        f'paths.raw="{raw_dir}"',
    ]
    for delay in (0.3, 0.6, 0.9, 1.2):
        proc = subprocess.Popen(command + args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for rel, ref in ref_files.items():
            out = tmp_path / "run/processed" / rel
            assert not out.exists() or filecmp.cmp(out, ref, shallow=False), f"partial {rel} after {delay}s"
    assert subprocess.run(command + args, cwd=ROOT, capture_output=True).returncode == 0
    for rel, ref in ref_files.items():
        assert filecmp.cmp(tmp_path / "run/processed" / rel, ref, shallow=False)
    assert (tmp_path / "run/stamps/prepare.done").is_file()


def test_artifacts_get_ordinary_permissions(tmp_path):
    files.write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o644 == 0o644


def _train_command(base, *overrides) -> list[str]:
    from tests.conftest import path_overrides
    from tests.test_translate_pipeline import TINY_TRANSLATE

    settings = (*TINY_TRANSLATE, "translate.epochs=4", "translate.patience=9", "translate.batch_size=8")
    return [sys.executable, "-m", "pipeline", "train-translate", "--config", "configs/tiny.toml",
            *path_overrides(base), *settings, *overrides]  # fmt: skip


def _history(base) -> list[dict]:
    import json

    path = base / "reports/translate/history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def test_training_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    """SIGKILL train-translate in its third epoch; the rerun resumes after epoch 2 and ends with the same numbers."""
    from tests.test_translate_pipeline import synthetic_pairs, write_parallel

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


def test_same_seed_trains_to_identical_numbers(tmp_path):
    """Two runs of one config and seed (TF op determinism on, CPU): identical losses and dev scores."""
    from tests.test_translate_pipeline import synthetic_pairs, write_parallel

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
