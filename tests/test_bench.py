"""The benchmark command runs end to end and its JSON is internally consistent (no timing assertions:
the machines are shared, so speed is reported, never tested)."""

from __future__ import annotations

import functools
import importlib.util
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
ONLINE_CONTENDERS = {"ours_online", "plain_online", "avalanche_online"}


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

    # Images on disk against resident: the same learner on the same batches, so the same work.
    for kind in ("default", "tiny"):
        s = result["storage"][kind]
        assert set(s["contenders"]) == {"ours", "ours_disk"}, s["contenders"]
        assert s["contenders"]["ours"]["images_per_measurement"] == s["contenders"]["ours_disk"]["images_per_measurement"]
        assert _positive(s["throughput_ratio"]) and _positive(s["time_ratios"]["ours_disk/ours"]), s
        rounds = [s["contenders"][k]["rounds_seconds_per_image"] for k in ("ours", "ours_disk")]
        assert math.isclose(s["throughput_ratio"], statistics.median(m / d for m, d in zip(*rounds)), rel_tol=1e-9)
    assert "disk throughput" in proc.stdout

    online = result["online"]
    assert online["settings"]["mode"] == "iblurry"
    assert online["settings"]["segments"] == result["config"]["warmup"] + result["config"]["rounds"]
    for kind in ("default", "tiny"):
        t = online[kind]
        assert set(t["contenders"]) == ONLINE_CONTENDERS, t["contenders"]
        assert len(t["segments"]) == online["settings"]["segments"]
        assert sum(t["segments"]) == t["stream_samples"] > 0
        for k, c in t["contenders"].items():
            for key in ("samples_per_s", "seconds_per_sample", "ms_per_step", "samples_per_measurement",
                        "steps_per_measurement"):
                assert _positive(c[key]), (kind, k, key, c[key])
            assert math.isclose(c["samples_per_s"] * c["seconds_per_sample"], 1.0, rel_tol=1e-9)
            assert len(c["rounds_seconds_per_sample"]) == result["config"]["rounds"]
            # Every contender trains on every image of the stream exactly once in the pass (warm-up
            # segment included), and on the same segment in each round.
            assert c["samples_total"] == t["stream_samples"], (kind, k)
            assert c["rounds_samples"] == t["segments"][result["config"]["warmup"]:], (kind, k)
        rounds = {k: c["rounds_seconds_per_sample"] for k, c in t["contenders"].items()}
        names = {"ours_online/plain_online", "avalanche_online/plain_online", "ours_online/avalanche_online"}
        assert set(t["time_ratios"]) == set(t["time_ratios_of_medians"]) == names
        for name in names:
            assert _positive(t["time_ratios"][name]) and _positive(t["time_ratios_of_medians"][name]), name
            a, b = name.split("/")
            assert math.isclose(t["time_ratios"][name], statistics.median(x / y for x, y in zip(rounds[a], rounds[b])),
                                rel_tol=1e-9)
    assert online["tiny"]["backbone"] == "linear"

    assert set(result["render"]) == {"32x32", "64x64"}
    assert all(_positive(r["images_per_s"]) for r in result["render"].values())
    ex = result["experiment"]
    assert all(_positive(ex[k]) for k in ("wall_s", "train_s", "eval_s", "train_samples_per_s"))
    assert 0 < ex["eval_share"] < 1
    assert _positive(result["peak_rss_mib"])

    targets = {c["target"]: c for c in result["targets"]}
    assert len(targets) == 7
    assert math.isclose(targets["ours/plain, default model"]["value"],
                        result["training"]["default"]["time_ratios"]["ours/plain"])
    assert math.isclose(targets["peak resident memory GiB"]["value"], result["peak_rss_mib"] / 1024)
    assert math.isclose(targets["ours/plain, online (per sample)"]["value"],
                        online["default"]["time_ratios"]["ours_online/plain_online"])
    assert all(isinstance(c["pass"], bool) for c in targets.values())
    # The console table carries the same verdicts.
    assert sum(line.startswith(("PASS", "FAIL")) for line in proc.stdout.splitlines()) == 7
    assert "ours_online/plain_online" in proc.stdout


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


@functools.cache
def _bench_module():
    """``experiments/bench.py`` as a module (scripts are not a package); registered before it runs,
    as its dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location("experiments_bench", ROOT / "experiments" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plain_online_reservoir_keeps_a_uniform_sample():
    """The plain loop's device reservoir fills first, then keeps every arrival with the same chance."""
    bench = _bench_module()
    capacity, n, batch, trials = 10, 100, 16, 400
    kept = torch.zeros(n)
    for trial in range(trials):
        gen = torch.Generator().manual_seed(trial)
        memory = torch.full((capacity + 1,), -1)  # the last row: where dropped arrivals go
        for start in range(0, n, batch):
            ids = torch.arange(start, min(start + batch, n))
            slots = bench.reservoir_slots(start, len(ids), capacity, gen)
            assert slots.min() >= 0 and slots.max() <= capacity
            if start + len(ids) <= capacity:  # filling: the next free slots, in order
                assert slots.tolist() == list(range(start, start + len(ids)))
            memory.index_copy_(0, slots, ids)
        assert (memory[:capacity] >= 0).all() and len(set(memory[:capacity].tolist())) == capacity
        kept[memory[:capacity]] += 1
    share = kept / trials  # each arrival's chance of being kept: capacity / n = 0.1
    assert abs(share[: n // 2].mean() - 0.1) < 0.01 and abs(share[n // 2:].mean() - 0.1) < 0.01, share


def test_skipped_online_section_has_no_target():
    bench = _bench_module()
    assert not bench.parse_args([]).skip_online and bench.parse_args(["--skip-online"]).skip_online
    training = {"time_ratios": {"ours/plain": 1.0}}
    result = {"training": {"default": training, "tiny": training}, "experiment": "skipped", "online": "skipped",
              "render": {"32x32": {"images_per_s": 1e5}}, "peak_rss_mib": 100.0}
    names = [c["target"] for c in bench.check_targets(result)]
    assert "ours/plain, online (per sample)" not in names and "ours/plain, default model" in names
    result["online"] = {"default": {"time_ratios": {"ours_online/plain_online": 1.3}}}
    online = [c for c in bench.check_targets(result) if c["target"] == "ours/plain, online (per sample)"]
    assert online == [{"target": "ours/plain, online (per sample)", "value": 1.3, "op": "<=", "threshold": 1.2,
                       "pass": False}]
