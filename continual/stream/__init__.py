"""Streams of novel categories: the embedded attribute world, Omniglot, CUB-200-2011, GBU feature splits (CUB,
SUN, AwA2, aPY), any Avalanche benchmark. Registered by name."""

from __future__ import annotations

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


@BENCHMARKS.register("omniglot")
def _omniglot(**cfg) -> Stream:
    from continual.stream.omniglot import omniglot_stream_from_dict

    return omniglot_stream_from_dict(cfg)


def _omniglot_schema() -> dict:
    from continual.config import signature_schema
    from continual.stream.omniglot import build_omniglot_stream

    return signature_schema(build_omniglot_stream)


def _omniglot_check(**cfg) -> None:
    from continual.stream.omniglot import check_omniglot_settings

    keys = ("n_experiences", "train_drawers", "heldout_per_alphabet", "image_size", "heldout_alphabets",
            "alphabet_fold")
    check_omniglot_settings(**{k: cfg[k] for k in keys if k in cfg})  # no file is read


_omniglot.config_schema = _omniglot_schema
_omniglot.check_config = _omniglot_check


@BENCHMARKS.register("avalanche")
def _avalanche(**cfg) -> Stream:
    from continual.avalanche_compat import avalanche_stream

    return avalanche_stream(**cfg)


def _avalanche_schema() -> dict:
    from continual.avalanche_compat import avalanche_stream
    from continual.config import signature_schema

    return signature_schema(avalanche_stream)


def _avalanche_check(**cfg) -> None:
    from continual.avalanche_compat import check_avalanche_settings

    check_avalanche_settings(**cfg)  # imports Avalanche (~7 s) to check the name and arguments; reads no data


_avalanche.config_schema = _avalanche_schema
_avalanche.check_config = _avalanche_check


@BENCHMARKS.register("cub")
def _cub(**cfg) -> Stream:
    from continual.stream.cub import cub_stream_from_dict

    return cub_stream_from_dict(cfg)


def _cub_schema() -> dict:
    from continual.config import signature_schema
    from continual.stream.cub import build_cub_stream

    return signature_schema(build_cub_stream)


def _cub_check(**cfg) -> None:
    from continual.stream.cub import check_cub_settings

    keys = ("n_experiences", "n_heldout", "image_size", "workers")
    check_cub_settings(**{k: cfg[k] for k in keys if k in cfg})  # no file is read


_cub.config_schema = _cub_schema
_cub.check_config = _cub_check


@BENCHMARKS.register("gbu")
def _gbu(**cfg) -> Stream:
    from continual.stream.gbu import build_gbu_stream

    return build_gbu_stream(**cfg)


def _gbu_schema() -> dict:
    from continual.config import signature_schema
    from continual.stream.gbu import build_gbu_stream

    return signature_schema(build_gbu_stream)


def _gbu_check(**cfg) -> None:
    from continual.stream.gbu import check_gbu_settings

    check_gbu_settings(**{k: v for k, v in cfg.items() if k not in ("data_root", "seed")})  # no file is read


_gbu.config_schema = _gbu_schema
_gbu.check_config = _gbu_check


def build_stream(cfg: dict) -> Stream:
    """Build the stream named by ``cfg['name']`` from the rest of the ``benchmark`` config."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError("config key benchmark.name is missing")
    return BENCHMARKS.build(cfg.pop("name"), **cfg)


__all__ = ["BENCHMARKS", "OnlineSettings", "Stream", "build_stream", "online_order"]
