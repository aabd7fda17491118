"""Shared fixtures: the real Hydra configs, composed with overrides for tiny, fast runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED = ROOT.parent / "shared"

# A stream small enough to train in seconds on 2 CPU cores.
TINY = [
    "benchmark.n_experiences=3", "benchmark.categories_per_experience=4", "benchmark.n_heldout=4",
    "benchmark.train_per_category=24", "benchmark.test_per_category=8", "train.epochs=1",
    "learner.backbone_args.width=8", "learner.backbone_args.embed_dim=32", "memory.size=48",
    "progress=false", "logger.wandb.mode=disabled",
]


def compose_config(overrides: list[str], cache_dir: Path | None = None) -> dict:
    """The project's config with ``overrides``, resolved to a plain dict as ``train.py`` does."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if cache_dir is not None:
        resolved["benchmark"]["cache_dir"] = str(cache_dir)
    return resolved


@pytest.fixture(autouse=True)
def _quiet_and_deterministic(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> Path:
    """One render cache for the whole session, so each world is rendered once."""
    return tmp_path_factory.mktemp("world-cache")
