"""Config validation: every key known, every value of the right type, before any work starts.

The schema is the code itself: dataclass fields of the benchmark settings and the annotated
constructor arguments of the registered learner, plus the few top-level keys below. An
unknown key, a wrong type or an impossible value fails with a message naming ``group.key``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable

# Top-level keys and the types of their leaves; `benchmark` and `learner` are checked per name.
TOP_LEVEL: dict[str, Any] = {
    "seed": int, "device": str, "progress": bool, "threads": int,
    "train": {"epochs": int, "batch_size": int, "min_steps": int, "checkpoint_every": int},
    "online": {"mode": str, "disjoint_share": float, "blurry_share": float, "n_segments": int | None, "updates": int},
    "eval": {"batch_size": int, "every": int | str, "subsample": int, "learning_speed": bool, "zero_shot": str, "anytime": {"every": int | str},
             "few_shot": {"n_way": int, "shots": list, "n_query": int, "episodes": int, "every_experience": bool},
             "new_domain": {"one_shot_trials": int, "one_shot_way": int, "one_at_a_time": bool,
                            "train_per_category": int, "test_per_category": int, "step_images": int,
                            "after": list, "max_categories": int},
             "calibration": {"enabled": bool, "method": str, "scores": str, "drift": bool, "seen_from": str,
                             "per_category": int, "val_per_category": int}},
    "memory": {"size": int | None, "budget": Any},  # budget: bytes or "1.5MB" (continual.memory.budget checks it)
    "data": {"storage": str, "memory_cap": Any},  # where the stream's images live (continual.stream.disk checks it)
    "logger": {"wandb": {"mode": str, "project": str, "group": str | None, "name": str | None, "tags": list}},
    "benchmark": dict, "learner": dict,
}
# Arguments the experiment passes to every learner itself; not config keys.
LEARNER_INJECTED = {"n_classes", "image_shape", "class_attributes", "attribute_blocks", "memory", "online", "nuisances"}


class ConfigError(ValueError):
    """A config key that is unknown, of the wrong type, or impossible."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple) or tp in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def check_value(key: str, value: Any, tp: Any) -> None:
    """Raise ConfigError naming ``key`` when ``value`` is not of type ``tp``."""
    if not _matches(value, tp):
        raise ConfigError(f"config key {key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def check_tree(cfg: dict, schema: dict, prefix: str = "") -> None:
    """Check a nested dict against a nested schema of types: unknown keys and wrong types fail."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"config key {prefix.rstrip('.')} must be a mapping, got {cfg!r}")
    for key, value in cfg.items():
        if key not in schema:
            raise ConfigError(f"unknown config key {prefix}{key}; known: {sorted(schema)}")
        sub = schema[key]
        if isinstance(sub, dict):
            check_tree(value, sub, f"{prefix}{key}.")
        else:
            check_value(f"{prefix}{key}", value, sub)


def dataclass_schema(cls: type) -> dict:
    """A schema from a dataclass: nested dataclasses become nested schemas."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out[f.name] = dataclass_schema(tp) if dataclasses.is_dataclass(tp) else tp
    return out


def signature_schema(factory: Callable, skip: set[str] = frozenset()) -> dict:
    """A schema from a factory's annotated keyword arguments."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target)
    params = inspect.signature(factory).parameters
    return {name: hints.get(name, Any) for name, p in params.items()
            if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def validate_config(cfg: dict) -> None:
    """Check a whole resolved config; raises ConfigError naming the first bad key."""
    from continual.learner import LEARNERS
    from continual.stream import BENCHMARKS

    check_tree(cfg, TOP_LEVEL)
    for group, registry in (("benchmark", BENCHMARKS), ("learner", LEARNERS)):
        section = cfg.get(group)
        if section is None or "name" not in section:
            raise ConfigError(f"config key {group}.name is missing")
        try:
            factory = registry.get(section["name"])
        except KeyError as err:
            raise ConfigError(f"config key {group}.name: {err.args[0]}") from None
        schema = getattr(factory, "config_schema", None)
        if schema is None and any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()):
            continue  # a factory taking **cfg without a schema checks its own keys
        schema = schema() if callable(schema) else signature_schema(factory, LEARNER_INJECTED)
        check_tree({k: v for k, v in section.items() if k != "name"}, schema, f"{group}.")
        if hasattr(factory, "check_config"):
            factory.check_config(**{k: v for k, v in section.items() if k != "name"})
    minimum = {"train.epochs": 1, "train.batch_size": 2, "train.min_steps": 0, "train.checkpoint_every": 0,
               "eval.batch_size": 1, "eval.subsample": 0,
               "online.updates": 1,
               "threads": 0}
    for key, low in minimum.items():
        *path, name = key.split(".")
        section = cfg
        for part in path:
            section = section.get(part, {})
        if name not in section:
            raise ConfigError(f"config key {key} is missing")
        if section[name] < low:
            raise ConfigError(f"config key {key} must be >= {low}, got {section[name]}")
    for key, low in (("every", 1), ("anytime.every", 0)):
        section = cfg["eval"] if key == "every" else cfg["eval"].get("anytime", {})
        value = section.get(key.rsplit(".", 1)[-1], "auto")
        if value != "auto" and (isinstance(value, str) or value < low):
            raise ConfigError(f"config key eval.{key} must be an int >= {low} or 'auto', got {value!r}")
    zero_shot = cfg["eval"].get("zero_shot", "attributes")
    if zero_shot not in ("descriptions", "attributes"):  # evaluate.ZERO_SHOT_BY
        raise ConfigError(f"config key eval.zero_shot must be 'descriptions' or 'attributes', got {zero_shot!r}")
    from continual.memory.budget import check_memory_config

    check_memory_config(cfg.get("memory"))  # memory.size (images) or memory.budget (bytes), not both
    from continual.stream.disk import check_data_config

    check_data_config(cfg.get("data"))  # data.storage: memory | disk | auto; data.memory_cap: bytes or null
    from continual.metrics.calibration import check_calibration_config

    check_calibration_config(cfg)  # eval.calibration: method, scores, seen_from and the split they need
