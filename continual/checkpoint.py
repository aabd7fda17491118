"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is written atomically after every experience (``<run_dir>/checkpoint.pt``): the
learner (weights, optimiser, replay memory), every random generator (Python, NumPy, torch CPU
and CUDA, the batch-order generator), the loop's progress and metrics, and the W&B run id.
It holds no training data (the stream is rebuilt from the config) and loads with
``torch.load(weights_only=True)``: only tensors, numbers, strings and containers.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from continual.learner.base import Learner
from continual.stream.cache import atomic_torch_save

FORMAT = "continual-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, foreign, or from another config."""


@dataclass
class LoopState:
    """The loop's progress: which experience comes next and what was measured so far."""

    n_experiences: int
    next_experience: int = 0
    R: list[list[float]] = field(default_factory=list)
    baseline: list[float | None] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # per-experience metrics as logged
    learning_curves: list[dict] = field(default_factory=list)  # per experience: {"k": accuracy}
    train_s: float = 0.0
    eval_s: float = 0.0
    samples: int = 0

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


class Checkpointer:
    """Saves and restores a run's state in one file of its run folder."""

    def __init__(self, run_dir: str | Path, config_fingerprint: str, wandb_run_id: str | None = None) -> None:
        self.path = Path(run_dir) / "checkpoint.pt"
        self.fingerprint = config_fingerprint
        self.wandb_run_id = wandb_run_id

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, learner: Learner, state: LoopState, order: torch.Generator) -> None:
        """Write the checkpoint atomically: readers see the previous one or this one, never half."""
        atomic_torch_save({
            "format": FORMAT, "version": VERSION, "config_fingerprint": self.fingerprint,
            "wandb_run_id": self.wandb_run_id, "loop": asdict(state), "learner": learner.checkpoint_state(),
            "order": order.get_state(), "rng": rng_state(),
        }, self.path)

    def read(self) -> dict:
        """Load and check the checkpoint file, with a message saying what to do when it is unusable."""
        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for truncated or foreign files
            raise CheckpointError(
                f"checkpoint {self.path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is "
                f"truncated or not a continual checkpoint. Move it away to restart this run from the "
                f"beginning, or choose another run folder (hydra.run.dir=...)") from err
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a continual checkpoint (no format marker); "
                                  f"move it away or choose another run folder")
        if ckpt.get("version") != VERSION:
            raise CheckpointError(f"{self.path} has checkpoint version {ckpt.get('version')}, "
                                  f"this code reads version {VERSION}")
        if ckpt.get("config_fingerprint") != self.fingerprint:
            raise CheckpointError(f"{self.path} was written by a run with a different config; "
                                  f"choose another run folder (hydra.run.dir=...)")
        return ckpt

    def restore(self, ckpt: dict, learner: Learner, order: torch.Generator) -> LoopState:
        """Put the learner, the generators and the loop back as they were when ``ckpt`` was saved."""
        # Loaded on the CPU: load_state_dict copies into the learner's own (device) tensors, and
        # generator states must stay CPU byte tensors.
        learner.load_checkpoint_state(ckpt["learner"])
        order.set_state(ckpt["order"])
        set_rng_state(ckpt["rng"])
        return LoopState(**ckpt["loop"])

