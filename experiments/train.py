"""Train a learner on a stream and write a run folder: ``python experiments/train.py [overrides]``.

Examples::

    python experiments/train.py                         # the default: child learner on the world
    python experiments/train.py memory.size=0           # no replay
    python experiments/train.py hydra.run.dir=runs/x    # choose the run folder
    python experiments/train.py -m seed=0,1,2           # a sweep
    python experiments/train.py -m experiment=ablation  # a sweep defined by an experiment config
    python experiments/train.py -m seed=0,1 hydra/launcher=parallel    # jobs in parallel (joblib)
    python experiments/train.py -m seed=0,1 hydra/launcher=slurm       # jobs on a Slurm cluster (submitit)

Several processes, data-parallel (DDP; see ``continual/distributed.py``), one run folder that every
process must name, as Hydra's default folder is a timestamp each process would take for itself::

    torchrun --standalone --nproc_per_node=4 experiments/train.py hydra.run.dir=runs/ddp4           # GPUs
    torchrun --standalone --nproc_per_node=2 experiments/train.py device=cpu hydra.run.dir=runs/ddp  # CPU

In a sweep every run logs to one W&B group (the experiment's name and the sweep folder) and is
named by its overrides, so a dashboard groups seeds and compares settings without extra typing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
# Jobs a launcher starts in fresh processes (submitit, on this machine or a cluster's) import this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from continual import distributed  # noqa: E402
from continual.experiment import resolve_device, run_experiment  # noqa: E402


def name_wandb_run(cfg: dict, hydra_cfg) -> None:
    """Fill in the W&B group, run name and experiment tag that Hydra knows and the config cannot."""
    wandb_cfg = cfg["logger"]["wandb"]
    experiment = hydra_cfg.runtime.choices.get("experiment")
    if experiment and experiment not in wandb_cfg["tags"]:
        wandb_cfg["tags"] = [*wandb_cfg["tags"], experiment]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # The sweep folder is fixed when the sweep starts, so every job of one sweep agrees on it.
        wandb_cfg["group"] = wandb_cfg["group"] or f"{experiment or 'sweep'}:{hydra_cfg.sweep.dir}"
        # Named by the job's overrides (paths left out: they say where, not what).
        overrides = [o for o in hydra_cfg.job.override_dirname.split(",") if o and not o.split("=")[0].endswith("dir")]
        wandb_cfg["name"] = wandb_cfg["name"] or ",".join(overrides) or f"job{hydra_cfg.job.num}"


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    name_wandb_run(resolved, HydraConfig.get())
    with distributed.launch(resolve_device(str(resolved.get("device", "auto")))) as dist:  # torchrun or not
        card = run_experiment(resolved, HydraConfig.get().runtime.output_dir, dist=dist)
    return card.average_accuracy


def check_torchrun_args(argv: list[str]) -> None:
    """Under ``torchrun`` every process must write to one run folder, named on the command line."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return
    if "-m" in argv or "--multirun" in argv:
        sys.exit("error: a sweep (-m) cannot run under torchrun; start one torchrun per run")
    if not any(a.lstrip("+").startswith("hydra.run.dir=") for a in argv):
        sys.exit("error: under torchrun name the run folder, e.g. hydra.run.dir=runs/ddp: every process "
                 "must write to the same one, and Hydra's default is a timestamp each process takes itself")


if __name__ == "__main__":
    check_torchrun_args(sys.argv[1:])
    main()
