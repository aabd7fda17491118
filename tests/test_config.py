"""Configs: every group option composes and validates; bad values fail naming the key."""

from __future__ import annotations

import copy

import pytest

from continual.config import ConfigError, validate_config
from tests.conftest import CONFIGS, TINY, compose_config


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["benchmark", "learner", "memory", "logger", "experiment", "mechanism"])
def test_every_config_option_composes_and_validates(group):
    for option in _options(group):
        validate_config(compose_config([f"{group}={option}"]))


def test_each_mechanism_variant_switches_off_what_it_names():
    full = compose_config(["mechanism=full"])["learner"]
    assert full == compose_config([])["learner"]  # the default learner has every mechanism on
    expected = {"no_bind": {"bind": False}, "no_protect": {"bind_protect": False},
                "no_description": {"description_weight": 0.0}, "no_logit_adjustment": {"logit_adjustment": 0.0},
                "linear_head": {"head": "linear"},
                "before": {"head": "linear", "bind": False, "logit_adjustment": 0.0}}
    assert set(expected) | {"full"} == set(_options("mechanism"))
    for name, changes in expected.items():
        learner = compose_config([f"mechanism={name}"])["learner"]
        assert {k: v for k, v in learner.items() if full.get(k) != v} == changes, name


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


def _sweep_params(experiment: str) -> dict[str, list[str]]:
    """The ``hydra.sweeper.params`` an experiment config defines, as lists of override values."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    return {key: [v.strip() for v in str(values).split(",")] for key, values in params.items()}


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_point_of_every_experiment_sweep_validates(experiment):
    """A typo in a sweep (a learner that does not exist, a negative memory) fails here, not an hour
    into the sweep."""
    import itertools

    params = _sweep_params(experiment)
    keys = list(params)
    for values in itertools.product(*params.values()):
        cfg = compose_config([f"experiment={experiment}", *(f"{k}={v}" for k, v in zip(keys, values))])
        validate_config(cfg)
        for key, value in zip(keys, values):
            if (CONFIGS / key).is_dir() and key not in ("learner", "benchmark"):
                continue  # a config group of variants (mechanism=...): it composed and validated
            *path, leaf = (key + ".name").split(".") if key == "learner" else key.split(".")
            node = cfg
            for part in path:
                node = node[part]
            assert str(node[leaf]).lower() == value.lower(), f"{experiment}: {key}={value} gave {node[leaf]!r}"


def test_sweep_experiments_define_their_grids():
    assert _sweep_params("ablation") == {"memory.size": ["0", "200", "1000"],
                                         "learner.attribute_weight": ["0", "1"], "seed": ["0", "1", "2"]}
    grid = _sweep_params("scaling")["benchmark.train_per_category"]
    sizes = [int(v) for v in grid]
    assert sizes == sorted(sizes) and len({b // a for a, b in zip(sizes, sizes[1:])}) == 1  # geometric


@pytest.mark.parametrize("launcher", ["parallel", "local", "slurm"])
def test_launcher_configs_compose(launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert target.split(".")[-1] in {"JoblibLauncher", "LocalLauncher", "SlurmLauncher"}
