"""One writer at a time: a stage run on paths another run of it holds stops at once; a stale lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline.core import lock
from pipeline.core.errors import InputError
from tests.conftest import ROOT, TINY, path_overrides, tiny_config

HOLDER = """
import sys, time
from pipeline.core import config, lock
cfg = config.load(sys.argv[1], sys.argv[2:])
with lock.hold(cfg, "vocab"):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_paths_stops_naming_the_first(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(TINY), *path_overrides(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "vocab", "--config", str(TINY), *path_overrides(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"vocab is already running on these paths: pid {holder.pid}" in proc.stderr
        assert "delete" in proc.stderr and holder.poll() is None  # at once: it did not wait for the holder to end
        assert not (tmp_path / "vocab").exists()  # it wrote nothing

        other = tiny_config(tmp_path / "elsewhere")  # other paths: no conflict
        with lock.hold(other, "vocab"):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_every_lock_is_released(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = lock.lock_path(cfg, "train-ner")
    path.parent.mkdir(parents=True)
    owner = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": 0, "command": "x"}
    path.write_text(json.dumps(owner))
    with lock.hold(cfg, "train-ner"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert "taking over a stale lock of train-ner" in capsys.readouterr().out
    assert not path.exists()
    with pytest.raises(RuntimeError), lock.hold(cfg, "train-ner"):
        raise RuntimeError("a failing stage")
    assert not path.exists()  # released on failure too


def test_a_lock_held_elsewhere_or_alive_refuses(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    path = lock.lock_path(cfg, "embed")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": 1, "host": "another-machine", "started": 0, "command": "pipeline embed"}))
    with pytest.raises(InputError, match="pid 1 on another-machine"), lock.hold(cfg, "embed"):
        pass
    assert path.exists()  # not ours to remove
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 1}}))
    with lock.hold(cfg, "embed"):  # a non-chief worker writes nothing shared and takes no lock
        pass
