"""Calibrated GZSL (continual.metrics.calibration): gamma maximises H on its calibration data, is chosen
without reading any test image or label, seen columns are the class logits, the switch off leaves the
report as it was, and on real training calibrated H beats uncalibrated H."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from continual.config import ConfigError, validate_config
from continual.experiment import build_learner, run_experiment, seed_everything
from continual.loop import run_stream
from continual.metrics import evaluate as ev
from continual.metrics.calibration import (CalibrationSettings, Calibrator, calibration_settings, choose_gamma,
                                           common_scale, described, scale_gap, stacked_accuracy)
from continual.metrics.report import CALIBRATED_FIELDS, ReportCard
from continual.stream import build_stream
from continual.stream.source import build_source
from continual.stream.validation import split_validation
from tests.conftest import TINY, compose_config

QUIET = lambda _: None  # noqa: E731


# ----------------------------------------------------------------------------------------------
# choosing gamma: pure functions on score matrices
# ----------------------------------------------------------------------------------------------


def _scores_with_margins(margins: list[float], target: list[int], n_classes: int = 4) -> torch.Tensor:
    """Scores where each image's own side ranks its category first and best seen minus best unseen is its margin
    (seen categories 0, 1; unseen 2, 3)."""
    s = torch.zeros(len(target), n_classes, dtype=torch.float64)
    for i, (m, t) in enumerate(zip(margins, target)):
        seen_best, unseen_best = (t, 2) if t < 2 else (0, t)
        s[i, [c for c in range(n_classes) if c not in (seen_best, unseen_best)]] = -100.0
        s[i, seen_best], s[i, unseen_best] = m, 0.0
    return s


def test_gamma_maximises_h_in_a_case_with_a_known_answer():
    # Seen images (classes 0, 1) have margins 3, 4 | 5, 6; unseen ones (2, 3) 1, 2 | 2.5, 7. Seen wins iff
    # margin >= gamma, so gamma in (2.5, 3] gets every seen image and 3 of 4 unseen: H = 2 * 0.75 / 1.75, the
    # best; the middle of that interval is 2.75.
    target = [0, 0, 1, 1, 2, 2, 3, 3]
    scores = _scores_with_margins([3, 4, 5, 6, 1, 2, 2.5, 7], target)
    gamma = choose_gamma(scores, torch.tensor(target), [0, 1], [2, 3])
    assert gamma == pytest.approx(2.75)
    acc = stacked_accuracy(scores, torch.tensor(target), [0, 1], [2, 3], gamma)
    assert (acc["seen"], acc["unseen"]) == (1.0, 0.75) and acc["harmonic"] == pytest.approx(1.5 / 1.75)
    # Uncalibrated, every unseen image with a positive margin goes to a seen category.
    assert stacked_accuracy(scores, torch.tensor(target), [0, 1], [2, 3], 0.0)["unseen"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_is_the_best_of_a_brute_force_search(seed):
    g = torch.Generator().manual_seed(seed)
    seen, unseen = [0, 1, 2, 3], [4, 5, 6]
    target = torch.cat([torch.full((int(n),), c) for c, n in zip(range(7), torch.randint(3, 12, (7,), generator=g))])
    scores = torch.randn(len(target), 7, generator=g, dtype=torch.float64)
    scores[torch.arange(len(target)), target] += 1.5
    scores[:, seen] += 2.0  # seen categories dominate, as they do for a learner that trained on them
    # The stacked prediction itself, by argmax, at every gamma between and beyond the margins.
    cand = torch.tensor(seen + unseen)
    margins = np.unique((scores[:, seen].max(1).values - scores[:, unseen].max(1).values).numpy())
    grid = np.r_[margins[0] - 1, (margins[1:] + margins[:-1]) / 2, margins[-1] + 1]

    def h(gamma: float) -> float:
        shifted = scores.clone()
        shifted[:, seen] -= gamma
        pred = cand[shifted[:, cand].argmax(1)]
        is_seen = target < 4
        s = ev.mean_per_class_accuracy(pred[is_seen], target[is_seen])
        u = ev.mean_per_class_accuracy(pred[~is_seen], target[~is_seen])
        return 2 * s * u / (s + u) if s + u else 0.0

    best = max(h(x) for x in grid)
    gamma = choose_gamma(scores, target, seen, unseen)
    assert h(gamma) == pytest.approx(best, abs=1e-12)
    assert stacked_accuracy(scores, target, seen, unseen, gamma)["harmonic"] == pytest.approx(best, abs=1e-12)
    assert best > h(0.0)  # the case needs calibrating at all


def test_attribute_scale_puts_likelihoods_on_each_images_logits():
    # Likelihoods that are an exact affine image of the logits on the seen columns map back exactly.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64)
    a, b = torch.rand(5, 1, generator=g, dtype=torch.float64) + 0.5, torch.randn(5, 1, generator=g, dtype=torch.float64)
    hidden = torch.randn(5, 2, generator=g, dtype=torch.float64)  # unseen categories' logits, had they been learned
    ll = (torch.cat([logits, hidden], 1) - b) / a
    descriptions, used = described(logits, None, ll, "prototypes")  # no description scores: attributes
    assert used == "attributes" and torch.allclose(descriptions, torch.cat([logits, hidden], 1))
    scores = common_scale(logits, descriptions)
    assert torch.equal(scores[:, :3], logits) and torch.allclose(scores[:, 3:], hidden)


def test_gap_is_the_median_excess_of_a_logit_over_its_description():
    logits = torch.tensor([[5.0, 1.0], [0.0, 4.0], [3.0, 0.0], [9.0, 9.0]])  # (4 images, 2 seen categories)
    descriptions = torch.tensor([[2.0, 0.0, 7.0], [0.0, 3.0, 7.0], [-1.0, 0.0, 7.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 0, 2])  # the last image is of an unseen category: not counted
    assert scale_gap(logits, descriptions, y) == 3.0  # own excesses 3, 1, 4
    assert scale_gap(logits, descriptions, torch.tensor([2, 2, 2, 2])) is None


# ----------------------------------------------------------------------------------------------
# a learner on a tiny stream
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(world_cache):
    """A tiny world stream and a child learner trained on its first two experiences, its memory filled:
    what a calibration sees when the third arrives."""
    from continual.loop import TrainProgress, train_on
    from continual.stream.source import End

    cfg = compose_config(TINY, world_cache)
    seed_everything(0)
    stream, source = build_source(cfg, build_stream(cfg["benchmark"]))
    seed_everything(0)
    learner = build_learner(cfg, stream, torch.device("cpu"))
    for event in train_on(source, learner, TrainProgress()):
        if isinstance(event, End) and event.experience == 1:
            return cfg, stream, learner
    raise AssertionError("the stream has fewer than two experiences")


def test_seen_columns_are_the_class_logits_and_unseen_ones_the_descriptions(tiny):
    cfg, stream, learner = tiny
    n_seen = sum(len(e) for e in stream.experiences[:2])
    seen_idx = (stream.test_y < n_seen).nonzero().squeeze(1)
    by_anchors = {}
    for anchors in ("prototypes", "rows"):
        result = by_anchors[anchors] = ev.evaluate_pass(learner, stream, n_seen, descriptions=anchors)
        assert result.description_scores.shape == (len(stream.test_y), stream.n_classes)
        descriptions, used = described(result.class_logits, result.description_scores, result.log_likelihood, anchors)
        assert used == anchors
        scores = common_scale(result.class_logits, descriptions)
        assert torch.equal(scores[:, :n_seen], result.class_logits)
        assert torch.equal(scores[:, n_seen:], result.description_scores[:, n_seen:])
        # One scale: description scores are cosines times the head's scale, as the logits are; and after two
        # tiny experiences the known categories' descriptions already pick the head's choice well above chance.
        assert result.description_scores.abs().max() <= learner.class_head.cosine_scale + 1e-4
        agree = result.description_scores[seen_idx, :n_seen].argmax(1) == result.class_logits[seen_idx].argmax(1)
        assert agree.float().mean() > 1.5 / n_seen, (anchors, agree.float().mean())
    # The two anchors are different maps; and without descriptions asked for, nothing extra is computed.
    assert not torch.allclose(by_anchors["rows"].description_scores, by_anchors["prototypes"].description_scores)
    assert ev.evaluate_pass(learner, stream, n_seen).description_scores is None


def test_gamma_never_reads_the_test_set(tiny):
    cfg, stream, learner = tiny
    settings = CalibrationSettings()
    clean = Calibrator(settings, stream, seed=0)
    clean.arrive(learner, 2)
    g = torch.Generator().manual_seed(1)
    poisoned_stream = dataclasses.replace(
        stream, test_x=torch.randint(0, 256, stream.test_x.shape, generator=g, dtype=torch.uint8),
        test_y=stream.test_y[torch.randperm(len(stream.test_y), generator=g)])
    poisoned = Calibrator(settings, poisoned_stream, seed=0)
    poisoned.arrive(learner, 2)
    assert clean.history and clean.gamma == poisoned.gamma and clean.history == poisoned.history
    # An evaluation's gamma (the offset plus the gap now, on the memory) does not read the test set either.
    n_seen, unseen = 8, ev.unseen_after(stream, 1)
    on_clean = clean.gzsl(learner, ev.evaluate_pass(learner, stream, n_seen, descriptions="prototypes"), unseen)
    on_poisoned = poisoned.gzsl(learner, ev.evaluate_pass(learner, poisoned_stream, n_seen, descriptions="prototypes"),
                                unseen)
    assert on_clean["gamma"] == on_poisoned["gamma"] == pytest.approx(clean.offset + on_clean["gap"])
    assert (on_clean["seen"], on_clean["auc"]) != (on_poisoned["seen"], on_poisoned["auc"])  # the poison did reach the scores
    # It does read what it should: other arriving images give another gamma.
    other = Calibrator(dataclasses.replace(settings, per_category=3), stream, seed=0)
    other.arrive(learner, 2)
    assert other.history[0]["n_new_images"] == 3 * len(stream.experiences[2])


def test_whole_run_chooses_the_same_gammas_with_a_poisoned_test_set(world_cache):
    cfg = compose_config(TINY, world_cache)
    settings = calibration_settings(cfg["eval"]["calibration"])

    def run(poison: bool, settings: CalibrationSettings = settings) -> ReportCard:
        seed_everything(0)
        stream, source = build_source(cfg, build_stream(cfg["benchmark"]))
        if poison:
            g = torch.Generator().manual_seed(5)
            stream.test_x = torch.randint(0, 256, stream.test_x.shape, generator=g, dtype=torch.uint8)
            stream.test_y = stream.test_y[torch.randperm(len(stream.test_y), generator=g)]
        seed_everything(0)
        learner = build_learner(cfg, stream, torch.device("cpu"))
        return run_stream(learner, stream, source, seed=0, progress=False, print_fn=QUIET, learning_speed=False,
                          calibration=Calibrator(settings, stream, 0))

    clean, poisoned = run(False), run(True)
    chosen = clean.gzsl_calibrated["chosen"]
    assert [c["experience"] for c in chosen] == [1, 2]  # nothing seen before the second experience
    assert chosen == poisoned.gzsl_calibrated["chosen"]
    points = clean.czsl_calibrated["per_experience"]
    assert [p["gamma"] for p in points] == [p["gamma"] for p in poisoned.czsl_calibrated["per_experience"]]
    assert clean.gzsl_calibrated["gamma"] == poisoned.gzsl_calibrated["gamma"]
    # Each evaluation: the offset of the last arrival (none before the first: 0) plus the gap measured then.
    assert points[0]["source"] == "the gap now (no arrival calibrated yet)" and points[0]["offset"] == 0.0
    for p, offset in zip(points, [0.0, chosen[0]["offset"], chosen[1]["offset"]]):
        assert p["offset"] == offset and p["gamma"] == pytest.approx(offset + p["gap"])
    # Without drift, each evaluation uses the arrival's gamma as chosen (0 before the first).
    still = run(False, dataclasses.replace(settings, drift=False))
    assert [p["gamma"] for p in still.czsl_calibrated["per_experience"]] == [0.0, chosen[0]["gamma"], chosen[1]["gamma"]]
    assert still.czsl_calibrated["per_experience"][0]["source"] == "none"


def test_validation_split_holds_images_out_of_training(tiny):
    _, stream, _ = tiny
    trained, (val_x, val_y) = split_validation(stream, 5, seed=0)
    categories = sorted(c for e in stream.experiences for c in e)
    assert torch.equal(torch.unique(val_y), torch.tensor(categories))
    assert torch.bincount(val_y).tolist()[: len(categories)] == [5] * len(categories)
    assert len(trained.train_y) == len(stream.train_y) - 5 * len(categories)
    assert trained.train_counts == [n - 5 for n in stream.train_counts]
    # Held out means not in the training images: no validation image is among them.
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    overlap = (flat(val_x)[:, None, :] == flat(trained.train_x)[None, :, :]).all(-1).any()
    assert not bool(overlap)
    again = split_validation(stream, 5, seed=0)
    assert torch.equal(again[1][1], val_y) and torch.equal(again[0].train_y, trained.train_y)


@pytest.mark.parametrize("override, key", [
    ("eval.calibration.method=best", "eval.calibration.method"),
    ("eval.calibration.scores=logits", "eval.calibration.scores"),
    ("eval.calibration.seen_from=validation", "eval.calibration.seen_from"),
    ("eval.calibration.val_per_category=5", "eval.calibration.seen_from"),
    ("eval.calibration.per_category=0", "eval.calibration.per_category"),
    ("eval.calibration.per_category=-1", "eval.calibration.per_category"),
])
def test_bad_calibration_settings_name_their_key(override, key):
    cfg = compose_config(TINY + [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_validation_split_needs_an_experience_stream():
    cfg = compose_config(TINY + ["eval.calibration.seen_from=validation", "eval.calibration.val_per_category=2",
                                 "online.mode=iblurry"])
    with pytest.raises(ConfigError, match="online.mode=off"):
        validate_config(cfg)


# ----------------------------------------------------------------------------------------------
# whole runs: the switch, and real learning
# ----------------------------------------------------------------------------------------------


def test_switched_off_the_report_is_what_it_was(tmp_path, world_cache):
    cache = world_cache
    on = run_experiment(compose_config(TINY, cache), tmp_path / "on", print_fn=QUIET).to_dict()
    off = run_experiment(compose_config(TINY + ["eval.calibration.enabled=false"], cache), tmp_path / "off",
                         print_fn=QUIET).to_dict()
    assert not set(CALIBRATED_FIELDS) & set(off)
    assert set(CALIBRATED_FIELDS) <= set(on) and on["gzsl_calibrated"]["harmonic"] is not None
    # Everything else, bit for bit (timing aside): calibrating neither trains nor draws anything.
    strip = lambda r: {k: v for k, v in r.items() if k not in ("timing", *CALIBRATED_FIELDS)}  # noqa: E731
    assert strip(on) == strip(off)
    assert set(off) == {f.name for f in dataclasses.fields(ReportCard)} - set(CALIBRATED_FIELDS)


# Big enough for zero-shot to work (24 trained categories, as tests/test_learning.py), small enough for seconds.
SMALL = ["benchmark.n_experiences=3", "benchmark.categories_per_experience=8", "benchmark.n_heldout=8",
         "benchmark.train_per_category=50", "benchmark.test_per_category=12", "train.epochs=3",
         "learner.backbone_args.width=16", "learner.backbone_args.embed_dim=64", "memory.size=150",
         "progress=false", "logger.wandb.mode=disabled", "eval.few_shot.episodes=20", "eval.learning_speed=false"]


def test_calibrated_h_beats_uncalibrated_h_after_real_training(tmp_path):
    card = run_experiment(compose_config(SMALL, tmp_path / "cache"), tmp_path / "run", print_fn=QUIET)
    plain, calibrated = card.gzsl, card.gzsl_calibrated
    assert calibrated["source"].startswith("experience 3 arriving")
    assert calibrated["harmonic"] > plain["harmonic"] + 0.15, (plain, calibrated)
    assert calibrated["unseen"] > plain["unseen"] and calibrated["seen"] > 0.3
    assert card.czsl_calibrated["mH"] > card.gzsl["mH"], (card.gzsl, card.czsl_calibrated)
    # The calibration-free area on the common scale beats the one by attribute compatibility alone.
    assert calibrated["auc"] > plain["auc"], (plain, calibrated)
