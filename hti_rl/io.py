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
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from hti_rl.errors import HTIError, RunLockedError

# errno values that mean "this location cannot be written" and "the storage is full"
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_A_DIRECTORY = {errno.ENOTDIR, errno.EEXIST}  # mkdir or open below a path that is a file
_USER_FAULTS = _NO_PERMISSION | _NO_SPACE | _NOT_A_DIRECTORY


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    :param path: final destination.
    :param mode: ``"wb"`` or ``"w"``.
    :raises HTIError: when the directory is not writable or the disk is full; the target is untouched.
    """
    import fcntl

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno not in _USER_FAULTS:
            raise
        raise _user_error(exc, path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while writing: a sweeper leaves a live writer's file alone
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        cause = _storage_cause(exc)
        if cause is not None:
            raise _user_error(cause, path) from exc
        raise


STALE_AFTER_S = 10.0
"""A temp file untouched for this long, and locked by no writer, was left by a killed writer."""


def sweep_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files that writers of ``path`` killed mid-write left behind.

    A file is removed only when no live writer holds its lock (:func:`atomic_write` locks its temp
    file while writing) and it is older than :data:`STALE_AFTER_S`; symbolic links are left alone.

    :return: the files removed.
    """
    import fcntl
    import glob
    import time

    path = Path(path)
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if candidate.is_symlink() or time.time() - candidate.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            candidate.unlink()
            removed.append(candidate)
        except OSError:  # a live writer holds it, or it is gone already
            pass
        finally:
            os.close(fd)
    return removed


def _storage_cause(exc: BaseException) -> OSError | None:
    """The OS error behind a failed write that the user can act on: permission denied (raised here), or
    a full disk anywhere in the chain (torch.save, for one, reports it as a RuntimeError)."""
    if isinstance(exc, OSError) and exc.errno in _NO_PERMISSION:
        return exc
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _user_error(exc: OSError, path: Path) -> HTIError:
    """A full disk, a refused write of ``path`` or a file where a directory should be -> the :class:`HTIError` that says what to do."""
    if exc.errno in _NOT_A_DIRECTORY:
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        return HTIError(f"cannot write {path}: {blocker} is a file, not a directory. "
                        "Choose another run directory (--run-root) or move that file.")
    if exc.errno in _NO_SPACE:
        return HTIError(
            f"disk full while writing {path} ({exc.strerror}); the previous version (if any) is intact. "
            "Free some space (or choose another --run-root) and run the command again."
        )
    return HTIError(
        f"cannot write {path}: no write permission on {_first_existing(path.parent)} ({exc.strerror}). "
        "Choose another run directory (--run-root) or fix the permissions."
    )


def _first_existing(directory: Path) -> Path:
    """The nearest existing ancestor of ``directory`` (the one whose permissions matter)."""
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    return directory


def check_writable(directory: str | os.PathLike) -> None:
    """Create ``directory`` if needed and check that a file can be written in it, before work that
    would fail at its first write (TensorBoard logs open their files deep inside training).

    :raises HTIError: naming the directory and the fix.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        if exc.errno not in _USER_FAULTS:
            raise
        raise _user_error(exc, directory / "events") from exc


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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
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

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlinked .lock would make us truncate and write its target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise HTIError(
                    f"{self.path} is a symbolic link; hti-rl writes only its own lock file there and will not follow it. "
                    "Remove the link and run the command again."
                ) from None
            if exc.errno not in _USER_FAULTS:
                raise
            raise _user_error(exc, self.path) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise HTIError(f"{self.path} is not a regular file; remove it and run the command again.")
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
