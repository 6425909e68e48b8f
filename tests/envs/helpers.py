"""Helpers shared by the env tests."""
from __future__ import annotations

import numpy as np


def whole_episode(make_env, seed: int, action_seed: int) -> list:
    """Reset ``make_env()`` with ``seed`` and step it to the end on uniform random actions drawn from
    ``action_seed``; the list of every ``reset`` and ``step`` return (for ``data_equivalence``)."""
    e = make_env()
    rng = np.random.default_rng(action_seed)
    traj = [e.reset(seed=seed)]
    while e.agents:
        traj.append(e.step({a: rng.uniform(-1, 1, e.action_space(a).shape).astype(np.float32) for a in e.agents}))
    return traj
