"""What was said of each category so far: counts of its images' tags, and their per-attribute majority.

Two uses in the child learner, each with its switch:

- ``learner.descriptions=tags``: the categories it has trained on are described by the majority vote of
  their tags (``continual.stream.tags.majority_descriptions``), not by the world's clean descriptions,
  as a child who was never told "a zebra is striped" but heard "stripes" said of most zebras. A
  category before its training is described as the world describes it (held-out categories must be,
  for zero-shot), so what changes is how the learner maps descriptions onto classifier rows: fitted on
  the noisy descriptions of the categories it knows (``rows_from_descriptions``), that map starts every
  later category's row and binding prior, and places the described categories for GZSL.
- ``learner.attribute_targets=votes``: the attribute heads are trained on an image's *category* vote
  rather than on its own tags, so an untagged image still teaches its category's attributes and a
  wrong tag is outvoted. This is how CUB's class attributes are made from noisy per-image worker
  labels (averaged per class), and it holds where attributes belong to the category, as in the
  world; where they vary within a category (Omniglot's stroke counts) it would erase that variation,
  so it is off by default.

Counting is a scatter-add on the device at every training step, over the step's current images (replay
was counted when it was current), with no host sync; every epoch counts each image once more, which
leaves a majority as it is.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from continual.stream.tags import UNTAGGED, count_tags, majority_descriptions


class TagVotes(nn.Module):
    """Running counts ``(C, dim)`` of every attribute value tagged on each category's training images."""

    def __init__(self, n_classes: int, block_sizes: tuple[int, ...]) -> None:
        super().__init__()
        if not block_sizes:
            raise ValueError("learner.descriptions=tags and learner.attribute_targets=votes need one-of-k attributes "
                             "(a majority vote per attribute); this stream's attributes are continuous: use "
                             "learner.descriptions=given and learner.attribute_targets=tags")
        self.block_sizes = tuple(block_sizes)
        # A buffer, so a checkpoint carries the votes and a resumed run describes as an uninterrupted one.
        self.register_buffer("counts", torch.zeros(n_classes, sum(block_sizes)))  # (C, dim)

    @torch.no_grad()
    def count(self, y: torch.Tensor, codes: torch.Tensor) -> None:
        """Add the tags ``codes`` (B, A) (``-1``: untagged) of images of labels ``y`` (B,)."""
        delta = count_tags(codes.to(self.counts.device), y.to(self.counts.device), self.counts.shape[0],
                           self.block_sizes)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(delta)  # each process holds its share of the batch: every one must vote alike
        self.counts += delta

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` long attribute targets for images of labels ``y`` (B,): their category's most tagged
        value per attribute, ``-1`` (untagged) where nothing was said of it yet."""
        blocks = self.counts[y].split(list(self.block_sizes), dim=1)  # (B, size) each
        return torch.stack([torch.where(b.sum(1) > 0, b.argmax(1), UNTAGGED) for b in blocks], dim=1)

    def descriptions(self) -> torch.Tensor:
        """``(C, dim)`` binary: each category's most tagged value per attribute; an all-zero block where
        no tag of that attribute was seen (the description says nothing there)."""
        return majority_descriptions(self.counts, self.block_sizes)
