"""Online arrival orders: every image once, labels by first appearance, i-Blurry and Si-Blurry as built."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from continual.stream import OnlineSettings, build_stream, online_order
from continual.stream.online import draw_online, online_settings_from_dict
from tests.conftest import TINY, compose_config

OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
OMNIGLOT_ARCHIVES = ("images_background_small1.zip", "images_background_small2.zip")


@pytest.fixture(scope="module")
def world(world_cache):
    """3 experiences x 4 categories x 24 training images, 4 held out."""
    return build_stream(compose_config(TINY, world_cache)["benchmark"])


@pytest.fixture(scope="module")
def long_tail(world_cache):
    """Zipf counts from 60 down to 5 training images per category."""
    cfg = compose_config(TINY + ["benchmark.long_tail_exponent=1.5", "benchmark.train_per_category=60",
                                 "benchmark.min_train_per_category=5"], world_cache)
    return build_stream(cfg["benchmark"])


def per_segment_counts(stream, segments) -> torch.Tensor:
    """``(K, S)`` training images of each (old) trained label in each segment."""
    k = sum(len(e) for e in stream.experiences)
    return torch.stack([torch.bincount(stream.train_y[s], minlength=k)[:k] for s in segments], 1)


def assert_valid_online_stream(old, new, segments) -> None:
    """What every mode promises, checked from the outputs alone."""
    n, k = len(old.train_y), sum(len(e) for e in old.experiences)
    # Every training image exactly once, as CPU long indices.
    assert all(s.dtype == torch.long and s.device.type == "cpu" and len(s) > 0 for s in segments)
    assert torch.equal(torch.cat(segments).sort().values, torch.arange(n))
    assert new.train_x is old.train_x  # segments index both streams' images
    # Labels first appear in increasing order 0, 1, 2, ... and experiences[j] are those first met in j.
    met, firsts = set(), []
    for j, seg in enumerate(segments):
        new_here = []
        for label in new.train_y[seg].tolist():
            if label not in met:
                met.add(label)
                new_here.append(label)
        firsts += new_here
        assert new.experiences[j] == new_here and new_here, f"segment {j} brings {new_here}"
    assert firsts == list(range(k))
    # Images keep their category: names, codes, counts and held-out labels follow the relabelling.
    assert [new.class_names[c] for c in new.train_y.tolist()] == [old.class_names[c] for c in old.train_y.tolist()]
    assert [new.class_names[c] for c in new.test_y.tolist()] == [old.class_names[c] for c in old.test_y.tolist()]
    assert torch.equal(new.class_codes[new.train_y], old.class_codes[old.train_y])
    assert torch.equal(new.class_codes[new.test_y], old.class_codes[old.test_y])
    assert new.train_counts == torch.bincount(new.train_y, minlength=k)[:k].tolist()
    assert new.heldout == old.heldout and new.class_names[k:] == old.class_names[k:]
    assert {frozenset((new.class_names[a], new.class_names[b])) for a, b in new.fine_grained_pairs} == \
        {frozenset((old.class_names[a], old.class_names[b])) for a, b in old.fine_grained_pairs}
    assert all(a < b for a, b in new.fine_grained_pairs)


@pytest.mark.parametrize("mode", ["disjoint", "iblurry", "siblurry"])
@pytest.mark.parametrize("disjoint_share", [0.0, 0.5, 1.0])
def test_every_mode_gives_each_image_once_and_labels_by_first_appearance(world, mode, disjoint_share):
    for seed in range(3):
        new, segments = online_order(world, OnlineSettings(mode, disjoint_share=disjoint_share), seed)
        assert len(segments) == world.n_experiences
        assert_valid_online_stream(world, new, segments)


def test_disjoint_mode_is_the_streams_experiences_shuffled(world):
    new, segments = online_order(world, OnlineSettings("disjoint"), seed=0)
    for j, seg in enumerate(segments):
        assert torch.equal(seg.sort().values, world.train_indices(j).cpu())
        assert not torch.equal(seg, seg.sort().values)  # shuffled within the segment
    assert new.experiences == world.experiences
    # Labels are permuted only within each experience (the order the shuffled segment meets them).
    for e in world.experiences:
        old_images = torch.isin(world.train_y, torch.tensor(e))
        assert set(new.train_y[old_images].tolist()) == set(e)


def test_relabel_with_the_identity_changes_nothing_and_rejects_non_permutations(world):
    k = sum(len(e) for e in world.experiences)
    same = world.relabel(list(range(k)))
    assert torch.equal(same.train_y, world.train_y) and torch.equal(same.test_y, world.test_y)
    assert same.class_names == world.class_names and torch.equal(same.class_codes, world.class_codes)
    assert same.experiences == world.experiences and same.fine_grained_pairs == sorted(world.fine_grained_pairs)
    swapped = world.relabel([1, 0] + list(range(2, k)))
    assert swapped.class_names[:2] == world.class_names[1::-1] and swapped.experiences[0][:2] == [1, 0]
    assert torch.equal(swapped.train_y == 0, world.train_y == 1)
    for bad in ([0] * k, list(range(k - 1)), list(range(k + 1)), list(range(1, k + 1))):
        with pytest.raises(ValueError, match="permutation of the trained labels"):
            world.relabel(bad)


def test_iblurry_moves_exactly_m_percent_of_blurry_images_and_keeps_disjoint_ones_whole(world):
    k, n_c = 12, 24
    settings = OnlineSettings("iblurry", disjoint_share=0.5, blurry_share=0.1)
    new, segments = online_order(world, settings, seed=4)
    counts = per_segment_counts(world, segments)  # (K, S)
    assert counts.sum(1).tolist() == [n_c] * k
    one_segment = (counts > 0).sum(1) == 1
    assert int(one_segment.sum()) == round(0.5 * k)  # the disjoint categories: all images in one segment
    moved = round(0.1 * n_c)  # 2 of 24
    for c in (~one_segment).nonzero().squeeze(1).tolist():
        assert counts[c].max() == n_c - moved and counts[c].sum() - counts[c].max() == moved
    # The major segment is the category's experience, and disjoint ones are spread evenly (2 per segment).
    major = counts.argmax(1)
    assert major.tolist() == [j for j, e in enumerate(world.experiences) for _ in e]
    assert torch.bincount(major[one_segment], minlength=3).tolist() == [2, 2, 2]
    plan = draw_online(world, settings, seed=4)
    assert plan.disjoint == one_segment.tolist() and not any(plan.anchor)
    # With half the images moved, they still never land in the major segment, and reach both others.
    heavy = OnlineSettings("iblurry", disjoint_share=0.0, blurry_share=0.5)
    plan = draw_online(world, heavy, seed=1)
    counts = per_segment_counts(world, plan.segments)
    for c in range(k):
        assert counts[c, plan.major[c]] == n_c - plan.moved[c]
        assert plan.moved[c] == (0 if plan.anchor[c] and plan.major[c] == 2 else 12)
    other = torch.tensor(plan.major)[:, None] != torch.arange(3)  # (K, S) off-major cells
    assert ((counts * other).sum(0) > 0).all()  # every segment receives moved images
    # Which images move is drawn too: never simply each category's first images.
    segment_of = torch.empty_like(world.train_y)
    for j, seg in enumerate(plan.segments):
        segment_of[seg] = j
    for c in range(k):
        if plan.moved[c]:
            first_images = (world.train_y == c).nonzero().squeeze(1)[: plan.moved[c]]
            assert not (segment_of[first_images] != plan.major[c]).all()


def test_a_segment_without_a_disjoint_category_gets_an_anchor_that_moves_only_forward(world):
    for mode in ("iblurry", "siblurry"):
        for seed in range(4):
            settings = OnlineSettings(mode, disjoint_share=1 / 12, blurry_share=0.3)  # 1 disjoint, 3 segments
            plan = draw_online(world, settings, seed)
            counts = per_segment_counts(world, plan.segments)
            assert sum(plan.disjoint) == 1 and plan.major[plan.disjoint.index(True)] == 2  # the last segment
            anchors = [c for c in range(12) if plan.anchor[c]]
            assert sorted(plan.major[c] for c in anchors) == [0, 1]  # one per segment lacking a disjoint one
            for c in anchors:
                j = plan.major[c]
                assert counts[c, :j].sum() == 0 and counts[c, j] == 24 - plan.moved[c] > 0
                assert plan.moved[c] == round(0.3 * 24)
            assert_valid_online_stream(world, *online_order(world, settings, seed))


def test_siblurry_task_sizes_are_random_and_every_segment_brings_a_new_category(world):
    k = 12
    sizes, new_counts = set(), set()
    for seed in range(8):
        settings = OnlineSettings("siblurry", disjoint_share=0.5, blurry_share=0.2)
        plan = draw_online(world, settings, seed)
        majors = Counter(plan.major)
        assert sorted(majors) == [0, 1, 2] and sum(majors.values()) == k  # each segment majors >= 1
        sizes.add(tuple(majors[j] for j in range(3)))
        assert sum(plan.disjoint) == round(0.5 * k)
        counts = per_segment_counts(world, plan.segments)
        disjoint = torch.tensor(plan.disjoint)
        assert ((counts[disjoint] > 0).sum(1) == 1).all()
        blurry = ~disjoint
        assert (counts[blurry].sum(1) - counts[blurry, torch.tensor(plan.major)[blurry]]).tolist() == \
            [round(0.2 * 24)] * int(blurry.sum())
        new, segments = online_order(world, settings, seed)
        assert_valid_online_stream(world, new, segments)
        new_counts.add(tuple(len(e) for e in new.experiences))
    assert len(sizes) > 2 and len(new_counts) > 2  # random task sizes, not one fixed split


@pytest.mark.parametrize("mode", ["disjoint", "iblurry", "siblurry"])
def test_same_seed_same_order_other_seed_other_order(world, mode):
    settings = OnlineSettings(mode)
    torch.manual_seed(0)
    a_stream, a = online_order(world, settings, seed=7)
    torch.manual_seed(1)  # the global RNG plays no part
    b_stream, b = online_order(world, settings, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(a_stream.train_y, b_stream.train_y) and a_stream.experiences == b_stream.experiences
    _, c = online_order(world, settings, seed=8)
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_other_segment_counts(world):
    for mode in ("disjoint", "iblurry", "siblurry"):
        for n_segments in (1, 4, 12):
            new, segments = online_order(world, OnlineSettings(mode, n_segments=n_segments), seed=2)
            assert len(segments) == len(new.experiences) == n_segments
            assert_valid_online_stream(world, new, segments)
    plan = draw_online(world, OnlineSettings("iblurry", n_segments=4), seed=0)
    assert plan.major == [j for j in range(4) for _ in range(3)]  # labels cut into 4 even runs
    plan = draw_online(world, OnlineSettings("iblurry", n_segments=1), seed=0)
    assert plan.moved == [0] * 12  # nowhere else to move to


def test_long_tailed_world(long_tail):
    assert min(long_tail.train_counts) == 5
    for mode in ("disjoint", "iblurry", "siblurry"):
        settings = OnlineSettings(mode, disjoint_share=0.25, blurry_share=0.2)
        plan = draw_online(long_tail, settings, seed=3)
        counts = per_segment_counts(long_tail, plan.segments)
        for c, n_c in enumerate(long_tail.train_counts):
            expected = 0 if plan.disjoint[c] else round(0.2 * n_c)
            assert plan.moved[c] == expected and counts[c, plan.major[c]] == n_c - expected
            assert counts[c].sum() == n_c
        assert_valid_online_stream(long_tail, *online_order(long_tail, settings, seed=3))


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"mode": "blurry"}, "online.mode"),
    ({"mode": "iblurry", "disjoint_share": 50}, "online.disjoint_share"),
    ({"mode": "iblurry", "disjoint_share": -0.1}, "online.disjoint_share"),
    ({"mode": "siblurry", "blurry_share": 1.5}, "online.blurry_share"),
    ({"mode": "siblurry", "blurry_share": "0.1"}, "online.blurry_share"),
    ({"mode": "iblurry", "n_segments": 0}, "online.n_segments"),
    ({"mode": "iblurry", "n_segments": 13}, "online.n_segments"),
    ({"mode": "iblurry", "n_segments": 2.5}, "online.n_segments"),
])
def test_bad_settings_name_the_key(world, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        online_order(world, OnlineSettings(**kwargs), seed=0)
    if key == "online.mode":
        assert "['disjoint', 'iblurry', 'siblurry']" in str(err.value)
    if kwargs.get("n_segments") == 13:
        assert "<= 12" in str(err.value)


def test_settings_from_a_config_dict_name_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown config key online\.segments"):
        online_settings_from_dict({"mode": "iblurry", "segments": 3})
    with pytest.raises(ValueError, match=r"online\.mode is missing"):
        online_settings_from_dict({})
    assert online_settings_from_dict({"mode": "siblurry"}) == OnlineSettings("siblurry")


@pytest.mark.skipif(not all((OMNIGLOT / n).is_file() for n in OMNIGLOT_ARCHIVES),
                    reason=f"Omniglot archives not found in {OMNIGLOT}")
def test_omniglot_stream_with_per_image_codes_and_novel_alphabets(tmp_path_factory):
    cfg = compose_config(["benchmark=omniglot", "benchmark.n_experiences=3", "benchmark.train_drawers=2",
                          "benchmark.image_size=14", "benchmark.heldout_alphabets=2"])
    cfg["benchmark"]["cache_dir"] = str(tmp_path_factory.mktemp("omniglot-cache"))
    cfg["benchmark"]["data_root"] = str(OMNIGLOT)
    stream = build_stream(cfg["benchmark"])
    assert stream.heldout and stream.novel is not None and stream.fine_grained_pairs == []
    for mode in ("disjoint", "iblurry", "siblurry"):
        new, segments = online_order(stream, OnlineSettings(mode), seed=1)
        assert_valid_online_stream(stream, new, segments)
        assert new.novel is stream.novel and new.train_codes is stream.train_codes  # per image: unchanged
        arrival = torch.cat(segments)
        assert torch.equal(new.codes_for(arrival)[:, 0], new.class_codes[new.train_y[arrival], 0])  # alphabets
