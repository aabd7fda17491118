"""Learning speed: where the curve is sampled, and its summary."""

from __future__ import annotations

import pytest
import torch

from continual.metrics.evaluate import learning_speed_summary, milestone_steps


def test_milestones_are_the_first_steps_where_every_category_has_k_examples():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    # step 1 sees 0,1; step 2 sees 2,1; step 3 sees 0,1
    batches = [torch.tensor([0, 2]), torch.tensor([5, 3]), torch.tensor([1, 4])]
    # k=1: after step 2 all of 0,1,2 seen once; k=5: category 2 has one image only, so "all of it"
    # is reached at step 2, but category 0 reaches 2 images (all) at step 3 and 1 reaches 3 at step 3.
    assert milestone_steps(batches, labels, ks=(0, 1, 5)) == {0: 0, 1: 2, 5: 3}


def test_summary_means_over_experiences_and_normalised_area():
    curves = [{"0": 0.2, "1": 0.4, "5": 0.6, "10": 0.8}, {"0": 0.4, "1": 0.6, "5": 0.8, "10": 1.0}]
    s = learning_speed_summary(curves)
    assert s["k0"] == pytest.approx(0.3) and s["k10"] == pytest.approx(0.9)
    # trapezoids: (0.3+0.5)/2*1 + (0.5+0.7)/2*4 + (0.7+0.9)/2*5 = 0.4 + 2.4 + 4.0 = 6.8; / 10
    assert s["area"] == pytest.approx(0.68)
    assert learning_speed_summary([]) is None
