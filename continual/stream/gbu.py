"""Xian et al.'s proposed splits ("GBU") as a stream of feature vectors, for continual and generalised
zero-shot learning on CUB, SUN, AwA2 and aPY.

The format (Xian, Lampert, Schiele & Akata, "Zero-shot learning: the good, the bad and the ugly",
TPAMI 2018; ``xlsa17.zip``, one folder per data set, e.g. ``xlsa17/data/CUB``), MATLAB v5 files:

- ``res101.mat``: ``features`` (2048, N), one ResNet-101 feature column per image; ``labels`` (N, 1),
  the class of each image, 1-based (1..C).
- ``att_splits.mat``: ``att`` (A, C), the class-attribute matrix with L2-normalised columns;
  ``original_att`` (A, C), the same as the data set publishes it (CUB: percentages 0..100; SUN and aPY:
  shares 0..1); ``allclasses_names`` (C, 1); and 1-based indices into res101's columns:
  ``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc`` (also ``train_loc`` and ``val_loc``, not
  used here). The published files keep trainval and test_unseen classes disjoint.

Inputs are the features themselves: ``train_x`` is float32 (N, 2048), to be read by a vector backbone
(``learner.backbone=mlp``); nothing is an image, so augmentations and the disk path do not apply.

Attributes are continuous (``AttributeSpace.continuous_space``): the chosen matrix (``attributes``:
``original_att``, default, or ``att``) divided by its largest entry, so every degree lies in [0, 1]
and the ratios between them are the published ones. ``original_att`` by default because CUB's and
SUN's are what a Bernoulli's soft target means (the share of annotations that saw the attribute);
``att``'s per-class normalisation keeps each class's profile but not that meaning.

Two protocols (``protocol``):

- ``czsl``, continual zero-shot (Skorokhodov & Elhoseiny, ICLR 2021; CUB: 10 tasks of 20 classes,
  SUN: 15 tasks, the first 3 of 47 classes, the others of 48): every class of the data set is in one
  task; after task t, seen = the classes of tasks <= t and unseen = all later ones (the report card's
  ``gzsl.mSA/mUA/mH/mAUSUC/mJA``). Which images train and test (``czsl_split``): ``pooled`` (default,
  what the published CZSL code does, e.g. IGCZSL's: GBU's unseen classes have no trainval image, so
  every image of a class is pooled and a seeded ``test_share`` of each class's images is held for
  testing) or ``proposed`` (train on ``trainval_loc``, test on ``test_seen_loc`` and
  ``test_unseen_loc``; only for files where every class has trainval images, else a named error).
- ``gzsl``, the GBU protocol over a stream: the trainval classes arrive in ``n_experiences``
  experiences (training images ``trainval_loc``), the test_unseen classes are held out (never
  trained; ``stream.heldout``); the test set is ``test_seen_loc`` and ``test_unseen_loc``.

Class order (``class_order``): ``seeded`` (a permutation drawn from ``seed``) or ``published`` (the
data set's class ids in order, as IGCZSL's code deals them). Classes are dealt into consecutive tasks
as evenly as possible, smaller tasks first (SUN: 3 x 47 then 12 x 48).

Malformed data fail before anything is written, each with a ``GBUFormatError`` naming the file, the
variable, what was expected and what was found (missing files: ``FileNotFoundError``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from continual.stream.attributes import AttributeSpace
from continual.stream.stream import Stream

FEATURES_FILE = "res101.mat"
SPLITS_FILE = "att_splits.mat"
PROTOCOLS = ("czsl", "gzsl")
CLASS_ORDERS = ("seeded", "published")
CZSL_SPLITS = ("pooled", "proposed")
ATTRIBUTE_MATRICES = ("original_att", "att")
LOCATIONS = ("trainval_loc", "test_seen_loc", "test_unseen_loc")
SOURCE = "http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip (Xian et al. 2018, proposed splits)"


class GBUFormatError(ValueError):
    """A GBU file whose contents are not in the published layout: names the file and the variable."""


@dataclass
class GBUData:
    """One GBU folder, checked and converted: 0-based labels and image indices."""

    features: torch.Tensor  # (N, F) float32, one row per image
    labels: torch.Tensor  # (N,) long class ids 0..C-1
    attributes: torch.Tensor  # (C, A) float32 degrees in [0, 1] (the chosen matrix / its max)
    class_names: list[str]  # (C,)
    locations: dict[str, torch.Tensor]  # LOCATIONS -> (n,) long 0-based image indices

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def check_gbu_settings(protocol: str = "czsl", n_experiences: int = 10, class_order: str = "seeded",
                       czsl_split: str = "pooled", test_share: float = 0.2, attributes: str = "original_att",
                       **_: object) -> None:
    """Fail naming ``benchmark.<key>`` on values no data could satisfy; reads no file."""
    for key, value, allowed in (("protocol", protocol, PROTOCOLS), ("class_order", class_order, CLASS_ORDERS),
                                ("czsl_split", czsl_split, CZSL_SPLITS), ("attributes", attributes, ATTRIBUTE_MATRICES)):
        if value not in allowed:
            raise ValueError(f"config key benchmark.{key} must be one of {', '.join(allowed)}; got {value!r}")
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, int) or n_experiences < 1:
        raise ValueError(f"config key benchmark.n_experiences must be an int >= 1, got {n_experiences!r}")
    if not 0.0 < float(test_share) < 1.0:
        raise ValueError(f"config key benchmark.test_share must lie strictly between 0 and 1 (the share of each "
                         f"class's images held for testing under czsl_split=pooled), got {test_share!r}")


# --------------------------------------------------------------------------------------------
# reading and checking the two files
# --------------------------------------------------------------------------------------------


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"GBU file {path} is missing: a GBU folder (xlsa17/data/<DATASET>) holds "
                                f"{FEATURES_FILE} and {SPLITS_FILE}; get them from {SOURCE}")


def _load_mat(path: Path, names: tuple[str, ...], required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The variables ``names`` of a MATLAB file (``required`` must be there), as numpy arrays."""
    import scipy.io

    _require_file(path)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=list(names))
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5)
        raise GBUFormatError(f"{path} is a MATLAB v7.3 (HDF5) file ({err}); expected the published v5 file") from None
    except Exception as err:  # noqa: BLE001 - scipy raises several kinds for a file that is not a .mat
        raise GBUFormatError(f"{path} could not be read as a MATLAB file ({type(err).__name__}: {err}); "
                             f"expected the published {path.name}") from None
    for name in required:
        if name not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise GBUFormatError(f"{path}: variable {name!r} is missing; the published file has it "
                                 f"(of the variables looked for, found: {', '.join(found) or 'none'})")
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _vector(path: Path, name: str, value: np.ndarray) -> np.ndarray:
    """A MATLAB column or row vector as a 1-D array."""
    a = np.asarray(value)
    if a.ndim > 2 or (a.ndim == 2 and 1 not in a.shape):
        raise GBUFormatError(f"{path}: variable {name!r} must be a vector (n, 1), got shape {a.shape}")
    return a.reshape(-1)


def _indices(path: Path, name: str, value: np.ndarray, low: int, high: int, what: str) -> np.ndarray:
    """A vector of whole numbers in ``low..high`` (1-based as published) as 0-based int64."""
    a = _vector(path, name, value)
    if a.dtype.kind not in "iuf" or a.dtype == np.bool_:
        raise GBUFormatError(f"{path}: variable {name!r} must hold numbers ({what}), got {a.dtype}")
    if a.size == 0:
        raise GBUFormatError(f"{path}: variable {name!r} is empty; expected {what}")
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise GBUFormatError(f"{path}: variable {name!r} must hold whole numbers ({what}); found fractions or NaN")
    a = a.astype(np.int64)
    if a.min() < low or a.max() > high:
        raise GBUFormatError(f"{path}: variable {name!r} out of range: expected {what} in {low}..{high} (1-based), "
                             f"got {a.min()}..{a.max()}")
    return a - 1


def _strings(path: Path, name: str, value: np.ndarray) -> list[str]:
    """A MATLAB cell array (or char matrix) of strings as a list."""
    a = np.asarray(value)
    if a.dtype.kind == "U":
        return [str(s).strip() for s in a.reshape(-1)]
    if a.dtype != object:
        raise GBUFormatError(f"{path}: variable {name!r} must be a cell array of names, got {a.dtype} {a.shape}")
    out = []
    for item in a.reshape(-1):
        cell = np.asarray(item).reshape(-1)
        if cell.size != 1 or np.asarray(cell[0]).dtype.kind != "U":
            raise GBUFormatError(f"{path}: variable {name!r} must hold one name per cell, got {item!r}")
        out.append(str(cell[0]).strip())
    return out


def load_gbu(data_root: str | os.PathLike, attributes: str = "original_att") -> GBUData:
    """Read and check ``res101.mat`` and ``att_splits.mat`` in ``data_root``."""
    from continual.stream.omniglot import resolve_data_root

    if attributes not in ATTRIBUTE_MATRICES:
        raise ValueError(f"config key benchmark.attributes must be one of {', '.join(ATTRIBUTE_MATRICES)}; "
                         f"got {attributes!r}")
    root = resolve_data_root(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"GBU data folder {root} does not exist: unzip {SOURCE} and point "
                                f"benchmark.data_root (or $CONTINUAL_DATA, the folder holding xlsa17/) at "
                                f"xlsa17/data/<DATASET>, e.g. xlsa17/data/CUB")
    feat_path, split_path = root / FEATURES_FILE, root / SPLITS_FILE
    # Both files' presence first: a missing second file should not wait for the first's 100 MB read.
    for path in (feat_path, split_path):
        _require_file(path)
    res = _load_mat(feat_path, ("features", "labels"), ("features", "labels"))
    spl = _load_mat(split_path, (attributes, "allclasses_names", *LOCATIONS), (attributes, "allclasses_names", *LOCATIONS))

    names = _strings(split_path, "allclasses_names", spl["allclasses_names"])
    C = len(names)
    att = np.asarray(spl[attributes])
    if att.ndim != 2 or att.dtype.kind not in "iuf":
        raise GBUFormatError(f"{split_path}: variable {attributes!r} must be a numeric matrix (attributes, classes), "
                             f"got {att.dtype} {att.shape}")
    if att.shape[1] != C:
        hint = " (it looks transposed: classes in rows)" if att.shape[0] == C else ""
        raise GBUFormatError(f"{split_path}: variable {attributes!r} has {att.shape[1]} columns but "
                             f"allclasses_names names {C} classes; expected (attributes, {C}){hint}")
    att = att.astype(np.float64)
    if not np.isfinite(att).all():
        raise GBUFormatError(f"{split_path}: variable {attributes!r} holds NaN or infinite values")
    if att.min() < 0:
        raise GBUFormatError(f"{split_path}: variable {attributes!r} holds {(att < 0).sum()} negative entries "
                             f"(min {att.min():g}); expected non-negative class attributes"
                             + (" (try benchmark.attributes=att)" if attributes == "original_att" else ""))
    if att.max() <= 0:
        raise GBUFormatError(f"{split_path}: variable {attributes!r} is all zeros")

    features = np.asarray(res["features"])
    if features.ndim != 2 or features.dtype.kind not in "iuf":
        raise GBUFormatError(f"{feat_path}: variable 'features' must be a numeric matrix (features, images), "
                             f"got {features.dtype} {features.shape}")
    labels = _vector(feat_path, "labels", res["labels"])
    N = features.shape[1]
    if len(labels) != N:
        hint = " (it looks transposed: images in rows)" if features.shape[0] == len(labels) else ""
        raise GBUFormatError(f"{feat_path}: variable 'features' has {N} columns (images) but 'labels' has "
                             f"{len(labels)} entries; expected features (F, N) and labels (N, 1){hint}")
    labels = _indices(feat_path, "labels", labels, 1, C, f"class ids of the {C} classes in {SPLITS_FILE}")
    if not np.isfinite(features).all():
        raise GBUFormatError(f"{feat_path}: variable 'features' holds NaN or infinite values")

    locations = {}
    for name in LOCATIONS:
        idx = _indices(split_path, name, spl[name], 1, N, f"image indices into the {N} columns of {FEATURES_FILE}")
        if len(np.unique(idx)) != len(idx):
            raise GBUFormatError(f"{split_path}: variable {name!r} lists {len(idx) - len(np.unique(idx))} images "
                                 f"twice; expected distinct image indices")
        locations[name] = idx
    _check_splits(split_path, locations, labels)
    return GBUData(
        features=torch.from_numpy(np.ascontiguousarray(features.T, dtype=np.float32)),  # (N, F)
        labels=torch.from_numpy(labels),
        attributes=torch.from_numpy((att / att.max()).T.astype(np.float32)),  # (C, A) in [0, 1]
        class_names=names,
        locations={k: torch.from_numpy(v) for k, v in locations.items()},
    )


def _check_splits(path: Path, loc: dict[str, np.ndarray], labels: np.ndarray) -> None:
    """The published invariants: trainval, test_seen and test_unseen share no image; test_unseen's
    classes are not trainval's (the point of unseen), test_seen's are."""
    for a, b in (("trainval_loc", "test_seen_loc"), ("trainval_loc", "test_unseen_loc"), ("test_seen_loc", "test_unseen_loc")):
        shared = np.intersect1d(loc[a], loc[b])
        if len(shared):
            raise GBUFormatError(f"{path}: variables {a!r} and {b!r} overlap: {len(shared)} images in both "
                                 f"(e.g. image {shared[0] + 1}); expected disjoint splits")
    trainval, seen, unseen = (set(labels[loc[k]].tolist()) for k in LOCATIONS)
    if trainval & unseen:
        raise GBUFormatError(f"{path}: variables 'trainval_loc' and 'test_unseen_loc' overlap in classes: "
                             f"{len(trainval & unseen)} classes have images in both (e.g. class "
                             f"{min(trainval & unseen) + 1}); expected unseen classes without training images")
    if seen - trainval:
        raise GBUFormatError(f"{path}: variable 'test_seen_loc' has images of {len(seen - trainval)} classes with no "
                             f"trainval image (e.g. class {min(seen - trainval) + 1}); expected seen classes only")


# --------------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------------


def deal(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` consecutive groups of ``n`` items, as even as possible, smaller ones first."""
    return [n // parts + (1 if i >= parts - n % parts else 0) for i in range(parts)]


def _order(classes: list[int], class_order: str, gen: torch.Generator) -> list[int]:
    if class_order == "published":
        return sorted(classes)
    return [classes[i] for i in torch.randperm(len(classes), generator=gen).tolist()]


def _pooled_split(labels: torch.Tensor, n_classes: int, test_share: float, gen: torch.Generator,
                  names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) image indices: per class a seeded ``round(test_share * n)`` of its images for testing
    (at least one of each, so every class both trains and is tested)."""
    counts = torch.bincount(labels, minlength=n_classes)
    if int(counts.min()) < 2:
        c = int(counts.argmin())
        raise GBUFormatError(f"{FEATURES_FILE}: class {c + 1} ({names[c]}) has {int(counts[c])} images; "
                             f"czsl_split=pooled needs at least 2 per class (one to train, one to test)")
    n_test = (counts.double() * test_share).round().long().clamp(1, None).minimum(counts - 1)  # (C,)
    # Rank of each image within its class in a seeded random order: labels plus a uniform in [0, 1).
    keys = labels.double() + torch.rand(len(labels), generator=gen, dtype=torch.double)
    by_class = keys.argsort()
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(by_class)
    rank[by_class] = torch.arange(len(by_class)) - starts[labels[by_class]]
    is_test = rank < n_test[labels]
    return (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)


def build_gbu_stream(data_root: str, protocol: str = "czsl", n_experiences: int = 10, class_order: str = "seeded",
                     czsl_split: str = "pooled", test_share: float = 0.2, attributes: str = "original_att",
                     seed: int = 0) -> Stream:
    """A stream of GBU feature vectors under ``protocol`` (see the module docstring)."""
    check_gbu_settings(protocol, n_experiences, class_order, czsl_split, test_share, attributes)
    data = load_gbu(data_root, attributes)
    gen = torch.Generator().manual_seed(seed)
    labels, loc = data.labels, data.locations
    if protocol == "czsl":
        trained, heldout = _order(list(range(data.n_classes)), class_order, gen), []
        if czsl_split == "pooled":
            train_idx, test_idx = _pooled_split(labels, data.n_classes, float(test_share), gen, data.class_names)
        else:
            train_idx, test_idx = loc["trainval_loc"], torch.cat([loc["test_seen_loc"], loc["test_unseen_loc"]])
            untrained = sorted(set(range(data.n_classes)) - set(labels[train_idx].tolist()))
            if untrained:
                raise GBUFormatError(f"{SPLITS_FILE}: {len(untrained)} classes have no image in 'trainval_loc' (e.g. "
                                     f"class {untrained[0] + 1}, {data.class_names[untrained[0]]}), so "
                                     f"czsl_split=proposed cannot train them; use benchmark.czsl_split=pooled (the "
                                     f"published CZSL setting) or protocol=gzsl")
    else:
        train_idx, test_idx = loc["trainval_loc"], torch.cat([loc["test_seen_loc"], loc["test_unseen_loc"]])
        trained = _order(sorted(set(labels[train_idx].tolist())), class_order, gen)
        heldout = sorted(set(labels[loc["test_unseen_loc"]].tolist()))
    if n_experiences > len(trained):
        raise ValueError(f"config key benchmark.n_experiences={n_experiences} is more than the {len(trained)} "
                         f"classes the stream trains on")
    arrival = trained + heldout  # stream label -> class id
    label_of = torch.full((data.n_classes,), -1, dtype=torch.long)
    label_of[torch.tensor(arrival)] = torch.arange(len(arrival))

    def take(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx[label_of[labels[idx]] >= 0]  # images of classes outside the stream (none in published files)
        idx = idx[(label_of[labels[idx]] * len(labels) + idx).argsort()]  # by label, then image: a readable order
        return data.features[idx], label_of[labels[idx]]

    train_x, train_y = take(train_idx)
    test_x, test_y = take(test_idx)
    bounds = np.cumsum([0, *deal(len(trained), n_experiences)]).tolist()
    space = AttributeSpace.continuous_space(tuple(f"attribute_{k + 1:03d}" for k in range(data.attributes.shape[1])))
    return Stream(
        name=f"gbu-{Path(data_root).name}",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        experiences=[list(range(bounds[e], bounds[e + 1])) for e in range(n_experiences)],
        heldout=list(range(len(trained), len(arrival))),
        class_names=[data.class_names[c] for c in arrival],
        train_counts=torch.bincount(train_y, minlength=len(trained)).tolist(),
        attribute_space=space,
        class_codes=data.attributes[torch.tensor(arrival)],  # (C, A) by stream label
        fine_grained_pairs=[],
    )


__all__ = ["ATTRIBUTE_MATRICES", "CLASS_ORDERS", "CZSL_SPLITS", "GBUData", "GBUFormatError", "PROTOCOLS",
           "build_gbu_stream", "check_gbu_settings", "deal", "load_gbu"]
