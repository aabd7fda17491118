"""Scaling with data: fit ``metric = a + b · log10(n)`` over a sweep of training-set sizes n.

Two axes of "data" (``AXES``): ``images``, training images per category (``benchmark.train_per_category``),
and ``categories``, the number of trained categories at fixed images per category (``benchmark.n_experiences``
× ``benchmark.categories_per_experience``, read from each run's config): the diversity of attribute
combinations the learner saw. Any numeric config key, or a product of keys ``a*b``, is an axis too.

Sun et al. (ICCV 2017) found performance growing linearly in the log of the data volume. The fit
here is ordinary least squares over every (n, seed) point (not over per-n means, so a size with
more seeds weighs more and R² reflects the seed noise too). ``b`` is the gain per tenfold data.

Where does it bend? Two honest, simple views, neither a significance test:
  * the mean residual of the straight line at each n (a run of same-sign residuals at the ends
    is curvature, e.g. saturation near 100%);
  * a continuous two-segment ("hinge") fit with its breakpoint at one of the sweep's n values,
    chosen by least squares, with the slope below and above it. It needs at least 4 distinct n
    (with 3 it would pass through the three means by construction, a fit that says nothing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from continual.results.aggregate import Metric, get_metric, metric_value, summarize
from continual.results.collect import ABSENT, Run, format_value, varying_keys
from continual.results.tables import NA, format_cell

__all__ = [
    "AXES", "DEFAULT_SCALING_METRICS", "DIVERSITY_METRICS", "LogFit", "ScalingAxis", "ScalingResult", "SegmentFit",
    "check_scaling_sweep", "fit_log_linear", "fit_two_segment", "get_axis", "plot_scaling", "scaling_latex_table",
    "scaling_markdown", "scaling_per_n_table", "scaling_study", "scaling_to_dict",
]

X_KEY = "benchmark.train_per_category"
CATEGORY_KEYS = ("benchmark.n_experiences", "benchmark.categories_per_experience")
DEFAULT_SCALING_METRICS: tuple[str, ...] = ("A_T", "zero_shot", "few_shot_1shot")
# Composition needs diverse combinations: what zero-shot, GZSL and the attribute heads make of more of them.
DIVERSITY_METRICS: tuple[str, ...] = ("zero_shot", "gzsl_h", "gzsl_cal_h", "gzsl_auc", "gzsl_cal_auc", "attributes", "A_T")
MIN_SEGMENT_VALUES = 4  # distinct n needed before a two-segment fit can say anything


@dataclass(frozen=True)
class ScalingAxis:
    """What a scaling sweep varies: n is the product of a run's config values at ``keys`` (one key: its value)."""

    name: str
    keys: tuple[str, ...]
    label: str  # the plot's x axis, before "(log scale)"
    metrics: tuple[str, ...] = DEFAULT_SCALING_METRICS  # what ``scaling_study`` fits unless told
    title: str = "Scaling with data"  # the Markdown report's heading

    @property
    def key(self) -> str:
        """The keys as one string, ``a*b`` for a product (``scaling.json``'s ``x_key``)."""
        return "*".join(self.keys)

    def describe(self) -> str:
        """Markdown: ```key``` for one key; ``label = `a` × `b``` for a product."""
        keys = " × ".join(f"`{k}`" for k in self.keys)
        return keys if len(self.keys) == 1 else f"{self.label.removesuffix(' n')} = {keys}"

    def value(self, run: Run) -> float | None:
        """The run's n, or None when a key is missing or not a number."""
        n = 1.0
        for k in self.keys:
            v = run.flat.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None
            n *= float(v)
        return n


AXES: dict[str, ScalingAxis] = {
    "images": ScalingAxis("images", (X_KEY,), f"{X_KEY.rsplit('.', 1)[-1]} n"),
    "categories": ScalingAxis("categories", CATEGORY_KEYS, "trained categories n", DIVERSITY_METRICS,
                              "Scaling with diversity"),
}


def get_axis(axis: str | ScalingAxis) -> ScalingAxis:
    """An axis by name (``AXES``), or from a dotted config key, or a product of keys (``a*b``)."""
    if isinstance(axis, ScalingAxis):
        return axis
    if axis in AXES:
        return AXES[axis]
    keys = tuple(k.strip() for k in str(axis).split("*"))
    if all(k and "." in k for k in keys):  # every config key a run's config.json flattens to is dotted
        label = f"{keys[0].rsplit('.', 1)[-1]} n" if len(keys) == 1 else " × ".join(keys) + " n"
        return ScalingAxis(str(axis), keys, label)
    raise ValueError(f"unknown scaling axis {axis!r}; known: {', '.join(AXES)}, or a dotted config key "
                     f"(e.g. {X_KEY}) or a product of keys (e.g. {'*'.join(CATEGORY_KEYS)})")


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination; NaN when ``y`` is constant (nothing to explain)."""
    if np.all(y == y[0]):  # tested exactly: around a float mean such as 0.9's, ss_tot is rounding, not spread
        return math.nan
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - pred) ** 2))
    return 1.0 - ss_res / ss_tot


def _validated(n: Sequence[float], y: Sequence[float], need: int = 2) -> tuple[np.ndarray, np.ndarray]:
    n_arr, y_arr = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    if n_arr.shape != y_arr.shape or n_arr.ndim != 1:
        raise ValueError(f"n and y must be 1-D of equal length, got {n_arr.shape} and {y_arr.shape}")
    if not np.all(np.isfinite(y_arr)) or not np.all(np.isfinite(n_arr)):
        raise ValueError("n and y must be finite (drop runs without the metric first)")
    if np.any(n_arr <= 0):
        raise ValueError(f"n must be positive for log10(n), got {sorted(set(n_arr[n_arr <= 0]))}")
    distinct = len(np.unique(n_arr))
    if distinct < need:
        raise ValueError(f"a fit against log10(n) needs at least {need} distinct n, got {distinct}: "
                         f"{sorted(set(n_arr.tolist()))}")
    return n_arr, y_arr


@dataclass(frozen=True)
class LogFit:
    """``y = a + b · log10(n)``: ``a`` is the value at n = 1, ``b`` the gain per tenfold n."""

    a: float
    b: float
    r2: float
    n_points: int

    def predict(self, n: Any) -> np.ndarray:
        return self.a + self.b * np.log10(np.asarray(n, dtype=float))


def fit_log_linear(n: Sequence[float], y: Sequence[float]) -> LogFit:
    """Least-squares ``y = a + b · log10(n)`` over all points; needs 2 distinct n."""
    n_arr, y_arr = _validated(n, y)
    X = np.stack([np.ones_like(n_arr), np.log10(n_arr)], axis=1)  # (P, 2)
    (a, b), *_ = np.linalg.lstsq(X, y_arr, rcond=None)
    return LogFit(float(a), float(b), _r2(y_arr, X @ np.array([a, b])), int(n_arr.size))


@dataclass(frozen=True)
class SegmentFit:
    """Continuous two-segment line in log10(n), bending at ``breakpoint`` (one of the sweep's n)."""

    breakpoint: float
    a: float
    b_before: float
    b_after: float
    r2: float
    n_points: int

    def predict(self, n: Any) -> np.ndarray:
        x = np.log10(np.asarray(n, dtype=float))
        xb = math.log10(self.breakpoint)
        return self.a + self.b_before * x + (self.b_after - self.b_before) * np.maximum(0.0, x - xb)


def fit_two_segment(n: Sequence[float], y: Sequence[float]) -> SegmentFit | None:
    """The best hinge fit over breakpoints at interior distinct n; None with under 4 distinct n."""
    n_arr, y_arr = _validated(n, y)
    xs = np.unique(np.log10(n_arr))
    if xs.size < MIN_SEGMENT_VALUES:
        return None
    x = np.log10(n_arr)
    best: tuple[float, np.ndarray, float] | None = None
    for xb in xs[1:-1]:  # each segment keeps at least two distinct n
        X = np.stack([np.ones_like(x), x, np.maximum(0.0, x - xb)], axis=1)  # (P, 3)
        coef, *_ = np.linalg.lstsq(X, y_arr, rcond=None)
        sse = float(np.sum((y_arr - X @ coef) ** 2))
        if best is None or sse < best[2] - 1e-15:
            best = (float(xb), coef, sse)
    xb, (a, b1, db), _ = best
    fit = SegmentFit(float(10 ** xb), float(a), float(b1), float(b1 + db), math.nan, int(x.size))
    return SegmentFit(**{**asdict(fit), "r2": _r2(y_arr, fit.predict(n_arr))})


@dataclass
class ScalingResult:
    """One metric against n: the points, the straight fit, the bend, and per-n summaries."""

    metric: Metric
    n: list[float]
    y: list[float]
    fit: LogFit | None
    segment: SegmentFit | None
    per_n: list[dict] = field(default_factory=list)  # {n, mean, std, count, residual_mean}
    dropped: int = 0  # runs that lack this metric
    reason: str = ""  # why there is no fit


def check_scaling_sweep(runs: Sequence[Run], axis: str | ScalingAxis = X_KEY) -> list[float]:
    """The sweep's distinct n, after checking it is a sweep over ``axis`` (and seeds) only.

    Raises ``ValueError`` when a run lacks one of the axis' keys, when fewer than 2 distinct n exist,
    or when another config key varies within one n (the points would mix different experiments; for
    a product axis that includes its own keys: 5 experiences of 8 categories and 10 of 4 are both 40).
    """
    ax = get_axis(axis)
    if not runs:
        raise ValueError("no completed runs to fit")
    lacking = [str(r.path) for r in runs if ax.value(r) is None]
    if lacking:
        raise ValueError(f"{len(lacking)} run(s) have no numeric {' and '.join(ax.keys)} in config.json: "
                         f"{', '.join(lacking[:5])}")
    ns = sorted({ax.value(r) for r in runs})
    if len(ns) < 2:
        raise ValueError(f"the sweep has {len(ns)} distinct {ax.key} ({', '.join(format_value(v) for v in ns)}); "
                         f"a fit against log10(n) needs at least 2 (e.g. python experiments/train.py -m "
                         f"experiment={'scaling_diversity' if ax.name == 'categories' else 'scaling'})")
    others = [k for k in varying_keys(runs) if k not in ax.keys]
    if others:
        by_n: dict[float, set[tuple[str, ...]]] = {}
        for r in runs:
            by_n.setdefault(ax.value(r), set()).add(tuple(format_value(r.flat.get(k, ABSENT)) for k in others))
        mixed = sorted(n for n, cells in by_n.items() if len(cells) > 1)
        if mixed:
            raise ValueError(f"besides {' and '.join(ax.keys)} and the seed, config keys {', '.join(others)} vary "
                             f"within n = {', '.join(format_value(n) for n in mixed)}: the points would mix different "
                             f"experiments; collect one experiment per scaling fit")
    if len(ax.keys) > 1:
        streams: dict[float, set[tuple[str, ...]]] = {}
        for r in runs:
            streams.setdefault(ax.value(r), set()).add(tuple(format_value(r.flat[k]) for k in ax.keys))
        mixed = sorted(n for n, cells in streams.items() if len(cells) > 1)
        if mixed:
            raise ValueError(f"{' and '.join(ax.keys)} differ between runs of the same n = "
                             f"{', '.join(format_value(n) for n in mixed)} ({ax.key}): the points would mix "
                             f"different streams; vary one of the keys only")
    return ns


def scaling_study(runs: Sequence[Run], metrics: Sequence[str | Metric] | None = None,
                  axis: str | ScalingAxis = X_KEY) -> list[ScalingResult]:
    """Fit every metric (default: the axis' own) against log10(n) over all (n, seed) points of the runs."""
    ax = get_axis(axis)
    check_scaling_sweep(runs, ax)
    out = []
    for m in (get_metric(m) if isinstance(m, str) else m for m in (ax.metrics if metrics is None else metrics)):
        pts = [(ax.value(r), metric_value(r.report, m)) for r in runs]
        kept = [(n, y) for n, y in pts if y is not None]
        res = ScalingResult(m, [n for n, _ in kept], [y for _, y in kept], None, None, dropped=len(pts) - len(kept))
        if len({n for n, _ in kept}) < 2:
            res.reason = (f"{m.key} is missing in every run" if not kept else
                          f"{m.key} is present at only one n ({format_value(kept[0][0])})")
            out.append(res)
            continue
        res.fit = fit_log_linear(res.n, res.y)
        res.segment = fit_two_segment(res.n, res.y)
        n_arr, y_arr = np.array(res.n), np.array(res.y)
        resid = y_arr - res.fit.predict(n_arr)
        for n in sorted(set(res.n)):
            at = n_arr == n
            res.per_n.append({"n": n, "mean": float(y_arr[at].mean()),
                              "std": float(y_arr[at].std(ddof=1)) if at.sum() > 1 else None,
                              "count": int(at.sum()), "residual_mean": float(resid[at].mean())})
        out.append(res)
    return out


def _name(r: ScalingResult) -> str:
    return r.metric.label.rsplit(" (", 1)[0]  # "A_T (%)" -> "A_T": the columns carry the units


def _bend_text(r: ScalingResult) -> str:
    if r.fit is None:
        return ""
    # 1e-6 (a ten-thousandth of a point): below it a residual is rounding, not a sign.
    signs = "".join("0" if abs(p["residual_mean"]) < 1e-6 else "+" if p["residual_mean"] > 0 else "-"
                    for p in r.per_n)
    text = f"mean residual sign by n: {signs}"
    s = r.segment
    if s is None:
        return text + f"; no two-segment fit (needs >= {MIN_SEGMENT_VALUES} distinct n)"
    return (text + f"; two-segment fit bends at n={format_value(s.breakpoint)}: "
            f"{100 * s.b_before:+.1f} then {100 * s.b_after:+.1f} pts per 10x (R² {s.r2:.3f})")


def scaling_to_dict(results: Sequence[ScalingResult], axis: str | ScalingAxis = X_KEY) -> dict:
    """JSON-safe summary: per metric the fit (report units: fractions), the bend and the points."""
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    ax = get_axis(axis)
    return clean({
        "axis": ax.name,
        "x_key": ax.key,
        "model": "metric = a + b * log10(n), least squares over all (n, seed) points; values are fractions",
        "metrics": {r.metric.key: {
            "label": r.metric.label,
            "fit": asdict(r.fit) if r.fit else None,
            "two_segment": asdict(r.segment) if r.segment else None,
            "bend": _bend_text(r),
            "per_n": r.per_n,
            "points": [[n, y] for n, y in zip(r.n, r.y)],
            "dropped_runs": r.dropped,
            "reason": r.reason or None,
        } for r in results},
    })


def scaling_markdown(results: Sequence[ScalingResult], axis: str | ScalingAxis = X_KEY) -> str:
    """A Markdown table of a, b (per tenfold n) and R², with the bend in words below it."""
    lines = [f"Fit: metric = a + b · log10(n), n = {get_axis(axis).describe()}; least squares over every "
             f"(n, seed) run.", "",
             "| metric | a (%) | b (pts per 10× n) | R² | runs | n |", "|---|---|---|---|---|---|"]
    for r in results:
        if r.fit is None:
            lines.append(f"| {_name(r)} | n/a | n/a | n/a | 0 | {r.reason} |")
            continue
        ns = sorted(set(r.n))
        lines.append(f"| {_name(r)} | {100 * r.fit.a:.1f} | {100 * r.fit.b:+.1f} | {r.fit.r2:.3f} "
                     f"| {r.fit.n_points}{f' ({r.dropped} without it)' if r.dropped else ''} "
                     f"| {', '.join(format_value(n) for n in ns)} |")
    lines.append("")
    lines += [f"- {_name(r)}: {_bend_text(r)}" for r in results if r.fit is not None]
    return "\n".join(lines)


def scaling_latex_table(results: Sequence[ScalingResult]) -> str:
    """A booktabs tabular: metric, a, b, R², breakpoint and slopes of the two-segment fit."""
    rows = []
    for r in results:
        name = r.metric.latex
        if r.fit is None:
            rows.append(f"{name} & n/a & n/a & n/a & n/a \\\\")
            continue
        s = r.segment
        bend = (f"{format_value(s.breakpoint)}: ${100 * s.b_before:+.1f}$ / ${100 * s.b_after:+.1f}$"
                if s else "n/a")
        rows.append(f"{name} & ${100 * r.fit.a:.1f}$ & ${100 * r.fit.b:+.1f}$ & ${r.fit.r2:.3f}$ & {bend} \\\\")
    return "\n".join([
        "% generated by continual.results.scaling; do not edit",
        r"\begin{tabular}{lcccc}", r"\toprule",
        r"metric & $a$ (\%) & $b$ (pts / $10\times n$) & $R^2$ & bend at $n$: $b$ below / above \\",
        r"\midrule", *rows, r"\bottomrule", r"\end{tabular}"]) + "\n"


def scaling_per_n_table(results: Sequence[ScalingResult], axis: str | ScalingAxis = X_KEY,
                        style: str = "markdown") -> str:
    """Mean ± sample std over seeds of every metric at every n: one row per n (``markdown`` or ``latex``)."""
    ax = get_axis(axis)
    ns = sorted({n for r in results for n in r.n})
    rows = []
    for n in ns:
        cells = []
        for r in results:
            values = [y for x, y in zip(r.n, r.y) if x == n]
            cells.append(format_cell(summarize(values), r.metric, style) if values else NA)
        runs = max(sum(x == n for x in r.n) for r in results)
        rows.append([format_value(n), str(runs), *cells])
    if style == "markdown":
        head = [ax.label, "runs", *(r.metric.label for r in results)]
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                          *("| " + " | ".join(row) + " |" for row in rows)])
    if style != "latex":
        raise ValueError(f"style must be markdown or latex, got {style!r}")
    head = ["$n$", "runs", *(r.metric.latex for r in results)]
    return "\n".join([
        "% generated by continual.results.scaling; do not edit",
        r"\begin{tabular}{rr" + "c" * len(results) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule",
        *(" & ".join(row) + r" \\" for row in rows), r"\bottomrule", r"\end{tabular}"]) + "\n"


def plot_scaling(results: Sequence[ScalingResult], stem: str | Path, axis: str | ScalingAxis = X_KEY,
                 formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """One panel per metric on a log-n axis: every run (dots), mean ± std per n, the fitted line
    (solid) and the two-segment fit (dashed) where there is one."""
    from continual.results.figures import new_figure, save_figure

    x_axis = get_axis(axis)
    fig = new_figure(4.0 * max(1, len(results)), 3.6)
    for k, r in enumerate(results):
        ax = fig.add_subplot(1, len(results), k + 1)
        ax.set_xscale("log")
        ax.set_xlabel(f"{x_axis.label} (log scale)")
        ax.set_ylabel(r.metric.label)
        ax.grid(alpha=0.3, which="both")
        if r.fit is None:
            ax.text(0.5, 0.5, f"no fit:\n{r.reason}", transform=ax.transAxes, ha="center", va="center", fontsize=8)
            ax.set_title(_name(r), fontsize=10)
            continue
        ax.scatter(r.n, 100 * np.array(r.y), s=10, color="0.6", label="runs", zorder=2)
        ns = np.array([p["n"] for p in r.per_n])
        means = 100 * np.array([p["mean"] for p in r.per_n])
        stds = 100 * np.array([p["std"] if p["std"] is not None else 0.0 for p in r.per_n])
        ax.errorbar(ns, means, yerr=stds, fmt="o", color="black", ms=4, capsize=3, label="mean ± std", zorder=3)
        grid = np.geomspace(min(r.n), max(r.n), 100)
        ax.plot(grid, 100 * r.fit.predict(grid), color="tab:blue", lw=1.6,
                label=f"{100 * r.fit.a:.1f} {100 * r.fit.b:+.1f}·log10 n  (R² {r.fit.r2:.2f})")
        if r.segment is not None:
            ax.plot(grid, 100 * r.segment.predict(grid), color="tab:orange", lw=1.2, ls="--",
                    label=f"two segments, bend at n={format_value(r.segment.breakpoint)}")
        if len(ns) <= 8:  # label the sweep's own n values rather than powers of ten
            ax.set_xticks(ns, [format_value(n) for n in ns])
            ax.minorticks_off()
        ax.set_title(_name(r), fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, stem, formats)
