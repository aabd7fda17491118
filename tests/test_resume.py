"""Reliability: exact resume after a kill, clear errors on bad input, nothing lost or overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple

import pytest
import torch

from continual.checkpoint import CheckpointError
from continual.experiment import run_experiment
from continual.logging.run_folder import RunFolderError
from continual.loop import NonFiniteLossError
from tests.conftest import ROOT, TINY, compose_config


class _Stop(Exception):
    pass


def _stop_after(n_lines: int):
    """A print function that interrupts the run after ``n`` experience lines (after their checkpoint)."""
    seen = []

    def print_fn(line: str) -> None:
        if line.startswith("[e"):
            seen.append(line)
            if len(seen) == n_lines:
                raise _Stop(line)
    return print_fn


def _numbers(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


def test_interrupted_run_resumes_to_the_same_report(tmp_path, world_cache):
    cfg = compose_config(TINY, world_cache)
    whole = run_experiment(cfg, tmp_path / "whole", print_fn=lambda _: None).to_dict()
    with pytest.raises(_Stop):
        run_experiment(cfg, tmp_path / "cut", print_fn=_stop_after(1))
    assert (tmp_path / "cut" / "checkpoint.pt").exists() and not (tmp_path / "cut" / "report.json").exists()
    lines: list[str] = []
    resumed = run_experiment(cfg, tmp_path / "cut", print_fn=lines.append).to_dict()
    assert any(line.startswith("resuming from") for line in lines)
    assert _numbers(resumed) == _numbers(whole)
    # A finished run is not run again: the saved report comes back.
    again = run_experiment(cfg, tmp_path / "cut", print_fn=lines.append).to_dict()
    assert _numbers(again) == _numbers(whole) and "already complete" in lines[-1]


def test_checkpoint_loads_with_weights_only_and_holds_no_training_set(tmp_path, world_cache):
    cfg = compose_config(TINY, world_cache)
    run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None)
    path = tmp_path / "r" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["loop"]["next_experience"] == cfg["benchmark"]["n_experiences"]
    assert {"python", "torch", "numpy"} <= set(ckpt["rng"])
    n_train = cfg["benchmark"]["n_experiences"] * cfg["benchmark"]["categories_per_experience"] \
        * cfg["benchmark"]["train_per_category"]
    image_bytes = n_train * 3 * 32 * 32
    assert path.stat().st_size < image_bytes + 2**20  # memory (48 images) and weights only


def _cli(run_dir, extra=(), **popen):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "2",
           "CONTINUAL_CACHE": str(popen.pop("cache"))}
    args = [sys.executable, str(ROOT / "experiments" / "train.py"), *TINY, "train.epochs=6",
            "benchmark.train_per_category=60", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _mid_experience(ckpt) -> bool:
    try:
        return torch.load(ckpt, weights_only=True)["loop"]["progress"]["exp_steps"] > 0
    except Exception:  # noqa: BLE001 - not there yet (the rename is atomic, so never half a file)
        return False


def test_sigkill_mid_experience_then_resume_gives_identical_report(tmp_path, world_cache):
    every = ["train.checkpoint_every=7"]  # a step count that falls inside experiences
    whole = _cli(tmp_path / "whole", every, cache=world_cache)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-2000:]

    victim = _cli(tmp_path / "cut", every, cache=world_cache)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 240
    while not _mid_experience(ckpt) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    time.sleep(0.1 + 0.4 * torch.rand(()).item())  # a few steps past that checkpoint, at no chosen step
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "report.json").exists()
    loop = torch.load(ckpt, weights_only=True)["loop"]
    assert loop["next_experience"] < 3  # killed before the end

    again = _cli(tmp_path / "cut", every, cache=world_cache)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert f"resuming from {ckpt} at step {loop['progress']['steps']}" in out
    a = json.loads((tmp_path / "whole" / "report.json").read_text())
    b = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert _numbers(a) == _numbers(b)


def test_run_folder_of_another_config_is_refused_and_untouched(tmp_path, world_cache):
    run_experiment(compose_config(TINY, world_cache), tmp_path / "r", print_fn=lambda _: None)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    with pytest.raises(RunFolderError, match=r"different config \(memory.size: 48 there, 0 now\)"):
        run_experiment(compose_config([*TINY, "memory.size=0"], world_cache), tmp_path / "r")
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}


def test_moving_the_cache_or_the_console_settings_keeps_a_finished_run(tmp_path, world_cache):
    """Where inputs are cached and how progress is shown do not change the numbers: a sweep run
    again with another cache folder finds its finished runs instead of refusing them; a different
    setting elsewhere is still named (and not the cache path) when it is refused."""
    first = run_experiment(compose_config(TINY, world_cache), tmp_path / "r", print_fn=lambda _: None)
    moved = compose_config([*TINY, "progress=true"], tmp_path / "other-cache")
    lines = []
    again = run_experiment(moved, tmp_path / "r", print_fn=lines.append)
    assert again.to_dict() == first.to_dict() and "already complete" in lines[-1]
    assert not (tmp_path / "other-cache").exists()  # nothing was rendered again
    with pytest.raises(RunFolderError, match=r"different config \(benchmark.seed: 0 there, 1 now\)"):
        run_experiment(compose_config([*TINY, "seed=1"], tmp_path / "other-cache"), tmp_path / "r")


@pytest.mark.parametrize("damage", ["truncated", "foreign", "garbage"])
def test_bad_checkpoint_fails_with_a_clear_message_and_is_kept(tmp_path, world_cache, damage):
    cfg = compose_config(TINY, world_cache)
    with pytest.raises(_Stop):
        run_experiment(cfg, tmp_path / "r", print_fn=_stop_after(1))
    ckpt = tmp_path / "r" / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"state_dict": torch.zeros(3)}, ckpt)
    else:
        ckpt.write_bytes(b"not a checkpoint at all")
    content = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="checkpoint"):
        run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None)
    assert ckpt.read_bytes() == content  # kept for the user to inspect


def test_non_finite_loss_stops_naming_experience_and_step(tmp_path, world_cache):
    cfg = compose_config([*TINY, "learner.lr=1e30", "learner.optimizer=sgd"], world_cache)
    with pytest.raises(NonFiniteLossError, match=r"experience \d+/3, step \d+"):
        run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None)
    assert not (tmp_path / "r" / "report.json").exists()


def test_full_disk_fails_before_training(tmp_path, world_cache, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("continual.experiment.shutil.disk_usage", lambda _: Usage(10**9, 10**9, 10**6))
    with pytest.raises(RunFolderError, match="MiB free"):
        run_experiment(compose_config(TINY, world_cache), tmp_path / "r")
    assert not (tmp_path / "r" / "config.json").exists()


def test_unwritable_run_folder_fails_before_training(tmp_path, world_cache):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunFolderError, match="afile"):
        run_experiment(compose_config(TINY, world_cache), tmp_path / "afile" / "run")
