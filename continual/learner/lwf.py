"""Learning without Forgetting (Li & Hoiem 2016), class-incremental form: cross-entropy plus
distillation of the previous experience's model on the old categories' logits, temperature 2.

Our own loop: Avalanche 0.6's ``LwF`` plugin mutates the strategy through hooks and adds the
template's per-batch overhead (FIELD_GUIDE section 5); here the teacher is an explicit submodule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner, FrozenTeacher, check_non_negative, distillation_loss
from continual.memory import ClassBalancedReservoir


@LEARNERS.register("lwf")
class LwFLearner(ClassifierLearner):
    """``CE(current | all seen) + distill_weight * T^2 KL(teacher || student)`` on the old categories.

    The teacher is a frozen copy taken at each experience's end; it is a submodule, so it is in
    ``state_dict`` (and so in ``checkpoint_state``). No memory: ``memory.size`` is ignored.
    """

    supports_ddp = True
    online_blocker = "its teacher is the model frozen at the previous experience's end"

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir | None = None, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, distill_weight: float = 1.0,
                 temperature: float = 2.0,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        check_non_negative(distill_weight=distill_weight)
        if temperature <= 0:
            raise ValueError(f"learner.temperature must be > 0, got {temperature}")
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        self.teacher = FrozenTeacher(self)  # after the optimiser: never trained
        self.distill_weight, self.temperature = distill_weight, temperature

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        self.last_batch_size = len(y)
        logits = self.train_forward(self.logits, x)  # (B, n_seen)
        loss = F.cross_entropy(logits, y)
        n_old = self.teacher.n_classes  # host-side int: 0 during the first experience
        if n_old > 0 and self.distill_weight > 0:
            with self._autocast(x.device):
                old = self.teacher(x)  # (B, n_old)
            loss = loss + self.distill_weight * distillation_loss(logits[:, :n_old], old, self.temperature)
        return self.step(loss)

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.teacher.refresh(self)
