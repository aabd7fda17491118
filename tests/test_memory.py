"""Replay memory: bounded, class-balanced within one sample, a uniform sample of each class."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from continual.memory import ClassBalancedReservoir
from continual.memory.reservoir import balanced_quotas


def _experience(classes: list[int], counts: list[int], offset: int = 0):
    y = torch.tensor(classes).repeat_interleave(torch.tensor(counts))
    # Image pixel 0 stores a running id so tests can see which examples were kept.
    x = torch.zeros(len(y), 1, 2, 2, dtype=torch.uint8)
    ids = torch.arange(offset, offset + len(y))
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (ids % 256).to(torch.uint8), (ids // 256).to(torch.uint8)
    codes = torch.stack([y % 3, y % 2], 1)
    return x, y, codes


def _balanced_within_one(counts: dict[int, int], available: dict[int, int]) -> bool:
    # Classes that could have more must be within one of the largest class.
    top = max(counts.values())
    return all(n >= top - 1 or n == available[c] for c, n in counts.items())


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(0, 120),
       experiences=st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=5), min_size=1, max_size=5))
def test_memory_never_exceeds_capacity_and_stays_balanced(capacity, experiences):
    mem = ClassBalancedReservoir(capacity, (1, 2, 2), n_attributes=2, seed=0)
    label, offered = 0, {}
    for counts in experiences:
        classes = list(range(label, label + len(counts)))
        label += len(counts)
        mem.update(*_experience(classes, counts))
        offered.update(dict(zip(classes, counts)))
        assert len(mem) <= capacity
        held = mem.class_counts()
        assert len(mem) == min(capacity, sum(offered.values()))
        if held:
            assert _balanced_within_one(held, offered)


def test_items_keep_their_labels_and_codes():
    mem = ClassBalancedReservoir(30, (1, 2, 2), n_attributes=2, seed=1)
    x, y, codes = _experience([0, 1, 2], [20, 20, 20])
    mem.update(x, y, codes)
    ids = mem.x[: len(mem), 0, 0, 0].long() + 256 * mem.x[: len(mem), 0, 0, 1].long()
    assert torch.equal(y[ids], mem.y[: len(mem)])
    assert torch.equal(codes[ids], mem.codes[: len(mem)])


def test_each_example_is_kept_with_equal_probability():
    # Reservoir property: over many seeds, every example of a class is kept ~ quota / n times.
    hits = torch.zeros(40)
    trials = 400
    for seed in range(trials):
        mem = ClassBalancedReservoir(10, (1, 2, 2), n_attributes=2, seed=seed)
        mem.update(*_experience([0], [20]))
        mem.update(*_experience([0], [20], offset=20))  # the same class seen again later
        ids = mem.x[: len(mem), 0, 0, 0].long()
        hits[ids] += 1
    rate = hits / trials  # expected 10 / 40 = 0.25 for every example
    assert float(rate.mean()) == pytest.approx(0.25, abs=1e-6)
    assert (rate - 0.25).abs().max() < 0.1
    assert float(rate[:20].mean()) == pytest.approx(float(rate[20:].mean()), abs=0.04)  # old and new alike


def test_sample_draws_only_held_items():
    mem = ClassBalancedReservoir(8, (1, 2, 2), n_attributes=2, seed=0)
    mem.update(*_experience([3, 4], [10, 10]))
    _, ys, _ = mem.sample(200)
    assert set(ys.tolist()) == {3, 4}


def test_state_dict_round_trip_restores_sampling():
    mem = ClassBalancedReservoir(8, (1, 2, 2), n_attributes=2, seed=0)
    mem.update(*_experience([0, 1], [10, 10]))
    state = mem.state_dict()
    a = mem.sample(16)
    other = ClassBalancedReservoir(8, (1, 2, 2), n_attributes=2, seed=99)
    other.load_state_dict(state)
    b = other.sample(16)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_quotas_water_fill():
    assert balanced_quotas({0: 100, 1: 100, 2: 100}, 10) == {0: 4, 1: 3, 2: 3}
    assert balanced_quotas({0: 2, 1: 100, 2: 100}, 10) == {0: 2, 1: 4, 2: 4}
    assert balanced_quotas({0: 2, 1: 3}, 10) == {0: 2, 1: 3}


def test_negative_size_is_rejected_with_the_key():
    with pytest.raises(ValueError, match="memory.size"):
        ClassBalancedReservoir(-1, (1, 2, 2))
