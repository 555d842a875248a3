"""One writer at a time: a stage takes a lock for its name and the config's [paths] before it runs.

    <paths.stamps>/locks/<stage>.<digest of [paths]>.lock   JSON: pid, host, stage, command, started

A second run of the same stage on the same paths stops at once, naming the process that holds the lock, instead
of two runs writing one checkpoint. A lock whose process is gone (killed, or the machine restarted) is stale and
is taken over with a note. Only the chief of a multi-worker cluster locks: the other workers write nothing shared.
"""

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import InputError


def lock_path(cfg: Config, stage: str) -> Path:
    paths = {k: os.path.abspath(v) for k, v in cfg.section_dict("paths").items()}
    digest = hashlib.sha256(json.dumps(paths, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.paths.stamps) / "locks" / f"{stage}.{digest}.lock"


def _alive(pid: int) -> bool:
    """A process with this pid runs here (and, where /proc tells, it is a Python process: pids get reused)."""
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        command = cmdline.read_bytes()
    except OSError:
        return True
    return b"python" in command or b"pipeline" in command


def _chief() -> bool:
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0)


def _owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {}  # unreadable: a writer died mid-write; treated as stale


def _busy(path: Path, stage: str, owner: dict) -> InputError:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return InputError(
        f"{stage} is already running on these paths: pid {owner.get('pid')} on {owner.get('host')}, started "
        f"{started}: {owner.get('command', '')}",
        hint=f"wait for it or stop it; if no such process runs any more, delete {path}",
    )


@contextlib.contextmanager
def hold(cfg: Config, stage: str):
    """Hold the stage's lock while the block runs; refuse if a live process holds it, take it over if stale."""
    if not _chief():
        yield
        return
    path = lock_path(cfg, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "started": time.time()}
    mine["command"] = " ".join(sys.argv)
    for _ in range(3):  # another run may take over the same stale lock at the same moment: retry the race
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is None:
                continue  # released between our two calls
            if owner and owner.get("host") != mine["host"]:
                raise _busy(path, stage, owner) from None  # another machine's process: cannot tell if it runs
            if owner and _alive(int(owner.get("pid", 0))):
                raise _busy(path, stage, owner) from None
            print(f"  taking over a stale lock of {stage} (pid {owner.get('pid', '?')} no longer runs): {path}")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mine, f)
        break
    else:
        raise InputError(f"{path}: could not take the lock of {stage}", hint="another run is starting; try again")
    try:
        yield
    finally:
        if (_owner(path) or {}).get("pid") == mine["pid"]:
            path.unlink(missing_ok=True)
