"""experiments/paper.py on a tiny fake results tree: it produces every file and number paper/main.tex uses,
names a missing sweep and its command, and catches a main.tex that asks for something it does not make."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from continual.results import collect_runs
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
            "generated/scaling.pdf", "generated/accuracy_curves.pdf"} <= files
    assert {"child/AT/pm", "scaling/AT/b", "setup/experiences"} <= keys
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
    for report in (results / "scaling").rglob("report.json"):  # scaling/ exists but nothing finished
        report.unlink()
    with pytest.raises(paper.PaperError) as err:
        paper.generate(results, tmp_path / "out", MAIN_TEX)
    msg = str(err.value)
    assert f"missing {results / 'omniglot'}/" in msg and "experiment=omniglot" in msg
    assert f"hydra.sweep.dir={(results / 'omniglot').resolve()}" in msg
    assert f"{results / 'scaling'}/ holds no completed run" in msg and "4 unfinished" in msg
    assert "ablation" not in msg and "make paper-results" in msg
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


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (a TeX engine is optional)")
def test_main_tex_compiles_with_the_generated_files(generated, tmp_path):
    _, out, _ = generated
    shutil.copy(MAIN_TEX, tmp_path / "main.tex")
    shutil.copytree(out, tmp_path / "generated")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "main.pdf").read_bytes()[:5] == b"%PDF-"
