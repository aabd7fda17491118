"""One live run per run folder: a second process is refused naming the holder; a killed holder blocks nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from continual.experiment import run_experiment
from continual.logging.run_folder import RunFolderError, RunFolderLock
from tests.conftest import ROOT, TINY, compose_config

# Holds the lock of argv[1] (creating the folder) and says so by writing argv[2]; sleeps until killed.
_HOLD = """
import sys, time
from pathlib import Path
from continual.logging.run_folder import RunFolderLock
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
RunFolderLock(sys.argv[1]).acquire()
Path(sys.argv[2]).write_text("ready")
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """``start(folder)``: a live process holding ``folder``'s lock; ``kill()``: SIGKILL it."""
    procs: list[subprocess.Popen] = []

    def start(folder):
        ready = tmp_path / f"ready{len(procs)}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), str(ready)], env=env, cwd=ROOT)
        procs.append(proc)
        deadline = time.time() + 30
        while not ready.exists():
            assert proc.poll() is None and time.time() < deadline, "the holder did not take the lock"
            time.sleep(0.01)
        return proc

    def kill(proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    yield start, kill
    for proc in procs:
        if proc.poll() is None:
            kill(proc)


def _listing(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_live_holder_is_named_and_its_record_kept_and_a_killed_one_blocks_nothing(tmp_path, holder):
    start, kill = holder
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    record = (run_dir / ".lock").read_text()
    assert json.loads(record)["pid"] == proc.pid

    with pytest.raises(RunFolderError) as refused:
        RunFolderLock(run_dir).acquire()
    message = str(refused.value)
    assert str(run_dir) in message and f"pid {proc.pid} on host {socket.gethostname()}, started " in message
    assert "Wait for that run to finish, or choose another run folder (hydra.run.dir=...)" in message
    assert (run_dir / ".lock").read_text() == record  # the refused process truncated nothing

    kill(proc)  # SIGKILL: no clean-up ran, the .lock file is still there
    assert (run_dir / ".lock").exists()
    with RunFolderLock(run_dir):
        assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderError, match=rf"pid {os.getpid()} "):  # another open file, same process
            RunFolderLock(run_dir).acquire()
    assert not (run_dir / ".lock").exists()
    RunFolderLock(run_dir).release()  # releasing a lock never taken does nothing


class _Stop(Exception):
    pass


def _stop_at_first_experience(line: str) -> None:
    if line.startswith("[e"):
        raise _Stop(line)


def test_run_experiment_is_refused_while_a_holder_lives_and_runs_once_it_is_killed(tmp_path, world_cache, holder):
    start, kill = holder
    cfg = compose_config(TINY, world_cache)
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    before = _listing(run_dir)
    with pytest.raises(RunFolderError, match=rf"run folder {run_dir} is in use by another run \(pid {proc.pid} "):
        run_experiment(cfg, run_dir, print_fn=lambda _: None)
    assert _listing(run_dir) == before == {".lock": before[".lock"]}  # no config.json, no checkpoint

    kill(proc)
    # Released when run_experiment raises ...
    with pytest.raises(_Stop):
        run_experiment(cfg, run_dir, print_fn=_stop_at_first_experience)
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / ".lock").exists()
    with RunFolderLock(run_dir):
        pass
    # ... and when it returns (here resuming from the checkpoint).
    lines: list[str] = []
    run_experiment(cfg, run_dir, print_fn=lines.append)
    assert any(line.startswith("resuming from") for line in lines)
    assert (run_dir / "report.json").exists() and not (run_dir / ".lock").exists()
    with RunFolderLock(run_dir):
        pass
