"""Where tailmix caches fitted encoders on disk when the user names no folder.

A fitted encoder takes ~10 s to train, and every new process (a subprocess worker of a vector env, a second
script) would pay that again with a memory-only cache. The default folder is per user:
``$TAILMIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/tailmix``, else ``~/.cache/tailmix``. Entries are keyed by a hash
of the dataset's pixels and the encoder's settings, written atomically under a file lock (``tailmix.io.atomic``), so
concurrent processes share them safely and a cached encoder gives exactly the features a fresh fit gives.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that moves the default cache folder (tests point it at a temporary folder).
CACHE_ENV = "TAILMIX_CACHE_DIR"


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$TAILMIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/tailmix``, else ``~/.cache/tailmix``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tailmix"


def encoder_cache_dir(cache_dir) -> str | None:
    """The folder fitted encoders go to for an env's ``cache_dir`` setting (``None``: memory only).

    ``None`` (the default) is ``default_cache_dir() / "encoders"``; ``False`` keeps encoders in memory only; a
    path is used as it is (encoders are stored directly in it, as before the default existed).
    """
    if cache_dir is False:
        return None
    if cache_dir is None:
        return str(default_cache_dir() / "encoders")
    return str(Path(cache_dir).expanduser())
