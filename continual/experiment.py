"""From a resolved config to a finished run folder: build, train, report, save.

The run folder is complete when ``report.json`` exists: it is written last and atomically,
so a run that dies midway never looks finished. Running the same config into the same folder
again resumes from the last checkpoint (or just prints the report of a finished run); a
folder that holds a run of another config is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from continual.checkpoint import Checkpointer
from continual.config import validate_config
from continual.learner import LEARNERS
from continual.logging.run_folder import RunFolderError, git_revision, prepare_run_dir, write_text_atomic
from continual.loop import run_stream
from continual.memory import ClassBalancedReservoir
from continual.metrics.report import ReportCard, format_report, save_heatmap, write_json_atomic
from continual.stream import build_stream

# Keys that change how a run is shown, not what it computes: a resumed run may change them.
PRESENTATION_KEYS = ("progress", "logger")
MIN_FREE_BYTES = 100 * 2**20  # checkpoints, report and W&B files of a default run are ~10 MB


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=auto or device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch generators from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_fingerprint(cfg: dict) -> str:
    """A hash of everything in the config that changes the numbers a run produces."""
    relevant = {k: v for k, v in cfg.items() if k not in PRESENTATION_KEYS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _first_difference(old: object, new: object, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"


def build_learner(cfg: dict, stream, device: torch.device):
    """The learner named by ``learner.name`` with its replay memory, on ``device``."""
    learner_cfg = dict(cfg["learner"])
    name = learner_cfg.pop("name")
    memory_cfg = dict(cfg.get("memory") or {})
    n_attr = len(stream.attribute_space.names) if stream.has_attributes else 0
    memory = ClassBalancedReservoir(int(memory_cfg.get("size", 0)), stream.image_shape, n_attr,
                                    device=device, seed=cfg["seed"])
    learner = LEARNERS.build(
        name, n_classes=stream.n_classes, image_shape=stream.image_shape,
        class_attributes=stream.class_attributes() if stream.has_attributes else None,
        attribute_blocks=stream.attribute_space.sizes if stream.has_attributes else None,
        memory=memory, **learner_cfg)
    return learner.to(device)


def _claim_run_dir(cfg: dict, run_dir: Path) -> bool:
    """Check the folder may hold this run; True when it already holds the finished run."""
    config_file = run_dir / "config.json"
    if config_file.exists():
        try:
            old = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise RunFolderError(f"{config_file} is not valid JSON ({err}); this folder's run cannot be "
                                 f"resumed: choose another run folder (hydra.run.dir=...)") from err
        if config_fingerprint(old) != config_fingerprint(cfg):
            raise RunFolderError(
                f"run folder {run_dir} holds a run with a different config ({_first_difference(old, cfg)}); "
                f"nothing was changed in it. Choose another run folder (hydra.run.dir=...) or use the same config")
        return (run_dir / "report.json").exists()
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise RunFolderError(f"only {free / 2**20:.0f} MiB free on the disk of {run_dir}; a run needs at least "
                             f"{MIN_FREE_BYTES / 2**20:.0f} MiB. Free space or choose another run folder")
    write_text_atomic(json.dumps(cfg, indent=2), config_file)
    return False


def run_experiment(cfg: dict, run_dir: str | Path, print_fn=print) -> ReportCard:
    """Run one experiment described by a plain (resolved) config dict into ``run_dir``."""
    t_start = time.perf_counter()
    validate_config(cfg)
    run_dir = prepare_run_dir(run_dir)
    if _claim_run_dir(cfg, run_dir):
        card = ReportCard.from_dict(json.loads((run_dir / "report.json").read_text()))
        print_fn(format_report(card))
        print_fn(f"run folder: {run_dir} (already complete; nothing was run)")
        return card
    device = resolve_device(str(cfg.get("device", "auto")))
    seed = int(cfg["seed"])
    write_text_atomic(json.dumps(git_revision(Path(__file__).parent), indent=2), run_dir / "git.json")

    seed_everything(seed)
    stream = build_stream(cfg["benchmark"]).to(device)
    seed_everything(seed)  # the initialisation does not depend on how much the stream drew
    learner = build_learner(cfg, stream, device)
    checkpointer = Checkpointer(run_dir, config_fingerprint(cfg))
    if checkpointer.exists():  # fail on a bad checkpoint now, and keep logging into the same W&B run
        checkpointer.wandb_run_id = checkpointer.read().get("wandb_run_id")

    loggers = []
    wandb_cfg = dict((cfg.get("logger") or {}).get("wandb") or {})
    if wandb_cfg.get("mode", "offline") != "disabled":
        from continual.logging.wandb_logger import WandbLogger

        loggers.append(WandbLogger(cfg, run_dir, run_id=checkpointer.wandb_run_id, **wandb_cfg))
        checkpointer.wandb_run_id = loggers[0].run_id
    try:
        card = run_stream(learner, stream, epochs=int(cfg["train"]["epochs"]),
                          batch_size=int(cfg["train"]["batch_size"]), seed=seed,
                          eval_batch_size=int(cfg["eval"]["batch_size"]), loggers=tuple(loggers),
                          checkpointer=checkpointer, learning_speed=bool(cfg["eval"].get("learning_speed", True)),
                          few_shot=cfg["eval"].get("few_shot"),
                          progress=bool(cfg.get("progress", True)), print_fn=print_fn)
        card.timing["wall_s"] = time.perf_counter() - t_start
        save_heatmap(card.matrix(), run_dir / "accuracy_matrix.png", title=f"{cfg['learner']['name']} on {stream.name}")
        for logger in loggers:
            logger.log_accuracy_matrix(card.accuracy_matrix, run_dir / "accuracy_matrix.png")
            logger.log_report(card.to_dict())
        write_json_atomic(card.to_dict(), run_dir / "report.json")
    except BaseException:
        for logger in loggers:
            logger.finish(exit_code=1)
        raise
    for logger in loggers:
        logger.finish()
    print_fn(format_report(card))
    print_fn(f"run folder: {run_dir}")
    return card
