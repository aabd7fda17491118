"""The training loop: a stream of experiences, one learner, a report card at the end.

Read this file top to bottom to know what a run does. Everything it calls is explicit:
the learner's three methods, the evaluator's functions, and the logger's methods.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import torch
from tqdm import tqdm

from continual.learner.base import Learner
from continual.metrics import evaluate as ev
from continual.metrics.report import ReportCard, format_experience_line


class ExperienceLogger(Protocol):
    """Whatever records progress: the console, W&B, or nothing."""

    def log_experience(self, experience: int, metrics: dict) -> None: ...


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one is dropped (batch norm needs two)."""
    perm = torch.randperm(n, generator=generator).to(device)
    return [b for b in perm.split(batch_size) if len(b) > 1]


def run_stream(learner: Learner, stream, *, epochs: int, batch_size: int, seed: int,
               eval_batch_size: int = 512, loggers: tuple[ExperienceLogger, ...] = (),
               progress: bool = True, print_fn=print) -> ReportCard:
    """Train ``learner`` on every experience of ``stream`` in order and return the report card."""
    if epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise ValueError(f"train.batch_size must be >= 2, got {batch_size}")
    device = stream.train_x.device
    order = torch.Generator().manual_seed(seed)
    T = stream.n_experiences
    R = [[math.nan] * T for _ in range(T)]
    codes_of = stream.class_codes if stream.has_attributes else None

    # b_j for forward transfer: the untrained learner under the zero-shot protocol.
    t_eval = time.perf_counter()
    baseline = ev.fwt_baseline(ev.evaluate_pass(learner, stream, 0, eval_batch_size), stream)
    eval_s = time.perf_counter() - t_eval
    train_s, samples = 0.0, 0

    steps = sum(epochs * (len(stream.train_indices(e)) // batch_size + 1) for e in range(T))
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress, leave=False)
    for e, new_classes in enumerate(stream.experiences):
        t0 = time.perf_counter()
        learner.begin_experience(e, new_classes)
        idx = stream.train_indices(e)
        x, y = stream.train_x[idx], stream.train_y[idx]  # this experience's data, on the device
        codes = codes_of[y] if codes_of is not None else None
        loss_sum = torch.zeros((), device=device)
        n_steps = 0
        for _ in range(epochs):
            for b in _batches(len(y), batch_size, order, device):
                # No .item() here: the loss is summed on the device and read once per experience.
                loss_sum += learner.observe(x[b], y[b], codes[b] if codes is not None else None)
                n_steps += 1
                samples += learner.last_batch_size
                bar.update(1)
        learner.end_experience(e, x, y, codes)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0

        t_eval = time.perf_counter()
        n_seen = sum(len(c) for c in stream.experiences[: e + 1])
        result = ev.evaluate_pass(learner, stream, n_seen, eval_batch_size)
        R[e] = ev.accuracy_row(result, stream, e)
        zs = ev.zero_shot_accuracy(result, stream)
        eval_s += time.perf_counter() - t_eval
        metrics = {"average_accuracy": sum(R[e][: e + 1]) / (e + 1),
                   "loss": float(loss_sum) / max(n_steps, 1),
                   "zero_shot": zs["accuracy"] if zs else None,
                   "memory_size": len(getattr(learner, "memory", ()))}
        for logger in loggers:
            logger.log_experience(e, {**metrics, "accuracy_row": R[e]})
        if progress:
            bar.clear()
        print_fn(format_experience_line(e, R, {k: v for k, v in metrics.items() if v is not None}))
    bar.close()

    t_eval = time.perf_counter()
    card = ReportCard.from_matrix(
        R, baseline,
        zero_shot=ev.zero_shot_accuracy(result, stream),
        gzsl=ev.generalised_zero_shot(result, stream),
        attribute_accuracy=ev.attribute_accuracy(result, stream),
        fine_grained=ev.fine_grained_accuracy(result, stream),
        long_tail=ev.long_tail(result, stream),
    )
    eval_s += time.perf_counter() - t_eval
    card.timing = {"train_s": train_s, "eval_s": eval_s, "train_samples": samples,
                   "train_samples_per_s": samples / train_s if train_s > 0 else None,
                   "eval_share": eval_s / (train_s + eval_s)}
    return card
