"""Learning from one look: the mechanism-variant sweeps (``configs/experiment/one_look*.yaml``).

Each run of these sweeps is one variant of ``configs/mechanism/`` (``mechanism=no_bind``, ...). A run
folder records the learner settings the variant resolved to, not its name, so the name is read back
from the settings: a variant is the set of mechanism switches it turns off (``MECHANISMS``), and a
run is the variant whose set is exactly the switches its config has off. Reading the name from the
evidence means a run launched as ``mechanism=full learner.bind=false`` counts as ``no_bind``, which
is what it computed.

A study groups a sweep's runs by variant (in the sweeps' order) and averages each group over seeds,
and over ``pooled`` config keys too: the Omniglot sweep's alphabet folds (the held-out alphabets),
so its numbers are means ± std over folds and seeds. Anything else that varies is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from continual.results.aggregate import GroupSummary, Metric, aggregate, get_metric
from continual.results.collect import Group, Run, format_value, varying_keys
from continual.results.tables import latex_table, markdown_table

__all__ = [
    "MECHANISMS", "MECHANISM_SWITCHES", "ONE_LOOK_KINDS", "OneLookKind", "OneLookStudy", "mechanism_of",
    "one_look_study",
]

# Every variant of configs/mechanism/ by what it switches off (dotted config key -> the value that
# switches it off), in the sweeps' order. tests/test_results.py composes each configs/mechanism/
# file and checks that it reads back as its own name, so this cannot drift from the configs.
MECHANISMS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_bind": {"learner.bind": False},
    "no_protect": {"learner.bind_protect": False},
    "no_description": {"learner.description_weight": 0.0},
    "no_logit_adjustment": {"learner.logit_adjustment": 0.0},
    "linear_head": {"learner.head": "linear"},
    "before": {"learner.head": "linear", "learner.bind": False, "learner.logit_adjustment": 0.0},
}
# The switches and their "off" values (one per key across the variants).
MECHANISM_SWITCHES: dict[str, Any] = {k: v for switches in MECHANISMS.values() for k, v in switches.items()}


def mechanism_of(run: Run) -> str | None:
    """The variant of ``MECHANISMS`` whose switched-off set is exactly the run's; ``None`` when the
    config lacks a switch (another learner, or a run from before the mechanisms) or matches none."""
    if any(k not in run.flat for k in MECHANISM_SWITCHES):
        return None
    off = {k for k, v in MECHANISM_SWITCHES.items() if format_value(run.flat[k]) == format_value(v)}
    return next((name for name, switches in MECHANISMS.items() if set(switches) == off), None)


def _benchmark(run: Run) -> Mapping[str, Any]:
    return run.config.get("benchmark") or {}


def _not_world(run: Run) -> str | None:
    b = _benchmark(run)
    if b.get("name") != "world":
        return f"benchmark.name is {b.get('name')!r}, not 'world'"
    return "long-tailed (benchmark.long_tail_exponent > 0)" if (b.get("long_tail_exponent") or 0) > 0 else None


def _not_long_tail(run: Run) -> str | None:
    b = _benchmark(run)
    if b.get("name") != "world":
        return f"benchmark.name is {b.get('name')!r}, not 'world'"
    return None if (b.get("long_tail_exponent") or 0) > 0 else "balanced (benchmark.long_tail_exponent = 0)"


def _not_omniglot_new_alphabets(run: Run) -> str | None:
    b = _benchmark(run)
    if b.get("name") != "omniglot":
        return f"benchmark.name is {b.get('name')!r}, not 'omniglot'"
    return None if (b.get("heldout_alphabets") or 0) > 0 else "no alphabet held out (benchmark.heldout_alphabets = 0)"


@dataclass(frozen=True)
class OneLookKind:
    """One of the three one-look sweeps: its table's columns and what its runs must be."""

    name: str
    experiment: str  # configs/experiment/<experiment>.yaml
    metrics: tuple[str, ...]  # table columns, keys of continual.results.METRICS
    spans: tuple[tuple[int, int, str], ...]  # header lines over metric columns (first, last, LaTeX text)
    pooled: tuple[str, ...]  # config keys averaged over, like the seed
    wrong: Callable[[Run], str | None]  # why a run does not belong to this sweep, or None


ONE_LOOK_KINDS: dict[str, OneLookKind] = {k.name: k for k in [
    OneLookKind("world", "one_look", ("A_T", "speed_k0", "speed_k1", "speed_k5", "speed_k10", "zero_shot"),
                ((1, 4, "learning speed"),), (), _not_world),
    OneLookKind("long_tail", "one_look_long_tail",
                ("A_T", "long_tail_head", "long_tail_medium", "long_tail_tail", "tail_head"),
                ((1, 3, "per-class accuracy"),), (), _not_long_tail),
    OneLookKind("omniglot", "one_look_omniglot", ("speed_k1", "lake_error", "meet_10", "meet_50", "meet_all"),
                ((0, 0, "stream"), (1, 1, "new alphabets"), (2, 4, "met one at a time, after")),
                ("benchmark.alphabet_fold",), _not_omniglot_new_alphabets),
]}


@dataclass
class OneLookStudy:
    """A one-look sweep grouped by mechanism variant: ``summaries`` (one per variant present, in
    ``MECHANISMS`` order; every table column and every ``extra`` metric), and the settings the
    prose quotes (``facts``: raw values, one per key, or a sorted list where runs differ)."""

    kind: OneLookKind
    summaries: list[GroupSummary]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[Metric]:
        return [get_metric(m) for m in self.kind.metrics]

    @property
    def mechanisms(self) -> list[str]:
        return [s.group.settings["mechanism"] for s in self.summaries]

    def summary(self, mechanism: str) -> GroupSummary:
        """The summary of one variant; ``KeyError`` naming the variants present when it is absent."""
        for s in self.summaries:
            if s.group.settings["mechanism"] == mechanism:
                return s
        raise KeyError(f"no run of mechanism {mechanism!r}; present: {', '.join(self.mechanisms)}")

    def latex_table(self, comment: str = "") -> str:
        """Booktabs tabular: mechanism, n (runs), then the kind's columns under their spans."""
        return latex_table(self.summaries, self.metrics, {"mechanism": "mechanism"}, comment, self.kind.spans)

    def markdown_table(self) -> str:
        return markdown_table(self.summaries, self.metrics, {"mechanism": "mechanism"})


def _one(values: Sequence[Any]) -> Any:
    """The value when all runs agree, else the distinct values, numbers first and in numeric order
    (``None`` when no run has one)."""
    distinct = list({format_value(v): v for v in values if v is not None}.values())
    if len(distinct) <= 1:
        return distinct[0] if distinct else None

    def order(v: Any) -> tuple:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        return (0, float(v), "") if number else (1, 0.0, format_value(v))

    return sorted(distinct, key=order)


def _facts(kind: OneLookKind, runs: Sequence[Run], groups: Sequence[Group]) -> dict[str, Any]:
    full = next((g.runs for g in groups if g.settings["mechanism"] == "full"), runs)  # the mechanisms as set
    learner = [r.config.get("learner") or {} for r in full]
    facts: dict[str, Any] = {
        "runs": len(runs), "seeds": len({format_value(r.seed) for r in runs}), "mechanisms": len(groups),
        "bindwindow": _one([c.get("bind_window") for c in learner]),
        "descweight": _one([c.get("description_weight") for c in learner]),
        "scale": _one([c.get("cosine_scale") for c in learner]),
        "tau": _one([c.get("logit_adjustment") for c in learner]),
        "experiences": _one([_benchmark(r).get("n_experiences") for r in runs]),
    }
    if kind.name == "long_tail":
        facts |= {"exponent": _one([_benchmark(r).get("long_tail_exponent") for r in runs]),
                  "nmax": _one([_benchmark(r).get("train_per_category") for r in runs]),
                  "nmin": _one([_benchmark(r).get("min_train_per_category") for r in runs])}
    if kind.name == "omniglot":
        lake = [r.report.get("one_shot_new_alphabets") or {} for r in runs]
        meet = [r.report.get("one_at_a_time") or {} for r in runs]
        new_domain = [(r.config.get("eval") or {}).get("new_domain") or {} for r in runs]
        facts |= {"folds": len({format_value(_benchmark(r).get("alphabet_fold")) for r in runs}),
                  "heldout": _one([_benchmark(r).get("heldout_alphabets") for r in runs]),
                  "alphabets": len({a for x in lake for a in x.get("alphabets") or []}),
                  "trials": _one([x.get("trials") for x in lake]), "nway": _one([x.get("n_way") for x in lake]),
                  "nall": _one([x.get("n_all") for x in meet]),
                  "meettrain": _one([c.get("train_per_category") for c in new_domain]),
                  "meettest": _one([c.get("test_per_category") for c in new_domain])}
    return facts


def one_look_study(runs: Sequence[Run], kind: str | OneLookKind, require: Sequence[str] = (),
                   extra: Sequence[str | Metric] = ()) -> OneLookStudy:
    """Group a one-look sweep's runs by mechanism variant and average them (over seeds and ``kind.pooled``).

    Raises ``ValueError`` saying what is wrong: no runs, a run of another benchmark or stream, a run
    that is no variant of ``MECHANISMS``, a config key other than the switches and ``kind.pooled``
    that varies, or a variant in ``require`` without runs.
    """
    kind = ONE_LOOK_KINDS[kind] if isinstance(kind, str) else kind
    if not runs:
        raise ValueError("no completed run")
    wrong = [f"{r.path} ({why})" for r in runs if (why := kind.wrong(r))]
    if wrong:
        raise ValueError(f"runs that are not of the {kind.name} one-look sweep: {'; '.join(wrong[:5])}"
                         + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""))
    by_name: dict[str, list[Run]] = {}
    unknown = []
    for r in runs:
        name = mechanism_of(r)
        if name is None:
            unknown.append(f"{r.path} ({', '.join(f'{k}={format_value(r.flat.get(k))}' for k in MECHANISM_SWITCHES)})")
        else:
            by_name.setdefault(name, []).append(r)
    if unknown:
        raise ValueError(f"runs that are no variant of configs/mechanism/ ({', '.join(MECHANISMS)}): "
                         f"{'; '.join(unknown[:5])}")
    others = [k for k in varying_keys(runs) if k not in MECHANISM_SWITCHES and k not in kind.pooled]
    if others:
        raise ValueError(f"besides the mechanism variant{' and ' + ', '.join(kind.pooled) if kind.pooled else ''} "
                         f"the config keys {', '.join(others)} vary; the sweep must change only those (and the seed)")
    for name, rs in by_name.items():  # e.g. description_weight 0.5 and 1: both "full", not one variant
        split = [k for k in varying_keys(rs) if k in MECHANISM_SWITCHES]
        if split:
            raise ValueError(f"runs of mechanism {name!r} differ in {', '.join(split)}")
    missing = [m for m in require if m not in by_name]
    if missing:
        raise ValueError(f"no run of mechanism {', '.join(missing)} (present: {', '.join(by_name)}); "
                         f"the sweep must include {', '.join(require)}")
    groups = [Group(settings={"mechanism": name}, label_keys=["mechanism"], runs=by_name[name])
              for name in MECHANISMS if name in by_name]
    metrics = [*kind.metrics, *(m for m in extra if (m if isinstance(m, str) else m.key) not in kind.metrics)]
    return OneLookStudy(kind, aggregate(groups, metrics), _facts(kind, runs, groups))

