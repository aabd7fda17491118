"""GDumb (Prabhu et al., ECCV 2020): a greedy class-balanced memory, and at every experience's end
a model retrained from scratch on the memory alone.

How it fits the loop: ``observe`` trains nothing (it returns a zero loss, so the per-experience
loss line reads 0); ``end_experience`` gets the whole experience, offers it to the class-balanced
reservoir (the same per-class counts GDumb's greedy sampler reaches, a uniform choice within each
class), re-initialises backbone and head, and trains ``epochs`` epochs on the memory. The loop's
throughput counter only sees ``observe``, so ``train_samples_per_s`` reads 0 for this learner.
Our own loop: Avalanche 0.6's ``GDumb`` plugin re-builds datasets through the template's hooks
(FIELD_GUIDE section 5); here the memory is a device tensor. No cutmix or SGDR schedule (paper extras).
"""

from __future__ import annotations

import torch

from continual.heads import GrowingClassHead
from continual.learner.backbones import BACKBONES
from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner, fit
from continual.memory import ClassBalancedReservoir


@LEARNERS.register("gdumb")
class GDumbLearner(ClassifierLearner):
    """Memory only: retrain from scratch on ``memory.size`` class-balanced images after each experience."""

    online_blocker = ("it retrains from scratch on its memory at each experience's end; without boundaries "
                      "that would be before every prediction (anytime evaluation)")

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, epochs: int = 30, batch_size: int = 32,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        if epochs < 1:
            raise ValueError(f"learner.epochs must be >= 1, got {epochs}")
        if batch_size < 2:
            raise ValueError(f"learner.batch_size must be >= 2, got {batch_size}")
        if memory.capacity < 1:
            raise ValueError(f"memory.size must be >= 1 for gdumb (it learns from the memory only), "
                             f"got {memory.capacity}")
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        self.memory = memory
        self.n_classes, self.in_channels = n_classes, image_shape[0]
        self.epochs, self.batch_size = epochs, batch_size

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.last_batch_size = 0  # nothing is trained here: see the module docstring
        return torch.zeros((), device=y.device)

    @torch.no_grad()
    def reinitialise(self) -> None:
        """Fresh random weights (drawn as at construction) and a fresh optimiser; keeps ``n_active``."""
        fresh = BACKBONES.build(self.backbone_name, in_channels=self.in_channels, **self.backbone_args)
        self.backbone.load_state_dict(fresh.state_dict())
        n_active = self.class_head.n_active
        self.class_head.load_state_dict(GrowingClassHead(self.backbone.embed_dim, self.n_classes).state_dict())
        self.class_head.n_active = n_active
        self.reset_optimizer()

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.memory.update(x, y, codes)
        n = len(self.memory)
        self.reinitialise()
        fit(self.cross_entropy_step, self.memory.x[:n], self.memory.y[:n], None,
            epochs=self.epochs, batch_size=self.batch_size)
