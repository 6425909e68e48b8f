"""RL libraries behind one protocol: train a policy into a run folder, recognise what it saved, load it back.

A backend is a :class:`Backend` subclass (in its own module, e.g. ``agents/sb3.py``) plus one line in
:data:`BACKENDS`; ``--backend`` choices, the CLI's checks, ``train``, ``evaluate --policy <saved>`` and
``benchmark --learned`` ask the registry and never name a library. :func:`register_backend` adds one at run time.

Also the helpers every adapter shares: :func:`write_json_atomic` (``agent.json`` and friends) and
:func:`scalar_tag` (a class name as a TensorBoard tag).
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path


class Backend:
    """The protocol: an RL library that trains a sampler policy on the env and loads it back.

    Subclasses set :attr:`name` and :attr:`help` and implement :meth:`train`, :meth:`is_checkpoint` and
    :meth:`load_policy`; :meth:`check` refuses settings the library cannot serve (before any work).
    """

    #: ``--backend`` value.
    name: str = ""
    #: One line for ``--help``.
    help: str = ""
    #: Whether the main job (train, then benchmark in the same run folder) may use it.
    main_job: bool = False

    def check(self, cfg) -> None:
        """Raise ``ValueError`` (saying how to fix it) for settings of ``cfg`` (a ``TrainConfig``) it cannot use."""

    def label(self, cfg) -> str:
        """A short name of what ``cfg`` trains (phase names, tables): ``ppo-shared``, ``rllib-ppo``, ..."""
        return self.name

    def train(self, cfg, env_kwargs: dict, run_dir: Path) -> Path:
        """Train on the env of ``env_kwargs`` with ``cfg``'s settings (``timesteps``, ``seed``, ``checkpoint_every``,
        ...), writing into ``run_dir``; return the saved policy's path (what ``evaluate --policy`` takes)."""
        raise NotImplementedError

    def is_checkpoint(self, path: Path) -> bool:
        """The checkpoint marker: whether ``path`` holds a policy this backend saved."""
        raise NotImplementedError

    def load_policy(self, path: Path, info: dict | None = None):
        """The saved policy at ``path`` behind the baseline interface (``agents.policy.Policy``). ``info``: what the
        run folder says about it (``algo``, ``wrapper``, ... from ``agent.json`` or the run's config), if anything."""
        raise NotImplementedError


#: Every backend: ``name -> "module:Class"`` (imported on use, so a library is imported only when asked for).
BACKENDS: dict[str, str | Backend] = {
    "sb3": "tailmix.agents.sb3:SB3Backend",
    "rllib": "tailmix.agents.rllib:RLlibBackend",
}


def register_backend(backend: Backend | str, name: str | None = None) -> Backend | str:
    """Add a backend (an instance, or ``"module:Class"`` imported on use) under ``name`` (default its ``name``)."""
    name = name or getattr(backend, "name", "")
    if not name or not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"a backend needs a lower-case name (letters, digits, '-', '_'); got {name!r}")
    BACKENDS[name] = backend
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend (a no-op for an unknown name)."""
    BACKENDS.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """The registered backends' names: the ``--backend`` choices."""
    return tuple(BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (``ValueError`` naming the choices otherwise)."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = getattr(importlib.import_module(module), cls)()
        BACKENDS[name] = entry
    return entry


def backend_for(path: str | Path) -> Backend | None:
    """The backend whose checkpoint marker ``path`` carries, or ``None`` (not a saved policy of any)."""
    path = Path(path).expanduser()
    for name in BACKENDS:
        backend = get_backend(name)
        if backend.is_checkpoint(path):
            return backend
    return None


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as indented JSON at ``path``, written atomically (a reader never sees half a file)."""
    from tailmix.io.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=2))


def scalar_tag(name: str) -> str:
    """``name`` (a class name) as a TensorBoard tag component: runs of other characters become ``_``."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)) or "class"
