"""Atomic file writes, run-directory locks and content checksums.

Every artefact hti-rl writes goes through :func:`atomic_write`: the bytes land in a temporary file
in the same directory, are flushed to disk, and only then replace the target with ``os.replace``.
A writer killed at any point leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from hti_rl.errors import HTIError, RunLockedError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    :param path: final destination.
    :param mode: ``"wb"`` or ``"w"``.
    :raises HTIError: when the directory is not writable or the disk is full; the target is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError as exc:
        raise HTIError(
            f"cannot write {path}: no write permission on {path.parent}. "
            "Choose another run directory (--run-dir) or fix the permissions."
        ) from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno == errno.ENOSPC:
            raise HTIError(
                f"disk full while writing {path}; the previous version (if any) is intact. "
                "Free some space and run the command again."
            ) from exc
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def sha256_bytes(*chunks: bytes) -> str:
    """Hex SHA-256 of the concatenated chunks."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class RunLock:
    """An exclusive lock on a run directory (``<dir>/.lock``), held for the life of a process.

    Uses ``fcntl.flock``, so a killed holder releases it automatically.

    :param run_dir: directory to lock.
    :param what: what the holder is doing, shown to a second process.
    """

    def __init__(self, run_dir: str | os.PathLike, what: str = "hti-rl"):
        self.path = Path(run_dir) / ".lock"
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by {holder}. Wait for it to finish, or stop it "
                "(a killed process releases the lock) and run the command again."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.what} (pid {os.getpid()})".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
