"""Disk cache of rendered worlds, keyed by everything that determines the pixels."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import IO, Callable

import torch

from continual.stream.render import RENDER_VERSION, RenderSettings, render


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """``write(file)`` to ``path`` so that readers only ever see the old file or the complete new one.

    The data goes to a temporary file in the same directory (same file system, so the final
    ``os.replace`` is atomic), flushed to disk first; a crash mid-write leaves at most a stray
    temporary file, and an exception in ``write`` removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        # NamedTemporaryFile is private (0600); a cache may be shared, so publish it world-readable.
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, path)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def cache_key(codes: torch.Tensor, seed: int, settings: RenderSettings) -> str:
    """Hex sha256 over the renderer version, the pixel-relevant settings, the seed and the codes."""
    codes = torch.as_tensor(codes).to(device="cpu", dtype=torch.int64).contiguous()
    # chunk_size is left out: the renderer's output does not depend on it, so worlds rendered with
    # different memory bounds share one file.
    header = {
        "render_version": RENDER_VERSION,
        "settings": settings.pixel_fields(),
        "seed": int(seed),
        "codes_shape": list(codes.shape),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update(codes.numpy().tobytes())
    return digest.hexdigest()


def cache_path(codes: torch.Tensor, seed: int, settings: RenderSettings, cache_dir: str | os.PathLike) -> Path:
    """The file that holds (or will hold) this world."""
    return Path(cache_dir) / f"world-{cache_key(codes, seed, settings)[:16]}.pt"


def _load(path: Path, expected_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached images, or None (with a warning) when the file is unreadable or not what we expect."""
    try:
        images = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # any corruption (truncation, bad zip, bad pickle) means: render again
        warnings.warn(f"unreadable world cache {path} ({type(error).__name__}: {error}); re-rendering", stacklevel=3)
        return None
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape) != expected_shape:
        found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        warnings.warn(f"world cache {path} holds {found}, expected uint8 {expected_shape}; re-rendering", stacklevel=3)
        return None
    return images


def cached_render(
    codes: torch.Tensor, seed: int, settings: RenderSettings, cache_dir: str | os.PathLike | None
) -> torch.Tensor:
    """``render(codes, seed, settings)``, read from / written to ``cache_dir`` when it is not None.

    A missing, corrupt or mismatching cache file is (re)rendered and overwritten; it never fails the run.
    """
    if cache_dir is None:
        return render(codes, seed, settings)
    path = cache_path(codes, seed, settings, cache_dir)
    size = settings.image_size
    expected = (int(torch.as_tensor(codes).shape[0]), 3, size, size)
    if path.exists():
        images = _load(path, expected)
        if images is not None:
            return images
    images = render(codes, seed, settings)
    atomic_torch_save(images, path)
    return images


__all__ = ["atomic_torch_save", "cache_key", "cache_path", "cached_render"]
