"""The calibration-free GZSL metric: area under the seen-unseen accuracy curve (AUSUC)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from continual.metrics.evaluate import seen_unseen_auc
from continual.metrics.report import mean_per_class_accuracy


def _brute_force_curve(scores, target, seen, unseen, gammas):
    """Seen and unseen per-class accuracy with ``g`` added to the unseen scores, for each g."""
    cand = torch.tensor(seen + unseen)
    is_seen = torch.isin(target, torch.tensor(seen))
    points = []
    for g in gammas:
        calibrated = scores.clone()
        calibrated[:, unseen] += g
        pred = cand[calibrated[:, cand].argmax(1)]
        points.append((mean_per_class_accuracy(pred[~is_seen], target[~is_seen]),
                       mean_per_class_accuracy(pred[is_seen], target[is_seen])))
    return points


@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, True), (3, True)])
def test_auc_equals_the_area_of_the_brute_force_curve(seed, ties):
    g = torch.Generator().manual_seed(seed)
    seen, unseen = [0, 1, 2, 3], [4, 5, 6]
    target = torch.cat([torch.full((int(n),), c) for c, n in zip(range(7), torch.randint(3, 12, (7,), generator=g))])
    scores = torch.randn(len(target), 7, generator=g, dtype=torch.float64)
    scores[torch.arange(len(target)), target] += 1.0  # better than chance, far from perfect
    if ties:  # whole numbers: many images flip at the same calibration, together
        scores = scores.mul(2).round()
    # Every flip happens at some image's margin: evaluating just above each margin (and at the ends)
    # traces the exact curve; imbalanced class sizes check the per-class weighting.
    s_max, u_max = scores[:, seen].max(1).values, scores[:, unseen].max(1).values
    margins = torch.sort(torch.unique(s_max - u_max)).values
    gammas = [-1e9, *(margins + 1e-6).tolist(), 1e9]
    points = _brute_force_curve(scores, target, seen, unseen, gammas)
    x, y = np.array(points).T
    assert seen_unseen_auc(scores, target, seen, unseen) == pytest.approx(np.trapezoid(y, x), abs=1e-12)
    # The ends of the curve: seen-only and unseen-only accuracy.
    assert y[0] == pytest.approx(mean_per_class_accuracy(torch.tensor(seen)[scores[:, seen].argmax(1)][target < 4],
                                                         target[target < 4]))
    assert x[-1] == pytest.approx(mean_per_class_accuracy(torch.tensor(unseen)[scores[:, unseen].argmax(1)][target >= 4],
                                                          target[target >= 4]))


def test_auc_is_one_for_a_perfect_learner_whatever_its_calibration():
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    scores = torch.full((8, 4), -5.0, dtype=torch.float64)
    scores[torch.arange(8), target] = 0.0
    scores[:, :2] += 100.0  # seen categories dominate: uncalibrated GZSL would name no unseen one
    assert seen_unseen_auc(scores, target, [0, 1], [2, 3]) == pytest.approx(1.0)


def test_auc_is_zero_when_nothing_is_ever_right():
    target = torch.tensor([0, 1, 2, 3])
    scores = torch.zeros(4, 4, dtype=torch.float64)
    scores[torch.arange(4), torch.tensor([1, 0, 3, 2])] = 1.0  # always the other category of its side
    assert seen_unseen_auc(scores, target, [0, 1], [2, 3]) == pytest.approx(0.0)
