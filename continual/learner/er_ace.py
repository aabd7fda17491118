"""ER-ACE (Caccia et al., ICLR 2022): experience replay with an asymmetric cross-entropy.

The current batch's loss chooses only among the categories present in that batch, so new categories
do not push old ones' logits down; the replayed batch's loss chooses among every category seen.
Our own loop: Avalanche 0.6's ``ER_ACE`` runs through the strategy template (~2 ms per batch for
replay, FIELD_GUIDE section 5) with its own dataset-based buffer; this uses our tensor memory.

Why a second, per-step buffer: ER-ACE assumes a reservoir filled at every step (as in the paper
and Mammoth), so the experience in progress is replayed too, and that replay (over all classes) is
the only term that ranks the new categories against the old ones. Our memory is filled at
experience ends; replaying it alone left each new experience at 14-36% right after training on it
(default world stream). So replay draws from the memory and from ``RecentReservoir``, a uniform
sample of the current experience's images so far, in the proportion a whole-stream reservoir
would hold them (presentations this experience / all presentations).

On an online stream (``online=True``, set by the experiment) the memory itself is filled at every
step (``remember``, as for ER), which is the paper's setting: the recent buffer is not needed and not
allocated, so at equal bytes ER-ACE holds as many examples as ER.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from continual.learner.base import LEARNERS
from continual.learner.common import masked_cross_entropy, present_classes_mask
from continual.learner.er import ERLearner
from continual.memory import ClassBalancedReservoir


class RecentReservoir:
    """A uniform sample of at most ``capacity`` of the current experience's images seen so far.

    Vitter's algorithm R, vectorised on the device: the i-th image offered goes to slot i while
    there is room, then replaces a uniformly drawn slot with probability ``capacity / (i + 1)``.
    A dropped image writes to one spare row (never sampled) instead of branching on the host: no sync.
    """

    def __init__(self, capacity: int, image_shape: tuple[int, ...], device: torch.device | str,
                 x_dtype: torch.dtype = torch.uint8) -> None:
        self.capacity = capacity
        self.x = torch.zeros((capacity + 1, *image_shape), dtype=x_dtype, device=device)  # the memory's dtype
        self.y = torch.zeros(capacity + 1, dtype=torch.long, device=device)
        self.seen = 0  # images offered this experience (a host-side count)
        self.generator = torch.Generator(device=device)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def reset(self) -> None:
        self.seen = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        g = torch.arange(self.seen, self.seen + len(y), device=y.device)  # (B,) positions in the experience
        draw = (torch.rand(len(y), device=y.device, generator=self.generator) * (g + 1)).long()  # in [0, g]
        slot = torch.where(g < self.capacity, g, draw).clamp(max=self.capacity)  # past the end: spare row
        # Two images of one batch drawing the same slot: the later one wins, as in the sequential
        # algorithm. Writes must be unique, or image and label could come from different images.
        later = torch.ones(len(y), len(y), dtype=torch.bool, device=y.device).triu(1)  # (B, B) j > i
        overwritten = ((slot[:, None] == slot[None, :]) & later).any(1)  # (B,)
        slot = torch.where(overwritten, self.capacity, slot)
        self.x[slot], self.y[slot] = x, y
        self.seen += len(y)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self), (n,), device=self.y.device, generator=self.generator)
        return self.x[idx], self.y[idx]


@LEARNERS.register("er_ace")
class ERACELearner(ERLearner):
    """``CE(current | classes in the current batch) + CE(replay | all seen classes)``. Class-only.

    Same config keys as ER; the loss differs, and replay also draws from the experience in
    progress (see the module docstring).
    """

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, replay_batch_size: int = 32,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False,
                 online: bool = False) -> None:
        super().__init__(n_classes=n_classes, image_shape=image_shape, memory=memory,
                         replay_batch_size=replay_batch_size, backbone=backbone, backbone_args=backbone_args,
                         optimizer=optimizer, lr=lr, weight_decay=weight_decay, amp=amp, channels_last=channels_last)
        self.recent = None if online else RecentReservoir(memory.capacity, image_shape, memory.device,
                                                                 memory.x.dtype)
        if self.recent is not None:
            # Seeded from the global generator (set from the run's seed), after the weights are drawn.
            self.recent.generator.manual_seed(int(torch.randint(2**62, ())))
        self.presented_before = 0  # images presented in earlier experiences (epochs included)

    def begin_experience(self, experience: int, new_classes: list[int]) -> None:
        super().begin_experience(experience, new_classes)
        self.presented_before += self.recent.seen
        self.recent.reset()

    def _replay(self, r: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``r`` replay images: from the memory and the current experience, as one reservoir would hold them."""
        if self.recent is None:  # online: the memory is filled at every step
            return self.memory.sample(r)[:2] if len(self.memory) > 0 and r > 0 else None
        total = self.presented_before + self.recent.seen
        r_new = round(r * self.recent.seen / total) if total > 0 and len(self.recent) > 0 else 0
        r_old = r - r_new if len(self.memory) > 0 else 0
        parts = []
        if r_old > 0:
            parts.append(self.memory.sample(r_old)[:2])
        if r_new > 0:
            parts.append(self.recent.sample(r_new))
        if not parts:
            return None
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        n = len(y)
        replay = self._replay(self.replay_batch_size)  # host-side counters only: no sync
        x_all = torch.cat([x, replay[0]]) if replay is not None else x
        self.last_batch_size = len(x_all)
        logits = self.train_forward(self.logits, x_all)  # (B + R, n_seen), one forward so batch norm sees both parts together
        allowed = present_classes_mask(y, logits.shape[1])  # (n_seen,) classes in the current batch
        loss = masked_cross_entropy(logits[:n], y, allowed)
        if replay is not None:
            loss = loss + F.cross_entropy(logits[n:], replay[1])
        loss = self.step(loss)
        if self.recent is not None:
            self.recent.add(x, y)  # after the step, as a per-step reservoir is filled
        return loss

    def checkpoint_state(self) -> dict:
        if self.recent is None:
            return super().checkpoint_state()
        # Checkpoints may fall inside an experience: the recent buffer's images go with them.
        n = len(self.recent)
        return {**super().checkpoint_state(), "presented_before": self.presented_before,
                "recent_seen": self.recent.seen, "recent_generator": self.recent.generator.get_state(),
                "recent_x": self.recent.x[:n].clone(), "recent_y": self.recent.y[:n].clone()}

    def load_checkpoint_state(self, state: dict) -> None:
        super().load_checkpoint_state(state)
        if self.recent is None:
            return
        self.presented_before = int(state["presented_before"])
        self.recent.seen = int(state["recent_seen"])
        self.recent.generator.set_state(state["recent_generator"])
        n = len(self.recent)
        self.recent.x[:n], self.recent.y[:n] = state["recent_x"], state["recent_y"]
