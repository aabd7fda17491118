"""Several processes, one run: data-parallel training under ``torchrun`` with DistributedDataParallel.

Usage (every process must write to the same run folder, so name it)::

    torchrun --standalone --nproc_per_node=2 experiments/train.py hydra.run.dir=runs/ddp   # GPUs: NCCL
    torchrun --standalone --nproc_per_node=2 experiments/train.py device=cpu hydra.run.dir=runs/ddp  # gloo

What each of the N processes (ranks) does, and why:

- It builds the same stream and the same model from the same seed (DDP also copies rank 0's
  weights to every rank when it wraps the learner), and draws the same batch order.
- ``train.batch_size`` stays the *global* batch: each step, rank r trains on every N-th image of
  the step's batch, starting at r, and replays ``replay_batch_size / N`` memory images, so one step
  of N ranks sees what one step of one process sees and the learning rate keeps its meaning.
  Both must divide by N. DDP averages the gradients, so the weights stay identical on every rank.
- Each rank keeps its own share of the replay memory (``memory.size / N`` slots, its own sampling
  seed ``seed + rank``), filled from its own share of each experience: the memories add up to
  ``memory.size``. ``distributed.json`` in the run folder records each rank's share.
- Every rank evaluates (identical weights and, after ``sync_model``, batch-norm statistics: cheap
  and deterministic); rank 0 alone writes the run folder, logs to W&B and prints. Learners with
  ``supports_ddp``: child, er, er_ace, derpp, finetune, lwf, ewc. Not yet: gdumb and joint (they
  train at an experience's end on their own process's data, so step counts would differ) and icarl
  (it classifies by its own process's exemplars).
- Checkpoints: rank 0 writes ``checkpoint.pt`` and every other rank r its own state (its memory
  share, its generators) to ``checkpoint.rank<r>.exp<k>.pt``, committed together after every
  experience (``continual.checkpoint``). The same command, with the same number of processes,
  resumes exactly: the report equals an uninterrupted run's. Another number of processes is
  refused, naming both.

With ``WORLD_SIZE`` unset (plain ``python experiments/train.py``) the context is ``SINGLE``: one
process, no process group, and every method below is a no-op or the identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


def global_batches(batches: list[torch.Tensor], world_size: int) -> list[torch.Tensor]:
    """The part of each index batch that the ranks share out: trimmed to a multiple of
    ``world_size``; a batch that cannot give every rank two images is dropped (batch norm needs
    two). Every rank computes the same list, so every rank takes the same number of steps (DDP
    waits forever for a rank that takes fewer)."""
    return [b[: len(b) // world_size * world_size] for b in batches if len(b) // world_size >= 2]


def rank_batches(batches: list[torch.Tensor], rank: int, world_size: int) -> list[torch.Tensor]:
    """This rank's share of each of ``global_batches``: every ``world_size``-th index from ``rank``.
    The shares of one batch are disjoint, equally long, and together the whole (trimmed) batch."""
    return [b[rank::world_size] for b in global_batches(batches, world_size)]


def share(n: int, rank: int, world_size: int) -> int:
    """This rank's part of ``n`` items split as evenly as possible (the lowest ranks take the remainder)."""
    return n // world_size + (1 if rank < n % world_size else 0)


class _Forward(nn.Module):
    """What DDP wraps: the learner (so DDP sees its parameters) and a forward that runs one of the
    learner's loss functions, as Lightning wraps ``training_step``: learners compute losses through
    several submodules and heads, not through one ``forward``."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


@dataclass(frozen=True)
class DistContext:
    """Which process this is among how many; methods are explicit collective steps of the run.

    Every rank must call the collective methods (``wrap``, ``sync_model``, ``mean``, ``any``,
    ``gather``, ``main_first``, ``barrier``) in the same order, or the run hangs.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder, logs and prints."""
        return self.rank == 0

    @property
    def multi(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: torch.device) -> "DistContext":
        """The context ``torchrun`` describes in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, with its process
        group started (NCCL for CUDA, gloo for the CPU); ``SINGLE`` when ``WORLD_SIZE`` is unset or 1.
        A CUDA ``device`` becomes this process's own GPU, ``cuda:LOCAL_RANK``."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(device=device)
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=device)

    # -- data and memory ------------------------------------------------------------------------------
    def rank_batches(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        return rank_batches(batches, self.rank, self.world_size)

    def global_batches(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        return global_batches(batches, self.world_size)

    def share(self, n: int) -> int:
        return share(n, self.rank, self.world_size)

    def per_rank(self, n: int, key: str) -> int:
        """``n / world_size``, for a per-step count (a batch size) that must divide evenly."""
        if n % self.world_size:
            raise ValueError(f"{key}={n} must be divisible by the number of processes ({self.world_size}): "
                             f"each process takes an equal share of every step")
        return n // self.world_size

    # -- the model ---------------------------------------------------------------------------------
    def wrap(self, learner: nn.Module) -> None:
        """Route ``learner.train_forward`` through DistributedDataParallel (which first copies rank 0's
        weights and buffers to every rank); afterwards every backward averages gradients over ranks."""
        if not self.multi:
            return
        if not getattr(learner, "supports_ddp", False):
            raise ValueError(f"learner {type(learner).__name__} does not support world_size > 1 yet; "
                             f"run it in one process (python experiments/train.py ...)")
        ddp = DistributedDataParallel(_Forward(learner), device_ids=None)  # inputs already on the device
        learner.ddp_call = ddp.__call__  # a method, not a submodule: the learner must not contain itself

    @torch.no_grad()
    def sync_model(self, learner: nn.Module) -> None:
        """Before evaluating: copy rank 0's buffers (batch-norm statistics moved with each rank's own
        last batch) to every rank, and check that the weights agree on every rank, which DDP's
        averaged gradients guarantee for a learner that trains through ``train_forward``."""
        if not self.multi:
            return
        for buffer in learner.buffers():
            tdist.broadcast(buffer, src=0)
        names, params = zip(*learner.named_parameters())
        sums = torch.stack([p.detach().double().sum() for p in params])  # (P,)
        gathered = [torch.empty_like(sums) for _ in range(self.world_size)]
        tdist.all_gather(gathered, sums)
        differ = [names[i] for g in gathered for i in (g != gathered[0]).nonzero().flatten().tolist()]
        if differ:
            raise RuntimeError(f"{type(learner).__name__}'s weights differ across processes ({', '.join(sorted(set(differ)))}): "
                               f"its training step bypasses train_forward, so DDP did not average its gradients")

    def record(self, learner: nn.Module) -> dict:
        """What every process ended with, for ``distributed.json`` (collective): its memory share and
        replay share, and a hash of its model state (weights and buffers), equal on every rank."""
        memory = getattr(learner, "memory", None)
        state = hashlib.sha256()
        for tensor in learner.state_dict().values():
            if isinstance(tensor, torch.Tensor):
                state.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        mine = {"rank": self.rank, "memory_size": len(memory) if memory is not None else 0,
                "memory_capacity": getattr(memory, "capacity", None),
                "replay_batch_size": getattr(learner, "replay_batch_size", None),
                "model_state_sha256": state.hexdigest()}
        return {"world_size": self.world_size, "backend": tdist.get_backend() if self.multi else None,
                "processes": self.gather(mine)}

    # -- collectives on values ---------------------------------------------------------------------
    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a device tensor over ranks."""
        if not self.multi:
            return value
        value = value.clone()
        tdist.all_reduce(value)
        return value / self.world_size

    def any(self, flag: torch.Tensor) -> bool:
        """Whether a bool device tensor is true on any rank (one host read)."""
        if not self.multi:
            return bool(flag)
        flag = flag.to(torch.int32)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        return bool(flag)

    def gather(self, value: T) -> list[T]:
        """A small host value from every rank, in rank order."""
        if not self.multi:
            return [value]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, value)
        return out

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0 only; every rank returns its result, or raises when it raised (so no
        rank goes on waiting for a rank 0 that has stopped)."""
        if not self.multi:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as err:
                tdist.broadcast_object_list([("error", f"{type(err).__name__}: {err}")], src=0)
                raise
        tdist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value

    def barrier(self) -> None:
        if self.multi:
            tdist.barrier()


SINGLE = DistContext()
"""One process: the default everywhere a ``dist`` argument is taken."""


@contextlib.contextmanager
def launch(device: torch.device) -> Iterator[DistContext]:
    """``DistContext.from_env(device)``; on leaving, a barrier (after a success) and the process group's end."""
    dist = DistContext.from_env(device)
    try:
        yield dist
        dist.barrier()
    finally:
        if dist.multi and tdist.is_initialized():
            tdist.destroy_process_group()
