"""A validation split of the training images: held out of training, for choices that must not see test data.

Calibrated GZSL (``continual.metrics.calibration``, ``eval.calibration.seen_from=validation``) takes its seen
images from here: images of trained categories the learner never trained on, so their scores are what a
test image's would be, unlike the replay memory's. The price is training data: each trained category
loses ``per_category`` images (never its last one).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from continual.stream.stream import Stream


def split_validation(stream: Stream, per_category: int, seed: int) -> tuple[Stream, tuple[torch.Tensor, torch.Tensor]]:
    """``(stream without the validation images, (val_x, val_y))``: ``per_category`` training images of every
    trained category (at most all but one), drawn by a generator of their own from ``seed``, so the split
    does not move any other draw. ``val_y`` is on the host, ``val_x`` where the images are."""
    if per_category < 1:
        raise ValueError(f"eval.calibration.val_per_category must be >= 1 to split off a validation set, got {per_category}")
    if not isinstance(stream.train_x, torch.Tensor):
        raise ValueError("eval.calibration.val_per_category > 0 needs the training images in memory "
                         f"(data.storage=memory); stream {stream.name!r} keeps them on disk")
    gen = torch.Generator().manual_seed(7_919 * seed + 17)
    y_host = stream.train_y.cpu()
    held = []
    for c in sorted(c for e in stream.experiences for c in e):
        idx = (y_host == c).nonzero().squeeze(1)
        held.append(idx[torch.randperm(len(idx), generator=gen)[: min(per_category, len(idx) - 1)]])
    held_idx = torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(y_host), dtype=torch.bool)
    keep[held_idx] = False
    keep_idx = keep.nonzero().squeeze(1)
    on = stream.train_x.device
    counts = list(stream.train_counts)
    for c, n in zip(*torch.unique(y_host[held_idx], return_counts=True)):
        counts[int(c)] -= int(n)
    trained = replace(stream, train_x=stream.train_x[keep_idx.to(on)], train_y=stream.train_y[keep_idx.to(stream.train_y.device)],
                      train_codes=None if stream.train_codes is None else stream.train_codes[keep_idx.to(stream.train_codes.device)],
                      train_counts=counts)
    return trained, (stream.train_x[held_idx.to(on)], y_host[held_idx])
