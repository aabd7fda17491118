"""The child learner: a backbone, a growing category head, attribute heads and replay.

Each add-on is an object this class calls explicitly in ``observe``: the replay memory
(``memory.sample`` then ``memory.update`` at the experience's end), the attribute head (an extra
loss term) and the description-initialised classifier (in ``begin_experience``). The backbone,
category head and optimiser come from ``ClassifierLearner``, which the baselines share.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from continual.heads import AttributeHead
from continual.learner.base import LEARNERS, Scores
from continual.learner.common import ClassifierLearner, make_optimizer, with_replay
from continual.memory import ClassBalancedReservoir

__all__ = ["ChildLearner", "make_optimizer"]


@LEARNERS.register("child")
class ChildLearner(ClassifierLearner):
    """Replay + attribute abstraction heads + description-initialised category classifiers."""

    supports_ddp = True  # the embedding goes through ``train_forward``; the heads follow it

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...], class_attributes: torch.Tensor | None,
                 attribute_blocks: tuple[int, ...] | None, memory: ClassBalancedReservoir,
                 backbone: str = "small_cnn", backbone_args: dict | None = None,
                 attribute_weight: float = 1.0, attribute_init: bool = True, replay_batch_size: int = 64,
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 amp: bool = True, channels_last: bool = False, compile: bool = False) -> None:
        if attribute_weight < 0:
            raise ValueError(f"learner.attribute_weight must be >= 0, got {attribute_weight}")
        if replay_batch_size < 0:
            raise ValueError(f"learner.replay_batch_size must be >= 0, got {replay_batch_size}")
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        dim = self.backbone.embed_dim
        # attribute_weight = 0 switches the heads off entirely (the ablation): untrained heads would
        # otherwise still start classifier rows and score zero-shot, by chance.
        self.has_attributes = class_attributes is not None and attribute_blocks is not None and attribute_weight > 0
        self.attribute_head = AttributeHead(dim, attribute_blocks) if self.has_attributes else None
        if self.has_attributes:
            self.register_buffer("class_attributes", class_attributes.float(), persistent=False)
        self.attribute_weight = attribute_weight
        self.attribute_init = attribute_init and self.has_attributes
        self.memory = memory
        self.replay_batch_size = replay_batch_size
        if channels_last:
            # Weights in channels_last too (inputs already are), so convolutions never convert formats.
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            # In place (nn.Module.compile): parameter names, and so checkpoints, stay the eager model's.
            self.backbone.compile()
        self.reset_optimizer()  # again, now that the attribute head's parameters exist

    def begin_experience(self, experience: int, new_classes: list[int]) -> None:
        self.check_next_labels(experience, new_classes)
        weight = bias = None
        if self.attribute_init:
            weight, bias = self.attribute_head.describe_classes(self.class_attributes[new_classes])
        self.class_head.grow(len(new_classes), weight, bias)

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        x, y, codes = with_replay(self.memory, self.replay_batch_size, x, y, codes)
        self.last_batch_size = len(y)
        with self._autocast(x.device):
            z = self.train_forward(self._embed, x)  # (B, D)
            loss = F.cross_entropy(self.class_head(z), y)
            if self.has_attributes:
                loss = loss + self.attribute_weight * self.attribute_head.loss(self.attribute_head(z).float(), codes)
        return self.step(loss)

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.memory.update(x, y, codes)

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> Scores:
        s = super().scores(x)  # category logits and the embedding
        if not self.has_attributes:
            return s
        with self._autocast(x.device):  # the same precision the embedding was computed in
            log_p = self.attribute_head.log_probs(self.attribute_head(s.embedding).float())
        return dataclasses.replace(s, attribute_log_probs=log_p)
