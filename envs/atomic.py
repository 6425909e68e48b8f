"""Atomic file writes and the file lock now live in :mod:`tailmix.io.atomic` (the bottom layer, so generators
need not import the env package); this module re-exports them for code written against earlier versions."""
from tailmix.io.atomic import atomic_write_bytes, atomic_write_text, file_lock  # noqa: F401

__all__ = ["atomic_write_bytes", "atomic_write_text", "file_lock"]
