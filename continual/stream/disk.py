"""Images that stay on disk: a stream larger than memory behind the same sources, learner and report.

The default keeps every image resident (``Stream.train_x`` a uint8 tensor on the device): indexing it
is the fastest loader there is. With ``data.storage=disk``, or ``auto`` when the images would not fit,
``store_stream`` writes them once to ``.npy`` files in the cache directory and puts a ``DiskImages`` in
their place. It looks enough like a uint8 tensor for the few places that index images (the sources,
evaluation, the anytime probe): ``x[idx]`` reads those rows and returns a resident tensor on the device
the stream was moved to; ``len``, ``shape``, ``dtype``, ``device`` and ``to(device)`` behave as for the
tensor, except that ``to`` keeps the rows on disk and only changes where the rows it reads go. Nothing
else changes: the learner gets the same batches, the replay memory keeps its own resident copy of
what it stores, and the report card is the in-memory path's, bit for bit (``tests/test_disk_stream.py``).

How rows are read: ``np.take`` from a read-only memory map of the file into a fresh tensor, one C
loop per batch (70-130 us for 32 images inside the training loop here; one ``os.preadv`` per row took
about twice that, and cost a one-layer model 9 % of its throughput against 1 % now). The pages of a
mapped file count in the process's resident set (RSS) while mapped, so a map left alone creeps up to
the file's size over an epoch of random batches (the kernel may drop them under pressure, but RSS
measurements and limits, a scheduler's per-job cap, count them: 364 MB for a 307 MB stream). So every
``MAPPED_LIMIT`` bytes of rows read, the pages are unmapped (``madvise(MADV_DONTNEED)``; they stay in
the page cache, which serves the next reads from RAM when there is RAM to spare), and a larger read
goes in parts: the file adds at most about twice ``MAPPED_LIMIT`` to the resident set beside the rows
read (91 MB in all for that stream's pass, learner's end-of-experience copies included), as long as a
page fault maps at most ``FAULT_SPAN`` around a row (the kernel maps a whole page-cache folio: 128 KiB
measured here; one mapping larger folios would keep more between drops). Rows are read in the order
asked for: sorting a random batch would not make its reads contiguous, and runs (an experience's
images, a batch of test images) are contiguous already. Every read is a host read: indices on a CUDA
device are brought to the host (a sync), so the sources keep their indices on the host for a stream
on disk (``index_device``).

What stays resident in a run on disk: labels and attribute codes (a few bytes per image), the model,
the replay memory, the batch, and at an experience's end that experience's images (the learner's
``end_experience`` takes them whole to choose what to remember). ``Stream.novel`` (Omniglot's
never-trained alphabets, small) stays resident.

What this does not do: the stream is still built in memory, then written (once: files are keyed by
a sha256 of their content, like the render cache, and reused), and the resident copy is released
before training. A data set whose building itself does not fit needs a builder that writes chunks as
it makes them (``write_images`` takes any iterable of chunks); the world and Omniglot builders do not.

``auto``: disk when the images (train and test) exceed ``data.memory_cap`` bytes, or, with no cap,
``AUTO_SHARE`` of the memory available to them: on the host, what ``/proc/meminfo`` calls available
plus the images themselves (they are resident while this is decided); on a CUDA device, its free memory.
"""

from __future__ import annotations

import copy
import hashlib
import math
import mmap
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from continual.stream.cache import atomic_write
from continual.stream.stream import Stream

STORAGES = ("memory", "disk", "auto")
MAPPED_LIMIT = 16 * 2**20  # bytes of the file mapped into the process before its pages are dropped
FAULT_SPAN = 256 * 2**10  # bytes a page fault may map around the row read (128 KiB measured on Linux 6.18)
AUTO_SHARE = 0.5  # data.storage=auto without a cap: disk when the images take more than this share of the room
DEFAULT_DIR = ".cache/continual"  # where files go when the benchmark has no cache_dir (or $CONTINUAL_CACHE)
_HASH_CHUNK = 64 * 2**20  # bytes hashed per update: bounds the temporaries of a large tensor's digest


def _read_header(path: Path) -> tuple[torch.Size, int]:
    """Shape and data offset of a C-ordered uint8 ``.npy`` file; ``ValueError`` for anything else."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except Exception as err:  # noqa: BLE001 - any unreadable header is the same answer
            raise ValueError(f"{path} is not a .npy file ({type(err).__name__}: {err})") from None
        offset, size = f.tell(), os.fstat(f.fileno()).st_size
    if dtype != np.uint8 or fortran or len(shape) < 1:
        raise ValueError(f"{path} holds {dtype} {shape} (fortran order: {fortran}), expected C-ordered uint8 rows")
    if size != offset + math.prod(shape):
        raise ValueError(f"{path} has {size - offset} bytes of data, expected {math.prod(shape)} for {shape}")
    return torch.Size(shape), offset


class DiskImages:
    """uint8 images ``(N, ...)`` in a ``.npy`` file, indexed like a tensor: ``x[idx]`` reads those rows.

    ``device`` is where the rows read go (``to`` changes only that); the file stays where it is.
    """

    dtype = torch.uint8
    index_device = torch.device("cpu")  # reads happen on the host: index tensors belong there

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self.shape, self._offset = _read_header(self.path)
        self.device = torch.device(device)
        self._row_bytes = math.prod(self.shape[1:])
        # Upper bound of the mapped bytes one row read brings into the resident set: the pages it spans,
        # or what the kernel maps around a fault (FAULT_SPAN), whichever is more.
        self._row_span = max((-(-self._row_bytes // mmap.PAGESIZE) + 1) * mmap.PAGESIZE, FAULT_SPAN)
        self._map: mmap.mmap | None = None  # mapped on the first read (and again after unpickling)
        self._rows_of_map: np.ndarray | None = None  # (N, row bytes) view of the map
        self._mapped = 0  # bytes possibly mapped in since the pages were last dropped

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, shape={tuple(self.shape)}, device={self.device})"

    def to(self, device: torch.device | str) -> "DiskImages":
        """The same file, its rows read onto ``device`` from now on (a map of its own)."""
        moved = copy.copy(self)
        moved.device, moved._map, moved._rows_of_map, moved._mapped = torch.device(device), None, None, 0
        return moved

    def cpu(self) -> "DiskImages":
        """``to("cpu")``: rows read onto the host; nothing is loaded."""
        return self.to("cpu")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None, "_rows_of_map": None, "_mapped": 0}  # a map is this process's

    def _rows_on_disk(self) -> np.ndarray:
        """``(N, row bytes)`` uint8 rows of the file, mapped read-only (on the first call)."""
        if self._rows_of_map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._rows_of_map = np.frombuffer(self._map, dtype=np.uint8, count=self.nbytes,
                                              offset=self._offset).reshape(len(self), self._row_bytes)
        return self._rows_of_map

    def _drop_pages(self) -> None:
        """Unmap the file's pages from this process (the page cache keeps them)."""
        if hasattr(self._map, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)
        else:  # no madvise here: a new map next time
            self._map = self._rows_of_map = None
        self._mapped = 0

    def _rows(self, index: Any) -> np.ndarray:
        """``index`` as host int64 row numbers in [0, N): ``(B,)``, or ``()`` for a single int."""
        n = len(self)
        if isinstance(index, slice):
            return np.arange(n)[index]
        rows = torch.as_tensor(index).cpu()
        if rows.numel() == 0:
            rows = rows.long().reshape(0)  # [] is float to torch
        if rows.dtype == torch.bool:
            if rows.shape != (n,):
                raise IndexError(f"a boolean index must have shape ({n},), got {tuple(rows.shape)}")
            rows = rows.nonzero().squeeze(1)
        if rows.ndim > 1 or rows.is_floating_point() or rows.is_complex():
            raise IndexError(f"DiskImages takes an int, a slice or a 1-D index of ints or bools, got {rows.dtype} "
                             f"{tuple(rows.shape)}")
        rows = rows.long()
        if rows.numel():
            low, high = (int(v) for v in torch.aminmax(rows))
            if low < -n or high >= n:
                raise IndexError(f"index out of range for {n} rows (min {low}, max {high})")
            if low < 0:
                rows = torch.where(rows < 0, rows + n, rows)
        return rows.numpy()

    def __getitem__(self, index: Any) -> torch.Tensor:
        """The rows ``index`` asks for, read into a new tensor on ``self.device``."""
        rows = self._rows(index)
        flat = rows.reshape(-1)
        # From torch's allocator: aligned as a resident tensor's rows are (numpy's buffers need not be).
        out = torch.empty((len(flat), self._row_bytes), dtype=torch.uint8)  # (B, row bytes)
        buffer = out.numpy()
        part = max(1, MAPPED_LIMIT // self._row_span)  # rows per read: a large read goes in parts
        for start in range(0, len(flat), part):
            stop = min(start + part, len(flat))
            # mode="clip": the rows were checked above; "raise" would copy through a temporary.
            np.take(self._rows_on_disk(), flat[start:stop], axis=0, out=buffer[start:stop], mode="clip")
            self._mapped += (stop - start) * self._row_span
            if self._mapped >= MAPPED_LIMIT:
                self._drop_pages()
        return out.view(*rows.shape, *self.shape[1:]).to(self.device)


def write_images(path: str | os.PathLike, chunks: Iterable[torch.Tensor], shape: tuple[int, ...]) -> DiskImages:
    """Write uint8 ``chunks`` (consecutive rows, ``shape[0]`` in all) as one ``.npy`` file at ``path``.

    One chunk is resident at a time. The file appears complete or not at all: the rows go to a
    temporary file in the same directory, renamed over ``path`` once flushed to disk.
    """
    shape = tuple(int(s) for s in shape)

    def write(f) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        rows = 0
        for chunk in chunks:
            if chunk.dtype != torch.uint8 or tuple(chunk.shape[1:]) != shape[1:]:
                raise ValueError(f"chunks must be uint8 (n, {', '.join(map(str, shape[1:]))}), "
                                 f"got {chunk.dtype} {tuple(chunk.shape)}")
            f.write(memoryview(chunk.detach().cpu().contiguous().numpy()).cast("B"))
            rows += len(chunk)
        if rows != shape[0]:
            raise ValueError(f"chunks hold {rows} rows, the shape says {shape[0]}")

    atomic_write(path, write)
    return DiskImages(path)


def content_key(images: torch.Tensor) -> str:
    """Hex sha256 over the shape and bytes of a uint8 tensor."""
    host = images.detach().cpu().contiguous()
    digest = hashlib.sha256(f"uint8 {tuple(host.shape)}".encode())
    flat = host.view(-1).numpy()
    for start in range(0, len(flat), _HASH_CHUNK):
        digest.update(memoryview(flat[start:start + _HASH_CHUNK]))
    return digest.hexdigest()


def to_disk(images: torch.Tensor | DiskImages, directory: str | os.PathLike) -> DiskImages:
    """``images`` as a ``DiskImages`` in ``directory`` (same device), written unless a file of the same
    content is there already; a file there that is unreadable or of another shape is written again."""
    if isinstance(images, DiskImages):
        return images
    if images.dtype != torch.uint8:
        raise ValueError(f"only uint8 images go to disk, got {images.dtype}")
    path = Path(directory) / f"images-{content_key(images)[:16]}.npy"
    if path.exists():
        try:
            found = DiskImages(path, images.device)
            if found.shape == images.shape:
                return found
            warnings.warn(f"{path} holds {tuple(found.shape)}, expected {tuple(images.shape)}; writing it again",
                          stacklevel=2)
        except ValueError as err:
            warnings.warn(f"unreadable image file {path} ({err}); writing it again", stacklevel=2)
    return write_images(path, [images], images.shape).to(images.device)


def check_data_config(data: dict | None) -> None:
    """``data.storage`` one of STORAGES; ``data.memory_cap`` None or a positive number of bytes."""
    from continual.config import ConfigError
    from continual.memory.budget import parse_bytes

    data = data or {}
    storage = data.get("storage", "memory")
    if storage not in STORAGES:
        raise ConfigError(f"config key data.storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    if data.get("memory_cap") is not None and parse_bytes(data["memory_cap"], "data.memory_cap") <= 0:
        raise ConfigError(f"config key data.memory_cap must be > 0 bytes (or null), got {data['memory_cap']!r}")


def _available_ram() -> int | None:
    """Bytes of host memory available to new allocations (MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_storage(data: dict | None, nbytes: int, device: torch.device) -> tuple[str, str]:
    """``("memory" | "disk", why)`` for images of ``nbytes`` bytes that would be resident on ``device``."""
    from continual.memory.budget import parse_bytes

    data = data or {}
    storage = data.get("storage", "memory")
    if storage != "auto":
        return storage, f"data.storage={storage}"
    if data.get("memory_cap") is not None:
        cap, of = parse_bytes(data["memory_cap"], "data.memory_cap"), "data.memory_cap"
    else:
        if device.type == "cuda":
            room = torch.cuda.mem_get_info(device)[0]  # free bytes on the device
        else:
            available = _available_ram()
            room = math.inf if available is None else available + nbytes  # the images are resident now
        cap, of = AUTO_SHARE * room, f"{AUTO_SHARE:g} of the {device.type} memory available"
    choice = "disk" if nbytes > cap else "memory"
    return choice, f"data.storage=auto: {nbytes / 1e6:.0f} MB of images {'>' if choice == 'disk' else '<='} " \
                   f"{cap / 1e6:.0f} MB ({of})"


def store_stream(stream: Stream, data: dict | None, device: torch.device, directory: str | os.PathLike | None,
                 print_fn: Callable[[str], None] = print) -> Stream:
    """``stream`` with its train and test images on disk when ``data`` (the ``data`` config) says so,
    else ``stream`` itself. Files go to ``directory`` (None: ``$CONTINUAL_CACHE`` or ``DEFAULT_DIR``)."""
    nbytes = stream.train_x.nbytes + stream.test_x.nbytes
    storage, why = choose_storage(data, nbytes, device)
    if storage == "memory":
        return stream
    if stream.train_x.dtype != torch.uint8:  # feature vectors (GBU): the disk path stores uint8 images only
        if (data or {}).get("storage") == "disk":
            raise ValueError(f"data.storage=disk keeps uint8 images on disk; stream {stream.name!r} holds "
                             f"{stream.train_x.dtype} inputs of shape {tuple(stream.train_x.shape[1:])} "
                             f"(feature vectors): use data.storage=memory")
        print_fn(f"{why}, but stream {stream.name!r} holds {stream.train_x.dtype} feature vectors, which stay in "
                 f"memory (the disk path stores uint8 images only)")
        return stream
    directory = directory or os.environ.get("CONTINUAL_CACHE", DEFAULT_DIR)
    stream = replace(stream, train_x=to_disk(stream.train_x, directory), test_x=to_disk(stream.test_x, directory))
    print_fn(f"images on disk ({why}): {stream.train_x.path}, {stream.test_x.path}")
    return stream


__all__ = ["AUTO_SHARE", "DiskImages", "STORAGES", "check_data_config", "choose_storage", "content_key",
           "store_stream", "to_disk", "write_images"]
