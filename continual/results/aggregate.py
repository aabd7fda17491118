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
    "DEFAULT_METRICS", "METRICS", "Cell", "GroupSummary", "Metric", "accuracy_curve", "aggregate", "get_metric",
    "metric_value", "summarize", "warnings_for",
]


@dataclass(frozen=True)
class Metric:
    """One number of the report card: where it is in ``report.json`` and how to show it.

    ``path`` is dotted; a ``*`` in a part globs over that level's keys (the first match in the
    report's order is taken: ``few_shot.*way_1shot.accuracy`` finds ``5way_1shot`` or ``20way_1shot``,
    whichever N-way the run evaluated). ``unit``: ``pct`` (a fraction, shown in percent), ``pts``
    (a difference of fractions, shown in percentage points) or ``s`` (seconds).
    """

    key: str
    label: str
    latex: str
    path: str
    unit: str = "pct"
    higher_is_better: bool | None = True

    @property
    def scale(self) -> float:
        """Factor from the report's units to the displayed ones."""
        return 1.0 if self.unit == "s" else 100.0


_M = Metric
METRICS: dict[str, Metric] = {m.key: m for m in [
    _M("A_T", "A_T (%)", r"$A_T$", "average_accuracy"),
    _M("forgetting", "forgetting (pts)", r"$F_T$", "forgetting", "pts", False),
    _M("bwt", "BWT (pts)", "BWT", "bwt", "pts"),
    _M("fwt", "FWT (pts)", "FWT", "fwt", "pts"),
    _M("zero_shot", "zero-shot (%)", "zero-shot", "zero_shot.accuracy"),
    _M("gzsl_h", "GZSL H (%)", r"GZSL $H$", "gzsl.harmonic"),
    _M("gzsl_seen", "GZSL seen (%)", r"GZSL $s$", "gzsl.seen"),
    _M("gzsl_unseen", "GZSL unseen (%)", r"GZSL $u$", "gzsl.unseen"),
    _M("gzsl_auc", "GZSL AUSUC (%)", "AUSUC", "gzsl.auc"),
    _M("attributes", "attributes (%)", "attributes", "attribute_accuracy.mean"),
    _M("fine_grained", "fine-grained (%)", "fine-grained", "fine_grained.accuracy"),
    _M("learning_speed", "learning-speed area (%)", "LS area", "learning_speed.area"),
    _M("few_shot_1shot", "few-shot 1-shot (%)", "1-shot", "few_shot.*way_1shot.accuracy"),
    _M("few_shot_5shot", "few-shot 5-shot (%)", "5-shot", "few_shot.*way_5shot.accuracy"),
    _M("long_tail_tail", "long-tail tail (%)", "tail", "long_tail.tail"),
    _M("wall_s", "wall (s)", "wall (s)", "timing.wall_s", "s", None),
]}
# The table columns when none are asked for: every metric the brief's report card has but the
# long-tail split (null on balanced streams, the default).
DEFAULT_METRICS: tuple[str, ...] = tuple(k for k in METRICS if k != "long_tail_tail")


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
    node: Any = report
    for part in m.path.split("."):
        if not isinstance(node, Mapping):
            return None
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
