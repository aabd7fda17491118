"""The noisy-tags study: zero-shot, GZSL H and attribute accuracy against tag rate and tag noise.

A tags sweep (``configs/experiment/tags.yaml``) varies ``benchmark.tags.rate`` (the share of training
images tagged at all) and ``benchmark.tags.wrong`` (the share of tags that are wrong), seeds aside, and
may vary one learner switch of the tag machinery (``VARIANT_KEYS``: its own tags or its category's vote
as the attribute target). ``tags_study`` groups its runs into one cell per setting, mean ± std over
seeds; ``plot_tags`` draws each metric against the tag rate (log scale), one line per noise level (and
line style per variant); ``TagStudy.latex_table`` is the paper's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from continual.results.aggregate import METRICS, Cell, GroupSummary, Metric, aggregate, get_metric, metric_value, summarize
from continual.results.collect import Run, format_value, group_runs, varying_keys
from continual.results.tables import latex_table, markdown_table

__all__ = ["CALIBRATED_H", "NOISE_KEY", "RATE_KEY", "TAG_COMPARED", "TAG_GOAL", "TAG_METRICS", "TAG_PLOT_METRICS", "TAG_ROLES",
           "VARIANT_KEYS", "TagStudy", "plot_tags", "tags_study"]

RATE_KEY = "benchmark.tags.rate"
NOISE_KEY = "benchmark.tags.wrong"
VARIANT_KEYS = ("learner.attribute_targets",)  # a tag switch a sweep may compare (line style in the figure)
# GZSL H with seen scores calibrated against unseen ones without test data (report.json's gzsl_calibrated;
# n/a in runs that predate it), beside the uncalibrated H of attribute compatibility.
CALIBRATED_H = METRICS.get("gzsl_cal_h") or Metric("gzsl_cal_h", "calibrated GZSL H (%)", r"cal.\ $H$",
                                                   "gzsl_calibrated.harmonic")
TAG_METRICS: tuple[str | Metric, ...] = ("zero_shot", "gzsl_h", CALIBRATED_H, "gzsl_auc", "attributes", "A_T")
TAG_PLOT_METRICS: tuple[str | Metric, ...] = ("zero_shot", "gzsl_h", CALIBRATED_H, "attributes")
NAMES = {RATE_KEY: "tagged", NOISE_KEY: "wrong", "learner.attribute_targets": "targets"}
# The cells the paper compares: clean, complete tags, and issue 11's point (30% of the training images
# tagged, 20% of the tags wrong), where zero-shot should reach TAG_GOAL; for both attribute targets.
TAG_ROLES = {"clean": (1.0, 0.0), "target": (0.3, 0.2)}
TAG_GOAL = 0.75
TAG_COMPARED = ("votes", "tags")
VARIANT_LABELS = {"votes": "category votes", "tags": "own tags"}  # the figure's legend


@dataclass
class TagStudy:
    """A tags sweep, one summary per (rate, noise[, variant]) cell."""

    summaries: list[GroupSummary]
    metrics: list[Metric]
    variant_key: str | None  # the varying tag switch, if any

    @property
    def rates(self) -> list[float]:
        """Tag rates, highest (cleanest) first."""
        return sorted({float(s.group.settings[RATE_KEY]) for s in self.summaries}, reverse=True)

    @property
    def noises(self) -> list[float]:
        return sorted({float(s.group.settings[NOISE_KEY]) for s in self.summaries})

    @property
    def variants(self) -> list[str]:
        if self.variant_key is None:
            return [""]
        # The compared targets first, in TAG_COMPARED's order (the figure's solid line is the first).
        order = {v: i for i, v in enumerate(TAG_COMPARED)}
        return sorted({format_value(s.group.settings[self.variant_key]) for s in self.summaries},
                      key=lambda v: (order.get(v, len(order)), v))

    def cell(self, rate: float, noise: float, variant: str = "") -> GroupSummary | None:
        """The summary of one setting, or None when the sweep lacks it."""
        for s in self.summaries:
            g = s.group.settings
            if (float(g[RATE_KEY]) == rate and float(g[NOISE_KEY]) == noise
                    and (self.variant_key is None or format_value(g[self.variant_key]) == variant)):
                return s
        return None

    def key(self, summary: GroupSummary) -> str:
        """A cell's name, rates in percent: ``rate=30/wrong=20`` (``/targets=votes`` with a variant)."""
        g = summary.group.settings
        key = f"rate={_pct(g[RATE_KEY])}/wrong={_pct(g[NOISE_KEY])}"
        return key + (f"/{NAMES.get(self.variant_key, self.variant_key)}={format_value(g[self.variant_key])}"
                      if self.variant_key else "")

    def require(self, roles: dict[str, tuple[float, float]] = TAG_ROLES,
                variants: Sequence[str] = TAG_COMPARED) -> None:
        """Raise ValueError naming every (rate, noise, variant) cell of ``roles`` x ``variants`` the sweep lacks."""
        if self.variant_key is None or set(variants) - set(self.variants):
            raise ValueError(f"the sweep must compare learner.attribute_targets={','.join(variants)} "
                             f"(it has {', '.join(v for v in self.variants if v) or 'one value'})")
        lacking = [f"{role} (rate {rate}, wrong {noise}, targets {v})" for role, (rate, noise) in roles.items()
                   for v in variants if self.cell(rate, noise, v) is None]
        if lacking:
            raise ValueError(f"the sweep lacks the cells {'; '.join(lacking)}")

    def latex_table(self, comment: str = "") -> str:
        return latex_table(self.summaries, self.metrics, NAMES, comment)

    def markdown_table(self) -> str:
        return markdown_table(self.summaries, self.metrics, NAMES)


def tags_study(runs: Sequence[Run], metrics: Sequence[str | Metric] = TAG_METRICS) -> TagStudy:
    """Group a tags sweep's runs by tag rate and noise (and the tag switch it varies, if one).

    Raises ValueError naming the problem: runs without ``benchmark.tags`` (not a tags sweep), or other
    config keys that vary (the study would average different experiments together).
    """
    if not runs:
        raise ValueError("no runs: a tags sweep has runs over benchmark.tags.rate x benchmark.tags.wrong x seeds")
    lacking = [str(r.path) for r in runs if RATE_KEY not in r.flat or NOISE_KEY not in r.flat]
    if lacking:
        raise ValueError(f"runs without {RATE_KEY} and {NOISE_KEY} (not on a world with tag settings): "
                         f"{', '.join(lacking[:5])}")
    varying = varying_keys(runs)
    variants = [k for k in varying if k in VARIANT_KEYS]
    others = [k for k in varying if k not in (RATE_KEY, NOISE_KEY, *VARIANT_KEYS)]
    if others:
        raise ValueError(f"besides {RATE_KEY}, {NOISE_KEY} (and {', '.join(VARIANT_KEYS)}) the config keys "
                         f"{', '.join(others)} vary; a tags sweep must change only those (and the seed)")
    keys = [RATE_KEY, NOISE_KEY, *variants]
    groups = group_runs(runs, keys)
    for g in groups:  # a stable label order whatever varies: rate, noise, variant
        g.label_keys = [k for k in keys if k in g.label_keys or k in (RATE_KEY, NOISE_KEY)]
    # Cleanest first: the highest rate, then the lowest noise.
    order = {v: i for i, v in enumerate(TAG_COMPARED)}
    groups.sort(key=lambda g: (-float(g.settings[RATE_KEY]), float(g.settings[NOISE_KEY]),
                               *((order.get(format_value(g.settings[k]), len(order)), format_value(g.settings[k]))
                                 for k in variants)))
    ms = [m if isinstance(m, Metric) else get_metric(m) for m in metrics]
    return TagStudy(aggregate(groups, ms), ms, variants[0] if variants else None)


def plot_tags(study: TagStudy, stem: str | Path, metrics: Sequence[str | Metric] = TAG_PLOT_METRICS, title: str = "",
              formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """One panel per metric against the tag rate (log scale): a line per noise level (mean over seeds,
    ±std error bars), a line style per variant; the zero-shot panel shows chance as a dashed line."""
    from continual.results.figures import _colors, new_figure, save_figure

    ms = [m if isinstance(m, Metric) else get_metric(m) for m in metrics]
    fig = new_figure(4.2 * len(ms) + 1.6, 3.6)
    colors = _colors(len(study.noises))
    styles = ["-", "--", ":", "-."]
    x_all = np.array(study.rates)
    for k, m in enumerate(ms):
        ax = fig.add_subplot(1, len(ms), k + 1)
        for i, noise in enumerate(study.noises):
            for j, variant in enumerate(study.variants):
                cells = [study.cell(rate, noise, variant) for rate in study.rates]
                points = [(rate, _cell(c, m)) for rate, c in zip(study.rates, cells) if c is not None]
                points = [(rate, c) for rate, c in points if c.mean is not None]
                if not points:
                    continue
                # Lines side by side around each rate (a few % apart on the log axis), so error bars do not hide each other.
                shift = 1.0 + 0.035 * (i * len(study.variants) + j - (len(study.noises) * len(study.variants) - 1) / 2)
                x = np.array([p[0] for p in points]) * shift
                mean = np.array([p[1].mean for p in points]) * m.scale
                std = np.array([p[1].std or 0.0 for p in points]) * m.scale
                label = f"{_pct(noise)}% wrong" + (f", {VARIANT_LABELS.get(variant, variant)}" if variant else "")
                ax.errorbar(x, mean, yerr=std, color=colors[i], ls=styles[j % len(styles)], marker="o", ms=3.5,
                            lw=1.5, capsize=3, label=label)
        if m.key == "zero_shot":
            chance = [c for s in study.summaries for r in s.group.runs
                      if isinstance(r.report.get("zero_shot"), dict)
                      for c in [r.report["zero_shot"].get("chance")] if c is not None]
            if chance:
                ax.axhline(100 * float(np.mean(chance)), ls="--", color="0.4", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(x_all, [_pct(r) for r in x_all])
        ax.minorticks_off()
        ax.set_xlabel("training images tagged (%, log scale)")
        ax.set_ylabel(m.label)
        if m.unit == "pct":
            ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(m.label.rsplit(" (", 1)[0], fontsize=10)
        if k == len(ms) - 1:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title or "learning attributes from noisy tags (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem, formats)


def _pct(share: float) -> str:
    """``0.3`` -> ``30``: a share as the percent the paper prints."""
    return format_value(round(100 * float(share), 6))


def _cell(summary: GroupSummary, metric: Metric) -> Cell:
    """The summary's cell for ``metric``, computed from its runs when it was aggregated without it."""
    cell = summary.cells.get(metric.key)
    return cell if cell is not None else summarize([metric_value(r.report, metric) for r in summary.group.runs])
