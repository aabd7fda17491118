"""Speed benchmark: our learner against a plain PyTorch loop and Avalanche's Replay, side by side,
on experiences and online (boundary-free).

Examples::

    python experiments/bench.py                        # default sizes, ~5 minutes on a shared 2-core CPU
    python experiments/bench.py --quick                # tiny sizes, seconds (what tests/test_bench.py runs)
    python experiments/bench.py --skip-online          # experiences only
    python experiments/bench.py --device cuda --backbone reduced_resnet18 --channels-last   # see gpu_bench.sh

Every contender trains on the same world stream, with the same backbone, batch size, replay batch
and memory size, in one process. A measurement is one whole experience (a fixed number of steps,
replay included); contenders take turns (A B C A B C ...) for ``--rounds`` rounds after a warm-up
experience each, and the table reports medians, because the machines here are shared and noisy.

Contenders:

- ``ours``: ``ChildLearner`` built by ``continual.experiment.build_learner`` and trained by
  ``continual.loop.train_on``, the driver every run trains through (no copy of the loop here).
- ``plain``: a hand-written loop doing the same maths (backbone, sliced class head, attribute head,
  class CE + attribute CE, replay batch drawn from a device-resident memory): the practical limit.
- ``avalanche``: ``avalanche.training.Replay`` on ``to_avalanche(stream)`` with backbone + linear
  class head (class CE only: Avalanche has no attribute loss), ``evaluator=None`` (no metrics).
  Its replay batches walk the memory without replacement, so the last one of each pass is short:
  it trains on up to ~1 % fewer images per measurement, which per-image figures account for.
- ``avalanche_eval``: the same with Avalanche's default evaluator (accuracy and loss metrics,
  interactive logger sent to /dev/null), to show what metrics cost.

Online section (``--skip-online`` skips it): the same world stream in one i-Blurry arrival order
(``ONLINE``: ``online_order``, which relabels the stream by first appearance; every contender is
built on the relabelled stream), cut into hidden segments, one per experience above. A measurement
is one hidden segment, the first one(s) a warm-up as above; figures are per *stream sample* (an
arriving image; replay is work done for it, not counted as samples).

- ``ours_online``: ``ChildLearner`` from ``build_learner``, trained by ``train_on`` on an
  ``OnlineSource`` (labels met as they appear, every batch offered to the class-balanced reservoir).
- ``plain_online``: ``plain``'s maths on the same batches, head rows started from descriptions as
  labels first appear, the memory refreshed after every step by a uniform reservoir vectorised on
  the device (no host sync): the practical limit.
- ``avalanche_online``: Avalanche's online replay, ``Naive`` + ``ReplayPlugin`` over a
  ``ReservoirSamplingBuffer``, each segment cut by ``split_online_stream`` into one-batch
  experiences and ``train`` called on each (see ``AvalancheOnline``). It runs on this stack
  (Avalanche 0.6.0, torch 2.14); were it to break, its error is recorded like any contender's.

Storage section: ``ours`` on the same stream with its images resident (the default) and on disk
(``ours_disk``: ``continual.stream.disk``, the images written to ``.npy`` files in a temporary folder,
every batch read from them), interleaved as above, for both models. ``throughput_ratio`` is the disk
path's images per second over the in-memory path's (median of the rounds' ratios); the files were
just written, so the page cache serves the reads: it measures the read path, not the disk.

Time ratios are "seconds per image (online: per stream sample) of A / of B": 1.10 means A takes
10 % longer per training image than B. ``time_ratios`` (the table, the targets) is the median
over rounds of the ratio within each round, robust to load drifting between rounds;
``time_ratios_of_medians`` divides the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from continual.avalanche_compat import to_avalanche  # noqa: E402  (imports Avalanche lazily)
from continual.experiment import build_learner, resolve_device, run_experiment, seed_everything  # noqa: E402
from continual.learner.backbones import BACKBONES  # noqa: E402
from continual.learner.child import make_optimizer  # noqa: E402
from continual.loop import TrainProgress, train_on  # noqa: E402
from continual.metrics.report import write_json_atomic  # noqa: E402
from continual.stream import Stream, build_stream  # noqa: E402
from continual.stream.disk import to_disk  # noqa: E402
from continual.stream.online import OnlineSettings, online_order  # noqa: E402
from continual.stream.render import RenderSettings, render  # noqa: E402
from continual.stream.source import Batch, End, ExperienceSource, OnlineSource  # noqa: E402

TARGETS = {  # name -> (threshold, "<=" or ">=")
    "ours/plain, default model": (1.15, "<="),
    "ours/plain, tiny model": (1.5, "<="),
    "ours/plain, online (per sample)": (1.2, "<="),  # default model
    "render 32x32 img/s": (50_000.0, ">="),
    "default experiment wall s": (60.0, "<"),
    "eval share of the default experiment": (0.25, "<="),
    "peak resident memory GiB": (2.0, "<"),
}

# The online section's arrival order: i-Blurry (Koh et al. 2022), N = 50 % disjoint categories, M = 10 %
# of the others' images moved to other hidden segments; as many segments as the bench has experiences.
ONLINE = OnlineSettings(mode="iblurry", disjoint_share=0.5, blurry_share=0.1)

# The quick mode's experiment: the same tiny config the end-to-end tests train on.
QUICK_EXPERIMENT = [
    "benchmark.n_experiences=3", "benchmark.categories_per_experience=4", "benchmark.n_heldout=4",
    "benchmark.train_per_category=24", "benchmark.test_per_category=8", "train.epochs=1",
    "learner.backbone_args.width=8", "learner.backbone_args.embed_dim=32", "memory.size=48",
]


# ----------------------------------------------------------------------------------------------
# Set-up


@dataclass
class Sizes:
    """Everything that fixes the work of one measurement."""

    rounds: int
    categories_per_experience: int
    train_per_category: int
    image_size: int
    batch_size: int
    replay_batch_size: int
    memory_size: int
    epochs: int  # per measurement, default model
    tiny_epochs: int  # per measurement, tiny model (more steps: each one is short)
    warmup: int  # untimed experiences first (2 with --compile: replay changes the batch shape, a recompile)
    render_images: int  # per rendering measurement at 32x32 (a quarter of it at 64x64)


def compose(overrides: list[str]) -> dict:
    """The project's Hydra config with ``overrides``, resolved to a plain dict (as train.py does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def backbone_args(name: str, cfg_args: dict, image_size: int, quick: bool) -> dict:
    """Constructor arguments of a backbone: the config's for small_cnn, the usual ones otherwise."""
    if name == "linear":
        return {"image_size": image_size, "embed_dim": 32 if quick else 128}
    if name == "reduced_resnet18":
        return {"width": 8 if quick else 20}  # 20 base filters as in GEM/A-GEM
    return dict(cfg_args)


def bench_config(args: argparse.Namespace, sizes: Sizes, backbone: str) -> dict:
    """The run config for a training comparison: default config, one experience per round plus a warm-up."""
    cfg = compose([
        f"benchmark.n_experiences={sizes.warmup + sizes.rounds}",
        f"benchmark.categories_per_experience={sizes.categories_per_experience}",
        f"benchmark.train_per_category={sizes.train_per_category}",
        f"benchmark.test_per_category={4 if args.quick else 10}",
        f"benchmark.n_heldout={2 if args.quick else 10}",
        f"benchmark.render.image_size={sizes.image_size}",
        f"train.batch_size={sizes.batch_size}",
        f"learner.replay_batch_size={sizes.replay_batch_size}",
        f"memory.size={sizes.memory_size}",
        f"learner.channels_last={str(args.channels_last).lower()}",
        "learner.nuisance_variation=0",  # the plain loop's maths has no varied copies: the same work, compared
        f"seed={args.seed}",
    ] + (["learner.backbone_args.width=8", "learner.backbone_args.embed_dim=32"] if args.quick else []))
    cfg["learner"]["backbone"] = backbone
    cfg["learner"]["backbone_args"] = backbone_args(backbone, cfg["learner"]["backbone_args"],
                                                    sizes.image_size, args.quick)
    if args.compile:
        cfg["learner"]["compile"] = True
    return cfg


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA only, exactly as ChildLearner decides."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Contenders: each trains one whole experience per call and returns the images it trained on.


class Contender(Protocol):
    label: str

    def train_experience(self, e: int) -> tuple[int, int]:
        """Train on experience ``e`` (online: hidden segment ``e``); returns (units, steps): images
        trained on, replay included (online: stream samples arrived, replay not counted)."""


class Ours:
    """ChildLearner built like ``build_learner`` and trained by the loop's own driver, ``train_on``."""

    label = "ours (ChildLearner, train_on driving)"

    def __init__(self, cfg: dict, stream: Stream, device: torch.device, epochs: int) -> None:
        seed_everything(cfg["seed"])
        self.learner = build_learner(cfg, stream, device)
        self.device = device
        source = ExperienceSource(stream, epochs=epochs, batch_size=int(cfg["train"]["batch_size"]), seed=cfg["seed"])
        self.progress = TrainProgress()
        # What run_stream times as training: every event through train_on (its learning-speed probes
        # are evaluation there, and are not made here).
        self.events = train_on(source, self.learner, self.progress)

    def train_experience(self, e: int) -> tuple[int, int]:
        samples, steps = self.progress.samples, self.progress.steps
        for event in self.events:
            if isinstance(event, End):
                assert event.experience == e, f"benchmark asked for experience {e}, the stream is at {event.experience}"
                break
        synchronize(self.device)
        return self.progress.samples - samples, self.progress.steps - steps


class OursDisk(Ours):
    """``Ours`` on a stream whose images are on disk (``continual.stream.disk``): the storage section."""

    label = "ours, images on disk"


class Plain:
    """The practical limit: one hand-written loop, same maths, no framework.

    Backbone from the same registry, a class head allocated for every category and sliced to the
    ones seen (initialised from descriptions, as ours), one attribute linear layer with a CE per
    attribute block, Adam, and a replay memory of device-resident tensors refilled at the end of
    each experience with a uniform random subset (not class-balanced: the cheapest refill).
    """

    label = "plain PyTorch loop"

    def __init__(self, cfg: dict, stream: Stream, device: torch.device, epochs: int) -> None:
        lc = cfg["learner"]
        torch.manual_seed(cfg["seed"])
        self.backbone = BACKBONES.build(lc["backbone"], in_channels=stream.image_shape[0],
                                        **lc["backbone_args"]).to(device)
        d = self.backbone.embed_dim
        self.blocks = stream.attribute_space.sizes
        self.class_w = nn.Parameter(torch.randn(stream.n_classes, d, device=device) * d ** -0.5)
        self.class_b = nn.Parameter(torch.zeros(stream.n_classes, device=device))
        self.attr = nn.Linear(d, sum(self.blocks)).to(device)
        self.channels_last = bool(lc["channels_last"])
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        params = [*self.backbone.parameters(), self.class_w, self.class_b, *self.attr.parameters()]
        self.opt = make_optimizer(params, lc["optimizer"], lc["lr"], lc["weight_decay"])
        self.amp, self.attribute_weight = bool(lc["amp"]), float(lc["attribute_weight"])
        self.batch_size, self.replay = int(cfg["train"]["batch_size"]), int(lc["replay_batch_size"])
        capacity = int(cfg["memory"]["size"])
        self.mem_x = torch.empty((capacity, *stream.image_shape), dtype=torch.uint8, device=device)
        self.mem_y = torch.empty(capacity, dtype=torch.long, device=device)
        self.mem_c = torch.empty((capacity, len(self.blocks)), dtype=torch.long, device=device)
        self.mem_n = 0
        self.class_attributes = stream.class_attributes().float()
        self.gen = torch.Generator(device=device).manual_seed(cfg["seed"])  # on the device: no host draws
        self.stream, self.device, self.epochs, self.n_seen = stream, device, epochs, 0

    def _step(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.mem_n > 0 and self.replay > 0:
            r = torch.randint(self.mem_n, (self.replay,), device=self.device, generator=self.gen)
            x, y, c = torch.cat([x, self.mem_x[r]]), torch.cat([y, self.mem_y[r]]), torch.cat([c, self.mem_c[r]])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            z = self.backbone(x)  # (B, D)
            loss = F.cross_entropy(F.linear(z, self.class_w[: self.n_seen], self.class_b[: self.n_seen]), y)
            if self.attribute_weight > 0:
                blocks = self.attr(z).float().split(self.blocks, dim=1)
                attr_loss = sum(F.cross_entropy(a, c[:, i]) for i, a in enumerate(blocks)) / len(blocks)
                loss = loss + self.attribute_weight * attr_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def train_experience(self, e: int) -> tuple[int, int]:
        stream, new = self.stream, self.stream.experiences[e]
        with torch.no_grad():  # the description init of the new rows, as ours does
            a = self.class_attributes[new]
            self.class_w[new[0]: new[-1] + 1] = a @ self.attr.weight
            self.class_b[new[0]: new[-1] + 1] = a @ self.attr.bias
        self.n_seen = new[-1] + 1
        idx = stream.train_indices(e)
        x, y = stream.train_x[idx], stream.train_y[idx]
        c = stream.class_codes[y]
        loss_sum = torch.zeros((), device=self.device)
        images = steps = 0
        for _ in range(self.epochs):
            perm = torch.randperm(len(y), device=self.device, generator=self.gen)
            for b in perm.split(self.batch_size):
                if len(b) < 2:  # as the loop: batch norm needs two
                    continue
                loss_sum += self._step(x[b], y[b], c[b])
                images += len(b) + (self.replay if self.mem_n > 0 else 0)
                steps += 1
        # Refill: a uniform subset of memory + this experience, one gather.
        pool = len(y) + self.mem_n
        keep = torch.randperm(pool, device=self.device, generator=self.gen)[: len(self.mem_y)]
        for mem, new_data in ((self.mem_x, x), (self.mem_y, y), (self.mem_c, c)):
            mem[: len(keep)] = torch.cat([mem[: self.mem_n], new_data])[keep]
        self.mem_n = len(keep)
        synchronize(self.device)
        return images, steps


class _AvalancheNet(nn.Module):
    """Backbone + linear class head for Avalanche; counts training images (our throughput unit)."""

    def __init__(self, backbone: nn.Module, n_classes: int, amp: bool, channels_last: bool) -> None:
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(backbone.embed_dim, n_classes)
        self.amp, self.channels_last = amp, channels_last
        self.images = self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.images += x.shape[0]
            self.steps += 1
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Autocast inside the model because Avalanche has no mixed-precision switch; logits leave in
        # float32 so its criterion (called outside the model) computes the CE like ours does.
        with autocast(x.device, self.amp):
            return self.head(self.backbone(x)).float()


def _avalanche_model(cfg: dict, stream: Stream, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model Avalanche trains (same backbone and initialisation seed as ours) and its optimiser."""
    lc = cfg["learner"]
    torch.manual_seed(cfg["seed"])
    backbone = BACKBONES.build(lc["backbone"], in_channels=stream.image_shape[0], **lc["backbone_args"])
    model = _AvalancheNet(backbone, stream.n_classes, bool(lc["amp"]), bool(lc["channels_last"])).to(device)
    if lc["channels_last"]:
        model.to(memory_format=torch.channels_last)
    return model, make_optimizer(model.parameters(), lc["optimizer"], lc["lr"], lc["weight_decay"])


class AvalancheReplay:
    """Avalanche's stock Replay strategy on the same stream, with the same sizes."""

    def __init__(self, cfg: dict, stream: Stream, benchmark: Callable[[], object], device: torch.device,
                 epochs: int, default_evaluator: bool) -> None:
        from avalanche.training import Replay
        from avalanche.training.plugins import ReplayPlugin
        from avalanche.training.plugins.evaluation import default_evaluator as make_default
        from avalanche.training.templates import SupervisedTemplate

        self.label = "Avalanche Replay, " + ("default evaluator" if default_evaluator else "no metrics")
        lc = cfg["learner"]
        self.model, opt = _avalanche_model(cfg, stream, device)
        batch, replay, mem = int(cfg["train"]["batch_size"]), int(lc["replay_batch_size"]), int(cfg["memory"]["size"])
        self.devnull = open(os.devnull, "w")  # the default evaluator's interactive logger prints progress bars
        kwargs = dict(model=self.model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=batch,
                      train_epochs=epochs, eval_mb_size=batch, device=device)
        with self._quiet():
            evaluator = make_default() if default_evaluator else None
            if replay == batch:  # Replay's memory batch is the data batch size
                self.strategy = Replay(mem_size=mem, evaluator=evaluator, **kwargs)
            else:  # what Replay is, with the memory batch set
                self.strategy = SupervisedTemplate(plugins=[ReplayPlugin(mem, batch_size_mem=replay)],
                                                   evaluator=evaluator, **kwargs)
        self.benchmark, self.device = benchmark(), device

    @contextlib.contextmanager
    def _quiet(self):
        # stderr too: Avalanche's deprecation decorator re-enables its own warnings on every call.
        with contextlib.redirect_stdout(self.devnull), contextlib.redirect_stderr(self.devnull), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No loggers specified" and friends
            yield

    def train_experience(self, e: int) -> tuple[int, int]:
        images0, steps0 = self.model.images, self.model.steps
        with self._quiet():
            self.strategy.train(self.benchmark.train_stream[e])
        synchronize(self.device)
        return self.model.images - images0, self.model.steps - steps0


# ----------------------------------------------------------------------------------------------
# Online contenders: one pass over the same arrival order; ``train_experience(j)`` trains on hidden
# segment ``j`` and returns (stream samples, steps): per-sample figures count arrivals, not replay.


class OursOnline:
    """ChildLearner built by ``build_learner`` on the relabelled stream, trained by ``train_on`` on an
    ``OnlineSource``: labels met as they appear (``meet``), every batch offered to the class-balanced
    reservoir as it arrives (``remember``, CBRS decided on the host)."""

    label = "ours (ChildLearner, OnlineSource)"

    def __init__(self, cfg: dict, stream: Stream, segments: list[torch.Tensor], device: torch.device) -> None:
        seed_everything(cfg["seed"])
        self.learner = build_learner(cfg, stream, device)
        self.device = device
        source = OnlineSource(stream, segments, batch_size=int(cfg["train"]["batch_size"]))
        self.progress = TrainProgress()
        self.events = train_on(source, self.learner, self.progress)

    def train_experience(self, e: int) -> tuple[int, int]:
        arrived, steps, samples = self.progress.arrived, self.progress.steps, 0
        for event in self.events:
            if isinstance(event, Batch):
                samples += len(event.y_host)  # the new images the learner observed (host: no sync)
            elif isinstance(event, End):
                assert event.experience == e, f"benchmark asked for segment {e}, the stream is at {event.experience}"
                break
        assert samples == self.progress.arrived - arrived, "the source's sample count disagrees with its batches"
        synchronize(self.device)
        return samples, self.progress.steps - steps


def reservoir_slots(arrived: int, n: int, capacity: int, gen: torch.Generator) -> torch.Tensor:
    """``(n,)`` memory slots for the next ``n`` arrivals of a uniform reservoir, drawn on ``gen``'s device.

    Arrival ``t`` (1-based, after ``arrived`` earlier ones) takes slot ``t - 1`` while the memory
    fills, then slot ``j ~ U{0..t-1}`` if ``j < capacity``; a dropped arrival gets slot ``capacity``
    (a spare row), so the caller writes every row with one ``index_copy_``: no mask, no host sync.
    """
    t = torch.arange(arrived + 1, arrived + n + 1, device=gen.device)  # (n,) 1-based arrival numbers
    j = (torch.rand(n, device=gen.device, generator=gen) * t).long()  # (n,) uniform in [0, t)
    j = torch.minimum(j, t - 1)  # float rounding can give t itself
    slot = torch.where(t <= capacity, t - 1, j)  # filling: the next free slot
    return torch.where(slot < capacity, slot, capacity)


class PlainOnline(Plain):
    """The practical limit online: ``Plain``'s maths (``_step``) on the same arrival order and batches.

    A category's head row is started from its description when its label first appears (labels are
    in order of first appearance, so the rows met are a prefix; which labels a batch brings is read
    from a host copy of the labels, no device read). After every step the batch goes into the memory
    by uniform reservoir sampling vectorised on the device (``reservoir_slots``; dropped arrivals are
    written to a spare row past the end): the cheapest correct per-sample memory. Two arrivals of one
    batch drawing the same slot (rare: about B^2 / (2 * capacity) * (capacity / t)^2 per batch) keep
    either one, where the sequential algorithm keeps the later.
    """

    label = "plain loop, device reservoir"

    def __init__(self, cfg: dict, stream: Stream, segments: list[torch.Tensor], device: torch.device) -> None:
        super().__init__(cfg, stream, device, epochs=1)
        self.capacity = len(self.mem_y)
        # One spare row: where dropped arrivals are written (never sampled: replay draws below mem_n).
        self.mem_x = torch.empty((self.capacity + 1, *stream.image_shape), dtype=torch.uint8, device=device)
        self.mem_y = torch.empty(self.capacity + 1, dtype=torch.long, device=device)
        self.mem_c = torch.empty((self.capacity + 1, len(self.blocks)), dtype=torch.long, device=device)
        self.segments, self.labels_host, self.arrived = segments, stream.train_y.cpu(), 0

    def _reservoir(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> None:
        slot = reservoir_slots(self.arrived, len(y), self.capacity, self.gen)  # (B,)
        self.mem_x.index_copy_(0, slot, x)
        self.mem_y.index_copy_(0, slot, y)
        self.mem_c.index_copy_(0, slot, c)
        self.arrived += len(y)
        self.mem_n = min(self.arrived, self.capacity)

    def train_experience(self, e: int) -> tuple[int, int]:
        stream, seg = self.stream, self.segments[e]
        met_after = (self.labels_host[seg].cummax(0).values + 1).tolist()  # labels met after each arrival (host)
        on_device = seg.to(self.device)
        starts = list(range(0, len(seg), self.batch_size))
        if len(starts) > 1 and len(seg) - starts[-1] < 2:  # as the source: a trailing single image joins the last batch
            starts.pop()
        loss_sum = torch.zeros((), device=self.device)
        steps = 0
        for start, stop in zip(starts, starts[1:] + [len(seg)]):
            met = met_after[stop - 1]
            if met > self.n_seen:
                with torch.no_grad():  # rows of the labels appearing now, from their descriptions
                    a = self.class_attributes[self.n_seen: met]
                    self.class_w[self.n_seen: met] = a @ self.attr.weight
                    self.class_b[self.n_seen: met] = a @ self.attr.bias
                self.n_seen = met
            i = on_device[start:stop]
            x, y = stream.train_x[i], stream.train_y[i]
            c = stream.class_codes[y]
            loss_sum += self._step(x, y, c)
            self._reservoir(x, y, c)
            steps += 1
        synchronize(self.device)
        return len(seg), steps


class AvalancheOnline(AvalancheReplay):
    """Avalanche 0.6's online replay on the same arrival order: ``Naive`` with a ``ReplayPlugin`` over
    a ``ReservoirSamplingBuffer`` (the memory updated after every mini-batch), each hidden segment cut
    by ``split_online_stream`` into mini-experiences of one batch, ``strategy.train`` called on each
    (Avalanche's online recipe; ``OnlineNaive`` is deprecated for exactly this). Data: the segment's
    indices into ``to_avalanche(stream).original_train_dataset``, in arrival order. Backbone + linear
    class head over every category, class CE only, no metrics. Its batches differ from ours only where
    a segment's last batch holds one image (ours joins it to the batch before).
    """

    def __init__(self, cfg: dict, stream: Stream, segments: list[torch.Tensor], benchmark: Callable[[], object],
                 device: torch.device) -> None:
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
        from avalanche.training import Naive
        from avalanche.training.plugins import ReplayPlugin
        from avalanche.training.storage_policy import ReservoirSamplingBuffer

        self.label = "Avalanche online replay, no metrics"
        lc = cfg["learner"]
        self.model, opt = _avalanche_model(cfg, stream, device)
        self.batch_size, replay = int(cfg["train"]["batch_size"]), int(lc["replay_batch_size"])
        mem = int(cfg["memory"]["size"])
        self.devnull = open(os.devnull, "w")
        with self._quiet():
            plugin = ReplayPlugin(mem, batch_size_mem=replay, storage_policy=ReservoirSamplingBuffer(mem))
            self.strategy = Naive(model=self.model, optimizer=opt, criterion=nn.CrossEntropyLoss(),
                                  train_mb_size=self.batch_size, train_epochs=1, eval_mb_size=self.batch_size,
                                  device=device, evaluator=None, plugins=[plugin])
            data = benchmark().original_train_dataset
        labels = torch.as_tensor(list(data.targets))
        if not torch.equal(labels, stream.train_y.cpu()):
            raise RuntimeError("to_avalanche's training set is not the stream's, index for index")
        self.segments = [DatasetExperience(dataset=data.subset(seg.tolist()), current_experience=j)
                         for j, seg in enumerate(segments)]
        self.device = device

    def train_experience(self, e: int) -> tuple[int, int]:
        from avalanche.benchmarks.scenarios.online import split_online_stream

        steps0, samples = self.model.steps, 0
        with self._quiet():
            for batch in split_online_stream([self.segments[e]], experience_size=self.batch_size, shuffle=False):
                self.strategy.train(batch)
                samples += len(batch.dataset)
        synchronize(self.device)
        return samples, self.model.steps - steps0


# ----------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Series:
    """Per-round measurements of one contender, in ``unit``s: training images (replay included) for
    experiences, stream samples (arrivals, replay not counted) online."""

    label: str
    unit: str = "image"
    seconds: list[float] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    total: int = 0  # units of every measurement, warm-up included

    def summary(self) -> dict:
        """Medians of the rounds (seconds per unit first, so the ratios are exact quotients)."""
        u = self.unit
        s_per_unit = statistics.median(s / n for s, n in zip(self.seconds, self.units))
        return {
            "label": self.label,
            f"{u}s_per_s": 1.0 / s_per_unit,
            f"seconds_per_{u}": s_per_unit,
            "ms_per_step": 1e3 * statistics.median(s / k for s, k in zip(self.seconds, self.steps)),
            f"{u}s_per_measurement": statistics.median(self.units),
            "steps_per_measurement": statistics.median(self.steps),
            f"rounds_seconds_per_{u}": [s / n for s, n in zip(self.seconds, self.units)],
            f"rounds_{u}s": list(self.units),
        }


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def interleave(builders: dict[str, Callable[[], Contender]], sizes: Sizes, unit: str, log: Callable[[str], None],
               ) -> tuple[dict[str, Series], dict[str, str]]:
    """Build each contender and warm it up on the first measurement(s) (experiences, or online hidden
    segments), then time one each per round, in turns (A B C A B C ...).

    A contender that fails is recorded with its error and dropped, and the others go on: a lent GPU
    machine gives one try, and ours against plain is worth keeping when Avalanche breaks.
    """
    contenders: dict[str, Contender] = {}
    series: dict[str, Series] = {}
    errors: dict[str, str] = {}
    for k, build in builders.items():
        try:
            contenders[k] = build()
            series[k] = Series(contenders[k].label, unit)
            for e in range(sizes.warmup):  # warm-up; it also fills the memory, so timed steps replay
                series[k].total += contenders[k].train_experience(e)[0]
        except Exception as err:  # noqa: BLE001 (recorded, reported, and the exit status says so)
            errors[k] = _error(err)
            contenders.pop(k, None)
            series.pop(k, None)
            log(f"  {k} failed: {errors[k]}")
    for r in range(1, sizes.rounds + 1):
        for k, c in list(contenders.items()):
            t0 = time.perf_counter()
            try:
                units, steps = c.train_experience(sizes.warmup + r - 1)
            except Exception as err:  # noqa: BLE001
                errors[k] = _error(err)
                del contenders[k], series[k]
                log(f"  {k} failed: {errors[k]}")
                continue
            series[k].seconds.append(time.perf_counter() - t0)
            series[k].units.append(units)
            series[k].steps.append(steps)
            series[k].total += units
        log(f"  round {r}/{sizes.rounds}: " + ", ".join(
            f"{k} {s.units[-1] / s.seconds[-1]:.0f} {'img' if unit == 'image' else unit}/s" for k, s in series.items()))
    return series, errors


def time_ratios(contenders: dict[str, dict], pairs: list[tuple[str, str]], unit: str) -> dict:
    """``time_ratios`` and ``time_ratios_of_medians`` (seconds per ``unit`` of A / of B) of the pairs measured.

    Paired: the two measurements of a round ran seconds apart under the same load, so their ratio
    is steady even when the machine's load drifts between rounds (which moves the medians).
    """
    rounds = {k: v[f"rounds_seconds_per_{unit}"] for k, v in contenders.items() if "error" not in v}
    medians = {k: v[f"seconds_per_{unit}"] for k, v in contenders.items() if "error" not in v}
    pairs = [(a, b) for a, b in pairs if a in rounds and b in rounds]
    return {"time_ratios": {f"{a}/{b}": statistics.median(x / y for x, y in zip(rounds[a], rounds[b]))
                            for a, b in pairs},
            "time_ratios_of_medians": {f"{a}/{b}": medians[a] / medians[b] for a, b in pairs}}


def compare_training(cfg: dict, stream: Stream, benchmark: Callable[[], object], device: torch.device, epochs: int,
                     sizes: Sizes, log: Callable[[str], None]) -> dict:
    """Experiences: each contender trains one whole experience per measurement (``interleave``)."""
    builders: dict[str, Callable[[], Contender]] = {
        "ours": lambda: Ours(cfg, stream, device, epochs),
        "plain": lambda: Plain(cfg, stream, device, epochs),
        "avalanche": lambda: AvalancheReplay(cfg, stream, benchmark, device, epochs, default_evaluator=False),
        "avalanche_eval": lambda: AvalancheReplay(cfg, stream, benchmark, device, epochs, default_evaluator=True),
    }
    series, errors = interleave(builders, sizes, "image", log)
    out = {"backbone": cfg["learner"]["backbone"], "backbone_args": cfg["learner"]["backbone_args"],
           "epochs_per_measurement": epochs,
           "contenders": {k: s.summary() for k, s in series.items()} | {
               k: {"label": k, "error": msg} for k, msg in errors.items()}}
    pairs = [("ours", "plain"), ("ours", "avalanche"), ("avalanche", "plain"),
             ("avalanche_eval", "avalanche"), ("avalanche_eval", "plain")]
    return out | time_ratios(out["contenders"], pairs, "image")


def compare_storage(cfg: dict, stream: Stream, device: torch.device, epochs: int, sizes: Sizes,
                    log: Callable[[str], None]) -> dict:
    """Ours with the stream's images resident against ours with them on disk (same stream, same batches)."""
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as folder:
        on_disk = replace(stream, train_x=to_disk(stream.train_x, folder), test_x=to_disk(stream.test_x, folder))
        builders: dict[str, Callable[[], Contender]] = {
            "ours": lambda: Ours(cfg, stream, device, epochs),
            "ours_disk": lambda: OursDisk(cfg, on_disk, device, epochs),
        }
        series, errors = interleave(builders, sizes, "image", log)
    out = {"backbone": cfg["learner"]["backbone"], "backbone_args": cfg["learner"]["backbone_args"],
           "epochs_per_measurement": epochs,
           "contenders": {k: s.summary() for k, s in series.items()} | {
               k: {"label": k, "error": msg} for k, msg in errors.items()}}
    out |= time_ratios(out["contenders"], [("ours_disk", "ours")], "image")
    if not errors:  # images per second of the disk path over the in-memory path's, paired by round
        rounds = [out["contenders"][k]["rounds_seconds_per_image"] for k in ("ours", "ours_disk")]
        out["throughput_ratio"] = statistics.median(m / d for m, d in zip(*rounds))
    return out


def compare_online(cfg: dict, stream: Stream, segments: list[torch.Tensor], benchmark: Callable[[], object],
                   device: torch.device, sizes: Sizes, log: Callable[[str], None]) -> dict:
    """Online: each contender trains one hidden segment of the same arrival order per measurement;
    figures are per stream sample. ``samples_total``: samples each trained on over the whole pass
    (warm-up included), to set against ``stream_samples``."""
    builders: dict[str, Callable[[], Contender]] = {
        "ours_online": lambda: OursOnline(cfg, stream, segments, device),
        "plain_online": lambda: PlainOnline(cfg, stream, segments, device),
        "avalanche_online": lambda: AvalancheOnline(cfg, stream, segments, benchmark, device),
    }
    series, errors = interleave(builders, sizes, "sample", log)
    out = {"backbone": cfg["learner"]["backbone"], "backbone_args": cfg["learner"]["backbone_args"],
           "stream_samples": len(stream.train_y), "segments": [len(s) for s in segments],
           "contenders": {k: s.summary() | {"samples_total": s.total} for k, s in series.items()} | {
               k: {"label": k, "error": msg} for k, msg in errors.items()}}
    pairs = [("ours_online", "plain_online"), ("avalanche_online", "plain_online"),
             ("ours_online", "avalanche_online")]
    return out | time_ratios(out["contenders"], pairs, "sample")


def measure_rendering(sizes: Sizes, rounds: int, device: torch.device, seed: int) -> dict:
    """Images per second of ``render`` at 32x32 and 64x64 (same codes; median of rounds, after a warm-up)."""
    out = {}
    for size, n in ((32, sizes.render_images), (64, max(sizes.render_images // 4, 64))):
        gen = torch.Generator().manual_seed(seed)
        # Random (shape, colour, pattern, size) rows, as a stream draws them.
        codes = torch.stack([torch.randint(k, (n,), generator=gen) for k in (8, 8, 4, 2)], dim=1)
        settings = RenderSettings(image_size=size)
        render(codes[: min(n, 256)], seed, settings, device=device)  # warm-up
        per_s = []
        for r in range(rounds):
            synchronize(device)
            t0 = time.perf_counter()
            render(codes, seed + r, settings, device=device)
            synchronize(device)
            per_s.append(n / (time.perf_counter() - t0))
        out[f"{size}x{size}"] = {"images": n, "images_per_s": statistics.median(per_s), "rounds_images_per_s": per_s}
    return out


def measure_experiment(args: argparse.Namespace) -> dict:
    """Run the default experiment in this process and keep its report's timing."""
    overrides = ["logger.wandb.mode=disabled", "progress=false", f"device={args.device}"]
    cfg = compose(overrides + (QUICK_EXPERIMENT if args.quick else []))
    quiet = io.StringIO()  # the report card is not what this benchmark prints
    # A fresh folder every time: given a finished run's folder, run_experiment returns the old report.
    with tempfile.TemporaryDirectory(prefix="bench-experiment-") as run_dir:
        card = run_experiment(cfg, run_dir, print_fn=lambda *a, **k: print(*a, file=quiet, **k))
    keys = ("wall_s", "train_s", "eval_s", "eval_share", "train_samples", "train_samples_per_s")
    return {k: card.timing[k] for k in keys} | {"config": "quick (tests' tiny config)" if args.quick else "default"}


# ----------------------------------------------------------------------------------------------
# Report


def check_targets(result: dict) -> list[dict]:
    """Each target as a dict with its measured value and verdict."""
    t, ex = result["training"], result["experiment"]
    values = {  # None: not measured because that part failed (its error is in the JSON)
        "ours/plain, default model": t["default"]["time_ratios"].get("ours/plain"),
        "ours/plain, tiny model": t["tiny"]["time_ratios"].get("ours/plain"),
        "render 32x32 img/s": result["render"].get("32x32", {}).get("images_per_s"),
        "peak resident memory GiB": result["peak_rss_mib"] / 1024,
    }
    if result["online"] != "skipped":
        values["ours/plain, online (per sample)"] = result["online"]["default"]["time_ratios"].get(
            "ours_online/plain_online")
    if ex != "skipped":
        values["default experiment wall s"] = ex.get("wall_s")
        values["eval share of the default experiment"] = ex.get("eval_share")
    checks = []
    for name, (threshold, op) in TARGETS.items():
        if name not in values:  # --skip-experiment, --skip-online
            continue
        v = values[name]
        ok = v is not None and {"<=": v <= threshold, ">=": v >= threshold, "<": v < threshold}[op]
        checks.append({"target": name, "value": v, "op": op, "threshold": threshold, "pass": bool(ok)})
    return checks


def _comparison_lines(kind: str, t: dict, plain: str, unit: str) -> list[str]:
    """One model's rows of a comparison (``compare_training`` or ``compare_online``), then its ratios."""
    lines = [f"{kind} model: {t['backbone']} {t['backbone_args']}"]
    base = t["contenders"][plain].get(f"rounds_seconds_per_{unit}")
    for k, c in t["contenders"].items():
        if "error" in c:
            lines.append(f"  {k:<42}FAILED {c['error'][:200]}")
            continue
        vs = math.nan if base is None else statistics.median(
            a / b for a, b in zip(c[f"rounds_seconds_per_{unit}"], base))
        lines.append(f"  {c['label']:<42}{c[f'{unit}s_per_s']:>10.0f}{c['ms_per_step']:>10.2f}"
                     f"{c[f'{unit}s_per_measurement']:>11.0f}{vs:>9.2f}x")
    lines.append("  time ratios, paired: " + ", ".join(f"{k} {v:.2f}x" for k, v in t["time_ratios"].items()))
    lines.append("  of the medians:      " + ", ".join(f"{k} {v:.2f}x" for k, v in t["time_ratios_of_medians"].items()))
    return lines


def format_table(result: dict) -> str:
    """The console table: absolute figures, then ratios, then targets."""
    lines = []
    cfg = result["config"]
    lines.append(f"device {cfg['device']} ({cfg['device_name']}), torch {cfg['torch']}, {cfg['threads']} threads, "
                 f"{cfg['rounds']} rounds, batch {cfg['batch_size']} + replay {cfg['replay_batch_size']}, "
                 f"memory {cfg['memory_size']}, {cfg['image_size']}x{cfg['image_size']} images")
    lines.append("")
    lines.append("training: medians of rounds; 'vs plain' = median of the per-round time ratios (paired)")
    lines.append(f"{'':<44}{'img/s':>10}{'ms/step':>10}{'img/meas.':>11}{'vs plain':>10}")
    for kind, t in result["training"].items():
        lines += _comparison_lines(kind, t, "plain", "image")
    lines.append("")
    lines.append("storage: ours with the images on disk (read per batch, page cache warm) against resident")
    for kind, t in result["storage"].items():
        c = t["contenders"]
        if "throughput_ratio" not in t:
            lines.append(f"  {kind} model: FAILED " + "; ".join(v["error"][:200] for v in c.values() if "error" in v))
            continue
        lines.append(f"  {kind} model ({t['backbone']}): disk {c['ours_disk']['images_per_s']:.0f} img/s, resident "
                     f"{c['ours']['images_per_s']:.0f} img/s: disk throughput {t['throughput_ratio']:.2f}x resident")
    lines.append("")
    online = result["online"]
    if online != "skipped":
        o = online["settings"]
        lines.append(f"online ({o['mode']}, disjoint share {o['disjoint_share']:g}, blurry share "
                     f"{o['blurry_share']:g}, one pass, {o['segments']} hidden segments): one segment per "
                     f"measurement, per stream sample (replay not counted)")
        lines.append(f"{'':<44}{'sample/s':>10}{'ms/step':>10}{'smp/meas.':>11}{'vs plain':>10}")
        for kind in ("default", "tiny"):
            lines += _comparison_lines(kind, online[kind], "plain_online", "sample")
        lines.append("")
    for size, rnd in result["render"].items():
        if size == "error":
            lines.append(f"render FAILED {rnd[:200]}")
            continue
        lines.append(f"render {size:<8}{rnd['images_per_s']:>12.0f} img/s  ({rnd['images']} images per call)")
    ex = result["experiment"]
    if isinstance(ex, dict) and "error" in ex:
        lines.append(f"experiment FAILED {ex['error'][:200]}")
    elif ex != "skipped":
        lines.append(f"experiment ({ex['config']}): wall {ex['wall_s']:.1f} s, train {ex['train_s']:.1f} s, "
                     f"eval {ex['eval_s']:.1f} s (eval share {100 * ex['eval_share']:.1f} %), "
                     f"train {ex['train_samples_per_s']:.0f} img/s")
    lines.append(f"peak resident memory (whole process) {result['peak_rss_mib']:.0f} MiB"
                 + (f"; peak CUDA memory {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""))
    lines.append("")
    for c in result["targets"]:
        value = "not measured" if c["value"] is None else f"{c['value']:.3g}"
        lines.append(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {value} (target {c['op']} {c['threshold']:g})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per contender (default 5, quick 2)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a test (numbers mean little)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: CUDA when present)")
    p.add_argument("--backbone", default="small_cnn", help="the default model's backbone (tiny is always 'linear')")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    p.add_argument("--replay-batch-size", type=int, default=None,
                   help="default: the config's learner.replay_batch_size")
    p.add_argument("--memory-size", type=int, default=None, help="default: the config's memory.size")
    p.add_argument("--train-per-category", type=int, default=None, help="default: the config's (100)")
    p.add_argument("--epochs", type=int, default=None, help="passes per measurement, default model (default 1)")
    p.add_argument("--tiny-epochs", type=int, default=None, help="passes per measurement, tiny model (default 4)")
    p.add_argument("--channels-last", action="store_true", help="channels_last for every contender (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile our learner's backbone (learner.compile)")
    p.add_argument("--skip-experiment", action="store_true", help="do not run the default experiment")
    p.add_argument("--skip-online", action="store_true", help="do not run the online (boundary-free) section")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, for everything measured (0: torch's choice, one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench/bench.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        # One by default: on the shared 2-core machines here, two threads per process oversubscribe
        # the cores and every step runs 3-5x slower and far more erratically than with one.
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)
    defaults = compose([])
    q = args.quick
    sizes = Sizes(
        rounds=args.rounds or (2 if q else 5),
        categories_per_experience=4 if q else defaults["benchmark"]["categories_per_experience"],
        train_per_category=args.train_per_category or (16 if q else defaults["benchmark"]["train_per_category"]),
        image_size=args.image_size,
        batch_size=args.batch_size or (16 if q else defaults["train"]["batch_size"]),
        replay_batch_size=(args.replay_batch_size if args.replay_batch_size is not None
                           else 16 if q else defaults["learner"]["replay_batch_size"]),
        memory_size=args.memory_size if args.memory_size is not None else (32 if q else defaults["memory"]["size"]),
        epochs=args.epochs or 1,
        tiny_epochs=args.tiny_epochs or (2 if q else 4),
        warmup=2 if args.compile else 1,
        render_images=512 if q else 8192,
    )
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    result: dict = {"config": {
        "device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                               else platform.processor() or platform.machine()),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": q, "compile": args.compile,
        "channels_last": args.channels_last, **sizes.__dict__,
    }}
    t_start = time.perf_counter()
    log("building the stream ...")
    # One stream for both models (the benchmark config does not depend on the backbone): same data.
    stream_cfg = bench_config(args, sizes, args.backbone)
    seed_everything(stream_cfg["seed"])
    stream = build_stream(stream_cfg["benchmark"]).to(device)

    @functools.cache
    def avalanche_benchmark():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # uint8 images, as our learner gets them: the backbone's ToFloat does the same scaling.
            return to_avalanche(stream, float_images=False)

    result["training"] = {}
    for kind, backbone, epochs in (("default", args.backbone, sizes.epochs), ("tiny", "linear", sizes.tiny_epochs)):
        log(f"training, {kind} model ({backbone}), {epochs} epoch(s) of one experience per measurement ...")
        result["training"][kind] = compare_training(bench_config(args, sizes, backbone), stream,
                                                    avalanche_benchmark, device, epochs, sizes, log)
    result["storage"] = {}
    for kind, backbone, epochs in (("default", args.backbone, sizes.epochs), ("tiny", "linear", sizes.tiny_epochs)):
        log(f"images on disk against resident, {kind} model ({backbone}) ...")
        result["storage"][kind] = compare_storage(bench_config(args, sizes, backbone), stream, device, epochs,
                                                  sizes, log)
    if args.skip_online:
        result["online"] = "skipped"
    else:
        # One arrival order for both models; it relabels the stream (labels by first appearance), so
        # every online contender is built on the returned stream.
        online_stream, segments = online_order(stream, ONLINE, args.seed)

        @functools.cache
        def avalanche_online_benchmark():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return to_avalanche(online_stream, float_images=False)

        result["online"] = {"settings": ONLINE.__dict__ | {"segments": len(segments)}}
        for kind, backbone in (("default", args.backbone), ("tiny", "linear")):
            log(f"online, {kind} model ({backbone}), one hidden segment per measurement ...")
            result["online"][kind] = compare_online(bench_config(args, sizes, backbone), online_stream, segments,
                                                    avalanche_online_benchmark, device, sizes, log)
    log("rendering ...")
    try:
        result["render"] = measure_rendering(sizes, sizes.rounds, device, args.seed)
    except Exception as err:  # noqa: BLE001 (recorded; the exit status says so)
        result["render"] = {"error": _error(err)}
    if args.skip_experiment:
        result["experiment"] = "skipped"
    else:
        log("the default experiment ...")
        try:
            result["experiment"] = measure_experiment(args)
        except Exception as err:  # noqa: BLE001
            result["experiment"] = {"error": _error(err)}
    # ru_maxrss is in KiB on Linux: the peak of the whole process, stream, Avalanche and all.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    result["bench_wall_s"] = time.perf_counter() - t_start
    result["targets"] = check_targets(result)
    log("")
    log(format_table(result))
    write_json_atomic(result, out_path)
    log(f"\nwrote {out_path} (bench wall {result['bench_wall_s']:.0f} s)")
    failed = [name for name, part in (("render", result["render"]), ("experiment", result["experiment"]))
              if isinstance(part, dict) and "error" in part]
    failed += [f"{kind}/{k}" for kind, t in result["training"].items() for k, c in t["contenders"].items()
               if "error" in c]
    failed += [f"storage/{kind}/{k}" for kind, t in result["storage"].items() for k, c in t["contenders"].items()
               if "error" in c]
    if result["online"] != "skipped":
        failed += [f"online/{kind}/{k}" for kind in ("default", "tiny")
                   for k, c in result["online"][kind]["contenders"].items() if "error" in c]
    if failed:
        log(f"FAILED parts: {', '.join(failed)} (errors in the JSON)")
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
