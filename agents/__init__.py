"""tailmix agents: SB3 training, parameter-sharing and centralised wrappers, baselines, evaluation.

Modules (imported on use, so ``import agents`` stays light):

- ``agents.wrappers``: ``SharedPolicyVecEnv``, ``make_central_vec_env``, ``make_vec_env``
- ``agents.sb3``: ``ALGORITHMS``, ``train``, ``load_model``
- ``agents.baselines``: ``BASELINES``, ``make_baseline``, ``SB3Policy`` and the baseline classes
- ``agents.callbacks``: ``TailmixMetricsCallback`` (TensorBoard scalars)
- ``agents.evaluate``: ``run_episode``, ``evaluate``, ``summarize``, ``benchmark``
- ``agents.cem``: ``cem_search``, ``CEMPolicy``, ``CEMResult`` (cross-entropy search over static per-class ratios)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SharedPolicyVecEnv": "agents.wrappers", "make_central_vec_env": "agents.wrappers",
    "make_shared_vec_env": "agents.wrappers", "make_vec_env": "agents.wrappers",
    "ALGORITHMS": "agents.sb3", "train": "agents.sb3", "load_model": "agents.sb3",
    "BASELINES": "agents.baselines", "make_baseline": "agents.baselines", "SB3Policy": "agents.baselines",
    "TailmixMetricsCallback": "agents.callbacks",
    "run_episode": "agents.evaluate", "evaluate": "agents.evaluate", "summarize": "agents.evaluate",
    "benchmark": "agents.evaluate",
    "cem_search": "agents.cem", "CEMPolicy": "agents.cem", "CEMResult": "agents.cem",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
