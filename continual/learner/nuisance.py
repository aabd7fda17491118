"""Nuisance variation: copies of training images with one attribute changed, that teach the other heads.

Why: with 40 trained categories the attribute heads learn combinations, not attributes. A held-out
category (a new combination of shape, colour, pattern and size) then embeds like the trained
category that shares most of its look, and its shape is read from that category: on the default
world a linear probe on the embedding reads the shape of a held-out category at about chance, while
it reads the trained ones' almost perfectly (issue 11). Nothing in 40 categories tells the network
that a red square and a blue square share their shape more than a red square and a red circle share
theirs. A child sees the same toy in many lights. Here a transform that changes one attribute and
nothing else (``AttributeSpace.nuisances``: in the world, permuting the colour channels changes the
colour of a shape but not its shape, pattern or size) makes that evidence: the varied copy keeps its
other attributes' codes, and the changed attribute's code is ``-1`` (unknown, ignored by
``AttributeHead.loss``). The copies train only the attribute loss: their category is not a
category of the stream any more.

Measured end to end on the default world (seeds 0-4; ``experiments/train.py -m hydra/launcher=parallel
threads=1 learner.nuisance_variation=0,32 seed=0,1,2,3,4``; issue 11's note), 32 copies a step with the
colour channels permuted: zero-shot by descriptions 0.842 mean / 0.667 worst seed -> 0.877 / 0.740, by
attribute compatibility 0.615 -> 0.639, calibrated H 0.725 -> 0.748, its AUSUC 0.681 -> 0.751, A_T 0.887
-> 0.906, for ~25% more wall time. Erasing the texture as well (``erase_texture``, pattern unknown) hurt:
0.818 / 0.633. The heads still read the shape of a held-out image at 0-11% (chance 12.5%): it is read
through the trained category the image resembles, and a linear probe trained on the memory's images
fails the same way at every layer of the backbone. What helps is the embedding that the varied copies
shape (zero-shot by descriptions maps into it), not the shape head itself.

Each transform draws from the global torch generator on the images' device (checkpoints save it,
so a resumed run draws the same) and never syncs with the host.
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch
import torch.nn.functional as F

from continual.registry import Registry

NuisanceFn = Callable[[torch.Tensor], torch.Tensor]
NUISANCES: Registry = Registry("nuisance")

_CHANNEL_ORDERS = torch.tensor(list(itertools.permutations(range(3))))  # (6, 3), the identity first


@NUISANCES.register("channel_permute")
def channel_permute(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, 3, H, W) -> each image's colour channels in a random order (one of the 6, identity
    included): a shape keeps its outline, pattern and size, its colour changes."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"channel_permute varies the colour channels of (B, 3, H, W) images; got shape "
                         f"{tuple(x.shape)}")
    order = _CHANNEL_ORDERS.to(x.device)[torch.randint(len(_CHANNEL_ORDERS), (len(x),), device=x.device)]  # (B, 3)
    return x.gather(1, order[:, :, None, None].expand_as(x))


@NUISANCES.register("erase_texture")
def erase_texture(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) -> a 3x3 morphological closing of each channel: thin dark marks inside an object
    (stripes, dots, most of a checkerboard) filled with the object's colour, its outline kept (on the world's
    masks: 97-100% intersection over union per shape); the texture changes, not the shape or size."""
    if x.dim() != 4:
        raise ValueError(f"erase_texture closes (B, C, H, W) images; got shape {tuple(x.shape)}")
    f = x.float()
    closed = -F.max_pool2d(-F.max_pool2d(f, 3, 1, 1), 3, 1, 1)  # dilate, then erode
    return closed.to(x.dtype)


def check_transforms(use: list[str] | tuple[str, ...] | None) -> None:
    """``learner.nuisance_transforms``: None or a list of registered names; ValueError naming the key otherwise."""
    if use is None:
        return
    if isinstance(use, str) or not all(isinstance(n, str) for n in use):
        raise ValueError(f"learner.nuisance_transforms must be null or a list of names, got {use!r}")
    unknown = sorted(set(use) - set(NUISANCES.names()))
    if unknown:
        raise ValueError(f"learner.nuisance_transforms names {unknown[0]!r}; known: {NUISANCES.names()}")


class NuisanceVariation:
    """Varied copies of a step's images, with the codes of what each transform changes set unknown."""

    def __init__(self, nuisances: tuple[tuple[str, tuple[int, ...]], ...], per_step: int,
                 use: list[str] | tuple[str, ...] | None = None) -> None:
        """``nuisances``: (transform name, indices of the attributes it changes), as the stream declares them;
        ``per_step``: copies made per step (of the step's first images, the new ones before replay), 0
        switches it off; ``use``: the names of those to apply (None: all of them), an ablation's switch."""
        if isinstance(per_step, bool) or not isinstance(per_step, int) or per_step < 0:
            raise ValueError(f"learner.nuisance_variation must be an int >= 0 (varied copies per step; 0: off), "
                             f"got {per_step!r}")
        if use is not None:
            check_transforms(use)
            nuisances = tuple(n for n in nuisances if n[0] in use)
        self.transforms = [(NUISANCES.get(name), tuple(changed)) for name, changed in nuisances]
        self.per_step = per_step

    @property
    def active(self) -> bool:
        return self.per_step > 0 and bool(self.transforms)

    def __call__(self, x: torch.Tensor, codes: torch.Tensor, n_new: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of up to ``per_step`` of the first ``n_new`` images ``x`` (B, ...) with every transform
        applied, and their codes (B, A) with each changed attribute at -1."""
        n = min(self.per_step, n_new)
        x_var, codes_var = x[:n], codes[:n].clone()
        for transform, changed in self.transforms:
            x_var = transform(x_var)
            codes_var[:, list(changed)] = -1
        return x_var, codes_var
