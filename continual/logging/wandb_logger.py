"""Weights & Biases logging through wandb's own API (Avalanche's WandBLogger
does not work with wandb 0.31).

Modes: "offline" (default; writes ``<run_dir>/wandb/offline-run-*/``, upload
later with ``wandb sync``), "online", "disabled". The ``WANDB_MODE``
environment variable, when set, wins over the ``mode`` argument, so a config
can be overridden from the shell (``WANDB_MODE=disabled python ...``).

If "online" cannot start (no API key, no network), the logger warns and
falls back to offline (same ``run_id`` if one was given) before anything is
logged, so nothing is lost; upload later with ``wandb sync``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import wandb

from continual.logging.wandb_records import is_complete

__all__ = ["WandbLogger", "resolve_mode"]

_log = logging.getLogger(__name__)

_MODES = ("online", "offline", "disabled")
STEP_METRIC = "experience"
SAMPLES_METRIC = "samples"  # the x-axis of the anytime curves: stream samples presented so far


def resolve_mode(mode: str) -> str:
    """The effective mode: ``WANDB_MODE`` if set, else ``mode``."""
    chosen = os.environ.get("WANDB_MODE") or mode
    chosen = chosen.strip().lower()
    if chosen == "dryrun":  # wandb's old spelling of offline
        chosen = "offline"
    if chosen not in _MODES:
        source = "WANDB_MODE" if os.environ.get("WANDB_MODE") else "mode"
        raise ValueError(f"{source}={chosen!r}: expected one of {', '.join(_MODES)}")
    return chosen


def _settings(mode: str, init_timeout: float) -> wandb.Settings:
    """Quiet, lean settings (init + finish offline in well under a second)."""
    return wandb.Settings(
        silent=True,  # no banner, no sync hints: the console belongs to our logger
        console="off",  # no stdout/stderr capture; it fights pytest and progress bars
        # Each of these costs time or spawns work at init and adds nothing a
        # run folder does not already record (we log our own git revision).
        disable_code=True,
        save_code=False,
        disable_git=True,
        x_save_requirements=False,
        x_disable_meta=True,
        x_disable_machine_info=True,
        # System metrics are worth having only in a live online dashboard.
        x_disable_stats=mode != "online",
        init_timeout=init_timeout,
        **_base_url_override(),
    )


def _base_url_override() -> dict[str, str]:
    """``base_url`` from ``WANDB_BASE_URL`` as it is now.

    wandb reads its environment once per process (at ``wandb.setup()``);
    re-reading it per logger makes the variable behave like ``WANDB_MODE``.
    """
    url = os.environ.get("WANDB_BASE_URL")
    return {"base_url": url} if url else {}


def _has_credentials() -> bool | None:
    """True/False whether wandb would find an API key without prompting;
    None if that cannot be checked with this wandb version.

    Without a key, ``wandb.init(mode="online")`` in a terminal blocks on an
    interactive login prompt, which would stall an unattended run.
    """
    try:
        from wandb.sdk.lib import wbauth  # private API: tolerate its absence

        auth = wbauth.authenticate_session(
            host=_base_url_override().get("base_url") or wandb.setup().settings.base_url,
            source="continual",
            prompt=False,
            update_session=False,
        )
    except Exception:  # noqa: BLE001 - any failure here just means "cannot tell"
        return None
    return auth is not None


def _scalar(value: Any) -> Any:
    """A plain Python scalar from numpy/torch scalars; other values unchanged."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


def _flatten(report: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Flatten nested dicts into '/'-joined keys, keeping only scalar leaves."""
    flat: dict[str, Any] = {}
    for key, value in report.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
            continue
        value = _scalar(value)
        # Lists (per-experience curves, matrices) do not fit a summary cell.
        if value is None or not isinstance(value, (bool, int, float, str)):
            continue
        flat[name] = value
    return flat


def _to_plain(config: Any) -> dict[str, Any]:
    """Accept dicts and OmegaConf configs alike."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:
        pass
    return dict(config or {})


class WandbLogger:
    """Log a continual-learning run to W&B (offline by default).

    Per-experience metrics use the experience index as their x axis; the
    accuracy matrix, heatmap and report card go into the run summary.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        run_dir: str | Path,
        *,
        project: str = "continual",
        mode: str = "offline",
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        run_id: str | None = None,
        job_type: str | None = None,
        init_timeout: float = 15.0,
    ) -> None:
        """Start the run; files go to ``<run_dir>/wandb/``.

        ``run_id`` names the W&B run; passing an earlier run's id resumes it
        (``resume="allow"``). ``init_timeout`` bounds how long an online start
        may wait for the server before falling back to offline.
        """
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = resolve_mode(mode)
        self._finished = False
        init_kwargs: dict[str, Any] = dict(
            project=project,
            dir=str(self.run_dir),
            config=_to_plain(config),
            group=group,
            tags=list(tags) if tags else None,
            name=name,
            job_type=job_type,
            id=run_id,
            resume="allow" if run_id else None,
            # wandb's default in scripts hands back an unfinished earlier run
            # ("return_previous"); each logger must own a run of its own.
            reinit="create_new",
        )

        run = None
        if self.mode == "online":
            run = self._try_online(init_kwargs, init_timeout)
            if run is None:
                self.mode = "offline"
        if run is None:
            run = wandb.init(mode=self.mode, settings=_settings(self.mode, init_timeout), **init_kwargs)
        self._run = run
        # Where wandb-core writes the record log (None when disabled).
        sync_file = getattr(run.settings, "sync_file", None) if self.mode != "disabled" else None
        self.record_file: Path | None = Path(sync_file) if sync_file else None

        run.define_metric(STEP_METRIC)
        run.define_metric(SAMPLES_METRIC)
        # Anytime accuracy is plotted against stream samples; everything else per experience.
        run.define_metric("anytime/*", step_metric=SAMPLES_METRIC)
        run.define_metric("*", step_metric=STEP_METRIC)

    def _try_online(self, init_kwargs: dict[str, Any], init_timeout: float) -> Any:
        """Start an online run, or warn and return None."""
        if _has_credentials() is False:
            reason = "no W&B API key found (set WANDB_API_KEY or run `wandb login`)"
        else:
            before = wandb.run
            try:
                return wandb.init(mode="online", settings=_settings("online", init_timeout), **init_kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means "go offline"
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                # A half-started run would swallow the offline one's records.
                if wandb.run is not None and wandb.run is not before:
                    wandb.run.finish(exit_code=1)
        warnings.warn(
            f"W&B online mode unavailable ({reason}); logging offline to "
            f"{self.run_dir / 'wandb'} instead -- upload later with `wandb sync`",
            RuntimeWarning,
            stacklevel=3,
        )
        return None

    @property
    def run_id(self) -> str:
        """The W&B run id; pass it as ``run_id`` to resume this run."""
        return self._run.id

    def log_experience(self, experience: int, metrics: Mapping[str, float | None]) -> None:
        """Log one experience's metrics (one history row; None values skipped).

        The ``experience`` key is reserved for the step axis and always takes
        the ``experience`` argument.
        """
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            value = _scalar(value)
            if value is not None:
                row[key] = value
        row[STEP_METRIC] = int(experience)
        self._run.log(row)

    def log_anytime(self, point: Mapping[str, Any]) -> None:
        """Log one point of the anytime-accuracy curve (``continual.metrics.anytime``) on the samples axis."""
        row = {f"anytime/{k}": point[k] for k in ("accuracy", "zero_shot", "n_met") if point.get(k) is not None}
        self._run.log({**row, SAMPLES_METRIC: int(point["samples"])})

    def log_accuracy_matrix(
        self, R: list[list[float | None]], heatmap_png: str | Path | None = None
    ) -> None:
        """Store the accuracy matrix as a table (and the heatmap image) in the summary.

        ``R[i][j]``: accuracy on experience ``j`` after training on experience
        ``i``; ragged or None entries become empty cells. Summary, not history,
        so the per-experience axis keeps exactly one row per experience.
        """
        width = max((len(row) for row in R), default=0)
        columns = ["after_experience"] + [f"exp_{j}" for j in range(width)]
        data = []
        for i, row in enumerate(R):
            cells: list[float | None] = []
            for j in range(width):
                value = _scalar(row[j]) if j < len(row) else None
                if isinstance(value, float) and math.isnan(value):
                    value = None
                cells.append(None if value is None else float(value))
            data.append([i, *cells])
        self._run.summary["accuracy_matrix"] = wandb.Table(columns=columns, data=data)
        if heatmap_png is not None:
            self._run.summary["accuracy_heatmap"] = wandb.Image(str(heatmap_png))

    def log_report(self, report: Mapping[str, Any], *, prefix: str = "report") -> None:
        """Put the final report card in the run summary.

        Nested dicts become '/'-joined keys under ``prefix`` (``report/...``;
        empty for none), which keeps them apart from the last per-experience
        values wandb puts in the summary. None and non-scalar values (lists)
        are skipped.
        """
        flat = _flatten(report, prefix)
        if flat:
            self._run.summary.update(flat)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table (e.g. a sweep's mean ± std per setting) in the run summary under ``key``."""
        # Mixed types: a metric missing in one setting (None) must not fix its column as "no numbers".
        self._run.summary[key] = wandb.Table(columns=columns, data=rows, allow_mixed_types=True)

    def log_images(self, images: Mapping[str, str | Path]) -> None:
        """PNG figures in the run summary, one key each."""
        for key, path in images.items():
            self._run.summary[key] = wandb.Image(str(path))

    def log_files(self, files: list[str | Path], *, name: str, kind: str = "run-folder",
                  metadata: Mapping[str, Any] | None = None) -> None:
        """Attach files (report, config, plots) to the run as one artifact, so a dashboard links each
        number back to the evidence. Offline, wandb stages copies and ``wandb sync`` uploads them."""
        artifact = wandb.Artifact(name=name, type=kind, metadata=dict(metadata or {}))
        for path in map(Path, files):
            artifact.add_file(str(path), name=path.name)
        self._run.log_artifact(artifact)

    def finish(self, exit_code: int = 0, *, flush_timeout: float = 10.0) -> None:
        """Close the run and wait (up to ``flush_timeout`` s) until its record
        file is complete on disk; safe to call twice.
        """
        if self._finished:
            return
        self._finished = True
        self._run.finish(exit_code=exit_code)
        if self.record_file is None:
            return
        # wandb 0.31's finish() returns before wandb-core flushes and closes the
        # record file; without this wait a reader right after finish() can find
        # only the file header.
        deadline = time.monotonic() + flush_timeout
        delay = 0.005
        while not is_complete(self.record_file):
            if time.monotonic() >= deadline:
                warnings.warn(
                    f"W&B record file {self.record_file} still incomplete after "
                    f"{flush_timeout:g} s; wandb may still be writing it",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        if self.mode == "offline":
            _log.info("W&B offline run written to %s (upload with `wandb sync`)", self.record_file.parent)

    def __enter__(self) -> WandbLogger:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)
