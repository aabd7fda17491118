"""The child learner: a backbone, a growing category head, attribute heads and replay.

Each add-on is an object this class calls explicitly in ``observe``: the replay memory
(``memory.sample`` then ``memory.update`` at the experience's end), the attribute head (an extra
loss term) and the description-initialised classifier (in ``begin_experience``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from continual.heads import AttributeHead, GrowingClassHead
from continual.learner.backbones import BACKBONES
from continual.learner.base import LEARNERS, Learner, Scores
from continual.memory import ClassBalancedReservoir


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam or SGD (momentum 0.9) by name."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"learner.optimizer must be 'adam' or 'sgd', got {name!r}")


@LEARNERS.register("child")
class ChildLearner(Learner):
    """Replay + attribute abstraction heads + description-initialised category classifiers."""

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...], class_attributes: torch.Tensor | None,
                 attribute_blocks: tuple[int, ...] | None, memory: ClassBalancedReservoir,
                 backbone: str = "small_cnn", backbone_args: dict | None = None,
                 attribute_weight: float = 1.0, attribute_init: bool = True, replay_batch_size: int = 64,
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 amp: bool = True, channels_last: bool = False) -> None:
        super().__init__()
        if attribute_weight < 0:
            raise ValueError(f"learner.attribute_weight must be >= 0, got {attribute_weight}")
        if replay_batch_size < 0:
            raise ValueError(f"learner.replay_batch_size must be >= 0, got {replay_batch_size}")
        self.backbone = BACKBONES.build(backbone, in_channels=image_shape[0], **(backbone_args or {}))
        dim = self.backbone.embed_dim
        self.class_head = GrowingClassHead(dim, n_classes)
        self.has_attributes = class_attributes is not None and attribute_blocks is not None
        self.attribute_head = AttributeHead(dim, attribute_blocks) if self.has_attributes else None
        if self.has_attributes:
            self.register_buffer("class_attributes", class_attributes.float(), persistent=False)
        self.attribute_weight = attribute_weight
        self.attribute_init = attribute_init and self.has_attributes
        self.memory = memory
        self.replay_batch_size = replay_batch_size
        self.channels_last = channels_last
        self.amp = amp
        self.optimizer = make_optimizer(self.parameters(), optimizer, lr, weight_decay)

    def _autocast(self, device: torch.device):
        # bf16 autocast on CUDA only: on the CPU it is slower than float32 for these convs.
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def begin_experience(self, experience: int, new_classes: list[int]) -> None:
        # Labels arrive in order, so the new categories are the next rows of the head.
        if new_classes != list(range(self.class_head.n_active, self.class_head.n_active + len(new_classes))):
            raise ValueError(f"experience {experience} brings labels {new_classes}, "
                             f"expected the next {len(new_classes)} after {self.class_head.n_active}")
        weight = bias = None
        if self.attribute_init:
            weight, bias = self.attribute_head.describe_classes(self.class_attributes[new_classes])
        self.class_head.grow(len(new_classes), weight, bias)

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        if len(self.memory) > 0 and self.replay_batch_size > 0:
            xr, yr, cr = self.memory.sample(self.replay_batch_size)
            x, y = torch.cat([x, xr]), torch.cat([y, yr])
            codes = torch.cat([codes, cr]) if codes is not None else None
        self.last_batch_size = len(y)
        with self._autocast(x.device):
            z = self._embed(x)  # (B, D)
            loss = F.cross_entropy(self.class_head(z), y)
            if self.has_attributes and self.attribute_weight > 0:
                loss = loss + self.attribute_weight * self.attribute_head.loss(self.attribute_head(z).float(), codes)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.memory.update(x, y, codes)

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> Scores:
        self.eval()
        with self._autocast(x.device):
            z = self._embed(x)
            logits = self.class_head(z).float()
            log_p = None
            if self.has_attributes:
                log_p = self.attribute_head.log_probs(self.attribute_head(z).float())
        return Scores(class_logits=logits, attribute_log_probs=log_p, embedding=z.float())
