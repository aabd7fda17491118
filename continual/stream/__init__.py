"""Streams of novel categories: the embedded attribute world, Omniglot, CUB-200-2011, GBU feature splits (CUB,
SUN, AwA2, aPY), any Avalanche benchmark. Registered by name."""

from __future__ import annotations

import importlib
import inspect

from continual.registry import Registry
from continual.stream.online import OnlineSettings, online_order
from continual.stream.stream import Stream

BENCHMARKS: Registry[Stream] = Registry("benchmark")


@BENCHMARKS.register("world")
def _world(**cfg) -> Stream:
    from continual.stream.world import build_world_stream, world_settings_from_dict

    return build_world_stream(world_settings_from_dict(cfg))


def _world_schema() -> dict:
    from continual.config import dataclass_schema
    from continual.stream.render import RenderSettings
    from continual.stream.split import SplitSettings
    from continual.stream.tags import TagSettings

    return {**dataclass_schema(SplitSettings), "render": dataclass_schema(RenderSettings), "cache_dir": str | None,
            "tags": dataclass_schema(TagSettings)}


def _world_check(**cfg) -> None:
    from continual.stream.attributes import WORLD_ATTRIBUTES
    from continual.stream.split import draw_split
    from continual.stream.world import world_settings_from_dict

    draw_split(WORLD_ATTRIBUTES, world_settings_from_dict(cfg).split)  # bookkeeping only, no pixels


_world.config_schema = _world_schema
_world.check_config = _world_check  # impossible values fail before the run folder is touched


def _register_lazy(name: str, module: str, build: str, schema_from: str, check: str, from_dict: bool = False) -> None:
    """Register benchmark ``name`` whose module (``continual.<module>``) is imported only when it is used: the
    stream from its function ``build`` (given the config dict when ``from_dict``, else its keys as keywords),
    the config schema read from the signature of ``schema_from``, and the config-time ``check`` (reads no
    data), given the keys its signature takes (all of them when it takes ``**kwargs``)."""

    def function(attr: str):
        return getattr(importlib.import_module(f"continual.{module}"), attr)

    def factory(**cfg) -> Stream:
        return function(build)(cfg) if from_dict else function(build)(**cfg)

    def config_schema() -> dict:
        from continual.config import signature_schema

        return signature_schema(function(schema_from))

    def check_config(**cfg) -> None:
        fn = function(check)
        params = inspect.signature(fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            cfg = {k: v for k, v in cfg.items() if k in params}
        fn(**cfg)

    factory.config_schema, factory.check_config = config_schema, check_config
    BENCHMARKS.register(name)(factory)


_register_lazy("omniglot", "stream.omniglot", "omniglot_stream_from_dict", "build_omniglot_stream",
               "check_omniglot_settings", from_dict=True)
# Checking an Avalanche config imports Avalanche (~7 s) to check the name and arguments; it reads no data.
_register_lazy("avalanche", "avalanche_compat", "avalanche_stream", "avalanche_stream", "check_avalanche_settings")
_register_lazy("cub", "stream.cub", "cub_stream_from_dict", "build_cub_stream", "check_cub_settings", from_dict=True)
_register_lazy("gbu", "stream.gbu", "build_gbu_stream", "build_gbu_stream", "check_gbu_settings")


def build_stream(cfg: dict) -> Stream:
    """Build the stream named by ``cfg['name']`` from the rest of the ``benchmark`` config."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError("config key benchmark.name is missing")
    return BENCHMARKS.build(cfg.pop("name"), **cfg)


__all__ = ["BENCHMARKS", "OnlineSettings", "Stream", "build_stream", "online_order"]
