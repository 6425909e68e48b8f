"""tailmix agents: SB3 training, parameter-sharing and centralised wrappers, baselines, evaluation.

Modules (imported on use, so ``import agents`` stays light):

- ``agents.wrappers``: ``make_vec_env`` (the env as an SB3 ``VecEnv``), ``BatchedVecEnv``, ``SharedPolicyVecEnv``
- ``agents.sb3``: ``ALGORITHMS``, ``train``, ``load_model``, ``make_model`` (an SB3 model whose defaults fit the run)
- ``agents.baselines``: ``BASELINES``, ``make_baseline``, ``SB3Policy`` and the baseline classes
- ``agents.callbacks``: ``TailmixMetricsCallback`` (TensorBoard scalars)
- ``agents.evaluate``: ``run_episode``, ``evaluate``, ``summarize``, ``benchmark``
- ``agents.cem``: ``cem_search``, ``CEMPolicy``, ``CEMResult`` (cross-entropy search over per-class ratios: static,
  knot schedules, and with several sources every source's ratio)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SharedPolicyVecEnv": "tailmix.agents.wrappers", "BatchedVecEnv": "tailmix.agents.wrappers", "make_central_vec_env": "tailmix.agents.wrappers",
    "make_shared_vec_env": "tailmix.agents.wrappers", "make_vec_env": "tailmix.agents.wrappers",
    "ALGORITHMS": "tailmix.agents.sb3", "train": "tailmix.agents.sb3", "load_model": "tailmix.agents.sb3",
    "make_model": "tailmix.agents.sb3",
    "BASELINES": "tailmix.agents.baselines", "make_baseline": "tailmix.agents.baselines", "SB3Policy": "tailmix.agents.baselines",
    "TailmixMetricsCallback": "tailmix.agents.callbacks",
    "run_episode": "tailmix.agents.evaluate", "evaluate": "tailmix.agents.evaluate", "summarize": "tailmix.agents.evaluate",
    "benchmark": "tailmix.agents.evaluate",
    "cem_search": "tailmix.agents.cem", "CEMPolicy": "tailmix.agents.cem", "CEMResult": "tailmix.agents.cem",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
