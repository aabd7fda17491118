"""What every learner offers the training loop and the evaluator.

On an experience stream the loop calls, in order: ``begin_experience`` once, ``observe`` once per
mini-batch, ``end_experience`` once. On an online stream (no boundaries) it calls ``meet`` when labels
appear for the first time, ``observe`` per mini-batch and ``remember`` with each mini-batch after it;
a learner that needs boundaries says so with ``supports_online = False`` and ``online_blocker``.
The evaluator calls ``scores``. Nothing else reaches into a learner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from continual.registry import Registry


@dataclass
class Scores:
    """What a learner says about a batch of images at evaluation time."""

    class_logits: torch.Tensor  # (B, n_seen) over the categories trained so far
    # (B, A) per-attribute log-softmax (continuous attributes: log-odds), None without attribute heads
    attribute_log_probs: torch.Tensor | None
    embedding: torch.Tensor  # (B, D) for few-shot prototypes


class Learner(nn.Module):
    """Base class: a model plus the rules for updating it from a stream."""

    has_attributes: bool = False
    last_batch_size: int = 0  # images in the last ``observe`` step, replay included (for throughput)
    # Multi-process runs (continual.distributed): a learner that computes its training forward through
    # ``train_forward`` sets ``supports_ddp``; ``DistContext.wrap`` sets ``ddp_call`` (DDP's forward).
    supports_ddp: bool = False
    ddp_call: Callable[..., Any] | None = None
    # Online streams (continual.stream.source.OnlineSource): learners that need a boundary say why not.
    supports_online: bool = False
    online_blocker: str = "it has not been adapted to streams without boundaries yet"

    def train_forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: a training step's forward pass. In a multi-process run it goes through
        DistributedDataParallel, so the backward that follows (which must reach every trainable
        weight) averages the gradients over the processes; in one process it is just the call."""
        return fn(*args) if self.ddp_call is None else self.ddp_call(fn, *args)

    def begin_experience(self, experience: int, new_classes: list[int]) -> None:
        """Prepare for an experience that brings ``new_classes`` (stream labels)."""
        raise NotImplementedError

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        """One optimisation step on a mini-batch; returns the loss, detached, on the device."""
        raise NotImplementedError

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        """Called with all of the experience's training data once its training is over."""

    def meet(self, new_classes: list[int]) -> None:
        """Online streams: ``new_classes`` (the next labels) appear for the first time in the coming batch."""
        raise NotImplementedError(f"{type(self).__name__} cannot learn without boundaries: {self.online_blocker}")

    def remember(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor, codes: torch.Tensor | None) -> None:
        """Online streams: a mini-batch has just been trained on (``y_host``: its labels on the host);
        offer it to the replay memory, as samples arrive. Without a memory: nothing to do."""
        if getattr(self, "memory", None) is not None:
            self.memory.offer(x, y, y_host, codes)

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> Scores:
        raise NotImplementedError

    def description_scores(self, embedding: torch.Tensor, class_attributes: torch.Tensor, n_known: int,
                           anchors: str = "prototypes") -> torch.Tensor | None:
        """``(B, C)`` scores of the ``C`` categories described by ``class_attributes`` (C, A), from their
        descriptions alone, on the scale of ``scores(x).class_logits`` for images of ``embedding`` (B, D),
        with the first ``n_known`` categories known (what the map from descriptions is learned from;
        ``anchors``: where it takes them, ``prototypes`` or ``rows``): how calibrated GZSL
        (``continual.metrics.calibration``) scores unseen categories beside seen ones. None (the default)
        when the learner has no such map."""
        return None

    def replay_examples(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(x, y)``: the images and labels the replay memory holds now (views, not copies), for
        measurements that may use what the learner keeps; None without a memory or when it is empty."""
        memory = getattr(self, "memory", None)
        if memory is None or len(memory) == 0:
            return None
        return memory.x[: len(memory)], memory.y[: len(memory)]

    def checkpoint_state(self) -> dict:
        """Everything needed to continue training exactly: weights, optimiser, memory.

        Learners with more state (a frozen teacher, Fisher information, ...) extend this dict;
        values must be tensors, numbers, strings or containers of them (``weights_only`` loads).
        """
        state = {"model": self.state_dict()}
        if getattr(self, "optimizer", None) is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if getattr(self, "memory", None) is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        """Inverse of ``checkpoint_state``."""
        self.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "memory" in state:
            self.memory.load_state_dict(state["memory"])


LEARNERS: Registry[Learner] = Registry("learner")
