"""Which categories arrive when, how many images each gets, and which are held out.

Pure bookkeeping over integer attribute codes, no pixels: the world renders afterwards.
Stream labels are assigned in arrival order (experience 0's categories get 0..k-1, ...),
held-out categories come last, so "the classes seen so far" is always a prefix ``0..n-1``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from continual.stream.attributes import AttributeSpace


@dataclass(frozen=True)
class SplitSettings:
    """How a stream of novel categories is drawn from an attribute space."""

    n_experiences: int = 5
    categories_per_experience: int = 8
    n_heldout: int = 10
    train_per_category: int = 100  # images of the most frequent category when long-tailed
    test_per_category: int = 30
    long_tail_exponent: float = 0.0  # Zipf exponent s: count(rank r) ~ r^-s; 0 = balanced
    min_train_per_category: int = 5
    sibling_fraction: float = 0.5  # share of stream categories drawn as one-attribute siblings
    seed: int = 0

    def validate(self, space: AttributeSpace, prefix: str = "benchmark") -> None:
        """Raise ValueError naming the config key of the first impossible value."""
        positive = ("n_experiences", "categories_per_experience", "train_per_category",
                    "test_per_category", "min_train_per_category")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{prefix}.{key} must be >= 1, got {getattr(self, key)}")
        if self.n_heldout < 0:
            raise ValueError(f"{prefix}.n_heldout must be >= 0, got {self.n_heldout}")
        if self.long_tail_exponent < 0:
            raise ValueError(f"{prefix}.long_tail_exponent must be >= 0, got {self.long_tail_exponent}")
        if not 0.0 <= self.sibling_fraction <= 1.0:
            raise ValueError(f"{prefix}.sibling_fraction must be in [0, 1], got {self.sibling_fraction}")
        if self.min_train_per_category > self.train_per_category:
            raise ValueError(
                f"{prefix}.min_train_per_category ({self.min_train_per_category}) exceeds "
                f"{prefix}.train_per_category ({self.train_per_category})")
        n_stream = self.n_experiences * self.categories_per_experience
        # Held-out categories need unused combinations; keep a margin so sampling terminates.
        if n_stream + self.n_heldout > space.n_combinations // 2:
            raise ValueError(
                f"{prefix}: n_experiences * categories_per_experience + n_heldout = "
                f"{n_stream + self.n_heldout} categories, but the world has {space.n_combinations} "
                f"attribute combinations and at most half of them ({space.n_combinations // 2}) may be used")


@dataclass
class CategorySplit:
    """The categories of a stream, indexed by stream label."""

    codes: torch.Tensor  # (C, n_attributes) long, stream categories first, then held-out
    experiences: list[list[int]]  # stream labels per experience
    heldout: list[int]  # stream labels never trained on
    train_counts: list[int]  # training images per stream category (len = n stream categories)
    test_per_category: int

    @property
    def n_stream(self) -> int:
        return sum(len(e) for e in self.experiences)


def zipf_counts(n: int, n_max: int, exponent: float, n_min: int) -> list[int]:
    """Image counts for ranks 1..n: ``max(n_min, round(n_max * r^-exponent))``, non-increasing."""
    return [max(n_min, int(round(n_max * (r ** -exponent)))) for r in range(1, n + 1)]


def one_attribute_pairs(codes: torch.Tensor, labels: list[int]) -> list[tuple[int, int]]:
    """Pairs of labels whose codes differ in exactly one attribute (fine-grained pairs)."""
    pairs = []
    for a, b in itertools.combinations(labels, 2):
        if int((codes[a] != codes[b]).sum()) == 1:
            pairs.append((a, b))
    return pairs


def draw_split(space: AttributeSpace, settings: SplitSettings) -> CategorySplit:
    """Draw stream and held-out categories, their order and training counts, from ``settings.seed``."""
    settings.validate(space)
    g = torch.Generator().manual_seed(settings.seed)
    sizes = torch.tensor(space.sizes)
    n_stream = settings.n_experiences * settings.categories_per_experience

    def random_code() -> tuple[int, ...]:
        return tuple((torch.rand(len(sizes), generator=g) * sizes).long().tolist())

    chosen: list[tuple[int, ...]] = []
    taken: set[tuple[int, ...]] = set()
    while len(chosen) < n_stream:
        code = random_code()
        # Siblings differ from an earlier category in one attribute: fine-grained pairs by construction.
        if chosen and torch.rand(1, generator=g).item() < settings.sibling_fraction:
            base = list(chosen[int(torch.randint(len(chosen), (1,), generator=g))])
            k = int(torch.randint(len(sizes), (1,), generator=g))
            base[k] = (base[k] + 1 + int(torch.randint(int(sizes[k]) - 1, (1,), generator=g))) % int(sizes[k])
            code = tuple(base)
        if code not in taken:
            chosen.append(code)
            taken.add(code)
    order = torch.randperm(n_stream, generator=g).tolist()
    stream_codes = [chosen[i] for i in order]

    # Held-out: unused combinations whose every value is seen in training (new combinations only).
    seen_values = [sorted({c[k] for c in stream_codes}) for k in range(len(sizes))]
    candidates = [c for c in itertools.product(*seen_values) if c not in taken]
    if len(candidates) < settings.n_heldout:
        raise ValueError(
            f"benchmark.n_heldout={settings.n_heldout}, but the {n_stream} stream categories leave only "
            f"{len(candidates)} new combinations of seen attribute values; lower benchmark.n_heldout or "
            f"add stream categories")
    pick = torch.randperm(len(candidates), generator=g)[: settings.n_heldout].tolist()
    heldout_codes = [candidates[i] for i in pick]

    k = settings.categories_per_experience
    experiences = [list(range(e * k, (e + 1) * k)) for e in range(settings.n_experiences)]
    counts = zipf_counts(n_stream, settings.train_per_category, settings.long_tail_exponent,
                         settings.min_train_per_category)
    # Frequency rank is independent of arrival order, so every experience has head and tail.
    rank_of = torch.randperm(n_stream, generator=g).tolist()
    train_counts = [counts[rank_of[c]] for c in range(n_stream)]
    codes = torch.tensor(stream_codes + heldout_codes, dtype=torch.long).reshape(-1, len(sizes))
    heldout = list(range(n_stream, n_stream + settings.n_heldout))
    return CategorySplit(codes, experiences, heldout, train_counts, settings.test_per_category)
