"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

Every writer of the package (bank shards and manifests, run folders, results tables, caches) goes through
:func:`atomic_write_bytes`: a temporary sibling (``os.replace`` is atomic only within one file system),
fsynced before the rename, the folder fsynced after it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
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
