"""Find run folders, load their config and report card, and group them into the cells of a sweep.

A run folder is one that holds ``config.json`` (written before training starts) or Hydra's
``.hydra/config.yaml`` (written before the job starts). It is complete iff ``report.json`` exists
(written last and atomically by ``continual.experiment.run_experiment``); every other run folder
is *unfinished* and is listed, never averaged in.

Grouping: the config is flattened to dotted keys (``memory.size``); the keys whose values differ
across the runs define the cells, except the seed, keys that merely repeat it
(``benchmark.seed: ${seed}``) and keys that change how a run is shown or where it finds its data,
not what it computes (``progress``, ``logger.*``, ``hydra.*``, cache and data paths).
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "ABSENT", "IGNORED_KEYS", "Collection", "Group", "Run", "Unfinished", "collect_runs", "find_run_dirs",
    "flatten", "format_value", "group_runs", "load_run", "varying_keys",
]

# Keys never used to tell sweep cells apart: the seed (cells are averaged over it), and keys that do
# not change what a run computes (console, loggers, Hydra's own settings, paths to caches/data, and
# CPU threads: parallel sweep jobs take 1, a lone run all cores, for the same experiment; where the
# images are kept, data.*, which gives the same numbers bit for bit).
IGNORED_KEYS: tuple[str, ...] = (
    "seed", "progress", "threads", "logger", "logger.*", "hydra", "hydra.*",
    "benchmark.cache_dir", "benchmark.data_root", "data", "data.*",
)
ABSENT = "(absent)"  # shown for a key that one run's config does not have at all
_SKIP_DIRS = {".hydra", "wandb", "__pycache__"}  # never hold run folders; wandb/ can be large


@dataclass(frozen=True)
class Run:
    """One run folder: its resolved config (nested and flattened) and its report card (a dict)."""

    path: Path
    config: dict
    flat: dict[str, Any]
    report: dict

    @property
    def seed(self) -> Any:
        """The run's seed (``None`` when the config has none)."""
        return self.config.get("seed")


@dataclass(frozen=True)
class Unfinished:
    """A run folder without a usable ``report.json``, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Collection:
    """Every run folder found under ``roots``: the complete runs and the unfinished ones."""

    roots: list[Path]
    runs: list[Run] = field(default_factory=list)
    unfinished: list[Unfinished] = field(default_factory=list)


@dataclass
class Group:
    """The runs of one sweep cell (same config up to the seed).

    ``settings`` holds every varying key's value in this cell; ``label_keys`` is the smallest subset
    of them that still tells the cells apart (for a sweep over learners, only ``learner.name``,
    though each learner brings its own hyper-parameter keys), used for labels and table columns.
    """

    settings: dict[str, Any]
    label_keys: list[str]
    runs: list[Run]

    @property
    def label(self) -> str:
        """``"memory.size=200 learner.attribute_weight=0"``; ``"all runs"`` when nothing varies."""
        if not self.label_keys:
            return "all runs"
        return " ".join(f"{k}={format_value(self.settings[k])}" for k in self.label_keys)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


# --------------------------------------------------------------------------------------------
# finding and loading run folders
# --------------------------------------------------------------------------------------------


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_run_dirs(roots: Sequence[str | Path]) -> list[Path]:
    """Every run folder under ``roots`` (recursively; a root may itself be a run folder), sorted.

    A run folder is not searched further: runs do not nest. A missing root raises
    ``FileNotFoundError`` naming it.
    """
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        stack = [root]
        while stack:
            d = stack.pop()
            if _is_run_dir(d):
                found.append(d)
                continue
            stack.extend(c for c in d.iterdir()
                         if c.is_dir() and c.name not in _SKIP_DIRS and not c.name.startswith("."))
    # Overlapping roots (a sweep and one of its jobs) must not count a run twice.
    unique = list({d.resolve(): d for d in found}.values())
    # Hydra names job folders 0, 1, ..., 10: sort numerically where a name is a number.
    return sorted(unique, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.parts])


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} is unreadable ({type(err).__name__}: {err})"


def load_run(path: str | Path) -> Run | Unfinished:
    """The run in ``path``, or an ``Unfinished`` saying what is missing or broken."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return Unfinished(path, "no config.json: the job stopped before training started (see its Hydra log)")
    config, err = _read_json(path / "config.json")
    if err or not isinstance(config, dict):
        return Unfinished(path, err or "config.json is not a JSON object")
    if not (path / "report.json").is_file():
        return Unfinished(path, "no report.json: still running, or killed (rerun the same command to resume)")
    report, err = _read_json(path / "report.json")
    if err or not isinstance(report, dict):
        return Unfinished(path, err or "report.json is not a JSON object")
    return Run(path=path, config=config, flat=flatten(config), report=report)


def collect_runs(roots: Sequence[str | Path] | str | Path) -> Collection:
    """Load every run folder under ``roots``: complete runs and unfinished ones, separately."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    out = Collection(roots=[Path(r) for r in roots])
    for d in find_run_dirs(out.roots):
        item = load_run(d)
        (out.runs if isinstance(item, Run) else out.unfinished).append(item)
    return out


# --------------------------------------------------------------------------------------------
# flattening and grouping
# --------------------------------------------------------------------------------------------


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: ``{"memory": {"size": 200}}`` -> ``{"memory.size": 200}``.

    Lists stay values (a list of shots is one setting). An empty dict is kept as a value.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def format_value(v: Any) -> str:
    """A setting as shown in labels: ``0.0`` and ``0`` both as ``0``, ``1e-3`` as ``0.001``."""
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "null"
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))  # a Hydra override "=0" gives int 0 where the YAML default is 1.0
        return f"{v:g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _ignored(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def varying_keys(runs: Sequence[Run], ignore: Sequence[str] = IGNORED_KEYS) -> list[str]:
    """Dotted config keys whose value differs between runs, in config order.

    Leaves out ``ignore`` (glob patterns) and keys that equal the run's seed in every run
    (``benchmark.seed: ${seed}``): they vary only because the seed does.
    """
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys(r.flat))
    out = []
    for k in keys:
        if _ignored(k, ignore):
            continue
        values = {format_value(r.flat.get(k, ABSENT)) for r in runs}
        if len(values) < 2:
            continue
        if all(k in r.flat and "seed" in r.config and r.flat[k] == r.config["seed"] for r in runs):
            continue
        out.append(k)
    return out


def _sort_key(values: Sequence[Any]) -> list[tuple]:
    """Numbers before strings, numbers numerically: memory 0 < 200 < 1000, not "1000" < "200"."""
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((0, float(v), ""))
        else:
            out.append((1, 0.0, format_value(v)))
    return out


def _minimal_label_keys(keys: list[str], cells: list[tuple[str, ...]]) -> list[str]:
    """Drop keys, least informative first, while the remaining ones still tell all cells apart."""
    n_cells = len(set(cells))
    index = {k: i for i, k in enumerate(keys)}
    # Try dropping keys with few distinct values first, and "*.name" keys last: a sweep over learners
    # should be labelled by learner.name, not by a hyper-parameter only one learner has.
    order = sorted(keys, key=lambda k: (k.endswith(".name") or k == "name",
                                        len({c[index[k]] for c in cells}), -index[k]))
    kept = list(keys)
    for k in order:
        trial = [x for x in kept if x != k]
        if trial and len({tuple(c[index[x]] for x in trial) for c in cells}) == n_cells:
            kept = trial
    return kept


def group_runs(runs: Sequence[Run], keys: Sequence[str] | None = None,
               ignore: Sequence[str] = IGNORED_KEYS) -> list[Group]:
    """Runs grouped by the values of ``keys`` (default: ``varying_keys(runs, ignore)``).

    Groups come sorted by their settings (numerically where numeric). With no varying key, all
    runs form one group.
    """
    keys = list(varying_keys(runs, ignore) if keys is None else keys)
    cells: dict[tuple[str, ...], list[Run]] = {}
    values: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in runs:
        settings = {k: r.flat.get(k, ABSENT) for k in keys}
        cell = tuple(format_value(v) for v in settings.values())
        cells.setdefault(cell, []).append(r)
        values.setdefault(cell, settings)
    label_keys = _minimal_label_keys(keys, list(cells)) if keys else []
    groups = [Group(settings=values[c], label_keys=label_keys,
                    runs=sorted(rs, key=lambda r: _sort_key([r.seed]))) for c, rs in cells.items()]
    return sorted(groups, key=lambda g: _sort_key([g.settings[k] for k in keys]))
