"""One linear classifier per attribute (shape, colour, ...), sharing a single weight matrix.

Two kinds of attribute, one kind per head:

- one-of-k blocks (the world's shape, colour, ...): a softmax per block, cross-entropy against the
  value code, ``log_probs`` the per-block log-softmax;
- continuous attributes (CUB's 312, GBU's class-attribute matrices: ``n_continuous`` of them): each
  an independent Bernoulli whose soft target ``a`` in [0, 1] is the share of the category's images
  that show it. The loss is the binary cross-entropy with logits against ``a``; ``log_probs`` is the
  per-attribute log-odds ``l = log p(has) - log p(not)``, because the log-likelihood of a description

      log p(a | image) = sum_k a_k log sigmoid(l_k) + (1 - a_k) log sigmoid(-l_k) = a . l + sum_k log sigmoid(-l_k)

  is ``a . l`` plus a term that depends on the image alone. So the compatibility score
  (``log_probs @ a^T``) ranks categories exactly as the likelihood does, and the classifier rows
  ``(a V, a b)`` written from a description (``describe_classes``) are still exactly the zero-shot
  classifier up to a per-image constant, as for one-hot blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttributeHead(nn.Module):
    """Logits for every value of every attribute: ``(B, A)`` with one softmax block per attribute,
    or (``n_continuous`` > 0, no blocks) one Bernoulli logit per continuous attribute."""

    def __init__(self, embed_dim: int, block_sizes: tuple[int, ...], n_continuous: int = 0) -> None:
        super().__init__()
        if bool(block_sizes) == (n_continuous > 0):
            raise ValueError(f"an attribute head has one-of-k blocks or continuous attributes, exactly one kind: "
                             f"got blocks {tuple(block_sizes)} and {n_continuous} continuous attributes")
        self.block_sizes = tuple(block_sizes)
        self.continuous = n_continuous > 0
        self.linear = nn.Linear(embed_dim, n_continuous if self.continuous else sum(block_sizes))
        # Block offsets as a buffer so the loss can gather without Python loops over rows.
        offsets = torch.tensor([0, *block_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)  # (B, A) attribute logits

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-block log-softmax: ``(B, A)`` log p(value | image) within each attribute; for continuous
        attributes the log-odds (the logits themselves: see the module docstring)."""
        if self.continuous:
            return logits
        return torch.cat([F.log_softmax(b, dim=1) for b in logits.split(self.block_sizes, dim=1)], dim=1)

    def loss(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Mean over attributes of the cross-entropy of each block against its value code
        (continuous attributes: of each Bernoulli against its soft target, ``continuous_loss``)."""
        if self.continuous:
            return self.continuous_loss(logits, codes)
        # codes: (B, n_attributes) long value index within each block; -1 = untagged (continual.stream.tags)
        log_p = self.log_probs(logits)
        tagged = codes >= 0  # (B, n_attributes)
        picked = log_p.gather(1, codes.clamp(min=0) + self.offsets)  # (B, n_attributes)
        # The mean over tagged entries without a host sync: the factor is exactly 1 when all are tagged
        # (clean codes give the plain mean bit for bit), and a batch without tags gives 0, not NaN.
        return -(picked * tagged).mean() * (tagged.numel() / tagged.sum().clamp(min=1))

    def continuous_loss(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits against soft targets ``codes`` (B, A) in [0, 1], averaged over
        the targets given; a target < 0 means untagged and is left out (no sync: a masked mean)."""
        given = codes >= 0  # (B, A)
        target = codes.to(logits.dtype).clamp(min=0.0)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (B, A)
        return (bce * given).sum() / given.sum().clamp(min=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Most likely value per attribute: ``(B, n_attributes)`` long; for continuous attributes the
        predicted degree ``sigmoid(l)`` ``(B, A)`` float."""
        if self.continuous:
            return torch.sigmoid(logits)
        return torch.stack([b.argmax(1) for b in logits.split(self.block_sizes, dim=1)], dim=1)

    @torch.no_grad()
    def describe_classes(self, class_attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-head weights and biases that score a category by the sum of its attribute logits.

        Scoring ``z @ (a_c V)^T + a_c b`` equals the category's attribute log-likelihood up to a
        per-image constant, so a category classifier started from its description is exactly
        the zero-shot classifier.
        """
        # class_attributes: (K, A) binary (continuous: degrees in [0, 1]); V: (A, D)
        return class_attributes @ self.linear.weight, class_attributes @ self.linear.bias
