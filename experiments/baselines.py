"""Every registered learner on the default world stream, several seeds: a Markdown table of report cards.

    python experiments/baselines.py                          # all learners, seeds 0 1 2 (~15-25 min on 2 CPU cores)
    python experiments/baselines.py --learners er finetune --seeds 0
    python experiments/baselines.py --out runs/baselines/x   # run folders go here; rerunning resumes

Each run is ``run_experiment`` on the default configs with only ``learner``, ``seed``, ``progress=false``
and ``logger.wandb.mode=disabled`` overridden, into ``<out>/<learner>/seed<k>/``: the table is computed
from those run folders' ``report.json`` files, so it can be regenerated without training (a folder
that already holds a finished run with the same config is not run again; use a fresh ``--out`` after
changing code).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from continual.experiment import run_experiment  # noqa: E402
from continual.learner import LEARNERS  # noqa: E402


def config_for(learner: str, seed: int) -> dict:
    """The default config with this learner and seed, quiet, resolved to a plain dict."""
    overrides = [f"learner={learner}", f"seed={seed}", "progress=false", "logger.wandb.mode=disabled"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
    cache = Path(cfg["benchmark"]["cache_dir"])
    if not cache.is_absolute():  # the default cache is relative to the checkout, wherever this runs from
        cfg["benchmark"]["cache_dir"] = str(ROOT / cache)
    return cfg


def _mean_std(values: list[float | None]) -> str:
    """``mean ± std`` over seeds (sample std, n - 1), in percent; ``n/a`` when a value is missing."""
    if not values or any(v is None for v in values):
        return "n/a"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def _spread(values: list[float]) -> str:
    """``median (min-max)``: wall times on a shared machine have outliers a mean would hide behind."""
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def table(reports: dict[str, list[dict]]) -> str:
    """Markdown table, best final average accuracy first. Accuracies in percent."""
    rows = ["| learner | A_T (%) | forgetting (pts) | BWT (pts) | zero-shot (%) | wall s / run, median (min-max) |",
            "|---|---|---|---|---|---|"]
    order = sorted(reports, key=lambda n: -statistics.fmean(r["average_accuracy"] for r in reports[n]))
    for name in order:
        rs = reports[name]
        zs = [r["zero_shot"]["accuracy"] if r.get("zero_shot") else None for r in rs]
        rows.append(f"| {name} | {_mean_std([r['average_accuracy'] for r in rs])} "
                    f"| {_mean_std([r['forgetting'] for r in rs])} | {_mean_std([r['bwt'] for r in rs])} "
                    f"| {_mean_std(zs)} | {_spread([r['timing']['wall_s'] for r in rs])} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=LEARNERS.names(), choices=LEARNERS.names())
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "baselines" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    args = parser.parse_args()

    reports: dict[str, list[dict]] = {}
    for name in args.learners:
        for seed in args.seeds:
            run_dir = args.out / name / f"seed{seed}"
            card = run_experiment(config_for(name, seed), run_dir, print_fn=lambda _: None)
            reports.setdefault(name, []).append(json.loads((run_dir / "report.json").read_text()))
            print(f"{name} seed {seed}: A_T {100 * card.average_accuracy:.1f}%, "
                  f"wall {card.timing['wall_s']:.0f} s", flush=True)
    print(f"\nDefault world stream, seeds {' '.join(map(str, args.seeds))}; run folders under {args.out}\n")
    print(table(reports))


if __name__ == "__main__":
    main()
