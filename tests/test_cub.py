"""CUB-200-2011 in its own folder layout: a tiny generated copy (6 classes x 4 images, 12 attributes in
3 groups) read back exactly, every malformed variant failing with a named error, and a short run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from continual.config import ConfigError, validate_config
from continual.experiment import run_experiment
from continual.stream import build_stream
from continual.stream import cub
from tests.conftest import compose_config

N_CLASSES, PER_CLASS, GROUPS, PER_GROUP = 6, 4, ("has_bill_shape", "has_wing_color", "has_size"), 4
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30), (200, 40, 220), (30, 210, 210)]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny steps: two threads gain nothing, and on a loaded 2-core machine their spin-waits slow them down.
    torch.set_num_threads(1)


def make_cub(root: Path, attributes_at: str = "attributes/attributes.txt") -> dict:
    """A CUB_200_2011 folder in the published layout; returns what it holds, to check the reader against.

    Image ids are shuffled against the class order and the split alternates within a class, so a reader
    that took rows in file order, swapped columns or inverted the flag would read other values.
    """
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    names = [f"{c + 1:03d}.Bird_{c}" for c in range(N_CLASSES)]
    n = N_CLASSES * PER_CLASS
    order = rng.permutation(n)  # image id i + 1 shows class order[i] // PER_CLASS
    classes = [int(order[i]) // PER_CLASS for i in range(n)]
    train = [int(order[i]) % PER_CLASS < 3 for i in range(n)]  # 3 training, 1 test image per class
    lines = []
    for i in range(n):
        c = classes[i]
        folder = root / "images" / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(-20, 21, (30, 40, 3))  # (H, W, 3): 40 x 30 pictures
        pixels = np.clip(np.array(COLOURS[c]) + noise, 0, 255).astype(np.uint8)
        suffix = ".png" if i % 5 == 0 else ".jpg"
        image = Image.fromarray(pixels).convert("L") if i == 3 else Image.fromarray(pixels)  # one grey photo
        image.save(folder / f"img_{i + 1}{suffix}")
        lines.append(f"{i + 1} {names[c]}/img_{i + 1}{suffix}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{c + 1} {name}\n" for c, name in enumerate(names)))
    # Labels and split listed in another order than images.txt: the reader must go by image id.
    listed = rng.permutation(n)
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {classes[i] + 1}\n" for i in listed))
    (root / "train_test_split.txt").write_text("".join(f"{i + 1} {int(train[i])}\n" for i in listed))
    attr_names = [f"{g}::value_{v}" for g in GROUPS for v in range(PER_GROUP)]
    attr_file = root / attributes_at
    attr_file.parent.mkdir(parents=True, exist_ok=True)
    attr_file.write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(attr_names)))
    percent = np.round(rng.uniform(0, 100, (N_CLASSES, len(attr_names))), 4)  # (C, A), distinct rows
    (root / "attributes").mkdir(exist_ok=True)
    (root / cub.CONTINUOUS_FILE).write_text("\n".join(" ".join(f"{v:.4f}" for v in row) for row in percent) + "\n")
    return {"names": names, "classes": classes, "train": train, "attributes": attr_names, "percent": percent,
            "files": [root / "images" / line.split()[1] for line in lines]}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    return root, make_cub(root)


def test_labels_split_and_attributes_are_read_as_written(fixture):
    root, truth = fixture
    data = cub.read_cub(root)
    assert data.class_names == truth["names"]
    assert data.label.tolist() == truth["classes"]
    assert data.is_train.tolist() == truth["train"]
    assert data.attribute_names == tuple(truth["attributes"])
    assert data.attribute_groups == tuple(g for g in GROUPS for _ in range(PER_GROUP))
    torch.testing.assert_close(data.class_attributes, torch.tensor(truth["percent"] / 100, dtype=torch.float))


def test_stream_keeps_each_class_with_its_images_and_attribute_row(fixture, tmp_path):
    root, truth = fixture
    stream = cub.build_cub_stream(root, n_experiences=2, n_heldout=2, image_size=16, seed=3, cache_dir=tmp_path)
    assert stream.attribute_space.continuous and stream.attribute_space.groups[:PER_GROUP] == (GROUPS[0],) * PER_GROUP
    assert stream.experiences == [[0, 1], [2, 3]] and stream.heldout == [4, 5]
    assert stream.class_codes.dtype == torch.float32 and stream.class_attributes().shape == (6, 12)
    by_file = {str(f): cub.decode_image(f, 16) for f in truth["files"]}
    for label, name in enumerate(stream.class_names):
        c = truth["names"].index(name)
        # The label's attribute row is its own class's row, not another's.
        torch.testing.assert_close(stream.class_codes[label], torch.tensor(truth["percent"][c] / 100).float())
        own = [i for i, k in enumerate(truth["classes"]) if k == c]
        want_train = [i for i in own if truth["train"][i]] if label < 4 else []
        want_test = [i for i in own if not truth["train"][i]] if label < 4 else own  # held out: all are test
        for x, y, want in ((stream.train_x, stream.train_y, want_train), (stream.test_x, stream.test_y, want_test)):
            got = x[y == label]
            expected = torch.zeros((0, 3, 16, 16), dtype=torch.uint8)
            if want:
                expected = torch.from_numpy(np.stack([by_file[str(truth["files"][i])] for i in want]))
            assert torch.equal(got, expected), f"images of {name} ({'train' if x is stream.train_x else 'test'})"
    assert stream.train_counts == [3, 3, 3, 3]
    assert stream.train_x.shape[1:] == (3, 16, 16) and stream.train_x.dtype == torch.uint8
    grey = cub.decode_image(truth["files"][3], 16)
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])  # a grey photo becomes RGB


def test_the_order_follows_the_seed_and_shuffle_switch(fixture):
    root, truth = fixture
    a, b = (cub.build_cub_stream(root, n_experiences=3, image_size=8, seed=s) for s in (0, 1))
    assert a.class_names != b.class_names and sorted(a.class_names) == truth["names"]
    fixed = cub.build_cub_stream(root, n_experiences=3, image_size=8, seed=1, shuffle_classes=False)
    assert fixed.class_names == truth["names"] and fixed.experiences == [[0, 1], [2, 3], [4, 5]]


def test_cache_and_worker_processes_give_the_same_images(fixture, tmp_path, monkeypatch):
    root, _ = fixture
    data = cub.read_cub(root)
    first = cub.load_cub_images(data, 12, tmp_path, workers=0)
    assert len(list(tmp_path.glob("cub-*.pt"))) == 1
    monkeypatch.setattr(cub, "decode_images", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    assert torch.equal(cub.load_cub_images(data, 12, tmp_path), first)
    monkeypatch.undo()
    monkeypatch.setattr(cub, "_CHUNK", 7)  # several tasks, so the pool is used
    assert torch.equal(cub.decode_images(data.paths, 12, workers=2), first)


def test_attribute_names_beside_the_folder_as_the_archive_has_them(tmp_path):
    root = tmp_path / "CUB_200_2011"
    truth = make_cub(root, attributes_at="../attributes.txt")
    assert cub.read_cub(root).attribute_names == tuple(truth["attributes"])


def _edit(path: Path, line: int | None = None, new: str | None = None, drop: bool = False) -> None:
    if drop:
        path.unlink()
        return
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


MALFORMED = {
    "missing classes.txt": (lambda r: _edit(r / "classes.txt", drop=True), FileNotFoundError,
                            r"classes\.txt is missing"),
    "missing split": (lambda r: _edit(r / "train_test_split.txt", drop=True), FileNotFoundError,
                      r"train_test_split\.txt is missing"),
    "missing attribute matrix": (lambda r: _edit(r / cub.CONTINUOUS_FILE, drop=True), FileNotFoundError,
                                 r"class_attribute_labels_continuous\.txt is missing"),
    "missing attribute names": (lambda r: _edit(r / "attributes/attributes.txt", drop=True), FileNotFoundError,
                                r"attribute names are missing: none of .*attributes/attributes\.txt"),
    "row with three columns": (lambda r: _edit(r / "image_class_labels.txt", 2, "5 1 7"), cub.CubFormatError,
                               r"image_class_labels\.txt, line 2: expected '<image id> <class id>' "
                               r"\(2 columns\), got 3"),
    "class id out of range": (lambda r: _edit(r / "image_class_labels.txt", 4, f"{_image_on(r, 4)} 7"),
                              cub.CubFormatError,
                              r"image_class_labels\.txt, line 4: the class id 7 is out of range 1\.\.6"),
    "unknown image id": (lambda r: _edit(r / "train_test_split.txt", 1, "99 1"), cub.CubFormatError,
                         r"train_test_split\.txt, line 1: image id 99 is not in images\.txt"),
    "flag not 0 or 1": (lambda r: _edit(r / "train_test_split.txt", 3, f"{_image_on(r, 3, 'train_test_split.txt')} 2"),
                        cub.CubFormatError, r"train_test_split\.txt, line 3: the train flag 2 is out of range 0\.\.1"),
    "class ids not in order": (lambda r: _edit(r / "classes.txt", 3, "4 003.Bird_2"), cub.CubFormatError,
                               r"classes\.txt, line 3: class ids must be 1, 2, \.\.\. in order; expected 3, got 4"),
    "attribute matrix one row short": (lambda r: _edit(r / cub.CONTINUOUS_FILE, 6, ""), cub.CubFormatError,
                                       r"class_attribute_labels_continuous\.txt has 5 rows, expected 6"),
    "attribute row one value short": (lambda r: _edit(r / cub.CONTINUOUS_FILE, 2, " ".join(["50"] * 11)),
                                      cub.CubFormatError,
                                      r"class_attribute_labels_continuous\.txt, line 2: expected 12 numbers .* got 11"),
    "percentage above 100": (lambda r: _edit(r / cub.CONTINUOUS_FILE, 3, " ".join(["50"] * 11 + ["150"])),
                             cub.CubFormatError,
                             r"continuous\.txt, line 3: attribute 12 is 150, expected a percentage"),
    "attribute without group": (lambda r: _edit(r / "attributes/attributes.txt", 5, "5 wingspan"), cub.CubFormatError,
                                r"attributes\.txt, line 5: expected an attribute name '<group>::<value>'"),
    "image listed but absent": (lambda r: (r / "images" / _image_on(r, 7, "images.txt", column=1)).unlink(),
                                FileNotFoundError, r"images\.txt, line 7: image .*img_7\.\w+ is listed but absent"),
    "image not labelled": (lambda r: _edit(r / "image_class_labels.txt", 1, ""), cub.CubFormatError,
                           r"image_class_labels\.txt has no row for image id \d+ of images\.txt"),
}


def _image_on(root: Path, line: int, file: str = "image_class_labels.txt", column: int = 0) -> str:
    return (root / file).read_text().splitlines()[line - 1].split()[column]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_fail_naming_the_file_and_line(case, fixture, tmp_path):
    source, _ = fixture
    root = tmp_path / "CUB_200_2011"
    shutil.copytree(source, root)
    spoil, error, message = MALFORMED[case]
    spoil(root)
    with pytest.raises(error, match=message):
        cub.build_cub_stream(root, n_experiences=2, image_size=8, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing cached


def test_missing_folder_names_it_and_settings_fail_before_reading(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"CUB data folder {tmp_path / 'nowhere'} does not exist"):
        cub.build_cub_stream(tmp_path / "nowhere")
    cfg = compose_config(["benchmark=cub", f"benchmark.data_root={tmp_path / 'nowhere'}", "benchmark.n_experiences=0"])
    with pytest.raises(ConfigError, match=r"benchmark\.n_experiences must be >= 1"):
        validate_config(cfg)
    cfg = compose_config(["benchmark=cub", "+benchmark.crop=true"])
    with pytest.raises(ConfigError, match=r"unknown config key benchmark\.crop"):
        validate_config(cfg)


def test_more_experiences_than_classes_is_refused(fixture):
    root, _ = fixture
    with pytest.raises(ValueError, match=r"n_experiences \(5\) \+ benchmark\.n_heldout \(2\) exceed the 6 classes"):
        cub.build_cub_stream(root, n_experiences=5, n_heldout=2)


RUN = ["benchmark=cub", "benchmark.n_experiences=2", "benchmark.n_heldout=2", "benchmark.image_size=16",
       "benchmark.workers=0", "train.epochs=2", "train.batch_size=4", "learner.backbone_args.width=8",
       "learner.backbone_args.embed_dim=16", "learner.replay_batch_size=4", "memory.size=8",
       "eval.few_shot.n_way=2", "eval.few_shot.shots=[1]", "eval.few_shot.episodes=5",
       "eval.every=1", "progress=false", "logger.wandb.mode=disabled", "device=cpu"]


def test_a_short_run_trains_and_reports_zero_shot(fixture, tmp_path):
    root, _ = fixture
    cfg = compose_config([*RUN, f"benchmark.data_root={root}"], cache_dir=tmp_path / "cache")
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)
    assert len(card.accuracy_matrix) == 2 and (tmp_path / "run" / "report.json").exists()
    assert 0.0 <= card.average_accuracy <= 1.0
    assert card.zero_shot is not None  # two held-out classes, scored from their continuous attributes
    assert {"mSA", "mUA", "mH", "mAUSUC"} <= set(card.gzsl)  # the continual zero-shot means over experiences
    assert "mean_abs_error" in card.attribute_accuracy  # continuous attributes


def test_missing_data_write_nothing_into_the_run_folder(tmp_path):
    cfg = compose_config([*RUN, f"benchmark.data_root={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="CUB data folder"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_build_stream_by_name(fixture):
    root, _ = fixture
    stream = build_stream({"name": "cub", "data_root": str(root), "n_experiences": 2, "image_size": 8})
    assert stream.name == "cub" and stream.n_classes == 6 and stream.heldout == []
