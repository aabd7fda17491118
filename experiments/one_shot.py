"""Lake et al.'s 20-way one-shot classification with a trained run's embedding.

Usage::

    python experiments/one_shot.py RUN_DIR RUNS_FOLDER [--device cpu]

``RUN_DIR`` is a finished run folder (``config.json`` and ``checkpoint.pt``); ``RUNS_FOLDER``
holds ``run01/`` ... ``run20/`` (``all_runs.zip`` from github.com/brendenlake/omniglot,
``python/one-shot-classification``, unpacked). Each test image is classified by the training
image nearest to it (cosine) in the learner's embedding; prints the error of every run and
their mean, in percent as Lake et al. report it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from continual.experiment import build_learner, resolve_device  # noqa: E402
from continual.learner.base import Learner  # noqa: E402
from continual.metrics.few_shot import lake_one_shot  # noqa: E402
from continual.stream import Stream, build_stream  # noqa: E402


def load_learner_from_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Learner, Stream, dict]:
    """The run's learner with its trained weights, the stream it was built for, and its config.

    The stream is rebuilt from ``config.json`` (cached data, so cheap) because the learner's shape
    (categories, image shape, attribute blocks) comes from it; the weights come from
    ``checkpoint.pt``'s ``"learner"`` entry.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path} does not exist: {run_dir} holds no trained weights (was the run "
                                f"trained with checkpointing, and did it finish at least one experience?)")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "learner" not in ckpt:
        raise ValueError(f"{ckpt_path} has no 'learner' entry; it is not a continual checkpoint")
    config_path = run_dir / "config.json"
    if config_path.is_file():
        cfg = json.loads(config_path.read_text())
    elif isinstance(ckpt.get("config"), dict):
        cfg = ckpt["config"]
    else:
        raise FileNotFoundError(f"{config_path} does not exist and the checkpoint holds no config")
    device = resolve_device(str(device))
    stream = build_stream(cfg["benchmark"])
    # The memory and optimiser are built (and loaded) too: build_learner is the one way to get the
    # same module structure as in training, so the state dict matches key for key.
    learner = build_learner(cfg, stream, device)
    learner.load_checkpoint_state(ckpt["learner"])
    learner.eval()
    return learner, stream, cfg


def embed_fn_of(learner: Learner, in_channels: int, device: torch.device,
                batch_size: int = 512):
    """``uint8 (B, 1, S, S) -> (B, D)`` embeddings from ``learner.scores``, batched, on ``device``."""

    def embed(x: torch.Tensor) -> torch.Tensor:
        # A learner trained on colour images sees the grey drawing in every channel.
        x = x.expand(-1, in_channels, -1, -1)
        return torch.cat([learner.scores(x[i:i + batch_size].to(device)).embedding.cpu()
                          for i in range(0, len(x), batch_size)])

    return embed


def evaluate_run(run_dir: str | Path, runs_folder: str | Path, device: str = "cpu") -> dict:
    """Lake one-shot errors (fractions) of the run's learner on ``runs_folder``."""
    learner, stream, _ = load_learner_from_run(run_dir, device)
    in_channels, size = stream.image_shape[0], stream.image_shape[-1]
    dev = next(learner.parameters()).device
    return lake_one_shot(embed_fn_of(learner, in_channels, dev), runs_folder, size)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="run folder with config.json and checkpoint.pt")
    parser.add_argument("runs_folder", type=Path, help="folder with run01/ ... (Lake et al.'s one-shot runs)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    args = parser.parse_args(argv)
    result = evaluate_run(args.run_dir, args.runs_folder, args.device)
    for name, err in zip(result["runs"], result["per_run_error"]):
        print(f"{name}: error {100 * err:5.1f}%")
    print(f"average error over {len(result['runs'])} runs: {100 * result['error']:.1f}%")
    return result


if __name__ == "__main__":
    main()
