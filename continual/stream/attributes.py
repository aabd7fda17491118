"""The attribute vocabulary of the embedded world and the binary attribute vectors of categories.

A category is a combination of one value per attribute, stored as an integer *code*
``(shape, colour, pattern, size)``. Its attribute vector is the concatenation of one one-hot
block per attribute (``dim = sum of block sizes``), the description a zero-shot learner reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "ring", "hexagon")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
PATTERNS = ("plain", "stripes", "dots", "checks")
SIZES = ("small", "large")

# RGB in [0, 1]; far apart so that hue jitter never moves one colour onto another.
PALETTE = (
    (0.90, 0.10, 0.10),  # red
    (0.95, 0.55, 0.05),  # orange
    (0.95, 0.90, 0.10),  # yellow
    (0.15, 0.75, 0.20),  # green
    (0.10, 0.85, 0.90),  # cyan
    (0.15, 0.25, 0.95),  # blue
    (0.65, 0.15, 0.85),  # purple
    (0.95, 0.95, 0.95),  # white
)


@dataclass(frozen=True)
class AttributeSpace:
    """Named attributes, each with a tuple of values; codes index into the values."""

    names: tuple[str, ...] = ("shape", "colour", "pattern", "size")
    values: tuple[tuple[str, ...], ...] = (SHAPES, COLOURS, PATTERNS, SIZES)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for n in self.sizes:
            out.append(total)
            total += n
        return tuple(out)

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @property
    def n_combinations(self) -> int:
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Binary attribute vectors ``(N, dim)`` float from integer codes ``(N, n_attributes)``."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != len(self.names):
            raise ValueError(f"codes must have shape (N, {len(self.names)}), got {tuple(codes.shape)}")
        out = torch.zeros(codes.shape[0], self.dim)
        for k, offset in enumerate(self.offsets):
            out[torch.arange(codes.shape[0]), offset + codes[:, k]] = 1.0
        return out

    def describe(self, code) -> str:
        """Human-readable description, e.g. ``'large red striped circle'``."""
        parts = {n: self.values[k][int(code[k])] for k, n in enumerate(self.names)}
        return " ".join(parts.get(n, "") for n in ("size", "colour", "pattern", "shape")).strip()


WORLD_ATTRIBUTES = AttributeSpace()
