"""Accuracy against training-set size: ``python experiments/scaling.py SWEEP_DIR [--out DIR]``

The sweep comes from ``python experiments/train.py -m experiment=scaling hydra.sweep.dir=SWEEP_DIR``
(``benchmark.train_per_category`` × seeds). Fits ``metric = a + b · log10(n)`` by least squares
over every (n, seed) run for the final average accuracy A_T, zero-shot accuracy and few-shot
1-shot accuracy; prints a, b (points per tenfold n) and R², and where the line bends; writes
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
    DEFAULT_SCALING_METRICS, collect_runs, plot_scaling, scaling_latex_table, scaling_markdown, scaling_study,
    scaling_to_dict,
)
from continual.results.scaling import X_KEY  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Fit, print and write; returns the exit status (1 with a message on any unusable sweep)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the scaling sweep folder (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <sweep>/report)")
    parser.add_argument("--x-key", default=X_KEY, help=f"the data-size config key (default: {X_KEY})")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_SCALING_METRICS))
    args = parser.parse_args(argv)
    try:
        collection = collect_runs(args.sweep)
        for u in collection.unfinished:
            print(f"WARNING: unfinished, left out: {u}")
        if not collection.runs:
            raise ValueError(f"no completed run (a run folder with report.json) under {args.sweep}")
        results = scaling_study(collection.runs, args.metrics, args.x_key)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 1

    md = scaling_markdown(results, args.x_key)
    print(f"{len(collection.runs)} completed runs under {args.sweep}\n")
    print(md)
    out = args.out or args.sweep / "report"
    write_json_atomic(scaling_to_dict(results, args.x_key), out / "scaling.json")
    write_text_atomic(f"# Scaling with data\n\n{md}\n", out / "scaling.md")
    write_text_atomic(scaling_latex_table(results), out / "scaling.tex")
    figures = plot_scaling(results, out / "scaling", args.x_key)
    print(f"\nwrote {out / 'scaling.json'}, {out / 'scaling.md'}, {out / 'scaling.tex'}, "
          f"{', '.join(map(str, figures))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
