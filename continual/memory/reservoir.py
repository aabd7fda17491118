"""A class-balanced reservoir of uint8 images, labels and attribute codes, resident on a device.

The memory is filled at experience boundaries rather than per batch: for each class it keeps a
uniform random subset of every example of that class seen so far, which is the distribution a
per-sample reservoir produces, without per-step host-side bookkeeping in the hot loop.
Classes share the capacity equally (water-filling: a class with fewer examples than its share
gives the rest to the others), so class sizes differ by at most one.
"""

from __future__ import annotations

import torch


def balanced_quotas(available: dict[int, int], capacity: int) -> dict[int, int]:
    """Split ``capacity`` over classes as evenly as possible, never above what a class has.

    Water-filling: every class gets ``min(available, level)`` for the largest level that fits,
    and the slots left over go one each to the lowest labels that still have examples, so
    quotas of classes that are not exhausted differ by at most one.
    """
    if sum(available.values()) <= capacity:
        return dict(available)
    level = 0
    # The largest level L with sum(min(a, L)) <= capacity; at most max(available) steps of bisection.
    lo, hi = 0, max(available.values())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(a, mid) for a in available.values()) <= capacity:
            lo = mid
        else:
            hi = mid - 1
    level = lo
    quotas = {c: min(a, level) for c, a in available.items()}
    left = capacity - sum(quotas.values())
    for c in sorted(available):
        if left == 0:
            break
        if available[c] > level:
            quotas[c] += 1
            left -= 1
    return quotas


class ClassBalancedReservoir:
    """Fixed-capacity replay memory; ``capacity=0`` disables replay."""

    def __init__(self, capacity: int, image_shape: tuple[int, ...], n_attributes: int = 0,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"memory.size must be >= 0, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self.x = torch.zeros((capacity, *image_shape), dtype=torch.uint8, device=self.device)
        self.y = torch.zeros(capacity, dtype=torch.long, device=self.device)
        self.codes = torch.zeros((capacity, n_attributes), dtype=torch.long, device=self.device)
        self.size = 0
        self.seen: dict[int, int] = {}  # examples of each class offered so far
        self._update_gen = torch.Generator().manual_seed(seed)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(seed + 1)

    def __len__(self) -> int:
        return self.size

    def class_counts(self) -> dict[int, int]:
        """Examples held per class."""
        labels, counts = torch.unique(self.y[: self.size], return_counts=True)
        return dict(zip(labels.tolist(), counts.tolist()))

    def update(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None = None) -> None:
        """Offer a whole experience's examples; called once per experience, outside the hot loop."""
        if self.capacity == 0:
            return
        if codes is None:
            codes = torch.zeros((len(y), self.codes.shape[1]), dtype=torch.long, device=y.device)
        old_y = self.y[: self.size]
        new_labels, new_counts = torch.unique(y, return_counts=True)
        held = self.class_counts()
        offered = {int(c): int(n) for c, n in zip(new_labels.tolist(), new_counts.tolist())}
        seen_before = dict(self.seen)
        for c, n in offered.items():
            self.seen[c] = self.seen.get(c, 0) + n
        available = {c: held.get(c, 0) + offered.get(c, 0) for c in set(held) | set(offered)}
        quotas = balanced_quotas(available, self.capacity)

        keep_old, keep_new = [], []
        for c, q in sorted(quotas.items()):
            old_idx = (old_y == c).nonzero().squeeze(1).cpu()
            new_idx = (y == c).nonzero().squeeze(1).cpu()
            # How many of the q slots go to earlier examples: as if drawing q of all seen uniformly.
            n_before = seen_before.get(c, 0)
            draw = torch.randperm(n_before + len(new_idx), generator=self._update_gen)[:q]
            from_old = min(int((draw < n_before).sum()), len(old_idx))
            from_new = min(q - from_old, len(new_idx))
            from_old = q - from_new  # top up from the other side when one runs short
            keep_old.append(old_idx[torch.randperm(len(old_idx), generator=self._update_gen)[:from_old]])
            keep_new.append(new_idx[torch.randperm(len(new_idx), generator=self._update_gen)[:from_new]])
        old_sel = torch.cat(keep_old).to(self.device) if keep_old else torch.empty(0, dtype=torch.long)
        new_sel = torch.cat(keep_new).to(y.device) if keep_new else torch.empty(0, dtype=torch.long)
        xs = torch.cat([self.x[old_sel], x[new_sel].to(self.device)])
        ys = torch.cat([self.y[old_sel], y[new_sel].to(self.device)])
        cs = torch.cat([self.codes[old_sel], codes[new_sel].to(self.device)])
        self.size = len(ys)
        self.x[: self.size], self.y[: self.size], self.codes[: self.size] = xs, ys, cs

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` examples drawn uniformly with replacement; indices are drawn on the device (no sync)."""
        idx = torch.randint(self.size, (n,), device=self.device, generator=self._sample_gen)
        return self.x[idx], self.y[idx], self.codes[idx]

    def state_dict(self) -> dict:
        """Tensors and counters needed to restore the memory exactly."""
        return {
            "x": self.x[: self.size].clone(), "y": self.y[: self.size].clone(),
            "codes": self.codes[: self.size].clone(), "seen": dict(self.seen),
            "update_gen": self._update_gen.get_state(), "sample_gen": self._sample_gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = len(state["y"])
        if n > self.capacity:
            raise ValueError(f"memory state holds {n} examples but memory.size is {self.capacity}")
        self.size = n
        self.x[:n], self.y[:n], self.codes[:n] = state["x"], state["y"], state["codes"]
        self.seen = {int(k): int(v) for k, v in state["seen"].items()}
        self._update_gen.set_state(state["update_gen"])
        self._sample_gen.set_state(state["sample_gen"])
