"""Fast binding: a new category's classifier row from its description and its first examples.

A child who is told "a striped ball" and then shown one knows the next one at once. Gradient descent
on a fresh row takes hundreds of steps to get there; writing the row directly does not:

- before any example (k = 0) the row is the category's description, mapped into the embedding space
  (``prior``: e.g. the sum of the attribute head's rows for the described values);
- from the first example on, it is the imprinted row of Qi et al. (2018), the normalised mean of
  the examples' normalised embeddings, combined with the description as a prior worth
  ``description_weight`` examples: ``w_c = normalise(lambda * d_c + sum_i z_i / |z_i|)``. At
  lambda = 1 one example and a description weigh the same; the default 0.25 says a description is
  worth a quarter of an example (on the world, lambda = 1 cost 5 points of accuracy after one
  example and bought nothing before it: descriptions mapped from a few dozen categories are
  coarse); either way the description's share falls as lambda / (lambda + n) with n examples.
- once a category has had ``window`` examples the row is left to the gradient, which has refined it
  at every step in between. The step that brings the ``window``-th example still writes the row, so
  a category met all at once (15 images in one batch) is bound from all of them.

Everything stays on the device (scatter-adds and ``where``), so a binding step costs no host sync.
Binding does cost an extra forward pass of the new images (in eval mode), so it runs only while
it can still write a row: from ``reopen`` (new categories arrive) until every active category has
had ``window`` examples, which ``still_open`` reads back once every ``CHECK_EVERY`` steps (the
only host sync, and none once binding is over). Skipped steps would have written nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class FastBinding(nn.Module):
    """Per-category running sums of normalised embeddings, counts and description priors."""

    CHECK_EVERY = 8  # steps between the host reads of whether any active category is inside its window

    def __init__(self, embed_dim: int, max_classes: int, window: int = 10, description_weight: float = 0.25) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"learner.bind_window must be >= 1, got {window}")
        if description_weight < 0:
            raise ValueError(f"learner.description_weight must be >= 0, got {description_weight}")
        self.window = window
        self.description_weight = description_weight
        # Buffers, so checkpoints carry them and a resumed run binds exactly as an uninterrupted one.
        self.register_buffer("sums", torch.zeros(max_classes, embed_dim))  # (C, D) sum of normalised z
        self.register_buffer("counts", torch.zeros(max_classes))  # (C,) examples seen
        self.register_buffer("prior", torch.zeros(max_classes, embed_dim))  # (C, D) unit description rows
        self.register_buffer("binding", torch.zeros(max_classes, dtype=torch.bool), persistent=False)  # (C,) rows written now
        self.live, self._steps = True, 0  # host-side: may a step still write a row? (True after a resume)

    @torch.no_grad()
    def describe(self, classes: list[int], directions: torch.Tensor) -> None:
        """Set the description prior of ``classes`` from ``directions`` (K, D) (normalised here)."""
        self.prior[classes] = F.normalize(directions.float(), dim=1)

    @torch.no_grad()
    def observe(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Count the examples ``z`` (B, D) of labels ``y`` (B,) (the current data, not replay)."""
        delta_sums = torch.zeros_like(self.sums).index_add_(0, y, F.normalize(z.float(), dim=1))
        delta_counts = torch.zeros_like(self.counts).index_add_(0, y, torch.ones_like(y, dtype=self.counts.dtype))
        if dist.is_available() and dist.is_initialized():
            # Every process must write the same rows: bind from the whole batch, not this share.
            dist.all_reduce(delta_sums)
            dist.all_reduce(delta_counts)
        # Inside the window: fewer than ``window`` examples before this batch, at least one now.
        self.binding = (self.counts < self.window) & (self.counts + delta_counts > 0)
        self.sums += delta_sums
        self.counts += delta_counts

    def reopen(self) -> None:
        """New categories are active: binding runs again."""
        self.live, self._steps = True, 0

    def still_open(self, n_active: int) -> bool:
        """Count a step; every ``CHECK_EVERY`` steps read whether an active category is inside its window."""
        self._steps += 1
        if self.live and self._steps % self.CHECK_EVERY == 0:
            self.live = bool((self.counts[:n_active] < self.window).any())
        return self.live

    @torch.no_grad()
    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask (C,), rows (C, D))``: the categories inside their binding window and their rows."""
        rows = F.normalize(self.description_weight * self.prior + self.sums, dim=1)
        return self.binding, rows


@torch.no_grad()
def rows_from_descriptions(described: torch.Tensor, known: torch.Tensor, known_rows: torch.Tensor,
                           ridge: float = 1.0) -> torch.Tensor:
    """``(K, D)`` rows for categories described by ``described`` (K, A), from a linear map that
    takes the descriptions of ``known`` (S, A) categories to their (normalised) rows ``known_rows``
    (S, D): ridge regression ``M = (A^T A + ridge I)^-1 A^T W``, then ``described @ M``.

    Why: a cosine head's rows live where the embeddings of their categories are, which the attribute
    head's weights do not say; the categories learned so far do. With one-of-k attribute blocks the
    map is additive over attribute values, so a new combination of known values lands where those
    values' categories lie (what a child does with "a red ball" after red cups and blue balls).
    """
    A = known.float()  # (S, A)
    W = F.normalize(known_rows.float(), dim=1)  # (S, D)
    gram = A.T @ A + ridge * torch.eye(A.shape[1], device=A.device)  # (A, A)
    M = torch.linalg.solve(gram, A.T @ W)  # (A, D)
    return described.float() @ M
