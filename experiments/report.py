"""Tables and figures of one or more sweeps, from their run folders: ``python experiments/report.py SWEEP_DIR ...``

Examples::

    python experiments/train.py -m memory.size=0,200,1000 learner.attribute_weight=0,1 seed=0,1,2 \\
        hydra.sweep.dir=runs/ablation
    python experiments/report.py runs/ablation                       # -> runs/ablation/report/
    python experiments/report.py runs/a runs/b --out runs/ab --metrics A_T forgetting zero_shot

Runs are grouped by the config keys that vary across them (the seed aside) and averaged over seeds:
mean ± sample std, in percent. Writes ``ablation.md``, ``ablation.csv``, ``ablation.tex``,
``accuracy_curves``, ``forgetting`` and ``zero_shot`` (``.pdf`` and ``.png``) into ``--out``.
Unfinished run folders (no ``report.json``) are listed and left out; with no completed run at all
it exits with status 1.

``--wandb`` also logs the table, the figures and the files as one W&B run of job type ``report`` in
the sweep's own group (read from the runs' configs), so the dashboard that shows the sweep's runs
shows their summary beside them. Offline by default, like the runs (``--wandb-mode``, ``WANDB_MODE``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from continual.logging.run_folder import write_text_atomic  # noqa: E402
from continual.results import (  # noqa: E402
    DEFAULT_METRICS, METRICS, aggregate, collect_runs, get_metric, group_runs, markdown_table,
    plot_accuracy_curves, plot_bars, warnings_for, write_tables,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"metrics: {', '.join(METRICS)}, or a dotted path into report.json")
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (searched recursively for run folders)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first sweep>/report)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="table columns")
    parser.add_argument("--stem", default="ablation", help="file name of the tables (default: ablation)")
    parser.add_argument("--wandb", action="store_true", help="also log table, figures and files to W&B")
    parser.add_argument("--wandb-mode", default="offline", help="offline | online | disabled (WANDB_MODE wins)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Collect, print and write; returns the exit status (0, or 1 when nothing is complete)."""
    args = parse_args(argv)
    try:
        metrics = [get_metric(m) for m in args.metrics]
        collection = collect_runs(args.sweeps)
    except (KeyError, FileNotFoundError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 1
    where = ", ".join(map(str, args.sweeps))
    if collection.unfinished:
        print(f"WARNING: {len(collection.unfinished)} unfinished run folder(s), left out of every number:")
        for u in collection.unfinished:
            print(f"  {u}")
    if not collection.runs:
        print(f"error: no completed run (a run folder with report.json) under {where}"
              + (f"; {len(collection.unfinished)} unfinished" if collection.unfinished else
                 "; no run folder (config.json) at all: is this the sweep folder (hydra.sweep.dir)?"),
              file=sys.stderr)
        return 1

    groups = group_runs(collection.runs)
    summaries = aggregate(groups, metrics)
    keys = groups[0].label_keys
    table = markdown_table(summaries, metrics)
    warnings = warnings_for(summaries)
    print(f"\n{len(collection.runs)} completed run(s) under {where}, {len(groups)} group(s)"
          f"{' by ' + ', '.join(keys) if keys else ''}; mean ± std over seeds, percent\n")
    print(table)
    for w in warnings:
        print(f"WARNING: {w}")

    out = args.out or args.sweeps[0] / "report"
    notes = [f"- {w}" for w in warnings] + [f"- unfinished, left out: {u}" for u in collection.unfinished]
    md = "\n".join([
        f"# {args.stem}", "",
        f"{len(collection.runs)} completed runs under {where}; groups by {', '.join(keys) or '(nothing varies)'}; "
        "mean ± sample std over seeds; accuracies in %, forgetting/BWT/FWT in percentage points; "
        "`[n/N]`: only n of the group's N runs have the metric.", "", table, "",
        *(["## Warnings", "", *notes, ""] if notes else [])])
    paths = write_tables(summaries, out, args.stem, metrics, comment=f"{len(collection.runs)} runs under {where}")
    write_text_atomic(md, paths["md"])  # the Markdown file carries the context the bare table lacks
    figures = [
        *plot_accuracy_curves(summaries, out / "accuracy_curves"),
        *plot_bars(summaries, ["forgetting"], out / "forgetting", title="forgetting (mean ± std, dots: seeds)"),
        *plot_bars(summaries, ["zero_shot", "gzsl_h"], out / "zero_shot",
                   title="zero-shot and generalised zero-shot (mean ± std, dots: seeds)"),
    ]
    print(f"\nwrote {', '.join(str(p) for p in [*paths.values(), *figures])}")
    if args.wandb:
        log_to_wandb(collection.runs, args, out, paths, figures, metrics)
    return 0


def log_to_wandb(runs, args: argparse.Namespace, out: Path, paths: dict, figures: list[Path], metrics) -> None:
    """One W&B run for the whole report, in the group the sweep's runs logged to."""
    from continual.logging.wandb_logger import WandbLogger

    wandb_cfgs = [r.config.get("logger", {}).get("wandb", {}) for r in runs]
    groups = {c.get("group") for c in wandb_cfgs}
    group = groups.pop() if len(groups) == 1 else None  # several sweeps: no single group to join
    project = next((c["project"] for c in wandb_cfgs if c.get("project")), "continual")
    with (paths["csv"]).open(newline="") as fh:
        header, *rows = list(csv.reader(fh))
    logger = WandbLogger({"sweeps": [str(s) for s in args.sweeps], "metrics": [m.key for m in metrics],
                          "runs": len(runs)}, out, project=project, mode=args.wandb_mode, group=group,
                         name=f"report:{args.stem}", tags=["report"], job_type="report")
    try:
        logger.log_table(args.stem, header, [[_number(v) for v in row] for row in rows])
        logger.log_images({p.stem: p for p in figures if p.suffix == ".png"})
        logger.log_files([*paths.values(), *figures], name=f"report-{args.stem}-{logger.run_id}", kind="report")
    except BaseException:
        logger.finish(exit_code=1)
        raise
    logger.finish()
    print(f"W&B: report run {logger.run_id} in group {group!r} ({logger.mode})")


def _number(text: str) -> float | str | None:
    """A CSV cell as a number where it is one, so W&B can plot the column; empty (n/a) as None."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


if __name__ == "__main__":
    sys.exit(main())
