"""The training loop: a stream of experiences, one learner, a report card at the end.

Read this file top to bottom to know what a run does. Everything it calls is explicit:
the learner's three methods, the evaluator's functions, the loggers' and the checkpointer's.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch
from tqdm import tqdm

from continual.checkpoint import Checkpointer, LoopState
from continual.distributed import SINGLE, DistContext
from continual.learner.base import Learner
from continual.metrics import evaluate as ev
from continual.metrics.novel import check_new_domain, new_domain_protocols
from continual.metrics.report import ReportCard, format_experience_line


class ExperienceLogger(Protocol):
    """Whatever records progress: W&B, or anything else with this method."""

    def log_experience(self, experience: int, metrics: dict) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
             dist: DistContext = SINGLE) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Shuffled index batches: this process's share of each on the device, and the whole batches
    on the host (for bookkeeping without a sync). A batch too small to give every process two
    images (in one process: a trailing batch of one) is dropped: batch norm needs two."""
    perm = torch.randperm(n, generator=generator)
    on_device = perm.to(device)  # one copy per epoch, not one per step
    return dist.rank_batches(list(on_device.split(batch_size))), dist.global_batches(list(perm.split(batch_size)))


def _sample_curve(curve: dict, k: int, learner: Learner, stream, e: int, batch_size: int,
                  dist: DistContext = SINGLE) -> float:
    """Record accuracy on experience ``e``'s categories after ``k`` examples; returns seconds spent."""
    t = time.perf_counter()
    dist.sync_model(learner)
    curve[str(k)] = ev.new_category_accuracy(learner, stream, stream.experiences[e], batch_size)
    return time.perf_counter() - t


def run_stream(learner: Learner, stream, *, epochs: int, batch_size: int, seed: int,
               eval_batch_size: int = 512, min_steps: int = 0, loggers: tuple[ExperienceLogger, ...] = (),
               checkpointer: Checkpointer | None = None, learning_speed: bool = True,
               few_shot: dict | None = None, new_domain: dict | None = None, progress: bool = True,
               print_fn=print, dist: DistContext = SINGLE) -> ReportCard:
    """Train ``learner`` on every experience of ``stream`` in order and return the report card.

    With a ``checkpointer`` the state is saved after every experience, and a run that finds a
    checkpoint continues from it, giving the numbers an uninterrupted run would have given.
    An experience lasts ``epochs`` passes, or more when that is fewer than ``min_steps`` steps, so a
    study that shrinks the data (the scaling study) does not also starve the learner of updates.
    Under ``torchrun`` (``dist``, see ``continual.distributed``) each process trains on its share of
    every batch and offers its share of each experience to its own memory.
    ``new_domain`` (the ``eval.new_domain`` settings) runs the protocols of ``continual.metrics.novel``
    at the end when the stream has a never-trained domain (``stream.novel``).
    """
    if epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise ValueError(f"train.batch_size must be >= 2, got {batch_size}")
    check_new_domain(new_domain, getattr(stream, "novel", None))  # before hours of training, not after
    device = stream.train_x.device
    order = torch.Generator().manual_seed(seed)
    T = stream.n_experiences

    if checkpointer is not None and checkpointer.exists():
        state = checkpointer.restore(checkpointer.read(), learner, order)
        print_fn(f"resuming from {checkpointer.path} at experience {state.next_experience + 1}/{T}")
    else:
        state = LoopState(T)
        # b_j for forward transfer: the untrained learner under the zero-shot protocol.
        t_eval = time.perf_counter()
        state.baseline = ev.fwt_baseline(ev.evaluate_pass(learner, stream, 0, eval_batch_size), stream)
        state.eval_s += time.perf_counter() - t_eval

    def epochs_of(e: int) -> int:
        steps_per_epoch = max(1, -(-len(stream.train_indices(e)) // batch_size))
        return max(epochs, -(-min_steps // steps_per_epoch))

    steps = sum(epochs_of(e) * (len(stream.train_indices(e)) // batch_size + 1) for e in range(state.next_experience, T))
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress, leave=False)
    result = None
    for e in range(state.next_experience, T):
        t0 = time.perf_counter()
        learner.begin_experience(e, stream.experiences[e])
        idx = stream.train_indices(e)
        x, y = stream.train_x[idx], stream.train_y[idx]  # this experience's data, on the device
        codes = stream.codes_for(idx) if stream.has_attributes else None  # per image where the stream has them
        loss_sum = torch.zeros((), device=device)
        first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first non-finite step
        n_steps = 0
        curve: dict[str, float] = {}  # accuracy on the new categories after k examples of each
        curve_s = 0.0  # time spent sampling it counts as evaluation, not training
        for epoch in range(epochs_of(e)):
            batches, host_batches = _batches(len(y), batch_size, order, device, dist)
            milestones = ev.milestone_steps(host_batches, y.cpu()) if epoch == 0 and learning_speed else {}
            if 0 in milestones:  # k = 0: the classifier as started from the description alone
                curve_s += _sample_curve(curve, 0, learner, stream, e, eval_batch_size, dist)
            for step, b in enumerate(batches, start=1):
                loss = learner.observe(x[b], y[b], codes[b] if codes is not None else None)
                # Bookkeeping stays on the device: no host sync inside the step.
                loss_sum += loss
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), n_steps, first_bad)
                n_steps += 1
                state.samples += learner.last_batch_size
                bar.update(1)
                for k in [k for k, at in milestones.items() if at == step]:
                    curve_s += _sample_curve(curve, k, learner, stream, e, eval_batch_size, dist)
            if dist.any(first_bad >= 0):  # one read per epoch (on any process: all stop together)
                raise NonFiniteLossError(
                    f"non-finite loss at experience {e + 1}/{T}, step {int(first_bad) + 1} of the experience; "
                    f"the last good checkpoint ({'none yet' if checkpointer is None or e == 0 else checkpointer.path}) "
                    f"is kept. Lower learner.lr or check the data")
        mine = slice(dist.rank, None, dist.world_size)  # this process's share, for its own memory
        learner.end_experience(e, x[mine], y[mine], codes[mine] if codes is not None else None)
        dist.sync_model(learner)  # every process evaluates the same model
        if device.type == "cuda":
            torch.cuda.synchronize()
        state.train_s += time.perf_counter() - t0 - curve_s
        state.eval_s += curve_s

        t_eval = time.perf_counter()
        n_seen = sum(len(c) for c in stream.experiences[: e + 1])
        result = ev.evaluate_pass(learner, stream, n_seen, eval_batch_size)
        state.R[e] = ev.accuracy_row(result, stream, e)
        zs = ev.zero_shot_accuracy(result, stream)
        fs = ev.few_shot(result, stream, few_shot, seed) if few_shot and few_shot.get("every_experience") else None
        state.eval_s += time.perf_counter() - t_eval
        metrics = {"average_accuracy": sum(state.R[e][: e + 1]) / (e + 1),
                   "loss": float(dist.mean(loss_sum)) / max(n_steps, 1),
                   "zero_shot": zs["accuracy"] if zs else None,
                   "memory_size": sum(dist.gather(len(getattr(learner, "memory", ())))),  # all processes
                   **{f"few_shot/{name}": r["accuracy"] for name, r in (fs or {}).items()}}
        state.history.append(metrics)
        if curve:
            state.learning_curves.append(curve)
        for logger in loggers:
            logger.log_experience(e, {**metrics, "accuracy_row": state.R[e]})
        state.next_experience = e + 1
        if checkpointer is not None:
            checkpointer.save(learner, state, order)
        bar.clear()
        print_fn(format_experience_line(e, state.R, {k: v for k, v in metrics.items() if v is not None}))
    bar.close()

    t_eval = time.perf_counter()
    if result is None:  # resumed after the last experience: evaluation is deterministic, redo it
        result = ev.evaluate_pass(learner, stream, sum(len(c) for c in stream.experiences), eval_batch_size)
    card = ReportCard.from_matrix(
        state.R, state.baseline,
        zero_shot=ev.zero_shot_accuracy(result, stream),
        gzsl=ev.generalised_zero_shot(result, stream),
        attribute_accuracy=ev.attribute_accuracy(result, stream),
        fine_grained=ev.fine_grained_accuracy(result, stream),
        long_tail=ev.long_tail(result, stream),
        learning_speed=ev.learning_speed_summary(state.learning_curves),
        few_shot=ev.few_shot(result, stream, few_shot, seed),
        **new_domain_protocols(learner, stream, new_domain, seed, eval_batch_size),
    )
    state.eval_s += time.perf_counter() - t_eval
    samples = sum(dist.gather(state.samples))  # by all processes together
    card.timing = {"train_s": state.train_s, "eval_s": state.eval_s, "train_samples": samples,
                   "train_samples_per_s": samples / state.train_s if state.train_s > 0 else None,
                   "eval_share": state.eval_s / (state.train_s + state.eval_s)}
    return card
