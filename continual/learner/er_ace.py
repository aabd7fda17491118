"""ER-ACE (Caccia et al., ICLR 2022): experience replay with an asymmetric cross-entropy.

The current batch's loss chooses only among the categories present in that batch, so new categories
do not push old ones' logits down; the replayed batch's loss chooses among every category seen.
Our own loop: Avalanche 0.6's ``ER_ACE`` runs through the strategy template (~2 ms per batch for
replay, FIELD_GUIDE section 5) with its own dataset-based buffer; this uses our tensor memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from continual.learner.base import LEARNERS
from continual.learner.common import masked_cross_entropy, present_classes_mask
from continual.learner.er import ERLearner


@LEARNERS.register("er_ace")
class ERACELearner(ERLearner):
    """``CE(current | classes in the current batch) + CE(replay | all seen classes)``. Class-only.

    Same construction (and config keys) as ER; only the loss differs.
    """

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        n = len(y)
        replay = len(self.memory) > 0 and self.replay_batch_size > 0  # host-side counters: no sync
        if replay:
            xr, yr, _ = self.memory.sample(self.replay_batch_size)
            x = torch.cat([x, xr])
        self.last_batch_size = len(x)
        logits = self.logits(x)  # (B + R, n_seen), one forward so batch norm sees both parts together
        allowed = present_classes_mask(y, logits.shape[1])  # (n_seen,) classes in the current batch
        loss = masked_cross_entropy(logits[:n], y, allowed)
        if replay:
            loss = loss + F.cross_entropy(logits[n:], yr)
        return self.step(loss)

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self.memory.update(x, y, codes)
