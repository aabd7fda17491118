"""The online memory: class-balancing reservoir sampling (CBRS) one mini-batch at a time, decided on the
host, written to the device in one indexed write per tensor, never reading the device labels."""

from __future__ import annotations

import io
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from continual.memory import ClassBalancedReservoir
from continual.memory.logits import LogitReservoir

SHAPE = (1, 2, 2)


def _examples(labels: list[int], offset: int = 0):
    """Images whose first two pixels encode a running id, labels, and codes that follow from the id."""
    y = torch.tensor(labels, dtype=torch.long)
    ids = torch.arange(offset, offset + len(labels))
    x = torch.zeros(len(labels), *SHAPE, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (ids % 256).to(torch.uint8), (ids // 256).to(torch.uint8)
    codes = torch.stack([ids % 7, y % 3], 1)
    return x, y, codes


def _stream(mem: ClassBalancedReservoir, labels: list[int], batch: int, offset: int = 0, check=None) -> None:
    for s in range(0, len(labels), batch):
        x, y, codes = _examples(labels[s:s + batch], offset + s)
        mem.offer(x, y, y.clone(), codes)
        if check is not None:
            check(mem)


def _ids(mem: ClassBalancedReservoir) -> torch.Tensor:
    n = len(mem)
    return mem.x[:n, 0, 0, 0].long() + 256 * mem.x[:n, 0, 0, 1].long()


def _long_tail(n_classes: int, head: int, seed: int, shuffle: bool) -> list[int]:
    """Class c has about head / (c + 1) examples (at least 1); in class order, or shuffled."""
    labels = [c for c in range(n_classes) for _ in range(max(1, head // (c + 1)))]
    if shuffle:
        random.Random(seed).shuffle(labels)
    return labels


def _assert_cbrs_invariant(mem: ClassBalancedReservoir) -> None:
    """What CBRS guarantees: a class that lost or dropped any example holds at least (largest - 1).

    Why: once the memory is full the largest class size never grows (a class gains a slot only while
    it is below the largest), a full class loses slots only while it is the largest, and only full
    classes drop examples. A class that never lost one (held == seen) may be as small as it is.
    """
    counts = mem.class_counts()
    if not counts:
        return
    top = max(counts.values())
    for c, seen in mem.seen.items():
        held = counts.get(c, 0)
        assert held <= seen
        if held < seen:
            assert held >= top - 1, f"class {c} holds {held} of {seen} seen, the largest holds {top}"


def _assert_mirror(mem: ClassBalancedReservoir) -> None:
    n = len(mem)
    assert torch.equal(mem.y_host[:n], mem.y[:n].cpu())
    labels, counts = torch.unique(mem.y[:n], return_counts=True)
    assert mem.class_counts() == dict(zip(labels.tolist(), counts.tolist()))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch", [1, 16])
def test_long_tailed_stream_ends_balanced(shuffle, batch):
    mem = ClassBalancedReservoir(60, SHAPE, n_attributes=2, seed=0)
    labels = _long_tail(12, 300, seed=1, shuffle=shuffle)  # 300, 150, 100, ..., 25 examples

    def check(m):
        _assert_cbrs_invariant(m)
        _assert_mirror(m)

    _stream(mem, labels, batch, check=check)
    assert len(mem) == 60 and sum(mem.seen.values()) == len(labels)
    counts = mem.class_counts()
    assert set(counts) == set(range(12)) and max(counts.values()) - min(counts.values()) <= 1  # 5 each


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 40), batch=st.integers(1, 24), seed=st.integers(0, 10**6),
       labels=st.lists(st.integers(0, 9), min_size=1, max_size=300))
def test_any_stream_keeps_the_invariant_and_each_image_with_its_label(capacity, batch, seed, labels):
    mem = ClassBalancedReservoir(capacity, SHAPE, n_attributes=2, seed=seed)
    _stream(mem, labels, batch, check=_assert_cbrs_invariant)
    assert len(mem) == min(capacity, len(labels))
    _assert_mirror(mem)
    ids = _ids(mem)
    assert len(set(ids.tolist())) == len(ids)  # no example twice
    _, y, codes = _examples(labels)
    assert torch.equal(mem.y[: len(mem)], y[ids]) and torch.equal(mem.codes[: len(mem)], codes[ids])


def _reference_cbrs(labels: list[int], capacity: int, draws: list[tuple[float, float]]) -> tuple[dict[int, int], set]:
    """CBRS one example at a time, recomputing the largest classes from scratch: slot -> example id."""
    memory: dict[int, int] = {}  # slot -> id
    seen: dict[int, int] = {}
    full: set[int] = set()
    for i, (c, (u_keep, u_pick)) in enumerate(zip(labels, draws)):
        seen[c] = seen.get(c, 0) + 1
        slots_of: dict[int, list[int]] = {}
        for slot in sorted(memory):
            slots_of.setdefault(labels[memory[slot]], []).append(slot)
        if len(memory) < capacity:
            memory[len(memory)] = i
        elif c not in full:
            m = max(len(s) for s in slots_of.values())
            tied = sorted(k for k, s in slots_of.items() if len(s) == m)
            k = int(u_pick * len(tied) * m)
            memory[slots_of[tied[k // m]][k % m]] = i
        elif u_keep * seen[c] < len(slots_of.get(c, [])):
            mine = slots_of[c]
            memory[mine[int(u_pick * len(mine))]] = i
        if len(memory) == capacity:  # full: the classes now largest are full
            sizes: dict[int, int] = {}
            for j in memory.values():
                sizes[labels[j]] = sizes.get(labels[j], 0) + 1
            full |= {k for k, n in sizes.items() if n == max(sizes.values())}
    return memory, full


@pytest.mark.parametrize("capacity, batch", [(5, 16), (12, 7), (30, 32)])
def test_batches_decide_as_one_example_at_a_time(capacity, batch):
    """Against a from-scratch sequential CBRS fed the same draws: same slots, same images, same
    full classes; two examples of one batch landing in one slot leave the later one, as sequentially."""
    labels = _long_tail(8, 80, seed=3, shuffle=True) + [7] * 40 + [0, 1] * 30
    mem = ClassBalancedReservoir(capacity, SHAPE, n_attributes=2, seed=5)
    generator = torch.Generator().manual_seed(5)  # the memory's host generator, replayed
    draws = []
    for s in range(0, len(labels), batch):
        draws += torch.rand((len(labels[s:s + batch]), 2), generator=generator).tolist()
    _stream(mem, labels, batch)
    expected, full = _reference_cbrs(labels, capacity, draws)
    assert _ids(mem).tolist() == [expected[slot] for slot in range(capacity)]
    assert mem.full_classes == full


def test_within_a_full_class_every_example_is_kept_alike():
    # One class: CBRS is plain reservoir sampling, each of 40 examples kept with probability 10 / 40.
    hits = torch.zeros(40)
    for seed in range(400):
        mem = ClassBalancedReservoir(10, SHAPE, n_attributes=2, seed=seed)
        _stream(mem, [0] * 40, batch=8)
        hits[_ids(mem)] += 1
    rate = hits / 400
    assert float(rate.mean()) == pytest.approx(0.25, abs=1e-6)
    assert (rate - 0.25).abs().max() < 0.1
    assert float(rate[:20].mean()) == pytest.approx(float(rate[20:].mean()), abs=0.04)  # early and late alike


def test_same_seed_same_memory_other_seed_other_memory():
    labels = _long_tail(10, 120, seed=0, shuffle=True)
    a, b, c = (ClassBalancedReservoir(25, SHAPE, n_attributes=2, seed=s) for s in (3, 3, 4))
    for mem in (a, b, c):
        _stream(mem, labels, batch=10)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.full_classes == b.full_classes
    assert not torch.equal(a.x, c.x)


class _Unreadable(torch.Tensor):
    """A device tensor that may be written into (``t[idx] = v``) but never read."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name not in ("__setitem__", "__get__"):  # __get__: .shape, .device, .dtype
            raise AssertionError(f"offer read the memory's device labels ({name})")
        return super().__torch_function__(func, types, args, kwargs or {})


class _NoHostRead(torch.Tensor):
    """The batch's device labels: gathered on the device, never brought to the host."""

    FORBIDDEN = {"tolist", "item", "cpu", "numpy", "__bool__", "__int__", "__index__", "__float__", "__iter__",
                 "unique", "_unique2", "nonzero", "__eq__", "eq", "__repr__", "__format__"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in cls.FORBIDDEN:
            raise AssertionError(f"offer read the batch's device labels ({func.__name__})")
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def test_offer_never_reads_device_labels():
    mem = ClassBalancedReservoir(20, SHAPE, n_attributes=2, seed=0)
    mem.y = mem.y.as_subclass(_Unreadable)
    with pytest.raises(AssertionError, match="read the memory's device labels"):
        torch.unique(mem.y)  # the guard works: what update() does would fail
    labels = _long_tail(6, 60, seed=2, shuffle=True)
    for s in range(0, len(labels), 8):
        x, y, codes = _examples(labels[s:s + 8], s)
        mem.offer(x, y.as_subclass(_NoHostRead), y.clone(), codes)
    mem.y = mem.y.as_subclass(torch.Tensor)
    _assert_mirror(mem)
    _assert_cbrs_invariant(mem)
    assert len(mem) == 20


def test_offer_refuses_labels_that_are_not_on_the_host():
    mem = ClassBalancedReservoir(4, SHAPE)
    x, y, _ = _examples([0, 1])
    with pytest.raises(ValueError, match="labels on the host"):
        mem.offer(x, y, y.to("meta"))
    with pytest.raises(ValueError, match="2 labels on the device but 1 on the host"):
        mem.offer(x, y, y[:1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offer_never_syncs_on_the_gpu():
    mem = ClassBalancedReservoir(64, SHAPE, n_attributes=2, device="cuda", seed=0)
    labels = _long_tail(10, 200, seed=0, shuffle=True)
    batches = [_examples(labels[s:s + 32], s) for s in range(0, len(labels), 32)]
    batches = [(x.cuda(), y.cuda(), y, c.cuda()) for x, y, c in batches]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y, y_host, codes in batches:
            mem.offer(x, y, y_host, codes)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    _assert_mirror(mem)


def test_state_dict_round_trip_mid_stream_continues_identically():
    labels = _long_tail(9, 150, seed=4, shuffle=True)
    half = len(labels) // 2
    a = ClassBalancedReservoir(30, SHAPE, n_attributes=2, seed=7)
    _stream(a, labels[:half], batch=12)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = ClassBalancedReservoir(30, SHAPE, n_attributes=2, seed=99)  # everything must come from the state
    b.load_state_dict(torch.load(buffer, weights_only=True))
    _stream(a, labels[half:], batch=12, offset=half)
    _stream(b, labels[half:], batch=12, offset=half)
    for name in ("x", "y", "codes", "y_host"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.seen == b.seen and a.full_classes == b.full_classes and len(a) == len(b)
    assert all(torch.equal(u, v) for u, v in zip(a.sample(20), b.sample(20)))


def test_a_checkpoint_without_the_mirror_rebuilds_it_from_the_labels():
    a = ClassBalancedReservoir(30, SHAPE, n_attributes=2, seed=7)
    _stream(a, _long_tail(9, 150, seed=4, shuffle=True), batch=12)
    state = a.state_dict()
    del state["y_host"], state["full_classes"]  # a checkpoint from before the online memory
    b = ClassBalancedReservoir(30, SHAPE, n_attributes=2)
    b.load_state_dict(state)
    _assert_mirror(b)
    assert b.class_counts() == a.class_counts()
    assert b.full_classes == {c for c, n in b.class_counts().items() if n == max(b.class_counts().values())}


def test_capacity_zero_is_a_no_op():
    mem = ClassBalancedReservoir(0, SHAPE, n_attributes=2)
    x, y, codes = _examples([0, 1, 2])
    assert mem.offer(x, y, y.clone(), codes) is None
    assert len(mem) == 0 and mem.seen == {} and mem.class_counts() == {}


def test_update_keeps_the_mirror_and_offer_carries_on_from_it():
    mem = ClassBalancedReservoir(24, SHAPE, n_attributes=2, seed=0)
    mem.update(*_examples([0] * 30 + [1] * 10 + [2] * 5))
    _assert_mirror(mem)
    assert mem.full_classes == {0}  # full after update: the largest class (quotas 10, 9, 5)
    _stream(mem, [3] * 20 + [4] * 3, batch=5, offset=45, check=_assert_cbrs_invariant)
    _assert_mirror(mem)


def test_logit_reservoir_offers_logits_with_their_images():
    mem = LogitReservoir(8, SHAPE, n_classes=6, n_attributes=2, seed=0)
    for start, n_seen in ((0, 2), (12, 4), (24, 6)):
        labels = [(start + i) // 4 % 6 for i in range(12)]
        x, y, codes = _examples(labels, start)
        ids = torch.arange(start, start + 12)
        logits = ids[:, None].float() + torch.arange(n_seen)[None] / 10  # (12, n_seen): id in the integer part
        mem.offer(x, y, y.clone(), codes, logits=logits)
        n = len(mem)
        kept = _ids(mem)
        assert torch.equal(mem.logits[:n, 0].long(), kept)  # each row's logits came with its image
        assert torch.equal(mem.codes[:n, :2], torch.stack([kept % 7, mem.y[:n] % 3], 1))
        assert torch.equal(mem.n_logits[:n], torch.where(kept < 12, 2, torch.where(kept < 24, 4, 6)))
    xs, _, codes, stored, valid = mem.sample(30)
    ids = xs[:, 0, 0, 0].long() + 256 * xs[:, 0, 0, 1].long()
    assert codes.shape == (30, 2) and torch.equal(stored[:, 0].long(), ids)
    assert torch.equal(valid.sum(1), torch.where(ids < 12, 2, torch.where(ids < 24, 4, 6)))
    assert (stored[~valid] == 0).all()
    with pytest.raises(ValueError, match="needs the offered examples' logits"):
        mem.offer(x, y, y.clone(), codes=None)
