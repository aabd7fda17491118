"""Train a learner on a stream and write a run folder: ``python experiments/train.py [overrides]``.

Examples::

    python experiments/train.py                         # the default: child learner on the world
    python experiments/train.py memory.size=0           # no replay
    python experiments/train.py hydra.run.dir=runs/x    # choose the run folder
    python experiments/train.py -m seed=0,1,2           # a sweep
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from continual.experiment import run_experiment  # noqa: E402


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    card = run_experiment(resolved, HydraConfig.get().runtime.output_dir)
    return card.average_accuracy


if __name__ == "__main__":
    main()
