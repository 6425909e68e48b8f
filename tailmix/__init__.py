"""tailmix: learn how much diffusion-generated data to mix into each class of a long-tailed dataset.

Installed, this is the package's only top-level name: ``tailmix.envs``, ``tailmix.agents``,
``tailmix.generators``, ``tailmix.classifiers``, ``tailmix.io`` (atomic writes, leakage checks), the application
layer ``tailmix.pipeline`` and the CLI ``tailmix.train_agents``. In the repository the first four are the
top-level folders ``envs/``, ``agents/``, ... (the design card's layout); ``setup.py`` maps them under ``tailmix``
(``package_dir``), so a user's own ``envs/`` or ``agents/`` package never shadows them. Importing ``tailmix``
registers the env ids with gymnasium and PettingZoo.
"""
from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.2.0"

# A source checkout that was not installed (``python train_agents.py`` from a clone): the sub-packages sit beside
# this folder, not inside it. Installed (editable or not), the packaging already maps them; nothing is added then.
_here = _Path(__file__).resolve().parent
_checkout = _here.parent
if not (_here / "envs").is_dir() and (_checkout / "envs" / "__init__.py").is_file() \
        and (_checkout / "setup.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - a package's __path__

from tailmix import envs  # noqa: E402  registers tailmix/SyntheticRatio-v* and tailmix/SyntheticRatioCentral-v*
from tailmix import suite  # noqa: E402  registers the benchmark suite's task ids (tailmix/KnownAnswer-v0, ...)

__all__ = ["envs", "suite", "__version__"]
