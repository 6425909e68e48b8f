"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

Every writer of the package (bank shards and manifests, run folders, results tables, caches) goes through
:func:`atomic_write_bytes`: a temporary sibling (``os.replace`` is atomic only within one file system),
fsynced before the rename, the folder fsynced after it. :func:`file_lock` serialises processes that
read-modify-write the same files (a bank being filled, a results file several runs extend).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """File-like wrapper that hashes what passes through, so a checksum needs no second read."""

    def __init__(self, fh) -> None:
        self._fh = fh
        self._h = hashlib.sha256()

    def write(self, data) -> int:
        self._h.update(data)
        return self._fh.write(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def __getattr__(self, name: str):  # np.save, torch.save, savefig may look for seek/tell
        return getattr(self._fh, name)


def atomic_write_bytes(path: str | Path, write) -> str:
    """Write a file atomically via ``write(fh)`` (a binary file object); returns the file's SHA-256."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            hashing = _HashingWriter(fh)
            write(hashing)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return hashing.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> str:
    """Write UTF-8 text atomically; returns the file's SHA-256."""
    data = text.encode("utf-8")
    return atomic_write_bytes(path, lambda fh: fh.write(data))


@contextlib.contextmanager
def file_lock(lock_path: str | Path, *, wait_s: float | None = None, poll_s: float = 0.5, what: str = ""):
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``; a no-op elsewhere).

    Waits while another process holds it, saying so once on stderr (``what`` names the work it waits for).

    Raises:
        TimeoutError: the lock was still held after ``wait_s`` seconds (``None``: wait as long as it takes).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "w") as fh:
        deadline, told = None if wait_s is None else time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{lock_path} was still locked after {wait_s:.0f} s") from None
                if not told:
                    print(f"waiting for another process{' ' + what if what else ''} ({lock_path})", file=sys.stderr,
                          flush=True)
                    told = True
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
