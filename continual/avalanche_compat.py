"""Everything that touches Avalanche lives here, workarounds for its breakages included.

Both directions: ``to_avalanche`` exposes one of our streams as an Avalanche benchmark for stock
strategies; ``stream_from_avalanche`` turns any Avalanche benchmark (a classic one by name through
``avalanche_stream``, the ``benchmark=avalanche`` config, or one a researcher built) into our
``Stream``. A stream survives the round trip bit for bit.

Avalanche (0.6.0) is imported lazily: importing it takes ~7 s on the CPU machines here, more
than the rest of a default run's set-up, and our own loop does not need it.

Known breakages on this stack (FIELD_GUIDE section 5) and what we do about them:
- ``class_incremental_benchmark`` streams break iCaRL and ``confusion_matrix_metrics``
  ('DatasetExperience' object has no attribute 'benchmark'): we build with ``nc_benchmark``.
- ``WandBLogger`` fails with wandb 0.31: we log through ``continual.logging.wandb_logger``.
- ``save_checkpoint`` fails with torch 2.14 (dill): we checkpoint our own learners ourselves.
- Classic benchmarks download their data when it is not on disk, and the failure surfaces as
  whatever the downloader raised (``RuntimeError`` from torchvision, ``URLError``, requests'
  ``ConnectionError``, ...), after printing links: ``avalanche_stream`` re-raises it as one
  ``FileNotFoundError`` naming the benchmark and the data folder.
- Their default transforms normalise (and augment) images: we build them with no transform and
  read raw pixels.
- ``CLEAR`` asserts that its default (streaming) protocol gets no ``seed``: we give it none.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from continual.stream.attributes import AttributeSpace
from continual.stream.stream import Stream

# Optional attributes of a benchmark object that ``stream_from_avalanche`` reads (``to_avalanche``
# sets them all; a researcher's benchmark may carry any of them, or pass them as arguments):
# class_names (by label), attribute_space and class_codes ((C, n_attributes) long, by label),
# fine_grained_pairs (label pairs) and heldout_test (a dataset of test images of categories no
# experience trains, yielding (image, label)).
STREAM_EXTRAS = ("class_names", "attribute_space", "class_codes", "fine_grained_pairs", "heldout_test")
# Classic-benchmark arguments the config sets itself: the key to use instead.
RESERVED_ARGS = {"seed": "benchmark.seed", "dataset_root": "benchmark.data_root",
                 "train_transform": None, "eval_transform": None}


def _import_avalanche(module: str):
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qpsolvers warns at import that no QP solver is installed
        return importlib.import_module(module)


# --------------------------------------------------------------------------------------------
# our stream -> Avalanche
# --------------------------------------------------------------------------------------------


def to_avalanche(stream: Stream, float_images: bool = True):
    """The stream as an Avalanche class-incremental benchmark with the same experiences.

    Experience ``e`` holds exactly ``stream.experiences[e]`` (stream labels, unchanged) in its
    train and test sets; held-out categories are in neither. Images become float ``[0, 1]``
    (what stock Avalanche models expect) unless ``float_images`` is False. The benchmark gets a
    ``class_attributes`` attribute: ``(C, A)`` binary attribute vectors indexed by label (or None),
    and the ``STREAM_EXTRAS`` (held-out categories' test images in ``heldout_test``), so that
    ``stream_from_avalanche`` gives the stream back. Per-image ``train_codes`` and ``novel`` do not travel.
    """
    nc_benchmark = _import_avalanche("avalanche.benchmarks").nc_benchmark

    n_stream = sum(len(c) for c in stream.experiences)
    train_x, train_y = stream.train_x.cpu(), stream.train_y.cpu()
    test_keep = stream.test_y.cpu() < n_stream
    test_x, test_y = stream.test_x.cpu()[test_keep], stream.test_y.cpu()[test_keep]
    heldout_x, heldout_y = stream.test_x.cpu()[~test_keep], stream.test_y.cpu()[~test_keep]
    if float_images and train_x.dtype == torch.uint8:  # feature vectors (a GBU stream) travel as they are
        train_x, test_x, heldout_x = train_x.float() / 255.0, test_x.float() / 255.0, heldout_x.float() / 255.0
    sizes = [len(c) for c in stream.experiences]
    benchmark = nc_benchmark(
        torch.utils.data.TensorDataset(train_x, train_y),
        torch.utils.data.TensorDataset(test_x, test_y),
        n_experiences=len(sizes),
        task_labels=False,
        shuffle=False,
        fixed_class_order=list(range(n_stream)),
        per_exp_classes={e: n for e, n in enumerate(sizes)},
    )
    benchmark.class_attributes = stream.class_attributes().cpu() if stream.has_attributes else None
    benchmark.class_names = list(stream.class_names)
    benchmark.attribute_space = stream.attribute_space if stream.has_attributes else None
    benchmark.class_codes = stream.class_codes.cpu() if stream.has_attributes else None
    benchmark.fine_grained_pairs = list(stream.fine_grained_pairs)
    benchmark.heldout_test = torch.utils.data.TensorDataset(heldout_x, heldout_y) if len(heldout_y) else None
    return benchmark


# --------------------------------------------------------------------------------------------
# Avalanche -> our stream
# --------------------------------------------------------------------------------------------


def _image_uint8(x: Any, image_size: int | None) -> torch.Tensor:
    """One image as uint8 ``(C, H, W)``: PIL images and uint8 tensors as they are, float tensors
    in [0, 1] as ``round(x * 255)``; resized (antialiased) to ``image_size`` when that is set."""
    if isinstance(x, Image.Image):
        if x.mode not in ("L", "RGB"):
            x = x.convert("RGB")
        x = torch.from_numpy(np.array(x))  # (H, W) or (H, W, 3)
        x = x.permute(2, 0, 1) if x.ndim == 3 else x
    x = torch.as_tensor(x).detach().cpu()
    if x.ndim == 2:
        x = x[None]  # grayscale stays one channel
    if x.ndim != 3:
        raise ValueError(f"an image must be (C, H, W), (H, W) or a PIL image, got shape {tuple(x.shape)}")
    if x.is_floating_point():
        lo, hi = float(x.min()), float(x.max())
        if lo < -0.5 / 255 or hi > 1 + 0.5 / 255:  # beyond half a grey level: not [0, 1] pixels
            raise ValueError(f"image values lie in [{lo:.3g}, {hi:.3g}], not [0, 1]: the dataset's eval transform "
                             f"normalises them; build the benchmark with raw pixels (eval_transform=None or "
                             f"torchvision's ToTensor()): normalising is the learner's business")
    elif x.dtype != torch.uint8:
        if x.dtype == torch.bool or int(x.min()) < 0 or int(x.max()) > 255:
            raise ValueError(f"integer image values must lie in 0..255, got {x.dtype} in "
                             f"[{int(x.min())}, {int(x.max())}]")
        x = x.to(torch.uint8)
    if image_size is not None and tuple(x.shape[1:]) != (image_size, image_size):
        v = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = F.interpolate(v[None], size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp(0.0, 1.0)
    if x.is_floating_point():
        x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x


def _read(dataset, where: str, image_size: int | None, batch_size: int,
          num_workers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every item of ``dataset`` through its eval transform (no augmentation), in order:
    images ``(N, C, H, W)`` uint8, labels ``(N,)`` long and task labels ``(N,)`` long (0 when none)."""
    if callable(getattr(dataset, "eval", None)):
        dataset = dataset.eval()  # Avalanche's eval transform group
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{where} holds no images")
    images, labels, tasks = None, torch.empty(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    # collate_fn=list: items as they are (PIL images, tensors of different sizes), converted one by one.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=list)
    i = 0
    for items in loader:
        for item in items:
            try:
                if isinstance(item[0], torch.Tensor) and item[0].ndim == 1 and item[0].is_floating_point():
                    image = item[0].detach().cpu().float()  # a feature vector (a GBU stream's): kept as it is
                else:
                    image = _image_uint8(item[0], image_size)
            except ValueError as err:
                raise ValueError(f"{where}, image {i}: {err}") from None
            if images is None:
                images = torch.empty((n, *image.shape), dtype=image.dtype)
            elif image.shape != images.shape[1:] or image.dtype != images.dtype:
                raise ValueError(f"{where}, image {i}: shape {tuple(image.shape)}, the first was "
                                 f"{tuple(images.shape[1:])}; set an image size (benchmark.image_size) to resize "
                                 f"them all, and give the benchmark a transform that makes the channels agree")
            images[i] = image
            labels[i] = int(item[1])
            tasks[i] = int(item[2]) if len(item) > 2 else 0
            i += 1
    return images, labels, tasks


def _keys(y: torch.Tensor, t: torch.Tensor) -> list[tuple[int, int]]:
    """The distinct (task label, label) pairs, sorted."""
    return [tuple(k) for k in torch.unique(torch.stack([t, y], 1), dim=0).tolist()]


def _find_class_names(benchmark) -> list[str] | None:
    """Names by label from the ``classes`` list of the dataset an ``nc_benchmark`` was built from
    (torchvision's MNIST, CIFAR, ...), when its labels are the dataset's own; else None."""
    mapping = getattr(benchmark, "class_mapping", None)
    if mapping is not None and list(mapping) != list(range(len(mapping))):
        return None  # labels were renumbered by Avalanche (class_ids_from_zero_...)
    todo, seen = [getattr(benchmark, "original_train_dataset", None)], set()
    while todo:
        node = todo.pop(0)
        if node is None or id(node) in seen or len(seen) > 100:
            continue
        seen.add(id(node))
        names = getattr(node, "classes", None)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
        for attr in ("_flat_data", "_datasets", "datasets", "dataset"):
            child = getattr(node, attr, None)
            todo.extend(child if isinstance(child, (list, tuple)) else [child])
    return None


def stream_from_avalanche(
    benchmark,
    *,
    n_heldout: int = 0,
    name: str = "avalanche",
    image_size: int | None = None,
    class_names: Sequence[str] | None = None,
    attribute_space: AttributeSpace | None = None,
    class_codes: torch.Tensor | None = None,
    fine_grained_pairs: Sequence[tuple[int, int]] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
) -> Stream:
    """Any Avalanche benchmark as our ``Stream``, read once into memory through its eval transform.

    Images become uint8 ``(N, C, H, W)`` (float pixels must be in [0, 1]; grayscale stays one
    channel; ``image_size``: resized, antialiased). Categories are keyed by (task label, label), so a
    task-incremental benchmark whose labels restart in every task keeps its tasks' classes apart;
    they are renumbered in arrival order: the first experience's categories (sorted by label) get
    0..k-1, and so on. Each category must arrive in one experience (class-incremental; a benchmark
    of new instances of the same classes fails, naming the experience). The last ``n_heldout``
    categories of that order are never trained (their training images are dropped; an experience
    left empty goes) and are scored on the test set only; so are categories only the test stream
    (or ``heldout_test``) holds. The test set is the test stream's experiences, concatenated.

    ``class_names`` (by the benchmark's label; else the wrapped dataset's ``classes``, else
    ``class <label>``), ``attribute_space`` with ``class_codes`` (``(C, n_attributes)`` by label;
    else class-only) and ``fine_grained_pairs`` (label pairs) default to the benchmark's attributes
    of the same names (``STREAM_EXTRAS``, which ``to_avalanche`` sets).
    """
    if isinstance(n_heldout, bool) or not isinstance(n_heldout, int) or n_heldout < 0:
        raise ValueError(f"n_heldout must be an int >= 0, got {n_heldout!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be an int >= 1 or None, got {image_size!r}")
    given = {"class_names": class_names, "attribute_space": attribute_space, "class_codes": class_codes,
             "fine_grained_pairs": fine_grained_pairs}
    extras = {k: given[k] if given.get(k) is not None else getattr(benchmark, k, None) for k in STREAM_EXTRAS}
    if (extras["attribute_space"] is None) != (extras["class_codes"] is None):
        raise ValueError("attribute_space and class_codes come together (both or neither)")

    def read(dataset, where: str):
        return _read(dataset, where, image_size, batch_size, num_workers)

    # Training experiences: who arrives when.
    train_parts, order, arrived_in = [], [], {}
    for e, exp in enumerate(benchmark.train_stream):
        x, y, t = read(exp.dataset, f"train experience {e}")
        keys = _keys(y, t)
        repeated = [k for k in keys if k in arrived_in]
        if repeated:
            first = arrived_in[repeated[0]]
            raise ValueError(f"train experience {e} brings {len(repeated)} categories already in experience {first} "
                             f"(e.g. label {repeated[0][1]}, task {repeated[0][0]}): a stream needs every category in "
                             f"one experience (class-incremental); new instances of known classes (NI, NIC, domain "
                             f"streams such as CLEAR or CORe50's default nicv2_391) are not streams of new categories. "
                             f"Pick a class-incremental scenario (e.g. CORe50 scenario='nc')")
        arrived_in.update((k, e) for k in keys)
        order.append(keys)
        train_parts.append((x, y, t))
    flat = [k for keys in order for k in keys]
    if not flat:
        raise ValueError("the benchmark's train stream has no experiences")
    if n_heldout >= len(flat):
        raise ValueError(f"n_heldout={n_heldout} leaves no category to train: the train stream brings {len(flat)}; "
                         f"lower benchmark.n_heldout")

    test_parts = [read(exp.dataset, f"test experience {e}") for e, exp in enumerate(benchmark.test_stream)]
    if extras["heldout_test"] is not None:
        test_parts.append(read(extras["heldout_test"], "heldout_test"))
    if not test_parts:
        raise ValueError("the benchmark's test stream has no experiences")
    test_only = sorted({k for _, y, t in test_parts for k in _keys(y, t)} - set(flat))
    n_trained = len(flat) - n_heldout
    label_of = {k: i for i, k in enumerate(flat + test_only)}  # trained, then held out, then test-only

    def relabel(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tensor([label_of[k] for k in zip(t.tolist(), y.tolist())], dtype=torch.long)

    shapes = {tuple(x.shape[1:]) for x, _, _ in train_parts + test_parts}
    if len(shapes) > 1:
        raise ValueError(f"the experiences' images differ in shape ({sorted(shapes)}); set an image size "
                         f"(benchmark.image_size) to resize them all")
    train_x, train_y = [], []
    for x, y, t in train_parts:
        labels = relabel(y, t)
        keep = labels < n_trained  # held-out categories never train
        train_x.append(x if bool(keep.all()) else x[keep])  # no copy of a whole experience before the cat
        train_y.append(labels[keep])
    train_x, train_y = torch.cat(train_x), torch.cat(train_y)
    test_x, test_y = torch.cat([x for x, _, _ in test_parts]), torch.cat([relabel(y, t) for _, y, t in test_parts])

    keys = flat + test_only  # by our label
    several_tasks = len({t for t, _ in keys}) > 1
    names = extras["class_names"] if extras["class_names"] is not None else _find_class_names(benchmark)

    def name_of(t: int, y: int) -> str:
        base = str(names[y]) if names is not None and 0 <= y < len(names) else f"class {y}"
        return f"{base} (task {t})" if several_tasks else base

    codes, pairs = None, []
    if extras["attribute_space"] is not None:
        continuous = extras["attribute_space"].continuous  # float degrees in [0, 1], else value indices
        codes = torch.as_tensor(extras["class_codes"], dtype=torch.float32 if continuous else torch.long).cpu()
        if max(y for _, y in keys) >= len(codes):
            raise ValueError(f"class_codes has {len(codes)} rows; the benchmark has label {max(y for _, y in keys)}")
        codes = codes[torch.tensor([y for _, y in keys])]  # (C, n_attributes) by our label
    if extras["fine_grained_pairs"] and not several_tasks:
        by_label = {y: label_of[(t, y)] for t, y in keys}
        pairs = sorted(tuple(sorted((by_label[a], by_label[b]))) for a, b in extras["fine_grained_pairs"]
                       if a in by_label and b in by_label)
    experiences = [[label_of[k] for k in ks if label_of[k] < n_trained] for ks in order]
    return Stream(
        name=name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        experiences=[e for e in experiences if e],
        heldout=list(range(n_trained, len(keys))),
        class_names=[name_of(t, y) for t, y in keys],
        train_counts=torch.bincount(train_y, minlength=n_trained).tolist(),
        attribute_space=extras["attribute_space"],
        class_codes=codes,
        fine_grained_pairs=pairs,
    )


# --------------------------------------------------------------------------------------------
# classic benchmarks by name (the benchmark=avalanche config)
# --------------------------------------------------------------------------------------------


def classic_benchmark_names() -> list[str]:
    """The benchmarks of ``avalanche.benchmarks.classic`` (its public callables named in CamelCase)."""
    classic = _import_avalanche("avalanche.benchmarks.classic")
    return sorted(n for n in dir(classic) if n[:1].isupper() and callable(getattr(classic, n)))


def _classic_constructor(benchmark: str):
    classic = _import_avalanche("avalanche.benchmarks.classic")
    if not isinstance(benchmark, str) or not benchmark[:1].isupper() or not callable(getattr(classic, benchmark, None)):
        raise ValueError(f"config key benchmark.benchmark: {benchmark!r} is not a benchmark of "
                         f"avalanche.benchmarks.classic; known: {', '.join(classic_benchmark_names())}")
    return getattr(classic, benchmark)


def check_avalanche_settings(benchmark: str, args: dict | None = None, data_root: str | None = None,
                             n_heldout: int = 0, image_size: int | None = None, seed: int = 0) -> None:
    """Fail on a config ``avalanche_stream`` cannot build, naming the key; reads no data (any ``seed`` will do)."""
    if n_heldout < 0:
        raise ValueError(f"config key benchmark.n_heldout must be >= 0, got {n_heldout}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"config key benchmark.image_size must be >= 1 or null, got {image_size}")
    constructor = _classic_constructor(benchmark)
    params = inspect.signature(constructor).parameters
    known = [p for p in params if p not in RESERVED_ARGS]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in args or {}:
        if key in RESERVED_ARGS:
            instead = RESERVED_ARGS[key]
            raise ValueError(f"config key benchmark.args.{key}: " + (f"set {instead} instead" if instead else
                             "images are read raw (no transform); resize with benchmark.image_size"))
        if key not in params and not takes_any:
            raise ValueError(f"unknown config key benchmark.args.{key}: {benchmark} takes {known}")
    ours = {k: None for k in ("seed", "train_transform", "eval_transform") if k in params}
    try:
        inspect.signature(constructor).bind(**(args or {}), **ours)  # a required argument missing
    except TypeError as err:
        raise ValueError(f"config key benchmark.args: {err} ({benchmark} takes {known})") from None
    if data_root is not None and "dataset_root" not in params:
        raise ValueError(f"config key benchmark.data_root: {benchmark} takes no dataset_root; set it to null")


def _download_failure(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a failed download or a missing file."""
    for _ in range(20):  # a chain of causes, not a cycle
        if err is None:
            return False
        if isinstance(err, OSError) or "download" in str(err).lower():  # URLError, ConnectionError, FileNotFoundError
            return True
        err = err.__cause__ or err.__context__
    return False


def classic_benchmark(benchmark: str, args: dict | None = None, data_root: str | None = None, seed: int = 0):
    """The Avalanche benchmark ``avalanche.benchmarks.classic.<benchmark>(**args)``, built with raw
    images (no transform), ``seed`` and ``data_root`` as its ``dataset_root`` (None: Avalanche's
    default, ``~/.avalanche/data/<dataset>``). Data that are not on disk fail with a FileNotFoundError
    naming the benchmark and the folder (Avalanche would download them; there is no network here)."""
    check_avalanche_settings(benchmark, args, data_root, seed=seed)
    constructor = _classic_constructor(benchmark)
    params = inspect.signature(constructor).parameters
    kwargs = dict(args or {})
    for key, value in (("seed", seed), ("train_transform", None), ("eval_transform", None)):
        if key in params:
            kwargs[key] = value
    if benchmark == "CLEAR" and kwargs.get("evaluation_protocol", "streaming") == "streaming":
        kwargs.pop("seed")  # CLEAR asserts that its default (streaming) protocol gets no seed
    if data_root is not None:
        kwargs["dataset_root"] = os.path.expanduser(str(data_root))
    try:
        return constructor(**kwargs)
    except ImportError as err:
        raise ImportError(f"Avalanche benchmark {benchmark} needs the package {err.name or err}, which is not "
                          f"installed ({err})") from err
    except Exception as err:  # noqa: BLE001 - only download failures are translated; the rest re-raised
        if not _download_failure(err):
            raise
        where = (f"data_root={data_root!r}" if data_root is not None else
                 "Avalanche's default folder ~/.avalanche/data/<dataset> (benchmark.data_root=null)")
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FileNotFoundError(
            f"Avalanche benchmark {benchmark}: its data are not in {where}, and Avalanche could not download them "
            f"(there is no network here; {type(err).__name__}: {first_line}). Put the data set's files there "
            f"(Avalanche printed where to get them, if it knows) or point benchmark.data_root at the folder that "
            f"holds them") from err


def avalanche_stream(*, benchmark: str, args: dict | None = None, data_root: str | None = None, n_heldout: int = 0,
                     image_size: int | None = None, seed: int = 0) -> Stream:
    """The ``benchmark=avalanche`` config: a classic Avalanche benchmark by name as our stream
    (``classic_benchmark``, then ``stream_from_avalanche``), named after the benchmark."""
    check_avalanche_settings(benchmark, args, data_root, n_heldout, image_size, seed)
    bench = classic_benchmark(benchmark, args, data_root, seed)
    return stream_from_avalanche(bench, n_heldout=n_heldout, name=benchmark, image_size=image_size)
