"""Evaluation: one batched inference pass over the test data, then every metric from its scores.

All test images (stream and held-out categories) go through the learner once per evaluation;
accuracies over different candidate sets (seen, unseen, a fine-grained pair) are argmaxes over
columns of the same score matrices, so no image is run twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from continual.heads.compatibility import attribute_log_likelihood
from continual.metrics.few_shot import few_shot_report
from continual.learner.base import Learner
from continual.metrics.report import harmonic_mean, long_tail_accuracy, mean_per_class_accuracy, per_class_accuracy
from continual.stream.stream import Stream


@dataclass
class EvalPass:
    """Host-side scores of every test image after some experience."""

    n_seen: int  # categories trained so far (labels 0..n_seen-1)
    y: torch.Tensor  # (M,) host labels of the scored test images (all of them, or a fixed subsample)
    class_logits: torch.Tensor  # (M, n_seen)
    log_likelihood: torch.Tensor | None  # (M, C) attribute compatibility of every category
    # (M, n_attributes) most likely value per attribute (long); continuous attributes: predicted degree (float)
    attribute_pred: torch.Tensor | None
    embedding: torch.Tensor  # (M, D)
    # (M, C) every category scored from its description on the class logits' scale (calibrated GZSL,
    # continual.metrics.calibration); None unless asked for or where the learner has no such score
    description_scores: torch.Tensor | None = None


@torch.inference_mode()
def evaluate_pass(learner: Learner, stream: Stream, n_seen: int, batch_size: int = 512,
                  subset: torch.Tensor | None = None, descriptions: str | None = None) -> EvalPass:
    """Score every test image (or those of ``subset``, host indices) once, batched, in inference mode,
    and bring the results to the host; with ``descriptions`` (the anchors of ``Learner.description_scores``),
    also every category from its description."""
    logits, log_liks, attr_preds, embeds = [], [], [], []
    class_attributes = stream.class_attributes() if stream.has_attributes else None
    idx = torch.arange(len(stream.test_y)) if subset is None else subset
    on_device = idx.to(stream.test_x.device)
    for start in range(0, len(idx), batch_size):
        s = learner.scores(stream.test_x[on_device[start:start + batch_size]])
        logits.append(s.class_logits)
        embeds.append(s.embedding)
        if s.attribute_log_probs is not None and class_attributes is not None:
            log_liks.append(attribute_log_likelihood(s.attribute_log_probs, class_attributes))
            if stream.attribute_space.continuous:  # log-odds -> the degree each attribute is predicted present
                attr_preds.append(torch.sigmoid(s.attribute_log_probs))
            else:
                blocks = stream.attribute_space.sizes
                attr_preds.append(torch.stack([b.argmax(1) for b in s.attribute_log_probs.split(blocks, 1)], 1))
    # Zero-shot needs descriptions that tell categories apart (Omniglot's one attribute, the
    # alphabet, does not): otherwise ties decide, and the scores are not reported.
    distinct = class_attributes is not None and len(torch.unique(class_attributes, dim=0)) == len(class_attributes)
    descs = None  # once for all images: the map from descriptions is fitted once
    if descriptions and n_seen and distinct:
        descs = learner.description_scores(torch.cat(embeds), class_attributes, n_seen, descriptions)
    return EvalPass(
        n_seen=n_seen,
        y=stream.test_y.cpu()[idx],
        class_logits=torch.cat(logits).cpu(),
        log_likelihood=torch.cat(log_liks).cpu() if log_liks and distinct else None,
        attribute_pred=torch.cat(attr_preds).cpu() if attr_preds else None,
        embedding=torch.cat(embeds).cpu(),
        description_scores=descs.cpu() if descs is not None else None,
    )


def _restricted_accuracy(scores: torch.Tensor, target: torch.Tensor, candidates: list[int]) -> float:
    """Per-class accuracy when choosing only among ``candidates`` (labels)."""
    cand = torch.tensor(candidates, dtype=torch.long)
    pred = cand[scores[:, cand].argmax(1)]
    return mean_per_class_accuracy(pred, target)


def unseen_after(stream: Stream, experience: int) -> list[int]:
    """Categories not trained on after ``experience`` (-1: before any): later ones and held-out."""
    later = [c for e in stream.experiences[experience + 1:] for c in e]
    return later + list(stream.heldout)


ZERO_SHOT_BY = ("descriptions", "attributes")  # eval.zero_shot: how an untrained category is named (zero_shot_scores)


def zero_shot_scores(ev: EvalPass, by: str = "attributes") -> tuple[torch.Tensor | None, str]:
    """``(M, C)`` scores that name a category never trained on, and what they are: ``descriptions``, the
    learner's map from descriptions to where images lie (``Learner.description_scores``, in the pass when
    asked for) where it has one, else ``attributes``, the attribute compatibility (log-likelihood, DAP).

    Why descriptions by default: attribute compatibility multiplies per-attribute guesses, and a wrong
    guess on one attribute (shape, the weakest head) names the wrong category; the map places a
    described category among the trained categories' images by everything the embedding knows. On the
    default world (seeds 0-4): 84% against 62% of the held-out categories named right (issue 11)."""
    if by not in ZERO_SHOT_BY:
        raise ValueError(f"eval.zero_shot must be one of {', '.join(ZERO_SHOT_BY)}, got {by!r}")
    if by == "descriptions" and ev.description_scores is not None:
        return ev.description_scores, "descriptions"
    return ev.log_likelihood, "attributes"


def accuracy_row(ev: EvalPass, stream: Stream, experience: int, by: str = "attributes") -> list[float]:
    """``R[experience, j]`` for every j: class-incremental accuracy for trained experiences,
    zero-shot accuracy (among all untrained categories, named ``by`` what ``zero_shot_scores`` says)
    for later ones, NaN without attributes."""
    y = ev.y
    unnamed, _ = zero_shot_scores(ev, by)
    row = []
    for j, classes in enumerate(stream.experiences):
        idx = torch.isin(y, torch.tensor(classes)).nonzero().squeeze(1)
        if j <= experience:
            row.append(mean_per_class_accuracy(ev.class_logits[idx].argmax(1), y[idx]))
        elif unnamed is not None:
            row.append(_restricted_accuracy(unnamed[idx], y[idx], unseen_after(stream, experience)))
        else:
            row.append(float("nan"))
    return row


def zero_shot_accuracy(ev: EvalPass, stream: Stream, by: str = "attributes") -> dict | None:
    """Accuracy on held-out categories choosing only among held-out categories, with chance: ``accuracy``
    named ``by`` what ``zero_shot_scores`` says (``by`` in the dict: what was used), and both scorers'
    accuracies side by side (``attributes``; ``descriptions``, None where the pass has no such scores)."""
    scores, used = zero_shot_scores(ev, by)
    if scores is None or not stream.heldout:
        return None
    y = ev.y
    idx = torch.isin(y, torch.tensor(stream.heldout)).nonzero().squeeze(1)
    each = {name: None if s is None else _restricted_accuracy(s[idx], y[idx], stream.heldout)
            for name, s in (("attributes", ev.log_likelihood), ("descriptions", ev.description_scores))}
    return {"accuracy": each[used], "chance": 1.0 / len(stream.heldout), "n_categories": len(stream.heldout),
            "by": used, **each}


def generalised_zero_shot(ev: EvalPass, stream: Stream, unseen: list[int] | None = None) -> dict | None:
    """Choose among seen and ``unseen`` categories (default: the held-out ones) by attribute
    compatibility; seen, unseen and H, the calibration-free AUSUC, and the joint accuracy: per-class
    accuracy over the test images of seen and unseen categories together (CZSL's JA)."""
    unseen = list(stream.heldout) if unseen is None else unseen
    if ev.log_likelihood is None or not unseen:
        return None
    y = ev.y
    seen = list(range(ev.n_seen))
    candidates = seen + unseen
    seen_idx = (y < ev.n_seen).nonzero().squeeze(1)
    unseen_idx = torch.isin(y, torch.tensor(unseen)).nonzero().squeeze(1)
    s = _restricted_accuracy(ev.log_likelihood[seen_idx], y[seen_idx], candidates)
    u = _restricted_accuracy(ev.log_likelihood[unseen_idx], y[unseen_idx], candidates)
    idx = torch.cat([seen_idx, unseen_idx])
    auc = seen_unseen_auc(ev.log_likelihood[idx], y[idx], seen, unseen)
    joint = _restricted_accuracy(ev.log_likelihood[idx], y[idx], candidates)
    return {"seen": s, "unseen": u, "harmonic": harmonic_mean(s, u), "auc": auc, "joint": joint}


def continual_zero_shot(per_experience: list[dict | None]) -> dict | None:
    """The continual zero-shot means (Skorokhodov & Elhoseiny 2021; FIELD_GUIDE section 4) over the
    experiences evaluated: ``per_experience[t]`` is GZSL after experience t with seen = the categories
    trained so far and unseen = every later and held-out one (``generalised_zero_shot(ev, stream,
    unseen_after(stream, t))``; None where not evaluated or nothing is unseen).

    mJA, the mean joint accuracy, is taken over the same experiences (after the last one of a stream
    without held-out categories nothing is unseen, so it is not among them); None for points recorded
    before joint accuracy was (a run resumed from an older checkpoint)."""
    points = [p for p in per_experience if p is not None]
    if not points:
        return None
    mean = lambda key: sum(p[key] for p in points) / len(points)  # noqa: E731
    joint = [p["joint"] for p in points if p.get("joint") is not None]
    return {"mSA": mean("seen"), "mUA": mean("unseen"), "mH": mean("harmonic"), "mAUSUC": mean("auc"),
            "mJA": sum(joint) / len(joint) if len(joint) == len(points) else None,
            "n": len(points), "per_experience": per_experience}


def seen_unseen_auc(scores: torch.Tensor, target: torch.Tensor, seen: list[int], unseen: list[int]) -> float:
    """Area under the seen-unseen accuracy curve (AUSUC, Chao et al. 2016): GZSL without choosing a
    calibration. Adding a constant g to every unseen category's score trades seen accuracy for unseen
    accuracy; sweeping g over every value where a prediction flips traces the whole curve, and its
    area (unseen accuracy on x, seen on y, both per-class means) is 1 for a perfect learner.

    ``scores``: (M, C) of every test image of a category in ``seen`` or ``unseen``.
    """
    t = target.numpy()
    s_cand, u_cand = np.array(seen), np.array(unseen)
    sc = scores.double().numpy()
    best_s, best_u = sc[:, s_cand].max(1), sc[:, u_cand].max(1)
    margin = best_s - best_u  # the image goes to an unseen category once g > margin
    is_seen = np.isin(t, s_cand)
    right = np.where(is_seen, s_cand[sc[:, s_cand].argmax(1)] == t, u_cand[sc[:, u_cand].argmax(1)] == t)
    # Per-class means: each image weighs 1 / (its class's image count x classes on its side).
    classes, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    n_side = np.where(is_seen, np.isin(classes, s_cand).sum(), np.isin(classes, u_cand).sum())
    gain = right / (counts[inverse] * n_side)
    order = np.argsort(margin, kind="stable")
    m, g_seen, g_unseen = margin[order], np.where(is_seen, gain, 0.0)[order], np.where(is_seen, 0.0, gain)[order]
    # With g just above the k-th smallest margin, images 0..k go unseen and the rest stay seen;
    # tied margins flip together, so keep only the last of each run of equal margins.
    last = np.r_[m[1:] != m[:-1], True]
    unseen_acc = np.r_[0.0, np.cumsum(g_unseen)[last]]
    seen_acc = np.r_[g_seen.sum(), g_seen.sum() - np.cumsum(g_seen)[last]]
    return float(np.trapezoid(seen_acc, unseen_acc))


def attribute_accuracy(ev: EvalPass, stream: Stream) -> dict | None:
    """Accuracy of each attribute head over all test images (seen and held-out categories).

    Continuous attributes: per attribute, the binary accuracy of "present" at 0.5 (predicted degree
    > 0.5 against the category's degree > 0.5); ``mean`` over attributes, and ``mean_abs_error``, the
    mean absolute difference between predicted and described degrees (what a 0.5 threshold hides on
    attributes that are rare everywhere, most of CUB's)."""
    if ev.attribute_pred is None:
        return None
    if stream.attribute_space.continuous:
        truth = stream.class_codes.cpu().float()[ev.y]  # (M, A) degrees in [0, 1]
        pred = ev.attribute_pred.float()  # (M, A)
        per_attribute = ((pred > 0.5) == (truth > 0.5)).float().mean(0)  # (A,)
        out = dict(zip(stream.attribute_space.names, per_attribute.tolist()))
        out["mean"] = float(per_attribute.mean())
        out["mean_abs_error"] = float((pred - truth).abs().mean())
        return out
    truth = stream.class_codes.cpu()[ev.y]  # (M, n_attributes)
    out = {name: float((ev.attribute_pred[:, k] == truth[:, k]).float().mean())
           for k, name in enumerate(stream.attribute_space.names)}
    out["mean"] = sum(out.values()) / len(out)
    return out


def fine_grained_accuracy(ev: EvalPass, stream: Stream) -> dict | None:
    """Two-way accuracy on trained pairs that differ in one attribute value, averaged over pairs."""
    pairs = [(a, b) for a, b in stream.fine_grained_pairs if a < ev.n_seen and b < ev.n_seen]
    if not pairs:
        return None
    y = ev.y
    accs = [_restricted_accuracy(ev.class_logits[idx], y[idx], [a, b])
            for a, b in pairs
            for idx in [torch.isin(y, torch.tensor([a, b])).nonzero().squeeze(1)]]
    return {"accuracy": sum(accs) / len(accs), "n_pairs": len(pairs)}


def long_tail(ev: EvalPass, stream: Stream) -> dict | None:
    """Head / medium / tail accuracy of the trained categories, split by training image counts."""
    y = ev.y
    idx = (y < ev.n_seen).nonzero().squeeze(1)
    per_class = per_class_accuracy(ev.class_logits[idx].argmax(1), y[idx])
    counts = {c: stream.train_counts[c] for c in per_class}
    return long_tail_accuracy(per_class, counts)


def fwt_baseline(ev_init: EvalPass, stream: Stream) -> list[float | None]:
    """``b_j``: the randomly initialised learner's accuracy on experience j under the same
    protocol as ``R[j-1, j]`` (zero-shot among the categories untrained at that point)."""
    if ev_init.log_likelihood is None:
        return [None] * stream.n_experiences
    y = ev_init.y
    out = []
    for j, classes in enumerate(stream.experiences):
        idx = torch.isin(y, torch.tensor(classes)).nonzero().squeeze(1)
        out.append(_restricted_accuracy(ev_init.log_likelihood[idx], y[idx], unseen_after(stream, j - 1)))
    return out


LEARNING_SPEED_KS = (0, 1, 5, 10)


def milestone_steps(batches: list[torch.Tensor], labels: torch.Tensor, ks: tuple[int, ...] = LEARNING_SPEED_KS
                    ) -> dict[int, int]:
    """For each k, the number of steps after which every category of the experience has been seen
    ``k`` times (or all of its images, when it has fewer): where its learning curve is sampled.

    ``batches`` are the first epoch's index batches and ``labels`` the experience's labels, on the host.
    """
    classes, totals = torch.unique(labels, return_counts=True)
    seen = torch.zeros(len(classes), dtype=torch.long)
    out = {k: 0 for k in ks if k == 0}
    for step, b in enumerate(batches, start=1):
        seen += (labels[b].unsqueeze(1) == classes).sum(0)
        for k in ks:
            if k not in out and bool((seen >= torch.clamp(totals, max=k)).all()):
                out[k] = step
        if len(out) == len(ks):
            break
    return out


@torch.inference_mode()
def new_category_accuracy(learner: Learner, stream: Stream, classes: list[int], batch_size: int = 512) -> float:
    """Class-incremental accuracy on ``classes``' test images (choosing among all categories so far)."""
    idx = stream.test_indices(classes)
    preds = [learner.scores(stream.test_x[idx[s:s + batch_size]]).class_logits.argmax(1)
             for s in range(0, len(idx), batch_size)]
    return mean_per_class_accuracy(torch.cat(preds).cpu(), stream.test_y[idx].cpu())


def learning_speed_summary(curves: list[dict]) -> dict | None:
    """Mean over experiences of the accuracy after k examples, and the normalised area under it
    (trapezoids over k = 0..10, divided by 10; in the spirit of A-GEM's learning curve area)."""
    if not curves:
        return None
    ks = sorted({int(k) for c in curves for k in c})
    mean = {k: sum(c[str(k)] for c in curves if str(k) in c) / sum(str(k) in c for c in curves) for k in ks}
    area = sum((mean[a] + mean[b]) / 2 * (b - a) for a, b in zip(ks, ks[1:])) / (ks[-1] - ks[0]) if len(ks) > 1 else None
    return {**{f"k{k}": v for k, v in mean.items()}, "area": area}


def few_shot(ev: EvalPass, stream: Stream, settings: dict | None, seed: int) -> dict | None:
    """N-way K-shot nearest-prototype accuracy on the held-out (never trained) categories'
    test embeddings; None without held-out categories or settings."""
    if not settings or len(stream.heldout) < 2:
        return None
    y = ev.y
    idx = torch.isin(y, torch.tensor(stream.heldout)).nonzero().squeeze(1)
    out = few_shot_report(ev.embedding[idx], y[idx], list(stream.heldout), shots=tuple(settings["shots"]),
                          n_way=settings["n_way"], n_query=settings["n_query"],
                          n_episodes=settings["episodes"], seed=seed)
    for res in out.values():
        res["n_classes"] = len(stream.heldout)
    return out or None
