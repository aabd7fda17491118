"""Learning from one look: fast binding (imprinting with a description prior), cosine rows composed
from descriptions, the logit-adjusted loss, and the protocols on a never-trained domain."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from continual.heads import FastBinding, GrowingClassHead
from continual.heads.binding import rows_from_descriptions
from continual.learner import LEARNERS
from continual.memory import ClassBalancedReservoir
from continual.metrics.novel import meet_one_at_a_time, split_drawers
from continual.stream.attributes import WORLD_ATTRIBUTES as SPACE
from continual.stream.stream import NovelImages

SHAPE = (3, 16, 16)


def _patterns(n: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3, 16, 16)`` float patterns in [0, 255], one per category, far apart."""
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)) * 255


def _draw(patterns: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Images of ``labels``: their category's pattern plus pixel noise, uint8."""
    noise = torch.randn((len(labels), *SHAPE), generator=torch.Generator().manual_seed(seed)) * 20
    return (patterns[labels] + noise).clamp(0, 255).to(torch.uint8)


def _learner(n_classes: int = 8, memory: int = 0, **kw):
    torch.manual_seed(0)
    args = dict(n_classes=n_classes, image_shape=SHAPE, class_attributes=None, attribute_blocks=None,
                memory=ClassBalancedReservoir(memory, SHAPE), backbone="small_cnn",
                backbone_args={"width": 8, "embed_dim": 32})
    return LEARNERS.build("child", **{**args, **kw})


def test_imprinted_row_is_the_normalised_mean_of_normalised_embeddings():
    binding, head = FastBinding(4, 5, window=10, description_weight=0.0), GrowingClassHead(4, 5, cosine_scale=10.0)
    head.grow(3)
    z = torch.randn(6, 4)
    y = torch.tensor([0, 0, 2, 2, 2, 1])
    binding.observe(z, y)
    head.write_rows(*binding.rows())
    for c in range(3):
        expected = F.normalize(F.normalize(z[y == c], dim=1).mean(0), dim=0)
        assert torch.allclose(head.weight[c], expected, atol=1e-6)
    # Rows of categories with no example yet are untouched.
    assert not torch.allclose(F.normalize(head.weight[3], dim=0), F.normalize(binding.sums[3] + 1e-9, dim=0))


def test_description_weighs_like_examples_and_fades_as_they_accumulate():
    d, z = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    binding = FastBinding(2, 1, window=100, description_weight=1.0)
    binding.describe([0], d)
    binding.observe(z, torch.tensor([0]))
    _, rows = binding.rows()
    assert torch.allclose(rows[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))  # one example = the description
    cos_after_one = float(rows[0] @ F.normalize(d[0], dim=0))
    binding.observe(z.repeat(9, 1), torch.zeros(9, dtype=torch.long))
    _, rows = binding.rows()
    assert float(rows[0] @ F.normalize(d[0], dim=0)) < cos_after_one  # ten examples outweigh it
    assert torch.allclose(rows[0], F.normalize(torch.tensor([1.0, 10.0]), dim=0))


def test_binding_window_counts_examples_before_the_batch():
    binding = FastBinding(2, 3, window=10)
    binding.observe(torch.randn(15, 2), torch.zeros(15, dtype=torch.long))  # a category met all at once
    mask, _ = binding.rows()
    assert mask.tolist() == [True, False, False]  # still bound from all 15
    binding.observe(torch.randn(1, 2), torch.tensor([1]))
    mask, _ = binding.rows()
    assert mask.tolist() == [False, True, False]  # category 0 is past its window: the gradient's now


def test_linear_head_rows_are_written_at_the_norm_of_their_neighbours():
    head = GrowingClassHead(4, 4)
    head.grow(3)
    with torch.no_grad():
        head.weight[:2] = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0]])
        head.bias[:2] = torch.tensor([1.0, 3.0])
    mask = torch.tensor([False, False, True, False])
    head.write_rows(mask, torch.tensor([[0, 0, 0, 5.0]]).repeat(4, 1))
    assert torch.allclose(head.weight[2], torch.tensor([0, 0, 0, 3.0])) and float(head.bias[2].detach()) == 2.0
    assert torch.equal(head.weight[0], torch.tensor([3.0, 0, 0, 0]))  # others untouched


def test_a_new_category_is_recognised_after_one_step_with_one_example():
    patterns = _patterns(8)
    results = {}
    for bind in (True, False):
        learner = _learner(bind=bind, description_weight=0.0)
        learner.begin_experience(0, [0, 1, 2, 3])
        y0 = torch.arange(4).repeat(8)
        for step in range(10):
            learner.observe(_draw(patterns, y0, step), y0, None)
        learner.begin_experience(1, [4, 5, 6, 7])
        one = torch.tensor([4, 5, 6, 7])
        learner.observe(_draw(patterns, one, 100), one, None)  # a single example of each, one step
        test_y = torch.arange(4, 8).repeat(10)
        pred = learner.scores(_draw(patterns, test_y, 200)).class_logits.argmax(1)  # among all 8
        results[bind] = float((pred == test_y).float().mean())
    assert results[True] >= 0.9, results
    assert results[False] <= 0.5, results  # the gradient alone has not learned them in one step


def test_logit_adjusted_loss_is_cross_entropy_on_logits_plus_log_prior():
    learner = _learner(head="linear", bind=False, logit_adjustment=1.0, optimizer="sgd", lr=1e-9)
    learner.begin_experience(0, [0, 1, 2])
    y = torch.tensor([0, 0, 0, 0, 1, 2])
    x = _draw(_patterns(3), y, 0)
    learner.train()
    with torch.no_grad():
        logits = learner.class_head(learner._embed(x))  # train-mode batch statistics, as observe sees them
    prior = torch.tensor([4 + 1, 1 + 1, 1 + 1.0])  # counts from one, so no category is impossible
    expected = F.cross_entropy(logits + (prior / prior.sum()).log(), y)
    assert torch.allclose(learner.observe(x, y, None), expected, atol=1e-5)
    off = _learner(head="linear", bind=False, logit_adjustment=0.0, optimizer="sgd", lr=1e-9)
    off.begin_experience(0, [0, 1, 2])
    assert torch.allclose(off.observe(x, y, None), F.cross_entropy(logits, y), atol=1e-5)


def test_rows_composed_from_descriptions_land_on_the_new_combination():
    gen = torch.Generator().manual_seed(0)
    value_rows = torch.randn(SPACE.vectors(torch.zeros(1, 4, dtype=torch.long)).shape[1], 64, generator=gen)
    codes = torch.stack([torch.randint(0, s, (40,), generator=gen) for s in SPACE.sizes], 1)  # (40, 4)
    known, new = SPACE.vectors(codes[:30]), SPACE.vectors(codes[30:])
    truth = new @ value_rows  # (10, 64) where an additive model puts the new categories
    composed = rows_from_descriptions(new, known, known @ value_rows, ridge=1e-3)
    sim = F.normalize(composed, dim=1) @ F.normalize(truth, dim=1).T  # (10, 10)
    assert torch.equal(sim.argmax(1), torch.arange(10))  # each lands nearest its own combination
    assert float(sim.diagonal().mean()) > 0.8


def test_cosine_head_starts_new_rows_from_the_known_categories():
    codes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 3, 0, 1], [0, 1, 0, 1]])
    learner = LEARNERS.build("child", n_classes=4, image_shape=(3, 32, 32), class_attributes=SPACE.vectors(codes),
                             attribute_blocks=SPACE.sizes, memory=ClassBalancedReservoir(0, (3, 32, 32), 4),
                             backbone_args={"width": 8, "embed_dim": 16})
    learner.begin_experience(0, [0, 1, 2])
    known = learner.class_head.weight[:3].detach().clone()
    learner.begin_experience(1, [3])
    expected = rows_from_descriptions(learner.class_attributes[3:4], learner.class_attributes[:3], known)
    assert torch.allclose(learner.class_head.weight[3], expected[0], atol=1e-5)
    assert torch.allclose(learner.binding.prior[3], F.normalize(expected[0], dim=0), atol=1e-5)


def _novel(n_categories: int = 12, drawers: int = 20) -> NovelImages:
    patterns = _patterns(n_categories, seed=1)
    category = torch.arange(n_categories).repeat_interleave(drawers)
    return NovelImages(images=_draw(patterns, category, 7), category=category,
                       group=torch.zeros_like(category), drawer=torch.arange(drawers).repeat(n_categories),
                       group_names=["new"], category_names=[f"c{i}" for i in range(n_categories)])


def test_split_drawers_gives_disjoint_train_and_test_images_per_category():
    novel = _novel(5)
    train, test = split_drawers(novel, 15, 5, torch.Generator().manual_seed(0))
    assert train.shape == (5, 15) and test.shape == (5, 5)
    for c in range(5):
        both = torch.cat([train[c], test[c]])
        assert len(both.unique()) == 20 and bool((novel.category[both] == c).all())


def test_meeting_categories_one_at_a_time_binds_each_and_leaves_the_run_learner_alone():
    novel = _novel(12)
    learner = _learner(n_classes=4 + 12, memory=40)
    patterns = _patterns(4)
    learner.begin_experience(0, [0, 1, 2, 3])
    y0 = torch.arange(4).repeat(8)
    for step in range(5):
        learner.observe(_draw(patterns, y0, step), y0, None)
    learner.end_experience(0, _draw(patterns, y0, 50), y0, None)
    before = {k: v.clone() for k, v in learner.state_dict().items() if torch.is_tensor(v)}
    out = meet_one_at_a_time(learner, novel, 4, after=(5, 10), seed=0)
    assert set(out) == {"5", "10", "all", "n_all", "curve"} and out["n_all"] == 12
    assert out["5"] >= 0.5 and out["all"] >= 4 / 12, out  # chance: 1/5 and 1/12
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and learner.class_head.n_active == 4
    unbound = meet_one_at_a_time(_learner(n_classes=16, bind=False), novel, 0, after=(5,), seed=0)
    assert unbound["all"] < out["all"] - 0.15, (unbound, out)  # without binding one pass learns far less


def test_random_affine_distorts_each_image_reproducibly_and_keeps_uint8():
    from continual.learner.augment import RandomAffine

    x = _draw(_patterns(2), torch.tensor([0, 1, 0, 1]), 0)
    torch.manual_seed(3)
    a = RandomAffine()(x)
    torch.manual_seed(3)
    b = RandomAffine()(x)
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert not torch.equal(a[0], RandomAffine()(x[2:3])[0])  # each image its own draw
    same = RandomAffine(rotation=0, shear=0, scale=0, translate=0)(x)
    assert (same.int() - x.int()).abs().max() <= 1  # zero ranges: the identity (up to resampling)


def _first_step_of_a_late_row(fresh_state: bool) -> float:
    """RMS of the first optimiser step of a row bound after a long stream, in units of ``lr``."""
    learner = _learner()
    if not fresh_state:
        learner._fresh_optimizer_state = lambda rows: None
    patterns = _patterns(8)
    learner.begin_experience(0, [0, 1, 2, 3])
    y0 = torch.arange(4).repeat(8)
    for step in range(40):
        learner.observe(_draw(patterns, y0, step), y0, None)
    state = learner.optimizer.state[learner.class_head.weight]
    state["step"].fill_(5000.0)  # as after a long stream: Adam's bias correction has faded
    learner.begin_experience(1, [4])
    one = torch.tensor([4, 4])
    learner.observe(_draw(patterns, one, 9), one, None)
    assert float(state["exp_avg_sq"][5:].abs().sum()) == 0.0  # rows never active keep no state
    step = learner.binding.rows()[1][4] - learner.class_head.weight[4].detach()  # bound row minus stepped row
    return float(step.pow(2).mean().sqrt()) / learner.optimizer.param_groups[0]["lr"]


def test_a_row_bound_late_in_a_stream_starts_with_settled_adam_moments():
    # From zero moments the first step is m / sqrt(v) = 0.1 / sqrt(0.001) ~ 3.2 lr per coordinate,
    # and momentum carries it on; from the settled rows' second moment it is smaller.
    stale, fresh = _first_step_of_a_late_row(False), _first_step_of_a_late_row(True)
    assert stale > 2.8
    assert fresh < 0.85 * stale, (fresh, stale)


def test_binding_stops_once_every_category_is_past_its_window_and_changes_nothing_by_stopping():
    def run(always_live: bool) -> tuple[dict, list[bool]]:
        learner = _learner(memory=40)
        if always_live:
            learner.binding.still_open = lambda n_active: True
        patterns, live = _patterns(8), []
        for e, classes in enumerate([[0, 1, 2, 3], [4, 5, 6, 7]]):
            learner.begin_experience(e, classes)
            live.append(learner.binding.live)
            y = torch.tensor(classes).repeat(8)
            for step in range(24):
                learner.observe(_draw(patterns, y, step + 100 * e), y, None)
            live.append(learner.binding.live)
            learner.end_experience(e, _draw(patterns, y, 999), y, None)
        params = {k: v.clone() for k, v in learner.state_dict().items()
                  if torch.is_tensor(v) and not k.startswith("binding.")}
        return params, live

    skipping, live = run(False)
    assert live == [True, False, True, False]  # open when categories arrive, closed once all have 10+
    always, _ = run(True)
    assert all(torch.equal(skipping[k], always[k]) for k in always)  # the skipped steps would write nothing


def test_impossible_new_domain_settings_fail_naming_the_key_before_training():
    from continual.metrics.novel import check_new_domain

    novel = _novel(3)  # 20 images per category
    check_new_domain({"one_at_a_time": True, "train_per_category": 15, "test_per_category": 5}, novel)
    with pytest.raises(ValueError, match=r"eval.new_domain.train_per_category \+ test_per_category = 21"):
        check_new_domain({"one_at_a_time": True, "train_per_category": 16, "test_per_category": 5}, novel)
    with pytest.raises(ValueError, match="eval.new_domain.step_images must be >= 1"):
        check_new_domain({"step_images": 0}, novel)
    check_new_domain({"step_images": 0}, None)  # no new domain: nothing to run, nothing to check
