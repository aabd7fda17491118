"""Streams of novel categories: the embedded attribute world (and real data sets). Registered by name."""

from __future__ import annotations

from continual.registry import Registry
from continual.stream.stream import Stream

BENCHMARKS: Registry[Stream] = Registry("benchmark")


@BENCHMARKS.register("world")
def _world(**cfg) -> Stream:
    from continual.stream.world import build_world_stream, world_settings_from_dict

    return build_world_stream(world_settings_from_dict(cfg))


def build_stream(cfg: dict) -> Stream:
    """Build the stream named by ``cfg['name']`` from the rest of the ``benchmark`` config."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError("config key benchmark.name is missing")
    return BENCHMARKS.build(cfg.pop("name"), **cfg)


__all__ = ["BENCHMARKS", "Stream", "build_stream"]
