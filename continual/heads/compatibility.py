"""Attribute-to-category compatibility: score any category from its description alone."""

from __future__ import annotations

import torch


def attribute_log_likelihood(attribute_log_probs: torch.Tensor, class_attributes: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` log p(description of category k | image), attributes taken as independent.

    ``attribute_log_probs`` is ``(B, A)`` per-block log-softmax; ``class_attributes`` is ``(K, A)``
    binary with one active value per block, so the product picks and sums one term per attribute
    (direct attribute prediction, Lampert et al.).
    """
    return attribute_log_probs @ class_attributes.T.to(attribute_log_probs.dtype)
