"""continual.results and the report/scaling scripts on fake sweeps (real ReportCards, no training) and on
two genuine tiny runs: grouping, mean ± std, unfinished runs, table formats, the log-linear fit."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pytest

from continual.metrics.report import ReportCard, write_json_atomic
from continual.results import (
    MECHANISMS, Run, aggregate, collect_runs, csv_text, fit_log_linear, fit_two_segment, flatten, format_cell,
    format_value, get_metric, group_runs, latex_escape, latex_table, learning_speed_curve, mechanism_of, metric_value,
    one_look_study, plot_learning_speed, read_csv, scaling_study, summarize, varying_keys, warnings_for, write_tables,
)
from tests.conftest import CONFIGS, ROOT, TINY, compose_config


def load_script(name: str):
    """``experiments/<name>.py`` as a module under a unique name (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_cli = load_script("report")
scaling_cli = load_script("scaling")

# ----------------------------------------------------------------------------------------------
# fake run folders (also used by tests/test_paper.py)
# ----------------------------------------------------------------------------------------------

BASE_CONFIG: dict = {
    "benchmark": {"name": "world", "n_experiences": 3, "categories_per_experience": 4, "n_heldout": 5,
                  "train_per_category": 24, "test_per_category": 8, "seed": 0, "cache_dir": "/tmp/cache"},
    "learner": {"name": "child", "backbone": "small_cnn", "attribute_weight": 1.0, "attribute_init": True, "lr": 0.002,
                "head": "cosine", "cosine_scale": 16.0, "bind": True, "bind_window": 10, "bind_protect": True,
                "description_weight": 1.0, "logit_adjustment": 1.0},
    "memory": {"size": 48},
    "logger": {"wandb": {"mode": "disabled", "project": "continual"}},
    "seed": 0, "device": "auto", "progress": False,
    "train": {"epochs": 1, "batch_size": 32},
    "eval": {"batch_size": 512, "few_shot": {"n_way": 5, "shots": [1, 5], "episodes": 600}},
}


def fake_config(seed: int = 0, **dotted: Any) -> dict:
    """``BASE_CONFIG`` with ``seed`` (and ``benchmark.seed``, as ``${seed}`` resolves) and dotted overrides
    given as ``memory__size=200`` (``__`` for the dot)."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["seed"] = seed
    cfg["benchmark"]["seed"] = seed
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def fake_report(rng: np.random.Generator, T: int = 3, attributes: bool = True, n_way: int = 5,
                level: float = 0.6, few_shot: bool = True) -> dict:
    """A real ReportCard (``from_matrix``) of a random accuracy matrix around ``level``, as a dict."""
    R = np.clip(level + rng.uniform(-0.2, 0.2, (T, T)), 0, 1)
    if not attributes:
        R[np.triu_indices(T, k=1)] = np.nan  # no zero-shot cells without attribute heads
    extra: dict[str, Any] = {"timing": {"wall_s": float(rng.uniform(10, 20))}}
    if attributes:
        s, u = float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.0, 0.3))
        extra |= {"zero_shot": {"accuracy": float(rng.uniform(0.2, 0.6)), "chance": 1 / n_way, "n_categories": n_way},
                  "gzsl": {"seen": s, "unseen": u, "harmonic": 2 * s * u / (s + u) if s + u else 0.0,
                           "auc": s * u},
                  "attribute_accuracy": {"shape": 0.5, "colour": 0.7, "mean": 0.6},
                  "fine_grained": {"accuracy": float(rng.uniform(0.5, 1)), "n_pairs": 4},
                  "learning_speed": {"k0": 0.2, "k1": 0.3, "k5": 0.4, "k10": 0.5, "area": float(rng.uniform(0.3, 0.5))}}
    if few_shot:
        extra["few_shot"] = {f"{n_way}way_{k}shot": {"accuracy": float(rng.uniform(0.4, 0.9)), "ci95": 0.01,
                                                     "n_way": n_way, "k_shot": k, "episodes": 600} for k in (1, 5)}
    baseline = [1 / n_way] * T if attributes else None
    return ReportCard.from_matrix(R, baseline, **extra).to_dict()


def write_run(folder: Path, config: Mapping, report: Mapping | None = None, commit: str = "0123456789abcdef") -> Path:
    """A run folder as ``run_experiment`` leaves it: config.json, git.json, and report.json when finished."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dict(config), folder / "config.json")
    write_json_atomic({"commit": commit, "dirty": False}, folder / "git.json")
    if report is not None:
        write_json_atomic(dict(report), folder / "report.json")
    return folder


def fake_sweep(root: Path, cells: Sequence[Mapping[str, Any]], seeds: Sequence[int], rng: np.random.Generator,
               report_kwargs: Mapping[str, Any] | None = None) -> list[Path]:
    """Hydra-style job folders ``root/0, root/1, ...``: every cell (dotted overrides) × seed, finished."""
    paths, job = [], 0
    for cell in cells:
        for seed in seeds:
            kwargs = dict(report_kwargs or {})
            if "learner__name" in cell:
                kwargs.setdefault("attributes", cell["learner__name"] == "child")
            paths.append(write_run(root / str(job), fake_config(seed, **cell), fake_report(rng, **kwargs)))
            job += 1
    return paths


def fake_paper_results(results: Path, rng: np.random.Generator, seeds: Sequence[int] = (0, 1)) -> Path:
    """The nine sweeps ``experiments/paper.py`` reads, small: 2x2 ablation, description init on/off, 3 learners
    (on device cuda, the others auto), 4 sizes, 4 numbers of trained categories (20..160), Omniglot, and the one-look variants on the world (3), the long
    tail (2) and Omniglot (3, two alphabet folds)."""
    fake_sweep(results / "ablation", [{"memory__size": m, "learner__attribute_weight": w}
                                      for m in (0, 200) for w in (0, 1.0)], seeds, rng)
    init = fake_sweep(results / "init_ablation", [{"learner__attribute_init": v} for v in (True, False)], seeds, rng)
    for p in init:  # without the description a new category starts untrained: slower learning
        cfg, report = (json.loads((p / f).read_text()) for f in ("config.json", "report.json"))
        if not cfg["learner"]["attribute_init"]:
            report["learning_speed"] = {"k0": 0.0, "k1": 0.1, "k5": 0.2, "k10": 0.4, "area": 0.22}
            write_json_atomic(report, p / "report.json")
    fake_sweep(results / "baselines", [{"learner__name": n, "device": "cuda"} for n in ("child", "er_ace", "joint")],
               seeds, rng)
    fake_sweep(results / "scaling", [{"benchmark__train_per_category": n} for n in (5, 10, 50, 100)], seeds, rng)
    fake_sweep(results / "scaling_diversity", [{"benchmark__n_experiences": 5, "benchmark__categories_per_experience": k}
                                               for k in (4, 8, 16, 32)], seeds, rng)
    fake_sweep(results / "omniglot", [{"benchmark__name": "omniglot", "benchmark__heldout_per_alphabet": 3}],
               seeds, rng, {"n_way": 20})
    fake_one_look(results / "one_look", "world", ["full", "no_bind", "before"], seeds, rng)
    fake_one_look(results / "one_look_long_tail", "long_tail", ["full", "before"], seeds, rng)
    fake_one_look(results / "one_look_omniglot", "omniglot", ["full", "no_bind", "before"], seeds, rng)
    return results


ONE_LOOK_FAKE = {"world": {}, "long_tail": {"benchmark__long_tail_exponent": 1.0},
                 "omniglot": {"benchmark__name": "omniglot", "benchmark__heldout_alphabets": 2,
                              "eval__new_domain__train_per_category": 15, "eval__new_domain__test_per_category": 5}}


def fake_one_look(root: Path, kind: str, mechanisms: Sequence[str], seeds: Sequence[int], rng: np.random.Generator,
                  folds: Sequence[int] = (0, 1)) -> list[Path]:
    """A one-look sweep (``configs/experiment/one_look*.yaml``, small): every mechanism variant x seed (x alphabet
    fold on Omniglot), configs as the variant resolves them, reports with that sweep's metrics at random values.
    Omniglot's first fold meets fewer than 50 characters (no ``50`` point), as a fold of small alphabets does."""
    from continual.results import MECHANISMS

    job, paths = 0, []
    for mech in mechanisms:
        switches = {k.replace(".", "__"): v for k, v in MECHANISMS[mech].items()}
        for fold in folds if kind == "omniglot" else [None]:
            for seed in seeds:
                cell = {**ONE_LOOK_FAKE[kind], **switches}
                if fold is not None:
                    cell["benchmark__alphabet_fold"] = fold
                report = fake_report(rng, n_way=20 if kind == "omniglot" else 5)
                k = np.sort(rng.uniform(0, 1, 4))
                report["learning_speed"] = {"k0": k[0], "k1": k[1], "k5": k[2], "k10": k[3], "area": float(k.mean())}
                if kind == "long_tail":
                    tail, medium, head = np.sort(rng.uniform(0.1, 0.9, 3))
                    report["long_tail"] = {"head": head, "medium": medium, "tail": tail,
                                           "thresholds": {"head_min_count": 50, "tail_max_count": 10}}
                if kind == "omniglot":
                    names = [f"alphabet{2 * fold}", f"alphabet{2 * fold + 1}"]
                    per = {a: float(rng.uniform(0.2, 0.8)) for a in names}
                    report["one_shot_new_alphabets"] = {"error": float(np.mean(list(per.values()))), "ci95": 0.05,
                                                        "trials": 40, "alphabets": names, "per_alphabet": per,
                                                        "n_way": 20}
                    n_all = 40 if fold == 0 else 60
                    meet = {"10": float(rng.uniform(0.5, 1)), "all": float(rng.uniform(0.3, 0.6))}
                    if n_all > 50:
                        meet["50"] = float(rng.uniform(0.4, 0.8))
                    report["one_at_a_time"] = {**meet, "n_all": n_all,
                                               "curve": {k: v for k, v in meet.items() if k != "all"}}
                paths.append(write_run(root / str(job), fake_config(seed, **cell),
                                       json.loads(json.dumps(report, default=float))))
                # As Hydra records a sweep job's overrides: the variant's name, which config.json does not hold.
                (root / str(job) / ".hydra").mkdir()
                (root / str(job) / ".hydra" / "overrides.yaml").write_text(f"- mechanism={mech}\n- seed={seed}\n")
                job += 1
    return paths


def variant_of(run_dir: Path) -> str:
    """The ``mechanism=`` override Hydra recorded for a sweep job (independent of ``mechanism_of``)."""
    lines = (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines()
    (name,) = [line.split("=", 1)[1] for line in lines if line.lstrip("- ").startswith("mechanism=")]
    return name


def _ablation(root: Path, rng: np.random.Generator, seeds: Sequence[int] = (0, 1, 2)) -> list[Path]:
    """memory.size {0, 200} x attribute weight {0, 1.0} x seeds; the int 0 of a Hydra override and
    presentation keys (progress, logger, cache path) that differ between runs must not split cells."""
    paths = fake_sweep(root, [{"memory__size": m, "learner__attribute_weight": w} for m in (0, 200) for w in (0, 1.0)],
                       seeds, rng)
    for k, p in enumerate(paths):  # vary what does not change the numbers
        cfg = json.loads((p / "config.json").read_text())
        cfg["progress"] = bool(k % 2)
        cfg["logger"]["wandb"]["mode"] = "offline" if k % 3 else "disabled"
        cfg["benchmark"]["cache_dir"] = f"/cache/{k}"
        write_json_atomic(cfg, p / "config.json")
    return paths


# ----------------------------------------------------------------------------------------------
# collect and group
# ----------------------------------------------------------------------------------------------


def test_flatten_and_format_value():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    assert [format_value(v) for v in (0, 0.0, 1.0, 0.5, 1e-3, True, None, [1, 5])] == \
        ["0", "0", "1", "0.5", "0.001", "true", "null", "[1,5]"]


def test_grouping_finds_exactly_the_varying_keys_and_ignores_seed(tmp_path):
    _ablation(tmp_path / "sweep", np.random.default_rng(0))
    runs = collect_runs(tmp_path / "sweep").runs
    assert len(runs) == 12
    # seed and benchmark.seed vary, and so do progress, logger.* and the cache path: none is a cell key.
    assert varying_keys(runs) == ["learner.attribute_weight", "memory.size"]
    groups = group_runs(runs)
    assert [g.label for g in groups] == [
        "learner.attribute_weight=0 memory.size=0", "learner.attribute_weight=0 memory.size=200",
        "learner.attribute_weight=1 memory.size=0", "learner.attribute_weight=1 memory.size=200"]
    assert all(sorted(g.seeds) == [0, 1, 2] for g in groups)
    assert all(len({r.flat["memory.size"] for r in g.runs}) == 1 for g in groups)


def test_groups_sort_numerically_and_learner_sweeps_are_labelled_by_name(tmp_path):
    rng = np.random.default_rng(1)
    fake_sweep(tmp_path / "mem", [{"memory__size": m} for m in (1000, 0, 200)], [0], rng)
    assert [g.label for g in group_runs(collect_runs(tmp_path / "mem").runs)] == \
        ["memory.size=0", "memory.size=200", "memory.size=1000"]
    # Each learner brings its own hyper-parameter keys (absent in the others): the label stays the name.
    fake_sweep(tmp_path / "learners", [{"learner__name": "er", "learner__lr": 0.1},
                                       {"learner__name": "ewc", "learner__ewc_lambda": 100.0},
                                       {"learner__name": "child"}], [0, 1], rng)
    groups = group_runs(collect_runs(tmp_path / "learners").runs)
    runs = [r for g in groups for r in g.runs]
    assert set(varying_keys(runs)) == {"learner.name", "learner.lr", "learner.ewc_lambda"}
    assert [g.label for g in groups] == ["learner.name=child", "learner.name=er", "learner.name=ewc"]


def test_unfinished_and_broken_runs_are_listed_and_never_averaged(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "sweep"
    fake_sweep(root, [{"memory__size": 0}], [0, 1], rng)
    write_run(root / "2", fake_config(2, memory__size=0))  # config.json only: killed mid-run
    (root / "3" / ".hydra").mkdir(parents=True)  # Hydra started the job, it failed before config.json
    (root / "3" / ".hydra" / "config.yaml").write_text("seed: 3\n")
    write_run(root / "4", fake_config(4, memory__size=0))
    (root / "4" / "report.json").write_text('{"average_accuracy": 0.5')  # truncated
    c = collect_runs(root)
    assert sorted(r.seed for r in c.runs) == [0, 1]
    reasons = {u.path.name: u.reason for u in c.unfinished}
    assert set(reasons) == {"2", "3", "4"}
    assert "no report.json" in reasons["2"] and "no config.json" in reasons["3"] and "unreadable" in reasons["4"]
    (s,) = aggregate(group_runs(c.runs), ["A_T"])
    assert s.n_runs == 2
    assert s.cells["A_T"].mean == pytest.approx(np.mean([r.report["average_accuracy"] for r in c.runs]))

    assert report_cli.main([str(root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "3 unfinished" in out and all(str(root / n) in out for n in ("2", "3", "4"))
    assert "unfinished, left out" in (tmp_path / "out" / "ablation.md").read_text()


def test_report_exits_nonzero_naming_the_folder_without_completed_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report_cli.main([str(tmp_path / "empty")]) == 1
    assert f"no completed run (a run folder with report.json) under {tmp_path / 'empty'}" in capsys.readouterr().err
    write_run(tmp_path / "partial" / "0", fake_config(0))
    assert report_cli.main([str(tmp_path / "partial")]) == 1
    assert "1 unfinished" in capsys.readouterr().err
    assert report_cli.main([str(tmp_path / "nowhere")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report").exists()


# ----------------------------------------------------------------------------------------------
# aggregate
# ----------------------------------------------------------------------------------------------


def test_mean_and_std_over_seeds_equal_numpy(tmp_path):
    _ablation(tmp_path / "sweep", np.random.default_rng(3))
    groups = group_runs(collect_runs(tmp_path / "sweep").runs)
    for s in aggregate(groups):
        for key, path in [("A_T", ("average_accuracy",)), ("zero_shot", ("zero_shot", "accuracy")),
                          ("gzsl_h", ("gzsl", "harmonic")), ("few_shot_1shot", ("few_shot", "5way_1shot", "accuracy")),
                          ("wall_s", ("timing", "wall_s")), ("forgetting", ("forgetting",))]:
            values = []
            for r in s.group.runs:
                node = r.report
                for p in path:
                    node = node[p]
                values.append(node)
            assert s.cells[key].n == 3
            assert s.cells[key].mean == pytest.approx(np.mean(values), abs=1e-12)
            assert s.cells[key].std == pytest.approx(np.std(values, ddof=1), abs=1e-12)


def test_missing_metrics_are_na_in_every_run_and_flagged_in_some(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "sweep"
    fake_sweep(root, [{"learner__name": "er"}], [0, 1, 2], rng)  # no attribute heads: no zero-shot
    report = json.loads((root / "2" / "report.json").read_text())
    report.pop("few_shot")  # an older run without few-shot
    write_json_atomic(report, root / "2" / "report.json")
    (s,) = aggregate(group_runs(collect_runs(root).runs))
    assert s.cells["zero_shot"].all_missing and s.cells["fwt"].all_missing
    assert format_cell(s.cells["zero_shot"], get_metric("zero_shot")) == "n/a"
    fs = s.cells["few_shot_1shot"]
    assert fs.partial and fs.n == 2 and fs.n_runs == 3
    assert format_cell(fs, get_metric("few_shot_1shot")).endswith("[2/3]")
    assert any("few_shot_1shot is missing in 1 of 3 runs" in w for w in warnings_for([s]))
    assert summarize([None, float("nan"), 0.5]).values == (0.5,)
    assert summarize([0.5]).std is None and summarize([]).mean is None
    assert metric_value({"few_shot": {"20way_1shot": {"accuracy": 0.9}}}, "few_shot_1shot") == 0.9
    with pytest.raises(KeyError, match="known: A_T"):
        get_metric("A_t")


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


def _split_row(line: str) -> list[str]:
    return re.split(r"(?<!\\)&", line.removesuffix(r"\\").strip())


def _balanced(text: str) -> bool:
    depth = 0
    for m in re.finditer(r"(?<!\\)[{}]", text):
        depth += 1 if m.group() == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def test_latex_table_parses(tmp_path):
    rng = np.random.default_rng(5)
    fake_sweep(tmp_path / "s", [{"learner__name": n} for n in ("er_ace", "child", "joint")], [0, 1], rng)
    summaries = aggregate(group_runs(collect_runs(tmp_path / "s").runs))
    tex = latex_table(summaries, names={"learner.name": "learner_name"})
    assert _balanced(tex)
    lines = tex.strip().splitlines()
    assert lines[1].startswith(r"\begin{tabular}{") and lines[-1] == r"\end{tabular}"
    assert [lines[2], lines[4], lines[-2]] == [r"\toprule", r"\midrule", r"\bottomrule"]
    spec = re.match(r"\\begin\{tabular\}\{(\w+)\}", lines[1]).group(1)
    rows = [lines[3], *lines[5:-2]]
    assert len(rows) == 1 + 3
    assert all(len(_split_row(r)) == len(spec) == 2 + len(summaries[0].cells) for r in rows)
    assert all(r.endswith(r"\\") for r in rows)
    body = "\n".join(rows)
    assert "er\\_ace" in body and "learner\\_name" in body
    assert not re.search(r"(?<!\\)_", re.sub(r"\$[^$]*\$", "", body))  # every text underscore escaped
    assert re.search(r"\$\d+\.\d \\pm \d+\.\d\$", body)  # $92.3 \pm 1.2$
    assert latex_escape("50% of a_b & {c}") == r"50\% of a\_b \& \{c\}"


def test_markdown_and_csv_tables_round_trip(tmp_path):
    _ablation(tmp_path / "sweep", np.random.default_rng(6))
    summaries = aggregate(group_runs(collect_runs(tmp_path / "sweep").runs))
    paths = write_tables(summaries, tmp_path / "out", "ablation")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ablation.csv", "ablation.md", "ablation.tex"]
    md = paths["md"].read_text().splitlines()
    assert md[0].startswith("| learner.attribute_weight | memory.size | n | A_T (%) |")
    a_t = summaries[0].cells["A_T"]
    assert f"{100 * a_t.mean:.1f} ± {100 * a_t.std:.1f}" in md[2]
    assert len(md) == 2 + len(summaries)
    rows = read_csv(paths["csv"])
    assert [r["label"] for r in rows] == [s.label for s in summaries]
    for row, s in zip(rows, summaries):
        assert row["seeds"] == "0 1 2" and int(row["n_runs"]) == 3
        for key, cell in s.cells.items():
            assert (float(row[f"{key}_mean"]) if row[f"{key}_mean"] else None) == cell.mean  # exact: repr floats
            assert (float(row[f"{key}_std"]) if row[f"{key}_std"] else None) == cell.std
            assert int(row[f"{key}_n"]) == cell.n
    assert csv_text(summaries) == paths["csv"].read_text()
    assert not list((tmp_path / "out").glob(".*tmp"))


# ----------------------------------------------------------------------------------------------
# scaling
# ----------------------------------------------------------------------------------------------


def test_log_linear_fit_recovers_a_and_b():
    n = np.repeat([5, 10, 20, 50, 100, 500], 3)
    exact = fit_log_linear(n, 0.2 + 0.15 * np.log10(n))
    assert exact.a == pytest.approx(0.2) and exact.b == pytest.approx(0.15) and exact.r2 == pytest.approx(1.0)
    noisy = fit_log_linear(n, 0.2 + 0.15 * np.log10(n) + np.random.default_rng(0).normal(0, 0.03, n.size))
    assert 0.5 < noisy.r2 < 1.0 and noisy.b == pytest.approx(0.15, abs=0.05)
    assert noisy.n_points == n.size
    # A curve that stops growing at n = 50: the two-segment fit finds the bend and both slopes.
    x = np.log10(n)
    bent = fit_two_segment(n, 0.2 + 0.15 * np.minimum(x, np.log10(50)))
    assert bent.breakpoint == pytest.approx(50) and bent.b_before == pytest.approx(0.15)
    assert bent.b_after == pytest.approx(0.0, abs=1e-9) and bent.r2 == pytest.approx(1.0)
    assert fit_two_segment([5, 10, 20], [0.1, 0.2, 0.3]) is None  # 3 distinct n: nothing to learn
    with pytest.raises(ValueError, match="at least 2 distinct n"):
        fit_log_linear([10, 10, 10], [0.1, 0.2, 0.3])


def test_scaling_study_and_script(tmp_path, capsys):
    rng = np.random.default_rng(7)
    root = tmp_path / "scaling"
    fake_sweep(root, [{"benchmark__train_per_category": n} for n in (5, 10, 50, 100)], [0, 1], rng)
    for p in root.iterdir():  # A_T = 0.1 + 0.2 log10(n) exactly
        cfg, rep = (json.loads((p / f).read_text()) for f in ("config.json", "report.json"))
        rep["average_accuracy"] = 0.1 + 0.2 * np.log10(cfg["benchmark"]["train_per_category"])
        write_json_atomic(rep, p / "report.json")
    results = scaling_study(collect_runs(root).runs)
    a_t = results[0]
    assert a_t.metric.key == "A_T" and a_t.fit.a == pytest.approx(0.1) and a_t.fit.b == pytest.approx(0.2)
    assert [p["n"] for p in a_t.per_n] == [5, 10, 50, 100] and all(p["count"] == 2 for p in a_t.per_n)
    assert results[1].metric.key == "zero_shot" and results[1].fit.r2 < 1.0

    out = tmp_path / "out"
    assert scaling_cli.main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| A_T | 10.0 | +20.0 | 1.000 | 8 |" in printed
    assert {p.name for p in out.iterdir()} == {f"scaling.{x}" for x in ("json", "md", "tex", "pdf", "png")}
    data = json.loads((out / "scaling.json").read_text())
    assert data["metrics"]["A_T"]["fit"]["b"] == pytest.approx(0.2)
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_refuses_one_n_and_mixed_experiments(tmp_path, capsys):
    rng = np.random.default_rng(8)
    fake_sweep(tmp_path / "one", [{"benchmark__train_per_category": 50}], [0, 1, 2], rng)
    assert scaling_cli.main([str(tmp_path / "one")]) == 1
    assert "1 distinct benchmark.train_per_category (50); a fit against log10(n) needs at least 2" in \
        capsys.readouterr().err
    fake_sweep(tmp_path / "mixed", [{"benchmark__train_per_category": n, "memory__size": m}
                                    for n in (10, 100) for m in (0, 200)], [0], rng)
    with pytest.raises(ValueError, match="memory.size vary within"):
        scaling_study(collect_runs(tmp_path / "mixed").runs)


# ----------------------------------------------------------------------------------------------
# the report script end to end: fake sweep, then two genuine tiny runs
# ----------------------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_script_writes_tables_and_figures(tmp_path, capsys):
    root = tmp_path / "sweep"
    _ablation(root, np.random.default_rng(9), seeds=(0, 1))
    assert report_cli.main([str(root), "--metrics", "A_T", "forgetting", "zero_shot"]) == 0
    out = root / "report"
    names = {p.name for p in out.iterdir()}
    assert {"ablation.md", "ablation.csv", "ablation.tex"} <= names
    for stem in ("accuracy_curves", "forgetting", "zero_shot"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    printed = capsys.readouterr().out
    assert "| learner.attribute_weight | memory.size | n | A_T (%) | forgetting (pts) | zero-shot (%) |" in printed
    assert len(read_csv(out / "ablation.csv")) == 4
    # Rerunning finds the same runs: the report folder inside the sweep is not mistaken for a run.
    assert report_cli.main([str(root)]) == 0 and "8 completed run(s)" in capsys.readouterr().out


def test_report_logs_table_figures_and_files_to_the_sweeps_wandb_group(tmp_path, monkeypatch, capsys):
    from continual.logging.wandb_records import find_offline_run_file, read_offline_run

    monkeypatch.delenv("WANDB_MODE", raising=False)
    root = tmp_path / "sweep"
    for p in _ablation(root, np.random.default_rng(3), seeds=(0, 1)):  # as train.py names a sweep's group
        cfg = json.loads((p / "config.json").read_text())
        cfg["logger"]["wandb"] = {"mode": "offline", "project": "cl-test", "group": "ablation:runs/x", "tags": []}
        write_json_atomic(cfg, p / "config.json")
        if cfg["learner"]["attribute_weight"] == 0:  # no heads, no zero-shot: n/a cells before numbers
            report = json.loads((p / "report.json").read_text())
            report["zero_shot"] = None
            write_json_atomic(report, p / "report.json")
    assert report_cli.main([str(root), "--metrics", "A_T", "forgetting", "zero_shot", "--wandb"]) == 0
    logged = read_offline_run(find_offline_run_file(root / "report"))
    assert logged["run"]["group"] == "ablation:runs/x" and logged["run"]["job_type"] == "report"
    assert logged["run"]["project"] == "cl-test" and logged["config"]["runs"] == 8
    table = logged["summary"]["ablation"]
    assert table["_type"] == "table-file" and table["nrows"] == 4  # one row per cell of the 2 x 2 ablation
    assert {"accuracy_curves", "forgetting", "zero_shot"} <= {k for k, v in logged["summary"].items()
                                                             if isinstance(v, dict) and v.get("_type") == "image-file"}
    (artifact,) = [a for a in logged["artifacts"] if a["type"] == "report"]
    assert {"ablation.csv", "ablation.tex", "ablation.md", "accuracy_curves.pdf"} <= set(artifact["files"])
    assert "in group 'ablation:runs/x'" in capsys.readouterr().out


def test_collects_genuine_tiny_runs(tmp_path, world_cache):
    """Two real runs (seeds 0 and 1) of the tiny config, plus one killed before its report."""
    from continual.experiment import run_experiment

    root = tmp_path / "sweep"
    cfgs = [compose_config([*TINY, f"seed={s}", "eval.few_shot.episodes=20"], world_cache) for s in (0, 1)]
    cards = [run_experiment(cfg, root / str(k), print_fn=lambda _: None) for k, cfg in enumerate(cfgs)]
    write_run(root / "2", compose_config([*TINY, "seed=2"], world_cache))
    c = collect_runs(root)
    assert [u.path.name for u in c.unfinished] == ["2"] and len(c.runs) == 2
    assert varying_keys(c.runs) == []  # seed and benchmark.seed only
    (s,) = aggregate(group_runs(c.runs))
    assert s.label == "all runs" and s.n_runs == 2
    a_t = [card.average_accuracy for card in cards]
    assert s.cells["A_T"].mean == pytest.approx(np.mean(a_t))
    assert s.cells["A_T"].std == pytest.approx(np.std(a_t, ddof=1))
    assert s.cells["zero_shot"].n == 2 and s.cells["few_shot_1shot"].n == 2  # the tiny stream's 4-way episodes
    assert report_cli.main([str(root), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "accuracy_curves.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------
# learning from one look: mechanism variants, new metrics, folds pooled
# ----------------------------------------------------------------------------------------------


def test_every_mechanism_config_reads_back_as_its_own_name():
    """A run folder holds the resolved learner, not the variant's name: each configs/mechanism/ file,
    composed, must be recognised as itself (so MECHANISMS cannot drift from the configs)."""
    assert set(MECHANISMS) == {p.stem for p in (CONFIGS / "mechanism").glob("*.yaml")}
    for name in MECHANISMS:
        cfg = compose_config([f"mechanism={name}"])
        assert mechanism_of(Run(path=Path(name), config=cfg, flat=flatten(cfg), report={})) == name
    cfg = compose_config(["mechanism=before", "learner.logit_adjustment=1.0"])  # two of before's three switches
    assert mechanism_of(Run(path=Path("x"), config=cfg, flat=flatten(cfg), report={})) is None
    old = fake_config(0)
    del old["learner"]["bind"]  # a run from before the mechanisms existed, or another learner
    assert mechanism_of(Run(path=Path("y"), config=old, flat=flatten(old), report={})) is None


def test_new_metrics_read_the_report_and_the_ratio_is_per_run():
    report = {"learning_speed": {"k0": 0.1, "k1": 0.4, "k5": 0.6, "k10": 0.7, "area": 0.5},
              "long_tail": {"head": 0.8, "medium": 0.5, "tail": 0.2},
              "one_shot_new_alphabets": {"error": 0.3}, "one_at_a_time": {"10": 0.9, "all": 0.6, "n_all": 30}}
    assert [metric_value(report, f"speed_k{k}") for k in (0, 1, 5, 10)] == [0.1, 0.4, 0.6, 0.7]
    assert metric_value(report, "tail_head") == pytest.approx(0.25)
    assert metric_value(report, "lake_error") == 0.3 and metric_value(report, "meet_all") == 0.6
    assert metric_value(report, "meet_50") is None  # fewer than 50 met: no such point
    assert metric_value({"long_tail": {"head": 0.0, "tail": 0.1}}, "tail_head") is None
    assert metric_value({"long_tail": None}, "tail_head") is None
    ratio = get_metric("tail_head")
    assert format_cell(summarize([0.25, 0.5]), ratio) == "0.38 ± 0.18" and ratio.scale == 1.0


def test_one_look_study_groups_by_variant_and_pools_alphabet_folds(tmp_path):
    rng = np.random.default_rng(10)
    fake_one_look(tmp_path / "omni", "omniglot", ["before", "full"], [0, 1], rng, folds=(0, 1))
    runs = collect_runs(tmp_path / "omni").runs
    study = one_look_study(runs, "omniglot", require=["full", "before"])
    assert study.mechanisms == ["full", "before"]  # the sweeps' order, not the folders'
    for s in study.summaries:
        mine = [r for r in runs if variant_of(r.path) == s.group.settings["mechanism"]]
        assert len(mine) == s.n_runs == 4  # 2 folds x 2 seeds in one row
        errors = [r.report["one_shot_new_alphabets"]["error"] for r in mine]
        assert s.cells["lake_error"].mean == pytest.approx(np.mean(errors))
        assert s.cells["lake_error"].std == pytest.approx(np.std(errors, ddof=1))
        assert s.cells["meet_50"].n == 2 and s.cells["meet_50"].partial  # fold 0 met only 40
    assert study.facts["folds"] == 2 and study.facts["nall"] == [40, 60] and study.facts["heldout"] == 2
    assert study.facts["alphabets"] == 4 and study.facts["trials"] == 40 and study.facts["bindwindow"] == 10
    tex = study.latex_table("8 runs")
    assert r"\multicolumn{3}{c}{met one at a time, after} \\ " in tex and r"\cmidrule(lr){5-7}" in tex
    rows = [line for line in tex.splitlines() if line.startswith(("full &", "before &"))]
    assert len(rows) == 2 and all(len(r.split(" & ")) == 7 for r in rows) and "[2/4]" in rows[0]
    # A sweep of another kind, or one without a variant the caller needs, is refused naming why.
    with pytest.raises(ValueError, match="not of the world one-look sweep.*benchmark.name is 'omniglot'"):
        one_look_study(runs, "world")
    with pytest.raises(ValueError, match="no run of mechanism no_bind"):
        one_look_study(runs, "omniglot", require=["no_bind"])


def test_one_look_study_refuses_what_is_no_variant_or_varies_besides(tmp_path):
    rng = np.random.default_rng(11)
    paths = fake_one_look(tmp_path / "w", "world", ["full", "no_bind"], [0, 1], rng)
    cfg = json.loads((paths[0] / "config.json").read_text())
    cfg["train"]["epochs"] = 7
    write_json_atomic(cfg, paths[0] / "config.json")
    with pytest.raises(ValueError, match="config keys train.epochs vary"):
        one_look_study(collect_runs(tmp_path / "w").runs, "world")
    cfg["train"]["epochs"], cfg["learner"]["head"], cfg["learner"]["bind"] = 1, "linear", False  # half of before
    write_json_atomic(cfg, paths[0] / "config.json")
    with pytest.raises(ValueError, match="no variant of configs/mechanism/"):
        one_look_study(collect_runs(tmp_path / "w").runs, "world")
    cfg["learner"]["head"], cfg["learner"]["bind"], cfg["learner"]["description_weight"] = "cosine", True, 0.5
    write_json_atomic(cfg, paths[0] / "config.json")  # still "full" by its switches, but not the same learner
    with pytest.raises(ValueError, match="runs of mechanism 'full' differ in learner.description_weight"):
        one_look_study(collect_runs(tmp_path / "w").runs, "world")
    with pytest.raises(ValueError, match="balanced"):
        one_look_study(collect_runs(tmp_path / "w").runs, "long_tail")


def test_learning_speed_curve_and_figure(tmp_path):
    fake_one_look(tmp_path / "w", "world", ["full", "before"], [0, 1, 2], np.random.default_rng(12))
    study = one_look_study(collect_runs(tmp_path / "w").runs, "world")
    for s in study.summaries:
        mean, std, count = learning_speed_curve(s.group)
        k1 = [r.report["learning_speed"]["k1"] for r in s.group.runs]
        assert mean[1] == pytest.approx(np.mean(k1)) and std[1] == pytest.approx(np.std(k1, ddof=1))
        assert list(count) == [3, 3, 3, 3] and mean[1] == pytest.approx(s.cells["speed_k1"].mean)
    paths = plot_learning_speed(study.summaries, tmp_path / "out" / "learning_speed")
    assert [p.name for p in paths] == ["learning_speed.pdf", "learning_speed.png"]
    assert paths[1].read_bytes()[:8] == PNG_MAGIC
