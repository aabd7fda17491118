"""Every registered learner through the same loop and report card; checkpoints restore them exactly;
the baselines come out in the order the literature says (joint >= ER > fine-tuning)."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch

from continual.experiment import build_learner, run_experiment, seed_everything
from continual.learner import LEARNERS
from continual.learner.er_ace import RecentReservoir
from continual.learner.icarl import herding_order
from continual.memory import ClassBalancedReservoir
from continual.memory.logits import LogitReservoir
from continual.loop import TrainProgress, train_on
from continual.stream import build_stream
from continual.stream.source import Batch, Begin, End, ExperienceSource
from tests.conftest import TINY, compose_config

WITH_ATTRIBUTES = {"child"}  # the only learner with attribute heads; every other one is class-only
# GDumb retrains from scratch at every experience's end; a few epochs keep the tiny run fast.
TINY_EXTRA = {"gdumb": ["learner.epochs=3"]}


def _tiny(name: str, world_cache) -> dict:
    return compose_config([*TINY, f"learner={name}", *TINY_EXTRA.get(name, [])], world_cache)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_learner_runs_the_whole_pipeline(name, tmp_path, world_cache):
    cfg = _tiny(name, world_cache)
    lines: list[str] = []
    card = run_experiment(cfg, tmp_path / "run", print_fn=lines.append)
    T = cfg["benchmark"]["n_experiences"]
    R = card.matrix()
    assert R.shape == (T, T)
    seen = [R[i, j] for i in range(T) for j in range(i + 1)]
    assert all(0.0 <= v <= 1.0 for v in seen)
    losses = [float(m.group(1)) for line in lines if (m := re.match(r"\[e\d+/\d+\].*\| loss (\S+)", line))]
    assert len(losses) == T and all(math.isfinite(v) for v in losses)
    attribute_metrics = (card.zero_shot, card.gzsl, card.attribute_accuracy)
    if name in WITH_ATTRIBUTES:
        assert all(m is not None for m in attribute_metrics)
    else:
        assert all(m is None for m in attribute_metrics)
        assert all(math.isnan(R[i, j]) for i in range(T) for j in range(i + 1, T))  # no zero-shot cells
    # Same seed, same numbers: nothing in the learner depends on thread timing or unseeded draws.
    again = run_experiment(cfg, tmp_path / "again", print_fn=lambda _: None).to_dict()
    first = card.to_dict()
    assert {k: v for k, v in again.items() if k != "timing"} == {k: v for k, v in first.items() if k != "timing"}


def _drive(learner, stream, experiences: range) -> list[torch.Tensor]:
    """The experiences ``experiences`` of a one-epoch source through ``train_on`` (the loop's own
    driver), after a fixed seed (GDumb re-initialises and joint/GDumb shuffle from the global
    generator); the losses."""
    source = ExperienceSource(stream, epochs=1, batch_size=16, seed=0)
    begins = [i for i, event in enumerate(source.events()) if isinstance(event, Begin)]
    progress = TrainProgress(position=begins[experiences.start])
    progress.met = sum(len(c) for c in stream.experiences[: experiences.start])
    seed_everything(7)
    losses = []
    for event in train_on(source, learner, progress):
        if isinstance(event, Batch):
            losses.append(progress.loss_sum.clone())
        if isinstance(event, End) and event.experience == experiences.stop - 1:
            break
    return losses


def _assert_same_scores(a, b, x: torch.Tensor) -> None:
    sa, sb = a.scores(x), b.scores(x)
    assert torch.equal(sa.class_logits, sb.class_logits) and torch.equal(sa.embedding, sb.embedding)
    assert (sa.attribute_log_probs is None) == (sb.attribute_log_probs is None)
    if sa.attribute_log_probs is not None:
        assert torch.equal(sa.attribute_log_probs, sb.attribute_log_probs)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_checkpoint_restores_the_learner_exactly(name, world_cache):
    cfg = _tiny(name, world_cache)
    stream = build_stream(cfg["benchmark"])
    cpu = torch.device("cpu")
    seed_everything(0)
    learner = build_learner(cfg, stream, cpu)
    assert learner.has_attributes == (name in WITH_ATTRIBUTES)
    losses = _drive(learner, stream, range(2))
    assert all(torch.isfinite(loss) for loss in losses)

    buffer = io.BytesIO()
    torch.save(learner.checkpoint_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # tensors, numbers and strings only
    seed_everything(1)  # a different initialisation: everything must come from the checkpoint
    fresh = build_learner(cfg, stream, cpu)
    fresh.load_checkpoint_state(state)
    _assert_same_scores(learner, fresh, stream.test_x)

    # What shapes the next steps (optimiser moments, teacher, Fisher and anchor, stored logits,
    # exemplars, the memory's generators) came back too: the next experience goes identically.
    a, b = _drive(learner, stream, range(2, 3)), _drive(fresh, stream, range(2, 3))
    assert all(torch.equal(la, lb) for la, lb in zip(a, b))
    _assert_same_scores(learner, fresh, stream.test_x)


def test_unknown_learner_fails_listing_the_known_ones(tmp_path, world_cache):
    known = ", ".join(LEARNERS.names())
    with pytest.raises(KeyError, match=f"unknown learner 'adult'; known: {re.escape(known)}"):
        LEARNERS.get("adult")
    cfg = compose_config(TINY, world_cache)
    cfg["learner"]["name"] = "adult"
    with pytest.raises((KeyError, ValueError), match=f"known: {re.escape(known)}"):
        run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)


@pytest.mark.parametrize("name, key, value", [
    ("er", "replay_batch_size", -1), ("er_ace", "replay_batch_size", -1), ("derpp", "alpha", -0.1),
    ("derpp", "beta", -1.0), ("lwf", "temperature", 0.0), ("lwf", "distill_weight", -1.0),
    ("ewc", "ewc_lambda", -1.0), ("ewc", "gamma", 1.5), ("gdumb", "epochs", 0), ("joint", "batch_size", 1),
    ("finetune", "lr", 0.0), ("icarl", "optimizer", "rmsprop"),
])
def test_bad_hyper_parameters_name_their_config_key(name, key, value):
    memory = ClassBalancedReservoir(8, (3, 8, 8))
    with pytest.raises(ValueError, match=f"learner.{key}"):
        LEARNERS.build(name, n_classes=4, image_shape=(3, 8, 8), class_attributes=None, attribute_blocks=None,
                       memory=memory, backbone="linear", backbone_args={"image_size": 8, "embed_dim": 4},
                       **{key: value})


def test_logit_reservoir_keeps_each_examples_logits_with_it():
    memory = LogitReservoir(10, (1, 1, 1), n_classes=6, n_attributes=1, seed=0)
    first = torch.arange(12)
    for start, n_seen in ((0, 2), (12, 4)):  # two experiences; the second knows more categories
        ids = torch.arange(start, start + 12)
        x = ids.to(torch.uint8).view(-1, 1, 1, 1)  # each image's pixel is its id
        y = ids // 3  # 4 classes per experience, 3 images each
        logits = ids[:, None].float() + torch.arange(n_seen)[None] / 10  # (12, n_seen), row id in the integer part
        memory.update(x, y, (ids % 5)[:, None], logits)
    xs, ys, codes, stored, valid = memory.sample(50)
    ids = xs.view(-1).long()
    assert torch.equal(stored[:, 0].long(), ids)  # the logits travelled with their images
    assert torch.equal(codes[:, 0], ids % 5) and torch.equal(ys, ids // 3)
    width = torch.where(torch.isin(ids, first), 2, 4)
    assert torch.equal(valid.sum(1), width)  # recorded columns: the categories known at storage
    assert torch.equal(stored * ~valid, torch.zeros_like(stored))  # padding is zero


def test_recent_reservoir_is_filled_then_replaced_in_place():
    recent = RecentReservoir(8, (1, 1, 1), "cpu")
    recent.generator.manual_seed(0)
    for start in range(0, 40, 5):
        ids = torch.arange(start, start + 5)
        recent.add(ids.to(torch.uint8).view(-1, 1, 1, 1), ids)
        if start == 0:  # while there is room, images fill the slots in order
            assert len(recent) == 5 and torch.equal(recent.y[:5], ids)
    assert len(recent) == 8 and recent.seen == 40
    held = recent.y[:8]
    assert len(set(held.tolist())) == 8 and bool((held < 40).all()) and bool((held >= 8).any())
    assert torch.equal(recent.x[:8].view(-1).long(), held)  # images and labels stay together
    x, y = recent.sample(20)
    assert torch.equal(x.view(-1).long(), y) and bool(torch.isin(y, held).all())


def test_herding_picks_distinct_examples_closest_to_the_mean_first():
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(20, 5), dim=1)
    order = herding_order(f, 6)
    assert len(set(order.tolist())) == 6
    assert int(order[0]) == int(((f - f.mean(0)) ** 2).sum(1).argmin())


# A small stream with real training (seconds on 2 CPU cores): 16-pixel images keep it cheap.
ORDER = ["benchmark.n_experiences=3", "benchmark.categories_per_experience=5", "benchmark.n_heldout=4",
         "benchmark.train_per_category=60", "benchmark.test_per_category=10", "benchmark.render.image_size=16",
         "train.epochs=3", "learner.backbone_args.width=16", "learner.backbone_args.embed_dim=64",
         "memory.size=150", "progress=false", "logger.wandb.mode=disabled"]


def test_joint_is_at_least_replay_and_replay_clearly_beats_finetuning(tmp_path, world_cache):
    acc = {name: run_experiment(compose_config([*ORDER, f"learner={name}"], world_cache), tmp_path / name,
                                print_fn=lambda _: None).average_accuracy
           for name in ("joint", "er", "finetune")}
    assert acc["joint"] >= acc["er"], acc
    assert acc["er"] > acc["finetune"] + 0.25, acc
