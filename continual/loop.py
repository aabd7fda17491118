"""The training loop: a source of batches, one learner, a report card at the end.

Read this file top to bottom to know what a run does. ``train_on`` is the one place where a learner
meets data: the run (``run_stream``), the benchmark and the tests all train through it. It feeds a
source's events (``continual.stream.source``) to the learner's methods and hands each event back, so
the caller decides, in plain code, what to measure and when to save. ``run_stream`` is that caller for
a run: evaluation, learning curves, anytime accuracy, checkpoints and the report card.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Protocol

import torch
from tqdm import tqdm

from continual.checkpoint import Checkpointer, LoopState
from continual.distributed import SINGLE, DistContext
from continual.learner.base import Learner
from continual.metrics import evaluate as ev
from continual.metrics.anytime import AnytimeProbe, anytime_summary
from continual.metrics.novel import check_new_domain, new_domain_protocols
from continual.metrics.report import ReportCard, format_experience_line
from continual.stream.source import Batch, Begin, End, Epoch, Event


class ExperienceLogger(Protocol):
    """Whatever records progress: W&B, or anything else with these methods."""

    def log_experience(self, experience: int, metrics: dict) -> None: ...

    def log_anytime(self, point: dict) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainProgress:
    """Where training stands. Counters are host ints; the loss sum and the first non-finite step stay
    on the device, read once per epoch (and at checkpoints), never per step."""

    position: int = 0  # events consumed: a resume regenerates the source and skips this many
    steps: int = 0  # optimisation steps
    samples: int = 0  # images trained on, replay included (throughput)
    arrived: int = 0  # stream samples presented so far (an experience stream presents each once per epoch)
    met: int = 0  # categories the learner has met (their head rows exist)
    experience: int = -1  # the experience (online: hidden segment) in progress
    exp_steps: int = 0  # steps of the experience in progress
    loss_sum: torch.Tensor | float = 0.0  # summed over the experience in progress
    first_bad: torch.Tensor | int = -1  # its first step with a non-finite loss

    def state(self) -> dict:
        """Host values for a checkpoint (reads the device sums: call outside the hot loop)."""
        return {**asdict(self), "loss_sum": float(self.loss_sum), "first_bad": int(self.first_bad)}


def _check_finite(progress: TrainProgress, n_experiences: int, dist: DistContext) -> None:
    if dist.any(torch.as_tensor(progress.first_bad) >= 0):  # one read (on any process: all stop together)
        raise NonFiniteLossError(
            f"non-finite loss at experience {progress.experience + 1}/{n_experiences}, "
            f"step {int(progress.first_bad) + 1} of the experience; "
            f"the last good checkpoint (if any) is kept. Lower learner.lr or check the data")


def train_on(source, learner: Learner, progress: TrainProgress, dist: DistContext = SINGLE) -> Iterator[Event]:
    """Train ``learner`` on ``source``'s events from ``progress.position`` on; yield each event once applied.

    Boundaries reach the learner only when the source tells them (``source.told``); an online source
    tells nothing but the labels met for the first time (``learner.meet``), and its images go to the
    memory as they arrive (``learner.remember``). ``progress`` is updated in place.
    """
    for event in itertools.islice(source.events(), progress.position, None):
        if isinstance(event, Begin):
            progress.experience, progress.exp_steps = event.experience, 0
            progress.loss_sum = torch.zeros((), device=learner_device(learner))
            progress.first_bad = torch.full((), -1, device=learner_device(learner), dtype=torch.long)
            if source.told:
                learner.begin_experience(event.experience, event.new_classes)
                progress.met += len(event.new_classes)
        elif isinstance(event, Epoch):
            _check_finite(progress, source.stream.n_experiences, dist)
        elif isinstance(event, Batch):
            if event.new_classes:  # a category is new when its label first appears
                learner.meet(event.new_classes)
                progress.met += len(event.new_classes)
            for _ in range(source.updates):
                loss = learner.observe(event.x, event.y, event.codes)
                # Bookkeeping stays on the device: no host sync inside the step.
                progress.loss_sum += loss
                progress.first_bad = torch.where((progress.first_bad < 0) & ~torch.isfinite(loss),
                                                 progress.exp_steps, progress.first_bad)
                progress.exp_steps += 1
                progress.steps += 1
                progress.samples += learner.last_batch_size
            if not source.told:
                learner.remember(event.x, event.y, event.y_host, event.codes)
            progress.arrived = event.samples
        elif isinstance(event, End):
            _check_finite(progress, source.stream.n_experiences, dist)
            if source.told:
                learner.end_experience(event.experience, event.x, event.y, event.codes)
        progress.position += 1
        yield event


def learner_device(learner: Learner) -> torch.device:
    return next(learner.parameters()).device


def _settle(learner: Learner, dist: DistContext) -> None:
    """Every process's model equal and every queued kernel done: before an evaluation, and before a
    clock is read (CUDA runs asynchronously)."""
    dist.sync_model(learner)
    if learner_device(learner).type == "cuda":
        torch.cuda.synchronize()


def _timed(events: Iterator[Event], state: LoopState) -> Iterator[Event]:
    """``events``, adding the time spent producing each (training) to ``state.train_s``."""
    while True:
        t = time.perf_counter()
        event = next(events, None)
        state.train_s += time.perf_counter() - t
        if event is None:
            return
        yield event


def run_stream(learner: Learner, stream, source, *, seed: int, eval_batch_size: int = 512, eval_every: int = 1,
               anytime: AnytimeProbe | None = None, checkpoint_every: int = 0,
               loggers: tuple[ExperienceLogger, ...] = (), checkpointer: Checkpointer | None = None,
               learning_speed: bool = True, few_shot: dict | None = None, new_domain: dict | None = None,
               progress: bool = True, print_fn=print, dist: DistContext = SINGLE) -> ReportCard:
    """Train ``learner`` on ``source`` (an experience or online stream over ``stream``) and return the report card.

    After every ``eval_every``-th experience (online: hidden segment) and the last, the whole test set
    gives a row of the accuracy matrix; ``anytime`` scores a fixed subsample every so many samples.
    With a ``checkpointer`` the state is saved every ``checkpoint_every`` steps (0: at experience ends
    only) and at every experience's end, and a run that finds a checkpoint continues from it, giving the
    numbers an uninterrupted run would have given. ``new_domain`` (the ``eval.new_domain`` settings)
    runs the protocols of ``continual.metrics.novel`` at the end when the stream has a never-trained
    domain (``stream.novel``).
    """
    if eval_every < 1:
        raise ValueError(f"eval.every must be >= 1 (experiences), got {eval_every}")
    if checkpoint_every < 0:
        raise ValueError(f"train.checkpoint_every must be >= 0 (steps; 0 = at experience ends), got {checkpoint_every}")
    check_new_domain(new_domain, getattr(stream, "novel", None))  # before hours of training, not after
    T = stream.n_experiences
    train = TrainProgress()
    if checkpointer is not None and checkpointer.exists():
        state = checkpointer.restore(checkpointer.read(), learner)
        train = TrainProgress(**state.progress)
        print_fn(f"resuming from {checkpointer.path} at step {train.steps} (experience {train.experience + 1}/{T})")
    else:
        state = LoopState(T)
        # b_j for forward transfer: the untrained learner under the zero-shot protocol.
        t_eval = time.perf_counter()
        state.baseline = ev.fwt_baseline(ev.evaluate_pass(learner, stream, 0, eval_batch_size), stream)
        state.eval_s += time.perf_counter() - t_eval
    curve_on = learning_speed and source.told  # online streams have no experience to time k examples in

    def evaluate(fn, *args):  # evaluation time is not training time
        _settle(learner, dist)
        t = time.perf_counter()
        out = fn(*args)
        state.eval_s += time.perf_counter() - t
        return out

    def save() -> None:
        state.progress = train.state()
        checkpointer.save(learner, state)

    bar = tqdm(total=source.n_steps(), initial=train.steps, desc="training", unit="step",
               disable=not progress, leave=False)
    result = None
    for event in _timed(train_on(source, learner, train, dist), state):
        if isinstance(event, Epoch) and curve_on:
            # The learning curve of the new categories: sampled after k examples of each (first epoch).
            state.milestones = ev.milestone_steps(event.host_batches, event.host_labels) if event.epoch == 0 else {}
            state.curve = {} if event.epoch == 0 else state.curve
            if 0 in state.milestones:  # k = 0: the classifier as started from the description alone
                state.curve["0"] = evaluate(ev.new_category_accuracy, learner, stream,
                                            stream.experiences[event.experience], eval_batch_size)
        elif isinstance(event, Batch):
            bar.update(source.updates)
            for k in [k for k, at in state.milestones.items() if at == event.step and k > 0]:
                state.curve[str(k)] = evaluate(ev.new_category_accuracy, learner, stream,
                                               stream.experiences[train.experience], eval_batch_size)
            if anytime is not None and anytime.due(event.samples - len(event.y_host), event.samples):
                point = evaluate(anytime.measure, learner, train.met, train.arrived)
                state.anytime.append(point)
                for logger in loggers:
                    logger.log_anytime(point)
            if checkpointer is not None and checkpoint_every and train.steps % checkpoint_every < source.updates:
                save()
        elif isinstance(event, End):
            e = event.experience
            zs = fs = None
            evaluated = (e + 1) % eval_every == 0 or e == T - 1
            if evaluated:
                n_seen = sum(len(c) for c in stream.experiences[: e + 1])
                result = evaluate(ev.evaluate_pass, learner, stream, n_seen, eval_batch_size)
                state.R[e] = ev.accuracy_row(result, stream, e)
                zs = ev.zero_shot_accuracy(result, stream)
                fs = ev.few_shot(result, stream, few_shot, seed) if few_shot and few_shot.get("every_experience") else None
            metrics = {"average_accuracy": sum(state.R[e][: e + 1]) / (e + 1) if evaluated else None,
                       "loss": float(dist.mean(train.loss_sum)) / max(train.exp_steps, 1),
                       "zero_shot": zs["accuracy"] if zs else None,
                       "memory_size": sum(dist.gather(len(getattr(learner, "memory", ())))),  # all processes
                       **{f"few_shot/{name}": r["accuracy"] for name, r in (fs or {}).items()}}
            state.history.append(metrics)
            if state.curve:
                state.learning_curves.append(state.curve)
            state.curve, state.milestones = {}, {}
            for logger in loggers:
                logger.log_experience(e, {**metrics, "accuracy_row": state.R[e]})
            state.next_experience = e + 1
            if checkpointer is not None:
                save()
            bar.clear()
            print_fn(format_experience_line(e, state.R, {k: v for k, v in metrics.items() if v is not None}))
    bar.close()

    n_all = sum(len(c) for c in stream.experiences)
    if result is None or result.n_seen != n_all:  # resumed after the last evaluation: it is deterministic, redo it
        result = evaluate(ev.evaluate_pass, learner, stream, n_all, eval_batch_size)
    if anytime is not None:  # the curve's last point, on the full test set
        state.anytime.append(evaluate(anytime.measure, learner, train.met, train.arrived, True))
    t_eval = time.perf_counter()
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
    if anytime is not None:
        card.anytime = anytime_summary(state.anytime)
    state.eval_s += time.perf_counter() - t_eval
    samples = sum(dist.gather(train.samples))  # by all processes together
    card.timing = {"train_s": state.train_s, "eval_s": state.eval_s, "train_samples": samples,
                   "train_samples_per_s": samples / state.train_s if state.train_s > 0 else None,
                   "eval_share": state.eval_s / (state.train_s + state.eval_s)}
    return card
