"""Decode an offline W&B run (``run-<id>.wandb``) without a network.

The file is a LevelDB-style record log: a 7-byte file header (``:W&B``, a
2-byte magic ``0xBEE1`` and a version byte), then 32 KiB blocks of chunks,
each with a 7-byte header ``crc32(4) | length(2, LE) | type(1)``. Chunks of
one record are FULL, or FIRST, MIDDLE..., LAST. Each record is a serialized
``wandb.proto.wandb_internal_pb2.Record``.

Checked against wandb 0.31: the checksum is plain CRC-32 (zlib, IEEE) over
the type byte followed by the payload, unmasked -- not LevelDB's masked
CRC-32C.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "WandbRecordError",
    "find_offline_run_file",
    "is_complete",
    "iter_records",
    "read_offline_run",
]

_BLOCK_SIZE = 32 * 1024
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_FILE_IDENT = b":W&B"
_FILE_MAGIC = 0xBEE1
_FILE_VERSION = 0

_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class WandbRecordError(ValueError):
    """The file is not a W&B record log, or it is corrupt."""


def _chunks(data: bytes, path: str) -> Iterator[tuple[int, bytes, int]]:
    """Yield (type, payload, offset) for each chunk, walking the 32 KiB blocks."""
    pos = _FILE_HEADER.size  # the file header sits at the start of block 0
    size = len(data)
    while pos < size:
        left_in_block = _BLOCK_SIZE - pos % _BLOCK_SIZE
        if left_in_block < _CHUNK_HEADER.size:
            # The writer zero-pads a block tail too short for a chunk header.
            pos += left_in_block
            continue
        if pos + _CHUNK_HEADER.size > size:
            return  # truncated header: the writer died mid-write
        crc, length, ctype = _CHUNK_HEADER.unpack_from(data, pos)
        start = pos + _CHUNK_HEADER.size
        if ctype == 0 and length == 0:
            # Zero fill (pre-allocated or padded space): nothing more in this block.
            pos += left_in_block
            continue
        if length > left_in_block - _CHUNK_HEADER.size:
            raise WandbRecordError(f"{path}: chunk at byte {pos} overruns its block")
        if start + length > size:
            return  # truncated payload: the writer died mid-write
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(bytes([ctype]))) != crc:
            raise WandbRecordError(f"{path}: checksum mismatch in chunk at byte {pos}")
        yield ctype, payload, pos
        pos = start + length


def iter_records(path: str | Path) -> Iterator[Any]:
    """Yield every ``Record`` message of an offline ``.wandb`` file, in order.

    A truncated tail (a run killed mid-write) ends the iteration quietly, as
    LevelDB readers do; a bad header or checksum raises ``WandbRecordError``.
    """
    # Imported here so that reading the framing does not need wandb.
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    data = path.read_bytes()
    if len(data) < _FILE_HEADER.size:
        raise WandbRecordError(f"{path}: too short to be a W&B record log")
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != _FILE_IDENT or magic != _FILE_MAGIC:
        raise WandbRecordError(f"{path}: not a W&B record log (bad file header {data[:7]!r})")
    if version != _FILE_VERSION:
        raise WandbRecordError(f"{path}: unsupported W&B record log version {version}")

    pending: list[bytes] | None = None
    for ctype, payload, offset in _chunks(data, str(path)):
        if ctype == _FULL:
            if pending is not None:
                raise WandbRecordError(f"{path}: unfinished record before byte {offset}")
            message = payload
        elif ctype == _FIRST:
            if pending is not None:
                raise WandbRecordError(f"{path}: unfinished record before byte {offset}")
            pending = [payload]
            continue
        elif ctype in (_MIDDLE, _LAST):
            if pending is None:
                raise WandbRecordError(f"{path}: record continuation without start at byte {offset}")
            pending.append(payload)
            if ctype == _MIDDLE:
                continue
            message, pending = b"".join(pending), None
        else:
            raise WandbRecordError(f"{path}: unknown chunk type {ctype} at byte {offset}")
        record = pb.Record()
        record.ParseFromString(message)
        yield record


def is_complete(path: str | Path) -> bool:
    """True once the log holds the run's exit record, i.e. wandb closed it.

    ``run.finish()`` in wandb 0.31 returns before wandb-core has flushed the
    file (it can still be the bare 7-byte header), so readers poll this.
    """
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in iter_records(path))
    except (OSError, WandbRecordError):
        return False


def _item_path(item: Any) -> list[str]:
    # wandb 0.31 writes most keys as a one-element ``nested_key`` and only some
    # as ``key``; a longer ``nested_key`` is a path into nested dicts.
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _json_value(item: Any) -> Any:
    return json.loads(item.value_json) if item.value_json else None


def _history_value(item: Any) -> Any:
    # 0.31 may write a typed scalar instead of (or beside) value_json.
    kind = item.WhichOneof("value")
    if kind is None:
        return _json_value(item)
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def _remove_path(target: dict[str, Any], path: list[str]) -> None:
    for part in path[:-1]:
        target = target.get(part)
        if not isinstance(target, dict):
            return
    target.pop(path[-1], None)


def _apply_updates(target: dict[str, Any], record: Any) -> None:
    """Apply a ConfigRecord or SummaryRecord (updates, then removals)."""
    for item in record.update:
        _set_path(target, _item_path(item), _json_value(item))
    for item in record.remove:
        _remove_path(target, _item_path(item))


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """Decode an offline run file into config, history and summary.

    Returns ``{"run": {...}, "config": {...}, "history": [row, ...],
    "summary": {...}, "artifacts": [{"name", "type", "files", "metadata"}, ...]}``. Config drops wandb's own ``_wandb`` entry; history
    rows keep wandb's ``_step``, ``_runtime`` and ``_timestamp``; media
    (tables, images) appear as the JSON stubs wandb writes (``{"_type": ...}``).
    """
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    artifacts: list[dict[str, Any]] = []
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = {
                "id": r.run_id,
                "project": r.project,
                "entity": r.entity,
                "group": r.run_group,
                "name": r.display_name,
                "tags": list(r.tags),
                "job_type": r.job_type,
                "resumed": r.resumed,
            }
            _apply_updates(config, r.config)
            _apply_updates(summary, r.summary)
        elif kind == "config":
            _apply_updates(config, record.config)
        elif kind == "summary":
            _apply_updates(summary, record.summary)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_path(row, _item_path(item), _history_value(item))
            history.append(row)
        elif kind == "artifact":
            a = record.artifact
            artifacts.append({"name": a.name, "type": a.type, "files": [c.path for c in a.manifest.contents],
                              "metadata": json.loads(a.metadata) if a.metadata else {}})
    config.pop("_wandb", None)
    return {"run": run, "config": config, "history": history, "summary": summary, "artifacts": artifacts}


def find_offline_run_file(run_dir: str | Path) -> Path:
    """Locate ``wandb/offline-run-*/run-*.wandb`` under a run folder.

    With several offline runs (e.g. a resumed run) the newest one is returned.
    """
    run_dir = Path(run_dir)
    # Folder names start with a per-second timestamp; mtime breaks ties.
    candidates = sorted(
        run_dir.glob("wandb/offline-run-*/run-*.wandb"),
        key=lambda p: (p.parent.name[: len("offline-run-YYYYmmdd_HHMMSS")], p.stat().st_mtime),
    )
    if not candidates:
        raise FileNotFoundError(
            f"no offline W&B run under {run_dir} (looked for "
            f"{run_dir / 'wandb' / 'offline-run-*' / 'run-*.wandb'}); was the run "
            "logged with mode='offline' and dir set to this folder?"
        )
    return candidates[-1]
