"""Figures of a sweep: accuracy after each experience, forgetting, zero-shot and GZSL bars.

Every figure shows the mean over seeds with its sample std (a band or error bars) and, for bars,
each seed's own value as a dot, so a reader sees how many runs stand behind a bar. Figures are
drawn with matplotlib's Agg canvas (no pyplot: no global state, no display needed) and saved
atomically as PDF (for the paper) and PNG (for a quick look).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from continual.results.aggregate import (
    LEARNING_SPEED_KS, GroupSummary, accuracy_curve, anytime_curve, get_metric, learning_speed_curve, metric_value,
    summarize,
)
from continual.results.collect import Group, format_value

__all__ = ["display_label", "new_figure", "plot_accuracy_curves", "plot_anytime_curves", "plot_bars",
           "plot_learning_speed", "save_figure"]

FORMATS = ("pdf", "png")
_DPI = 150  # PNG resolution: legible when opened at 100%, small enough to commit


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` (inches) on an Agg canvas, outside pyplot's global figure list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, stem: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format, atomically (temp file + rename)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)  # savefig opens the file itself
        try:
            # Fixed metadata date: regenerating from the same runs gives the same PDF bytes.
            meta = {"CreationDate": None} if fmt == "pdf" else {}
            fig.savefig(tmp, format=fmt, dpi=_DPI, bbox_inches="tight", metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


_GENERIC = {"size", "name", "n", "type", "value", "weight", "mode"}  # too vague without their parent


def _short_key(key: str, keys: Sequence[str]) -> str:
    """``learner.attribute_weight`` -> ``attribute_weight``; ``memory.size`` stays (``size`` says
    nothing), as does any key whose last part another label key shares."""
    last = key.rsplit(".", 1)[-1]
    if last in _GENERIC or sum(k.rsplit(".", 1)[-1] == last for k in keys) > 1:
        return ".".join(key.split(".")[-2:])
    return last


def display_label(group: Group, names: Mapping[str, str] | None = None, sep: str = ", ") -> str:
    """A short label: the value alone for one label key (``child``), else ``memory.size=200, attribute_weight=0``.

    ``names`` maps a key to the name to show for it (``{"memory.size": "memory"}``).
    """
    names = names or {}
    keys = group.label_keys
    if not keys:
        return "all runs"
    if len(keys) == 1 and keys[0] not in names:
        return format_value(group.settings[keys[0]])
    return sep.join(f"{names.get(k, _short_key(k, keys))}={format_value(group.settings[k])}" for k in keys)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_accuracy_curves(summaries: Sequence[GroupSummary], stem: str | Path, title: str = "",
                         names: Mapping[str, str] | None = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Average accuracy ``A_i`` after each experience i: mean line and ±std band per group."""
    outside = len(summaries) > 4  # many groups: the legend goes beside the axes so it never hides a curve
    labels = [f"{display_label(s.group, names)} (n={s.n_runs})" for s in summaries]
    fig = new_figure(6.4 + (0.065 * max(map(len, labels), default=0) if outside else 0.0), 4.0)
    ax = fig.add_subplot()
    T_max = 1
    for s, label, color in zip(summaries, labels, _colors(len(summaries))):
        mean, std, count = accuracy_curve(s.group)
        if not mean.size:
            continue
        x = np.arange(1, mean.size + 1)
        T_max = max(T_max, mean.size)
        _line_with_band(ax, x, mean, std, color, label)
    ax.set_xticks(range(1, T_max + 1))
    return _finish(fig, ax, "after training on experience i", r"average accuracy $A_i$ (%)", title or "accuracy over the stream (mean ± std over seeds)", outside, stem, formats)


def plot_anytime_curves(summaries: Sequence[GroupSummary], stem: str | Path, title: str = "",
                        names: Mapping[str, str] | None = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Anytime accuracy against stream samples (online streams): mean line and ±std band per group."""
    outside = len(summaries) > 4
    labels = [f"{display_label(s.group, names)} (n={s.n_runs})" for s in summaries]
    fig = new_figure(6.4 + (0.065 * max(map(len, labels), default=0) if outside else 0.0), 4.0)
    ax = fig.add_subplot()
    for s, label, color in zip(summaries, labels, _colors(len(summaries))):
        x, mean, std = anytime_curve(s.group)
        if x.size:
            _line_with_band(ax, x, mean, std, color, label)
    return _finish(fig, ax, "stream samples seen", "accuracy on the categories met so far (%)", title or "anytime accuracy (mean ± std over seeds)", outside, stem, formats)


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, outside: bool, stem: str | Path,
            formats: Sequence[str]) -> list[Path]:
    """Labels, a 0-100 % axis, grid, title and legend of a curves figure; then save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    _legend(ax, outside)
    fig.tight_layout()
    return save_figure(fig, stem, formats)


def _line_with_band(ax, x: np.ndarray, mean: np.ndarray, std: np.ndarray, color, label: str) -> None:
    """A mean curve in percent with its ±std band where the std exists."""
    ax.plot(x, 100 * mean, marker="o", ms=3.5, lw=1.6, color=color, label=label)
    band = ~np.isnan(std)
    # Accuracy lives in [0, 100]: a band past the axis limits would only hide the other curves.
    lo, hi = np.clip(100 * (mean - std), 0, 100), np.clip(100 * (mean + std), 0, 100)
    ax.fill_between(x[band], lo[band], hi[band], color=color, alpha=0.15, lw=0)


def _legend(ax, outside: bool) -> None:
    """Beside the axes when there are many curves, else the spot that hides the least of them."""
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.legend(fontsize=8, loc="best")


def plot_learning_speed(summaries: Sequence[GroupSummary], stem: str | Path, ks: Sequence[int] = LEARNING_SPEED_KS,
                        title: str = "", names: Mapping[str, str] | None = None,
                        formats: Sequence[str] = FORMATS) -> list[Path]:
    """Accuracy on new categories against the examples k seen of each: mean line and ±std band per group."""
    labels = [f"{display_label(s.group, names)} (n={s.n_runs})" for s in summaries]
    outside = len(summaries) > 4
    fig = new_figure(6.4 + (0.065 * max(map(len, labels), default=0) if outside else 0.0), 4.0)
    ax = fig.add_subplot()
    x = np.asarray(ks, dtype=float)
    for s, label, color in zip(summaries, labels, _colors(len(summaries))):
        mean, std, _ = learning_speed_curve(s.group, ks)
        if np.isnan(mean).all():
            continue
        _line_with_band(ax, x, mean, std, color, label)
    ax.set_xticks(x, [str(k) for k in ks])
    return _finish(fig, ax, "examples seen of each new category, k", "accuracy on the new categories (%)", title or "learning speed (mean ± std over seeds)", outside, stem, formats)


def plot_bars(summaries: Sequence[GroupSummary], metrics: Sequence[str], stem: str | Path, title: str = "",
              names: Mapping[str, str] | None = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """One panel per metric: a bar per group (mean), ±std error bars, a dot per seed; ``n/a`` written
    where a group has no value. The zero-shot panel shows chance as a dashed line."""
    ms = [get_metric(m) for m in metrics]
    n = len(summaries)
    labels = [display_label(s.group, names, sep="\n") for s in summaries]
    longest = max((len(line) for label in labels for line in label.split("\n")), default=1)
    # Room for horizontal tick labels (~0.07 in per character at 8 pt), rotated ones past 10 in.
    width = max(3.0, n * max(0.55, 0.07 * longest) + 1.2)
    rotate = width > 10.0
    width = min(width, 10.0)
    fig = new_figure(width * len(ms), 3.8 + (0.4 if rotate else 0.0))
    colors = _colors(n)
    for k, m in enumerate(ms):
        ax = fig.add_subplot(1, len(ms), k + 1)
        x = np.arange(n)
        top = 0.0
        for i, s in enumerate(summaries):
            cell = s.cells.get(m.key)
            if cell is None:  # the summaries were aggregated without this metric: take it from the runs
                cell = summarize([metric_value(r.report, m) for r in s.group.runs])
            if cell.all_missing:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
                continue
            mean, std = cell.mean * m.scale, (cell.std or 0.0) * m.scale
            ax.bar(i, mean, color=colors[i], alpha=0.8, width=0.7)
            if cell.std is not None:
                ax.errorbar(i, mean, yerr=std, color="black", capsize=3, lw=1)
            jitter = np.linspace(-0.15, 0.15, cell.n) if cell.n > 1 else np.zeros(1)
            ax.scatter(i + jitter, np.array(cell.values) * m.scale, s=9, color="black", zorder=3)
            top = max(top, mean + std, *(np.array(cell.values) * m.scale))
        if m.key == "zero_shot":
            chance = [r.report["zero_shot"].get("chance") for s in summaries for r in s.group.runs
                      if isinstance(r.report.get("zero_shot"), dict)]
            chance = [c for c in chance if c is not None]
            if chance:
                ax.axhline(100 * float(np.mean(chance)), ls="--", color="0.3", lw=1, label="chance")
                ax.legend(fontsize=7, loc="upper right")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(x, labels, fontsize=8, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylabel(m.label)
        if m.unit == "pct":
            ax.set_ylim(0, max(100.0, top * 1.05))
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(m.label.rsplit(" (", 1)[0], fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem, formats)
