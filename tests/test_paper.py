"""experiments/paper.py on a tiny fake results tree: it produces every file and number paper/main.tex uses,
names a missing sweep and its command, and catches a main.tex that asks for something it does not make."""

from __future__ import annotations

import json

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from continual.results import Run, collect_runs
from tests.conftest import ROOT
from tests.test_results import fake_paper_results, fake_sweep, load_script

paper = load_script("paper")
MAIN_TEX = ROOT / "paper" / "main.tex"
_DEF = re.compile(r"\\DefResult\{([^}]*)\}\{(.*)\}$")


def _numbers(path: Path) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in path.read_text().splitlines() if (m := _DEF.match(line))}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """The fake results tree and what the generator wrote from it, checked against the real main.tex."""
    base = tmp_path_factory.mktemp("paper")
    results = fake_paper_results(base / "results", np.random.default_rng(0))
    out = base / "generated"
    written = paper.generate(results, out, MAIN_TEX)
    return results, out, written


def test_generator_produces_everything_main_tex_uses(generated):
    results, out, written = generated
    files, keys = paper.tex_requirements(MAIN_TEX.read_text())
    # main.tex really uses the generated tree: tables, figures and numbers (guards against a parser that finds nothing).
    assert {"generated/numbers.tex", "generated/ablation_table.tex", "generated/baselines_table.tex",
            "generated/init_table.tex", "generated/scaling.pdf", "generated/accuracy_curves.pdf"} <= files
    assert {"child/AT/pm", "scaling/AT/b", "setup/experiences", "init/on/k0/pm", "init/AT/cmp", "runs/devices"} <= keys
    for f in files:
        assert (out / f.split("/", 1)[1]).is_file(), f
    numbers = _numbers(out / "numbers.tex")
    assert keys <= set(numbers)
    assert {p.name for p in written} >= {f.split("/", 1)[1] for f in files}
    # The numbers are the runs' numbers: the child's A_T is the mean over its baseline runs.
    child = [r for r in collect_runs(results / "baselines").runs if r.config["learner"]["name"] == "child"]
    a_t = [r.report["average_accuracy"] for r in child]
    assert numbers["child/AT"] == f"{100 * np.mean(a_t):.1f}"
    assert numbers["child/AT/std"] == f"{100 * np.std(a_t, ddof=1):.1f}"
    assert numbers["child/AT/pm"] == rf"{numbers['child/AT']}\,$\pm$\,{numbers['child/AT/std']}"
    assert numbers["baselines/best/name"] == r"er\_ace"  # joint is an upper bound, not the best baseline
    assert numbers["omniglot/nway"] == "20" and numbers["ablation/memories"] == "0, 200"
    assert numbers["scaling/ns"] == "5, 10, 50, 100"
    # Every sweep's runs and the device setting of their configs (the fake baselines ran with device=cuda).
    assert numbers["runs/devices"] == (r"ablation: 8 runs, device auto; init\_ablation: 4 runs, device auto; "
                                       "baselines: 6 runs, device cuda; scaling: 8 runs, device auto; "
                                       "omniglot: 2 runs, device auto")  # folders without a machine name
    assert numbers["runs/total"] == "28"


def test_init_ablation_table_and_numbers(generated):
    results, out, _ = generated
    numbers = _numbers(out / "numbers.tex")
    runs = collect_runs(results / "init_ablation").runs
    on = [r for r in runs if r.config["learner"]["attribute_init"]]
    off = [r for r in runs if not r.config["learner"]["attribute_init"]]
    assert len(on) == len(off) == 2
    for role, rs in (("on", on), ("off", off)):
        for k in ("k0", "k1", "k5", "area"):
            assert numbers[f"init/{role}/{k}"] == f"{100 * np.mean([r.report['learning_speed'][k] for r in rs]):.1f}"
        assert numbers[f"init/{role}/AT"] == f"{100 * np.mean([r.report['average_accuracy'] for r in rs]):.1f}"
        assert numbers[f"init/{role}/F"] == f"{100 * np.mean([r.report['forgetting'] for r in rs]):.1f}"
    assert numbers["init/on/k0"] == "20.0" and numbers["init/off/k0"] == "0.0"
    # Chance at k = 0: 1/(4e) categories in experience e = 1..3, averaged: (1 + 1/2 + 1/3) / 12.
    assert numbers["init/k0/chance"] == f"{100 * (1 + 1 / 2 + 1 / 3) / 12:.1f}" == "15.3"
    assert numbers["init/on/k0/vschance"] == "above" and numbers["init/off/k0/vschance"] == "below"
    assert numbers["init/seeds"] == "2" and numbers["init/runs"] == "4" and numbers["init/memory"] == "48"
    # The comparative words follow the printed numbers, whichever way they go.
    for key in ("AT", "F", "FWT", "k0", "k1", "k5", "k10", "area", "ZS"):
        a, b = float(numbers[f"init/on/{key}"]), float(numbers[f"init/off/{key}"])
        assert numbers[f"init/{key}/cmp"] == ("higher than" if a > b else "lower than" if a < b else "the same as")
        assert numbers[f"init/{key}/diff"] == f"{abs(a - b):.1f}"
        spread = max(float(numbers[f"init/on/{key}/std"]), float(numbers[f"init/off/{key}/std"]))
        assert numbers[f"init/{key}/vsstd"] == ("larger than" if abs(a - b) > spread else
                                                "smaller than" if abs(a - b) < spread else "equal to")
    assert numbers["init/k0/cmp"] == "higher than" and numbers["init/k0/diff"] == "20.0"
    table = (out / "init_table.tex").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("on &", "off &"))]
    assert [r.split(" & ")[0] for r in rows] == ["on", "off"]  # described first
    assert all(len(r.split(" & ")) == 10 for r in rows)
    assert r"\multicolumn{4}{c}{learning speed}" in table and r"\cmidrule(lr){6-9}" in table
    assert "| on | 2 |" in (out / "init_table.md").read_text()


def test_init_subsection_types_no_number():
    """The init subsection's prose takes every number from a macro (math such as $k = 0$ aside)."""
    tex = MAIN_TEX.read_text()
    start = tex.index(r"\subsection{Starting a category from its description}")
    prose = tex[start:tex.index(r"\begin{table}", start)]
    prose = re.sub(r"\\Result(PM)?\{[^}]*\}", "", paper._strip_comments(prose))
    prose = re.sub(r"\$[^$]*\$", "", prose)
    assert r"\Result" not in prose and not re.search(r"\d", prose), prose


def test_devices_names_the_machine_or_else_the_setting(tmp_path):
    def run(device, machine=None):
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        if machine:
            (folder / "git.json").write_text(json.dumps({"commit": "abc", "device": machine}))
        return Run(path=folder, config={"device": device}, flat={}, report={})

    assert paper.devices([run("cuda"), run("cuda")]) == "device cuda"
    assert paper.devices([run("cuda"), run("auto"), run("auto")]) == "device auto (2), device cuda (1)"
    assert paper.devices([Run(path=tmp_path / "none", config={}, flat={}, report={})]) == "device unset"
    h100 = "cuda (NVIDIA H100 80GB HBM3), torch 2.11.0+cu130"
    assert paper.devices([run("cuda", h100), run("cuda", h100)]) == h100  # the machine wins over the setting
    assert paper.devices([run("auto", "cpu (1 threads of 2 cores), torch 2.14.1"), run("auto")]) == (
        "cpu (1 threads of 2 cores), torch 2.14.1 (1), device auto (1)")


def test_generated_tex_files_are_well_formed(generated):
    _, out, _ = generated
    for tex in out.glob("*.tex"):
        text = tex.read_text()
        depth = 0
        for m in re.finditer(r"(?<!\\)[{}]", text):
            depth += 1 if m.group() == "{" else -1
            assert depth >= 0, tex.name
        assert depth == 0, tex.name
        if tex.name.endswith("_table.tex"):
            assert text.count(r"\begin{tabular}") == 1 and r"\bottomrule" in text


def test_missing_subfolder_is_named_with_its_command(tmp_path, capsys):
    results = fake_paper_results(tmp_path / "results", np.random.default_rng(1), seeds=(0,))
    shutil.rmtree(results / "omniglot")
    shutil.rmtree(results / "init_ablation")
    for report in (results / "scaling").rglob("report.json"):  # scaling/ exists but nothing finished
        report.unlink()
    with pytest.raises(paper.PaperError) as err:
        paper.generate(results, tmp_path / "out", MAIN_TEX)
    msg = str(err.value)
    assert f"missing {results / 'omniglot'}/" in msg and "experiment=omniglot" in msg
    assert f"hydra.sweep.dir={(results / 'omniglot').resolve()}" in msg
    assert f"missing {results / 'init_ablation'}/" in msg
    assert f"experiment=init_ablation hydra.sweep.dir={(results / 'init_ablation').resolve()}" in msg
    assert f"{results / 'scaling'}/ holds no completed run" in msg and "4 unfinished" in msg
    assert f"{results / 'ablation'}/" not in msg and "experiment=ablation " not in msg  # ablation/ is complete
    assert "make paper-results" in msg
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert paper.main(["--results", str(results), "--out", str(tmp_path / "out")]) == 1
    assert "experiment=omniglot" in capsys.readouterr().err


def test_a_main_tex_that_drifts_from_the_generator_fails(generated, tmp_path):
    results, _, _ = generated
    tex = tmp_path / "main.tex"
    tex.write_text("\n".join([
        r"\input{generated/numbers.tex}",
        r"\input{generated/ablation_table}",  # no extension: LaTeX adds .tex; produced
        r"\includegraphics[width=2cm]{generated/scaling}",  # no extension: .pdf; produced
        r"\ResultPM{child/AT} \Result{ablation/full/ZS}",
        r"\input{generated/nothing.tex}",
        r"\includegraphics[width=\textwidth]{generated/nope.pdf}",
        r"\Result{not/a/key} \ResultPM{child/nokey}",
        r"% \input{generated/commented.tex} \Result{commented}",
        r"50\% of \Result{child/F}",  # an escaped % is not a comment
    ]))
    with pytest.raises(paper.PaperError) as err:
        paper.generate(results, tmp_path / "out", tex, formats=("pdf",))
    missing = str(err.value).split("did not produce: ", 1)[1].split(", ")
    assert missing == ["file generated/nope.pdf", "file generated/nothing.tex", r"number \Result{child/nokey/pm}",
                       r"number \Result{not/a/key}"]


def test_sweeps_of_the_wrong_kind_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    results = fake_paper_results(tmp_path / "results", rng, seeds=(0,))
    shutil.rmtree(results / "omniglot")
    fake_sweep(results / "omniglot", [{}], [0], rng)  # a world run in omniglot/
    with pytest.raises(paper.PaperError, match=r"runs not on Omniglot \(benchmark.name != omniglot\)"):
        paper.generate(results, tmp_path / "out", None)
    shutil.rmtree(results / "omniglot")
    fake_sweep(results / "omniglot", [{"benchmark__name": "omniglot"}], [0], rng, {"n_way": 20})
    shutil.rmtree(results / "ablation")
    fake_sweep(results / "ablation", [{"memory__size": m, "train__epochs": e} for m, e in ((0, 1), (200, 2))], [0], rng)
    with pytest.raises(paper.PaperError, match="the config keys train.epochs vary"):
        paper.generate(results, tmp_path / "out", None)


@pytest.mark.parametrize("cells, match", [
    ([{"learner__attribute_init": True}], r"takes the values \['True'\]; the init ablation needs runs with true and"),
    ([{"learner__attribute_init": v, "learner__attribute_weight": 0} for v in (True, False)],
     r"runs without attribute heads \(learner.attribute_weight = 0\)"),
    ([{"learner__attribute_init": v, "memory__size": m} for v, m in ((True, 0), (False, 200))],
     "besides learner.attribute_init the config keys memory.size vary"),
])
def test_init_ablation_of_the_wrong_kind_is_refused(tmp_path, cells, match):
    rng = np.random.default_rng(3)
    results = fake_paper_results(tmp_path / "results", rng, seeds=(0,))
    shutil.rmtree(results / "init_ablation")
    fake_sweep(results / "init_ablation", cells, [0, 1], rng)
    with pytest.raises(paper.PaperError, match=match):
        paper.generate(results, tmp_path / "out", None)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (a TeX engine is optional)")
def test_main_tex_compiles_with_the_generated_files(generated, tmp_path):
    _, out, _ = generated
    shutil.copy(MAIN_TEX, tmp_path / "main.tex")
    shutil.copytree(out, tmp_path / "generated")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "main.pdf").read_bytes()[:5] == b"%PDF-"


def test_paper_from_real_tiny_sweeps(tmp_path):
    """The paper's own experiment configs, shrunk and run for real through Hydra's parallel launcher
    (one command per sweep, as `make paper-results` does), then the generator: every table, figure and
    number main.tex uses comes out of genuine run folders. Omniglot is faked (it needs ../shared)."""
    import os
    import sys

    tiny = ["benchmark.n_experiences=2", "benchmark.categories_per_experience=3", "benchmark.n_heldout=3",
            "benchmark.train_per_category=12", "benchmark.test_per_category=6", "train.epochs=1",
            "learner.backbone_args.width=8", "learner.backbone_args.embed_dim=16", "eval.few_shot.episodes=10",
            "eval.few_shot.n_way=3", f"benchmark.cache_dir={tmp_path / 'cache'}", "hydra.launcher.n_jobs=2"]
    sweeps = {  # the CLI grid replaces the experiment's own (smaller, same keys)
        "ablation": ["memory.size=0,24", "learner.attribute_weight=0,1", "seed=0,1"],
        "init_ablation": ["memory.size=24", "learner.attribute_init=true,false", "seed=0,1"],
        "baselines": ["memory.size=24", "learner=child,er,joint", "seed=0,1"],
        "scaling": ["benchmark.train_per_category=4,8", "train.min_steps=2", "seed=0,1"],
    }
    results = tmp_path / "results"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    for name, grid in sweeps.items():
        cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "-m", f"experiment={name}", *tiny, *grid,
               f"hydra.sweep.dir={results / name}"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        assert len(collect_runs(results / name).runs) == {"ablation": 8, "baselines": 6}.get(name, 4), name
    fake_sweep(results / "omniglot", [{"benchmark__name": "omniglot", "benchmark__heldout_per_alphabet": 3}],
               (0, 1), np.random.default_rng(0), {"n_way": 20})
    written = paper.generate(results, tmp_path / "generated", MAIN_TEX)  # raises if main.tex asks for more
    files, keys = paper.tex_requirements(MAIN_TEX.read_text())
    assert all((tmp_path / "generated" / f.split("/", 1)[1]).is_file() for f in files)
    numbers = _numbers(tmp_path / "generated" / "numbers.tex")
    child = [r for r in collect_runs(results / "baselines").runs if r.config["learner"]["name"] == "child"]
    assert numbers["child/AT"] == f"{100 * np.mean([r.report['average_accuracy'] for r in child]):.1f}"
    assert numbers["ablation/memories"] == "0, 24" and numbers["scaling/ns"] == "4, 8"
    assert len(written) >= len(files)
