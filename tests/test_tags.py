"""Attributes learned from noisy tags (``benchmark.tags``, ``learner.descriptions``): clean defaults change
nothing, the drawn shares are the stated ones, the attribute loss reads only what is tagged, a tag rate of 0
switches it off and says so, majority votes recover descriptions, and a short run learns zero-shot from 30%
tagged images with 20% of the tags wrong."""

from __future__ import annotations

import json

import pytest
import torch

from continual.config import validate_config
from continual.experiment import run_experiment
from continual.heads.attribute_head import AttributeHead
from continual.heads.tag_votes import TagVotes
from continual.learner import LEARNERS
from continual.memory import ClassBalancedReservoir
from continual.stream.attributes import WORLD_ATTRIBUTES as SPACE
from continual.stream.tags import (NO_TAGS, UNTAGGED, TagSettings, apply_tags, count_tags, draw_tags,
                                   majority_descriptions, tag_settings_from_dict)
from continual.stream.world import world_settings_from_dict
from tests.conftest import TINY, compose_config

SIZES = SPACE.sizes  # (8, 8, 4, 2)


def _true_codes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(s, (n,), generator=g) for s in SIZES], 1)  # (n, 4)


def _run(tmp_path, name: str, overrides: list[str], cache) -> dict:
    cfg = compose_config(TINY + ["threads=1"] + overrides, cache)
    run_experiment(cfg, tmp_path / name, print_fn=lambda _: None)
    return json.loads((tmp_path / name / "report.json").read_text())


# --------------------------------------------------------------------------------------------
# the tags themselves
# --------------------------------------------------------------------------------------------


def test_clean_defaults_are_the_true_codes_and_leave_the_stream_as_it_was():
    codes = _true_codes(5000)
    assert torch.equal(draw_tags(codes, SIZES, TagSettings(), seed=3), codes)
    labels = torch.arange(5000) % 50
    assert apply_tags(codes, labels, codes[:50], SIZES, TagSettings(), seed=3) == (None, None)  # no train_codes
    explicit = world_settings_from_dict({"name": "world", "tags": {"rate": 1, "wrong": 0, "missing": 0}})
    assert explicit == world_settings_from_dict({"name": "world"}) and explicit.tags.clean


def test_drawn_shares_are_the_stated_ones_and_wrong_tags_are_never_true():
    codes = _true_codes(200_000)
    tagged = draw_tags(codes, SIZES, TagSettings(rate=0.3, wrong=0.2, missing=0.25), seed=0)
    given = tagged != UNTAGGED
    carries = given.any(1)
    # An image is tagged with prob 0.3, then each attribute kept with prob 0.75 (a tagged image may lose all four).
    assert abs(carries.float().mean() - 0.3 * (1 - 0.25 ** 4)) < 0.005
    assert abs(given[carries].float().mean() - 0.75 / (1 - 0.25 ** 4)) < 0.005
    wrong = given & (tagged != codes)
    assert abs(wrong.sum() / given.sum() - 0.2) < 0.005
    assert (tagged[wrong] != codes[wrong]).all()
    # A wrong tag names every other value equally often: offsets 1..7 of the 8 shapes, none 0.
    offsets = torch.bincount(((tagged - codes) % 8)[:, 0][wrong[:, 0]], minlength=8).float()
    assert offsets[0] == 0 and (offsets[1:] / offsets[1:].mean() - 1).abs().max() < 0.1
    # Untagged entries are -1 and nothing else; tagged ones stay in range.
    assert set(tagged[~given].unique().tolist()) == {UNTAGGED}
    assert ((tagged >= 0) & (tagged < torch.tensor(SIZES))).eq(given).all()


def test_same_seed_same_tags_and_corruptions_nest_across_settings():
    codes = _true_codes(20_000)
    a = draw_tags(codes, SIZES, TagSettings(rate=0.3, wrong=0.2), seed=1)
    assert torch.equal(a, draw_tags(codes, SIZES, TagSettings(rate=0.3, wrong=0.2), seed=1))
    assert not torch.equal(a, draw_tags(codes, SIZES, TagSettings(rate=0.3, wrong=0.2), seed=2))
    low = draw_tags(codes, SIZES, TagSettings(rate=0.1, wrong=0.4), seed=1)
    assert ((low >= 0) <= (a >= 0)).all()  # the images tagged at 0.1 are among those tagged at 0.3
    both = (low >= 0)
    assert ((a != codes) & both <= (low != codes) & both).all()  # a tag wrong at 0.2 is wrong at 0.4 too


@pytest.mark.parametrize("tags, key", [({"rate": 1.5}, "benchmark.tags.rate"), ({"wrong": -0.1}, "benchmark.tags.wrong"),
                                       ({"missing": 2}, "benchmark.tags.missing"), ({"noise": 0.2}, "benchmark.tags.noise")])
def test_bad_tag_settings_name_the_key(tags, key, tmp_path):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        tag_settings_from_dict(tags)
    cfg = compose_config(TINY, tmp_path)
    cfg["benchmark"]["tags"] = {**cfg["benchmark"]["tags"], **tags}
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):  # before any work or file
        validate_config(cfg)


# --------------------------------------------------------------------------------------------
# the loss reads only what is tagged
# --------------------------------------------------------------------------------------------


def _old_loss(head: AttributeHead, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The attribute loss before tags existed: the plain mean over every entry."""
    return -head.log_probs(logits).gather(1, codes + head.offsets).mean()


def test_masked_loss_is_the_plain_mean_bit_for_bit_on_clean_codes():
    head = AttributeHead(16, SIZES)
    for n in (1, 33, 256):
        logits = torch.randn(n, sum(SIZES), generator=torch.Generator().manual_seed(n))
        codes = _true_codes(n, n)
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        new, old = head.loss(a, codes), _old_loss(head, b, codes)
        new.backward()
        old.backward()
        assert torch.equal(new, old) and torch.equal(a.grad, b.grad)


def test_masked_loss_ignores_untagged_entries():
    head = AttributeHead(16, SIZES)
    codes = _true_codes(6)
    codes[0] = UNTAGGED  # an untagged image
    codes[1, 2] = UNTAGGED  # one untagged attribute
    logits = torch.randn(6, sum(SIZES), generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = head.loss(logits, codes)
    loss.backward()
    assert torch.equal(logits.grad[0], torch.zeros(sum(SIZES)))  # -1 read as a value would pull image 0
    offsets = head.offsets.tolist()
    pattern = slice(offsets[2], offsets[2] + SIZES[2])
    assert torch.equal(logits.grad[1, pattern], torch.zeros(SIZES[2]))
    assert logits.grad[1].abs().sum() > 0 and logits.grad[2:].abs().sum() > 0
    # The value: the mean over the 19 tagged entries alone.
    log_p = head.log_probs(logits.detach())
    terms = [log_p[i, offsets[k] + codes[i, k]] for i in range(6) for k in range(4) if codes[i, k] >= 0]
    assert len(terms) == 19 and torch.allclose(loss.detach(), -torch.stack(terms).mean())


def test_a_batch_without_tags_gives_zero_loss_and_no_gradient():
    head = AttributeHead(16, SIZES)
    logits = torch.randn(5, sum(SIZES), requires_grad=True)
    loss = head.loss(logits, torch.full((5, 4), UNTAGGED))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all() and not logits.grad.any()


def _child(**kw):
    torch.manual_seed(0)
    codes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 3, 0, 1], [3, 2, 1, 0], [0, 1, 2, 1], [5, 5, 3, 0]])
    learner = LEARNERS.build("child", n_classes=6, image_shape=(3, 32, 32), class_attributes=SPACE.vectors(codes),
                             attribute_blocks=SIZES, memory=ClassBalancedReservoir(0, (3, 32, 32), n_attributes=4),
                             backbone="small_cnn", backbone_args={"width": 8, "embed_dim": 16}, **kw)
    return learner, codes


def test_untagged_batches_leave_the_attribute_head_untouched():
    learner, codes = _child()
    learner.begin_experience(0, [0, 1, 2])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    before = learner.attribute_head.linear.weight.detach().clone()
    for _ in range(3):
        learner.observe(x, y, torch.full((6, 4), UNTAGGED))
    assert torch.equal(learner.attribute_head.linear.weight, before)  # the loss is off: Adam moves nothing
    learner.observe(x, y, codes[y])
    assert not torch.equal(learner.attribute_head.linear.weight, before)  # tags: it learns


# --------------------------------------------------------------------------------------------
# descriptions from tags
# --------------------------------------------------------------------------------------------


def test_majority_vote_recovers_the_descriptions_at_low_noise():
    class_codes = _true_codes(40, seed=5)
    labels = torch.arange(40).repeat_interleave(100)  # the default world: 100 images per category
    tagged = draw_tags(class_codes[labels], SIZES, TagSettings(rate=0.3, wrong=0.2), seed=0)
    votes = majority_descriptions(count_tags(tagged, labels, 40, SIZES), SIZES)
    assert torch.equal(votes, SPACE.vectors(class_codes))
    # At 90% wrong the truth is outvoted somewhere: the check above can fail.
    noisy = draw_tags(class_codes[labels], SIZES, TagSettings(rate=0.3, wrong=0.9), seed=0)
    assert not torch.equal(majority_descriptions(count_tags(noisy, labels, 40, SIZES), SIZES), SPACE.vectors(class_codes))


def test_votes_count_only_tags_and_say_nothing_without_them():
    votes = TagVotes(3, SIZES)
    votes.count(torch.tensor([0, 0, 0, 1]), torch.tensor([[2, 1, 0, 1], [2, 4, -1, 1], [5, 4, -1, -1], [-1, -1, -1, -1]]))
    d = votes.descriptions()
    assert torch.equal(d[0], SPACE.vectors(torch.tensor([[2, 4, 0, 1]]))[0])  # shape 2 (2 of 3), colour 4 (2 of 3)
    assert not d[1].any() and not d[2].any()  # category 1 had only untagged images, 2 none at all
    assert votes.counts.sum() == 9  # nine tags given


def test_descriptions_from_tags_feed_the_row_map():
    given, codes = _child()
    tags, _ = _child(descriptions="tags")
    assert given.tag_votes is None and "tag_votes.counts" in tags.state_dict()  # checkpoints carry the votes
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    noisy = codes[y].clone()
    noisy[:, 1] = 7  # every image of 0..2 tagged with colour 7, which is wrong
    for learner in (given, tags):
        learner.begin_experience(0, [0, 1, 2])
        learner.observe(x, y, noisy)
        learner.end_experience(0, x, y, noisy)
    assert tags.tag_votes.counts.sum() == 6 * 4  # counted as trained on (the current images, not at the end again)
    assert torch.equal(given._known_descriptions(3), given.class_attributes[:3])
    expected = SPACE.vectors(noisy[:3])
    assert torch.equal(tags._known_descriptions(3), expected)
    # The next category's start row is mapped from those descriptions: given and tags now differ.
    for learner in (given, tags):
        learner.begin_experience(1, [3, 4])
    assert not torch.allclose(given.class_head.weight[3:5], tags.class_head.weight[3:5])


def test_descriptions_from_clean_tags_are_the_given_ones():
    given, codes = _child()
    tags, _ = _child(descriptions="tags")
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for learner in (given, tags):
        learner.begin_experience(0, [0, 1, 2])
        learner.observe(x, y, codes[y])
        learner.end_experience(0, x, y, codes[y])
        learner.begin_experience(1, [3, 4])
    assert torch.equal(given.class_head.weight, tags.class_head.weight)


def test_vote_targets_teach_untagged_images_and_outvote_wrong_tags():
    learner, codes = _child(attribute_targets="votes")
    assert learner.tag_votes is not None
    learner.begin_experience(0, [0, 1, 2])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    tags = codes[y].clone()
    tags[2, 0] = 4  # one of category 0's three shape tags is wrong
    tags[3] = UNTAGGED  # an untagged image of category 1: its two siblings speak for it
    learner.tag_votes.count(y, tags)
    target = learner.tag_votes.targets(torch.tensor([0, 1, 2]))
    assert torch.equal(target[:2], codes[:2])  # the truth, by majority
    assert torch.equal(target[2], torch.full((4,), UNTAGGED))  # nothing said of category 2 yet


def test_vote_targets_on_clean_codes_train_exactly_as_own_tags():
    own, codes = _child()
    votes, _ = _child(attribute_targets="votes")
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    for learner in (own, votes):
        learner.begin_experience(0, [0, 1, 2])
        for _ in range(2):
            learner.observe(x, y, codes[y])
    assert torch.equal(own.attribute_head.linear.weight, votes.attribute_head.linear.weight)


@pytest.mark.parametrize("key, value", [("descriptions", "votes"), ("attribute_targets", "given")])
def test_bad_tag_switches_are_named(key, value):
    with pytest.raises(ValueError, match=f"learner.{key}"):
        _child(**{key: value})


# --------------------------------------------------------------------------------------------
# whole runs
# --------------------------------------------------------------------------------------------


def test_explicit_default_tags_give_the_same_report_bit_for_bit(tmp_path, world_cache):
    with_key = _run(tmp_path, "with", [], world_cache)
    without = _run(tmp_path, "without", ["~benchmark.tags"], world_cache)
    assert json.loads((tmp_path / "with" / "config.json").read_text())["benchmark"]["tags"] == \
        {"rate": 1.0, "wrong": 0.0, "missing": 0.0}
    assert "tags" not in json.loads((tmp_path / "without" / "config.json").read_text())["benchmark"]
    with_key.pop("timing"), without.pop("timing")
    assert with_key == without and with_key["tags"] is None


def test_tag_rate_zero_turns_the_attribute_loss_off_and_says_so(tmp_path, world_cache):
    with pytest.warns(RuntimeWarning, match="attribute loss is off"):
        report = _run(tmp_path, "rate0", ["benchmark.tags.rate=0.0"], world_cache)
    assert report["tags"]["attribute_loss"] == NO_TAGS
    assert report["tags"]["rate"] == 0.0 and report["tags"]["images_tagged"] == 0.0
    assert report["tags"]["tags_wrong"] is None


def test_a_run_on_tags_resumes_to_the_same_report(tmp_path, world_cache):
    """The votes are in the checkpoint: a run cut after its first experience ends as the whole run does
    (without them the next categories' rows would be mapped from empty descriptions)."""
    cfg = compose_config(TINY + ["threads=1", "benchmark.tags.rate=0.3", "benchmark.tags.wrong=0.2",
                                 "learner.descriptions=tags", "learner.attribute_targets=votes"], world_cache)
    whole = run_experiment(cfg, tmp_path / "whole", print_fn=lambda _: None).to_dict()

    def stop(line: str) -> None:
        if line.startswith("[e1/"):
            raise KeyboardInterrupt  # after experience 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", print_fn=stop)
    resumed = run_experiment(cfg, tmp_path / "cut", print_fn=lambda _: None).to_dict()
    whole.pop("timing"), resumed.pop("timing")
    assert resumed == whole and whole["tags"]["rate"] == 0.3


# 24 stream categories, as tests/test_learning.py: fewer leave zero-shot to the luck of the held-out draw.
SMALL = ["benchmark.n_experiences=3", "benchmark.categories_per_experience=8", "benchmark.n_heldout=8",
         "benchmark.train_per_category=50", "benchmark.test_per_category=12", "train.epochs=3",
         "learner.backbone_args.width=16", "learner.backbone_args.embed_dim=64", "memory.size=150",
         "progress=false", "logger.wandb.mode=disabled", "eval.few_shot.episodes=20", "threads=1"]


def test_zero_shot_is_learned_from_30_percent_tags_with_20_percent_wrong(tmp_path, world_cache):
    cfg = compose_config(SMALL + ["benchmark.tags.rate=0.3", "benchmark.tags.wrong=0.2", "learner.descriptions=tags"],
                         world_cache)
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)
    tags = card.tags
    assert abs(tags["images_tagged"] - 0.3) < 0.05 and abs(tags["tags_wrong"] - 0.2) < 0.05
    assert tags["attribute_loss"] == "on" and tags["description_accuracy"] == 1.0
    zs = card.zero_shot
    assert zs["accuracy"] >= 2.5 * zs["chance"], zs  # measured 0.52 against chance 0.125
    assert card.attribute_accuracy["mean"] > 0.5  # chance is ~0.28 (1/8, 1/8, 1/4, 1/2)
