"""Attributes as noisy tags: training images carry what people said about them, not clean labels.

The seed's side information is Flickr's: photos that some users tagged ("dog", "red", "beach"), most
photos untagged, a tag often left out, sometimes wrong (YFCC100M; Joulin et al. 2016 and Mahajan et
al. 2018 learn from such tags at scale). This file imitates that on a stream's per-image attribute
codes, with three knobs (``benchmark.tags``):

- ``rate``: the share of training images that anyone tagged at all (a Flickr photo with no tags);
- ``missing``: on a tagged image, the share of its true attributes left untagged (a user writes
  "dog" but not "brown");
- ``wrong``: the share of the tags given that are wrong, each replaced by a uniformly drawn *other*
  value of that attribute (a mistaken or misplaced tag; never the true value).

An untagged attribute is code ``-1`` in ``Stream.train_codes``; the attribute loss skips it
(``AttributeHead.loss``). Test images keep their clean codes: attribute accuracy and zero-shot are
scored against the truth, and the held-out categories keep their given descriptions (zero-shot
needs one). The defaults (1, 0, 0) tag every attribute of every image correctly: today's clean
stream, which is then left exactly as it was (no ``train_codes`` at all).

The draws come from a generator seeded from the stream's seed (the same seed gives the same tags)
and are shared across settings: the images tagged at rate 0.1 are among those tagged at 0.3, the
tags wrong at noise 0.2 among those wrong at 0.4. A sweep over the knobs then compares nested
corruptions of one stream, not independent draws.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

UNTAGGED = -1  # the code of an attribute nobody tagged
NO_TAGS = "off: no training image carries a tag"  # report.json's tags.attribute_loss when there is nothing to learn from


@dataclass(frozen=True)
class TagSettings:
    """How training images are tagged (``benchmark.tags``); the defaults are clean, complete labels."""

    rate: float = 1.0  # share of training images that carry tags at all
    wrong: float = 0.0  # share of the tags given that are wrong (another value, drawn uniformly)
    missing: float = 0.0  # share of a tagged image's true attributes left untagged

    @property
    def clean(self) -> bool:
        """Every attribute of every image tagged with its true value."""
        return self.rate == 1.0 and self.wrong == 0.0 and self.missing == 0.0

    def validate(self, prefix: str = "benchmark.tags") -> None:
        """Raise ValueError naming ``<prefix>.<key>`` for a value outside [0, 1]."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{prefix}.{f.name} must be a share in [0, 1], got {value!r}")


def tag_settings_from_dict(cfg: dict | None, prefix: str = "benchmark.tags") -> TagSettings:
    """Settings from a plain config dict (None: the defaults), naming any unknown key or bad value."""
    cfg = dict(cfg or {})
    known = [f.name for f in fields(TagSettings)]
    for key in cfg:
        if key not in known:
            raise ValueError(f"unknown config key {prefix}.{key}; known: {known}")
    settings = TagSettings(**{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                              for k, v in cfg.items()})
    settings.validate(prefix)
    return settings


def tag_seed(stream_seed: int) -> int:
    """The tags' generator seed, derived from the stream's seed and shared with no other draw."""
    return int.from_bytes(hashlib.sha256(f"continual/tags/{int(stream_seed)}".encode()).digest()[:8], "little") >> 1


def draw_tags(codes: torch.Tensor, sizes: tuple[int, ...], settings: TagSettings, seed: int) -> torch.Tensor:
    """Tagged codes ``(N, A)`` long from true per-image codes ``codes`` ``(N, A)``: ``UNTAGGED`` where no
    tag was given, a uniformly drawn other value where the tag is wrong, the true value elsewhere.

    ``seed`` is the stream's seed; the same seed and codes give the same tags whatever the settings'
    values (the uniform draws are shared; see the module docstring).
    """
    settings.validate()
    codes = torch.as_tensor(codes, dtype=torch.long).cpu()
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"codes must have shape (N, {len(sizes)}), got {tuple(codes.shape)}")
    n, a = codes.shape
    g = torch.Generator().manual_seed(tag_seed(seed))
    # Four draws in a fixed order, whatever the settings, so the corruptions nest across settings.
    u_image = torch.rand(n, generator=g)  # (N,) an image is tagged when below rate
    u_missing = torch.rand(n, a, generator=g)  # (N, A) an attribute is left out when below missing
    u_wrong = torch.rand(n, a, generator=g)  # (N, A) a given tag is wrong when below wrong
    u_value = torch.rand(n, a, generator=g)  # (N, A) which other value a wrong tag names
    size = torch.tensor(sizes, dtype=torch.long)  # (A,)
    given = (u_image < settings.rate)[:, None] & (u_missing >= settings.missing)  # (N, A)
    wrong = given & (u_wrong < settings.wrong) & (size > 1)  # a one-value attribute cannot be wrong
    # An offset in 1..size-1 from the true value, uniform: every other value equally likely, never the truth.
    offset = 1 + (u_value * (size - 1)).long().clamp(max=(size - 2).clamp(min=0))
    noisy = torch.where(wrong, (codes + offset) % size, codes)
    return torch.where(given, noisy, torch.full_like(codes, UNTAGGED))


def majority_descriptions(counts: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """Binary descriptions ``(C, dim)`` from tag counts ``(C, dim)`` (one block of values per attribute):
    each block's most tagged value, or an all-zero block (nothing said) where the category has no tag of
    that attribute. Ties go to the lowest value index."""
    blocks = []
    for block in counts.split(list(sizes), dim=1):  # (C, size) each
        said = block.sum(1, keepdim=True) > 0  # (C, 1)
        top = F.one_hot(block.argmax(1), block.shape[1]).to(counts.dtype)  # (C, size)
        blocks.append(top * said)
    return torch.cat(blocks, dim=1)


def count_tags(codes: torch.Tensor, labels: torch.Tensor, n_classes: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """``(n_classes, dim)`` float: how often each value of each attribute was tagged on each category's
    images (``codes`` ``(N, A)`` with ``UNTAGGED`` entries, ``labels`` ``(N,)``). On the codes' device."""
    offsets = torch.tensor([0, *sizes[:-1]], device=codes.device).cumsum(0)  # (A,)
    dim = sum(sizes)
    tagged = codes >= 0  # (N, A)
    column = codes.clamp(min=0) + offsets  # (N, A)
    flat = labels[:, None] * dim + column  # (N, A) index into the flattened counts
    counts = torch.zeros(n_classes * dim, device=codes.device)
    counts.index_add_(0, flat.reshape(-1), tagged.reshape(-1).to(counts.dtype))
    return counts.view(n_classes, dim)


def tag_summary(settings: TagSettings, true_codes: torch.Tensor, tagged: torch.Tensor, labels: torch.Tensor,
                class_codes: torch.Tensor, sizes: tuple[int, ...]) -> dict:
    """What the tags are, measured (for ``report.json``'s ``tags``): the settings, the shares actually drawn,
    how often the majority vote of all of a category's tags names its true value, and whether the
    attribute loss has anything to learn from."""
    given = tagged >= 0  # (N, A)
    n_given = int(given.sum())
    trained = torch.unique(labels)
    votes = majority_descriptions(count_tags(tagged, labels, len(class_codes), sizes), sizes)[trained]
    truth = _one_hot(class_codes[trained], sizes)
    said = torch.stack([b.sum(1) > 0 for b in votes.split(list(sizes), 1)], 1)  # (K, A) a vote exists
    right = torch.stack([(v * t).sum(1) > 0 for v, t in zip(votes.split(list(sizes), 1), truth.split(list(sizes), 1))], 1)
    out = {"rate": settings.rate, "wrong": settings.wrong, "missing": settings.missing,
           "images_tagged": float(given.any(1).float().mean()),  # with at least one tag
           "attributes_tagged": float(given.float().mean()),  # image-attribute pairs with a tag
           "tags_wrong": float(((tagged != true_codes) & given).sum()) / n_given if n_given else None,
           # the descriptions a learner with learner.descriptions=tags ends with, against the truth
           "description_accuracy": float(right.float().mean()),
           "description_coverage": float(said.float().mean()),
           "attribute_loss": "on" if n_given else NO_TAGS}
    return out


def _one_hot(codes: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """Binary descriptions ``(N, dim)`` of integer codes ``(N, A)``."""
    return torch.cat([F.one_hot(codes[:, k], s).float() for k, s in enumerate(sizes)], dim=1)


def apply_tags(true_codes: torch.Tensor, labels: torch.Tensor, class_codes: torch.Tensor, sizes: tuple[int, ...],
               settings: TagSettings, seed: int) -> tuple[torch.Tensor | None, dict | None]:
    """``(train_codes, summary)`` for a stream whose training images have true codes ``true_codes`` (N, A):
    ``(None, None)`` for clean settings (the stream stays as it was), else the tagged codes and
    ``tag_summary``. Warns when no image carries a tag: the attribute loss is then off."""
    if settings.clean:
        return None, None
    tagged = draw_tags(true_codes, sizes, settings, seed)
    summary = tag_summary(settings, true_codes.cpu(), tagged, labels.cpu(), class_codes.cpu(), sizes)
    if summary["attribute_loss"] != "on":
        warnings.warn(f"benchmark.tags (rate={settings.rate}, missing={settings.missing}): no training image carries "
                      f"a tag, so the attribute loss is off: the attribute heads stay untrained and zero-shot and "
                      f"attribute accuracy are at chance (report.json tags.attribute_loss says so)",
                      RuntimeWarning, stacklevel=2)
    return tagged, summary
