"""Every table, figure and number of ``paper/main.tex``, from run folders: ``python experiments/paper.py``

    python experiments/paper.py --results runs/paper --out paper/generated

``--results`` (default ``runs/paper``) must hold thirteen sweeps, one folder each:

    ablation/            memory.size x learner.attribute_weight x seeds
    init_ablation/       learner.attribute_init (true, false) x seeds, attribute heads on
    baselines/           learner names x seeds
    scaling/             benchmark.train_per_category x seeds
    scaling_diversity/   benchmark.categories_per_experience (5 experiences: trained categories) x seeds
    omniglot/            one or more runs with benchmark.name == omniglot
    one_look/            mechanism variants (configs/mechanism/, full and before among them) x seeds, world
    one_look_long_tail/  the same on a long-tailed world
    one_look_omniglot/   the same on Omniglot with whole alphabets held out, x alphabet folds
    online/              learners x seeds on an online (i-Blurry) stream of the world, equal memory.budget
    online_omniglot/     the same on Omniglot
    tags/                benchmark.tags.rate x benchmark.tags.wrong x learner.attribute_targets (votes, tags) x seeds
    gzsl/                eval.calibration.scores (rows, attributes) x seeds: calibrated GZSL on the default world

each produced by ``python experiments/train.py -m experiment=<name> hydra.sweep.dir=runs/paper/<name>``.
Writes into ``--out``: ``*_table.tex`` (booktabs tabulars), figures (``.pdf`` for LaTeX, ``.png``
to look at), ``numbers.tex`` (every number the prose uses, as ``\\Result{key}``) and
``manifest.json`` (which runs produced them). Then parses ``main.tex`` and fails when it uses an
``\\input{generated/...}``, ``\\includegraphics{generated/...}`` or ``\\Result{...}`` this run did
not produce, so the paper and its generator cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from continual.logging.run_folder import write_text_atomic  # noqa: E402
from continual.metrics.report import write_json_atomic  # noqa: E402
from continual.results import (  # noqa: E402
    LEARNING_SPEED_KS, ONE_LOOK_KINDS, Cell, Collection, Group, GroupSummary, Metric, Run, aggregate, collect_runs,
    format_cell, format_value, get_metric, group_runs, latex_escape, latex_table, markdown_table, one_look_study,
    plot_accuracy_curves, plot_anytime_curves, plot_bars, plot_learning_speed, plot_scaling, scaling_latex_table,
    scaling_per_n_table, scaling_study, summarize, varying_keys, warnings_for,
)
from continual.results.aggregate import metric_value  # noqa: E402
from continual.results.tags import CALIBRATED_H, TAG_COMPARED, TAG_GOAL, TAG_ROLES, plot_tags, tags_study  # noqa: E402
from continual.results.gzsl import GZSL_GOALS, GZSL_SCALES, gzsl_study  # noqa: E402

SECTIONS = ("ablation", "init_ablation", "baselines", "scaling", "scaling_diversity", "omniglot", "one_look",
            "one_look_long_tail", "one_look_omniglot", "online", "online_omniglot", "tags", "gzsl")
ABLATION_KEYS = ("memory.size", "learner.attribute_weight")
NAMES = {"memory.size": "memory", "learner.attribute_weight": "attribute weight", "learner.name": "learner"}
ABLATION_METRICS = ("A_T", "forgetting", "zero_shot", "gzsl_h", "gzsl_auc", "attributes", "few_shot_1shot")
BASELINE_METRICS = ("A_T", "forgetting", "bwt", "zero_shot", "few_shot_1shot", "wall_s")
OMNIGLOT_METRICS = ("A_T", "forgetting", "attributes", "few_shot_1shot", "few_shot_5shot")
# Every metric gets \Result{<prefix>/<short>}, \Result{<prefix>/<short>/std} and .../n.
SHORT = {"A_T": "AT", "forgetting": "F", "bwt": "BWT", "fwt": "FWT", "zero_shot": "ZS", "gzsl_h": "H",
         "gzsl_seen": "seen", "gzsl_unseen": "unseen", "gzsl_auc": "AUSUC", "attributes": "attr", "fine_grained": "fine",
         "learning_speed": "speed", "few_shot_1shot": "oneshot", "few_shot_5shot": "fiveshot", "wall_s": "wall"}
SHORT["zero_shot.chance"] = "chance"  # an ad-hoc metric (a report path): chance level of the zero-shot task
# The learning-speed curve's points, accuracy on new categories after k examples of each.
SHORT |= {f"speed_k{k}": f"k{k}" for k in LEARNING_SPEED_KS}
NUMBER_METRICS = tuple(SHORT)
# The one-look tables' other columns, numbered in their own sections (null elsewhere).
SHORT |= {"long_tail_head": "head", "long_tail_medium": "medium", "long_tail_tail": "tail", "tail_head": "tailhead",
          "lake_error": "lake", "meet_10": "meet10", "meet_50": "meet50", "meet_all": "meetall"}
# The online tables' columns (anytime accuracy, memory held at the end), numbered in their own sections.
SHORT |= {"A_AUC": "AUC", "A_last": "last", "F_last": "Flast", "memory_mb": "MB"}
_INCLUDE = re.compile(r"\\(input|include|includegraphics)\s*(?:\[[^\]]*\])?\s*\{\s*(generated/[^}]*?)\s*\}")
_RESULT = re.compile(r"\\Result(PM)?\s*\{([^}]*)\}")


class PaperError(RuntimeError):
    """The results tree or main.tex cannot produce the paper; the message says what to run."""


def command_for(section: str, results: Path) -> str:
    """The command (run from the repository root) that produces one results subfolder."""
    folder = (results / section).resolve()
    # make -C paper passes ../runs/paper; the training command runs from the root, so say it from there.
    where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    seeds = " seed=0,1,2" if section == "omniglot" else ""  # its experiment file is a single run, not a sweep
    return f"python experiments/train.py -m experiment={section}{seeds} hydra.sweep.dir={where}"


def load_sections(results: Path) -> dict[str, Collection]:
    """Collect every section's runs; one ``PaperError`` naming every missing or empty subfolder."""
    found, problems = {}, []
    for name in SECTIONS:
        folder = results / name
        if not folder.is_dir():
            problems.append(f"missing {folder}/: produce it with `{command_for(name, results)}`")
            continue
        c = collect_runs(folder)
        if not c.runs:
            problems.append(f"{folder}/ holds no completed run (report.json; {len(c.unfinished)} unfinished): "
                            f"finish it with `{command_for(name, results)}` (reruns resume)")
        found[name] = c
    if problems:
        raise PaperError("the paper's results are incomplete; from the repository root, `make paper-results` "
                         "runs every sweep, or run the missing ones:\n  "
                         + "\n  ".join(problems))
    return found


# --------------------------------------------------------------------------------------------
# numbers for the prose
# --------------------------------------------------------------------------------------------


def _fmt(x: float | None, metric: Metric) -> str:
    if x is None:
        return "n/a"
    s = f"{x * metric.scale:.{metric.decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def put_cell(nums: dict[str, str], prefix: str, cell: Cell, metric: Metric) -> None:
    """``prefix`` -> mean, ``prefix/std`` -> sample std, ``prefix/pm`` -> ``mean ± std`` (the mean
    alone from one run), ``prefix/n`` -> runs that have it; ``n/a`` where undefined."""
    mean, std = _fmt(cell.mean, metric), _fmt(cell.std, metric)
    nums[prefix] = mean
    nums[f"{prefix}/std"] = std
    nums[f"{prefix}/pm"] = mean if cell.std is None else f"{mean}\\,$\\pm$\\,{std}"
    nums[f"{prefix}/n"] = str(cell.n)


def put_summary(nums: dict[str, str], prefix: str, summary: GroupSummary) -> None:
    """Every metric of a group under ``prefix/<short name>`` (``child/AT``), and ``prefix/runs``."""
    for key, cell in summary.cells.items():
        put_cell(nums, f"{prefix}/{SHORT.get(key, key)}", cell, get_metric(key))
    nums[f"{prefix}/runs"] = str(summary.n_runs)


def _seeds_text(c: Collection) -> str:
    return str(len({r.seed for r in c.runs}))


def _list(values: Sequence[Any]) -> str:
    return latex_escape(", ".join(format_value(v) for v in values))


def _ways(runs: Sequence[Run]) -> str:
    """The N of the N-way few-shot episodes the runs evaluated (from the reports: the config's n_way
    is clipped to the number of never-trained categories)."""
    ways = sorted({v["n_way"] for r in runs for v in (r.report.get("few_shot") or {}).values()
                   if isinstance(v, dict) and v.get("n_way")})
    return _list(ways) if ways else "n/a"


def _rounded(x: float | None, metric: Metric) -> float | None:
    """The value as the paper prints it (one decimal, display units), for comparisons that match the print."""
    return None if x is None else float(_fmt(x, metric))


def _compare(a: float | None, b: float | None, words: tuple[str, str, str]) -> str:
    """``words[0]`` if a > b, ``words[1]`` if a < b, ``words[2]`` if equal; ``n/a`` if either is missing."""
    if a is None or b is None:
        return "n/a"
    return words[0] if a > b else words[1] if a < b else words[2]


def put_comparisons(nums: dict[str, str], prefix: str, a: GroupSummary, b: GroupSummary,
                    metrics: Sequence[Metric]) -> None:
    """For every metric, how group ``a`` compares with ``b`` by the printed means: ``prefix/<short>/cmp``
    (``higher than`` / ``lower than`` / ``the same as``), ``/diff`` (the printed difference) and ``/vsstd``
    (whether that difference is larger than the larger of the two sample stds over seeds), so the prose
    never asserts a direction the numbers contradict."""
    for m in metrics:
        x, y = (_rounded(s.cells[m.key].mean, m) for s in (a, b))
        short = f"{prefix}/{SHORT.get(m.key, m.key)}"
        nums[f"{short}/cmp"] = _compare(x, y, ("higher than", "lower than", "the same as"))
        nums[f"{short}/diff"] = "n/a" if x is None or y is None else _fmt(abs(x - y) / m.scale, m)
        stds = [_rounded(s.cells[m.key].std, m) for s in (a, b)]
        spread = None if None in stds else max(stds)
        nums[f"{short}/vsstd"] = ("not comparable to" if spread is None or x is None or y is None else
                                  _compare(abs(x - y), spread, ("larger than", "smaller than", "equal to")))


# --------------------------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------------------------


def ablation(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Memory size x attribute weight: table, numbers per cell and per role, curves, zero-shot bars."""
    groups = group_runs(c.runs, list(ABLATION_KEYS))
    others = [k for k in varying_keys(c.runs) if k not in ABLATION_KEYS]
    if others:
        raise PaperError(f"{c.roots[0]}: besides {', '.join(ABLATION_KEYS)} the config keys {', '.join(others)} "
                         f"vary; the ablation sweep must change only those two (and the seed)")
    summaries = aggregate(groups, NUMBER_METRICS)
    for s in summaries:
        mem, attr = (format_value(s.group.settings[k]) for k in ABLATION_KEYS)
        put_summary(nums, f"ablation/mem={mem}/attr={attr}", s)
    mems = sorted({s.group.settings["memory.size"] for s in summaries}, key=float)
    attrs = sorted({s.group.settings["learner.attribute_weight"] for s in summaries}, key=float)
    nums["ablation/memories"] = _list(mems)
    nums["ablation/maxmemory"] = format_value(mems[-1])
    nums["ablation/seeds"] = _seeds_text(c)
    nums["ablation/runs"] = str(len(c.runs))
    # Role names for the prose, so it need not hard-code the sweep's values: "full" is the largest
    # memory with attribute heads on; "noreplay" / "noattr" switch one of them off (value 0).
    cell = {(float(s.group.settings["memory.size"]), float(s.group.settings["learner.attribute_weight"])): s
            for s in summaries}
    full = (float(mems[-1]), float(attrs[-1]))
    roles = {"full": full, "noreplay": (0.0, full[1]), "noattr": (full[0], 0.0), "neither": (0.0, 0.0)}
    for role, key in roles.items():
        if key in cell and (role == "full" or key != full):  # a switch the sweep never turned off has no role
            put_summary(nums, f"ablation/{role}", cell[key])
    table = list(ABLATION_METRICS)
    short = {"memory.size": "memory", "learner.attribute_weight": "attr"}
    return [write_text_atomic(latex_table(aggregate(groups, table), table, NAMES, f"{len(c.runs)} runs"),
                              out / "ablation_table.tex"),
            write_text_atomic(markdown_table(aggregate(groups, table), table, NAMES) + "\n", out / "ablation_table.md"),
            *plot_accuracy_curves(summaries, out / "ablation_curves", names=short, formats=formats,
                                  title="ablation: accuracy over the stream (mean ± std over seeds)"),
            *plot_bars(summaries, ["zero_shot", "gzsl_h"], out / "zero_shot", names=short, formats=formats)]


INIT_KEY = "learner.attribute_init"
_K = {k: get_metric(f"speed_k{k}") for k in LEARNING_SPEED_KS}
# The init table's columns, with a "learning speed" header spanning the k columns and the area.
INIT_TABLE: tuple[Metric, ...] = (get_metric("A_T"), get_metric("forgetting"), get_metric("fwt"), _K[0], _K[1], _K[5],
                                  Metric("learning_speed", "speed area (%)", "area", "learning_speed.area"),
                                  get_metric("zero_shot"))
INIT_SPEED_COLUMNS = (3, 6)  # INIT_TABLE[3:7] sit under "learning speed"


def _k0_chance(runs: Sequence[Run]) -> float | None:
    """Accuracy of uniform guessing on the k = 0 point of the learning-speed curve: a new experience's
    categories are picked out among every category seen so far (the new ones included), so chance is
    1/(c * e) in experience e of c categories each, averaged over the T experiences as the curve is.
    ``None`` when the runs' streams differ or their config lacks the sizes."""
    sizes = {(r.config.get("benchmark", {}).get("n_experiences"),
              r.config.get("benchmark", {}).get("categories_per_experience")) for r in runs}
    if len(sizes) != 1:
        return None
    ((T, c),) = sizes
    if not (isinstance(T, int) and isinstance(c, int) and T > 0 and c > 0):
        return None
    return sum(1 / (c * e) for e in range(1, T + 1)) / T


def init_ablation(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Description-initialised category rows on / off: table, numbers per row, and comparison words
    (generated, so the prose never asserts a direction the numbers contradict)."""
    others = [k for k in varying_keys(c.runs) if k != INIT_KEY]
    if others:
        raise PaperError(f"{c.roots[0]}: besides {INIT_KEY} the config keys {', '.join(others)} vary; "
                         f"the init ablation must change only that one (and the seed)")
    values = {r.config.get("learner", {}).get("attribute_init") for r in c.runs}
    if values != {True, False}:
        raise PaperError(f"{c.roots[0]}: {INIT_KEY} takes the values {sorted(map(str, values))}; "
                         f"the init ablation needs runs with true and with false")
    off_heads = [str(r.path) for r in c.runs if not (r.config.get("learner", {}).get("attribute_weight") or 0) > 0]
    if off_heads:  # weight 0 switches the attribute heads off, and with them the description init: no ablation
        raise PaperError(f"{c.roots[0]}: runs without attribute heads (learner.attribute_weight = 0), where "
                         f"{INIT_KEY} has no effect: {', '.join(off_heads[:5])}")
    metrics = [*NUMBER_METRICS, *(m.key for m in INIT_TABLE if m.key not in NUMBER_METRICS)]
    assert all(m.key in metrics for m in (*INIT_TABLE, _K[10]))
    groups = group_runs(c.runs, [INIT_KEY])
    by_role = {}
    for g in groups:
        role = "on" if g.runs[0].config["learner"]["attribute_init"] else "off"
        by_role[role] = Group(settings={INIT_KEY: role}, label_keys=[INIT_KEY], runs=g.runs)
    rows = aggregate([by_role["on"], by_role["off"]], metrics)
    for role, s in zip(("on", "off"), rows):
        put_summary(nums, f"init/{role}", s)
        for suffix in ("", "/std", "/pm", "/n"):  # the area under the learning-speed curve, by its name
            nums[f"init/{role}/area{suffix}"] = nums[f"init/{role}/speed{suffix}"]
    chance = _k0_chance(c.runs)
    nums["init/k0/chance"] = "n/a" if chance is None else _fmt(chance, _K[0])
    on, off = rows
    for role, s in (("on", on), ("off", off)):
        nums[f"init/{role}/k0/vschance"] = _compare(_rounded(s.cells[_K[0].key].mean, _K[0]),
                                                    _rounded(chance, _K[0]), ("above", "below", "at"))
    # For every column (and k = 10): how the description-initialised row compares with the other.
    put_comparisons(nums, "init", on, off, (*INIT_TABLE, _K[10]))
    nums["init/area/cmp"], nums["init/area/diff"], nums["init/area/vsstd"] = (
        nums["init/speed/cmp"], nums["init/speed/diff"], nums["init/speed/vsstd"])
    nums["init/seeds"] = _seeds_text(c)
    nums["init/runs"] = str(len(c.runs))
    nums["init/memory"] = _list(sorted({r.config.get("memory", {}).get("size") for r in c.runs}, key=str))
    nums["init/weight"] = _list(sorted({r.config["learner"]["attribute_weight"] for r in c.runs}, key=float))
    return [write_text_atomic(init_latex_table(rows, f"{len(c.runs)} runs"), out / "init_table.tex"),
            write_text_atomic(markdown_table(rows, INIT_TABLE, {INIT_KEY: "description init"}) + "\n",
                              out / "init_table.md")]


def init_latex_table(rows: Sequence[GroupSummary], comment: str) -> str:
    """The init ablation's booktabs tabular, with "learning speed" spanning its k columns and the area."""
    a, b = INIT_SPEED_COLUMNS
    first = 3 + a  # 1-based column: label, n, then the metrics
    n_cols = 2 + len(INIT_TABLE)
    span = (["", ""] + [""] * a + [rf"\multicolumn{{{b - a + 1}}}{{c}}{{learning speed}}"]
            + [""] * (len(INIT_TABLE) - b - 1))
    lines = [f"% generated by experiments/paper.py: {comment}; do not edit",
             r"\begin{tabular}{lr" + "c" * len(INIT_TABLE) + "}", r"\toprule",
             " & ".join(span) + rf" \\ \cmidrule(lr){{{first}-{first + b - a}}}",
             " & ".join(["description init", "$n$", *(m.latex for m in INIT_TABLE)]) + r" \\", r"\midrule"]
    for s in rows:
        cells = [str(s.group.settings[INIT_KEY]), str(s.n_runs), *(format_cell(s.cells[m.key], m, "latex")
                                                                    for m in INIT_TABLE)]
        assert len(cells) == n_cols
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def baselines(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Learners x seeds: table (best A_T first), numbers per learner, the setup from the child's config,
    accuracy curves and forgetting bars."""
    groups = group_runs(c.runs)
    by_name: dict[str, GroupSummary] = {}
    for s in aggregate(groups, NUMBER_METRICS):
        name = str(s.group.runs[0].config.get("learner", {}).get("name"))
        if name in by_name:
            raise PaperError(f"{c.roots[0]}: two groups of learner {name!r} with different configs "
                             f"({by_name[name].label} / {s.label}); the baselines sweep must vary only the learner")
        by_name[name] = s
    if "child" not in by_name:
        raise PaperError(f"{c.roots[0]}: no run of learner 'child'; the baselines sweep must include the child learner")
    ranked = sorted(by_name.values(), key=lambda s: (s.cells["A_T"].mean is None, -(s.cells["A_T"].mean or 0.0)))
    for name, s in by_name.items():
        put_summary(nums, f"baselines/{name}", s)
    put_summary(nums, "child", by_name["child"])
    others = [s for s in ranked if str(s.group.runs[0].config["learner"]["name"]) not in ("child", "joint")]
    if others:  # the strongest continual baseline; joint training is an upper bound, not a competitor
        nums["baselines/best/name"] = latex_escape(str(others[0].group.runs[0].config["learner"]["name"]))
        put_summary(nums, "baselines/best", others[0])
    nums["baselines/learners"] = str(len(by_name))
    nums["baselines/seeds"] = _seeds_text(c)
    # The setup section quotes the stream and training settings from the child runs' config.
    cfg = by_name["child"].group.runs[0].config
    bench, train, fs = cfg.get("benchmark", {}), cfg.get("train", {}), cfg.get("eval", {}).get("few_shot") or {}
    nums["setup/nway"] = _ways(by_name["child"].group.runs)
    for key, value in {"experiences": bench.get("n_experiences"), "categories": bench.get("categories_per_experience"),
                       "heldout": bench.get("n_heldout"), "train": bench.get("train_per_category"),
                       "test": bench.get("test_per_category"), "epochs": train.get("epochs"),
                       "batch": train.get("batch_size"), "memory": cfg.get("memory", {}).get("size"),
                       "episodes": fs.get("episodes"),
                       "backbone": cfg.get("learner", {}).get("backbone")}.items():
        nums[f"setup/{key}"] = latex_escape(format_value(value))
    attrs = [k for k in by_name["child"].group.runs[0].report.get("attribute_accuracy") or {} if k != "mean"]
    nums["setup/attributes"] = latex_escape(", ".join(attrs) or "none")
    table = aggregate([s.group for s in ranked], BASELINE_METRICS)  # best A_T first
    return [write_text_atomic(latex_table(table, BASELINE_METRICS, NAMES, f"{len(c.runs)} runs"),
                              out / "baselines_table.tex"),
            write_text_atomic(markdown_table(table, BASELINE_METRICS, NAMES) + "\n", out / "baselines_table.md"),
            *plot_accuracy_curves(ranked, out / "accuracy_curves", formats=formats,
                                  title="accuracy over the stream (mean ± std over seeds)"),
            *plot_bars(ranked, ["forgetting"], out / "forgetting", formats=formats)]


def scaling(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Training images per category x seeds: log-linear fits (a, b, R², bend), their table and figure."""
    try:
        results = scaling_study(c.runs)
    except ValueError as err:
        raise PaperError(f"{c.roots[0]}: {err}") from err
    ns = sorted({n for r in results for n in r.n})
    nums.update({"scaling/nmin": format_value(ns[0]), "scaling/nmax": format_value(ns[-1]),
                 "scaling/ns": _list(ns), "scaling/values": str(len(ns)), "scaling/runs": str(len(c.runs)),
                 "scaling/seeds": _seeds_text(c),
                 "scaling/minsteps": format_value(c.runs[0].config.get("train", {}).get("min_steps", 0))})
    put_fits(nums, "scaling", results)
    return [write_text_atomic(scaling_latex_table(results), out / "scaling_table.tex"),
            *plot_scaling(results, out / "scaling", formats=formats)]


def put_fits(nums: dict[str, str], prefix: str, results: Sequence[Any]) -> None:
    """Every scaling fit under ``prefix/<short>/``: ``a``, ``b`` (points per tenfold n), ``r2``, and the
    two-segment fit's ``bend``, ``below`` and ``above`` slopes; ``n/a`` where there is no fit."""
    for r in results:
        k = f"{prefix}/{SHORT.get(r.metric.key, r.metric.key)}"
        f, s = r.fit, r.segment
        nums[f"{k}/a"] = "n/a" if f is None else f"{100 * f.a:.1f}"
        nums[f"{k}/b"] = "n/a" if f is None else f"{100 * f.b:.1f}"
        nums[f"{k}/r2"] = "n/a" if f is None or f.r2 != f.r2 else f"{f.r2:.2f}"  # NaN: a constant metric
        nums[f"{k}/bend"] = "n/a" if s is None else format_value(s.breakpoint)
        nums[f"{k}/below"] = "n/a" if s is None else f"{100 * s.b_before:.1f}"
        nums[f"{k}/above"] = "n/a" if s is None else f"{100 * s.b_after:.1f}"


DIVERSITY_PER_EXPERIENCE = "benchmark.categories_per_experience"


def scaling_diversity(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Trained categories (5 experiences of 4..48 categories) x seeds at fixed images per category: the fits
    against log10(categories), their table, mean ± std per size (numbers and table) and the figure."""
    rerun = f" (`{command_for('scaling_diversity', c.roots[0].parent)}` runs it)"
    others = [k for k in varying_keys(c.runs) if k != DIVERSITY_PER_EXPERIENCE]
    if others:  # n_experiences fixed: the axis is diversity, not the number of tasks (configs/experiment/...)
        raise PaperError(f"{c.roots[0]}: besides {DIVERSITY_PER_EXPERIENCE} the config keys {', '.join(others)} "
                         f"vary; the diversity sweep must change only that one (and the seed)" + rerun)
    try:
        results = scaling_study(c.runs, axis="categories")
    except ValueError as err:
        raise PaperError(f"{c.roots[0]}: {err}" + rerun) from err
    ns = sorted({n for r in results for n in r.n})
    cfg = c.runs[0].flat
    nums.update({"diversity/nmin": format_value(ns[0]), "diversity/nmax": format_value(ns[-1]),
                 "diversity/ns": _list(ns), "diversity/values": str(len(ns)), "diversity/runs": str(len(c.runs)),
                 "diversity/seeds": _seeds_text(c),
                 "diversity/experiences": format_value(cfg.get("benchmark.n_experiences")),
                 "diversity/perexperience": _list(sorted({r.flat[DIVERSITY_PER_EXPERIENCE] for r in c.runs})),
                 "diversity/train": format_value(cfg.get("benchmark.train_per_category")),
                 "diversity/heldout": format_value(cfg.get("benchmark.n_heldout")),
                 "diversity/memory": format_value(cfg.get("memory.size")),
                 "diversity/minsteps": format_value(cfg.get("train.min_steps", 0))})
    put_fits(nums, "diversity", results)
    for r in results:  # at the smallest and the largest n: mean ± std over seeds, and the worst seed
        for end, n in (("min", ns[0]), ("max", ns[-1])):
            values = [y for x, y in zip(r.n, r.y) if x == n]
            key = f"diversity/{SHORT.get(r.metric.key, r.metric.key)}/{end}"
            put_cell(nums, key, summarize(values), r.metric)
            nums[f"{key}/worst"] = _fmt(min(values), r.metric) if values else "n/a"
    return [write_text_atomic(scaling_latex_table(results), out / "diversity_table.tex"),
            write_text_atomic(scaling_per_n_table(results, "categories", "latex"), out / "diversity_sizes_table.tex"),
            *plot_scaling(results, out / "diversity", "categories", formats=formats)]


def omniglot(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Omniglot runs (one configuration, any seeds): the table and few-shot numbers."""
    wrong = [str(r.path) for r in c.runs if r.config.get("benchmark", {}).get("name") != "omniglot"]
    if wrong:
        raise PaperError(f"{c.roots[0]}: runs not on Omniglot (benchmark.name != omniglot): {', '.join(wrong[:5])}")
    groups = group_runs(c.runs)
    if len(groups) > 1:
        raise PaperError(f"{c.roots[0]}: the Omniglot runs differ in {', '.join(groups[0].label_keys)}; "
                         f"keep one configuration (seeds may differ)")
    (s,) = aggregate(groups, NUMBER_METRICS)
    put_summary(nums, "omniglot", s)
    one = s.cells["few_shot_1shot"]
    nums["omniglot/oneshot/err"] = "n/a" if one.mean is None else f"{100 * (1 - one.mean):.1f}"
    nums["omniglot/nway"] = _ways(c.runs)
    nums["omniglot/seeds"] = _seeds_text(c)
    bench = c.runs[0].config["benchmark"]
    nums["omniglot/experiences"] = format_value(bench.get("n_experiences"))
    nums["omniglot/heldout"] = format_value(bench.get("heldout_per_alphabet"))
    return [write_text_atomic(latex_table(aggregate(groups, OMNIGLOT_METRICS), OMNIGLOT_METRICS, NAMES,
                                          f"{len(c.runs)} runs"), out / "omniglot_table.tex")]


def noisy_tags(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Tag rate x tag noise x attribute targets x seeds (``continual.results.tags``): table, figure, numbers
    per cell (``tags/rate=30/wrong=20/targets=votes/ZS``), the clean and target cells of each target
    (``tags/targets=votes/target/ZS/pm``, the worst seed, the comparison with clean and with the goal), the
    two targets compared at the target cell, and the shares of tags the runs actually drew there."""
    rerun = f" (`{command_for('tags', c.roots[0].parent)}` runs it)"
    try:
        study = tags_study(c.runs)
        study.require(TAG_ROLES, TAG_COMPARED)
    except ValueError as err:
        raise PaperError(f"{c.roots[0]}: {err}" + rerun) from err
    for s in study.summaries:
        put_summary(nums, f"tags/{study.key(s)}", s)
    zs = get_metric("zero_shot")
    at_target = {}
    for v in TAG_COMPARED:
        prefix = f"tags/targets={v}"
        cells = {role: study.cell(rate, noise, v) for role, (rate, noise) in TAG_ROLES.items()}
        for role, s in cells.items():
            put_summary(nums, f"{prefix}/{role}", s)
            put_cell(nums, f"{prefix}/{role}/calH", s.cells[CALIBRATED_H.key], CALIBRATED_H)  # a name of its own
            values = s.cells[zs.key].values
            nums[f"{prefix}/{role}/ZS/worst"] = _fmt(min(values), zs) if values else "n/a"
        put_comparisons(nums, f"{prefix}/target", cells["target"], cells["clean"], study.metrics)
        nums[f"{prefix}/target/ZS/vsgoal"] = _compare(_rounded(cells["target"].cells[zs.key].mean, zs),
                                                      _rounded(TAG_GOAL, zs), ("above", "below", "at"))
        at_target[v] = cells["target"]
    put_comparisons(nums, "tags/votes", at_target["votes"], at_target["tags"], study.metrics)  # votes vs own tags
    drawn = at_target["votes"].group.runs  # what the target cell's runs drew (report.json's tags)
    for key, path in (("tagged", "tags.images_tagged"), ("wrongshare", "tags.tags_wrong"),
                      ("votesright", "tags.description_accuracy")):
        put_cell(nums, f"tags/target/{key}", summarize([metric_value(r.report, path) for r in drawn]), get_metric(path))
    chance = summarize([metric_value(r.report, "zero_shot.chance") for r in c.runs])
    nums.update({"tags/rates": _list([round(100 * r, 6) for r in sorted(study.rates)]),
                 "tags/noises": _list([round(100 * n, 6) for n in study.noises]),
                 "tags/goal": _fmt(TAG_GOAL, zs), "tags/chance": _fmt(chance.mean, zs),
                 "tags/seeds": _seeds_text(c), "tags/runs": str(len(c.runs)),
                 "tags/target/rate": format_value(round(100 * TAG_ROLES["target"][0], 6)),
                 "tags/target/wrong": format_value(round(100 * TAG_ROLES["target"][1], 6))})
    comment = f"{len(c.runs)} runs"
    return [write_text_atomic(study.latex_table(comment), out / "tags_table.tex"),
            write_text_atomic(study.markdown_table() + "\n", out / "tags_table.md"),
            *plot_tags(study, out / "tags", formats=formats)]


# The one-look sweeps: which kind of study each folder holds, and the variants the prose compares
# (the full learner against the learner before the one-look mechanisms).
ONE_LOOK_SECTIONS = {"one_look": "world", "one_look_long_tail": "long_tail", "one_look_omniglot": "omniglot"}
ONE_LOOK_COMPARED = ("full", "before")


def one_look_builder(section: str) -> Callable[[Collection, Path, dict, Sequence[str]], list[Path]]:
    """The builder of one one-look sweep: ``continual.results.one_look_study`` groups its runs by
    mechanism variant (Omniglot's alphabet folds pooled with the seeds); here only its table, its
    numbers (``onelook/<kind>/<variant>/<short>``, ``onelook/<kind>/<short>/cmp`` full against before,
    ``onelook/<kind>/<fact>``) and, for the world, the learning-speed figure."""
    kind = ONE_LOOK_KINDS[ONE_LOOK_SECTIONS[section]]
    prefix = f"onelook/{kind.name.replace('_', '')}"

    def build(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
        try:
            study = one_look_study(c.runs, kind, require=ONE_LOOK_COMPARED, extra=NUMBER_METRICS)
        except ValueError as err:
            raise PaperError(f"{c.roots[0]}: {err} (`{command_for(section, c.roots[0].parent)}` runs it)") from err
        for s in study.summaries:
            put_summary(nums, f"{prefix}/{s.group.settings['mechanism']}", s)
        put_comparisons(nums, prefix, *(study.summary(m) for m in ONE_LOOK_COMPARED),
                        [*study.metrics, *(get_metric(m) for m in ("learning_speed", "few_shot_1shot"))])
        for key, value in study.facts.items():
            nums[f"{prefix}/{key}"] = "n/a" if value is None else _list(value if isinstance(value, list) else [value])
        comment = f"{len(c.runs)} runs"
        files = [write_text_atomic(study.latex_table(comment), out / f"{section}_table.tex"),
                 write_text_atomic(study.markdown_table() + "\n", out / f"{section}_table.md")]
        if kind.name == "world":
            files += plot_learning_speed(study.summaries, out / "learning_speed", formats=formats,
                                         title="learning speed per mechanism variant (mean ± std over seeds)")
        return files

    return build


# The online sweeps: learners compared at equal memory in bytes on a boundary-free stream.
ONLINE_SECTIONS = {"online": ("world", "online"), "online_omniglot": ("omniglot", "onlineomniglot")}
ONLINE_TABLE = ("A_AUC", "A_last", "F_last", "A_T", "zero_shot", "memory_mb")
ONLINE_COMPARED = ("child", "er")


def _anytime_every(runs: Sequence[Run]) -> str:
    """Samples between anytime points: the report's resolved interval where it records one, else the config's
    (``n/a`` for ``auto`` without a recorded interval, or when runs differ)."""
    values = {(r.report.get("anytime") or {}).get("every") or r.flat.get("eval.anytime.every") for r in runs}
    value = values.pop() if len(values) == 1 else None
    return format_value(value) if isinstance(value, int) and not isinstance(value, bool) else "n/a"


def online_builder(section: str) -> Callable[[Collection, Path, dict, Sequence[str]], list[Path]]:
    """The builder of one online sweep: one row per learner sorted by A_AUC, numbers
    (``<prefix>/<learner>/<short>``, ``<prefix>/<short>/cmp`` child against ER, the protocol's
    facts), and the anytime figure. A sweep that is not online, not at one ``memory.budget``, or
    varies anything but the learner, is refused."""
    benchmark, prefix = ONLINE_SECTIONS[section]

    def build(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
        where, rerun = f"{c.roots[0]}: ", f" (`{command_for(section, c.roots[0].parent)}` runs it)"
        wrong = [str(r.path) for r in c.runs if r.flat.get("online.mode") != "iblurry"]
        if wrong:  # the prose states the i-Blurry protocol
            raise PaperError(where + f"runs not on an i-Blurry online stream (online.mode != iblurry): "
                             f"{', '.join(wrong[:5])}" + rerun)
        budgets = sorted({format_value(r.flat.get("memory.budget")) for r in c.runs})
        if len(budgets) > 1 or budgets == ["null"]:
            raise PaperError(where + f"memory.budget is {', '.join(budgets)}; the learners must be compared at one "
                             f"memory budget in bytes" + rerun)
        wrong = [str(r.path) for r in c.runs if r.flat.get("benchmark.name") != benchmark
                 or (r.report.get("anytime") or {}).get("A_AUC") is None]
        if wrong:
            raise PaperError(where + f"runs not on {benchmark} or without anytime accuracy (eval.anytime.every=0): "
                             f"{', '.join(wrong[:5])}" + rerun)
        groups = group_runs(c.runs, ["learner.name"])
        others = {k for k in varying_keys(c.runs) if not k.startswith("learner.")}
        others |= {k for g in groups for k in varying_keys(g.runs)}  # one learner in two configs
        if others:
            raise PaperError(where + f"besides the learner the config keys {', '.join(sorted(others))} vary; "
                             f"the online sweep must vary only learner.name (and the seed)" + rerun)
        by_name: dict[str, GroupSummary] = {}
        for s in aggregate(groups, [*NUMBER_METRICS, *ONLINE_TABLE]):
            by_name[str(s.group.settings["learner.name"])] = s
        missing = [n for n in ONLINE_COMPARED if n not in by_name]
        if missing:
            raise PaperError(where + f"no run of learner {', '.join(missing)}; the online sweep must include "
                             f"{' and '.join(ONLINE_COMPARED)}, the two the prose compares" + rerun)
        ranked = sorted(by_name.values(), key=lambda s: (s.cells["A_AUC"].mean is None, -(s.cells["A_AUC"].mean or 0)))
        for rank, s in enumerate(ranked, 1):
            name = str(s.group.settings["learner.name"])
            put_summary(nums, f"{prefix}/{name}", s)
            nums[f"{prefix}/{name}/rank"] = str(rank)
        table = [get_metric(k) for k in ONLINE_TABLE]
        put_comparisons(nums, prefix, by_name["child"], by_name["er"], table)
        best = next(s for s in ranked if s is not by_name["child"])  # the strongest other learner by A_AUC
        nums[f"{prefix}/best/name"] = latex_escape(str(best.group.settings["learner.name"]))
        put_summary(nums, f"{prefix}/best", best)
        # The protocol as the runs' config states it (the checks above make it one setting for all runs).
        cfg = c.runs[0].flat
        budget = str(cfg["memory.budget"]) + ("B" if str(cfg["memory.budget"]).isdigit() else "")
        ends = sorted({p["samples"] for r in c.runs for p in r.report["anytime"].get("curve", [])[-1:]})
        nums.update({f"{prefix}/{k}": v for k, v in {
            "N": format_value(round(100 * cfg["online.disjoint_share"])),
            "M": format_value(round(100 * cfg["online.blurry_share"])),
            "segments": format_value(cfg.get("online.n_segments") or cfg.get("benchmark.n_experiences")),
            "updates": format_value(cfg.get("online.updates", 1)),
            "budget": re.sub(r"^([\d.]+)\s*", r"\1\\,", latex_escape(budget)),  # 1.5MB -> 1.5\,MB
            "every": _anytime_every(c.runs), "subsample": format_value(cfg.get("eval.subsample")),
            "samples": _list(ends), "learners": str(len(by_name)), "seeds": _seeds_text(c),
            "runs": str(len(c.runs))}.items()})
        comment = f"{len(c.runs)} runs"
        return [write_text_atomic(latex_table(ranked, table, NAMES, comment), out / f"{section}_table.tex"),
                write_text_atomic(markdown_table(ranked, table, NAMES) + "\n", out / f"{section}_table.md"),
                *plot_anytime_curves(ranked, out / f"{section}_anytime", formats=formats,
                                     title=f"anytime accuracy on {benchmark} (mean ± std over seeds)")]

    return build


def gzsl(c: Collection, out: Path, nums: dict[str, str], formats: Sequence[str]) -> list[Path]:
    """Calibrated GZSL (``continual.results.gzsl``): attribute compatibility alone against calibrated stacking on
    each common scale. Table; numbers per row and column (``gzsl/<row>/<column>``, rows ``plain``, ``prototypes``
    (the main scale), ``rows``, ``attributes``; columns seen, unseen, H, AUSUC, mH, mAUSUC, gamma), the worst seed
    of each calibrated row, the main scale against the baseline and against issue 11's targets, and the runs'
    A_T and zero-shot."""
    rerun = f" (`{command_for('gzsl', c.roots[0].parent)}` runs it)"
    try:
        study = gzsl_study(c.runs)
        main = study.row(GZSL_SCALES[0])
    except (ValueError, KeyError) as err:
        raise PaperError(f"{c.roots[0]}: {err}" + rerun) from err
    for row in study.rows:
        for column, cell in row.cells.items():
            put_cell(nums, f"gzsl/{row.name}/{column}", cell, row.metrics[column])
            if row.name != "plain":
                worst = study.worst_seed(row.name, column)
                nums[f"gzsl/{row.name}/{column}/worst"] = _fmt(worst, row.metrics[column]) if worst is not None else "n/a"
    plain = study.row("plain")
    for column in ("seen", "unseen", "H", "AUSUC", "mH", "mAUSUC"):
        m = main.metrics[column]
        a, b = _rounded(main.cells[column].mean, m), _rounded(plain.cells[column].mean, m)
        nums[f"gzsl/{column}/cmp"] = _compare(a, b, ("higher than", "lower than", "the same as"))
        nums[f"gzsl/{column}/diff"] = "n/a" if a is None or b is None else _fmt(abs(a - b) / m.scale, m)
    for column, goal in GZSL_GOALS.items():
        m = main.metrics[column]
        nums[f"gzsl/{column}/goal"] = _fmt(goal, m)
        nums[f"gzsl/{column}/vsgoal"] = _compare(_rounded(main.cells[column].mean, m), _rounded(goal, m),
                                                 ("above", "below", "at"))
    (runs,) = aggregate([Group(settings={}, label_keys=[], runs=main.runs)], ["A_T", "zero_shot"])
    put_summary(nums, "gzsl/runs", runs)  # gzsl/runs/AT, gzsl/runs/ZS (and gzsl/runs/runs)
    cfg = main.runs[0].flat
    nums.update({"gzsl/seeds": _seeds_text(c), "gzsl/n": str(len(c.runs)),
                 "gzsl/percategory": format_value(cfg.get("eval.calibration.per_category")),
                 "gzsl/seenfrom": latex_escape(format_value(cfg.get("eval.calibration.seen_from"))),
                 "gzsl/memory": format_value(cfg.get("memory.size")),
                 "gzsl/heldout": format_value(cfg.get("benchmark.n_heldout"))})
    return [write_text_atomic(study.latex_table(f"{len(c.runs)} runs"), out / "gzsl_table.tex"),
            write_text_atomic(study.markdown_table() + "\n", out / "gzsl_table.md")]


# Cheapest first: a sweep of the wrong kind fails before any figure is drawn for the others.
BUILDERS: dict[str, Callable[[Collection, Path, dict, Sequence[str]], list[Path]]] = {
    "omniglot": omniglot, "one_look_omniglot": one_look_builder("one_look_omniglot"),
    "one_look_long_tail": one_look_builder("one_look_long_tail"), "init_ablation": init_ablation,
    "online_omniglot": online_builder("online_omniglot"), "online": online_builder("online"), "ablation": ablation,
    "baselines": baselines, "scaling": scaling, "scaling_diversity": scaling_diversity,
    "one_look": one_look_builder("one_look"), "tags": noisy_tags, "gzsl": gzsl}


# --------------------------------------------------------------------------------------------
# numbers.tex and the main.tex check
# --------------------------------------------------------------------------------------------


def numbers_tex(nums: dict[str, str]) -> str:
    """``\\Result{key}`` for every number; an unknown key stops LaTeX with an error, never prints ``??``."""
    lines = [
        "% generated by experiments/paper.py from run folders; do not edit (make -C paper regenerates it)",
        r"\providecommand{\DefResult}[2]{\expandafter\def\csname result@#1\endcsname{#2}}",
        r"\providecommand{\Result}[1]{\ifcsname result@#1\endcsname\csname result@#1\endcsname"
        r"\else\PackageError{numbers}{no generated number `#1'}{Regenerate: make -C paper}\fi}",
        r"\providecommand{\ResultPM}[1]{\Result{#1/pm}}  % mean \pm sample std (the mean alone from one run)",
    ]
    lines += [f"\\DefResult{{{k}}}{{{v}}}" for k, v in sorted(nums.items())]
    return "\n".join(lines) + "\n"


def _strip_comments(tex: str) -> str:
    return "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in tex.splitlines())


def tex_requirements(tex: str) -> tuple[set[str], set[str]]:
    """The ``generated/...`` files and ``\\Result``/``\\ResultPM`` keys a LaTeX source uses (comments ignored)."""
    body = _strip_comments(tex)
    files = {m.group(2) for m in _INCLUDE.finditer(body)}
    keys = set()
    for m in _RESULT.finditer(body):
        key = m.group(2).strip()
        keys.add(f"{key}/pm" if m.group(1) else key)  # \ResultPM{k} prints k/pm: "mean ± std"
    return files, keys


def missing_requirements(tex: str, produced: set[str], nums: dict[str, str]) -> list[str]:
    """What ``tex`` uses that was not produced: ``generated/x`` matches ``x``, or ``x.tex``/``x.pdf``/``x.png``
    when written without an extension, as LaTeX looks it up."""
    files, keys = tex_requirements(tex)
    out = []
    for f in sorted(files):
        name = f.split("/", 1)[1]
        if not any(c in produced for c in (name, f"{name}.tex", f"{name}.pdf", f"{name}.png")):
            out.append(f"file {f}")
    out += [f"number \\Result{{{k}}}" for k in sorted(keys - set(nums))]
    return out


def generate(results: Path, out: Path, tex_path: Path | None = ROOT / "paper" / "main.tex",
             formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """Write everything into ``out``; check ``tex_path``'s needs against it. Returns the files written."""
    sections = load_sections(results)
    out.mkdir(parents=True, exist_ok=True)
    nums: dict[str, str] = {}
    written: list[Path] = []
    for name, build in BUILDERS.items():
        written += build(sections[name], out, nums, formats)
    all_runs = [r for c in sections.values() for r in c.runs]
    commits = sorted({str(_git(r).get("commit") or "unknown")[:10] for r in all_runs})
    dirty = any(_git(r).get("dirty") for r in all_runs)
    nums["runs/total"] = str(len(all_runs))
    nums["runs/commits"] = latex_escape(", ".join(commits))
    nums["runs/dirty"] = "yes" if dirty else "no"
    hardware = {name: devices(c.runs) for name, c in sections.items()}
    for name, c in sections.items():
        nums[f"runs/{name}/n"] = str(len(c.runs))
        nums[f"runs/{name}/device"] = latex_escape(hardware[name])
    nums["runs/devices"] = latex_escape("; ".join(f"{name}: {len(c.runs)} runs, {hardware[name]}"
                                                  for name, c in sections.items()))
    written.append(write_text_atomic(numbers_tex(nums), out / "numbers.tex"))
    warnings = [f"{name}: {w}" for name, c in sections.items() for w in
                warnings_for(aggregate(group_runs(c.runs), ["A_T"]))]
    unfinished = [str(u) for c in sections.values() for u in c.unfinished]
    write_json_atomic({"results": str(results), "sections": {
        name: {"runs": [str(r.path) for r in c.runs], "unfinished": [str(u) for u in c.unfinished],
               "device": hardware[name],
               "commits": sorted({str(_git(r).get("commit") or "unknown")[:10] for r in c.runs}),
               "source_sha256": sorted({str(_git(r).get("source_sha256") or "unknown") for r in c.runs})}
        for name, c in sections.items()}, "commits": commits, "dirty": dirty, "warnings": warnings,
        "files": sorted(p.name for p in written)}, out / "manifest.json")
    for w in warnings:
        print(f"WARNING: {w}")
    for u in unfinished:
        print(f"WARNING: unfinished, left out: {u}")
    if tex_path is not None:
        missing = missing_requirements(Path(tex_path).read_text(encoding="utf-8"), {p.name for p in written}, nums)
        if missing:
            raise PaperError(f"{tex_path} uses what the generator did not produce: {', '.join(missing)}")
    return written


def devices(runs: Sequence[Run]) -> str:
    """Where the runs ran: the machine their ``git.json`` names (``cuda (NVIDIA H100 80GB HBM3), torch
    2.11.0+cu130``), or, for folders written before it did, the config's ``device`` setting
    (``device auto``: a GPU when one was visible, else the CPU). ``a (12), b (6)`` when they differ."""
    counts = Counter(_git(r).get("device") or f"device {r.config.get('device', 'unset')}" for r in runs)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{d} ({n})" for d, n in sorted(counts.items()))


def _git(run: Run) -> dict:
    """The run's git.json (revision, dirty flag); empty when absent."""
    try:
        return json.loads((run.path / "git.json").read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "paper", help="folder of the ten sweeps")
    parser.add_argument("--out", type=Path, default=ROOT / "paper" / "generated")
    parser.add_argument("--tex", type=Path, default=ROOT / "paper" / "main.tex", help="the paper to check against")
    args = parser.parse_args(argv)
    try:
        written = generate(args.results, args.out, args.tex)
    except PaperError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files into {args.out}; every \\input, \\includegraphics and \\Result of "
          f"{args.tex} is among them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
