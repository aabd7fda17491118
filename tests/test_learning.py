"""Honest learning claims, each checked with real training on a small stream (seconds on a CPU)."""

from __future__ import annotations

import pytest

from continual.experiment import run_experiment
from tests.conftest import compose_config

# 24 stream categories: fewer leave the attribute heads too few combinations to untangle
# shape from colour, and zero-shot then depends on the luck of the held-out draw.
SMALL = ["benchmark.n_experiences=3", "benchmark.categories_per_experience=8", "benchmark.n_heldout=8",
         "benchmark.train_per_category=50", "benchmark.test_per_category=12", "train.epochs=3",
         "learner.backbone_args.width=16", "learner.backbone_args.embed_dim=64",
         "progress=false", "logger.wandb.mode=disabled", "eval.few_shot.episodes=100"]


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for name, extra in {"replay": ["memory.size=150"], "no_replay": ["memory.size=0"]}.items():
        cfg = compose_config(SMALL + extra, cache)
        out[name] = run_experiment(cfg, tmp_path_factory.mktemp(name), print_fn=lambda _: None)
    return out


def test_zero_shot_on_heldout_categories_is_well_above_chance(cards):
    zs = cards["replay"].zero_shot
    assert zs["accuracy"] >= 2.5 * zs["chance"], zs


def test_forward_transfer_from_attributes_is_positive(cards):
    # Untrained categories named from their descriptions beat a random network's guesses.
    assert cards["replay"].fwt > 0.1


def test_replay_reduces_forgetting(cards):
    on, off = cards["replay"], cards["no_replay"]
    assert off.forgetting > on.forgetting + 0.3, (on.forgetting, off.forgetting)
    assert on.average_accuracy > off.average_accuracy + 0.2


def test_attribute_heads_learn_every_attribute(cards):
    acc = cards["replay"].attribute_accuracy
    # chance: shape 1/8, colour 1/8, pattern 1/4, size 1/2
    assert acc["colour"] > 0.8 and acc["size"] > 0.8
    assert acc["shape"] > 0.4 and acc["pattern"] > 0.5
