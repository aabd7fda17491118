"""A class-balanced reservoir of uint8 images, labels and attribute codes, resident on a device.

Two ways to fill it:

- ``update`` (experience streams) at experience boundaries: for each class it keeps a uniform random
  subset of every example of that class seen so far, which is the distribution a per-sample
  reservoir produces, without per-step host-side bookkeeping in the hot loop. Classes share the
  capacity equally (water-filling: a class with fewer examples than its share gives the rest to the
  others), so class sizes differ by at most one.
- ``offer`` (online streams) with every mini-batch as it arrives: class-balancing reservoir sampling
  (CBRS, Chrysakis & Moens, ICML 2020), decided on the host from labels the data source already has
  there, then one indexed write per tensor on the device: no host-device sync per step.

A host mirror of the stored labels (``y_host``, plus per-class slot lists derived from it) is what
``offer`` decides from and what ``class_counts`` reads, so neither reads the device.
"""

from __future__ import annotations

import bisect

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
    """Fixed-capacity replay memory; ``capacity=0`` disables replay.

    Every tensor attribute is a per-slot array of ``capacity`` rows, of which the first ``size`` are
    filled (``continual.memory.budget`` counts the memory's bytes from that convention).
    """

    def __init__(self, capacity: int, image_shape: tuple[int, ...], n_attributes: int = 0,
                 device: torch.device | str = "cpu", seed: int = 0, x_dtype: torch.dtype = torch.uint8,
                 codes_dtype: torch.dtype = torch.long) -> None:
        if capacity < 0:
            raise ValueError(f"memory.size must be >= 0, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        # uint8 images by default; float32 for a stream of feature vectors (GBU), float codes for
        # continuous attributes. Writes of another dtype are refused (``_check_dtypes``): a float
        # feature silently cast into a uint8 slot would be garbage.
        self.x = torch.zeros((capacity, *image_shape), dtype=x_dtype, device=self.device)
        self.y = torch.zeros(capacity, dtype=torch.long, device=self.device)
        self.codes = torch.zeros((capacity, n_attributes), dtype=codes_dtype, device=self.device)
        self.y_host = torch.zeros(capacity, dtype=torch.long)  # (capacity,) mirror of ``y`` on the host
        self.size = 0
        self.seen: dict[int, int] = {}  # examples of each class offered so far
        # CBRS's "full" classes: those that have been among the largest since the memory filled up.
        self.full_classes: set[int] = set()
        self._update_gen = torch.Generator().manual_seed(seed)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self._index_host()

    def __len__(self) -> int:
        return self.size

    def class_counts(self) -> dict[int, int]:
        """Examples held per class, by label (from the host mirror: no device read)."""
        return {c: len(self._slots[c]) for c in sorted(self._slots)}

    # -- the host mirror --------------------------------------------------------------------------
    # ``_slots[c]``: the sorted slots holding class c; ``_by_count[n]``: the sorted classes holding n >= 1
    # examples; ``_largest``: the largest n. All three follow from ``y_host[:size]`` alone (sorted, not
    # in insertion order), so a memory restored from a checkpoint decides exactly as the original.

    def _index_host(self) -> None:
        """Rebuild the per-class slot lists from ``y_host[:size]`` (after ``update`` or a load)."""
        self._slots: dict[int, list[int]] = {}
        for slot, c in enumerate(self.y_host[: self.size].tolist()):
            self._slots.setdefault(c, []).append(slot)
        self._by_count: dict[int, list[int]] = {}
        for c in sorted(self._slots):
            self._by_count.setdefault(len(self._slots[c]), []).append(c)
        self._largest = max(self._by_count, default=0)

    def _recount(self, c: int, old: int, new: int) -> None:
        """Class ``c`` now holds ``new`` examples instead of ``old``."""
        if old > 0:
            classes = self._by_count[old]
            del classes[bisect.bisect_left(classes, c)]
            if not classes:
                del self._by_count[old]
        if new > 0:
            bisect.insort(self._by_count.setdefault(new, []), c)

    def _give(self, c: int, slot: int) -> None:
        slots = self._slots.setdefault(c, [])
        bisect.insort(slots, slot)
        self._recount(c, len(slots) - 1, len(slots))

    def _take(self, c: int, position: int) -> int:
        """Remove the ``position``-th slot of class ``c`` from its list; returns the slot."""
        slots = self._slots[c]
        slot = slots.pop(position)
        self._recount(c, len(slots) + 1, len(slots))
        if not slots:
            del self._slots[c]
        return slot

    def _mark_full(self) -> None:
        """After a change of counts in a full memory: the classes now largest are full (CBRS)."""
        if self._largest not in self._by_count:  # the largest class gave a slot away: max fell by one
            self._largest -= 1
        self.full_classes.update(self._by_count.get(self._largest, ()))

    def _place(self, c: int, u_keep: float, u_pick: float) -> int | None:
        """CBRS for one example of class ``c``: the slot it is written to, or None when dropped.

        ``u_keep``, ``u_pick``: two uniform draws in [0, 1) from the host generator.
        """
        self.seen[c] = self.seen.get(c, 0) + 1
        if self.size < self.capacity:  # not full yet: store
            slot = self.size
            self.size += 1
            self._give(c, slot)
            self._largest = max(self._largest, len(self._slots[c]))
            if self.size == self.capacity:
                self.full_classes = set(self._by_count[self._largest])
            return slot
        if c not in self.full_classes:
            # Replace a uniformly chosen example of the largest classes (all hold ``_largest``). A class
            # that is not full holds fewer than ``_largest``, so it never replaces one of its own.
            tied, m = self._by_count[self._largest], self._largest
            k = min(int(u_pick * len(tied) * m), len(tied) * m - 1)
            slot = self._take(tied[k // m], k % m)
            self._give(c, slot)
            self._mark_full()
            return slot
        held = len(self._slots.get(c, ()))
        if u_keep * self.seen[c] < held:  # with probability held / seen: a reservoir within the class
            return self._slots[c][min(int(u_pick * held), held - 1)]
        return None

    # -- filling ----------------------------------------------------------------------------------

    def offer(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor,
              codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Offer a mini-batch as it arrives (online streams): class-balancing reservoir sampling.

        ``x`` (B, C, H, W) uint8 and ``y`` (B,) long on the device, ``y_host`` (B,) the same labels on
        the CPU, ``codes`` (B, A) or None. Once full, an example of a class that is not *full* (has not
        been among the largest classes since the memory filled up) replaces a random example of the
        largest classes; an example of a full class replaces a random example of its own class with
        probability stored / seen of that class, else it is dropped (Chrysakis & Moens 2020, Alg. 1).
        So a class that ever lost or dropped an example holds at least ``max class size - 1``, and
        within a class the examples kept are a uniform sample of those seen while it was full.

        Decisions come from ``y_host``, the host mirror and the host generator; the device gets one
        indexed write per tensor (no read of ``self.y``, no sync). Two examples of the batch that
        land in one slot: the later one wins, as in the sequential algorithm. Returns the written
        ``(slots, batch rows)`` as device index tensors (for subclasses storing more per slot), or None.
        """
        if self.capacity == 0:
            return None
        self._check_dtypes(x, codes)
        if y_host.device.type != "cpu":
            raise ValueError(f"offer needs the labels on the host (y_host), got a tensor on {y_host.device}")
        if len(y_host) != len(y):
            raise ValueError(f"offer got {len(y)} labels on the device but {len(y_host)} on the host")
        labels = y_host.tolist()
        draws = torch.rand((len(labels), 2), generator=self._update_gen).tolist()  # (B, 2) host draws
        writes: dict[int, int] = {}  # slot -> batch row; a later row overwrites an earlier one
        for i, (c, (u_keep, u_pick)) in enumerate(zip(labels, draws)):
            slot = self._place(c, u_keep, u_pick)
            if slot is not None:
                writes[slot] = i
        if not writes:
            return None
        index = torch.tensor([list(writes), list(writes.values())])  # (2, W) slots, batch rows
        self.y_host[index[0]] = y_host[index[1]]
        if self.device.type == "cuda":  # pinned, so the copy is queued on the stream, not waited for
            index = index.pin_memory()
        index = index.to(self.device, non_blocking=True)
        dst, src = index[0], index[1]
        self.x[dst] = x[src].to(self.device)
        self.y[dst] = y[src].to(self.device)
        if codes is not None:
            self.codes[dst] = codes[src].to(self.device)
        else:
            self.codes[dst] = 0
        return dst, src

    def update(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None = None) -> None:
        """Offer a whole experience's examples; called once per experience, outside the hot loop."""
        if self.capacity == 0:
            return
        self._check_dtypes(x, codes)
        if codes is None:
            codes = torch.zeros((len(y), self.codes.shape[1]), dtype=self.codes.dtype, device=y.device)
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
        self.y_host[: self.size] = ys.cpu()  # once per experience: a sync is fine here
        self._after_bulk_write()

    def _check_dtypes(self, x: torch.Tensor, codes: torch.Tensor | None) -> None:
        """Refuse examples whose images or codes are not of the memory's dtypes (host-side: no sync)."""
        if x.dtype != self.x.dtype:
            raise ValueError(f"the replay memory stores {self.x.dtype} inputs, got {x.dtype}: build it with "
                             f"x_dtype={x.dtype} (the stream's train_x dtype)")
        if codes is not None and codes.dtype != self.codes.dtype:
            raise ValueError(f"the replay memory stores {self.codes.dtype} attribute codes, got {codes.dtype}: "
                             f"build it with codes_dtype={codes.dtype} (float for continuous attributes)")

    def _after_bulk_write(self) -> None:
        """Re-index the mirror after ``update`` or a load; the largest classes of a full memory are full."""
        self._index_host()
        self.full_classes = set(self._by_count[self._largest]) if 0 < self.capacity == self.size else set()

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` examples drawn uniformly with replacement; indices are drawn on the device (no sync)."""
        idx = torch.randint(self.size, (n,), device=self.device, generator=self._sample_gen)
        return self.x[idx], self.y[idx], self.codes[idx]

    def state_dict(self) -> dict:
        """Tensors and counters needed to restore the memory exactly."""
        return {
            "x": self.x[: self.size].clone(), "y": self.y[: self.size].clone(),
            "codes": self.codes[: self.size].clone(), "seen": dict(self.seen),
            "y_host": self.y_host[: self.size].clone(), "full_classes": sorted(self.full_classes),
            "update_gen": self._update_gen.get_state(), "sample_gen": self._sample_gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = len(state["y"])
        if n > self.capacity:
            raise ValueError(f"memory state holds {n} examples but memory.size is {self.capacity}")
        self.size = n
        self.x[:n], self.y[:n], self.codes[:n] = state["x"], state["y"], state["codes"]
        # Checkpoints from before the mirror existed: rebuild it from the labels (a read, once).
        self.y_host[:n] = state["y_host"] if "y_host" in state else state["y"].cpu()
        self.seen = {int(k): int(v) for k, v in state["seen"].items()}
        self._after_bulk_write()
        if "full_classes" in state:
            self.full_classes = {int(c) for c in state["full_classes"]}
        self._update_gen.set_state(state["update_gen"])
        self._sample_gen.set_state(state["sample_gen"])
