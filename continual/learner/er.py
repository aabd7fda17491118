"""Experience replay (ER): cross-entropy on the current batch with class-balanced reservoir samples mixed in.

Our own loop rather than Avalanche's ``Replay``: its template adds ~2 ms per batch for replay and its
buffers re-build datasets (FIELD_GUIDE section 5); here the memory is a tensor on the data's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner, check_non_negative, with_replay
from continual.memory import ClassBalancedReservoir


@LEARNERS.register("er")
class ERLearner(ClassifierLearner):
    """Each step: the current batch plus ``replay_batch_size`` memory images, one cross-entropy over both.

    The memory (``ClassBalancedReservoir``) is updated at each experience's end. Class-only: no
    attribute heads, so zero-shot, GZSL and attribute metrics are null.
    """

    supports_ddp = True
    supports_online = True  # online, the memory takes each batch as it arrives (``remember``)

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, replay_batch_size: int = 32,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        check_non_negative(replay_batch_size=replay_batch_size)
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        self.memory = memory
        self.replay_batch_size = replay_batch_size

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        x, y, _ = with_replay(self.memory, self.replay_batch_size, x, y, None)
        self.last_batch_size = len(y)
        return self.step(F.cross_entropy(self.train_forward(self.logits, x), y))  # mean over current + replayed images

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.memory.update(x, y, codes)
