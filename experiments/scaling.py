"""Accuracy against the data: ``python experiments/scaling.py SWEEP_DIR [--axis images|categories] [--out DIR]``

Two sweeps, two axes. ``--axis images`` (the default): training images per category, from
``python experiments/train.py -m experiment=scaling hydra.sweep.dir=SWEEP_DIR``; fits the final
average accuracy A_T, zero-shot accuracy and few-shot 1-shot accuracy. ``--axis categories``: the
number of trained categories (n_experiences × categories_per_experience) at fixed images per
category, from ``experiment=scaling_diversity``; fits zero-shot, GZSL H, AUSUC, attribute accuracy
and A_T. Either fits ``metric = a + b · log10(n)`` by least squares over every (n, seed) run; prints
a, b (points per tenfold n) and R², mean ± std per n, and where the line bends; writes
``scaling.json``, ``scaling.md``, ``scaling.tex`` and ``scaling.pdf``/``.png`` into ``--out``
(default ``SWEEP_DIR/report``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from continual.logging.run_folder import write_text_atomic  # noqa: E402
from continual.metrics.report import write_json_atomic  # noqa: E402
from continual.results import (  # noqa: E402
    AXES, collect_runs, get_axis, plot_scaling, scaling_latex_table, scaling_markdown, scaling_per_n_table,
    scaling_study, scaling_to_dict,
)


def main(argv: list[str] | None = None) -> int:
    """Fit, print and write; returns the exit status (1 with a message on any unusable sweep)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the scaling sweep folder (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <sweep>/report)")
    parser.add_argument("--axis", "--x-key", dest="axis", default="images",
                        help=f"what n is: {', '.join(AXES)}, a dotted config key, or a product of keys a*b "
                             f"(default: images)")
    parser.add_argument("--metrics", nargs="+", default=None, help="metric keys (default: the axis' own)")
    args = parser.parse_args(argv)
    try:
        axis = get_axis(args.axis)
        collection = collect_runs(args.sweep)
        for u in collection.unfinished:
            print(f"WARNING: unfinished, left out: {u}")
        if not collection.runs:
            raise ValueError(f"no completed run (a run folder with report.json) under {args.sweep}")
        results = scaling_study(collection.runs, args.metrics, axis)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 1

    md = scaling_markdown(results, axis)
    per_n = scaling_per_n_table(results, axis)
    print(f"{len(collection.runs)} completed runs under {args.sweep}\n")
    print(md + "\n\nMean ± sample std over seeds:\n\n" + per_n)
    out = args.out or args.sweep / "report"
    write_json_atomic(scaling_to_dict(results, axis), out / "scaling.json")
    write_text_atomic(f"# {axis.title}\n\n{md}\n\n{per_n}\n", out / "scaling.md")
    write_text_atomic(scaling_latex_table(results), out / "scaling.tex")
    figures = plot_scaling(results, out / "scaling", axis)
    print(f"\nwrote {out / 'scaling.json'}, {out / 'scaling.md'}, {out / 'scaling.tex'}, "
          f"{', '.join(map(str, figures))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
