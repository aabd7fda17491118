"""The diversity axis of the scaling study: n = trained categories (n_experiences × categories_per_experience,
read from each run's config), on fake sweeps with known answers, and its experiment config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from continual.metrics.report import write_json_atomic
from continual.results import (
    AXES, DIVERSITY_METRICS, collect_runs, get_axis, scaling_per_n_table, scaling_study, scaling_to_dict,
)
from tests.conftest import compose_config
from tests.test_results import fake_sweep, load_script

scaling_cli = load_script("scaling")
PER_EXPERIENCE = (4, 8, 16, 32, 48)  # x 5 experiences: 20 .. 240 categories


def _diversity_sweep(root: Path, cells, seeds=(0, 1, 2)) -> list[Path]:
    """A sweep whose zero-shot is exactly 0.3 + 0.25 log10(trained categories) + 0.01 * seed, H follows
    log10 of the categories per experience instead (so the two axes give different fits), and the
    attribute accuracy is 0.9 everywhere."""
    paths = fake_sweep(root, cells, seeds, np.random.default_rng(3))
    for p in paths:
        cfg, rep = (json.loads((p / f).read_text()) for f in ("config.json", "report.json"))
        b = cfg["benchmark"]
        trained = b["n_experiences"] * b["categories_per_experience"]
        rep["zero_shot"]["accuracy"] = 0.3 + 0.25 * math.log10(trained) + 0.01 * cfg["seed"]
        rep["gzsl"]["harmonic"] = 0.1 * math.log10(b["categories_per_experience"])
        rep["attribute_accuracy"]["mean"] = 0.9
        write_json_atomic(rep, p / "report.json")
    return paths


def test_axes_by_name_key_and_product():
    assert AXES["categories"].keys == ("benchmark.n_experiences", "benchmark.categories_per_experience")
    assert AXES["categories"].metrics == DIVERSITY_METRICS == ("zero_shot", "gzsl_h", "gzsl_cal_h", "gzsl_auc",
                                                               "gzsl_cal_auc", "attributes", "A_T")
    assert get_axis("images").keys == ("benchmark.train_per_category",)
    assert get_axis("benchmark.train_per_category").label == AXES["images"].label  # today's plot label
    product = get_axis("benchmark.n_experiences*benchmark.categories_per_experience")
    assert product.keys == AXES["categories"].keys
    with pytest.raises(ValueError, match="unknown scaling axis 'diversity'; known: images, categories"):
        get_axis("diversity")


def test_fit_is_against_trained_categories_not_a_single_key(tmp_path):
    root = tmp_path / "sweep"
    _diversity_sweep(root, [{"benchmark__n_experiences": 5, "benchmark__categories_per_experience": k}
                            for k in PER_EXPERIENCE])
    runs = collect_runs(root).runs
    results = {r.metric.key: r for r in scaling_study(runs, axis="categories")}
    assert list(results) == list(DIVERSITY_METRICS)  # the axis' own metrics by default
    zs = results["zero_shot"]
    assert [p["n"] for p in zs.per_n] == [20, 40, 80, 160, 240] and all(p["count"] == 3 for p in zs.per_n)
    # Seeds add 0, .01, .02: the mean over seeds is .01 above the line at n = 1, the slope is exact.
    assert zs.fit.b == pytest.approx(0.25) and zs.fit.a == pytest.approx(0.31)
    assert zs.per_n[1]["mean"] == pytest.approx(0.31 + 0.25 * math.log10(40))
    assert zs.per_n[1]["std"] == pytest.approx(0.01)
    # A fit against categories_per_experience alone would put the intercept elsewhere (n 5x smaller).
    wrong = {r.metric.key: r for r in scaling_study(runs, ["zero_shot"], "benchmark.categories_per_experience")}
    assert wrong["zero_shot"].fit.a == pytest.approx(0.31 + 0.25 * math.log10(5))
    # H follows log10(categories per experience) = log10(n) - log10(5): same slope, shifted intercept.
    h = results["gzsl_h"].fit
    assert h.b == pytest.approx(0.1) and h.a == pytest.approx(-0.1 * math.log10(5))
    assert results["attributes"].fit.b == pytest.approx(0.0, abs=1e-12) and math.isnan(results["attributes"].fit.r2)
    data = scaling_to_dict(list(results.values()), "categories")
    assert data["axis"] == "categories"
    assert data["x_key"] == "benchmark.n_experiences*benchmark.categories_per_experience"
    table = scaling_per_n_table(list(results.values()), "categories", "latex")
    row40 = next(line for line in table.splitlines() if line.startswith("40 & 3 &"))
    assert f"${100 * (0.31 + 0.25 * math.log10(40)):.1f} \\pm 1.0$" in row40


def test_the_other_design_varying_experiences_gives_the_same_n(tmp_path):
    """8 categories per experience, 2..30 experiences: n is still the number of trained categories."""
    root = tmp_path / "sweep"
    _diversity_sweep(root, [{"benchmark__n_experiences": e, "benchmark__categories_per_experience": 8}
                            for e in (2, 5, 10, 20, 30)], seeds=(0, 1))
    (zs,) = scaling_study(collect_runs(root).runs, ["zero_shot"], "categories")
    assert [p["n"] for p in zs.per_n] == [16, 40, 80, 160, 240] and zs.fit.b == pytest.approx(0.25)


def test_diversity_script_and_refusals(tmp_path, capsys):
    root = tmp_path / "sweep"
    _diversity_sweep(root, [{"benchmark__n_experiences": 5, "benchmark__categories_per_experience": k}
                            for k in (4, 8, 16, 32)], seeds=(0, 1))
    out = tmp_path / "out"
    assert scaling_cli.main([str(root), "--axis", "categories", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| zero-shot | 30.5 | +25.0 | 1.000 |" not in printed  # seeds differ: R² < 1
    assert "| zero-shot | 30.5 | +25.0 |" in printed and "| GZSL H | -7.0 | +10.0 | 1.000 | 8 |" in printed
    assert "trained categories = `benchmark.n_experiences` × `benchmark.categories_per_experience`" in printed
    assert {p.name for p in out.iterdir()} == {f"scaling.{x}" for x in ("json", "md", "tex", "pdf", "png")}
    assert (out / "scaling.md").read_text().startswith("# Scaling with diversity")
    assert json.loads((out / "scaling.json").read_text())["metrics"]["zero_shot"]["fit"]["b"] == pytest.approx(0.25)

    # 5 x 8 and 10 x 4 are both 40 categories, but different streams: refused, not pooled.
    fake_sweep(tmp_path / "mixed", [{"benchmark__n_experiences": e, "benchmark__categories_per_experience": k}
                                    for e, k in ((5, 8), (10, 4), (5, 16))], [0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="differ between runs of the same n = 40"):
        scaling_study(collect_runs(tmp_path / "mixed").runs, axis="categories")
    # A run without the keys (Omniglot has no categories_per_experience) is named.
    fake_sweep(tmp_path / "omni", [{"benchmark__categories_per_experience": None}], [0], np.random.default_rng(0))
    assert scaling_cli.main([str(tmp_path / "omni"), "--axis", "categories"]) == 1
    err = capsys.readouterr().err
    assert "no numeric benchmark.n_experiences and benchmark.categories_per_experience in config.json" in err
    assert scaling_cli.main([str(root), "--axis", "nonsense"]) == 1
    assert "unknown scaling axis 'nonsense'" in capsys.readouterr().err


def test_experiment_config_varies_diversity_not_tasks_or_compute():
    """Every point of the sweep: 5 experiences, 100 images per category, no step floor (so steps per category
    stay 4 epochs x 100 images / batch), trained categories 20..240 plus 10 held out within the world."""
    from tests.test_config import _sweep_params

    params = _sweep_params("scaling_diversity")
    assert params["seed"] == ["0", "1", "2", "3", "4"]
    trained = []
    for k in params["benchmark.categories_per_experience"]:
        cfg = compose_config(["experiment=scaling_diversity", f"benchmark.categories_per_experience={k}"])
        b = cfg["benchmark"]
        assert b["n_experiences"] == 5 and b["train_per_category"] == 100 and b["n_heldout"] == 10
        assert cfg["train"]["min_steps"] == 0 and cfg["threads"] == 1
        trained.append(b["n_experiences"] * b["categories_per_experience"])
        assert trained[-1] + b["n_heldout"] <= 256
    assert trained == [20, 40, 80, 160, 240]
