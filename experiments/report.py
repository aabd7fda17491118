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
"""

from __future__ import annotations

import argparse
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
