"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is written atomically every ``train.checkpoint_every`` steps and after every experience
(``<run_dir>/checkpoint.pt``): the learner (weights, optimiser, replay memory), every global random
generator (Python, NumPy, torch CPU and CUDA), the loop's progress (events consumed, running sums) and
metrics, and the W&B run id. It holds no training data and no batch order: the stream is rebuilt from
the config and its source regenerated from the seed, skipping the events already consumed
(``continual.stream.source``). It loads with ``torch.load(weights_only=True)``: only tensors,
numbers, strings and containers.

In a multi-process run (``continual.distributed``) ``checkpoint.pt`` is rank 0's state, and each
rank r > 0 also saves what is its own, ``checkpoint.rank<r>.pos<k>.pt`` after k events: its
replay memory share and the rest of its learner's state except the weights and the optimiser (equal
on every rank, so they come from ``checkpoint.pt``), its generators and its loop counters. The save
is a commit: every rank r > 0 writes its file, all ranks agree that every file is written, then
rank 0 replaces ``checkpoint.pt`` (which records the number of processes), and only once all agree
that is done does each rank delete its files of other positions. So a kill at any moment leaves
``checkpoint.pt`` and, for each rank, the file of the position it names: a resume always continues
from ``checkpoint.pt``'s position, and a rank file ahead of it (written before a kill that came
before the commit) is ignored and later removed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from continual.distributed import SINGLE, DistContext
from continual.learner.base import Learner
from continual.stream.cache import atomic_torch_save

FORMAT = "continual-checkpoint"
VERSION = 2  # 2: saved at any step (the loop's progress), no batch-order generator


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, foreign, or from another config."""


@dataclass
class LoopState:
    """The loop's progress and what was measured so far (host values only)."""

    n_experiences: int
    next_experience: int = 0
    R: list[list[float]] = field(default_factory=list)
    baseline: list[float | None] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # per-experience metrics as logged
    learning_curves: list[dict] = field(default_factory=list)  # per experience: {"k": accuracy}
    train_s: float = 0.0
    eval_s: float = 0.0
    progress: dict = field(default_factory=dict)  # continual.loop.TrainProgress.state()
    milestones: dict = field(default_factory=dict)  # {k: step} where the experience in progress's curve is sampled
    curve: dict = field(default_factory=dict)  # its learning curve so far
    anytime: list[dict] = field(default_factory=list)  # points of the anytime-accuracy curve
    czsl: list = field(default_factory=list)  # per experience: GZSL with every later category unseen (or None)
    czsl_calibrated: list = field(default_factory=list)  # the same, calibrated (continual.metrics.calibration)
    calibration: dict = field(default_factory=dict)  # the calibrator's gamma so far (Calibrator.state_dict)

    def __post_init__(self) -> None:
        if not self.R:
            self.R = [[float("nan")] * self.n_experiences for _ in range(self.n_experiences)]


def rng_state() -> dict:
    """Every global random generator's state."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_state = np.random.get_state()
    state["numpy"] = {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


SHARED_LEARNER_KEYS = ("model", "optimizer")
"""Parts of ``Learner.checkpoint_state`` that are equal on every rank (DDP averages the gradients,
``sync_model`` copies rank 0's buffers before every evaluation): rank files leave them out."""


class Checkpointer:
    """Saves and restores a run's state in one file of its run folder (and, under ``torchrun``, one
    more per rank r > 0; ``save`` and ``restore`` are then collective: every rank calls them)."""

    def __init__(self, run_dir: str | Path, config_fingerprint: str, wandb_run_id: str | None = None,
                 dist: DistContext = SINGLE) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "checkpoint.pt"
        self.fingerprint = config_fingerprint
        self.wandb_run_id = wandb_run_id
        self.dist = dist

    def exists(self) -> bool:
        return self.path.exists()

    def rank_path(self, position: int, rank: int | None = None) -> Path:
        """Where rank ``rank`` (this one by default) keeps its own state after ``position`` events."""
        return self.run_dir / f"checkpoint.rank{self.dist.rank if rank is None else rank}.pos{position}.pt"

    def _header(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "config_fingerprint": self.fingerprint}

    def save(self, learner: Learner, state: LoopState) -> None:
        """Write the checkpoint atomically: readers see the previous one or this one, never half.
        With several processes, the commit the module docstring describes."""
        if not self.dist.multi:
            self._save_main(learner, state)
            return
        k = state.progress["position"]
        main = self.dist.is_main
        self._agree(None if main else lambda: self._save_own(learner, state),
                    f"saving each rank's state after event {k}")
        self._agree(lambda: self._save_main(learner, state) if main else None,
                    f"writing {self.path} after event {k}")
        if not main:  # committed: this rank's files of other positions can no longer be needed
            for stale in self.run_dir.glob(f"checkpoint.rank{self.dist.rank}.pos*.pt"):
                if stale != self.rank_path(k):
                    stale.unlink(missing_ok=True)

    def _save_main(self, learner: Learner, state: LoopState) -> None:
        ckpt = {**self._header(), "wandb_run_id": self.wandb_run_id, "loop": asdict(state),
                "learner": learner.checkpoint_state(), "rng": rng_state()}
        if self.dist.multi:  # a one-process checkpoint stays as it was
            ckpt["world_size"] = self.dist.world_size
        atomic_torch_save(ckpt, self.path)

    def _save_own(self, learner: Learner, state: LoopState) -> None:
        atomic_torch_save({
            **self._header(), "rank": self.dist.rank, "world_size": self.dist.world_size, "loop": asdict(state),
            "learner": {key: value for key, value in learner.checkpoint_state().items()
                        if key not in SHARED_LEARNER_KEYS},
            "rng": rng_state(),
        }, self.rank_path(state.progress["position"]))

    def _agree(self, fn: Callable[[], object] | None, what: str) -> None:
        """``fn()`` (if any) on every rank, then (collective) raise on every rank if it failed on
        any: a rank that went on alone would wait forever for the others."""
        try:
            if fn is not None:
                fn()
            problem = None
        except Exception as err:  # noqa: BLE001 - reported to every rank, then raised here too
            problem = f"{type(err).__name__}: {err}"
            if not self.dist.multi:
                raise
        problems = [(r, p) for r, p in enumerate(self.dist.gather(problem)) if p is not None]
        if problems:
            rank, first = problems[0]
            raise CheckpointError(f"{what} failed on rank {rank} of {self.dist.world_size}: {first}")

    def _load(self, path: Path) -> dict:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for truncated or foreign files
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is "
                f"truncated or not a continual checkpoint. Move it away to restart this run from the "
                f"beginning, or choose another run folder (hydra.run.dir=...)") from err
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a continual checkpoint (no format marker); "
                                  f"move it away or choose another run folder")
        if ckpt.get("version") != VERSION:
            raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, "
                                  f"this code reads version {VERSION}")
        if ckpt.get("config_fingerprint") != self.fingerprint:
            raise CheckpointError(f"{path} was written by a run with a different config; "
                                  f"choose another run folder (hydra.run.dir=...)")
        saved = ckpt.get("world_size", 1)
        if saved != self.dist.world_size:
            raise CheckpointError(
                f"{path} was written by a run of {saved} process(es) and this run has {self.dist.world_size}: "
                f"each process holds its own share of the replay memory, so resume it with {saved} "
                f"(torchrun --nproc_per_node={saved}), or choose another run folder (hydra.run.dir=...)")
        return ckpt

    def read(self) -> dict:
        """Load and check ``checkpoint.pt``, with a message saying what to do when it is unusable."""
        return self._load(self.path)

    def _read_own(self, ckpt: dict) -> dict:
        """``ckpt`` (``checkpoint.pt``) with this rank's own state in place of rank 0's."""
        k = ckpt["loop"]["progress"]["position"]
        path = self.rank_path(k)
        if not path.exists():
            raise CheckpointError(
                f"{self.path} is at event {k} but rank {self.dist.rank}'s state for it ({path.name}) is "
                f"missing, so this multi-process run cannot continue exactly. Move the checkpoint files away "
                f"to restart it from the beginning, or choose another run folder (hydra.run.dir=...)")
        own = self._load(path)
        if own.get("rank") != self.dist.rank or own["loop"]["progress"]["position"] != k:
            raise CheckpointError(f"{path} holds rank {own.get('rank')}'s state after event "
                                  f"{own['loop']['progress']['position']}, not rank {self.dist.rank}'s after {k}")
        learner = {key: ckpt["learner"][key] for key in SHARED_LEARNER_KEYS if key in ckpt["learner"]}
        return {**ckpt, "loop": own["loop"], "rng": own["rng"],
                "learner": {**learner, **own["learner"]}}

    def restore(self, ckpt: dict, learner: Learner) -> LoopState:
        """Put the learner, the generators and the loop back as they were when ``ckpt`` was saved
        (with several processes, each rank as it was: its own file completes ``ckpt``)."""
        if self.dist.multi:
            merged = [ckpt]

            def read_own() -> None:
                merged[0] = self._read_own(ckpt)
            self._agree(None if self.dist.is_main else read_own, "reading each rank's checkpoint")
            ckpt = merged[0]
        # Loaded on the CPU: load_state_dict copies into the learner's own (device) tensors, and
        # generator states must stay CPU byte tensors.
        learner.load_checkpoint_state(ckpt["learner"])
        set_rng_state(ckpt["rng"])
        return LoopState(**ckpt["loop"])
