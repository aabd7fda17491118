"""The embedded default benchmark: a stream drawn from the procedurally rendered attribute world."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from continual.stream.attributes import WORLD_ATTRIBUTES, AttributeSpace
from continual.stream.cache import cached_render
from continual.stream.render import RenderSettings
from continual.stream.split import SplitSettings, draw_split, one_attribute_pairs
from continual.stream.stream import Stream
from continual.stream.tags import TagSettings, apply_tags, tag_settings_from_dict


@dataclass(frozen=True)
class WorldSettings:
    """Split and rendering settings of a world stream (the ``benchmark`` config group)."""

    split: SplitSettings = SplitSettings()
    render: RenderSettings = RenderSettings()
    cache_dir: str | None = None
    tags: TagSettings = TagSettings()  # attribute supervision as noisy tags (continual/stream/tags.py)


def build_world_stream(settings: WorldSettings, space: AttributeSpace = WORLD_ATTRIBUTES) -> Stream:
    """Draw the categories, render train and test images (cached on disk), and assemble the stream."""
    split = draw_split(space, settings.split)
    n_stream = split.n_stream
    train_labels = torch.repeat_interleave(torch.arange(n_stream), torch.tensor(split.train_counts))
    test_labels = torch.arange(split.codes.shape[0]).repeat_interleave(split.test_per_category)
    # Distinct render seeds for train and test so no test image is a copy of a training image.
    seed = settings.split.seed
    cache = Path(settings.cache_dir) if settings.cache_dir else None
    train_x = cached_render(split.codes[train_labels], 2 * seed, settings.render, cache)
    test_x = cached_render(split.codes[test_labels], 2 * seed + 1, settings.render, cache)
    names = [space.describe(c) for c in split.codes.tolist()]
    pairs = one_attribute_pairs(split.codes, list(range(n_stream)))
    # Training images carry tags, not clean codes, when benchmark.tags says so (clean by default: None).
    train_codes, tags = apply_tags(split.codes[train_labels], train_labels, split.codes, space.sizes,
                                   settings.tags, seed)
    return Stream(
        name="world",
        train_x=train_x,
        train_y=train_labels,
        test_x=test_x,
        test_y=test_labels,
        experiences=split.experiences,
        heldout=split.heldout,
        class_names=names,
        train_counts=split.train_counts,
        attribute_space=space,
        class_codes=split.codes,
        fine_grained_pairs=pairs,
        train_codes=train_codes,
        tags=tags,
    )


def world_settings_from_dict(cfg: dict) -> WorldSettings:
    """Build settings from a plain ``benchmark`` config dict, naming any unknown key."""
    cfg = dict(cfg)
    cfg.pop("name", None)
    render_cfg = dict(cfg.pop("render", {}) or {})
    cache_dir = cfg.pop("cache_dir", None)
    tags = tag_settings_from_dict(cfg.pop("tags", None))  # raises naming benchmark.tags.<key>
    split_keys = {f.name for f in fields(SplitSettings)}
    render_keys = {f.name for f in fields(RenderSettings)}
    for key in cfg:
        if key not in split_keys:
            raise ValueError(f"unknown config key benchmark.{key}; known: {sorted(split_keys | {'render', 'cache_dir', 'tags'})}")
    for key in render_keys.symmetric_difference(render_keys | set(render_cfg)):
        raise ValueError(f"unknown config key benchmark.render.{key}; known: {sorted(render_keys)}")
    try:
        render = RenderSettings(**render_cfg)
    except ValueError as err:  # name the config key, not the dataclass
        raise ValueError(f"config key benchmark.render: {err}") from None
    return WorldSettings(SplitSettings(**cfg), render, cache_dir, tags)
