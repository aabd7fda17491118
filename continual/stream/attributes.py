"""Attribute vocabularies and the attribute vectors of categories: one-of-k blocks or continuous.

One-of-k (the embedded world, Omniglot): a category is a combination of one value per attribute,
stored as an integer *code* ``(shape, colour, pattern, size)``. Its attribute vector is the
concatenation of one one-hot block per attribute (``dim = sum of block sizes``), the description a
zero-shot learner reads.

Continuous (CUB's 312 attributes, the GBU class-attribute matrices, ``AttributeSpace.continuous_space``):
every attribute is present to a degree, a float *code* in [0, 1] (the share of a category's images
that show it), and the code row is itself the attribute vector (``dim = number of attributes``).
A learner models each as an independent Bernoulli with that soft target (``AttributeHead``).
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
    """Named attributes, each with a tuple of values; codes index into the values.

    A continuous space (``continuous_space``) has no values: its codes are floats in [0, 1].
    """

    names: tuple[str, ...] = ("shape", "colour", "pattern", "size")
    values: tuple[tuple[str, ...], ...] = (SHAPES, COLOURS, PATTERNS, SIZES)
    continuous: bool = False
    groups: tuple[str, ...] | None = None  # a group name per attribute (CUB's 28 body parts), or None
    # What the data's maker knows varies one attribute and leaves the others: (transform, attributes it
    # changes) pairs, e.g. permuting the colour channels of a world image changes its colour only.
    # A learner may train the other attributes' heads on such variations (continual.learner.nuisance).
    nuisances: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.continuous and self.values:
            raise ValueError("a continuous attribute space has no values (its codes are degrees in [0, 1])")
        if not self.continuous and len(self.values) != len(self.names):
            raise ValueError(f"{len(self.names)} attribute names but {len(self.values)} value tuples")
        for transform, changed in self.nuisances:
            unknown = [a for a in changed if a not in self.names]
            if unknown:
                raise ValueError(f"nuisance {transform!r} changes attributes {unknown} that the space does not have "
                                 f"(it has {list(self.names)})")
        if self.groups is not None and len(self.groups) != len(self.names):
            raise ValueError(f"groups names a group per attribute: {len(self.names)} attributes, "
                             f"{len(self.groups)} groups")

    @classmethod
    def continuous_space(cls, names: tuple[str, ...], groups: tuple[str, ...] | None = None) -> "AttributeSpace":
        """A space of ``len(names)`` continuous attributes (codes: floats in [0, 1]), optionally grouped."""
        names = tuple(str(n) for n in names)
        if not names:
            raise ValueError("a continuous attribute space needs at least one attribute name")
        if len(set(names)) != len(names):
            raise ValueError("attribute names must be distinct")
        return cls(names=names, values=(), continuous=True,
                   groups=None if groups is None else tuple(str(g) for g in groups))

    @property
    def sizes(self) -> tuple[int, ...]:
        """One-of-k block sizes; ``()`` for a continuous space, which has no blocks (what the learners
        receive as ``attribute_blocks``: ``()`` says one Bernoulli per attribute)."""
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
        return len(self.names) if self.continuous else sum(self.sizes)

    @property
    def n_combinations(self) -> int:
        if self.continuous:
            raise ValueError("a continuous attribute space has no finite set of combinations")
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Attribute vectors ``(N, dim)`` float: one-hot blocks from integer codes ``(N, n_attributes)``,
        or, in a continuous space, the float codes ``(N, n_attributes)`` in [0, 1] themselves (checked)."""
        if self.continuous:
            return self._continuous_vectors(codes)
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != len(self.names):
            raise ValueError(f"codes must have shape (N, {len(self.names)}), got {tuple(codes.shape)}")
        out = torch.zeros(codes.shape[0], self.dim)
        for k, offset in enumerate(self.offsets):
            out[torch.arange(codes.shape[0]), offset + codes[:, k]] = 1.0
        return out

    def _continuous_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.names):
            raise ValueError(f"continuous attribute codes must have shape (N, {len(self.names)}), "
                             f"got {tuple(codes.shape)}")
        if not (codes.is_floating_point() or codes.dtype in (torch.uint8, torch.int32, torch.int64, torch.bool)):
            raise ValueError(f"continuous attribute codes must be numbers in [0, 1], got {codes.dtype}")
        out = codes.float()
        if out.numel() and not (bool(torch.isfinite(out).all()) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0):
            bad = out[~(torch.isfinite(out) & (out >= 0) & (out <= 1))]
            raise ValueError(f"continuous attribute codes must lie in [0, 1] (rescale the class-attribute "
                             f"matrix, e.g. divide by its max); {bad.numel()} values outside, e.g. {float(bad[0])}")
        return out

    def describe(self, code) -> str:
        """Human-readable description, e.g. ``'large red striped circle'`` (continuous: the strongest attributes)."""
        if self.continuous:
            strength = torch.as_tensor(code, dtype=torch.float).flatten()
            top = strength.argsort(descending=True)[:3].tolist()
            return ", ".join(f"{self.names[k]} {float(strength[k]):.2f}" for k in top)
        parts = {n: self.values[k][int(code[k])] for k, n in enumerate(self.names)}
        return " ".join(parts.get(n, "") for n in ("size", "colour", "pattern", "shape")).strip()


# The world renders a colour from a palette onto an object; permuting the image's RGB channels gives
# the same object (shape, pattern, size) in another colour (or the same, for white).
# Permuting an image's colour channels changes its object's colour only; closing it (continual.learner.nuisance)
# fills the pattern's thin dark marks and keeps the outline: the pattern changes, not the shape or size.
WORLD_ATTRIBUTES = AttributeSpace(nuisances=(("channel_permute", ("colour",)), ("erase_texture", ("pattern",))))
