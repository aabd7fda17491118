"""Sweeps through Hydra's launchers: jobs in parallel (joblib) and through submitit (the Slurm
launcher's code path, on its local executor), each run a complete folder logged to one W&B group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from continual.logging.wandb_records import find_offline_run_file, read_offline_run
from tests.conftest import ROOT, TINY

SWEEP_TINY = [o for o in TINY if not o.startswith("logger.")] + ["eval.few_shot.episodes=20", "threads=1"]


def _sweep(tmp_path: Path, launcher: list[str], timeout: int = 240) -> list[Path]:
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "-m", "seed=0,1", *SWEEP_TINY,
           f"benchmark.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep_dir}", *launcher]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep_dir.glob("*/config.json"))
    assert len(runs) == 2, f"expected 2 run folders under {sweep_dir}, found {runs}"
    return runs


def _check_runs(runs: list[Path]) -> None:
    seeds = [json.loads((r / "config.json").read_text())["seed"] for r in runs]
    assert sorted(seeds) == [0, 1]
    reports = [json.loads((r / "report.json").read_text()) for r in runs]
    assert all(0.0 <= rep["average_accuracy"] <= 1.0 for rep in reports)
    assert reports[0]["accuracy_matrix"] != reports[1]["accuracy_matrix"]  # different seeds, different runs
    logged = [read_offline_run(find_offline_run_file(r)) for r in runs]
    groups = {w["run"]["group"] for w in logged}
    assert len(groups) == 1 and str(runs[0].parent) in groups.pop()  # one group: the sweep
    names = [w["run"]["name"] for w in logged]  # named by the job's overrides, paths left out
    assert [f"seed={seed}" in name.split(",") for name, seed in zip(names, seeds)] == [True, True]
    assert not any("cache_dir" in name for name in names)
    for w, seed in zip(logged, seeds):
        assert w["run"]["tags"] == ["child", "world"]
        assert w["config"]["seed"] == seed and w["config"]["memory"]["size"] == 48
        assert [row["experience"] for row in w["history"]] == [0, 1, 2]
        (artifact,) = [a for a in w["artifacts"] if a["type"] == "run-folder"]  # wandb adds its own for tables
        assert artifact["type"] == "run-folder" and artifact["metadata"]["seed"] == seed
        assert {"report.json", "config.json", "git.json", "accuracy_matrix.png"} <= set(artifact["files"])


def test_parallel_sweep_with_joblib(tmp_path):
    runs = _sweep(tmp_path, ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"])
    _check_runs(runs)


def test_sweep_through_submitit_local_executor(tmp_path):
    runs = _sweep(tmp_path, ["hydra/launcher=local"])
    _check_runs(runs)
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))  # submitit really ran the jobs
