"""Any Avalanche benchmark as a stream: bit-identical round trip, arrival-order labels, held-out
categories, raw images of any kind, clear failures (new instances, normalised pixels, missing data)."""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest
import torch
from PIL import Image

from continual.avalanche_compat import stream_from_avalanche, to_avalanche
from continual.config import validate_config
from continual.experiment import run_experiment
from continual.stream import build_stream
from tests.conftest import TINY, compose_config

# TINY without its world-only keys: the run settings, for any benchmark.
RUN = [o for o in TINY if not o.startswith("benchmark.")] + ["device=cpu"]


class Labelled(torch.utils.data.TensorDataset):
    """(image, label) pairs with the ``targets`` Avalanche's generators read, and optional names."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: list[str] | None = None) -> None:
        super().__init__(x, y)
        if classes is not None:
            self.classes = classes

    @property
    def targets(self) -> torch.Tensor:
        return self.tensors[1]


class PILImages(torch.utils.data.Dataset):
    """Grayscale PIL images of two sizes, as torchvision's folder data sets yield them: label c is grey c*40."""

    def __init__(self, labels: list[int]) -> None:
        self.targets = labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        side = 10 if (i // 4) % 2 else 12  # both sizes in every class
        return Image.new("L", (side, side), color=40 * self.targets[i]), self.targets[i]


def _avalanche():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qpsolvers: no QP solver installed
        import avalanche.benchmarks as benchmarks
    return benchmarks


def _data(n_classes: int = 6, per_class: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat(per_class)
    return torch.rand(len(y), 1, 4, 4, generator=g), y  # grayscale, float in [0, 1]


def _nc(**kwargs):
    """6 classes in 3 experiences, in a shuffled class order, with names."""
    x, y = _data()
    tx, ty = _data(per_class=2, seed=1)
    names = [f"name{c}" for c in range(6)]
    return _avalanche().nc_benchmark(Labelled(x, y, names), Labelled(tx, ty, names), n_experiences=3,
                                     **{"task_labels": False, "shuffle": True, "seed": 1, **kwargs})


def assert_same_stream(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        same = torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y
        assert same, f"field {f.name} differs"


@pytest.fixture(scope="module")
def world_cfg(tmp_path_factory) -> dict:
    return compose_config([*TINY, "learner=er", "device=cpu"], tmp_path_factory.mktemp("world-cache"))


@pytest.fixture(scope="module")
def world(world_cfg):
    return build_stream(world_cfg["benchmark"])


# --------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("float_images", [False, True])
def test_round_trip_gives_the_stream_back_bit_for_bit(world, float_images):
    back = stream_from_avalanche(to_avalanche(world, float_images=float_images), name="world")
    assert back.train_x.dtype == torch.uint8 and back.has_attributes and back.heldout
    assert_same_stream(world, back)  # images, labels, experiences, held out, names, attributes, pairs


@pytest.mark.parametrize("learner", ["er", "child"])  # class-only, and one that reads the attributes
def test_round_trip_through_the_config_gives_the_same_report(world_cfg, world, learner, tmp_path, monkeypatch):
    """``benchmark=avalanche`` naming a classic benchmark that is the world stream through ``to_avalanche``."""
    calls = []

    def WorldRoundTrip(float_images=True, seed=None, dataset_root=None, train_transform="?", eval_transform="?"):
        calls.append({"seed": seed, "dataset_root": dataset_root, "transforms": (train_transform, eval_transform)})
        return to_avalanche(world, float_images=float_images)

    monkeypatch.setattr(_avalanche().classic, "WorldRoundTrip", WorldRoundTrip, raising=False)
    original = compose_config([*TINY, f"learner={learner}", "device=cpu"])
    original["benchmark"]["cache_dir"] = world_cfg["benchmark"]["cache_dir"]
    cfg = compose_config(["benchmark=avalanche", "benchmark.benchmark=WorldRoundTrip", f"learner={learner}", *RUN])
    cfg["benchmark"].update(args={"float_images": False}, data_root=str(tmp_path / "data"))
    quiet = dict(print_fn=lambda *_: None)
    a = run_experiment(original, tmp_path / "world", **quiet).to_dict()
    b = run_experiment(cfg, tmp_path / "avalanche", **quiet).to_dict()
    assert calls == [{"seed": 0, "dataset_root": str(tmp_path / "data"), "transforms": (None, None)}]
    a.pop("timing"), b.pop("timing")
    assert a == b
    if learner == "child":
        assert a["zero_shot"] is not None and a["attribute_accuracy"] is not None  # attributes travelled


# --------------------------------------------------------------------------------------------
# any benchmark built in Python
# --------------------------------------------------------------------------------------------


def test_labels_are_renumbered_in_arrival_order():
    bench = _nc()
    arrival = [c for exp in bench.train_stream for c in sorted(exp.classes_in_this_experience)]
    assert arrival != sorted(arrival)  # the benchmark's labels do not arrive in order
    stream = stream_from_avalanche(bench)
    assert stream.experiences == [[0, 1], [2, 3], [4, 5]] and stream.heldout == []
    assert stream.image_shape == (1, 4, 4)  # grayscale stays one channel
    assert stream.class_names == [f"name{c}" for c in arrival]  # the wrapped data set's names, renumbered
    new_of_old = torch.tensor([arrival.index(c) for c in range(6)])
    x, y = _data()
    pixels = (x * 255).round().to(torch.uint8)
    index_of = {bytes(p.flatten().tolist()): i for i, p in enumerate(pixels)}  # random images: all distinct
    source = torch.tensor([index_of[bytes(p.flatten().tolist())] for p in stream.train_x])
    assert sorted(source.tolist()) == list(range(len(y)))  # every training image once, pixels exact
    assert torch.equal(stream.train_y, new_of_old[y[source]])
    _, ty = _data(per_class=2, seed=1)
    assert sorted(stream.test_y.tolist()) == sorted(new_of_old[ty].tolist())
    assert stream.train_counts == [5] * 6 and not stream.has_attributes


def test_task_labels_keep_each_tasks_classes_apart():
    stream = stream_from_avalanche(_nc(task_labels=True, class_ids_from_zero_in_each_exp=True))  # 0, 1 per task
    assert stream.experiences == [[0, 1], [2, 3], [4, 5]]
    assert stream.class_names[:3] == ["class 0 (task 0)", "class 1 (task 0)", "class 0 (task 1)"]
    assert stream.test_y.bincount().tolist() == [2] * 6


def test_the_last_categories_are_held_out():
    stream = stream_from_avalanche(_nc(), n_heldout=3)
    assert stream.experiences == [[0, 1], [2]] and stream.heldout == [3, 4, 5]
    assert stream.train_y.max() == 2 and stream.train_counts == [5, 5, 5]
    assert set(stream.test_y.tolist()) == set(range(6))  # still scored on the test set
    with pytest.raises(ValueError, match="n_heldout=6 leaves no category"):
        stream_from_avalanche(_nc(), n_heldout=6)


def test_pil_images_of_any_size_are_resized_when_asked():
    as_dataset = _avalanche().utils.as_classification_dataset
    train, test = as_dataset(PILImages([0, 1, 2, 3] * 3)), as_dataset(PILImages([0, 1, 2, 3]))
    bench = _avalanche().class_incremental_benchmark({"train": train, "test": test}, class_order=[3, 1, 2, 0],
                                                     num_experiences=2)
    with pytest.raises(ValueError, match=r"train experience 0, image \d+: shape \(1, 1[02], 1[02]\).*image_size"):
        stream_from_avalanche(bench)
    stream = stream_from_avalanche(bench, image_size=8)
    assert stream.image_shape == (1, 8, 8) and stream.experiences == [[0, 1], [2, 3]]
    grey = {int(y): int(x.float().mean().round()) for x, y in zip(stream.train_x, stream.train_y)}
    assert grey == {0: 40, 1: 120, 2: 0, 3: 80}  # renumbered: 1, 3 first, then 0, 2; flat grey survives resizing


def test_new_instances_of_known_classes_are_refused():
    x, y = _data()
    bench = _avalanche().ni_benchmark(Labelled(x, y), Labelled(x, y), n_experiences=2, task_labels=False, seed=0)
    with pytest.raises(ValueError, match="train experience 1 brings 6 categories already in experience 0"):
        stream_from_avalanche(bench)


def test_normalised_images_are_refused():
    x, y = _data()
    bench = _avalanche().nc_benchmark(Labelled(2 * x - 1, y), Labelled(2 * x - 1, y), n_experiences=2,
                                      task_labels=False, shuffle=False)
    with pytest.raises(ValueError, match=r"train experience 0, image 0: .* not \[0, 1\].*normalises"):
        stream_from_avalanche(bench)


# --------------------------------------------------------------------------------------------
# the benchmark=avalanche config
# --------------------------------------------------------------------------------------------


def _write_mnist(root, n_train: int = 60, n_test: int = 20) -> dict:
    """Random digits in torchvision's raw MNIST files (idx format), where SplitMNIST looks before downloading."""
    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng, out = np.random.default_rng(0), {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(np.array([2051, n, 28, 28], ">i4").tobytes() + x.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(np.array([2049, n], ">i4").tobytes() + y.tobytes())
        out[split] = torch.from_numpy(x), torch.from_numpy(y).long()
    return out


def test_a_classic_benchmark_from_its_files_on_disk(tmp_path):
    """Avalanche's own SplitMNIST (default transforms normalise: we read raw pixels), then a run on it."""
    data = _write_mnist(tmp_path / "mnist")
    cfg = compose_config(["benchmark=avalanche", "benchmark.n_heldout=2", "learner=er", *RUN])
    cfg["benchmark"]["data_root"] = str(tmp_path / "mnist")
    stream = build_stream(cfg["benchmark"])
    assert stream.name == "SplitMNIST" and stream.image_shape == (1, 28, 28)
    assert stream.experiences == [[0, 1], [2, 3], [4, 5], [6, 7]] and stream.heldout == [8, 9]
    digits = [int(name.split(" - ")[0]) for name in stream.class_names]  # torchvision's names: "7 - seven"
    assert sorted(digits) == list(range(10)) and digits != list(range(10))  # the seed's class order
    for split, x_all, y_all in (("train", stream.train_x, stream.train_y), ("t10k", stream.test_x, stream.test_y)):
        x, y = data[split]
        for label, digit in enumerate(digits[:8] if split == "train" else digits):
            ours = sorted(bytes(im.flatten().tolist()) for im in x_all[y_all == label])
            assert ours == sorted(bytes(im.flatten().tolist()) for im in x[y == digit])  # pixels exact, no transform
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda *_: None)
    assert len(card.accuracy_matrix) == 4 and card.zero_shot is None  # class-only: nothing to read zero-shot
    assert "2way_1shot" in card.few_shot  # the held-out digits, from their images alone


@pytest.mark.parametrize("key, value, message", [
    ("benchmark", "SplitMINST", r"benchmark\.benchmark: 'SplitMINST' is not .*known: .*SplitCIFAR100.*SplitMNIST"),
    ("args", {"n_experience": 5}, r"unknown config key benchmark\.args\.n_experience: SplitMNIST takes "
                                  r"\['n_experiences', 'return_task_id', 'fixed_class_order'"),
    ("args", {"seed": 3}, r"benchmark\.args\.seed: set benchmark\.seed instead"),
    ("args", {}, r"benchmark\.args: missing a required argument: 'n_experiences'"),
    ("n_heldout", -1, r"benchmark\.n_heldout must be >= 0"),
    ("image_size", "big", r"benchmark\.image_size must be"),
])
def test_bad_settings_fail_before_the_run_folder(key, value, message, tmp_path):
    cfg = compose_config(["benchmark=avalanche", *RUN])
    cfg["benchmark"][key] = value
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)
    with pytest.raises(ValueError, match=message):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("benchmark, module, loader, error", [
    ("SplitMNIST", "cmnist", "get_mnist_dataset",  # what torchvision raises offline
     RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://ossci-datasets.s3.amazonaws.com/"
                  "mnist/, got:\n<urlopen error [Errno -2] Name or service not known>")),
    ("SplitCIFAR100", "ccifar100", "get_cifar100_dataset", urllib.error.URLError("Name or service not known")),
])
def test_missing_data_fail_naming_the_benchmark_and_the_folder(benchmark, module, loader, error, tmp_path,
                                                               monkeypatch):
    def offline(*_, **__):
        raise error

    monkeypatch.setattr(getattr(_avalanche().classic, module), loader, offline)
    root = tmp_path / "no-data"
    cfg = {"name": "avalanche", "benchmark": benchmark, "args": {"n_experiences": 5}, "data_root": str(root),
           "seed": 0}
    with pytest.raises(FileNotFoundError, match=rf"{benchmark}: its data are not in data_root='{root}'.*no network"):
        build_stream(cfg)


def test_missing_data_write_nothing_into_the_run_folder(tmp_path, monkeypatch):
    def offline(*_, **__):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(_avalanche().classic.cmnist, "get_mnist_dataset", offline)
    cfg = compose_config(["benchmark=avalanche", *RUN])
    with pytest.raises(FileNotFoundError, match="SplitMNIST: its data are not in"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
