"""From a resolved config to a finished run folder: build, train, report, save.

The run folder is complete when ``report.json`` exists: it is written last and atomically,
so a run that dies midway never looks finished.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from continual.learner import LEARNERS
from continual.logging.run_folder import git_revision, prepare_run_dir, write_text_atomic
from continual.loop import run_stream
from continual.memory import ClassBalancedReservoir
from continual.metrics.report import ReportCard, format_report, save_heatmap, write_json_atomic
from continual.stream import build_stream

TOP_LEVEL_KEYS = {"seed", "device", "progress", "train", "eval", "benchmark", "learner", "memory", "logger"}


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


def _check_keys(cfg: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"unknown config key {where}{unknown[0]}; known: {sorted(allowed)}")


def build_learner(cfg: dict, stream, device: torch.device):
    """The learner named by ``learner.name`` with its replay memory, on ``device``."""
    learner_cfg = dict(cfg["learner"])
    name = learner_cfg.pop("name")
    memory_cfg = dict(cfg.get("memory") or {})
    _check_keys(memory_cfg, {"size"}, "memory.")
    n_attr = len(stream.attribute_space.names) if stream.has_attributes else 0
    memory = ClassBalancedReservoir(int(memory_cfg.get("size", 0)), stream.image_shape, n_attr,
                                    device=device, seed=cfg["seed"])
    learner = LEARNERS.build(
        name, n_classes=stream.n_classes, image_shape=stream.image_shape,
        class_attributes=stream.class_attributes() if stream.has_attributes else None,
        attribute_blocks=stream.attribute_space.sizes if stream.has_attributes else None,
        memory=memory, **learner_cfg)
    return learner.to(device)


def run_experiment(cfg: dict, run_dir: str | Path, print_fn=print) -> ReportCard:
    """Run one experiment described by a plain (resolved) config dict into ``run_dir``."""
    t_start = time.perf_counter()
    _check_keys(cfg, TOP_LEVEL_KEYS, "")
    run_dir = prepare_run_dir(run_dir)
    device = resolve_device(str(cfg.get("device", "auto")))
    seed = int(cfg["seed"])
    write_text_atomic(json.dumps(cfg, indent=2), run_dir / "config.json")
    write_text_atomic(json.dumps(git_revision(Path(__file__).parent), indent=2), run_dir / "git.json")

    seed_everything(seed)
    stream = build_stream(cfg["benchmark"]).to(device)
    seed_everything(seed)  # the initialisation does not depend on how much the stream drew
    learner = build_learner(cfg, stream, device)

    loggers = []
    wandb_cfg = dict((cfg.get("logger") or {}).get("wandb") or {})
    if wandb_cfg.get("mode", "offline") != "disabled":
        from continual.logging.wandb_logger import WandbLogger

        loggers.append(WandbLogger(cfg, run_dir, **wandb_cfg))
    try:
        card = run_stream(learner, stream, epochs=int(cfg["train"]["epochs"]),
                          batch_size=int(cfg["train"]["batch_size"]), seed=seed,
                          eval_batch_size=int(cfg["eval"]["batch_size"]), loggers=tuple(loggers),
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
