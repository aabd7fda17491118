"""Fine-tuning, the lower bound: plain cross-entropy on the current batch, no memory, no regulariser.

Our own loop rather than Avalanche's ``Naive``: the same stream, report card and speed as every
other learner here, without the strategy template's per-batch overhead (FIELD_GUIDE section 5).
"""

from __future__ import annotations

import torch

from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner
from continual.memory import ClassBalancedReservoir


@LEARNERS.register("finetune")
class FinetuneLearner(ClassifierLearner):
    """Cross-entropy over every category seen so far, on the current batch only.

    ``memory`` (``memory.size``) is accepted, as every learner gets one, and ignored: the learner
    keeps no ``memory`` attribute, so the loop reports a memory size of 0.
    """

    supports_ddp = True  # ``cross_entropy_step`` goes through ``train_forward``
    supports_online = True

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir | None = None, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        return self.cross_entropy_step(x, y)
