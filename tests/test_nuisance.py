"""Nuisance variation (continual.learner.nuisance) and zero-shot by descriptions (eval.zero_shot): the varied
copy changes only the colour, its colour code is unknown, the copies train the attribute heads only, the
switch off is the learner without it bit for bit, and the report names untrained categories as configured."""

from __future__ import annotations

import pytest
import torch

from continual.config import ConfigError, validate_config
from continual.experiment import build_learner, run_experiment
from continual.learner import LEARNERS
from continual.learner.nuisance import NuisanceVariation, channel_permute, erase_texture
from continual.stream.render import RenderSettings, render
from continual.memory import ClassBalancedReservoir
from continual.metrics import evaluate as ev
from continual.stream import build_stream
from continual.stream.attributes import WORLD_ATTRIBUTES as SPACE
from tests.conftest import TINY, compose_config

COLOUR, PATTERN = SPACE.names.index("colour"), SPACE.names.index("pattern")
WORLD_NUISANCES = (("channel_permute", (COLOUR,)),)


def test_channel_permute_reorders_each_images_channels_and_nothing_else():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = channel_permute(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # Each image is one of the 6 orders of its own channels: same values per pixel, the outline kept.
    orders = []
    for a, b in zip(x, out):
        match = [i for i in range(6) if torch.equal(b, a[list(_orders()[i])])]
        assert match, "a varied image is not a channel permutation of its original"
        orders.append(match[0])
    assert len(set(orders)) >= 4  # drawn per image, not one order for the batch
    torch.manual_seed(0)
    torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(channel_permute(x), out)  # the global generator decides: a seed fixes it
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        channel_permute(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_erase_texture_removes_the_pattern_and_keeps_the_outline():
    # The same objects (shape, colour, size, pose) rendered plain and with each pattern: closed, a patterned
    # image comes much closer to its plain twin; closing a mask keeps each shape (IoU), a 5x5 one would not.
    g = torch.Generator().manual_seed(0)
    n = 200
    base = torch.stack([torch.randint(0, 8, (n,), generator=g), torch.randint(0, 8, (n,), generator=g),
                        torch.zeros(n, dtype=torch.long), torch.randint(0, 2, (n,), generator=g)], 1)
    plain, masks = render(base, 3, RenderSettings(), return_masks=True)
    for pattern in (1, 2, 3):  # stripes, dots, checks
        patterned = render(base.clone().index_fill_(1, torch.tensor([2]), pattern), 3, RenderSettings())
        before = (patterned.float() - plain.float()).abs().mean()
        after = (erase_texture(patterned).float() - erase_texture(plain).float()).abs().mean()
        assert after < 0.6 * before, (pattern, float(before), float(after))
    m = masks[:, None].to(torch.uint8) * 255
    closed = erase_texture(m) > 0
    iou = (closed & masks[:, None]).sum((1, 2, 3)) / (closed | masks[:, None]).sum((1, 2, 3))
    assert iou.min() > 0.9 and iou.mean() > 0.98
    assert erase_texture(plain).dtype == torch.uint8 and erase_texture(plain).shape == plain.shape


def _orders() -> list[tuple[int, ...]]:
    import itertools

    return list(itertools.permutations(range(3)))


def test_variation_copies_the_new_images_and_makes_the_changed_code_unknown():
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    codes = torch.randint(0, 4, (10, 4))
    x_var, c_var = NuisanceVariation(WORLD_NUISANCES, per_step=4)(x, codes, n_new=6)
    assert len(x_var) == 4 and torch.equal(c_var[:, COLOUR], torch.full((4,), -1))
    others = [i for i in range(4) if i != COLOUR]
    assert torch.equal(c_var[:, others], codes[:4, others]) and torch.equal(codes[:4, COLOUR], codes[:4, COLOUR])
    # Only new images are varied (replay follows them in the batch): at most n_new copies.
    assert len(NuisanceVariation(WORLD_NUISANCES, per_step=32)(x, codes, n_new=3)[0]) == 3
    assert not NuisanceVariation(WORLD_NUISANCES, per_step=0).active
    assert not NuisanceVariation((), per_step=32).active
    with pytest.raises(ValueError, match="learner.nuisance_variation"):
        NuisanceVariation(WORLD_NUISANCES, per_step=-1)
    with pytest.raises(KeyError, match="no_such"):
        NuisanceVariation((("no_such", (0,)),), per_step=1)
    both = (("channel_permute", (COLOUR,)), ("erase_texture", (PATTERN,)))
    x_var, c_var = NuisanceVariation(both, per_step=4)(x, codes, n_new=6)  # every transform on every copy
    assert (c_var[:, [COLOUR, PATTERN]] == -1).all()
    only = NuisanceVariation(both, per_step=4, use=["erase_texture"])  # the ablation's switch
    assert (only(x, codes, 6)[1][:, COLOUR] >= 0).all() and (only(x, codes, 6)[1][:, PATTERN] == -1).all()
    with pytest.raises(ValueError, match="learner.nuisance_transforms"):
        NuisanceVariation(both, per_step=4, use=["bogus"])


def _learner(**kw):
    torch.manual_seed(0)
    codes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 3, 0, 1], [3, 2, 1, 0]])
    memory = ClassBalancedReservoir(16, (3, 32, 32), n_attributes=4)
    learner = LEARNERS.build("child", n_classes=4, image_shape=(3, 32, 32), class_attributes=SPACE.vectors(codes),
                             attribute_blocks=SPACE.sizes, memory=memory, backbone_args={"width": 8, "embed_dim": 16},
                             **kw)
    return learner, codes


def _train(learner, codes, steps: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    learner.begin_experience(0, [0, 1, 2, 3])
    for _ in range(steps):
        y = torch.randint(0, 4, (8,), generator=g)
        learner.observe(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), y, codes[y])
    return {n: p.detach().clone() for n, p in learner.named_parameters()}


def test_switched_off_is_the_learner_without_variation_bit_for_bit():
    off = _train(*_learner(nuisances=WORLD_NUISANCES, nuisance_variation=0))
    without = _train(*_learner())  # no nuisances from the stream
    on = _train(*_learner(nuisances=WORLD_NUISANCES, nuisance_variation=4))
    assert all(torch.equal(off[n], without[n]) for n in off)
    assert not all(torch.equal(off[n], on[n]) for n in off)


def test_varied_copies_train_the_attribute_heads_only(monkeypatch):
    learner, codes = _learner(nuisances=WORLD_NUISANCES, nuisance_variation=4, bind=False, logit_adjustment=0.0)
    seen = {}
    attribute_loss, class_forward = learner.attribute_head.loss, learner.class_head.forward

    def spy_attr(logits, c):
        seen["attr"] = c
        return attribute_loss(logits, c)

    def spy_class(z):
        seen["class_rows"] = len(z)
        return class_forward(z)

    monkeypatch.setattr(learner.attribute_head, "loss", spy_attr)
    monkeypatch.setattr(learner.class_head, "forward", spy_class)
    learner.begin_experience(0, [0, 1, 2, 3])
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    learner.observe(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), y, codes[y])
    assert seen["class_rows"] == 6  # the category loss sees the originals only
    c = seen["attr"]
    assert len(c) == 6 + 4 and torch.equal(c[6:, COLOUR], torch.full((4,), -1))
    others = [i for i in range(4) if i != COLOUR]
    assert torch.equal(c[6:, others], codes[y[:4]][:, others])


def test_build_learner_takes_the_nuisances_from_the_worlds_attribute_space(tmp_path):
    cfg = compose_config(TINY, tmp_path / "cache")
    stream = build_stream(cfg["benchmark"])
    learner = build_learner(cfg, stream, torch.device("cpu"))
    assert learner.variation is not None and learner.variation.per_step == 32
    assert [changed for _, changed in learner.variation.transforms] == [(COLOUR,)]  # the default: colour only
    cfg = compose_config(TINY + ["learner.nuisance_transforms=null"], tmp_path / "cache")
    learner = build_learner(cfg, stream, torch.device("cpu"))
    assert [changed for _, changed in learner.variation.transforms] == [(COLOUR,), (PATTERN,)]
    cfg_off = compose_config(TINY + ["learner.nuisance_variation=0"], tmp_path / "cache")
    assert build_learner(cfg_off, stream, torch.device("cpu")).variation is None


# ----------------------------------------------------------------------------------------------
# eval.zero_shot: descriptions or attributes
# ----------------------------------------------------------------------------------------------


def _pass(desc: torch.Tensor | None) -> ev.EvalPass:
    ll = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # attributes name category 1 for both images
    return ev.EvalPass(n_seen=1, y=torch.tensor([1, 2]), class_logits=torch.zeros(2, 1), log_likelihood=ll,
                       attribute_pred=None, embedding=torch.zeros(2, 4), description_scores=desc)


def test_zero_shot_names_by_descriptions_where_the_pass_has_them():
    desc = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # right for both
    scores, by = ev.zero_shot_scores(_pass(desc), "descriptions")
    assert by == "descriptions" and scores is not None and torch.equal(scores, desc)
    assert ev.zero_shot_scores(_pass(desc), "attributes")[1] == "attributes"
    assert ev.zero_shot_scores(_pass(None), "descriptions")[1] == "attributes"  # no map: attributes
    with pytest.raises(ValueError, match="eval.zero_shot"):
        ev.zero_shot_scores(_pass(desc), "guess")


def test_config_rejects_an_unknown_zero_shot_scorer_or_transform(tmp_path):
    with pytest.raises(ConfigError, match="eval.zero_shot"):
        validate_config(compose_config(TINY + ["eval.zero_shot=guess"], tmp_path / "cache"))
    with pytest.raises(ConfigError, match="learner.nuisance_transforms names 'bogus'"):
        validate_config(compose_config(TINY + ["learner.nuisance_transforms=[bogus]"], tmp_path / "cache"))


def test_report_carries_both_scorers_and_the_matrix_follows_the_switch(tmp_path):
    reports = {}
    for by in ("descriptions", "attributes"):
        cfg = compose_config(TINY + [f"eval.zero_shot={by}"], tmp_path / "cache")
        reports[by] = run_experiment(cfg, tmp_path / by, print_fn=lambda _: None)
    d, a = reports["descriptions"], reports["attributes"]
    assert d.zero_shot["by"] == "descriptions" and a.zero_shot["by"] == "attributes"
    # The same run either way (the switch changes what is reported, not what is trained).
    assert d.zero_shot["attributes"] == a.zero_shot["attributes"] == a.zero_shot["accuracy"]
    assert d.zero_shot["accuracy"] == d.zero_shot["descriptions"] is not None
    assert d.average_accuracy == a.average_accuracy


def test_memory_prototypes_are_computed_once_per_state(monkeypatch):
    """One evaluation asks for the memory's prototypes several times; any change of weights, memory or rows
    (a step, the memory's update, an online offer) computes them anew, so they are never stale."""
    learner, codes = _learner(nuisance_variation=0)
    _train(learner, codes, steps=1)
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3] * 3)
    learner.end_experience(0, x, y, codes[y])
    calls = []
    features = learner.features
    monkeypatch.setattr(learner, "features", lambda inp: calls.append(len(inp)) or features(inp))
    rows = learner.class_head.weight[:4].detach()
    first = learner._memory_prototypes(4, rows)
    assert torch.equal(learner._memory_prototypes(4, rows), first) and len(calls) == 1  # cached
    learner._memory_prototypes(3, rows[:3])
    assert len(calls) == 2  # other known categories: computed
    for change in (lambda: learner.observe(x[:4], y[:4], codes[y[:4]]),
                   lambda: learner.end_experience(0, x, y, codes[y]),
                   lambda: learner.remember(x[:4], y[:4], y[:4], codes[y[:4]])):
        change()
        before = len(calls)  # a step embeds images of its own (binding)
        after = learner._memory_prototypes(4, rows)
        assert len(calls) == before + 1
    learner.eval()
    fresh = learner._compute_prototypes(4, rows)
    assert torch.allclose(after, fresh)  # what the cache holds is what a fresh computation gives
