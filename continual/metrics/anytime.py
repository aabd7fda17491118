"""Anytime accuracy (Koh et al., ICLR 2022): how good the learner is at any moment of the stream.

Every ``every`` samples the learner is scored on the categories it has met so far, choosing among
them (and, where the stream has descriptions, zero-shot on the trained categories it has not met yet,
choosing among those and the held-out ones). So that the cost of the whole curve grows with the
stream's length and not with its square, each point scores the same fixed stratified subsample of the
test data (``eval_subset``, drawn once from the seed; the whole test set when that is small enough);
the final point scores the full test set.

Summary (FIELD_GUIDE section 4): ``A_AUC`` the mean of the curve over the stream, ``A_last`` its final
value (full test set), ``F_last`` the mean per-category drop from its best earlier point to the final
one. The per-category values of the earlier points may come from the subsample and the final from the
full test set. The best of several noisy estimates overestimates the true best, so ``F_last`` is
biased upwards, the more so the fewer test images per category and the more points; compare it
between learners on the same schedule, not across schedules.
"""

from __future__ import annotations

import torch

from continual.heads.compatibility import attribute_log_likelihood
from continual.learner.base import Learner
from continual.metrics.report import mean_per_class_accuracy
from continual.stream.stream import Stream


def stratified_subsample(test_y: torch.Tensor, per_category: int, seed: int) -> torch.Tensor:
    """``(M,)`` sorted indices into the test set: ``per_category`` images of every category (all of a
    category's when it has fewer), drawn with a generator of its own (the learner's draws stay put)."""
    g = torch.Generator().manual_seed(seed)
    y = test_y.cpu()
    picked = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_category]])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.long)


def eval_subset(test_y: torch.Tensor, max_images: int, seed: int) -> torch.Tensor | None:
    """The test images every evaluation before the last scores (``eval.subsample``): None (all of them)
    when there are at most ``max_images`` or ``max_images`` is 0, else a fixed stratified subsample of
    about that many (an equal number per category, at least one)."""
    if max_images < 0:
        raise ValueError(f"eval.subsample must be >= 0 (test images; 0 = always the whole test set), got {max_images}")
    if max_images == 0 or len(test_y) <= max_images:
        return None
    n_categories = len(torch.unique(test_y.cpu()))
    return stratified_subsample(test_y, max(1, max_images // n_categories), seed)


@torch.inference_mode()
def _predictions(learner: Learner, stream: Stream, idx: torch.Tensor, n_met: int, batch_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Host-side class predictions among the ``n_met`` categories met so far and, with descriptions,
    the attribute log-likelihood scores of every category, for the test images ``idx``."""
    class_attributes = stream.class_attributes() if stream.has_attributes else None
    preds, liks = [], []
    idx = idx.to(stream.test_x.device)
    for start in range(0, len(idx), batch_size):
        s = learner.scores(stream.test_x[idx[start:start + batch_size]])
        preds.append(s.class_logits[:, :n_met].argmax(1))
        if s.attribute_log_probs is not None and class_attributes is not None:
            liks.append(attribute_log_likelihood(s.attribute_log_probs, class_attributes))
    return torch.cat(preds).cpu(), (torch.cat(liks).cpu() if liks else None)


class AnytimeProbe:
    """Scores the learner every ``every`` samples on ``subset`` of the test data (None: all of it).

    ``every`` counts stream samples presented (replay not included; in an experience stream every
    epoch presents its images again). The probe's points are plain numbers, saved with checkpoints.
    """

    def __init__(self, stream: Stream, *, every: int, subset: torch.Tensor | None, batch_size: int = 512) -> None:
        if every < 1:
            raise ValueError(f"eval.anytime.every must be >= 1 (samples), got {every}")
        self.stream, self.every, self.batch_size = stream, every, batch_size
        self.subsample = torch.arange(len(stream.test_y)) if subset is None else subset
        self.trained = [c for e in stream.experiences for c in e]

    def due(self, samples_before: int, samples_now: int) -> bool:
        """Whether a multiple of ``every`` was crossed by the batch that brought the count to ``samples_now``."""
        return samples_now // self.every > samples_before // self.every

    def measure(self, learner: Learner, n_met: int, samples: int, full: bool = False) -> dict:
        """One point of the curve: accuracy on the met categories (choosing among them), per category,
        and zero-shot on the trained categories not met yet; ``full`` scores the whole test set."""
        stream = self.stream
        idx = torch.arange(len(stream.test_y)) if full else self.subsample
        y = stream.test_y.cpu()[idx]
        met_mask = y < n_met
        point: dict = {"samples": samples, "n_met": n_met, "accuracy": None, "per_category": {}, "zero_shot": None}
        if n_met == 0:
            return point
        pred, lik = _predictions(learner, stream, idx, n_met, self.batch_size)
        point["accuracy"] = mean_per_class_accuracy(pred[met_mask], y[met_mask])
        for c in range(n_met):
            on_c = y == c
            if bool(on_c.any()):
                point["per_category"][str(c)] = float((pred[on_c] == c).float().mean())
        unmet = [c for c in self.trained if c >= n_met]
        if lik is not None and unmet:
            candidates = torch.tensor(unmet + list(stream.heldout))
            on = torch.isin(y, torch.tensor(unmet))
            if bool(on.any()):
                zs = candidates[lik[on][:, candidates].argmax(1)]
                point["zero_shot"] = mean_per_class_accuracy(zs, y[on])
        return point


def anytime_summary(points: list[dict]) -> dict | None:
    """``{"A_AUC", "A_last", "F_last", "curve"}`` from the probe's points (the last on the full test set).

    ``curve`` keeps ``samples``, ``accuracy``, ``zero_shot`` and ``n_met`` of each point (per-category
    values are summarised into ``F_last`` and not stored)."""
    scored = [p for p in points if p["accuracy"] is not None]
    if not scored:
        return None
    last = scored[-1]
    drops = []
    for c, final in last["per_category"].items():
        earlier = [p["per_category"][c] for p in scored[:-1] if c in p["per_category"]]
        if earlier:
            drops.append(max(earlier) - final)
    return {
        "A_AUC": sum(p["accuracy"] for p in scored) / len(scored),
        "A_last": last["accuracy"],
        "F_last": sum(drops) / len(drops) if drops else None,
        "curve": [{k: p[k] for k in ("samples", "n_met", "accuracy", "zero_shot")} for p in points],
    }
