"""Multi-process runs: the sharding helpers, and a real 2-process ``torchrun`` run on the CPU (gloo)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from continual.checkpoint import FORMAT, VERSION, Checkpointer, CheckpointError
from continual.distributed import DistContext, global_batches, rank_batches, share
from continual.experiment import _check_distributed, _claim_run_dir, config_fingerprint, run_experiment
from continual.logging.run_folder import RunFolderError
from tests.conftest import ROOT, TINY, compose_config

# TINY trains too little to beat chance clearly; 8 epochs reach ~55% A_T over 12 categories.
DDP_RUN = [*TINY, "train.epochs=8", "eval.few_shot.episodes=100", "device=cpu"]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 7, 8, 31, 64, 65])
def test_rank_batches_split_every_batch_evenly_and_disjointly(n, world_size):
    batches = list(torch.randperm(n, generator=torch.Generator().manual_seed(n)).split(16))
    whole = global_batches(batches, world_size)
    shares = [rank_batches(batches, r, world_size) for r in range(world_size)]
    kept = [b for b in batches if len(b) // world_size >= 2]  # the others cannot give every rank two
    assert len(whole) == len(kept)
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(whole)  # same step count everywhere
    for step, (b, original) in enumerate(zip(whole, kept)):
        parts = [s[step] for s in shares]
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) >= 2  # equal, and batch norm gets two
        assert sorted(torch.cat(parts).tolist()) == sorted(b.tolist())  # disjoint, covering the batch
        assert b.tolist() == original.tolist()[: len(b)] and len(original) - len(b) < world_size  # trimmed only
    if world_size == 1:  # one process: exactly the old rule, a trailing batch of one is dropped
        assert [b.tolist() for b in whole] == [b.tolist() for b in batches if len(b) > 1]


def test_share_splits_a_memory_exactly():
    for n, w in [(48, 2), (50, 3), (2, 4), (0, 2)]:
        parts = [share(n, r, w) for r in range(w)]
        assert sum(parts) == n and max(parts) - min(parts) <= 1


def test_single_process_context_is_the_identity():
    dist = DistContext()
    assert dist.is_main and not dist.multi
    t = torch.tensor(2.5)
    assert dist.mean(t) is t and dist.gather(3) == [3] and dist.any(torch.tensor(False)) is False
    assert dist.main_first(lambda: "x") == "x"


def test_multi_process_config_checks_fail_early(tmp_path):
    two = DistContext(rank=0, world_size=2)  # no process group needed: nothing here communicates
    with pytest.raises(ValueError, match="learner gdumb does not support world_size > 1 yet"):
        _check_distributed(compose_config([*TINY, "learner=gdumb"]), two)
    with pytest.raises(ValueError, match="train.batch_size=33 must be divisible"):
        _check_distributed(compose_config([*TINY, "train.batch_size=33"]), two)
    with pytest.raises(ValueError, match="online.mode needs one process"):
        _check_distributed(compose_config([*TINY, "online.mode=iblurry"]), two)
    cfg = _check_distributed(compose_config(TINY), two)
    assert cfg["world_size"] == 2  # recorded, so a one-process run cannot take over its folder
    assert not _claim_run_dir(cfg, tmp_path)


def test_resuming_with_another_number_of_processes_is_refused_naming_both(tmp_path):
    two = _check_distributed(compose_config(TINY), DistContext(rank=0, world_size=2))
    assert not _claim_run_dir(two, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    for other in (compose_config(TINY), _check_distributed(compose_config(TINY), DistContext(rank=0, world_size=4))):
        n = other.get("world_size", 1)
        with pytest.raises(RunFolderError, match=rf"a run of 2 process\(es\) and this run has {n}"):
            _claim_run_dir(other, tmp_path)
    assert before == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    # The checkpoint checks it too (no process group needed: reading communicates nothing).
    fingerprint = config_fingerprint(two)
    torch.save({"format": FORMAT, "version": VERSION, "config_fingerprint": fingerprint, "world_size": 2},
               tmp_path / "checkpoint.pt")
    for n in (1, 3):
        with pytest.raises(CheckpointError, match=rf"a run of 2 process\(es\) and this run has {n}"):
            Checkpointer(tmp_path, fingerprint, dist=DistContext(rank=0, world_size=n)).read()
    assert Checkpointer(tmp_path, fingerprint, dist=DistContext(rank=0, world_size=2)).read()["world_size"] == 2


def test_train_py_under_torchrun_requires_a_run_folder(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), "device=cpu"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "hydra.run.dir" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_two_processes_under_torchrun_match_the_single_process_run(tmp_path, world_cache):
    cfg = compose_config(DDP_RUN, world_cache)
    single = run_experiment(cfg, tmp_path / "single", print_fn=lambda _: None).to_dict()

    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CONTINUAL_CACHE": str(world_cache), "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "experiments" / "train.py"), *DDP_RUN, f"hydra.run.dir={run_dir}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("REPORT CARD") == 1  # rank 0 alone prints

    report = json.loads((run_dir / "report.json").read_text())
    assert set(report) == set(single)
    assert set(report["timing"]) == set(single["timing"])
    T = cfg["benchmark"]["n_experiences"]
    matrix = report["accuracy_matrix"]
    assert len(matrix) == T and all(len(row) == T for row in matrix)
    seen = [v for i, row in enumerate(matrix) for v in row[: i + 1]]
    assert all(v is not None and math.isfinite(v) and 0.0 <= v <= 1.0 for v in seen)
    chance = 1 / (T * cfg["benchmark"]["categories_per_experience"])
    assert report["average_accuracy"] > 3 * chance, report["average_accuracy"]
    assert single["average_accuracy"] > 3 * chance, single["average_accuracy"]
    assert report["timing"]["train_samples"] > 0

    config = json.loads((run_dir / "config.json").read_text())
    assert config == {**cfg, "world_size": 2}
    record = json.loads((run_dir / "distributed.json").read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    processes = record["processes"]
    assert [p["rank"] for p in processes] == [0, 1]
    # Each rank held its own share of the memory; together they hold memory.size.
    assert [p["memory_capacity"] for p in processes] == [24, 24]
    assert sum(p["memory_size"] for p in processes) == cfg["memory"]["size"]
    assert all(p["replay_batch_size"] == cfg["learner"]["replay_batch_size"] // 2 for p in processes)
    # DDP kept the model identical on both ranks, weights and batch-norm statistics alike.
    assert processes[0]["model_state_sha256"] == processes[1]["model_state_sha256"]


def _torchrun(run_dir, cache):
    """A 2-process run of ``DDP_RUN`` in its own process group (so it can be killed whole)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CONTINUAL_CACHE": str(cache), "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "experiments" / "train.py"), *DDP_RUN, f"hydra.run.dir={run_dir}"],
                            cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL a ``torchrun`` and its ranks: the ranks run in sessions of their own, so a signal to
    torchrun's process group alone would leave them running to the end."""
    ranks = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == proc.pid:
            ranks.append(int(stat.parent.name))
    for pid in ranks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def test_two_process_run_killed_after_an_experience_resumes_to_the_same_report(tmp_path, world_cache):
    whole = _torchrun(tmp_path / "whole", world_cache)
    out, err = whole.communicate(timeout=240)
    assert whole.returncode == 0, err[-3000:]

    cut = tmp_path / "cut"
    victim = _torchrun(cut, world_cache)
    deadline = time.time() + 180  # until a checkpoint is committed on both ranks
    while not ((cut / "checkpoint.pt").exists() and any(cut.glob("checkpoint.rank1.pos*.pt"))) \
            and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    _kill_all(victim)
    assert not (cut / "report.json").exists()
    loop = torch.load(cut / "checkpoint.pt", weights_only=True)["loop"]
    k, position, steps = loop["next_experience"], loop["progress"]["position"], loop["progress"]["steps"]
    assert 1 <= k < 3 and (cut / f"checkpoint.rank1.pos{position}.pt").exists()
    # As a kill after rank 1's save and before rank 0's commit leaves it: a rank file ahead of
    # checkpoint.pt, which the resume must ignore (and the next commit remove).
    (cut / f"checkpoint.rank1.pos{position + 1}.pt").write_bytes(b"half-written by a killed run")

    again = _torchrun(cut, world_cache)
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err[-3000:]
    assert f"resuming from {cut / 'checkpoint.pt'} at step {steps} (experience {k}/3)" in out
    a = json.loads((tmp_path / "whole" / "report.json").read_text())
    b = json.loads((cut / "report.json").read_text())
    assert {k: v for k, v in a.items() if k != "timing"} == {k: v for k, v in b.items() if k != "timing"}
    assert a["timing"]["train_samples"] == b["timing"]["train_samples"]  # each rank kept its own count
    assert json.loads((tmp_path / "whole" / "distributed.json").read_text()) == \
        json.loads((cut / "distributed.json").read_text())  # memories and weights alike
    final = torch.load(cut / "checkpoint.pt", weights_only=True)["loop"]["progress"]["position"]
    assert sorted(p.name for p in cut.glob("checkpoint*.pt")) == ["checkpoint.pt", f"checkpoint.rank1.pos{final}.pt"]
