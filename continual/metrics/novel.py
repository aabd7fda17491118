"""Protocols on categories of whole new domains (``Stream.novel``), run once the stream is over.

- **Lake-style one-shot on new alphabets**: 20-way one-shot trials inside one never-trained
  alphabet, one drawer's images as the examples and another's as the test items, classified by the
  nearest example in the learner's embedding (``lake_style_trials``). Nothing is trained.
- **Meeting categories one at a time** (the OML/ANML protocol, Javed & White 2019, Beaulieu et al.
  2020): the new categories arrive one after another, ``train_per_category`` images each, one
  pass through the learner's own update rule (``begin_experience``, ``observe``,
  ``end_experience``; replay within its memory budget); after ``n`` categories, accuracy on
  ``test_per_category`` other images of each of the ``n``, choosing among those ``n``. It trains a
  copy of the learner, so the run's own learner (and its checkpoint) stay as the stream left them.

No descriptions exist for a new domain's categories (their alphabet is not an attribute value the
learner knows), so they are met with an empty description and no attribute targets.
"""

from __future__ import annotations

import copy

import torch

from continual.learner.base import Learner
from continual.metrics.few_shot import lake_style_trials
from continual.metrics.report import mean_per_class_accuracy
from continual.stream.stream import NovelImages


def one_shot_new_alphabets(learner: Learner, novel: NovelImages, *, n_way: int = 20, trials: int = 400,
                           seed: int = 0, batch_size: int = 512) -> dict:
    """``{"error", "ci95", "trials", "alphabets", ...}`` of Lake-style trials in ``learner``'s embedding."""
    z = learner.features(novel.images, batch_size)  # (N, D)
    return lake_style_trials(z, novel.category, novel.group, novel.drawer, group_names=novel.group_names,
                             n_way=n_way, n_trials=trials, seed=seed)


def split_drawers(novel: NovelImages, train_per_category: int, test_per_category: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train (K, n_train), test (K, n_test))`` image indices per category: disjoint drawers drawn
    at random per category. Raises ValueError naming the keys when a category has too few images."""
    category = novel.category.cpu()
    counts = torch.bincount(category, minlength=novel.n_categories)
    need = train_per_category + test_per_category
    if int(counts.min()) < need:
        raise ValueError(f"eval.new_domain.train_per_category + test_per_category = {need}, but a category "
                         f"of the new domain has only {int(counts.min())} images")
    # Random keys ranked within each category: the first `need` of each are its drawers here.
    keys = category.double() + torch.rand(len(category), generator=generator, dtype=torch.double)
    order = keys.argsort()  # grouped by category, shuffled within
    starts = torch.cumsum(counts, 0) - counts  # (K,)
    picks = starts[:, None] + torch.arange(need)  # (K, need) positions in `order`
    idx = order[picks]  # (K, need) image indices
    return idx[:, :train_per_category], idx[:, train_per_category:]


def meet_one_at_a_time(learner: Learner, novel: NovelImages, first_label: int, *, train_per_category: int = 15,
                       test_per_category: int = 5, batch_size: int = 15, after: tuple[int, ...] = (10, 50),
                       max_categories: int = 0, seed: int = 0, eval_batch_size: int = 512) -> dict:
    """Meet ``novel``'s categories one at a time (in an order drawn by ``seed``) with a copy of ``learner``.

    Category ``i`` (in meeting order) gets label ``first_label + i``: the learner's head must hold
    ``first_label + n`` rows. Returns ``{"10": acc, "50": acc, "all": acc, "n_all": n, "curve": {n: acc}}``:
    accuracy (per-class mean) on the held-out images of the first ``n`` categories, choosing among
    those ``n``, for every ``n`` in ``after`` that is at most the number met, and for all of them.
    """
    if train_per_category < 1 or test_per_category < 1 or batch_size < 1:
        raise ValueError("eval.new_domain.train_per_category, test_per_category and step_images must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    n_all = novel.n_categories if max_categories <= 0 else min(max_categories, novel.n_categories)
    order = torch.randperm(novel.n_categories, generator=gen)[:n_all]  # meeting order, mixing alphabets
    train_idx, test_idx = split_drawers(novel, train_per_category, test_per_category, gen)
    device = novel.images.device
    child = copy.deepcopy(learner)  # the run's learner keeps its state; this copy does the meeting
    if getattr(child, "class_attributes", None) is not None:
        # Rows from first_label on are the new domain's here (on the copy): no description exists for them.
        child.class_attributes[first_label:] = 0
    checkpoints = sorted({n for n in after if 0 < n < n_all} | {n_all})
    curve: dict[str, float] = {}
    for i, c in enumerate(order.tolist()):
        label = first_label + i
        child.begin_experience(-1 - i, [label])  # experience numbers past the stream's, for messages only
        x = novel.images[train_idx[c].to(device)]  # (n_train, C, H, W)
        y = torch.full((len(x),), label, dtype=torch.long, device=device)
        for start in range(0, len(x), batch_size):  # one pass, the learner's own steps
            child.observe(x[start:start + batch_size], y[start:start + batch_size], None)
        child.end_experience(-1 - i, x, y, None)
        if i + 1 in checkpoints:
            curve[str(i + 1)] = _accuracy_among_met(child, novel, order[: i + 1], test_idx, first_label, eval_batch_size)
    out = {str(n): curve[str(n)] for n in after if str(n) in curve and n < n_all}
    return {**out, "all": curve[str(n_all)], "n_all": n_all, "curve": curve}


@torch.inference_mode()
def _accuracy_among_met(learner: Learner, novel: NovelImages, met: torch.Tensor, test_idx: torch.Tensor,
                        first_label: int, batch_size: int) -> float:
    """Per-class accuracy on the met categories' held-out images, choosing among the met ones only."""
    idx = test_idx[met].reshape(-1)  # (n * n_test,) in meeting order
    truth = torch.arange(len(met)).repeat_interleave(test_idx.shape[1])  # (n * n_test,) meeting positions
    x = novel.images[idx.to(novel.images.device)]
    preds = []
    for start in range(0, len(x), batch_size):
        logits = learner.scores(x[start:start + batch_size]).class_logits  # (b, n_active)
        preds.append(logits[:, first_label:first_label + len(met)].argmax(1).cpu())
    return mean_per_class_accuracy(torch.cat(preds), truth)





def check_new_domain(settings: dict | None, novel: NovelImages | None) -> None:
    """Fail before any training on ``eval.new_domain`` values the protocols could not run with."""
    if novel is None or not settings:
        return
    for key in ("train_per_category", "test_per_category", "step_images"):
        if settings.get(key, 1) < 1:
            raise ValueError(f"eval.new_domain.{key} must be >= 1, got {settings[key]}")
    smallest = int(torch.bincount(novel.category.cpu()).min())
    need = settings.get("train_per_category", 15) + settings.get("test_per_category", 5)
    if settings.get("one_at_a_time", False) and need > smallest:
        raise ValueError(f"eval.new_domain.train_per_category + test_per_category = {need}, but a category of "
                         f"the new domain has only {smallest} images")


def new_domain_protocols(learner: Learner, stream, settings: dict | None, seed: int,
                         eval_batch_size: int = 512) -> dict:
    """The report card's ``one_shot_new_alphabets`` and ``one_at_a_time`` (``None`` each when the
    stream has no never-trained domain or ``settings`` turn them off)."""
    novel = getattr(stream, "novel", None)
    if novel is None or not settings:
        return {"one_shot_new_alphabets": None, "one_at_a_time": None}
    one_shot = None
    if settings.get("one_shot_trials", 0) > 0:
        one_shot = one_shot_new_alphabets(learner, novel, n_way=settings.get("one_shot_way", 20),
                                          trials=settings["one_shot_trials"], seed=seed, batch_size=eval_batch_size)
    meeting = None
    if settings.get("one_at_a_time", False):
        meeting = meet_one_at_a_time(
            learner, novel, learner.class_head.n_active, train_per_category=settings.get("train_per_category", 15),
            test_per_category=settings.get("test_per_category", 5), batch_size=settings.get("step_images", 15),
            after=tuple(settings.get("after", (10, 50))), max_categories=settings.get("max_categories", 0),
            seed=seed, eval_batch_size=eval_batch_size)
    return {"one_shot_new_alphabets": one_shot, "one_at_a_time": meeting}
__all__ = ["check_new_domain", "meet_one_at_a_time", "new_domain_protocols", "one_shot_new_alphabets", "split_drawers"]
