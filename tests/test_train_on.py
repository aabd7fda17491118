"""The one training seam (``continual.loop.train_on``), online streams, anytime accuracy, resume at any step."""

from __future__ import annotations

import math

import pytest
import torch

from continual.distributed import global_batches
from continual.experiment import build_learner, run_experiment, seed_everything
from continual.learner import LEARNERS
from continual.loop import TrainProgress, train_on
from continual.memory import ClassBalancedReservoir
from continual.metrics.anytime import anytime_summary, eval_subset, stratified_subsample
from continual.stream import build_stream
from continual.stream.source import Batch, Begin, End, ExperienceSource, OnlineSource, build_source
from tests.conftest import TINY, compose_config

ONLINE = [name for name in LEARNERS.names() if LEARNERS.get(name).supports_online]


def _numbers(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


def test_train_on_trains_exactly_as_the_loop_it_replaced(world_cache):
    """The experience source's batches are the old loop's: one host permutation per epoch from a
    generator seeded by the run's seed, batches of one dropped. A learner trained by a hand-written copy
    of that loop ends up bit-identical to one trained through ``train_on``."""
    cfg = compose_config([*TINY, "train.epochs=2"], world_cache)
    stream = build_stream(cfg["benchmark"])

    seed_everything(0)
    reference = build_learner(cfg, stream, torch.device("cpu"))
    order = torch.Generator().manual_seed(0)
    for e in range(stream.n_experiences):
        reference.begin_experience(e, stream.experiences[e])
        idx = stream.train_indices(e)
        x, y, codes = stream.train_x[idx], stream.train_y[idx], stream.codes_for(idx)
        for _ in range(2):
            for b in global_batches(list(torch.randperm(len(y), generator=order).split(32)), 1):
                reference.observe(x[b], y[b], codes[b])
        reference.end_experience(e, x, y, codes)

    seed_everything(0)
    learner = build_learner(cfg, stream, torch.device("cpu"))
    progress = TrainProgress()
    events = list(train_on(ExperienceSource(stream, epochs=2, batch_size=32, seed=0), learner, progress))
    assert sum(isinstance(e, End) for e in events) == stream.n_experiences
    assert progress.position == len(events) and progress.met == sum(map(len, stream.experiences))
    ref_state, state = reference.state_dict(), learner.state_dict()
    assert ref_state.keys() == state.keys()
    for key, value in ref_state.items():
        assert torch.equal(value, state[key]) if torch.is_tensor(value) else value == state[key], key
    assert torch.equal(reference.memory.y[: len(reference.memory)], learner.memory.y[: len(learner.memory)])


class _NoBoundaries(LEARNERS.get("er")):
    """ER that fails the test if anyone tells it about an experience."""

    def begin_experience(self, experience, new_classes):
        raise AssertionError("begin_experience called on an online stream")

    def end_experience(self, experience, x, y, codes):
        raise AssertionError("end_experience called on an online stream")


@pytest.mark.parametrize("mode", ["disjoint", "iblurry", "siblurry"])
def test_online_stream_tells_the_learner_nothing_but_new_labels(mode, world_cache):
    cfg = compose_config([*TINY, f"online.mode={mode}"], world_cache)
    stream, source = build_source(cfg, build_stream(cfg["benchmark"]))
    assert isinstance(source, OnlineSource) and not source.told
    seed_everything(0)
    learner = _NoBoundaries(n_classes=stream.n_classes, image_shape=stream.image_shape,
                            memory=ClassBalancedReservoir(48, stream.image_shape, len(stream.attribute_space.names)),
                            backbone="small_cnn",
                            backbone_args={"width": 8, "embed_dim": 32})
    met, seen = [], []
    original_meet = learner.meet

    def meet(new):
        met.extend(new)
        original_meet(new)
    learner.meet = meet
    for event in train_on(source, learner, TrainProgress()):
        if isinstance(event, Batch):
            seen.append(event.y_host)
            assert bool((event.y_host < len(met)).all())  # every label was met before (or in) its batch
    seen = torch.cat(seen)
    n_trained = sum(map(len, stream.experiences))
    assert met == list(range(n_trained))  # in order of first appearance, each once
    assert len(seen) == len(stream.train_y)  # one pass: every image once
    assert torch.equal(seen.sort().values, stream.train_y.sort().values)
    assert len(learner.memory) == min(learner.memory.capacity, len(seen))  # filled as samples arrived


@pytest.mark.parametrize("name", [n for n in LEARNERS.names() if n not in ONLINE])
def test_learners_that_need_boundaries_refuse_online_streams_saying_why(name, tmp_path, world_cache):
    cfg = compose_config([*TINY, f"learner={name}", "online.mode=iblurry"], world_cache)
    with pytest.raises(ValueError, match=f"learner {name} cannot learn on an online stream.*online.mode=off"):
        run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None)
    assert not (tmp_path / "r" / "config.json").exists()


class _Crash(Exception):
    pass


def _crash_at_step(monkeypatch, name: str, step: int) -> None:
    """Make learner ``name`` raise in its ``step``-th ``observe`` (after the checkpoints before it)."""
    cls = LEARNERS.get(name)
    original = cls.observe
    calls = [0]

    def observe(self, *args):
        calls[0] += 1
        if calls[0] == step:
            raise _Crash(f"step {step}")
        return original(self, *args)
    monkeypatch.setattr(cls, "observe", observe)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_resume_after_a_crash_at_any_step_gives_the_uninterrupted_report(name, tmp_path, world_cache, monkeypatch):
    extra = ["learner.epochs=2"] if name == "gdumb" else []
    cfg = compose_config([*TINY, f"learner={name}", "train.epochs=2", "train.checkpoint_every=3",
                          "eval.anytime.every=40", *extra], world_cache)
    whole = run_experiment(cfg, tmp_path / "whole", print_fn=lambda _: None).to_dict()
    step = 11  # inside the second experience (3 steps per epoch, 2 epochs), two steps past a checkpoint
    with monkeypatch.context() as m:
        _crash_at_step(m, name, step)
        with pytest.raises(_Crash):
            run_experiment(cfg, tmp_path / "cut", print_fn=lambda _: None)
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ckpt["loop"]["progress"]["steps"] == 9 and ckpt["loop"]["next_experience"] == 1  # mid-experience
    lines: list[str] = []
    resumed = run_experiment(cfg, tmp_path / "cut", print_fn=lines.append).to_dict()
    assert any(line.startswith("resuming from") and "step 9" in line for line in lines)
    assert _numbers(resumed) == _numbers(whole)


@pytest.mark.parametrize("name", ONLINE)
def test_online_run_resumes_exactly_and_reports_anytime_accuracy(name, tmp_path, world_cache, monkeypatch):
    cfg = compose_config([*TINY, f"learner={name}", "online.mode=iblurry", "train.checkpoint_every=2",
                          "eval.anytime.every=30", "train.batch_size=8"], world_cache)
    whole = run_experiment(cfg, tmp_path / "whole", print_fn=lambda _: None).to_dict()
    with monkeypatch.context() as m:
        _crash_at_step(m, name, 13)
        with pytest.raises(_Crash):
            run_experiment(cfg, tmp_path / "cut", print_fn=lambda _: None)
    resumed = run_experiment(cfg, tmp_path / "cut", print_fn=lambda _: None).to_dict()
    assert _numbers(resumed) == _numbers(whole)

    anytime = whole["anytime"]
    n_images = 3 * 4 * 24  # one pass over the tiny stream
    points = anytime["curve"]
    assert len(points) == n_images // 30 + 1  # every 30 samples, then the final one on the full test set
    assert points[-1]["samples"] == n_images and points[-1]["n_met"] == 12
    assert [p["samples"] for p in points] == sorted(p["samples"] for p in points)
    assert 0 <= anytime["A_last"] <= 1 and anytime["A_AUC"] == pytest.approx(
        sum(p["accuracy"] for p in points if p["accuracy"] is not None)
        / sum(p["accuracy"] is not None for p in points))
    assert anytime["A_last"] == points[-1]["accuracy"]
    assert whole["learning_speed"] is None  # no experience to count k examples in


def test_stratified_subsample_is_fixed_and_balanced():
    y = torch.tensor([0] * 30 + [1] * 5 + [2] * 12)
    a, b = stratified_subsample(y, 10, seed=3), stratified_subsample(y, 10, seed=3)
    assert torch.equal(a, b)
    counts = torch.bincount(y[a])
    assert counts.tolist() == [10, 5, 10]
    assert not torch.equal(a, stratified_subsample(y, 10, seed=4))


def test_eval_subset_is_the_whole_test_set_unless_it_is_larger_than_the_cap():
    y = torch.arange(50).repeat_interleave(30)  # 1500 test images, as the default world
    assert eval_subset(y, 2000, seed=0) is None and eval_subset(y, 0, seed=0) is None
    sub = eval_subset(y, 500, seed=0)
    assert torch.bincount(y[sub]).tolist() == [10] * 50  # stratified: 500 // 50 per category
    with pytest.raises(ValueError, match="eval.subsample"):
        eval_subset(y, -1, seed=0)


def test_a_long_stream_evaluates_rows_on_the_subsample_and_the_last_on_everything(tmp_path, world_cache):
    cfg = compose_config([*TINY, "eval.subsample=40", "eval.every=1", "eval.anytime.every=48"], world_cache)
    card = run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None).to_dict()
    whole = run_experiment(compose_config([*TINY, "eval.every=1", "eval.anytime.every=48"], world_cache),
                           tmp_path / "whole", print_fn=lambda _: None).to_dict()
    # Same training; the last row and the end-of-run metrics come from the whole test set in both.
    assert card["accuracy_matrix"][-1] == whole["accuracy_matrix"][-1]
    assert card["zero_shot"] == whole["zero_shot"] and card["anytime"]["A_last"] == whole["anytime"]["A_last"]
    # Earlier rows from 2 images per category (40 // 20 categories): estimates of the same cells.
    assert card["accuracy_matrix"][0] != whole["accuracy_matrix"][0]
    # Experience 1's cell: the mean over its 4 categories of accuracies over 2 images each, so k/8.
    assert abs(card["accuracy_matrix"][0][0] * 8 - round(card["accuracy_matrix"][0][0] * 8)) < 1e-9


def test_anytime_summary_follows_the_field_guide():
    points = [
        {"samples": 10, "n_met": 2, "accuracy": 0.5, "per_category": {"0": 1.0, "1": 0.0}, "zero_shot": None},
        {"samples": 20, "n_met": 2, "accuracy": 0.75, "per_category": {"0": 0.5, "1": 1.0}, "zero_shot": 0.3},
        {"samples": 25, "n_met": 3, "accuracy": 0.5, "per_category": {"0": 0.5, "1": 0.5, "2": 0.5}, "zero_shot": None},
    ]
    s = anytime_summary(points)
    assert s["A_AUC"] == pytest.approx((0.5 + 0.75 + 0.5) / 3) and s["A_last"] == 0.5
    # Category 0: best 1.0, final 0.5; category 1: best 1.0, final 0.5; category 2: no earlier point.
    assert s["F_last"] == pytest.approx(0.5)
    assert [p["samples"] for p in s["curve"]] == [10, 20, 25]


def test_eval_every_k_experiences_evaluates_fewer_rows(tmp_path, world_cache):
    cfg = compose_config([*TINY, "benchmark.n_experiences=4", "benchmark.categories_per_experience=3",
                          "eval.every=2"], world_cache)
    card = run_experiment(cfg, tmp_path / "r", print_fn=lambda _: None)
    R = card.matrix()
    assert all(math.isnan(v) for v in R[0]) and all(math.isnan(v) for v in R[2])  # rows skipped
    assert not math.isnan(R[1][0]) and not math.isnan(R[3][3])
    assert card.average_accuracy == pytest.approx(R[3].mean())
    assert card.forgetting is not None and math.isfinite(card.forgetting)


def test_events_of_an_experience_source_regenerate_identically(world_cache):
    """A resume regenerates the source and skips what was consumed: the sequence must not depend on
    anything but the seed."""
    cfg = compose_config(TINY, world_cache)
    stream = build_stream(cfg["benchmark"])
    a = [e for e in ExperienceSource(stream, epochs=2, batch_size=16, seed=5).events() if isinstance(e, Batch)]
    b = [e for e in ExperienceSource(stream, epochs=2, batch_size=16, seed=5).events() if isinstance(e, Batch)]
    c = [e for e in ExperienceSource(stream, epochs=2, batch_size=16, seed=6).events() if isinstance(e, Batch)]
    assert all(torch.equal(p.y_host, q.y_host) and torch.equal(p.x, q.x) for p, q in zip(a, b))
    assert not all(torch.equal(p.y_host, q.y_host) for p, q in zip(a, c))
    assert all(isinstance(e, (Begin, End, Batch)) or e.epoch >= 0
               for e in ExperienceSource(stream, epochs=1, batch_size=16, seed=5).events())


def test_the_child_online_takes_its_class_prior_from_recent_steps(world_cache):
    """Online, the categories met last are the rarest in a running count though training sees them
    most; ``prior_steps=auto`` makes the logit adjustment's prior an average over recent steps."""
    stream = build_stream(compose_config(TINY, world_cache)["benchmark"])
    online = build_learner(compose_config([*TINY, "online.mode=iblurry"], world_cache), stream, torch.device("cpu"))
    offline = build_learner(compose_config(TINY, world_cache), stream, torch.device("cpu"))
    assert online.prior_decay == pytest.approx(1 - 1 / 50) and offline.prior_decay == 1.0
    for learner in (online, offline):
        for label in (0, 1):  # 100 steps of category 0, then 100 of category 1
            for _ in range(100):
                prior = learner._log_prior(torch.full((8,), label), 2)
        learner.prior = prior
    assert float(online.prior[1] - online.prior[0]) > 1.5  # recent steps: category 1 dominates (~e^2 : 1)
    assert abs(float(offline.prior[1] - offline.prior[0])) < 0.01  # all steps: equal counts
    with pytest.raises(ValueError, match="learner.prior_steps"):
        build_learner(compose_config([*TINY, "learner.prior_steps=-1"], world_cache), stream, torch.device("cpu"))


def test_continual_zero_shot_means_follow_the_field_guide(tmp_path, world_cache):
    """After each experience t, GZSL with seen = trained so far and unseen = every later and held-out
    category; mSA, mUA, mH, mAUSUC their means (Skorokhodov & Elhoseiny 2021)."""
    card = run_experiment(compose_config(TINY, world_cache), tmp_path / "r", print_fn=lambda _: None).to_dict()
    g = card["gzsl"]
    points = g["per_experience"]
    assert len(points) == 3 and g["n"] == 3
    for key, mean_key in (("seen", "mSA"), ("unseen", "mUA"), ("harmonic", "mH"), ("auc", "mAUSUC")):
        assert g[mean_key] == pytest.approx(sum(p[key] for p in points) / 3)
    # The last experience leaves only the held-out categories unseen: the end-of-stream GZSL.
    assert {k: points[-1][k] for k in ("seen", "unseen", "harmonic", "auc")} == \
        {k: g[k] for k in ("seen", "unseen", "harmonic", "auc")}
    # Earlier, later experiences' categories are unseen too: a different candidate set.
    assert points[0] != points[-1]
