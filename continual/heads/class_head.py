"""A category head that grows as categories arrive: linear, or cosine (normalised) for fast binding.

The weight is allocated once for every category the stream may bring and only the first
``n_active`` rows are used: the optimiser never has to be rebuilt, shapes stay static for
``torch.compile``, and unused rows get no gradient because they are sliced away.

With ``cosine_scale`` set, a logit is ``s * cos(z, w_c)`` (no bias): every row has the same norm,
so a row written from a handful of examples (weight imprinting, Qi et al. 2018) competes on equal
terms with rows trained for thousands of steps, and old categories' rows cannot grow larger than
new ones' (the bias towards recent categories LUCIR counters the same way, Hou et al. 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GrowingClassHead(nn.Module):
    """Logits over the ``n_active`` categories seen so far."""

    def __init__(self, embed_dim: int, max_classes: int, cosine_scale: float | None = None) -> None:
        super().__init__()
        if cosine_scale is not None and cosine_scale <= 0:
            raise ValueError(f"learner.cosine_scale must be > 0, got {cosine_scale}")
        self.weight = nn.Parameter(torch.zeros(max_classes, embed_dim))
        self.bias = nn.Parameter(torch.zeros(max_classes))
        nn.init.normal_(self.weight, std=embed_dim ** -0.5)
        self.cosine_scale = cosine_scale
        if self.cosine:
            # No bias in a cosine head; frozen, so DDP does not wait for a gradient that never comes.
            self.bias.requires_grad_(False)
        self.n_active = 0

    @property
    def cosine(self) -> bool:
        return self.cosine_scale is not None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, n_active) category logits
        w = self.weight[: self.n_active]
        if self.cosine:
            return self.cosine_scale * F.normalize(z, dim=1) @ F.normalize(w, dim=1).T
        return z @ w.T + self.bias[: self.n_active]

    @torch.no_grad()
    def grow(self, n_new: int, init_weight: torch.Tensor | None = None,
             init_bias: torch.Tensor | None = None) -> None:
        """Activate ``n_new`` more rows, optionally starting them from a description."""
        start, end = self.n_active, self.n_active + n_new
        if end > self.weight.shape[0]:
            raise ValueError(f"class head holds {self.weight.shape[0]} categories, asked for {end}")
        if init_weight is not None:
            self.weight[start:end] = init_weight
        if init_bias is not None and not self.cosine:
            self.bias[start:end] = init_bias
        self.n_active = end

    @torch.no_grad()
    def write_rows(self, mask: torch.Tensor, rows: torch.Tensor) -> None:
        """Overwrite the rows where ``mask`` (C,) is true with ``rows`` (C, D), on the device, no sync.

        A linear head gets the rows rescaled to the mean norm (and mean bias) of its other active
        rows, so a written row is neither louder nor quieter than its neighbours.
        """
        if not self.cosine:
            active = torch.arange(len(mask), device=mask.device) < self.n_active
            others = (active & ~mask).float()  # (C,)
            n_others = others.sum().clamp(min=1)
            norm = (self.weight.norm(dim=1) * others).sum() / n_others
            norm = torch.where(others.sum() > 0, norm, torch.ones_like(norm))  # nothing to match: unit rows
            rows = F.normalize(rows, dim=1) * norm
            mean_bias = (self.bias * others).sum() / n_others
            self.bias.copy_(torch.where(mask, mean_bias, self.bias))
        self.weight.copy_(torch.where(mask[:, None], rows.to(self.weight.dtype), self.weight))

    def get_extra_state(self) -> dict:
        return {"n_active": self.n_active}

    def set_extra_state(self, state: dict) -> None:
        self.n_active = int(state["n_active"])
