"""A class-balanced reservoir that also keeps each example's logits, for DER / DER++.

Logits grow with the categories: an example stored after experience e has logits for the
categories known then, so every row is padded with zeros to ``n_classes`` (all the stream may
bring) and ``n_logits`` says how many of its columns are real.

Which examples the reservoir keeps is decided inside ``ClassBalancedReservoir.update``; to keep
the logits aligned without copying that logic, each example carries its provenance in one extra
attribute-code column through the update (its old slot, or ``capacity + i`` for the i-th offered
example), and the logit rows are gathered from that column afterwards.
"""

from __future__ import annotations

import torch

from continual.memory.reservoir import ClassBalancedReservoir


class LogitReservoir(ClassBalancedReservoir):
    """``ClassBalancedReservoir`` plus ``(capacity, n_classes)`` float32 logits and their valid widths."""

    def __init__(self, capacity: int, image_shape: tuple[int, ...], n_classes: int, n_attributes: int = 0,
                 device: torch.device | str = "cpu", seed: int = 0, x_dtype: torch.dtype = torch.uint8,
                 codes_dtype: torch.dtype = torch.long) -> None:
        # One more code column than the stream's attributes: the provenance of each example (in the codes'
        # dtype: float codes hold slot numbers exactly up to 2**24).
        super().__init__(capacity, image_shape, n_attributes + 1, device=device, seed=seed, x_dtype=x_dtype,
                         codes_dtype=codes_dtype)
        self.n_attributes = n_attributes
        self.logits = torch.zeros((capacity, n_classes), dtype=torch.float32, device=self.device)
        self.n_logits = torch.zeros(capacity, dtype=torch.long, device=self.device)

    @classmethod
    def like(cls, memory: ClassBalancedReservoir, n_classes: int) -> "LogitReservoir":
        """An empty logit reservoir with ``memory``'s capacity, image shape, device and random state."""
        image_shape = tuple(memory.x.shape[1:])
        out = cls(memory.capacity, image_shape, n_classes, memory.codes.shape[1], device=memory.device,
                  x_dtype=memory.x.dtype, codes_dtype=memory.codes.dtype)
        state = memory.state_dict()  # the generator states, so the same seed keeps the same draws
        out._update_gen.set_state(state["update_gen"])
        out._sample_gen.set_state(state["sample_gen"])
        return out

    def update(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None = None,
               logits: torch.Tensor | None = None) -> None:
        """Offer a whole experience's examples with their ``(N, n_seen)`` logits (required)."""
        if self.capacity == 0:
            return
        if logits is None:
            raise ValueError("LogitReservoir.update needs the offered examples' logits")
        n = len(y)
        if codes is None:
            codes = torch.zeros((n, self.n_attributes), dtype=self.codes.dtype, device=y.device)
        # Provenance: stored rows point at their slot, offered rows at capacity + their index.
        self.codes[: self.size, -1] = torch.arange(self.size, device=self.device)
        offered_ids = torch.arange(self.capacity, self.capacity + n, device=y.device, dtype=codes.dtype)
        super().update(x, y, torch.cat([codes, offered_ids[:, None]], dim=1))

        source = self.codes[: self.size, -1].long()  # (size,) provenance of every kept example
        is_new = source >= self.capacity
        padded = torch.zeros((n, self.logits.shape[1]), dtype=torch.float32, device=self.device)
        padded[:, : logits.shape[1]] = logits.float().to(self.device)  # (N, n_classes)
        new_rows = padded[(source - self.capacity).clamp(0, n - 1)]
        old_rows = self.logits[source.clamp(max=self.capacity - 1)]
        self.logits[: self.size] = torch.where(is_new[:, None], new_rows, old_rows)
        old_widths = self.n_logits[source.clamp(max=self.capacity - 1)]
        self.n_logits[: self.size] = torch.where(is_new, logits.shape[1], old_widths)

    def offer(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor, codes: torch.Tensor | None = None,
              logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Offer a mini-batch as it arrives (online) with its ``(B, n_seen)`` logits (required):
        ``ClassBalancedReservoir.offer``, then the kept rows' logits in one indexed write (no sync)."""
        if self.capacity == 0:
            return None
        if logits is None:
            raise ValueError("LogitReservoir.offer needs the offered examples' logits")
        n = len(y)
        if codes is None:
            codes = torch.zeros((n, self.n_attributes), dtype=self.codes.dtype, device=y.device)
        # The provenance column only matters inside ``update``, which rewrites it; online it stays 0.
        codes = torch.cat([codes, codes.new_zeros(n, 1)], dim=1)
        written = super().offer(x, y, y_host, codes)
        if written is None:
            return None
        dst, src = written
        padded = torch.zeros((n, self.logits.shape[1]), dtype=torch.float32, device=self.device)
        padded[:, : logits.shape[1]] = logits.float().to(self.device)  # (B, n_classes)
        self.logits[dst] = padded[src]
        self.n_logits[dst] = logits.shape[1]
        return written

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` examples drawn uniformly with replacement, on the device (no sync).

        Returns ``x, y, codes (n, n_attributes), logits (n, n_classes), valid (n, n_classes) bool``.
        """
        idx = torch.randint(self.size, (n,), device=self.device, generator=self._sample_gen)
        cols = torch.arange(self.logits.shape[1], device=self.device)
        valid = cols[None, :] < self.n_logits[idx, None]  # (n, n_classes) columns recorded for each row
        return self.x[idx], self.y[idx], self.codes[idx, :-1], self.logits[idx], valid

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["logits"] = self.logits[: self.size].clone()
        state["n_logits"] = self.n_logits[: self.size].clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.logits[: self.size] = state["logits"]
        self.n_logits[: self.size] = state["n_logits"]
