"""Joint training, the upper bound: after each experience, the model is trained on everything seen
so far, i.i.d.-shuffled.

Choice, documented: all past experiences' images are kept in an unbounded store; at each
experience's end the model (warm-started from the previous experience's model) trains ``epochs``
epochs of shuffled mini-batches over the union of every experience so far. With the config's
defaults (``epochs`` and ``batch_size`` interpolate ``train.epochs`` and ``train.batch_size``) every
image seen so far gets as many passes per experience as the current experience's images get in the
other learners. ``observe`` trains nothing (zero loss, zero throughput in the loop's counters).
Why not mix the store into each ``observe`` batch: the proportion needs the current experience's
size, which the loop only hands over at ``end_experience``. The checkpoint holds the store (all
data seen): that is what joint training is. Our own loop: the same stream and report card as the
others, where Avalanche's ``JointTraining`` trains once on the whole stream (no per-experience row).
"""

from __future__ import annotations

import torch

from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner, fit
from continual.memory import ClassBalancedReservoir


class SeenData:
    """Every training image seen so far (uint8), with labels, on the data's device. Unbounded."""

    def __init__(self, image_shape: tuple[int, ...], device: torch.device | str,
                 x_dtype: torch.dtype = torch.uint8) -> None:
        self.x = torch.zeros((0, *image_shape), dtype=x_dtype, device=device)  # float for feature vectors
        self.y = torch.zeros(0, dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.y)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = torch.cat([self.x, x.to(self.x.device)])
        self.y = torch.cat([self.y, y.to(self.y.device)])

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "y": self.y.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.x, self.y = state["x"].to(self.x.device), state["y"].to(self.y.device)


@LEARNERS.register("joint")
class JointLearner(ClassifierLearner):
    """Cross-entropy over every category seen so far, on the union of all experiences so far.

    ``memory`` (``memory.size``) is ignored: ``self.memory`` is the unbounded ``SeenData`` store,
    so the loop's memory size shows how many images joint training holds.
    """

    online_blocker = ("it is the offline upper bound, trained on everything seen at each experience's end: "
                      "run it on the same stream with online.mode=off")

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir | None = None, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, epochs: int = 4, batch_size: int = 32,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        if epochs < 1:
            raise ValueError(f"learner.epochs must be >= 1, got {epochs}")
        if batch_size < 2:
            raise ValueError(f"learner.batch_size must be >= 2, got {batch_size}")
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        device = memory.device if memory is not None else "cpu"
        self.memory = SeenData(image_shape, device, memory.x.dtype if memory is not None else torch.uint8)
        self.epochs, self.batch_size = epochs, batch_size

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.last_batch_size = 0  # nothing is trained here: see the module docstring
        return torch.zeros((), device=y.device)

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.memory.add(x, y)
        fit(self.cross_entropy_step, self.memory.x, self.memory.y, None, epochs=self.epochs,
            batch_size=self.batch_size)
