"""A linear category head that grows as categories arrive.

The weight is allocated once for every category the stream may bring and only the first
``n_active`` rows are used: the optimiser never has to be rebuilt, shapes stay static for
``torch.compile``, and unused rows get no gradient because they are sliced away.
"""

from __future__ import annotations

import torch
from torch import nn


class GrowingClassHead(nn.Module):
    """Logits over the ``n_active`` categories seen so far."""

    def __init__(self, embed_dim: int, max_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_classes, embed_dim))
        self.bias = nn.Parameter(torch.zeros(max_classes))
        nn.init.normal_(self.weight, std=embed_dim ** -0.5)
        self.n_active = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, n_active) category logits
        return z @ self.weight[: self.n_active].T + self.bias[: self.n_active]

    @torch.no_grad()
    def grow(self, n_new: int, init_weight: torch.Tensor | None = None,
             init_bias: torch.Tensor | None = None) -> None:
        """Activate ``n_new`` more rows, optionally starting them from a description."""
        start, end = self.n_active, self.n_active + n_new
        if end > self.weight.shape[0]:
            raise ValueError(f"class head holds {self.weight.shape[0]} categories, asked for {end}")
        if init_weight is not None:
            self.weight[start:end] = init_weight
        if init_bias is not None:
            self.bias[start:end] = init_bias
        self.n_active = end

    def get_extra_state(self) -> dict:
        return {"n_active": self.n_active}

    def set_extra_state(self, state: dict) -> None:
        self.n_active = int(state["n_active"])
