"""Sources of training batches: what the one training driver (``continual.loop.train_on``) consumes.

A source is a seeded, replayable sequence of events. An experience stream is a source with boundaries
told to the learner (``Begin`` / ``End`` reach ``begin_experience`` / ``end_experience``), several
epochs per experience; an online stream is a source without them: one pass, a category is new when
its label first appears (``Batch.new_classes``), and the boundaries of its hidden segments are there
for the evaluator only. Images on disk (``continual.stream.disk``) need no third kind: both sources
index ``stream.train_x`` alike, and a ``DiskImages`` reads the rows asked for (their indices on the host).

Why events are regenerated rather than stored: the whole sequence follows from the seed, so a run
resumed after ``k`` events regenerates the source and skips ``k`` of them (cheap: index permutations,
no training), which puts the batch order exactly where it was without saving it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

import torch

from continual.distributed import SINGLE, DistContext
from continual.stream.disk import DiskImages
from continual.stream.stream import Stream


@dataclass(frozen=True)
class Begin:
    """An experience (online: a hidden segment) starts; ``new_classes`` are the labels it brings."""

    experience: int
    new_classes: list[int]


@dataclass(frozen=True)
class Epoch:
    """A pass over the experience starts; ``host_batches`` are its whole index batches on the host
    (positions into the experience's images), for bookkeeping that must not read the device."""

    experience: int
    epoch: int
    host_batches: list[torch.Tensor]
    host_labels: torch.Tensor  # (N,) the experience's labels, on the host


@dataclass(frozen=True)
class Batch:
    """One mini-batch for this process: images, labels and attribute codes on the data's device."""

    x: torch.Tensor  # (B, C, H, W) uint8
    y: torch.Tensor  # (B,) long
    codes: torch.Tensor | None  # (B, A) long, None without attributes
    y_host: torch.Tensor  # (B,) long, the same labels on the host (memory bookkeeping without a sync)
    step: int  # 1-based step within the epoch (online: within the segment)
    new_classes: list[int]  # labels that first appear in this batch (online streams; [] otherwise)
    samples: int  # stream samples arrived so far, this batch included (all processes together)


@dataclass(frozen=True)
class End:
    """An experience (segment) ends; its images for this process (``end_experience`` takes them;
    None from an online source, which tells the learner nothing)."""

    experience: int
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    codes: torch.Tensor | None = None


Event = Union[Begin, Epoch, Batch, End]


def _codes(stream: Stream, idx: torch.Tensor) -> torch.Tensor | None:
    return stream.codes_for(idx) if stream.has_attributes else None


def _index_device(stream: Stream) -> torch.device:
    """Where a source keeps its index tensors: with resident images, their device (every gather stays
    there, no host sync); with images on disk, the host, where they are read."""
    images = stream.train_x
    return images.index_device if isinstance(images, DiskImages) else images.device


class ExperienceSource:
    """The experiences of ``stream`` in order, ``epochs`` shuffled passes each (more when that is
    fewer than ``min_steps`` steps, so a study that shrinks the data does not also starve the learner
    of updates), boundaries told to the learner.

    Under ``torchrun`` (``dist``) every process gets its share of each batch (a batch too small to give
    every process two images is dropped: batch norm needs two) and of each experience at its end.
    """

    told = True  # the learner hears begin/end_experience
    updates = 1  # optimisation steps per batch

    def __init__(self, stream: Stream, *, epochs: int, batch_size: int, seed: int, min_steps: int = 0,
                 dist: DistContext = SINGLE) -> None:
        if epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {epochs}")
        if batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {batch_size}")
        self.stream, self.epochs, self.batch_size, self.seed = stream, epochs, batch_size, seed
        self.min_steps, self.dist = min_steps, dist

    def epochs_of(self, e: int) -> int:
        steps_per_epoch = max(1, -(-len(self.stream.train_indices(e)) // self.batch_size))
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))

    def n_steps(self) -> int:
        """Steps of the whole stream (an upper bound: for the progress bar)."""
        return sum(self.epochs_of(e) * (len(self.stream.train_indices(e)) // self.batch_size + 1)
                   for e in range(self.stream.n_experiences))

    def events(self) -> Iterator[Event]:
        stream, dist, device = self.stream, self.dist, _index_device(self.stream)
        order = torch.Generator().manual_seed(self.seed)  # the batch order, from the seed alone
        samples = 0
        for e in range(stream.n_experiences):
            yield Begin(e, list(stream.experiences[e]))
            idx = stream.train_indices(e).to(device)  # (N,) this experience's images, where indices live
            y_host = stream.train_y[idx].cpu()
            for epoch in range(self.epochs_of(e)):
                perm = torch.randperm(len(idx), generator=order)
                on_device = perm.to(device)  # one copy per epoch, not one per step
                mine = dist.rank_batches(list(on_device.split(self.batch_size)))
                whole = dist.global_batches(list(perm.split(self.batch_size)))
                yield Epoch(e, epoch, whole, y_host)
                for step, (b, hb) in enumerate(zip(mine, whole), start=1):
                    samples += len(hb)
                    i = idx[b]
                    yield Batch(stream.train_x[i], stream.train_y[i], _codes(stream, i),
                                y_host[hb[dist.rank::dist.world_size]], step, [], samples)
            mine = idx[dist.rank::dist.world_size]  # this process's share, for its own memory
            yield End(e, stream.train_x[mine], stream.train_y[mine], _codes(stream, mine))


class OnlineSource:
    """An online stream: ``segments`` (index tensors into ``stream.train_x``, in arrival order)
    presented once, in consecutive batches of ``batch_size``, each trained on ``updates`` times.

    Nothing is told to the learner but the labels: ``Batch.new_classes`` lists those appearing for
    the first time (the stream is labelled in order of first appearance, ``continual.stream.online``).
    ``Begin``/``End`` mark the hidden segments for the evaluator; ``told`` is False, so the driver
    never passes them on.
    """

    told = False

    def __init__(self, stream: Stream, segments: list[torch.Tensor], *, batch_size: int, updates: int = 1,
                 dist: DistContext = SINGLE) -> None:
        if batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {batch_size}")
        if updates < 1:
            raise ValueError(f"online.updates must be >= 1, got {updates}")
        if dist.multi:
            raise ValueError("online streams run in one process for now (world_size > 1 given)")
        self.stream, self.segments, self.batch_size, self.updates = stream, segments, batch_size, updates

    def n_steps(self) -> int:
        return sum(-(-len(s) // self.batch_size) for s in self.segments) * self.updates

    def n_samples(self) -> int:
        """Stream samples over the whole pass."""
        return sum(len(s) for s in self.segments)

    def events(self) -> Iterator[Event]:
        stream, device = self.stream, _index_device(self.stream)
        labels_host = stream.train_y.cpu()
        met = 0  # labels 0..met-1 have appeared (first-appearance order: continual.stream.online)
        samples = 0
        for j, seg in enumerate(self.segments):
            seg_labels = labels_host[seg]
            yield Begin(j, list(stream.experiences[j]))
            on_device = seg.to(device)
            # Consecutive batches; a trailing single image joins the batch before it (batch norm needs two).
            starts = list(range(0, len(seg), self.batch_size))
            if len(starts) > 1 and len(seg) - starts[-1] < 2:
                starts.pop()
            for step, (start, stop) in enumerate(zip(starts, starts[1:] + [len(seg)]), start=1):
                y_host = seg_labels[start:stop]
                top = int(y_host.max()) + 1  # a host tensor: no device read
                new = list(range(met, top))  # empty unless a label above all met so far arrives
                met = max(met, top)
                samples += len(y_host)
                i = on_device[start:stop]
                yield Batch(stream.train_x[i], stream.train_y[i], _codes(stream, i), y_host, step, new, samples)
            yield End(j)


ONLINE_MODES = ("off", "disjoint", "iblurry", "siblurry")


def check_online(cfg: dict, learner_cls) -> None:
    """Fail before anything is written when ``online`` asks for what cannot run: an unknown mode, or a
    learner that needs boundaries (its ``online_blocker`` says why)."""
    online = cfg.get("online") or {}
    mode = online.get("mode", "off")
    if mode not in ONLINE_MODES:
        raise ValueError(f"online.mode must be one of {', '.join(ONLINE_MODES)}; got {mode!r}")
    if mode != "off":
        from continual.stream.online import online_settings_from_dict

        online_settings_from_dict({k: v for k, v in online.items() if k != "updates"})  # raises naming online.<key>
    if mode != "off" and not getattr(learner_cls, "supports_online", False):
        raise ValueError(f"learner {cfg['learner']['name']} cannot learn on an online stream (online.mode={mode}): "
                         f"{learner_cls.online_blocker}. Use online.mode=off or one of the online learners")


def build_source(cfg: dict, stream: Stream, dist: DistContext = SINGLE) -> tuple[Stream, ExperienceSource | OnlineSource]:
    """The source ``cfg`` asks for over ``stream``: its experiences (``online.mode=off``) or an online
    arrival order. An online order relabels the stream (labels in order of first appearance), so the
    returned stream replaces the given one from here on."""
    online, train, seed = cfg.get("online") or {}, cfg["train"], int(cfg["seed"])
    if online.get("mode", "off") == "off":
        return stream, ExperienceSource(stream, epochs=int(train["epochs"]), batch_size=int(train["batch_size"]),
                                        seed=seed, min_steps=int(train.get("min_steps", 0)), dist=dist)
    from continual.stream.online import online_order, online_settings_from_dict

    settings = online_settings_from_dict({k: v for k, v in online.items() if k != "updates"})  # updates: the source's
    stream, segments = online_order(stream, settings, seed)
    return stream, OnlineSource(stream, segments, batch_size=int(train["batch_size"]),
                                updates=int(online.get("updates", 1)), dist=dist)
