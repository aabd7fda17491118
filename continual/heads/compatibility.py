"""Attribute-to-category compatibility: score any category from its description alone."""

from __future__ import annotations

import torch


def attribute_log_likelihood(attribute_log_probs: torch.Tensor, class_attributes: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` log p(description of category k | image), attributes taken as independent.

    One-of-k blocks: ``attribute_log_probs`` is ``(B, A)`` per-block log-softmax and ``class_attributes``
    ``(K, A)`` binary with one active value per block, so the product picks and sums one term per
    attribute (direct attribute prediction, Lampert et al.).

    Continuous attributes: ``attribute_log_probs`` holds each Bernoulli's log-odds ``l`` and
    ``class_attributes`` the degrees ``a`` in [0, 1]; ``a . l`` is the log-likelihood of the soft
    description up to ``sum_k log sigmoid(-l_k)``, which depends on the image alone
    (``continual.heads.attribute_head``). Every use here compares categories for one image (argmax,
    seen-unseen margins), which such a constant does not change.
    """
    return attribute_log_probs @ class_attributes.T.to(attribute_log_probs.dtype)
