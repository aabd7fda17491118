"""Mean ± std over seeds of every report-card metric, per sweep cell; missing values made explicit.

A metric value is *missing* in a run when its ``report.json`` has ``null`` there (the metric does not
apply: no zero-shot without attribute heads) or lacks the key. A cell whose runs all miss a metric
is "n/a"; a cell where only some runs miss it is averaged over the runs that have it and *flagged*
(its ``n`` is below the group's number of runs), because that usually means runs of different code.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from continual.metrics.report import average_accuracy_curve
from continual.results.collect import Group, Run

__all__ = [
    "DEFAULT_METRICS", "LEARNING_SPEED_KS", "METRICS", "Cell", "GroupSummary", "Metric", "accuracy_curve", "aggregate",
    "anytime_curve",
    "get_metric", "learning_speed_curve", "metric_value", "summarize", "warnings_for",
]


@dataclass(frozen=True)
class Metric:
    """One number of the report card: where it is in ``report.json`` and how to show it.

    ``path`` is dotted; a ``*`` in a part globs over that level's keys (the first match in the
    report's order is taken: ``few_shot.*way_1shot.accuracy`` finds ``5way_1shot`` or ``20way_1shot``,
    whichever N-way the run evaluated). ``"a.b / c.d"`` is the ratio of two paths in the same report
    (per run, so it has a spread over seeds; missing when either is missing or the divisor is 0).
    ``unit``: ``pct`` (a fraction, shown in percent), ``pts`` (a difference of fractions, shown in
    percentage points), ``s`` (seconds) or ``ratio`` (shown as is). ``decimals``: digits shown.
    """

    key: str
    label: str
    latex: str
    path: str
    unit: str = "pct"
    higher_is_better: bool | None = True
    decimals: int = 1

    @property
    def scale(self) -> float:
        """Factor from the report's units to the displayed ones."""
        return {"s": 1.0, "ratio": 1.0, "MB": 1e-6}.get(self.unit, 100.0)  # MB: from bytes


_M = Metric
LEARNING_SPEED_KS = (0, 1, 5, 10)  # the learning-speed curve's points (report.json learning_speed.k<k>)
METRICS: dict[str, Metric] = {m.key: m for m in [
    _M("A_T", "A_T (%)", r"$A_T$", "average_accuracy"),
    _M("forgetting", "forgetting (pts)", r"$F_T$", "forgetting", "pts", False),
    _M("bwt", "BWT (pts)", "BWT", "bwt", "pts"),
    _M("fwt", "FWT (pts)", "FWT", "fwt", "pts"),
    _M("zero_shot", "zero-shot (%)", "zero-shot", "zero_shot.accuracy"),
    # Both scorers of held-out categories side by side (eval.zero_shot says which is zero_shot.accuracy).
    _M("zero_shot_attr", "zero-shot by attributes (%)", "ZS attr.", "zero_shot.attributes"),
    _M("zero_shot_desc", "zero-shot by descriptions (%)", "ZS desc.", "zero_shot.descriptions"),
    _M("gzsl_h", "GZSL H (%)", r"GZSL $H$", "gzsl.harmonic"),
    _M("gzsl_seen", "GZSL seen (%)", r"GZSL $s$", "gzsl.seen"),
    _M("gzsl_unseen", "GZSL unseen (%)", r"GZSL $u$", "gzsl.unseen"),
    _M("gzsl_auc", "GZSL AUSUC (%)", "AUSUC", "gzsl.auc"),
    _M("czsl_mSA", "continual ZSL mSA (%)", "mSA", "gzsl.mSA"),
    _M("czsl_mUA", "continual ZSL mUA (%)", "mUA", "gzsl.mUA"),
    _M("czsl_mH", "continual ZSL mH (%)", "mH", "gzsl.mH"),
    _M("czsl_mAUSUC", "continual ZSL mAUSUC (%)", "mAUSUC", "gzsl.mAUSUC"),
    _M("czsl_mJA", "continual ZSL mJA (%)", "mJA", "gzsl.mJA"),
    # Calibrated GZSL (continual.metrics.calibration): seen on the category head, unseen from descriptions on
    # its scale, seen minus gamma chosen without test data; AUSUC on that scale; and the continual means.
    _M("gzsl_cal_h", "calibrated GZSL H (%)", r"cal.\ $H$", "gzsl_calibrated.harmonic"),
    _M("gzsl_cal_seen", "calibrated GZSL seen (%)", r"cal.\ $s$", "gzsl_calibrated.seen"),
    _M("gzsl_cal_unseen", "calibrated GZSL unseen (%)", r"cal.\ $u$", "gzsl_calibrated.unseen"),
    _M("gzsl_cal_auc", "calibrated-scale AUSUC (%)", r"cal.\ AUSUC", "gzsl_calibrated.auc"),
    _M("gzsl_gamma", "calibration gamma", r"$\gamma$", "gzsl_calibrated.gamma", "ratio", None, 2),
    _M("czsl_cal_mSA", "calibrated continual ZSL mSA (%)", r"cal.\ mSA", "czsl_calibrated.mSA"),
    _M("czsl_cal_mUA", "calibrated continual ZSL mUA (%)", r"cal.\ mUA", "czsl_calibrated.mUA"),
    _M("czsl_cal_mH", "calibrated continual ZSL mH (%)", r"cal.\ mH", "czsl_calibrated.mH"),
    _M("czsl_cal_mAUSUC", "calibrated continual ZSL mAUSUC (%)", r"cal.\ mAUSUC", "czsl_calibrated.mAUSUC"),
    _M("attributes", "attributes (%)", "attributes", "attribute_accuracy.mean"),
    _M("fine_grained", "fine-grained (%)", "fine-grained", "fine_grained.accuracy"),
    _M("learning_speed", "learning-speed area (%)", "LS area", "learning_speed.area"),
    _M("few_shot_1shot", "few-shot 1-shot (%)", "1-shot", "few_shot.*way_1shot.accuracy"),
    _M("few_shot_5shot", "few-shot 5-shot (%)", "5-shot", "few_shot.*way_5shot.accuracy"),
    _M("long_tail_tail", "long-tail tail (%)", "tail", "long_tail.tail"),
    _M("wall_s", "wall (s)", "wall (s)", "timing.wall_s", "s", None),
    # Learning from one look. The learning-speed curve's points: accuracy on a new experience's
    # categories (among all seen so far) after k examples of each.
    *(_M(f"speed_k{k}", f"speed k={k} (%)", f"$k{{=}}{k}$", f"learning_speed.k{k}") for k in LEARNING_SPEED_KS),
    # Long-tailed streams: per-class accuracy of the most, middle and least trained thirds, and the
    # tail's share of the head's accuracy (per run, then averaged: 1 is no long-tail penalty).
    _M("long_tail_head", "long-tail head (%)", "head", "long_tail.head"),
    _M("long_tail_medium", "long-tail medium (%)", "medium", "long_tail.medium"),
    _M("tail_head", "tail / head", "tail/head", "long_tail.tail / long_tail.head", "ratio", decimals=2),
    # Never-trained domains (Omniglot alphabets held out): Lake-style one-shot error, and accuracy
    # after meeting 10, 50 and all of their characters one at a time.
    _M("lake_error", "new-alphabet 1-shot error (%)", "1-shot error", "one_shot_new_alphabets.error",
       higher_is_better=False),
    _M("meet_10", "met one at a time, after 10 (%)", "10", "one_at_a_time.10"),
    _M("meet_50", "met one at a time, after 50 (%)", "50", "one_at_a_time.50"),
    _M("meet_all", "met one at a time, after all (%)", "all", "one_at_a_time.all"),
    # Online streams: anytime accuracy (Koh et al. 2022), and what the learner keeps between steps.
    _M("A_AUC", "anytime A_AUC (%)", r"$A_\mathrm{AUC}$", "anytime.A_AUC"),
    _M("A_last", "anytime A_last (%)", r"$A_\mathrm{last}$", "anytime.A_last"),
    _M("F_last", "anytime F_last (pts)", r"$F_\mathrm{last}$", "anytime.F_last", "pts", False),
    _M("memory_mb", "memory held (MB)", "memory (MB)", "memory_bytes.+", "MB", None, 2),  # +: the parts' sum
]}
# The table columns when none are asked for: the report card's metrics of every stream, without the
# learning-speed points (the area stands for them) and the metrics null on the default stream (the
# long-tail split, never-trained alphabets).
_NOT_DEFAULT = {"long_tail_tail", "long_tail_head", "long_tail_medium", "tail_head", "lake_error", "meet_10",
                "meet_50", "meet_all", "speed_k0", "speed_k1", "speed_k5", "speed_k10", "A_AUC", "A_last", "F_last",
                "czsl_mSA", "czsl_mUA", "czsl_mH", "czsl_mAUSUC", "czsl_mJA",
                "gzsl_cal_h", "gzsl_cal_seen", "gzsl_cal_unseen", "gzsl_cal_auc", "gzsl_gamma",
                "czsl_cal_mSA", "czsl_cal_mUA", "czsl_cal_mH", "czsl_cal_mAUSUC",
                "memory_mb", "zero_shot_attr", "zero_shot_desc"}
DEFAULT_METRICS: tuple[str, ...] = tuple(k for k in METRICS if k not in _NOT_DEFAULT)


def get_metric(name: str) -> Metric:
    """A metric by key (``A_T``), or an ad-hoc one by dotted report path (``long_tail.head``, in %).

    An unknown key without a dot raises ``KeyError`` listing the known keys.
    """
    if name in METRICS:
        return METRICS[name]
    if "." in name:
        return Metric(name, f"{name} (%)", name, name)
    raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)} (or a dotted path into report.json)")


def metric_value(report: Mapping[str, Any], metric: Metric | str) -> float | None:
    """The metric's value in one report (report units), or ``None`` when missing/null/NaN."""
    m = get_metric(metric) if isinstance(metric, str) else metric
    if " / " in m.path:  # a ratio of two paths
        num, den = (_path_value(report, p.strip()) for p in m.path.split(" / ", 1))
        return None if num is None or not den else num / den
    return _path_value(report, m.path)


def _path_value(report: Mapping[str, Any], path: str) -> float | None:
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        if part == "+":  # the sum of a node's numbers (memory_bytes: bytes by part)
            values = [v for v in node.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            node = sum(values)  # 0 for a learner that keeps nothing
            continue
        if "*" in part:
            part = next((k for k in node if fnmatch.fnmatchcase(str(k), part)), None)
            if part is None:
                return None
        node = node.get(part)
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node) if math.isfinite(node) else None


@dataclass(frozen=True)
class Cell:
    """One metric over the runs of a group: the values present, their mean and sample std."""

    values: tuple[float, ...]
    n_runs: int
    mean: float | None
    std: float | None  # sample std (ddof=1); None with fewer than 2 values

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def all_missing(self) -> bool:
        return self.n == 0

    @property
    def partial(self) -> bool:
        """Missing in some runs of the group but not all: averaged over fewer runs, flagged."""
        return 0 < self.n < self.n_runs


def summarize(values: Sequence[float | None]) -> Cell:
    """Mean and sample std (``ddof=1``, as ``statistics.stdev``) of the non-missing values."""
    present = tuple(float(v) for v in values if v is not None and math.isfinite(v))
    a = np.array(present, dtype=float)
    mean = float(a.mean()) if a.size else None
    std = float(a.std(ddof=1)) if a.size >= 2 else None
    return Cell(values=present, n_runs=len(values), mean=mean, std=std)


@dataclass
class GroupSummary:
    """A sweep cell's runs and every requested metric summarised over them."""

    group: Group
    cells: dict[str, Cell]

    @property
    def label(self) -> str:
        return self.group.label

    @property
    def n_runs(self) -> int:
        return len(self.group.runs)


def aggregate(groups: Sequence[Group], metrics: Sequence[str | Metric] = DEFAULT_METRICS) -> list[GroupSummary]:
    """Every metric of every group, mean ± std over its runs (seeds)."""
    ms = [get_metric(m) if isinstance(m, str) else m for m in metrics]
    return [GroupSummary(g, {m.key: summarize([metric_value(r.report, m) for r in g.runs]) for m in ms})
            for g in groups]


def warnings_for(summaries: Sequence[GroupSummary]) -> list[str]:
    """Things a reader of the table must know: partly missing metrics, repeated seeds, unequal n."""
    out = []
    for s in summaries:
        for key, cell in s.cells.items():
            if cell.partial:
                out.append(f"{s.label}: {key} is missing in {cell.n_runs - cell.n} of {cell.n_runs} runs "
                           f"(averaged over the {cell.n} that have it)")
        repeated = sorted(str(seed) for seed, c in Counter(map(str, s.group.seeds)).items() if c > 1)
        if repeated:
            out.append(f"{s.label}: seed(s) {', '.join(repeated)} appear more than once "
                       f"({', '.join(str(r.path) for r in s.group.runs)})")
    most = max((s.n_runs for s in summaries), default=0)
    short = [s for s in summaries if s.n_runs < most]
    if short:
        out.append(f"fewer runs than the other groups' {most}: "
                   + "; ".join(f"{s.label} (n={s.n_runs})" for s in short))
    return out


def _curve(run: Run) -> list[float | None]:
    curve = run.report.get("average_accuracy_curve")
    if curve is None and run.report.get("accuracy_matrix") is not None:
        curve = average_accuracy_curve(run.report["accuracy_matrix"])
    return list(curve or [])


def accuracy_curve(group: Group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std and count over runs of ``A_i`` after each experience i (fractions).

    Runs with shorter streams only count for the experiences they have; NaN where no run has a
    value (std NaN where fewer than 2 do).
    """
    curves = [_curve(r) for r in group.runs]
    T = max((len(c) for c in curves), default=0)
    M = np.full((len(curves), T), np.nan)
    for i, c in enumerate(curves):
        M[i, : len(c)] = [np.nan if v is None else v for v in c]
    count = (~np.isnan(M)).sum(axis=0)
    mean = np.array([np.nanmean(M[:, t]) if count[t] else np.nan for t in range(T)])
    std = np.array([np.nanstd(M[:, t], ddof=1) if count[t] >= 2 else np.nan for t in range(T)])
    return mean, std, count


def learning_speed_curve(group: Group, ks: Sequence[int] = LEARNING_SPEED_KS
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std and count over runs of the accuracy on new categories after ``k`` examples of
    each (``report.json`` ``learning_speed.k<k>``, fractions), for every k in ``ks``; NaN where missing."""
    cells = [summarize([metric_value(r.report, f"learning_speed.k{k}") for r in group.runs]) for k in ks]
    mean = np.array([np.nan if c.mean is None else c.mean for c in cells])
    std = np.array([np.nan if c.std is None else c.std for c in cells])
    return mean, std, np.array([c.n for c in cells])


def anytime_curve(group: Group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples seen, and the mean and sample std over runs of the anytime accuracy at each point
    (``report.json`` ``anytime.curve``, fractions). Seeds of one config share their schedule, so the
    points line up; a run with fewer points counts only where it has them (NaN where no run has a value)."""
    curves = [((r.report.get("anytime") or {}).get("curve") or []) for r in group.runs]
    samples = sorted({p["samples"] for c in curves for p in c})
    M = np.full((len(curves), len(samples)), np.nan)
    at = {s: j for j, s in enumerate(samples)}
    for i, c in enumerate(curves):
        for p in c:
            if p.get("accuracy") is not None:
                M[i, at[p["samples"]]] = p["accuracy"]
    count = (~np.isnan(M)).sum(axis=0)
    mean = np.array([np.nanmean(M[:, t]) if count[t] else np.nan for t in range(len(samples))])
    std = np.array([np.nanstd(M[:, t], ddof=1) if count[t] >= 2 else np.nan for t in range(len(samples))])
    return np.array(samples, dtype=float), mean, std
