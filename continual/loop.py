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
from continual.metrics.calibration import Calibrator
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


class _Run:
    """What ``run_stream`` does around training, one method per kind of event: resume or start,
    learning curves, anytime points, rows of the accuracy matrix, checkpoints, the report card."""

    def __init__(self, learner: Learner, stream, source, *, seed: int, eval_batch_size: int, eval_every: int,
                 eval_subset: torch.Tensor | None, anytime: AnytimeProbe | None, checkpoint_every: int,
                 loggers: tuple[ExperienceLogger, ...], checkpointer: Checkpointer | None, learning_speed: bool,
                 few_shot: dict | None, new_domain: dict | None, print_fn, dist: DistContext,
                 calibration: Calibrator | None = None, zero_shot: str = "attributes") -> None:
        if eval_every < 1:
            raise ValueError(f"eval.every must be >= 1 (experiences), got {eval_every}")
        if checkpoint_every < 0:
            raise ValueError(f"train.checkpoint_every must be >= 0 (steps; 0 = at experience ends), got {checkpoint_every}")
        check_new_domain(new_domain, getattr(stream, "novel", None))  # before hours of training, not after
        self.learner, self.stream, self.source, self.seed, self.dist = learner, stream, source, seed, dist
        self.batch_size, self.every, self.subset, self.anytime = eval_batch_size, eval_every, eval_subset, anytime
        self.checkpoint_every, self.loggers, self.checkpointer = checkpoint_every, loggers, checkpointer
        self.few_shot, self.new_domain, self.print = few_shot, new_domain, print_fn
        self.calibration = calibration  # calibrated GZSL: gamma chosen as experiences arrive
        self.zero_shot = zero_shot  # how an untrained category is named (evaluate.zero_shot_scores)
        self.curve_on = learning_speed and source.told  # online streams have no experience to time k examples in
        self.result: ev.EvalPass | None = None  # the last evaluation of the test set
        T = stream.n_experiences
        if checkpointer is not None and checkpointer.exists():
            self.state = checkpointer.restore(checkpointer.read(), learner)
            self.train = TrainProgress(**self.state.progress)
            if calibration is not None:
                calibration.load_state_dict(self.state.calibration)
            print_fn(f"resuming from {checkpointer.path} at step {self.train.steps} "
                     f"(experience {self.train.experience + 1}/{T})")
        else:
            self.state, self.train = LoopState(T), TrainProgress()
            # b_j for forward transfer: the untrained learner under the zero-shot protocol.
            self.state.baseline = ev.fwt_baseline(self.evaluate(ev.evaluate_pass, learner, stream, 0, eval_batch_size,
                                                                eval_subset), stream)

    def evaluate(self, fn, *args):
        """``fn(*args)`` on a settled model, its time counted as evaluation, not training."""
        _settle(self.learner, self.dist)
        t = time.perf_counter()
        out = fn(*args)
        self.state.eval_s += time.perf_counter() - t
        return out

    def save(self) -> None:
        if self.checkpointer is not None:
            self.state.progress = self.train.state()
            self.checkpointer.save(self.learner, self.state)

    def _new_category_accuracy(self, experience: int) -> float:
        return self.evaluate(ev.new_category_accuracy, self.learner, self.stream, self.stream.experiences[experience],
                             self.batch_size)

    def _descriptions(self) -> str | None:
        """The anchors an evaluation maps descriptions to (``Learner.description_scores``), for calibrated GZSL
        and zero-shot by descriptions: the calibration's (prototypes or rows), else prototypes; None when
        neither asks."""
        if self.calibration is not None and self.calibration.settings.scores != "attributes":
            return self.calibration.settings.scores
        return "prototypes" if self.zero_shot == "descriptions" else None

    def begin(self, event: Begin) -> None:
        """An experience arrives, not trained on yet: calibrated GZSL chooses its gamma from it (timed as evaluation)."""
        if self.calibration is not None and self.source.told:
            self.evaluate(self.calibration.arrive, self.learner, event.experience)
            self.state.calibration = self.calibration.state_dict()

    def epoch(self, event: Epoch) -> None:
        """The learning curve of the new categories is sampled after k examples of each (first epoch)."""
        if not self.curve_on:
            return
        state = self.state
        state.milestones = ev.milestone_steps(event.host_batches, event.host_labels) if event.epoch == 0 else {}
        state.curve = {} if event.epoch == 0 else state.curve
        if 0 in state.milestones:  # k = 0: the classifier as started from the description alone
            state.curve["0"] = self._new_category_accuracy(event.experience)

    def batch(self, event: Batch) -> None:
        """Learning-curve samples and anytime points due after this batch; a checkpoint when due."""
        for k in [k for k, at in self.state.milestones.items() if at == event.step and k > 0]:
            self.state.curve[str(k)] = self._new_category_accuracy(self.train.experience)
        if self.anytime is not None and self.anytime.due(event.samples - len(event.y_host), event.samples):
            point = self.evaluate(self.anytime.measure, self.learner, self.train.met, self.train.arrived)
            self.state.anytime.append(point)
            for logger in self.loggers:
                logger.log_anytime(point)
        if self.checkpoint_every and self.train.steps % self.checkpoint_every < self.source.updates:
            self.save()

    def end(self, event: End) -> None:
        """An experience (segment) is over: a row of the accuracy matrix when one is due, the logs, a checkpoint."""
        e, T, state, stream, dist = event.experience, self.stream.n_experiences, self.state, self.stream, self.dist
        zs = fs = None
        evaluated = (e + 1) % self.every == 0 or e == T - 1
        if evaluated:
            n_seen = sum(len(c) for c in stream.experiences[: e + 1])
            self.result = self.evaluate(ev.evaluate_pass, self.learner, stream, n_seen, self.batch_size,
                                        None if e == T - 1 else self.subset, self._descriptions())
            state.R[e] = ev.accuracy_row(self.result, stream, e, self.zero_shot)
            zs = ev.zero_shot_accuracy(self.result, stream, self.zero_shot)
            state.czsl += [None] * (e - len(state.czsl))  # experiences not evaluated
            state.czsl.append(ev.generalised_zero_shot(self.result, stream, ev.unseen_after(stream, e)))
            if self.calibration is not None:
                state.czsl_calibrated += [None] * (e - len(state.czsl_calibrated))
                state.czsl_calibrated.append(self.evaluate(self.calibration.gzsl, self.learner, self.result,
                                                           ev.unseen_after(stream, e)))
            if self.few_shot and self.few_shot.get("every_experience"):
                fs = ev.few_shot(self.result, stream, self.few_shot, self.seed)
        metrics = {"average_accuracy": sum(state.R[e][: e + 1]) / (e + 1) if evaluated else None,
                   "loss": float(dist.mean(self.train.loss_sum)) / max(self.train.exp_steps, 1),
                   "zero_shot": zs["accuracy"] if zs else None,
                   "memory_size": sum(dist.gather(len(getattr(self.learner, "memory", ())))),  # all processes
                   **{f"few_shot/{name}": r["accuracy"] for name, r in (fs or {}).items()}}
        state.history.append(metrics)
        if state.curve:
            state.learning_curves.append(state.curve)
        state.curve, state.milestones = {}, {}
        for logger in self.loggers:
            logger.log_experience(e, {**metrics, "accuracy_row": state.R[e]})
        state.next_experience = e + 1
        self.save()
        self.print(format_experience_line(e, state.R, {k: v for k, v in metrics.items() if v is not None}))

    def report(self) -> ReportCard:
        """The report card: every end-of-stream metric on the whole test set, anytime summary, timing."""
        learner, stream, state, seed = self.learner, self.stream, self.state, self.seed
        n_all = sum(len(c) for c in stream.experiences)
        result = self.result
        if result is None or result.n_seen != n_all or len(result.y) != len(stream.test_y):
            # Resumed after the last evaluation: it is deterministic, redo it.
            result = self.evaluate(ev.evaluate_pass, learner, stream, n_all, self.batch_size, None,
                                   self._descriptions())
        if self.anytime is not None:  # the curve's last point, on the full test set (in place of one due there)
            last = self.evaluate(self.anytime.measure, learner, self.train.met, self.train.arrived, True)
            if state.anytime and state.anytime[-1]["samples"] == last["samples"]:
                state.anytime.pop()
            state.anytime.append(last)
        t_eval = time.perf_counter()
        card = ReportCard.from_matrix(
            state.R, state.baseline,
            zero_shot=ev.zero_shot_accuracy(result, stream, self.zero_shot),
            gzsl=_with_czsl(ev.generalised_zero_shot(result, stream), ev.continual_zero_shot(state.czsl)),
            attribute_accuracy=ev.attribute_accuracy(result, stream),
            fine_grained=ev.fine_grained_accuracy(result, stream),
            long_tail=ev.long_tail(result, stream),
            learning_speed=ev.learning_speed_summary(state.learning_curves),
            few_shot=ev.few_shot(result, stream, self.few_shot, seed),
            **new_domain_protocols(learner, stream, self.new_domain, seed, self.batch_size),
        )
        if self.anytime is not None:
            card.anytime = {**anytime_summary(state.anytime), "every": self.anytime.every}
        if self.calibration is not None:
            card.gzsl_calibrated = self.calibration.gzsl(learner, result, list(stream.heldout))
            if card.gzsl_calibrated is not None:
                card.gzsl_calibrated["chosen"] = self.calibration.history  # every gamma chosen, as the stream went
            card.czsl_calibrated = ev.continual_zero_shot(state.czsl_calibrated)
        state.eval_s += time.perf_counter() - t_eval
        samples = sum(self.dist.gather(self.train.samples))  # by all processes together
        card.timing = {"train_s": state.train_s, "eval_s": state.eval_s, "train_samples": samples,
                       "train_samples_per_s": samples / state.train_s if state.train_s > 0 else None,
                       "eval_share": state.eval_s / (state.train_s + state.eval_s)}
        return card


def _with_czsl(gzsl: dict | None, czsl: dict | None) -> dict | None:
    """The report's ``gzsl``: the end-of-stream numbers and the continual means over experiences."""
    if czsl is None:
        return gzsl
    return {**(gzsl or {}), **czsl}


def run_stream(learner: Learner, stream, source, *, seed: int, eval_batch_size: int = 512, eval_every: int = 1,
               eval_subset: torch.Tensor | None = None, anytime: AnytimeProbe | None = None, checkpoint_every: int = 0,
               loggers: tuple[ExperienceLogger, ...] = (), checkpointer: Checkpointer | None = None,
               learning_speed: bool = True, few_shot: dict | None = None, new_domain: dict | None = None,
               progress: bool = True, print_fn=print, dist: DistContext = SINGLE,
               calibration: Calibrator | None = None, zero_shot: str = "attributes") -> ReportCard:
    """Train ``learner`` on ``source`` (an experience or online stream over ``stream``) and return the report card.

    After every ``eval_every``-th experience (online: hidden segment) and the last, the test images of
    ``eval_subset`` (host indices; None: all of them) give a row of the accuracy matrix, the last row
    the whole test set; ``anytime`` scores a fixed subsample every so many samples.
    With a ``checkpointer`` the state is saved every ``checkpoint_every`` steps (0: at experience ends
    only) and at every experience's end, and a run that finds a checkpoint continues from it, giving the
    numbers an uninterrupted run would have given. ``new_domain`` (the ``eval.new_domain`` settings)
    runs the protocols of ``continual.metrics.novel`` at the end when the stream has a never-trained
    domain (``stream.novel``). ``calibration`` adds calibrated GZSL (``continual.metrics.calibration``): gamma
    chosen as each experience arrives, the report's ``gzsl_calibrated`` and ``czsl_calibrated``. ``zero_shot``
    (``eval.zero_shot``) names untrained categories by ``descriptions`` or ``attributes``
    (``evaluate.zero_shot_scores``): the report's zero-shot and the accuracy matrix above its diagonal.
    """
    run = _Run(learner, stream, source, seed=seed, eval_batch_size=eval_batch_size, eval_every=eval_every,
               eval_subset=eval_subset, anytime=anytime, checkpoint_every=checkpoint_every, loggers=loggers,
               checkpointer=checkpointer, learning_speed=learning_speed, few_shot=few_shot, new_domain=new_domain,
               print_fn=print_fn, dist=dist, calibration=calibration, zero_shot=zero_shot)
    bar = tqdm(total=source.n_steps(), initial=run.train.steps, desc="training", unit="step",
               disable=not progress, leave=False)
    for event in _timed(train_on(source, learner, run.train, dist), run.state):
        if isinstance(event, Begin):
            run.begin(event)
        elif isinstance(event, Epoch):
            run.epoch(event)
        elif isinstance(event, Batch):
            bar.update(source.updates)
            run.batch(event)
        elif isinstance(event, End):
            bar.clear()
            run.end(event)
    bar.close()
    return run.report()
