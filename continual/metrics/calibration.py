"""Calibrated generalised zero-shot: seen and unseen categories on one scale, the seen scores lowered
by gamma, chosen as the stream goes from data the learner has at that moment, never from test data
(calibrated stacking, Chao et al. 2016; FIELD_GUIDE sections 3-4).

Why a common scale: GZSL by attribute compatibility alone (``evaluate.generalised_zero_shot``) scores
a seen category from its description although its images were learned, and unseen categories almost
never win (DAP in Xian et al. 2018). Here a seen category is scored by the category head (what was
learned from its images) and an unseen one from its description, on the head's scale, ``s * cos(z, r)``
with a row ``r`` mapped from the description by a ridge map fitted on the known categories
(``heads.binding.rows_from_descriptions``; ``Learner.description_scores``). ``eval.calibration.scores``:

- ``prototypes`` (default): the map takes descriptions to where the known categories' images lie, the
  mean of the normalised embeddings of their images in the replay memory (their head row where the
  memory holds none);
- ``rows``: to the known categories' head rows (what starts a new category's row, ``attribute_init``);
- ``attributes``: no map; the attribute log-likelihood of each description, put on the class logits'
  scale by an affine map fitted per image on its seen columns (the image's own scores).

Measured on the default world (seeds 0-4, end of stream, numbers in the README): named among the
held-out categories alone, ``prototypes`` gets 84% right, ``rows`` 76%, attribute compatibility 62%;
the calibration-free AUSUC is 68%, 61% and 43%. Head rows are directions that separate the trained
categories, not where their images are, and a map fitted to them places a new category less well.

Why the arrival of an experience: its categories are still unseen when it arrives, and the stream
tells their labels, so its training images scored *before* training on them (up to ``per_category``
each), with images of the categories trained so far, are a labelled GZSL problem drawn from the stream
itself; gamma maximises H on it. The seen images come from the replay memory (free; but the learner
trained on them, so their seen scores could be over-confident) or from a validation split of the
training images held out of training (``eval.calibration.val_per_category``, which costs training
data). Measured on the default world (seeds 0-4, every arrival, the seen categories' test images
standing in for an unbiased seen set, for the measurement only): the memory's seen margins are 2.06
logits on average against 2.02, its seen accuracy 94.3% against 93.3%, and the gamma it gives 0.04
higher (at most 0.34), so the memory is the default.

Why the gap (``drift``): the gamma chosen when experience t arrives was chosen on the learner before
it trained on t, and the evaluation after t scores the learner after; learned logits and description
scores drift apart over training (early on, descriptions mapped from few categories score far below
the logits; later much less). That drift is measurable on the seen images the learner holds at any
moment: the gap, the median over them of (a category's logit minus its description's score) on its own
images. So an arrival calibrates the offset ``c = gamma - gap`` (gap on its seen images), and every
evaluation uses ``gamma = c + gap(now)``; before any arrival, ``c = 0``. On the default world the best
gamma on the test set (measured afterwards, for the study only) minus the gap stays within 1.5-3 logits
from the first experience to the last while the gap itself moves from about -4.7 to -1.2: calibrated H
at the end rises from 0.69 (gamma from the arrival alone) to 0.73 (with the gap) and mH from 0.35 to
0.42, against 0.74 and 0.48 for the best gamma on the test set. ``drift=false`` uses the arrival's
gamma as it was chosen (0 before the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from continual.config import ConfigError
from continual.heads.compatibility import attribute_log_likelihood
from continual.learner.base import Learner
from continual.metrics.evaluate import EvalPass, seen_unseen_auc
from continual.metrics.report import harmonic_mean
from continual.stream.stream import Stream

SCORES = ("prototypes", "rows", "attributes")  # the common scale of unseen categories (module docstring)
METHODS = ("incoming", "zero")  # incoming: gamma from each arriving experience; zero: gamma = 0 (the ablation)
SEEN_FROM = ("memory", "validation")  # where the calibration's seen images come from
OPEN_END = 1.0  # logits beyond the extreme margin when H is best with every image on one side


@dataclass(frozen=True)
class CalibrationSettings:
    """``eval.calibration``: how gamma is chosen (see the module docstring)."""

    enabled: bool = True
    method: str = "incoming"
    scores: str = "prototypes"
    drift: bool = True  # gamma = offset from the last arrival + the gap measured now
    seen_from: str = "memory"
    per_category: int = 100  # images of each arriving category scored when it arrives (at most: all it has)
    val_per_category: int = 0  # training images per category held out of training (seen_from=validation)


def calibration_settings(cfg: dict | None) -> CalibrationSettings | None:
    """``eval.calibration`` checked, as settings; None when switched off (or absent: today's runs).

    Raises ``ConfigError`` naming the ``eval.calibration.<key>`` that is wrong and what it may be.
    """
    if not cfg:
        return None
    known = {f for f in CalibrationSettings.__dataclass_fields__}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown config key eval.calibration.{unknown[0]}; known: {sorted(known)}")
    s = CalibrationSettings(**cfg)
    for key, allowed in (("method", METHODS), ("scores", SCORES), ("seen_from", SEEN_FROM)):
        if getattr(s, key) not in allowed:
            raise ConfigError(f"config key eval.calibration.{key} must be one of {', '.join(allowed)}, "
                              f"got {getattr(s, key)!r}")
    for key in ("per_category", "val_per_category"):
        value = getattr(s, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"config key eval.calibration.{key} must be an int >= 0, got {value!r}")
    if s.method == "incoming" and s.per_category < 1:
        raise ConfigError("config key eval.calibration.per_category must be >= 1 with method=incoming (images of "
                          f"each arriving category to calibrate on), got {s.per_category}")
    if (s.seen_from == "validation") != (s.val_per_category > 0):
        raise ConfigError("config key eval.calibration.seen_from=validation needs eval.calibration.val_per_category "
                          "> 0 (training images per category held out of training), and val_per_category > 0 needs "
                          f"seen_from=validation; got seen_from={s.seen_from!r}, val_per_category={s.val_per_category}")
    return s if s.enabled else None


def check_calibration_config(cfg: dict) -> None:
    """``eval.calibration`` of a whole config: its own keys, and what it needs of the stream."""
    s = calibration_settings((cfg.get("eval") or {}).get("calibration"))
    online = (cfg.get("online") or {}).get("mode", "off") != "off"
    if s is not None and s.val_per_category > 0 and online:
        raise ConfigError("config key eval.calibration.val_per_category > 0 needs an experience stream "
                          "(online.mode=off): an online stream relabels categories as they appear")


# --------------------------------------------------------------------------------------------
# the common scale and the choice of gamma (pure functions over score matrices)
# --------------------------------------------------------------------------------------------


def described(class_logits: torch.Tensor, description_scores: torch.Tensor | None,
              log_likelihood: torch.Tensor | None, kind: str) -> tuple[torch.Tensor, str] | None:
    """``(M, C)`` every category scored from its description on the class logits' scale, and the scale
    used. ``prototypes`` and ``rows`` take the learner's ``description_scores`` (M, C); without them (a
    linear head) and for ``attributes``, the attribute ``log_likelihood`` (M, C) is fitted per image onto
    its ``n_seen`` class logits (``class_logits`` (M, n_seen)). None without either."""
    if kind != "attributes" and description_scores is not None:
        return description_scores, kind
    if log_likelihood is None:
        return None
    # Least squares per image over its seen columns: logits ~ a * ll + b, so every category's likelihood
    # lands on the spread and level of that image's class logits.
    n_seen = class_logits.shape[1]
    ll = log_likelihood.double()
    x, y = ll[:, :n_seen], class_logits.double()
    xm, ym = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    a = ((x - xm) * (y - ym)).sum(1, keepdim=True) / ((x - xm) ** 2).sum(1, keepdim=True).clamp_min(1e-12)
    return (a * (ll - xm) + ym).to(class_logits.dtype), "attributes"


def common_scale(class_logits: torch.Tensor, descriptions: torch.Tensor) -> torch.Tensor:
    """``(M, C)``: the class logits (M, n_seen) on the seen columns, the ``described`` scores on the others."""
    return torch.cat([class_logits, descriptions[:, class_logits.shape[1]:]], 1)


def scale_gap(class_logits: torch.Tensor, descriptions: torch.Tensor, y: torch.Tensor) -> float | None:
    """The median over images of seen categories ``y`` of (their category's logit minus its description's
    score): how far the learned scale runs above the described one now. None without such images."""
    keep = (y < class_logits.shape[1]).nonzero().squeeze(1)
    if not len(keep):
        return None
    rows, cols = keep, y[keep]
    return float((class_logits[rows, cols] - descriptions[rows, cols]).double().median())


def _sides(scores: torch.Tensor, target: torch.Tensor, seen: list[int], unseen: list[int]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the margin (best seen minus best unseen score), whether it is of a seen category, and
    its per-class weight within its side and among all categories, if right within its side (0 if
    wrong): the pieces every gamma shares."""
    t = target.numpy()
    s_cand, u_cand = np.array(seen), np.array(unseen)
    sc = scores.double().numpy()
    margin = sc[:, s_cand].max(1) - sc[:, u_cand].max(1)  # (N,) seen wins iff margin >= gamma
    is_seen = np.isin(t, s_cand)
    right = np.where(is_seen, s_cand[sc[:, s_cand].argmax(1)] == t, u_cand[sc[:, u_cand].argmax(1)] == t)
    # Per-class means: each image weighs 1 / (its class's image count x classes on its side).
    classes, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    n_side = np.where(is_seen, np.isin(classes, s_cand).sum(), np.isin(classes, u_cand).sum())
    return margin, is_seen, right / (counts[inverse] * n_side), right / (counts[inverse] * len(classes))


def stacked_accuracy(scores: torch.Tensor, target: torch.Tensor, seen: list[int], unseen: list[int],
                     gamma: float) -> dict:
    """Seen, unseen (per-class means), H and the joint accuracy (per class over both sides together)
    choosing among ``seen + unseen`` by ``scores - gamma`` on the seen columns. ``scores`` (N, C) and
    ``target`` (N,) hold only images of those categories."""
    margin, is_seen, gain, joint_gain = _sides(scores, target, seen, unseen)
    chosen = np.where(is_seen, margin >= gamma, margin < gamma)  # its side wins
    s = float((gain * (is_seen & chosen)).sum())
    u = float((gain * (~is_seen & chosen)).sum())
    return {"seen": s, "unseen": u, "harmonic": harmonic_mean(s, u), "joint": float((joint_gain * chosen).sum())}


def choose_gamma(scores: torch.Tensor, target: torch.Tensor, seen: list[int], unseen: list[int]) -> float:
    """The gamma maximising H on labelled ``scores`` (N, C) of images of ``seen`` and ``unseen`` categories.

    H changes only where gamma crosses an image's margin, so every interval between consecutive
    margins is tried at once (cumulative sums); the answer is the middle of the widest interval
    where H is largest (the smaller gamma on ties), so it sits as far from a flip as the data allow.
    """
    margin, is_seen, gain, _ = _sides(scores, target, seen, unseen)
    order = np.argsort(margin, kind="stable")
    m = margin[order]
    g_seen, g_unseen = np.where(is_seen, gain, 0.0)[order], np.where(is_seen, 0.0, gain)[order]
    last = np.r_[m[1:] != m[:-1], True]  # tied margins flip together
    # Interval k (k = 0..K): gamma above the k smallest distinct margins' images and below the rest.
    unseen_acc = np.r_[0.0, np.cumsum(g_unseen)[last]]
    seen_acc = g_seen.sum() - np.r_[0.0, np.cumsum(g_seen)[last]]
    total = seen_acc + unseen_acc
    h = np.divide(2 * seen_acc * unseen_acc, total, out=np.zeros_like(total), where=total > 0)
    edges = np.r_[-np.inf, m[last], np.inf]  # interval k is (edges[k], edges[k + 1]]
    width = edges[1:] - edges[:-1]
    best = np.flatnonzero(h >= h.max() - 1e-12)
    k = int(best[np.argmax(width[best])])  # widest; argmax takes the first (smallest gamma) on ties
    lo, hi = edges[k], edges[k + 1]
    if np.isinf(lo) and np.isinf(hi):  # one distinct margin: anything works, stay uncalibrated
        return 0.0
    if np.isinf(lo):
        return float(hi - OPEN_END)
    if np.isinf(hi):
        return float(lo + OPEN_END)
    return float((lo + hi) / 2)


# --------------------------------------------------------------------------------------------
# the calibrator: gamma as the stream goes
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def score_images(learner: Learner, x: torch.Tensor, class_attributes: torch.Tensor, n_known: int, kind: str,
                 batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """Images ``x`` with the first ``n_known`` categories seen: their class logits (N, n_known), every category
    scored from its description on that scale (N, C), and the scale used; None when the learner scores no
    description. On the host."""
    logits, embeds, lls = [], [], []
    for start in range(0, len(x), batch_size):
        s = learner.scores(x[start:start + batch_size])
        logits.append(s.class_logits[:, :n_known])
        embeds.append(s.embedding)
        if s.attribute_log_probs is not None:
            lls.append(attribute_log_likelihood(s.attribute_log_probs, class_attributes))
    logits_all = torch.cat(logits)
    desc = (learner.description_scores(torch.cat(embeds), class_attributes, n_known, kind)
            if kind != "attributes" else None)
    out = described(logits_all, desc, torch.cat(lls) if lls else None, kind)
    if out is None:
        return None
    return logits_all.float().cpu(), out[0].float().cpu(), out[1]


class Calibrator:
    """Chooses gamma's offset when an experience arrives (``arrive``), scores evaluations with it (``gzsl``).

    It reads the stream's training images of the arriving experience (the stream tells their labels),
    the learner's replay memory or the validation images, never the test set. State (the offset, the
    history) is plain host values, kept in checkpoints (``state_dict``).
    """

    def __init__(self, settings: CalibrationSettings, stream: Stream, seed: int,
                 validation: tuple[torch.Tensor, torch.Tensor] | None = None, batch_size: int = 512) -> None:
        if settings.seen_from == "validation" and validation is None:
            raise ValueError("eval.calibration.seen_from=validation but no validation images were split off "
                             "(eval.calibration.val_per_category)")
        self.settings, self.stream, self.seed, self.validation = settings, stream, seed, validation
        self.batch_size = batch_size
        self.distinct = stream.has_attributes and len(torch.unique(stream.class_codes, dim=0)) == stream.n_classes
        # gamma = offset + gap(now) with drift, else gamma as chosen; nothing chosen yet: offset 0, gamma 0.
        self.offset, self.gamma, self.source = 0.0, 0.0, "none"
        self.history: list[dict] = []

    def _seen_images(self, learner: Learner, n_known: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Images of the first ``n_known`` categories the calibration may use now: the validation split's or
        the memory's (a memory filled online may hold newer ones: left out)."""
        if self.settings.seen_from == "validation":
            x, y = self.validation
        else:
            held = learner.replay_examples()
            if held is None:
                return None
            x, y = held
        keep = (y.cpu() < n_known).nonzero().squeeze(1)
        return (x[keep.to(x.device)], y.cpu()[keep]) if len(keep) else None

    def _arriving_images(self, experience: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``per_category`` training images of each category arriving, drawn by a generator of its
        own (seeded by the run and the experience), so the training draws are untouched."""
        stream, gen = self.stream, torch.Generator().manual_seed(1_000_003 * self.seed + experience)
        y_host = stream.train_y.cpu()
        picks = []
        for c in stream.experiences[experience]:
            idx = (y_host == c).nonzero().squeeze(1)
            picks.append(idx[torch.randperm(len(idx), generator=gen)[: self.settings.per_category]])
        idx = torch.cat(picks).sort().values
        return stream.train_x[idx.to(_index_device(stream.train_x))], y_host[idx]

    def _gap(self, learner: Learner, n_known: int) -> float | None:
        """The scale gap on the seen images the learner holds now (memory or validation), or None."""
        seen_images = self._seen_images(learner, n_known)
        if seen_images is None:
            return None
        scored = score_images(learner, seen_images[0], self.stream.class_attributes(), n_known,
                              self.settings.scores, self.batch_size)
        return None if scored is None else scale_gap(scored[0], scored[1], seen_images[1])

    def arrive(self, learner: Learner, experience: int) -> None:
        """Experience ``experience`` arrives, not trained on yet: choose gamma, and the offset from the gap."""
        stream, s = self.stream, self.settings
        n_known = sum(len(c) for c in stream.experiences[:experience])
        if s.method != "incoming" or not self.distinct or n_known == 0:
            return
        seen_images = self._seen_images(learner, n_known)
        if seen_images is None:
            return
        x_new, y_new = self._arriving_images(experience)
        x = torch.cat([seen_images[0], x_new.to(seen_images[0].device)])
        y = torch.cat([seen_images[1], y_new])
        scored = score_images(learner, x, stream.class_attributes(), n_known, s.scores, self.batch_size)
        if scored is None:
            return
        logits, descriptions, _ = scored
        scores = common_scale(logits, descriptions)
        unseen = [c for e in stream.experiences[experience:] for c in e] + list(stream.heldout)
        seen = list(range(n_known))
        gamma = choose_gamma(scores, y, seen, unseen)
        gap = scale_gap(logits, descriptions, y)  # on the seen images only (y < n_known)
        self.gamma, self.offset = gamma, gamma - gap
        self.source = f"experience {experience + 1} arriving, seen from {s.seen_from}"
        on_calibration = stacked_accuracy(scores, y, seen, unseen, gamma)
        self.history.append({"experience": experience, "gamma": gamma, "gap": gap, "offset": self.offset,
                             "n_seen_images": len(seen_images[1]), "n_new_images": len(y_new),
                             **{f"calibration_{k}": v for k, v in on_calibration.items()}})

    def gzsl(self, learner: Learner, result: EvalPass, unseen: list[int]) -> dict | None:
        """Calibrated GZSL of one evaluation: its seen categories and ``unseen`` on the common scale, the seen
        scores minus gamma (with drift: the offset plus the gap measured now on the seen images the learner
        holds); and the calibration-free AUSUC on that scale."""
        if not unseen or not self.distinct:
            return None
        out = described(result.class_logits, result.description_scores, result.log_likelihood, self.settings.scores)
        if out is None:
            return None
        scores, scale = common_scale(result.class_logits, out[0]), out[1]
        seen, y = list(range(result.n_seen)), result.y
        idx = torch.isin(y, torch.tensor(seen + unseen)).nonzero().squeeze(1)
        gamma, gap, source = 0.0, None, "method zero"
        if self.settings.method == "incoming":
            gamma, source = self.gamma, self.source
            if self.settings.drift:
                gap = self._gap(learner, result.n_seen)
                if gap is not None:
                    gamma = self.offset + gap
                    source = (f"{source}, offset plus the gap now" if self.history
                              else "the gap now (no arrival calibrated yet)")
        acc = stacked_accuracy(scores[idx], y[idx], seen, unseen, gamma)
        return {"gamma": gamma, "gap": gap, "offset": self.offset, "source": source, "scores": scale, **acc,
                "auc": seen_unseen_auc(scores[idx], y[idx], seen, unseen)}

    def state_dict(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "offset": self.offset, "source": self.source, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.gamma, self.offset, self.source = float(state["gamma"]), float(state["offset"]), str(state["source"])
            self.history = list(state["history"])


def _index_device(images: Any) -> torch.device:
    """Where indices into ``images`` go: a resident tensor's device, or the host for images on disk."""
    return getattr(images, "index_device", None) or images.device
