"""The benchmark command runs end to end and its JSON is internally consistent (no timing assertions:
the machines are shared, so speed is reported, never tested)."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

import torch

from continual.learner import LEARNERS
from continual.memory import ClassBalancedReservoir
from continual.stream.attributes import WORLD_ATTRIBUTES as SPACE
from tests.conftest import ROOT

CONTENDERS = {"ours", "plain", "avalanche", "avalanche_eval"}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "CONTINUAL_CACHE": str(tmp_path / "cache"), "WANDB_SILENT": "true"}
    # One thread: on a shared 2-core machine two threads per process oversubscribe and crawl.
    proc = subprocess.run([sys.executable, "experiments/bench.py", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    for kind in ("default", "tiny"):
        t = result["training"][kind]
        assert set(t["contenders"]) == CONTENDERS
        for c in t["contenders"].values():
            for key in ("images_per_s", "seconds_per_image", "ms_per_step", "images_per_measurement",
                        "steps_per_measurement"):
                assert _positive(c[key]), (kind, c["label"], key, c[key])
            assert math.isclose(c["images_per_s"] * c["seconds_per_image"], 1.0, rel_tol=1e-9)
            assert len(c["rounds_seconds_per_image"]) == result["config"]["rounds"]
            assert all(_positive(v) for v in c["rounds_seconds_per_image"])
        # Same work for everyone (replay included); Avalanche's last memory batch of a pass may be short.
        images = {k: c["images_per_measurement"] for k, c in t["contenders"].items()}
        assert images["ours"] == images["plain"]
        assert all(0.95 * images["ours"] <= n <= images["ours"] for n in images.values())
        medians = {k: c["seconds_per_image"] for k, c in t["contenders"].items()}
        rounds = {k: c["rounds_seconds_per_image"] for k, c in t["contenders"].items()}
        names = {"ours/plain", "ours/avalanche", "avalanche/plain", "avalanche_eval/avalanche", "avalanche_eval/plain"}
        assert set(t["time_ratios"]) == set(t["time_ratios_of_medians"]) == names
        for name in names:
            a, b = name.split("/")
            # Paired: the median over rounds of A's time per image over B's in the same round.
            assert math.isclose(t["time_ratios"][name], statistics.median(x / y for x, y in zip(rounds[a], rounds[b])),
                                rel_tol=1e-9)
            assert math.isclose(t["time_ratios_of_medians"][name], medians[a] / medians[b], rel_tol=1e-9)
            assert medians[a] == statistics.median(rounds[a])
    assert result["training"]["tiny"]["backbone"] == "linear"

    assert set(result["render"]) == {"32x32", "64x64"}
    assert all(_positive(r["images_per_s"]) for r in result["render"].values())
    ex = result["experiment"]
    assert all(_positive(ex[k]) for k in ("wall_s", "train_s", "eval_s", "train_samples_per_s"))
    assert 0 < ex["eval_share"] < 1
    assert _positive(result["peak_rss_mib"])

    targets = {c["target"]: c for c in result["targets"]}
    assert len(targets) == 6
    assert math.isclose(targets["ours/plain, default model"]["value"],
                        result["training"]["default"]["time_ratios"]["ours/plain"])
    assert math.isclose(targets["peak resident memory GiB"]["value"], result["peak_rss_mib"] / 1024)
    assert all(isinstance(c["pass"], bool) for c in targets.values())
    # The console table carries the same verdicts.
    assert sum(line.startswith(("PASS", "FAIL")) for line in proc.stdout.splitlines()) == 6


def test_compile_option_keeps_the_eager_parameter_names():
    """``learner.compile`` (what ``bench.py --compile`` sets) compiles in place: checkpoints stay
    interchangeable with eager runs. Compilation itself is lazy, so this test compiles nothing."""
    codes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])

    def build(compile: bool):
        torch.manual_seed(0)
        return LEARNERS.build("child", n_classes=2, image_shape=(3, 32, 32), class_attributes=SPACE.vectors(codes),
                              attribute_blocks=SPACE.sizes, memory=ClassBalancedReservoir(4, (3, 32, 32), 4),
                              backbone_args={"width": 8, "embed_dim": 16}, compile=compile)

    eager, compiled = build(False), build(True)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())
