"""Configs: every group option composes and validates; bad values fail naming the key."""

from __future__ import annotations

import copy

import pytest

from continual.config import ConfigError, validate_config
from tests.conftest import CONFIGS, TINY, compose_config


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["benchmark", "learner", "memory", "logger", "experiment"])
def test_every_config_option_composes_and_validates(group):
    for option in _options(group):
        validate_config(compose_config([f"{group}={option}"]))


@pytest.mark.parametrize("path, value, message", [
    (("train", "epochs"), "abc", "train.epochs must be int"),
    (("train", "batch_size"), 1, "train.batch_size must be >= 2"),
    (("memory", "size"), -1, "memory.size must be >= 0"),
    (("learner", "lr"), "fast", "learner.lr must be float"),
    (("learner", "bogus"), 1, "unknown config key learner.bogus"),
    (("learner", "name"), "adult", "learner.name: unknown learner 'adult'; known: .*child"),
    (("benchmark", "n_heldout"), 2.5, "benchmark.n_heldout must be int"),
    (("benchmark", "render"), {"image_size": "big"}, "benchmark.render.image_size must be int"),
    (("benchmark", "name"), "imagenet", "benchmark.name: unknown benchmark 'imagenet'"),
    (("logger", "wandb"), {"mode": 3}, "logger.wandb.mode must be str"),
    (("seedling",), 3, "unknown config key seedling"),
])
def test_bad_values_name_the_key(path, value, message):
    cfg = copy.deepcopy(compose_config(TINY))
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_impossible_world_fails_before_any_rendering(tmp_path):
    from continual.experiment import run_experiment

    cfg = compose_config([*TINY, "benchmark.n_experiences=60", "benchmark.categories_per_experience=10"],
                         tmp_path / "cache")
    with pytest.raises(ValueError, match="attribute combinations"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
