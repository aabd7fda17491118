"""CUB-200-2011 in its own folder layout as a stream: bird photographs with 312 continuous class attributes.

Data (Wah et al. 2011, ``CUB_200_2011.tgz``, unpacked; nothing is downloaded), under ``data_root``::

    images.txt                    <image id> <path under images/>
    images/<class folder>/<file>.jpg
    classes.txt                   <class id> <name>             (ids 1..C in order)
    image_class_labels.txt        <image id> <class id>
    train_test_split.txt          <image id> <1: train, 0: test>
    attributes/attributes.txt     <attribute id> <group>::<value>  (ids 1..A in order; 312 in 28 groups)
                                  (the archive keeps it beside CUB_200_2011/: data_root/../attributes.txt
                                  is read too, and data_root/attributes.txt)
    attributes/class_attribute_labels_continuous.txt
                                  C rows of A numbers: the percentage of a class's images that show
                                  each attribute (0..100), rows in class id order

Every file is checked as it is read; a malformed one fails naming the file, the line and what was
expected (``CubFormatError``), a missing one naming the path and where it comes from.

Images: decoded with PIL (JPEG draft mode: the decoder scales down by 2-8x itself, the slow part of a
full-size decode), converted to RGB (a few CUB photos are grey), resized to ``image_size`` squared,
whole image (no crop: the bird may be anywhere), antialiased; in ``workers`` processes when > 0. The
uint8 ``(N, 3, S, S)`` tensor is cached in ``cache_dir`` keyed by the image list, each file's size and
modification time, and the size: a second run reads one file (11,788 images: 145 MB at 64 px).

Stream (``build_cub_stream``): classes in an order drawn by ``seed`` (or class id order with
``shuffle_classes=false``); the last ``n_heldout`` of that order are never trained (zero-shot); the others
dealt into ``n_experiences`` experiences as evenly as possible (continual zero-shot learning on CUB,
Skorokhodov & Elhoseiny 2021: 10 tasks of 20 classes). A trained class's images follow the data set's
own split (train: ``is_training_image`` 1, test: 0); a held-out class, never trained, puts all its images
in the test set, as Omniglot's held-out characters do. Labels in arrival order, held-out ones last.
Attributes: a continuous space (``AttributeSpace.continuous_space``) of the 312 names grouped by their
prefix before ``::``; a class's code row is its percentages divided by 100.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from continual.stream.attributes import AttributeSpace
from continual.stream.cache import atomic_torch_save
from continual.stream.omniglot import REPO_ROOT, resolve_data_root  # relative data roots: cwd, then the repo
from continual.stream.stream import Stream, data_stream_kwargs

SOURCE = "CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ (unpacked)"
# Bump when decoding or resizing changes, so that old cache files are not read back.
DECODE_VERSION = 1
ATTRIBUTE_FILES = ("attributes/attributes.txt", "attributes.txt", "../attributes.txt")  # relative to data_root
CONTINUOUS_FILE = "attributes/class_attribute_labels_continuous.txt"
_CHUNK = 256  # images per task handed to a worker process


class CubFormatError(ValueError):
    """A CUB file that is not in the published format: names the file, the line and what was expected."""


class CubData(NamedTuple):
    """What CUB's text files say, no pixels; images in ``images.txt`` order (sorted by image id)."""

    paths: list[Path]  # (N,) absolute image files
    label: torch.Tensor  # (N,) long class index 0..C-1 (class id - 1)
    is_train: torch.Tensor  # (N,) bool, train_test_split.txt's flag
    class_names: list[str]  # (C,) e.g. "001.Black_footed_Albatross"
    attribute_names: tuple[str, ...]  # (A,) e.g. "has_bill_shape::dagger"
    attribute_groups: tuple[str, ...]  # (A,) e.g. "has_bill_shape"
    class_attributes: torch.Tensor  # (C, A) float in [0, 1]: the continuous percentages / 100


# --------------------------------------------------------------------------------------------
# reading the text files
# --------------------------------------------------------------------------------------------


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"CUB file {path} is missing ({what}): unpack {SOURCE} so that data_root is its "
                                f"CUB_200_2011 folder, or point benchmark.data_root (or $CONTINUAL_DATA) there")
    return path


def _rows(path: Path, form: str, n_columns: int, last_free: bool = False) -> list[tuple[int, list[str]]]:
    """``(line number, columns)`` of every non-blank line; ``last_free``: the last column may hold spaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CubFormatError(f"{path} is not UTF-8 text ({err}); expected lines of '{form}'") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split(maxsplit=n_columns - 1) if last_free else line.split()
        if len(columns) != n_columns:
            raise CubFormatError(f"{path}, line {number}: expected '{form}' ({n_columns} columns), "
                                 f"got {len(columns)}: {line.strip()!r}")
        rows.append((number, columns))
    return rows


def _int(path: Path, number: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CubFormatError(f"{path}, line {number}: {what} must be an integer, got {value!r}") from None


def _numbered(path: Path, form: str, what: str) -> list[tuple[int, str]]:
    """``(line, name)`` of a file of ``<id> <name>`` rows whose ids must be 1..n in order."""
    out = []
    for number, (id_text, name) in _rows(path, form, 2, last_free=True):
        expected = len(out) + 1
        if _int(path, number, id_text, f"the {what} id") != expected:
            raise CubFormatError(f"{path}, line {number}: {what} ids must be 1, 2, ... in order; expected "
                                 f"{expected}, got {id_text}")
        out.append((number, name.strip()))
    if not out:
        raise CubFormatError(f"{path} lists no {what}; expected lines of '{form}'")
    return out


def _per_image(path: Path, form: str, image_ids: dict[int, int], what: str,
               allowed: range) -> list[int]:
    """The second column of a ``<image id> <value>`` file, in ``images.txt`` order: every image once,
    each value in ``allowed``."""
    values: list[int | None] = [None] * len(image_ids)
    for number, (id_text, value_text) in _rows(path, form, 2):
        image = _int(path, number, id_text, "the image id")
        if image not in image_ids:
            raise CubFormatError(f"{path}, line {number}: image id {image} is not in images.txt")
        value = _int(path, number, value_text, what)
        if value not in allowed:
            raise CubFormatError(f"{path}, line {number}: {what} {value} is out of range "
                                 f"{allowed.start}..{allowed.stop - 1}")
        if values[image_ids[image]] is not None:
            raise CubFormatError(f"{path}, line {number}: image id {image} is listed twice")
        values[image_ids[image]] = value
    missing = [image for image, k in image_ids.items() if values[k] is None]
    if missing:
        raise CubFormatError(f"{path} has no row for image id {missing[0]} of images.txt ({len(missing)} images "
                             f"missing); expected one '{form}' line per image")
    return values  # type: ignore[return-value]


def _attribute_file(root: Path) -> Path:
    for name in ATTRIBUTE_FILES:
        if (root / name).is_file():
            return root / name
    tried = ", ".join(str(root / n) for n in ATTRIBUTE_FILES)
    raise FileNotFoundError(f"CUB attribute names are missing: none of {tried} exists (the archive has "
                            f"attributes.txt beside CUB_200_2011/); unpack {SOURCE}")


def _continuous(path: Path, n_classes: int, n_attributes: int) -> torch.Tensor:
    """``(C, A)`` float in [0, 1] from the percentages file, checked row by row."""
    rows = _rows(path, "<A numbers>", 1, last_free=True)  # one free column: counted below
    if len(rows) != n_classes:
        raise CubFormatError(f"{path} has {len(rows)} rows, expected {n_classes} (one per class of classes.txt, "
                             f"in class id order)")
    out = np.empty((n_classes, n_attributes), dtype=np.float64)
    for c, (number, (line,)) in enumerate(rows):
        columns = line.split()
        if len(columns) != n_attributes:
            raise CubFormatError(f"{path}, line {number}: expected {n_attributes} numbers (one per attribute of "
                                 f"the attribute names file), got {len(columns)}")
        try:
            out[c] = [float(v) for v in columns]
        except ValueError as err:
            raise CubFormatError(f"{path}, line {number}: expected numbers, got {err}") from None
        bad = ~((out[c] >= 0) & (out[c] <= 100))  # NaN fails both
        if bad.any():
            k = int(np.argmax(bad))
            raise CubFormatError(f"{path}, line {number}: attribute {k + 1} is {columns[k]}, expected a "
                                 f"percentage in 0..100")
    return torch.from_numpy(out / 100.0).float()


def read_cub(data_root: str | os.PathLike) -> CubData:
    """CUB's labels, split, class names and continuous class attributes, checked; no image is decoded
    (each listed image file must exist)."""
    given = Path(data_root).expanduser()
    root = resolve_data_root(given)
    if not root.is_dir():
        also = "" if root.is_absolute() or given.is_absolute() else f" (also tried {REPO_ROOT / given})"
        raise FileNotFoundError(f"CUB data folder {root}{also} does not exist: unpack {SOURCE} and point "
                                f"benchmark.data_root (or $CONTINUAL_DATA, which holds CUB_200_2011/) at it")
    images_file = _require(root / "images.txt", "<image id> <path under images/>")
    paths, image_ids = [], {}
    for number, (id_text, rel) in _rows(images_file, "<image id> <path>", 2, last_free=True):
        image = _int(images_file, number, id_text, "the image id")
        if image in image_ids:
            raise CubFormatError(f"{images_file}, line {number}: image id {image} is listed twice")
        path = root / "images" / rel.strip()
        if not path.is_file():
            raise FileNotFoundError(f"{images_file}, line {number}: image {path} is listed but absent")
        image_ids[image] = len(paths)
        paths.append(path)
    if not paths:
        raise CubFormatError(f"{images_file} lists no image; expected lines of '<image id> <path>'")
    classes_file = _require(root / "classes.txt", "<class id> <name>")
    class_names = [name for _, name in _numbered(classes_file, "<class id> <name>", "class")]
    n_classes = len(class_names)
    labels = _per_image(_require(root / "image_class_labels.txt", "<image id> <class id>"), "<image id> <class id>",
                        image_ids, "the class id", range(1, n_classes + 1))
    flags = _per_image(_require(root / "train_test_split.txt", "<image id> <is training image>"),
                       "<image id> <is training image: 1 or 0>", image_ids, "the train flag", range(0, 2))
    names_file = _attribute_file(root)
    names, groups = [], []
    for number, name in _numbered(names_file, "<attribute id> <group>::<value>", "attribute"):
        group, sep, value = name.partition("::")
        if not sep or not group or not value:
            raise CubFormatError(f"{names_file}, line {number}: expected an attribute name '<group>::<value>' "
                                 f"(e.g. has_bill_shape::dagger), got {name!r}")
        names.append(name)
        groups.append(group)
    attributes = _continuous(_require(root / CONTINUOUS_FILE, "the classes' attribute percentages"), n_classes,
                             len(names))
    return CubData(paths=paths, label=torch.tensor(labels, dtype=torch.long) - 1,
                   is_train=torch.tensor(flags, dtype=torch.bool), class_names=class_names,
                   attribute_names=tuple(names), attribute_groups=tuple(groups), class_attributes=attributes)


# --------------------------------------------------------------------------------------------
# decoding, in worker processes, cached
# --------------------------------------------------------------------------------------------


def decode_image(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """One image file as uint8 ``(3, S, S)``: RGB, the whole image resized (antialiased) to ``S`` x ``S``."""
    with Image.open(path) as im:
        im.draft("RGB", (image_size, image_size))  # JPEG: decode at the smallest scale still >= S
        rgb = im.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, image_size = args
    return np.stack([decode_image(p, image_size) for p in paths])


def decode_images(paths: Sequence[Path], image_size: int, workers: int = 0) -> torch.Tensor:
    """uint8 ``(N, 3, S, S)`` of ``paths``, in order; ``workers`` > 0 decodes in that many processes."""
    tasks = [([str(p) for p in paths[i:i + _CHUNK]], image_size) for i in range(0, len(paths), _CHUNK)]
    if workers > 0 and len(tasks) > 1:
        # Workers run PIL and NumPy only (no torch), so forking a process that holds torch threads is safe.
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunks = list(pool.map(_decode_chunk, tasks))
    else:
        chunks = [_decode_chunk(t) for t in tasks]
    return torch.from_numpy(np.concatenate(chunks)) if chunks else torch.empty((0, 3, image_size, image_size),
                                                                              dtype=torch.uint8)


def _cache_file(cache_dir: str | os.PathLike, paths: Sequence[Path], image_size: int) -> Path:
    # The images' names, sizes and modification times: a replaced or edited file decodes again,
    # without hashing a gigabyte of JPEGs on every run.
    digest = hashlib.sha256(json.dumps({"version": DECODE_VERSION, "image_size": int(image_size)}).encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"cub-{digest.hexdigest()[:16]}.pt"


def load_cub_images(data: CubData, image_size: int = 64, cache_dir: str | os.PathLike | None = None,
                    workers: int = 0) -> torch.Tensor:
    """uint8 ``(N, 3, S, S)`` images of ``data`` (``images.txt`` order), from ``cache_dir`` when it holds them."""
    cache = _cache_file(cache_dir, data.paths, image_size) if cache_dir is not None else None
    expected = (len(data.paths), 3, image_size, image_size)
    if cache is not None and cache.exists():
        try:
            images = torch.load(cache, weights_only=True, map_location="cpu")
            if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape) == expected:
                return images
            warnings.warn(f"CUB cache {cache} does not hold uint8 {expected}; decoding again", stacklevel=2)
        except Exception as err:  # noqa: BLE001 - truncated or foreign: decode again
            warnings.warn(f"unreadable CUB cache {cache} ({type(err).__name__}: {err}); decoding again", stacklevel=2)
    images = decode_images(data.paths, image_size, workers)
    if cache is not None:
        atomic_torch_save(images, cache)
    return images


# --------------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------------


def check_cub_settings(n_experiences: int = 10, n_heldout: int = 0, image_size: int = 64, workers: int = 0) -> None:
    """Raise ConfigError (a ValueError) naming ``benchmark.<key>`` for an impossible value; reads no file."""
    from continual.config import ConfigError  # lazy: continual.config imports the registries

    for key, value, low in (("n_experiences", n_experiences, 1), ("n_heldout", n_heldout, 0),
                            ("image_size", image_size, 8), ("workers", workers, 0)):
        if value < low:
            raise ConfigError(f"config key benchmark.{key} must be >= {low}, got {value}")


def build_cub_stream(data_root: str | os.PathLike, n_experiences: int = 10, n_heldout: int = 0,
                     image_size: int = 64, seed: int = 0, shuffle_classes: bool = True,
                     cache_dir: str | os.PathLike | None = None, workers: int = 0) -> Stream:
    """CUB-200-2011 as a class-incremental stream with continuous class attributes (module docstring)."""
    check_cub_settings(n_experiences, n_heldout, image_size, workers)
    data = read_cub(data_root)
    n_classes = len(data.class_names)
    if n_experiences + n_heldout > n_classes:
        raise ValueError(f"benchmark.n_experiences ({n_experiences}) + benchmark.n_heldout ({n_heldout}) exceed "
                         f"the {n_classes} classes of {resolve_data_root(data_root) / 'classes.txt'}: every "
                         f"experience needs a class")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_classes, generator=gen) if shuffle_classes else torch.arange(n_classes)
    n_stream = n_classes - n_heldout
    label_of = torch.empty(n_classes, dtype=torch.long)
    label_of[order] = torch.arange(n_classes)  # original class -> label in arrival order
    labels = label_of[data.label]  # (N,)
    trained = labels < n_stream
    is_train = data.is_train & trained  # a held-out class's images are all test images

    def take(mask: torch.Tensor) -> torch.Tensor:
        idx = mask.nonzero().squeeze(1)
        return idx[torch.argsort(labels[idx], stable=True)]  # by label, then images.txt order

    train_idx, test_idx = take(is_train), take(~is_train)
    train_y = labels[train_idx]
    train_counts = torch.bincount(train_y, minlength=n_stream).tolist()
    empty = [data.class_names[int(order[c])] for c in range(n_stream) if train_counts[c] == 0]
    if empty:  # before decoding anything
        raise ValueError(f"CUB classes {empty[:3]} have no training image in train_test_split.txt: they cannot be "
                         f"trained; hold them out (benchmark.n_heldout) or fix the split")
    images = load_cub_images(data, image_size, cache_dir, workers)
    bounds = torch.arange(n_stream).tensor_split(n_experiences)
    return Stream(
        name="cub",
        train_x=images[train_idx],
        train_y=train_y,
        test_x=images[test_idx],
        test_y=labels[test_idx],
        experiences=[b.tolist() for b in bounds],
        heldout=list(range(n_stream, n_classes)),
        class_names=[data.class_names[int(c)] for c in order],
        train_counts=train_counts,
        attribute_space=AttributeSpace.continuous_space(data.attribute_names, data.attribute_groups),
        class_codes=data.class_attributes[order],  # (C, A) float in [0, 1], rows in label order
    )


CUB_KEYS = ("data_root", "n_experiences", "n_heldout", "image_size", "seed", "shuffle_classes", "cache_dir", "workers")


def cub_stream_from_dict(cfg: dict) -> Stream:
    """Build the stream from a plain ``benchmark`` config dict, naming any unknown key."""
    return build_cub_stream(**data_stream_kwargs(cfg, CUB_KEYS, "the CUB_200_2011 folder"))


__all__ = ["CubData", "CubFormatError", "build_cub_stream", "check_cub_settings", "cub_stream_from_dict",
           "decode_image", "decode_images", "load_cub_images", "read_cub"]
