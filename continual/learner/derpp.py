"""DER++ (Buzzega et al., NeurIPS 2020): replay with the stored logits (dark knowledge) and the labels.

Our own loop: Avalanche 0.6's ``DER`` goes through the strategy template (~2 ms per batch for replay,
FIELD_GUIDE section 5) and a dataset-based buffer; here images and logits are device tensors.
Deviation from the paper, documented: memory (and so logits) is updated at experience ends, as for
every learner here, so an example's stored logits are those of the model at the end of the
experience it came from, not of the model at the step it was seen (no per-step host bookkeeping).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner, check_non_negative
from continual.memory import ClassBalancedReservoir
from continual.memory.logits import LogitReservoir


@LEARNERS.register("derpp")
class DERPPLearner(ClassifierLearner):
    """``CE(current) + alpha * MSE(logits(x1), stored logits) + beta * CE(logits(x2), y2)``.

    ``x1`` and ``x2`` are two independent memory samples of ``replay_batch_size`` images each. The
    MSE runs only over each stored row's recorded columns (the categories known when it was stored).
    Class-only: no attribute heads.
    """

    supports_ddp = True
    supports_online = True  # online, each batch goes to the memory with its training logits

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, replay_batch_size: int = 32,
                 alpha: float = 1.0, beta: float = 1.0,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        check_non_negative(replay_batch_size=replay_batch_size, alpha=alpha, beta=beta)
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        self.memory = LogitReservoir.like(memory, n_classes)
        self.replay_batch_size = replay_batch_size
        self.alpha, self.beta = alpha, beta

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        n, r = len(y), self.replay_batch_size
        if len(self.memory) == 0 or r == 0:  # host-side counters: no sync
            self.last_batch_size = n
            logits = self.train_forward(self.logits, x)  # (B, n_seen)
            self._last_logits = logits.detach()
            return self.step(F.cross_entropy(logits, y))
        x1, _, _, stored, valid = self.memory.sample(r)  # stored, valid: (R, n_classes)
        x2, y2, _, _, _ = self.memory.sample(r)
        # One forward over current + both replay batches: batch norm sees them together.
        logits = self.train_forward(self.logits, torch.cat([x, x1, x2]))  # (B + 2R, n_seen)
        self.last_batch_size = n + 2 * r
        k = logits.shape[1]
        # Stored rows hold at most n_seen real columns; compare only those (squared error, mean per real entry).
        sq = (logits[n:n + r] - stored[:, :k]).pow(2) * valid[:, :k]
        mse = sq.sum() / valid[:, :k].sum().clamp(min=1)
        loss = (F.cross_entropy(logits[:n], y) + self.alpha * mse
                + self.beta * F.cross_entropy(logits[n + r:], y2))
        self._last_logits = logits[:n].detach()
        return self.step(loss)

    def remember(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor, codes: torch.Tensor | None) -> None:
        """Online: the batch goes to the memory with the logits of its training forward (as in the
        paper's per-step reservoir)."""
        self.memory.offer(x, y, y_host, codes, logits=self._last_logits)

    @torch.no_grad()
    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.eval()
        logits = torch.cat([self.logits(x[s:s + 512]) for s in range(0, len(y), 512)])  # (N, n_seen)
        self.memory.update(x, y, codes, logits)
