"""Images on disk (``continual.stream.disk``): indexed like the resident tensor, the same report card,
and training on a data set twice a memory cap within that cap."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from continual.config import ConfigError, validate_config
from continual.experiment import run_experiment
from continual.stream import disk
from continual.stream.disk import DiskImages, choose_storage, to_disk, write_images
from tests.conftest import ROOT, TINY, compose_config


def _numbers(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_disk_images_index_like_the_tensor(tmp_path):
    x = _images(50)
    d = to_disk(x, tmp_path)
    assert isinstance(d, DiskImages) and len(d) == 50 and d.shape == x.shape and d.dtype == torch.uint8
    assert d.device == torch.device("cpu") and d.nbytes == x.nbytes and d.ndim == 4
    gen = torch.Generator().manual_seed(1)
    indices = [
        torch.randint(0, 50, (32,), generator=gen),  # unsorted, with repeats
        torch.arange(10, 30),  # consecutive rows (an experience at its end)
        torch.tensor([49, 0, -1, -50, 7, 8, 9, 3]),  # negative, as a tensor takes them
        torch.tensor([], dtype=torch.long),
        torch.rand(50, generator=gen) > 0.5,  # a mask
        [4, 4, 2],
        [],
        slice(5, 40, 3),
    ]
    for idx in indices:
        got = d[idx]
        assert got.dtype == torch.uint8 and got.is_contiguous() and torch.equal(got, x[idx]), idx
    assert torch.equal(d[7], x[7]) and torch.equal(d[-3], x[-3])
    got = d[torch.tensor([1, 2])]
    got.zero_()  # a fresh tensor: writing to it changes neither the file nor later reads
    assert torch.equal(d[torch.tensor([1, 2])], x[1:3])
    for bad in (torch.tensor([50]), torch.tensor([-51]), torch.ones(49, dtype=torch.bool), torch.zeros(2, 2).long()):
        with pytest.raises(IndexError):
            d[bad]
    moved = d.to("cpu")  # stays on disk; only where read rows go changes
    assert isinstance(moved, DiskImages) and moved.path == d.path and torch.equal(moved[idx], x[idx])
    assert isinstance(d.cpu(), DiskImages)
    copied = pickle.loads(pickle.dumps(d))  # e.g. to a DataLoader worker: it maps the file itself
    assert torch.equal(copied[indices[0]], x[indices[0]])


def test_reads_drop_the_mapped_pages(tmp_path, monkeypatch):
    """Rows come through a memory map whose pages are dropped every MAPPED_LIMIT bytes read, and a read
    larger than that goes in parts: what the file adds to the resident set stays bounded."""
    x = _images(400)
    d = to_disk(x, tmp_path)
    monkeypatch.setattr(disk, "MAPPED_LIMIT", 10 * d._row_span)  # a drop every 10 rows
    drops = []
    monkeypatch.setattr(DiskImages, "_drop_pages", lambda self: (drops.append(self._mapped), setattr(self, "_mapped", 0)))
    assert torch.equal(d[torch.arange(400).flip(0)], x.flip(0))  # 40 parts of 10 rows
    assert len(drops) == 40 and set(drops) == {10 * d._row_span}
    d._mapped = 0
    for start in range(0, 400, 4):  # batches of 4: a drop after every 3rd (12 rows >= 10)
        assert torch.equal(d[torch.arange(start, start + 4)], x[start:start + 4])
    assert len(drops) == 40 + 33


def test_files_are_keyed_by_content_written_once_and_rewritten_when_broken(tmp_path):
    x = _images(20)
    first = to_disk(x, tmp_path)
    stamp = first.path.stat().st_mtime_ns
    again = to_disk(x.clone(), tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp  # found, not written
    other = to_disk(_images(20, seed=1), tmp_path)
    assert other.path != first.path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, other.path.name])  # no temporaries

    with open(first.path, "r+b") as f:  # a truncated file (a crash mid-copy elsewhere)
        f.truncate(first.path.stat().st_size - 7)
    with pytest.warns(UserWarning, match="writing it again"):
        fixed = to_disk(x, tmp_path)
    assert torch.equal(fixed[torch.arange(20)], x)
    assert np.array_equal(np.load(fixed.path), x.numpy())  # a plain .npy: any tool reads it


def test_write_images_from_chunks_keeps_one_chunk_and_fails_atomically(tmp_path):
    x = _images(30)
    d = write_images(tmp_path / "a.npy", x.split(7), x.shape)
    assert torch.equal(d[torch.arange(30)], x)
    with pytest.raises(ValueError, match="chunks hold 28 rows"):
        write_images(tmp_path / "b.npy", x[:28].split(7), x.shape)
    with pytest.raises(ValueError, match="must be uint8"):
        write_images(tmp_path / "c.npy", [x.float()], x.shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]  # no partial file, no temporary


@pytest.mark.parametrize("override, message", [
    ("data.storage=tape", "data.storage must be one of memory, disk, auto"),
    ("data.memory_cap=lots", "data.memory_cap must be bytes"),
    ("data.memory_cap=0", "data.memory_cap must be > 0"),
    ("+data.cap=1", r"unknown config key data.cap; known: \['memory_cap', 'storage'\]"),
])
def test_bad_data_keys_fail_naming_them(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config([*TINY, override]))


def test_auto_storage_goes_to_disk_above_the_cap():
    cpu = torch.device("cpu")
    assert choose_storage({"storage": "auto", "memory_cap": "1MB"}, 2_000_000, cpu)[0] == "disk"
    assert choose_storage({"storage": "auto", "memory_cap": "1MB"}, 1_000_000, cpu)[0] == "memory"
    assert choose_storage({"storage": "auto", "memory_cap": None}, 1000, cpu)[0] == "memory"  # half the RAM
    assert choose_storage({"storage": "disk", "memory_cap": None}, 1, cpu)[0] == "disk"
    assert choose_storage(None, 10**15, cpu)[0] == "memory"  # configs from before data.* existed


@pytest.mark.parametrize("online", ["off", "iblurry"])
def test_disk_run_reports_exactly_what_the_memory_run_reports(tmp_path, world_cache, online):
    """Same data, same seed: the stream on disk gives the in-memory run's report card, bit for bit
    (an experience stream and an online one; evaluation reads its test images from disk too)."""
    base = [*TINY, f"online.mode={online}"]
    memory = run_experiment(compose_config([*base, "data.storage=memory"], world_cache), tmp_path / "memory",
                            print_fn=lambda _: None).to_dict()
    lines: list[str] = []
    disk = run_experiment(compose_config([*base, "data.storage=auto", "data.memory_cap=1kB"], world_cache),
                          tmp_path / "disk", print_fn=lines.append).to_dict()
    assert any(line.startswith("images on disk (data.storage=auto:") for line in lines), lines[:3]
    assert _numbers(disk) == _numbers(memory)
    # Where the images live does not change what a run computes: the other storage finds the run finished.
    again = run_experiment(compose_config([*base, "data.storage=disk"], world_cache), tmp_path / "memory",
                           print_fn=lines.append).to_dict()
    assert "already complete" in lines[-1] and _numbers(again) == _numbers(memory)


# Trains on a synthetic stream from a .npy file the test wrote, in its own process so that the peak
# resident set is its own. Prints the peak's growth over the resident set just before the images are
# opened (Python, torch and the learner with its replay memory hold ~700 MB: the cap is on what the
# data adds), the stream's size, and what data.storage=auto would choose under the cap. The peak is
# the kernel's VmHWM (this process's own since exec): ru_maxrss would not do, as the peak it reports
# for a process started by fork and exec includes its parent's at the fork (pytest's, ~900 MB after a
# few runs).
_TRAIN = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from continual.learner import LEARNERS
    from continual.loop import TrainProgress, train_on
    from continual.memory import ClassBalancedReservoir
    from continual.stream.disk import DiskImages, choose_storage
    from continual.stream.source import ExperienceSource
    from continual.stream.stream import Stream

    def status(key):  # bytes, from this process's /proc status
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    path, storage, cap, n_classes, per_experience = sys.argv[1], sys.argv[2], int(sys.argv[3]), 20, 2
    shape = DiskImages(path).shape[1:]  # the header only
    torch.manual_seed(0)
    learner = LEARNERS.build("child", n_classes=n_classes, image_shape=shape, class_attributes=None,
                             attribute_blocks=None, memory=ClassBalancedReservoir(500, shape, 0),
                             backbone="linear", backbone_args={"image_size": 32, "embed_dim": 32},
                             replay_batch_size=64)
    base = status("VmRSS")  # after the learner: its first build imports ~160 MB of torch modules lazily
    images = DiskImages(path) if storage == "disk" else torch.from_numpy(np.load(path))
    n = len(images)
    labels = torch.arange(n) * n_classes // n  # (N,) sorted: each experience's images are one run of rows
    stream = Stream(name="synthetic", train_x=images, train_y=labels, test_x=images, test_y=labels,
                    experiences=[list(range(c, c + per_experience)) for c in range(0, n_classes, per_experience)],
                    heldout=[], class_names=[str(c) for c in range(n_classes)],
                    train_counts=torch.bincount(labels).tolist())
    progress = TrainProgress()
    for _ in train_on(ExperienceSource(stream, epochs=1, batch_size=256, seed=0), learner, progress):
        pass
    print(json.dumps({"growth": status("VmHWM") - base, "data": images.nbytes, "steps": progress.steps,
                      "memory": len(learner.memory),
                      "choice": choose_storage({"storage": "auto", "memory_cap": cap}, images.nbytes,
                                               torch.device("cpu"))[0]}))
""")


def test_data_twice_the_memory_cap_trains_within_the_cap(tmp_path):
    """A 300 MB stream with a 150 MB cap: auto puts it on disk, and a whole pass (10 experiences, ~400
    steps of random batches, each experience's images read whole at its end for the replay memory)
    grows the peak resident set by less than the cap. The same stream loaded into memory does not
    (the control: the measurement sees a resident copy)."""
    cap, n = 150 * 10**6, 100_000  # 100k 32x32 RGB images: 307 MB
    gen = torch.Generator().manual_seed(0)
    chunks = (torch.randint(0, 256, (min(8192, n - s), 3, 32, 32), dtype=torch.uint8, generator=gen)
              for s in range(0, n, 8192))
    path = write_images(tmp_path / "big.npy", chunks, (n, 3, 32, 32)).path
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(storage: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", _TRAIN, str(path), storage, str(cap)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    disk = train("disk")
    print(f"disk: peak RSS growth {disk['growth'] / 1e6:.0f} MB for {disk['data'] / 1e6:.0f} MB of images "
          f"({disk['steps']} steps)")
    assert disk["data"] > 2 * cap and disk["choice"] == "disk"
    assert disk["steps"] >= 390 and disk["memory"] == 500  # a whole pass, and the memory filled
    assert disk["growth"] < cap, disk
    resident = train("memory")
    print(f"memory: peak RSS growth {resident['growth'] / 1e6:.0f} MB")
    assert resident["growth"] > disk["data"], resident
