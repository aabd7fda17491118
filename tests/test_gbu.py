"""GBU proposed splits (res101.mat + att_splits.mat) as a stream of feature vectors, continuous
attributes end to end, and the continual zero-shot protocol.

Fixtures are written here with ``scipy.io.savemat`` in the published layout: ``features`` (2048, N),
``labels`` (N, 1) 1-based, ``att``/``original_att`` (A, C), ``allclasses_names`` as a cell array,
1-based ``*_loc`` image indices. Images are stored in a shuffled order, so a reader that confuses
image indices, class ids or their bases reads the wrong rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from continual.experiment import run_experiment
from continual.heads import AttributeHead, attribute_log_likelihood
from continual.memory import ClassBalancedReservoir
from continual.stream import build_stream
from continual.stream.attributes import AttributeSpace
from continual.stream.gbu import GBUFormatError, build_gbu_stream, deal, load_gbu
from tests.conftest import compose_config

N_CLASSES, N_UNSEEN, N_ATTR, FEAT = 50, 10, 24, 2048


def make_gbu(n_classes: int = N_CLASSES, per_class: int = 20, n_unseen: int = N_UNSEEN, n_attr: int = N_ATTR,
             ids: bool = True, noise: float = 0.3, seed: int = 0) -> dict:
    """The variables of a GBU folder, as published: a dict of the two files' contents plus ground truth.

    Features are a fixed random projection of each image's attributes (its class's, jittered) plus
    noise, so attributes can be predicted from them. With ``ids`` the first two feature rows hold the
    image's 1-based class id and its own 1-based index: tests read them back to check which image
    landed where.
    """
    rng = np.random.default_rng(seed)
    # Degrees in [0, 1], mostly near 0 or 1 (like CUB's shares), stored as percentages like original_att.
    degrees = rng.beta(0.4, 0.4, size=(n_classes, n_attr))  # (C, A)
    original_att = np.round(100 * degrees, 2)  # (C, A)
    N = n_classes * per_class
    labels = np.repeat(np.arange(n_classes), per_class)  # 0-based, images grouped by class ...
    perm = rng.permutation(N)
    labels = labels[perm]  # ... then shuffled: image i of the files is of class labels[i]
    W = rng.normal(size=(n_attr, FEAT)) / np.sqrt(n_attr)
    image_att = np.clip(original_att[labels] / 100 + 0.1 * rng.normal(size=(N, n_attr)), 0, 1)
    features = (image_att @ W + noise * rng.normal(size=(N, FEAT))).T  # (F, N)
    if ids:
        features[0] = labels + 1
        features[1] = np.arange(N) + 1
    unseen = np.sort(rng.choice(n_classes, n_unseen, replace=False))
    is_unseen = np.isin(labels, unseen)
    trainval, test_seen = [], []
    for c in sorted(set(range(n_classes)) - set(unseen.tolist())):
        imgs = np.flatnonzero(labels == c)
        trainval += imgs[: int(0.8 * len(imgs))].tolist()
        test_seen += imgs[int(0.8 * len(imgs)):].tolist()
    test_unseen = np.flatnonzero(is_unseen)
    att = original_att.T / np.linalg.norm(original_att.T, axis=0, keepdims=True)  # (A, C), L2 columns
    names = np.empty((n_classes, 1), dtype=object)
    for c in range(n_classes):
        names[c, 0] = np.array([f"{c + 1:03d}.class_{c + 1}"])
    col = lambda idx: (np.sort(np.asarray(idx)) + 1).astype(np.float64)[:, None]  # noqa: E731 (1-based, (n, 1))
    return {
        "res101": {"features": features, "labels": (labels + 1).astype(np.float64)[:, None],
                   "image_files": np.array([[f"img{i}.jpg"] for i in range(N)], dtype=object)},
        "att_splits": {"att": att, "original_att": original_att.T, "allclasses_names": names,
                       "trainval_loc": col(trainval), "test_seen_loc": col(test_seen),
                       "test_unseen_loc": col(test_unseen), "train_loc": col(trainval[::2]),
                       "val_loc": col(trainval[1::2])},
        "truth": {"labels": labels, "degrees": original_att / original_att.max(), "unseen": unseen.tolist(),
                  "trainval": sorted(trainval), "test": sorted(test_seen + test_unseen.tolist())},
    }


def write_gbu(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "res101.mat", data["res101"])
    scipy.io.savemat(folder / "att_splits.mat", data["att_splits"])
    return folder


@pytest.fixture(scope="module")
def gbu(tmp_path_factory) -> tuple[Path, dict]:
    data = make_gbu()
    return write_gbu(tmp_path_factory.mktemp("gbu") / "CUB", data), data


# --------------------------------------------------------------------------------------------
# continuous attribute spaces and heads
# --------------------------------------------------------------------------------------------


def test_continuous_space_interface_and_checks():
    space = AttributeSpace.continuous_space(("a", "b", "c"), groups=("g1", "g1", "g2"))
    assert space.continuous and space.dim == 3 and space.groups == ("g1", "g1", "g2") and space.sizes == ()
    codes = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.3, 0.4]])
    assert torch.equal(space.vectors(codes), codes)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        space.vectors(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide by its max"):
        space.vectors(torch.tensor([[0.0, 50.0, 1.0]]))
    with pytest.raises(ValueError, match="group per attribute"):
        AttributeSpace.continuous_space(("a", "b"), groups=("g",))
    assert not AttributeSpace().continuous and AttributeSpace().dim == 22  # the world is unchanged


def test_bernoulli_head_loss_and_compatibility_are_the_exact_likelihood():
    torch.manual_seed(0)
    head = AttributeHead(8, (), n_continuous=5)
    z = torch.randn(4, 8)
    logits = head(z)  # (4, 5)
    a = torch.rand(3, 5)  # three descriptions
    targets = a[[0, 1, 2, 0]]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(head.loss(logits, targets), bce)
    # Untagged targets (< 0) are left out of the mean.
    masked = targets.clone()
    masked[:, 0] = -1
    expect = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 1:], targets[:, 1:])
    assert torch.allclose(head.loss(logits, masked), expect)
    # The compatibility score differs from the Bernoulli log-likelihood by a per-image constant only.
    exact = (a[None] * torch.nn.functional.logsigmoid(logits)[:, None]
             + (1 - a[None]) * torch.nn.functional.logsigmoid(-logits)[:, None]).sum(-1)  # (4, 3)
    score = attribute_log_likelihood(head.log_probs(logits), a)
    diff = exact - score
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-5)
    # The description-initialised linear rows are that score: z W_c + b_c = a_c . (V z + b).
    w, b = head.describe_classes(a)
    assert torch.allclose(z @ w.T + b, score, atol=1e-5)
    with pytest.raises(ValueError, match="exactly one kind"):
        AttributeHead(8, (2, 3), n_continuous=4)


def test_memory_keeps_float_features_and_codes_and_refuses_other_dtypes():
    mem = ClassBalancedReservoir(6, (5,), n_attributes=3, x_dtype=torch.float32, codes_dtype=torch.float32)
    x, y, codes = torch.randn(10, 5), torch.arange(10) % 3, torch.rand(10, 3)
    mem.update(x, y, codes)
    xs, ys, cs = mem.sample(20)
    assert xs.dtype == torch.float32 and cs.dtype == torch.float32
    rows = {tuple(r.tolist()) for r in x}
    assert all(tuple(r.tolist()) in rows for r in xs)  # stored exactly, not cast through uint8
    with pytest.raises(ValueError, match="stores torch.float32 inputs, got torch.uint8"):
        mem.update(torch.zeros(2, 5, dtype=torch.uint8), torch.tensor([0, 1]), torch.rand(2, 3))


# --------------------------------------------------------------------------------------------
# reading the format
# --------------------------------------------------------------------------------------------


def test_reads_the_published_layout(gbu):
    root, data = gbu
    truth = data["truth"]
    g = load_gbu(root)
    assert g.features.shape == (N_CLASSES * 20, FEAT) and g.features.dtype == torch.float32
    # Labels 1-based in the file, 0-based here; feature row 0 holds each image's 1-based class id.
    assert torch.equal(g.labels, torch.as_tensor(truth["labels"]))
    assert torch.equal(g.features[:, 0].long() - 1, g.labels)
    assert torch.equal(g.features[:, 1].long() - 1, torch.arange(len(g.labels)))  # image i is column i
    assert g.class_names[0] == "001.class_1" and len(g.class_names) == N_CLASSES
    assert torch.allclose(g.attributes, torch.as_tensor(truth["degrees"], dtype=torch.float32))
    assert torch.equal(g.locations["trainval_loc"].sort().values, torch.as_tensor(truth["trainval"]))
    # att (L2 columns) is the other choice; divided by its max it is in [0, 1] too, with the same profile.
    a = load_gbu(root, attributes="att").attributes
    assert float(a.max()) == 1.0 and float(a.min()) >= 0.0
    assert torch.allclose(a / a.norm(dim=1, keepdim=True), g.attributes / g.attributes.norm(dim=1, keepdim=True),
                          atol=1e-5)


def test_gzsl_stream_rows_labels_and_splits_line_up(gbu):
    root, data = gbu
    truth = data["truth"]
    s = build_gbu_stream(str(root), protocol="gzsl", n_experiences=4, seed=3)
    class_of_label = [int(name.split(".")[0]) - 1 for name in s.class_names]  # stream label -> class id
    # Every image's stored class id matches its stream label's class; attribute rows follow the labels.
    assert [class_of_label[int(y)] for y in s.train_y] == (s.train_x[:, 0].long() - 1).tolist()
    assert [class_of_label[int(y)] for y in s.test_y] == (s.test_x[:, 0].long() - 1).tolist()
    assert torch.allclose(s.class_codes, torch.as_tensor(truth["degrees"][class_of_label], dtype=torch.float32))
    # Training images are exactly trainval_loc, test images test_seen_loc + test_unseen_loc (not inverted).
    assert sorted((s.train_x[:, 1].long() - 1).tolist()) == truth["trainval"]
    assert sorted((s.test_x[:, 1].long() - 1).tolist()) == truth["test"]
    # The held-out categories are GBU's unseen classes, after the trained ones; nothing unseen trains.
    assert sorted(class_of_label[c] for c in s.heldout) == truth["unseen"]
    assert s.heldout == list(range(N_CLASSES - N_UNSEEN, N_CLASSES))
    assert not set(s.heldout) & set(s.train_y.tolist())
    assert [len(e) for e in s.experiences] == deal(N_CLASSES - N_UNSEEN, 4) == [10, 10, 10, 10]
    assert s.image_shape == (FEAT,) and s.attribute_space.continuous and s.class_codes.dtype == torch.float32
    assert torch.equal(s.codes_for(torch.arange(5)), s.class_codes[s.train_y[:5]])


def test_czsl_stream_every_class_in_a_task_with_a_seeded_pooled_split(gbu):
    root, _ = gbu
    s = build_gbu_stream(str(root), protocol="czsl", n_experiences=10, seed=0)
    assert [len(e) for e in s.experiences] == [5] * 10 and s.heldout == []
    assert sorted(s.train_y.unique().tolist()) == list(range(N_CLASSES))
    ids_train, ids_test = set(s.train_x[:, 1].long().tolist()), set(s.test_x[:, 1].long().tolist())
    assert not ids_train & ids_test and len(ids_train | ids_test) == N_CLASSES * 20
    assert torch.equal(torch.bincount(s.test_y), torch.full((N_CLASSES,), 4))  # 0.2 of 20 images per class
    again = build_gbu_stream(str(root), protocol="czsl", n_experiences=10, seed=0)
    other = build_gbu_stream(str(root), protocol="czsl", n_experiences=10, seed=1)
    assert torch.equal(again.train_x, s.train_x) and again.class_names == s.class_names
    assert other.class_names != s.class_names  # seeded class order
    published = build_gbu_stream(str(root), protocol="czsl", class_order="published", seed=1)
    assert published.class_names == sorted(published.class_names)
    assert deal(717, 15) == [47] * 3 + [48] * 12 and deal(200, 10) == [20] * 10  # SUN's and CUB's tasks
    # The proposed split cannot train GBU's unseen classes: named, with the way out.
    with pytest.raises(GBUFormatError, match="no image in 'trainval_loc'.*czsl_split=pooled"):
        build_gbu_stream(str(root), protocol="czsl", czsl_split="proposed")


def _mutated(tmp_path: Path, change) -> Path:
    data = make_gbu(n_classes=12, per_class=5, n_unseen=3, n_attr=6)
    change(data["res101"], data["att_splits"])
    return write_gbu(tmp_path / "bad", data)


def _drop(d: dict, key: str) -> None:
    del d[key]


def _shift_labels(r: dict, a: dict) -> None:
    r["labels"] = r["labels"] - 1  # 0-based labels in a 1-based format


def _overlap_classes(r: dict, a: dict) -> None:
    # One unseen image moved into trainval: its class has images in both.
    a["trainval_loc"] = np.vstack([a["trainval_loc"], a["test_unseen_loc"][:1]])
    a["test_unseen_loc"] = a["test_unseen_loc"][1:]


MALFORMED = [
    ("features vs labels", lambda r, a: r.update(features=r["features"][:, :-1]), r"res101\.mat.*'features' has 59 "
     r"columns.*'labels' has 60"),
    ("features transposed", lambda r, a: r.update(features=r["features"].T), r"res101\.mat.*looks transposed"),
    ("att vs classes", lambda r, a: a.update(original_att=a["original_att"][:, :-1]),
     r"att_splits\.mat.*'original_att' has 11 columns.*names 12 classes"),
    ("labels 0-based", _shift_labels, r"res101\.mat.*'labels' out of range.*1\.\.12.*got 0\.\.11"),
    ("location out of range", lambda r, a: a.update(test_seen_loc=a["test_seen_loc"] + 1000),
     r"att_splits\.mat.*'test_seen_loc' out of range.*1\.\.60"),
    ("duplicate location", lambda r, a: a.update(trainval_loc=np.vstack([a["trainval_loc"], a["trainval_loc"][:1]])),
     r"'trainval_loc' lists 1 images twice"),
    ("trainval / test_unseen images", lambda r, a: a.update(trainval_loc=np.vstack([a["trainval_loc"],
                                                                                     a["test_unseen_loc"][:1]])),
     r"'trainval_loc' and 'test_unseen_loc' overlap: 1 images"),
    ("trainval / test_unseen classes", _overlap_classes, r"'trainval_loc' and 'test_unseen_loc' overlap in classes"),
    ("missing variable", lambda r, a: _drop(a, "test_unseen_loc"), r"att_splits\.mat: variable 'test_unseen_loc' is "
     r"missing"),
    ("missing labels", lambda r, a: _drop(r, "labels"), r"res101\.mat: variable 'labels' is missing"),
    ("negative attributes", lambda r, a: a["original_att"].__setitem__((0, 0), -1.0),
     r"'original_att' holds 1 negative entries.*benchmark\.attributes=att"),
]


@pytest.mark.parametrize("case, change, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_give_named_errors(tmp_path, case, change, message):
    root = _mutated(tmp_path, change)
    with pytest.raises(GBUFormatError, match=message):
        build_gbu_stream(str(root), protocol="gzsl", n_experiences=2)


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GBU data folder .*nowhere does not exist.*xlsa17"):
        load_gbu(tmp_path / "nowhere")
    root = write_gbu(tmp_path / "CUB", make_gbu(n_classes=6, per_class=3, n_unseen=2, n_attr=4))
    (root / "att_splits.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"GBU file .*att_splits\.mat is missing"):
        load_gbu(root)
    (root / "att_splits.mat").write_bytes(b"not a mat file")
    with pytest.raises(GBUFormatError, match=r"att_splits\.mat could not be read as a MATLAB file"):
        load_gbu(root)


def test_missing_data_writes_nothing_into_the_run_folder(tmp_path):
    cfg = compose_config(["experiment=czsl_cub", f"benchmark.data_root={tmp_path / 'absent'}", "progress=false",
                          "logger.wandb.mode=disabled"])
    run_dir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="GBU data folder"):
        run_experiment(cfg, run_dir)
    assert not run_dir.exists() or not any(run_dir.iterdir())


# --------------------------------------------------------------------------------------------
# learning and the protocol end to end
# --------------------------------------------------------------------------------------------

FAST = ["progress=false", "logger.wandb.mode=disabled", "threads=1", "train.epochs=3", "memory.size=200",
        "learner.backbone_args.width=128", "learner.backbone_args.embed_dim=64"]


def test_czsl_run_writes_the_continual_zero_shot_means(tmp_path):
    root = write_gbu(tmp_path / "CUB", make_gbu(ids=False))
    cfg = compose_config(["experiment=czsl_cub", f"benchmark.data_root={root}", *FAST])
    t = time.perf_counter()
    lines: list[str] = []
    run_experiment(cfg, tmp_path / "run", print_fn=lines.append)
    wall = time.perf_counter() - t
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    g = report["gzsl"]
    print(f"10-task CZSL fixture run: {wall:.1f} s; " + ", ".join(f"{k} {g[k]:.3f}" for k in
                                                                ("mSA", "mUA", "mH", "mAUSUC", "mJA")))
    assert wall < 30
    assert g["n"] == 9 and len(g["per_experience"]) == 10 and g["per_experience"][-1] is None
    for key, point_key in (("mSA", "seen"), ("mUA", "unseen"), ("mH", "harmonic"), ("mAUSUC", "auc"),
                           ("mJA", "joint")):
        assert g[key] == pytest.approx(np.mean([p[point_key] for p in g["per_experience"][:-1]]))
    assert report["forgetting"] is not None and len(report["accuracy_matrix"]) == 10
    # Attributes are predictable from these features: joint accuracy (choosing among all 50 classes by
    # attribute compatibility) far above chance, and unseen classes win once enough classes have trained.
    assert g["mJA"] > 10 / N_CLASSES and g["mAUSUC"] > 0.2
    assert g["per_experience"][-2]["unseen"] > 5 / N_CLASSES
    assert 0 <= report["attribute_accuracy"]["mean_abs_error"] < 0.5
    assert any("mJA" in line for line in lines)


def test_continuous_attribute_child_recognises_unseen_classes(tmp_path):
    root = write_gbu(tmp_path / "CUB", make_gbu(ids=False, seed=1))
    cfg = compose_config(["experiment=czsl_cub", f"benchmark.data_root={root}", "benchmark.protocol=gzsl",
                          "benchmark.n_experiences=4", "eval.every=4", *FAST])
    run_experiment(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    zs = report["zero_shot"]
    assert zs["n_categories"] == N_UNSEEN and zs["chance"] == pytest.approx(0.1)
    assert zs["accuracy"] > 0.5  # ten never-trained classes named from their attributes alone
    assert report["attribute_accuracy"]["mean"] > 0.75
    # Switched off (attribute_weight=0), the same run has no zero-shot at all.
    off = compose_config([*(f"{k}" for k in ["experiment=czsl_cub", f"benchmark.data_root={root}",
                                             "benchmark.protocol=gzsl", "benchmark.n_experiences=4", "eval.every=4"]),
                          *FAST, "learner.attribute_weight=0"])
    run_experiment(off, tmp_path / "off")
    assert json.loads((tmp_path / "off" / "report.json").read_text())["zero_shot"] is None


def test_feature_streams_refuse_image_only_settings(gbu, tmp_path):
    root, _ = gbu
    base = ["experiment=czsl_cub", f"benchmark.data_root={root}", *FAST]
    with pytest.raises(ValueError, match=r"learner\.backbone=small_cnn reads images.*use learner\.backbone=mlp"):
        run_experiment(compose_config([*base, "learner.backbone=small_cnn"]), tmp_path / "a")
    assert not (tmp_path / "a" / "config.json").exists()  # refused before the run folder was claimed
    with pytest.raises(ValueError, match=r"learner\.augment distorts images"):
        run_experiment(compose_config([*base, "learner.augment=true"]), tmp_path / "b")
    with pytest.raises(ValueError, match=r"data\.storage=disk keeps uint8 images"):
        run_experiment(compose_config([*base, "data.storage=disk"]), tmp_path / "c")


def test_build_stream_by_name_and_avalanche_round_trip(gbu):
    from continual.avalanche_compat import stream_from_avalanche, to_avalanche

    root, _ = gbu
    s = build_stream({"name": "gbu", "data_root": str(root), "protocol": "gzsl", "n_experiences": 2, "seed": 0})
    back = stream_from_avalanche(to_avalanche(s), name=s.name)
    assert torch.equal(back.train_x, s.train_x) and back.train_x.dtype == torch.float32
    assert torch.equal(back.class_codes, s.class_codes) and back.attribute_space == s.attribute_space
    assert back.experiences == s.experiences and back.heldout == s.heldout and torch.equal(back.test_y, s.test_y)


def test_continuous_child_checkpoint_round_trip_on_features(gbu):
    import io

    from continual.experiment import build_learner

    root, _ = gbu
    cfg = compose_config(["experiment=czsl_cub", f"benchmark.data_root={root}", *FAST])
    s = build_gbu_stream(str(root), protocol="gzsl", n_experiences=2, seed=0)
    torch.set_num_threads(1)  # as the runs above (threads=1): two threads on a shared 2-core machine crawl
    torch.manual_seed(0)
    learner = build_learner(cfg, s, torch.device("cpu"))
    assert learner.attribute_head.continuous and learner.memory.codes.dtype == torch.float32
    learner.begin_experience(0, s.experiences[0])
    idx = s.train_indices(0)
    for b in idx.split(16):
        learner.observe(s.train_x[b], s.train_y[b], s.codes_for(b))
    learner.end_experience(0, s.train_x[idx], s.train_y[idx], s.codes_for(idx))
    buffer = io.BytesIO()
    torch.save(learner.checkpoint_state(), buffer)
    buffer.seek(0)
    fresh = build_learner(cfg, s, torch.device("cpu"))
    fresh.load_checkpoint_state(torch.load(buffer, weights_only=True))
    x = s.test_x[:32]
    assert torch.equal(fresh.scores(x).attribute_log_probs, learner.scores(x).attribute_log_probs)
    assert torch.equal(fresh.memory.codes[: len(fresh.memory)], learner.memory.codes[: len(learner.memory)])
    assert torch.equal(fresh.memory.x[: len(fresh.memory)], learner.memory.x[: len(learner.memory)])
