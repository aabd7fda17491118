"""Whole runs on tiny configs: the run folder is complete, the CLI works, same seed gives same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from continual.experiment import run_experiment
from continual.logging.run_folder import source_digest
from continual.logging.wandb_records import find_offline_run_file, read_offline_run
from tests.conftest import ROOT, TINY, compose_config

REPORT_KEYS = {"accuracy_matrix", "average_accuracy", "forgetting", "bwt", "fwt", "zero_shot", "gzsl", "learning_speed",
               "attribute_accuracy", "fine_grained", "long_tail", "timing"}


def _fractions(report: dict):
    yield report["average_accuracy"]
    yield from (v for row in report["accuracy_matrix"] for v in row if v is not None)
    yield report["zero_shot"]["accuracy"]
    yield from (v for k, v in report["gzsl"].items() if k not in ("n", "per_experience"))
    yield from (v for point in report["gzsl"]["per_experience"] for v in (point or {}).values())
    yield report["fine_grained"]["accuracy"]
    yield from report["attribute_accuracy"].values()


def test_tiny_run_writes_a_complete_run_folder(tmp_path, world_cache):
    cfg = compose_config([*TINY, "logger.wandb.mode=offline", "benchmark.long_tail_exponent=1.0"], world_cache)
    run_dir = tmp_path / "run"
    lines: list[str] = []
    run_experiment(cfg, run_dir, print_fn=lines.append)
    report = json.loads((run_dir / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    T = cfg["benchmark"]["n_experiences"]
    assert len(report["accuracy_matrix"]) == T and all(len(r) == T for r in report["accuracy_matrix"])
    assert all(0.0 <= v <= 1.0 for v in _fractions(report))
    assert report["zero_shot"]["chance"] == pytest.approx(1 / cfg["benchmark"]["n_heldout"])
    assert set(report["long_tail"]) >= {"head", "medium", "tail"}  # long-tailed stream
    assert {"k0", "k1", "k5", "k10", "area"} <= set(report["learning_speed"])
    assert all(0.0 <= v <= 1.0 for v in report["learning_speed"].values())
    n_heldout = cfg["benchmark"]["n_heldout"]
    assert set(report["few_shot"]) == {f"{n_heldout}way_1shot", f"{n_heldout}way_5shot"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["ci95"] > 0 for r in report["few_shot"].values())
    assert report["timing"]["wall_s"] > 0 and report["timing"]["train_samples_per_s"] > 0
    assert json.loads((run_dir / "config.json").read_text()) == cfg
    evidence = json.loads((run_dir / "git.json").read_text())
    assert "commit" in evidence and evidence["device"].startswith("cpu (")
    assert evidence["source_sha256"] == source_digest(ROOT / "continual")  # names the code even without git
    assert (run_dir / "accuracy_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob("*.tmp*"))
    assert any("REPORT CARD" in line for line in lines)
    # The W&B record log holds the config, one history row per experience and the report.
    record = read_offline_run(find_offline_run_file(run_dir))
    assert record["config"]["memory"]["size"] == cfg["memory"]["size"]
    rows = [r for r in record["history"] if "average_accuracy" in r]
    assert [r["experience"] for r in rows] == list(range(T))
    assert rows[-1]["average_accuracy"] == pytest.approx(report["average_accuracy"])
    assert record["summary"]["report/average_accuracy"] == pytest.approx(report["average_accuracy"])


def test_same_seed_same_report_card_other_seed_differs(tmp_path, world_cache):
    cards = [run_experiment(compose_config([*TINY, f"seed={s}"], world_cache), tmp_path / f"r{i}", print_fn=lambda _: None)
             for i, s in enumerate([0, 0, 1])]
    a, b, c = (card.to_dict() for card in cards)
    for d in (a, b, c):
        d.pop("timing")
    assert a == b
    assert a != c


def test_ablation_switches_run(tmp_path, world_cache):
    cfg = compose_config([*TINY, "learner.attribute_weight=0", "learner.attribute_init=false", "memory.size=0"],
                         world_cache)
    card = run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None)
    assert card.forgetting is not None and card.timing["train_samples"] > 0


def test_cli_runs_with_hydra_overrides(tmp_path, world_cache):
    run_dir = tmp_path / "cli-run"
    env = {**os.environ, "CONTINUAL_CACHE": str(world_cache), "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), *TINY, "memory.size=0",
                          f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REPORT CARD" in out.stdout
    assert json.loads((run_dir / "config.json").read_text())["memory"]["size"] == 0
    assert (run_dir / "report.json").exists()


def test_bad_config_fails_before_training_naming_the_key(tmp_path, world_cache):
    with pytest.raises(ValueError, match="benchmark.n_experiences"):
        run_experiment(compose_config([*TINY, "benchmark.n_experiences=0"], world_cache), tmp_path / "a")
    with pytest.raises(ValueError, match="memory.size"):
        run_experiment(compose_config([*TINY, "memory.size=-5"], world_cache), tmp_path / "b")
    cfg = compose_config(TINY, world_cache)
    cfg["learnr"] = {}
    with pytest.raises(ValueError, match="unknown config key learnr"):
        run_experiment(cfg, tmp_path / "c")
    assert not (tmp_path / "a" / "report.json").exists()
