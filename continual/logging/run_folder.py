"""Run-folder helpers: git revision, atomic writes, an early writability check."""

from __future__ import annotations

import hashlib

import os
import subprocess
import tempfile
from pathlib import Path

__all__ = ["RunFolderError", "git_revision", "prepare_run_dir", "source_digest", "write_text_atomic"]

_GIT_TIMEOUT_S = 5.0


class RunFolderError(ValueError):
    """The run folder cannot be created or written to."""


def _git(args: list[str], cwd: str | Path | None) -> str | None:
    """Run one git command; None on any failure (no git, no repo, timeout)."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_revision(repo_dir: str | Path | None = None) -> dict[str, str | bool | None]:
    """Return ``{"commit": sha or None, "dirty": bool or None}`` for a repo.

    Never raises: a missing git binary, a folder outside any repo, or a repo
    without commits yields None fields. ``dirty`` counts untracked files too,
    since a new unversioned source file changes what a run executed.
    """
    if repo_dir is None:
        # The package's own checkout, not whatever folder the user launched from.
        repo_dir = Path(__file__).resolve().parent
    head = _git(["rev-parse", "--verify", "HEAD"], repo_dir)
    status = _git(["status", "--porcelain"], repo_dir)
    return {
        "commit": head.strip() if head else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def source_digest(package_dir: str | Path) -> str:
    """sha256 over the relative paths and contents of every ``*.py`` below ``package_dir``.

    Names the code a run executed even where git cannot (a copied working tree, a stale ``.git``,
    an installed package): two runs with the same digest ran the same package source.
    """
    root = Path(package_dir)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half.

    Creates missing parent folders. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file must live in the same folder for os.replace to be atomic.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def prepare_run_dir(path: str | Path) -> Path:
    """Create the run folder and prove it is writable; return its absolute path.

    Fails before any training starts (rather than at the first checkpoint)
    with ``RunFolderError`` naming the folder and the fix.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A probe write is the only reliable test: os.access ignores ACLs,
        # read-only mounts and root's privileges.
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunFolderError(
            f"run folder {str(path)!r} is not writable ({type(exc).__name__}: {reason}); "
            "choose another run folder or fix the permissions of this one"
        ) from exc
    return path.resolve()
