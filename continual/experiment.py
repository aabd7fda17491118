"""From a resolved config to a finished run folder: build, train, report, save.

The run folder is complete when ``report.json`` exists: it is written last and atomically,
so a run that dies midway never looks finished. Running the same config into the same folder
again resumes from the last checkpoint (or just prints the report of a finished run); a
folder that holds a run of another config is refused before anything is written.
Under ``torchrun`` every process runs ``run_experiment`` with its ``DistContext`` and rank 0 alone
writes the folder, but for each other rank's own checkpoint file (``continual.distributed`` says how
the work is shared, ``continual.checkpoint`` how a multi-process run resumes).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from continual.checkpoint import Checkpointer
from continual.config import validate_config
from continual.distributed import SINGLE, DistContext
from continual.learner import LEARNERS, Learner
from continual.learner.common import check_backbone_inputs
from continual.logging.run_folder import (RunFolderError, RunFolderLock, git_revision, prepare_run_dir,
                                         source_digest, write_text_atomic)
from continual.loop import run_stream
from continual.metrics.anytime import AnytimeProbe, eval_subset
from continual.metrics.calibration import Calibrator, calibration_settings
from continual.memory import ClassBalancedReservoir
from continual.memory.budget import capacity_for_budget, memory_bytes
from continual.metrics.report import ReportCard, format_report, save_heatmap, write_json_atomic
from continual.stream import build_stream
from continual.stream.disk import store_stream
from continual.stream.source import build_source, check_online
from continual.stream.validation import split_validation

# Keys that change how a run is shown or where inputs are found, not what it computes: a resumed
# run (or a sweep run again from another folder) may change them. The render cache is keyed by its
# content and Omniglot's archives are checked against their sha256, so their paths do not matter.
PRESENTATION_KEYS = ("progress", "logger", "benchmark.cache_dir", "benchmark.data_root",
                     "data.storage", "data.memory_cap")  # images on disk give the same numbers (tested)
MIN_FREE_BYTES = 100 * 2**20  # checkpoints, report and W&B files of a default run are ~10 MB


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=auto or device=cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """The machine behind ``device``, for the run folder: the config says only ``auto`` or ``cuda``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}), torch {torch.__version__}"
    return f"cpu ({torch.get_num_threads()} threads of {os.cpu_count()} cores), torch {torch.__version__}"


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch generators from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _relevant(cfg: dict) -> dict:
    """A copy of ``cfg`` without the PRESENTATION_KEYS."""
    relevant = json.loads(json.dumps(cfg))  # a deep copy
    for key in PRESENTATION_KEYS:
        *path, leaf = key.split(".")
        node = relevant
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return relevant


def config_fingerprint(cfg: dict) -> str:
    """A hash of everything in the config that changes the numbers a run produces."""
    return hashlib.sha256(json.dumps(_relevant(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _first_difference(old: object, new: object, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"


FULL_EVALUATIONS = 5  # eval.every=auto: about this many whole-test-set rows of the accuracy matrix per run


def eval_every(value: int | str, n_experiences: int) -> int:
    """``eval.every``: k experiences between whole-test-set evaluations (``auto``: ceil(T / 5))."""
    if value == "auto":
        return max(1, -(-n_experiences // FULL_EVALUATIONS))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"eval.every must be an int >= 1 (experiences) or 'auto', got {value!r}")
    return value


ANYTIME_POINTS = 20  # eval.anytime.every=auto on an online stream: about this many points over the stream


def anytime_every(value: int | str, source) -> int:
    """``eval.anytime.every``: samples between anytime points (0: none). ``auto``: about 20 points over an
    online stream, none on an experience stream (its accuracy matrix is its curve; ask for points with
    a number)."""
    if value == "auto":
        return 0 if source.told else max(1, -(-source.n_samples() // ANYTIME_POINTS))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"eval.anytime.every must be an int >= 0 (samples; 0 = off) or 'auto', got {value!r}")
    return value


def build_learner(cfg: dict, stream, device: torch.device, dist: DistContext = SINGLE):
    """The learner named by ``learner.name`` with its replay memory, on ``device``.

    The memory holds ``memory.size`` examples, or as many as fit ``memory.budget`` bytes together with
    what else this learner keeps (``continual.memory.budget``). In a multi-process run: this process's
    share of the memory (with its own sampling seed) and of each step's replay images.
    """
    learner_cfg = dict(cfg["learner"])
    name = learner_cfg.pop("name")
    if dist.multi and "replay_batch_size" in learner_cfg:
        learner_cfg["replay_batch_size"] = dist.per_rank(learner_cfg["replay_batch_size"], "learner.replay_batch_size")
    memory_cfg = dict(cfg.get("memory") or {})
    n_attr = len(stream.attribute_space.names) if stream.has_attributes else 0
    # Rows for a never-trained domain's categories too (met after the stream, continual.metrics.novel),
    # described by nothing: zero attribute vectors.
    n_novel = stream.novel.n_categories if stream.novel is not None else 0
    class_attributes = None
    if stream.has_attributes:
        class_attributes = stream.class_attributes()
        class_attributes = torch.cat([class_attributes, class_attributes.new_zeros(n_novel, class_attributes.shape[1])])

    # A learner that keeps different state without boundaries (ER-ACE) is told it learns online.
    online = (cfg.get("online") or {}).get("mode", "off") != "off"
    if online and "online" in inspect.signature(LEARNERS.get(name)).parameters:
        learner_cfg["online"] = True

    # Transforms that change one attribute of an image and nothing else (AttributeSpace.nuisances), for
    # learners that vary them (continual.learner.nuisance), by attribute index.
    if stream.has_attributes and "nuisances" in inspect.signature(LEARNERS.get(name)).parameters:
        names = list(stream.attribute_space.names)
        learner_cfg["nuisances"] = tuple((t, tuple(names.index(a) for a in changed))
                                         for t, changed in stream.attribute_space.nuisances)

    def build(capacity: int, on: torch.device) -> Learner:
        # The memory keeps what the stream holds: uint8 images or float features, long or float (continuous) codes.
        codes = (stream.train_codes if stream.train_codes is not None else stream.class_codes) if stream.has_attributes else None
        codes_dtype = codes.dtype if codes is not None else torch.long
        memory = ClassBalancedReservoir(capacity, stream.image_shape, n_attr, device=on, seed=cfg["seed"] + dist.rank,
                                        x_dtype=stream.train_x.dtype, codes_dtype=codes_dtype)
        return LEARNERS.build(
            name, n_classes=stream.n_classes + n_novel, image_shape=stream.image_shape,
            class_attributes=class_attributes,
            attribute_blocks=stream.attribute_space.sizes if stream.has_attributes else None,
            memory=memory, **learner_cfg)

    size = int(memory_cfg.get("size") or 0)
    if memory_cfg.get("budget") is not None:  # measured on CPU probes, with the global generator restored
        size = capacity_for_budget(memory_cfg["budget"], lambda c: build(c, torch.device("cpu")), name)
    return build(dist.share(size), device).to(device)


def _check_run_dir(cfg: dict, run_dir: Path) -> bool:
    """Check the folder may hold this run, writing nothing; True when it already holds the finished run."""
    config_file = run_dir / "config.json"
    if config_file.exists():
        try:
            old = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise RunFolderError(f"{config_file} is not valid JSON ({err}); this folder's run cannot be "
                                 f"resumed: choose another run folder (hydra.run.dir=...)") from err
        n_old, n_new = old.get("world_size", 1), cfg.get("world_size", 1)
        if n_old != n_new:  # each process holds its own share of the replay memory
            how = f"torchrun --nproc_per_node={n_old}" if n_old > 1 else "one process (python experiments/train.py)"
            raise RunFolderError(f"run folder {run_dir} holds a run of {n_old} process(es) and this run has {n_new}; "
                                 f"nothing was changed in it. Run it again with {how}, or choose another run "
                                 f"folder (hydra.run.dir=...)")
        if config_fingerprint(old) != config_fingerprint(cfg):
            raise RunFolderError(
                f"run folder {run_dir} holds a run with a different config ({_first_difference(_relevant(old), _relevant(cfg))}); "
                f"nothing was changed in it. Choose another run folder (hydra.run.dir=...) or use the same config")
        return (run_dir / "report.json").exists()
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise RunFolderError(f"only {free / 2**20:.0f} MiB free on the disk of {run_dir}; a run needs at least "
                             f"{MIN_FREE_BYTES / 2**20:.0f} MiB. Free space or choose another run folder")
    return False


def _claim_run_dir(cfg: dict, run_dir: Path) -> bool:
    """``_check_run_dir``, then the folder is this run's: its config is written (a new folder's)."""
    if _check_run_dir(cfg, run_dir):
        return True
    if not (run_dir / "config.json").exists():
        write_text_atomic(json.dumps(cfg, indent=2), run_dir / "config.json")
    return False


EVIDENCE_FILES = ("report.json", "config.json", "git.json", "accuracy_matrix.png", "distributed.json",
                  ".hydra/config.yaml", ".hydra/overrides.yaml")


def _log_evidence(logger, run_dir: Path, cfg: dict) -> None:
    """The run folder's key files as a W&B artifact. A copy of evidence the folder already holds,
    so a failure here warns instead of failing a finished run."""
    files = [run_dir / f for f in EVIDENCE_FILES if (run_dir / f).exists()]
    try:
        logger.log_files(files, name=f"run-{logger.run_id}",
                         metadata={"learner": cfg["learner"]["name"], "benchmark": cfg["benchmark"]["name"],
                                   "seed": cfg["seed"], "run_dir": str(run_dir)})
    except Exception as err:  # noqa: BLE001 - any W&B failure: the folder is still complete
        warnings.warn(f"could not attach the run folder to W&B as an artifact ({type(err).__name__}: {err})",
                      RuntimeWarning, stacklevel=2)


def _check_distributed(cfg: dict, dist: DistContext) -> dict:
    """The config of a multi-process run, which records the number of processes (it changes the
    numbers, so a folder of one cannot be resumed by the other); fails early on what DDP cannot run."""
    name = cfg["learner"]["name"]
    if not getattr(LEARNERS.get(name), "supports_ddp", False):
        raise ValueError(f"learner {name} does not support world_size > 1 yet; run it in one process")
    dist.per_rank(cfg["train"]["batch_size"], "train.batch_size")
    if (cfg.get("online") or {}).get("mode", "off") != "off":  # each rank's memory would decide its own arrivals
        raise ValueError("online.mode needs one process for now (world_size > 1 given): run it without torchrun")
    return {**cfg, "world_size": dist.world_size}


def run_experiment(cfg: dict, run_dir: str | Path, print_fn=print, dist: DistContext = SINGLE) -> ReportCard:
    """Run one experiment described by a plain (resolved) config dict into ``run_dir``.

    ``dist``: this process's place in a multi-process (``torchrun``) run; every process calls this.
    """
    t_start = time.perf_counter()
    validate_config(cfg)
    check_online(cfg, LEARNERS.get(cfg["learner"]["name"]))
    if dist.multi:
        cfg = _check_distributed(cfg, dist)
        print_fn = print_fn if dist.is_main else (lambda *_: None)
    run_dir = prepare_run_dir(run_dir)
    # One live run per folder, taken before the claim so two processes cannot both claim it; under
    # torchrun rank 0 alone takes it and every rank learns when it was refused.
    lock = RunFolderLock(run_dir)
    dist.main_first(lock.acquire)
    try:
        return _run_locked(cfg, run_dir, print_fn, dist, t_start)
    finally:
        lock.release()  # a no-op on the ranks that did not take it


def _run_locked(cfg: dict, run_dir: Path, print_fn, dist: DistContext, t_start: float) -> ReportCard:
    """``run_experiment`` once rank 0 holds the run folder's lock."""
    if dist.main_first(lambda: _check_run_dir(cfg, run_dir)):  # rank 0 checks the folder; all learn the outcome
        card = ReportCard.from_dict(json.loads((run_dir / "report.json").read_text()))
        print_fn(format_report(card))
        print_fn(f"run folder: {run_dir} (already complete; nothing was run)")
        return card
    device = dist.device if dist.multi else resolve_device(str(cfg.get("device", "auto")))
    if cfg.get("threads"):  # parallel sweep jobs on one machine each take a share of the cores
        torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    seed_everything(seed)
    # Images resident on the device, or on disk when data.storage says so (or, auto, when they would not fit).
    # Built before anything is written: missing or malformed data leave the run folder as it was.
    stream = store_stream(build_stream(cfg["benchmark"]), cfg.get("data"), device, cfg["benchmark"].get("cache_dir"),
                          print_fn)
    if "backbone" in cfg["learner"]:  # a backbone that cannot read these inputs fails now, not after the claim
        check_backbone_inputs(str(cfg["learner"]["backbone"]), tuple(stream.image_shape))
    dist.main_first(lambda: _claim_run_dir(cfg, run_dir))
    if dist.is_main:
        package = Path(__file__).parent
        evidence = {**git_revision(package), "source_sha256": source_digest(package), "device": describe_device(device)}
        write_text_atomic(json.dumps(evidence, indent=2), run_dir / "git.json")
    calibration = calibration_settings(cfg["eval"].get("calibration"))  # calibrated GZSL; None: off
    validation = None
    if calibration is not None and calibration.val_per_category:  # seen images never trained on, for its gamma
        stream, validation = split_validation(stream.to(device), calibration.val_per_category, seed)
    stream, source = build_source(cfg, stream.to(device), dist)
    seed_everything(seed)  # the initialisation does not depend on how much the stream drew
    learner = build_learner(cfg, stream, device, dist)
    dist.wrap(learner)  # DDP in a multi-process run
    checkpointer = Checkpointer(run_dir, config_fingerprint(cfg), dist=dist)  # every rank saves its own state
    if dist.is_main and checkpointer.exists():  # fail on a bad checkpoint now, keep the W&B run
        checkpointer.wandb_run_id = checkpointer.read().get("wandb_run_id")

    loggers = []
    wandb_cfg = dict((cfg.get("logger") or {}).get("wandb") or {})
    if dist.is_main and wandb_cfg.get("mode", "offline") != "disabled":
        from continual.logging.wandb_logger import WandbLogger

        loggers.append(WandbLogger(cfg, run_dir, run_id=checkpointer.wandb_run_id, **wandb_cfg))
        checkpointer.wandb_run_id = loggers[0].run_id
    try:
        ev_cfg = cfg["eval"]
        subset = eval_subset(stream.test_y, int(ev_cfg["subsample"]), seed)
        every = anytime_every(ev_cfg["anytime"]["every"], source)
        anytime = AnytimeProbe(stream, every=every, subset=subset, batch_size=int(ev_cfg["batch_size"])) if every else None
        card = run_stream(learner, stream, source, seed=seed, eval_batch_size=int(ev_cfg["batch_size"]),
                          eval_every=eval_every(ev_cfg["every"], stream.n_experiences), eval_subset=subset,
                          anytime=anytime,
                          checkpoint_every=int(cfg["train"]["checkpoint_every"]), loggers=tuple(loggers),
                          checkpointer=checkpointer, learning_speed=bool(ev_cfg.get("learning_speed", True)),
                          few_shot=ev_cfg.get("few_shot"), new_domain=ev_cfg.get("new_domain"),
                          progress=bool(cfg.get("progress", True)) and dist.is_main, print_fn=print_fn, dist=dist,
                          calibration=None if calibration is None else Calibrator(
                              calibration, stream, seed, validation, int(ev_cfg["batch_size"])),
                          zero_shot=str(ev_cfg.get("zero_shot", "attributes")))
        card.timing["wall_s"] = time.perf_counter() - t_start
        card.memory_bytes = memory_bytes(learner)  # this process's share in a multi-process run
        card.tags = stream.tags  # what the training images' attribute tags were (None: clean codes)
        if dist.multi:
            record = dist.record(learner)  # every process sends its part
            if not dist.is_main:  # rank 0 alone writes the run folder
                return card
            write_json_atomic(record, run_dir / "distributed.json")
        save_heatmap(card.matrix(), run_dir / "accuracy_matrix.png", title=f"{cfg['learner']['name']} on {stream.name}")
        for logger in loggers:
            logger.log_accuracy_matrix(card.accuracy_matrix, run_dir / "accuracy_matrix.png")
            logger.log_report(card.to_dict())
        write_json_atomic(card.to_dict(), run_dir / "report.json")
        for logger in loggers:
            _log_evidence(logger, run_dir, cfg)
    except BaseException:
        for logger in loggers:
            logger.finish(exit_code=1)
        raise
    for logger in loggers:
        logger.finish()
    print_fn(format_report(card))
    print_fn(f"run folder: {run_dir}")
    return card
