"""On a CUDA device: the learners train with data and replay memory on the GPU, and the training
step never waits for the GPU (no host sync per step). Skipped where there is no CUDA device."""

from __future__ import annotations

import math

import pytest
import torch

from continual.experiment import build_learner
from continual.learner import LEARNERS
from continual.loop import run_stream
from continual.stream import build_stream
from continual.stream.source import Batch, ExperienceSource, build_source
from tests.conftest import TINY, compose_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _setup(world_cache, learner: str = "child", extra: tuple[str, ...] = ()):
    cfg = compose_config([*TINY, f"learner={learner}", "device=cuda", *extra], world_cache)
    torch.manual_seed(0)
    stream = build_stream(cfg["benchmark"]).to(torch.device("cuda"))
    learner = build_learner(cfg, stream, torch.device("cuda"))
    return cfg, stream, learner


@pytest.mark.parametrize("extra", [(), ("learner.channels_last=true",)])
def test_child_learner_trains_on_the_gpu(world_cache, extra):
    cfg, stream, learner = _setup(world_cache, extra=extra)
    assert stream.train_x.is_cuda and learner.memory.x.is_cuda  # data and memory live on the device
    source = ExperienceSource(stream, epochs=3, batch_size=32, seed=0)
    card = run_stream(learner, stream, source, seed=0, progress=False, print_fn=lambda *a: None)
    assert math.isfinite(card.average_accuracy) and card.average_accuracy > 2.0 / 12  # well above chance (1/12)
    assert len(learner.memory) == cfg["memory"]["size"]


@pytest.mark.parametrize("name", LEARNERS.names())
def test_training_step_never_syncs_with_the_host(world_cache, name):
    """``torch.cuda.set_sync_debug_mode('error')`` raises on any blocking device-to-host copy
    (``.item()``, ``float(t)``, boolean masks, ...) inside the steps."""
    cfg, stream, learner = _setup(world_cache, learner=name)
    experiences = stream.experiences
    for e in range(2):  # the second experience exercises replay, distillation and regularisers
        learner.begin_experience(e, experiences[e])
        idx = stream.train_indices(e)
        x, y = stream.train_x[idx], stream.train_y[idx]
        codes = stream.class_codes[y] if stream.has_attributes else None
        learner.observe(x[:32], y[:32], None if codes is None else codes[:32])  # warm-up: lazy state, cuBLAS
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for start in range(32, len(y) - 1, 32):
                b = slice(start, start + 32)
                learner.observe(x[b], y[b], None if codes is None else codes[b])
        finally:
            torch.cuda.set_sync_debug_mode(0)
        learner.end_experience(e, x, y, codes)


@pytest.mark.parametrize("name", [n for n in LEARNERS.names() if LEARNERS.get(n).supports_online])
def test_online_steps_and_memory_writes_never_sync_with_the_host(world_cache, name):
    """Online, the memory takes every batch (``remember``): its decisions come from host labels, so
    a step plus the memory write must not wait for the GPU either. (Meeting a new category may: it
    happens once per category; the child's binding reads the device every 8 steps, so fewer here.)"""
    cfg = compose_config([*TINY, f"learner={name}", "device=cuda", "online.mode=iblurry"], world_cache)
    torch.manual_seed(0)
    stream, source = build_source(cfg, build_stream(cfg["benchmark"]).to(torch.device("cuda")))
    learner = build_learner(cfg, stream, torch.device("cuda"))
    batches = [e for e in source.events() if isinstance(e, Batch)][:7]
    for i, event in enumerate(batches):
        if event.new_classes:
            learner.meet(event.new_classes)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if i >= 2 else 0)  # the first two warm up lazy state, cuBLAS
        try:
            learner.observe(event.x, event.y, event.codes)
            learner.remember(event.x, event.y, event.y_host, event.codes)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert getattr(learner, "memory", None) is None or len(learner.memory) > 0  # finetune keeps none
