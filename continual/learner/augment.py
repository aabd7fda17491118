"""Random affine distortions of a training batch, on the device: a drawing is the same character
when the hand is a little rotated, slanted, larger or shifted.

Koch et al. (2015) trained their one-shot Omniglot network with exactly such distortions; the
minimal background has ~190 characters, so the embedding must learn what does *not* change a
character from distortions rather than from thousands of categories. Drawn from the global torch
generator (checkpoints save it, so a resumed run draws the same), in one batched
``affine_grid``/``grid_sample`` call; no host sync.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RandomAffine:
    """Per-image rotation, shear, scale and translation, uniformly within the given ranges."""

    def __init__(self, rotation: float = 10.0, shear: float = 0.2, scale: float = 0.15, translate: float = 0.1) -> None:
        for key, value in (("rotation", rotation), ("shear", shear), ("scale", scale), ("translate", translate)):
            if value < 0:
                raise ValueError(f"learner.augment_args.{key} must be >= 0, got {value}")
        self.rotation = math.radians(rotation)  # radians, +-
        self.shear, self.scale, self.translate = shear, scale, translate  # +-, relative to the half-width

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` uint8 (B, C, H, W) -> distorted uint8 (B, C, H, W), borders filled with zeros."""
        B = x.shape[0]
        u = torch.rand(B, 5, device=x.device) * 2 - 1  # (B, 5) in [-1, 1)
        angle, shear = u[:, 0] * self.rotation, u[:, 1] * self.shear
        scale = 1 + u[:, 2] * self.scale
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin + shear, u[:, 3] * self.translate], 1),
                             torch.stack([sin, cos, u[:, 4] * self.translate], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)
