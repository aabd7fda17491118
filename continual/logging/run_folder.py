"""Run-folder helpers: git revision, atomic writes, an early writability check, a one-run-per-folder lock."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

__all__ = ["RunFolderError", "RunFolderLock", "git_revision", "prepare_run_dir", "source_digest",
           "write_text_atomic"]

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


class RunFolderLock:
    """One live run per run folder: an exclusive ``flock`` on ``<run_dir>/.lock``.

    ``acquire()`` raises ``RunFolderError`` naming the folder and the holder (pid, host, start time)
    when another live process holds it; ``release()`` (a no-op when not held) removes the file.
    Use as ``with RunFolderLock(run_dir): ...``.

    The kernel drops an ``flock`` when its holder dies, however it dies: a run killed with SIGKILL
    (or by the OOM killer, or a node reboot) leaves a ``.lock`` file but no lock, so running the same
    command again resumes instead of being refused. ``flock`` is unreliable on some network file
    systems (older NFS, some FUSE/CIFS mounts): there two hosts may both get the lock. Where
    ``flock`` is not supported at all, a warning says so and the run goes on unlocked.
    """

    NAME = ".lock"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this process in the file; ``RunFolderError`` when it is held."""
        if self._fd is not None:
            return
        while True:
            # No O_TRUNC: a refused process must leave the holder's pid, host and start time intact.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    warnings.warn(f"cannot lock run folder {self.run_dir} ({err.strerror or err}); running "
                                  f"without a lock: do not start a second run in this folder",
                                  RuntimeWarning, stacklevel=2)
                    return
                raise RunFolderError(
                    f"run folder {self.run_dir} is in use by another run ({holder}); nothing was changed "
                    f"in it. Wait for that run to finish, or choose another run folder (hydra.run.dir=...)"
                ) from None
            # A releasing holder unlinks the file before it unlocks, so the inode we locked may no
            # longer be the one the path names: then our lock guards nothing; open the path again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the file and drop the lock; a no-op when this object does not hold it."""
        if self._fd is None:
            return
        # Unlink while still holding the lock (see ``acquire``), so a finished folder keeps no .lock.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunFolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """The holder a lock file names, for the refusal message."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "its pid, host and start time are not written yet"
