"""One linear classifier per attribute (shape, colour, ...), sharing a single weight matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttributeHead(nn.Module):
    """Logits for every value of every attribute: ``(B, A)`` with one softmax block per attribute."""

    def __init__(self, embed_dim: int, block_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.block_sizes = tuple(block_sizes)
        self.linear = nn.Linear(embed_dim, sum(block_sizes))
        # Block offsets as a buffer so the loss can gather without Python loops over rows.
        offsets = torch.tensor([0, *block_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)  # (B, A) attribute logits

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-block log-softmax: ``(B, A)`` log p(value | image) within each attribute."""
        return torch.cat([F.log_softmax(b, dim=1) for b in logits.split(self.block_sizes, dim=1)], dim=1)

    def loss(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Mean over attributes of the cross-entropy of each block against its value code."""
        # codes: (B, n_attributes) long value index within each block
        log_p = self.log_probs(logits)
        picked = log_p.gather(1, codes + self.offsets)  # (B, n_attributes)
        return -picked.mean()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Most likely value per attribute: ``(B, n_attributes)`` long."""
        return torch.stack([b.argmax(1) for b in logits.split(self.block_sizes, dim=1)], dim=1)

    @torch.no_grad()
    def describe_classes(self, class_attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-head weights and biases that score a category by the sum of its attribute logits.

        Scoring ``z @ (a_c V)^T + a_c b`` equals the category's attribute log-likelihood up to a
        per-image constant, so a category classifier started from its description is exactly
        the zero-shot classifier.
        """
        # class_attributes: (K, A) binary; V: (A, D)
        return class_attributes @ self.linear.weight, class_attributes @ self.linear.bias
