"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

Every writer of the package (bank shards and manifests, run folders, results tables, caches) goes through
:func:`atomic_write_bytes`: a temporary sibling (``os.replace`` is atomic only within one file system),
fsynced before the rename, the folder fsynced after it. :func:`file_lock` serialises processes that
read-modify-write the same files (a bank being filled, a results file several runs extend).
:func:`save_folder` does the same for a whole folder (a cached model): it appears complete or not at all.

Files and folders are created with the permissions the user's umask gives (``0o666`` / ``0o777`` minus the
umask), as ``open`` would, not the ``0o600`` / ``0o700`` of :mod:`tempfile`: a cache shared between users (or
Ray workers running as another user) must stay readable to them.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
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


def current_umask() -> int:
    """The process's umask (read without changing it where ``/proc`` allows; else set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, *, folder: bool = False) -> None:
    """Give ``path`` (made by :mod:`tempfile`, so ``0o600`` / ``0o700``) the mode ``open`` / ``mkdir`` would."""
    if os.name == "posix":
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def honour_umask_tree(folder: str | Path) -> None:
    """:func:`honour_umask` for ``folder`` and everything under it: for what a library wrote with modes of its own
    (safetensors creates its files ``0o600``)."""
    folder = Path(folder)
    honour_umask(folder, folder=True)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            honour_umask(path, folder=path.is_dir())


def atomic_write_bytes(path: str | Path, write) -> str:
    """Write a file atomically via ``write(fh)`` (a binary file object); returns the file's SHA-256."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        honour_umask(tmp)
        with os.fdopen(fd, "wb") as fh:
            hashing = _HashingWriter(fh)
            write(hashing)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a write that failed (a full disk) names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return hashing.hexdigest()


def atomic_write_serialised(path: str | Path, dump) -> str:
    """Write a file atomically via ``dump(buffer)`` (e.g. ``lambda b: torch.save(obj, b)``), serialised in memory
    first: a failed write (a full disk) is then the ``OSError`` it is, where a serialiser writing to the file itself
    reports its own error (torch: ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``). Returns
    the file's SHA-256."""
    import io

    buffer = io.BytesIO()
    dump(buffer)
    data = buffer.getbuffer()
    return atomic_write_bytes(path, lambda fh: fh.write(data))


def os_error_of(err: BaseException, path: str | Path) -> OSError | None:
    """The ``OSError`` behind a library's own error for a failed file write, or ``None``: safetensors (Rust) says
    ``I/O error: No space left on device (os error 28)``, torch ``PytorchStreamWriter failed writing file``."""
    import re

    if isinstance(err, OSError):
        return err
    text = str(err)
    found = re.search(r"\(os error (\d+)\)", text)
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), str(path))
    if "PytorchStreamWriter failed writing" in text or "inline_container.cc" in text:
        return OSError(errno.EIO, "writing failed (is the disk full?)", str(path))
    return None


def atomic_write_text(path: str | Path, text: str) -> str:
    """Write UTF-8 text atomically; returns the file's SHA-256."""
    data = text.encode("utf-8")
    return atomic_write_bytes(path, lambda fh: fh.write(data))


#: Temporary folders of :func:`save_folder` older than this (seconds) belong to a writer that died; removed.
STALE_AFTER_S = 3600.0


def _clean_stale(path: Path) -> None:
    """Remove temporary siblings of ``path`` that :func:`save_folder` left behind when its process died."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.saving"):
        try:
            if now - tmp.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:  # another process cleaned it first
            pass


def save_folder(path: str | Path, save, *, replace: bool = False) -> bool:
    """``save(folder)`` into a temporary sibling of ``path``, then rename it to ``path`` in one step.

    A reader sees no folder or a complete one, never a half-saved or half-removed one. Several processes may
    save the same ``path`` at once (a cache entry whose content its name fixes): the first rename wins and the
    others discard their copy. ``replace=True`` swaps a complete new folder in for an existing one (a broken
    cache entry): the old one is renamed aside first, then removed, so ``path`` is never a mix of both.
    Temporary folders of writers that died (older than :data:`STALE_AFTER_S`) are removed on the way.

    Returns:
        Whether this call's folder is the one now at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".saving", dir=path.parent))
    try:
        honour_umask(tmp, folder=True)
        try:
            save(tmp)
        except Exception as err:  # a library's own error for a failed write (a full disk) is an OSError here
            cause = os_error_of(err, path)
            if cause is None or cause is err:
                raise
            raise cause from err
        for _ in range(100):
            try:
                os.rename(tmp, path)  # atomic; refuses a non-empty target (ENOTEMPTY / EEXIST), never merges
                _fsync_dir(path.parent)
                return True
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise
            if not replace:
                return False  # another writer saved this entry first: keep theirs
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".saving", dir=path.parent))
            try:
                os.replace(path, old)  # an empty folder is replaced by rename(2); `path` then is free
            except FileNotFoundError:
                pass
            shutil.rmtree(old, ignore_errors=True)
            replace = False  # replace the old entry once; a newer one that appears meanwhile is kept
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded


def remove_folder(path: str | Path) -> None:
    """Remove ``path`` by renaming it aside first, so no reader sees it half removed."""
    path = Path(path)
    old = path.parent / f".{path.name}.{os.getpid()}-{time.monotonic_ns()}.saving"
    try:
        os.rename(path, old)
    except FileNotFoundError:
        return
    shutil.rmtree(old, ignore_errors=True)


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
