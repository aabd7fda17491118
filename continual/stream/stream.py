"""A stream of novel categories: uint8 images, stream labels and attribute descriptions.

The learner trains from these tensors directly (indexing a resident tensor is the fastest
loader there is); ``continual.avalanche_compat.to_avalanche`` exposes the same split as an
Avalanche benchmark for stock strategies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from continual.stream.attributes import AttributeSpace


@dataclass
class NovelImages:
    """Categories of whole new domains (e.g. alphabets), never in the stream, not even as held-out labels.

    They serve Lake-style one-shot trials within a domain nobody trained on
    (``continual.metrics.few_shot.lake_style_trials``) and meeting new categories one at a time
    after the stream. Every drawer of every category is here, sorted by (category, drawer).
    """

    images: torch.Tensor  # (N, C, H, W) uint8
    category: torch.Tensor  # (N,) long local index 0..n-1 into category_names
    group: torch.Tensor  # (N,) long index into group_names (the domain, e.g. the alphabet)
    drawer: torch.Tensor  # (N,) long drawer / instance index (0..19 on Omniglot)
    group_names: list[str]
    category_names: list[str]  # e.g. "Alphabet/characterNN"
    # (N,) long per-image value of the stream's "strokes" attribute; None when the stream has none.
    strokes: torch.Tensor | None = None

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def to(self, device: torch.device | str) -> "NovelImages":
        """A copy with every tensor on ``device``."""
        moved = {name: getattr(self, name).to(device)
                 for name in ("images", "category", "group", "drawer", "strokes") if getattr(self, name) is not None}
        return replace(self, **moved)


@dataclass
class Stream:
    """Everything a run needs to know about its data, indexed by stream label."""

    name: str
    train_x: torch.Tensor  # (N, 3, H, W) uint8
    train_y: torch.Tensor  # (N,) long stream labels
    test_x: torch.Tensor  # (M, 3, H, W) uint8
    test_y: torch.Tensor  # (M,) long stream labels (stream and held-out categories)
    experiences: list[list[int]]  # stream labels arriving in each experience
    heldout: list[int]  # labels never trained on (zero-shot)
    class_names: list[str]
    train_counts: list[int]  # training images per stream category
    attribute_space: AttributeSpace | None = None
    class_codes: torch.Tensor | None = None  # (C, n_attributes) long attribute values per label
    fine_grained_pairs: list[tuple[int, int]] = field(default_factory=list)
    # (N, n_attributes) long codes per *training image* when an attribute varies within a category
    # (Omniglot's stroke count): side information for training only; test images use class_codes.
    train_codes: torch.Tensor | None = None
    novel: NovelImages | None = None  # whole held-out domains, outside the stream's labels
    # When train_codes are noisy tags (continual.stream.tags; -1: untagged): the settings and the shares
    # drawn, for report.json's ``tags``. None for clean codes.
    tags: dict | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_experiences(self) -> int:
        return len(self.experiences)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def has_attributes(self) -> bool:
        return self.attribute_space is not None and self.class_codes is not None

    def class_attributes(self) -> torch.Tensor:
        """Binary attribute vectors ``(C, A)`` of every category, on the data's device."""
        if not self.has_attributes:
            raise ValueError(f"stream {self.name!r} has no attribute descriptions")
        return self.attribute_space.vectors(self.class_codes.cpu()).to(self.train_x.device)

    def train_indices(self, experience: int) -> torch.Tensor:
        """Indices into ``train_x`` of the given experience's images."""
        classes = torch.tensor(self.experiences[experience], device=self.train_y.device)
        return torch.isin(self.train_y, classes).nonzero().squeeze(1)

    def test_indices(self, classes: list[int]) -> torch.Tensor:
        """Indices into ``test_x`` of the given categories' test images."""
        classes_t = torch.tensor(classes, device=self.test_y.device, dtype=torch.long)
        return torch.isin(self.test_y, classes_t).nonzero().squeeze(1)

    def codes_for(self, indices: torch.Tensor) -> torch.Tensor:
        """Attribute codes ``(B, n_attributes)`` of the training images ``train_x[indices]``:
        per-image codes where the stream has them, else their categories' codes."""
        if not self.has_attributes:
            raise ValueError(f"stream {self.name!r} has no attribute descriptions")
        if self.train_codes is not None:
            return self.train_codes[indices]
        return self.class_codes[self.train_y[indices]]

    def relabel(self, order: list[int]) -> "Stream":
        """A new stream in which old trained label ``order[i]`` is label ``i``.

        Held-out labels are unchanged (they come after the trained ones); images, ``train_codes``
        (per image) and ``novel`` are shared, not copied. ``experiences`` keep their grouping under
        the new labels; fine-grained pairs are renamed and stay sorted within and across pairs.
        """
        trained = sorted(c for e in self.experiences for c in e)
        if sorted(order) != trained or trained != list(range(len(trained))):
            raise ValueError(f"order must be a permutation of the trained labels 0..{len(trained) - 1}, "
                             f"got {order}")
        old_of_new = list(order) + list(range(len(order), self.n_classes))  # held-out: identity
        new_of_old = [0] * self.n_classes
        for new, old in enumerate(old_of_new):
            new_of_old[old] = new
        lookup = torch.tensor(new_of_old, dtype=torch.long)  # (C,) old label -> new label

        def remap(y: torch.Tensor) -> torch.Tensor:
            return lookup.to(y.device)[y]

        pairs = sorted(tuple(sorted((new_of_old[a], new_of_old[b]))) for a, b in self.fine_grained_pairs)
        codes = self.class_codes
        return replace(
            self,
            train_y=remap(self.train_y),
            test_y=remap(self.test_y),
            experiences=[[new_of_old[c] for c in e] for e in self.experiences],
            heldout=[new_of_old[c] for c in self.heldout],
            class_names=[self.class_names[c] for c in old_of_new],
            train_counts=[self.train_counts[c] for c in order],
            class_codes=None if codes is None else codes[torch.tensor(old_of_new, device=codes.device)],
            fine_grained_pairs=pairs,
        )

    def to(self, device: torch.device | str) -> "Stream":
        """Move the image and label tensors (and codes, and novel images) to ``device``; returns self."""
        for name in ("train_x", "train_y", "test_x", "test_y", "class_codes", "train_codes"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        if self.novel is not None:
            self.novel = self.novel.to(device)
        return self


def data_stream_kwargs(cfg: dict, known: tuple[str, ...], data_root_is: str) -> dict:
    """A data set's ``benchmark`` config dict as keyword arguments: ``name`` dropped, an unknown key and a
    missing ``data_root`` (``data_root_is`` says what folder it should be) named in a ValueError."""
    cfg = {k: v for k, v in cfg.items() if k != "name"}
    for key in cfg:
        if key not in known:
            raise ValueError(f"unknown config key benchmark.{key}; known: {sorted(known)}")
    if "data_root" not in cfg:
        raise ValueError(f"config key benchmark.data_root is missing ({data_root_is})")
    return cfg
