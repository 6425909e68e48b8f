"""The observation's columns are one table (``envs.observation.COLUMNS``): a column added there reaches the
observation spaces, ``observation_columns`` on every view, the observations and a saved policy's expected width."""
from __future__ import annotations

import types

import numpy as np
import pytest

from tailmix.envs import observation
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.core import OBS_COLUMNS
from tailmix.envs.observation import ObsColumn, observation_width
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

TINY = dict(dataset="digits", encoder="random", pool_size=16, max_steps=3)


def test_the_table_gives_v0s_columns_and_width():
    assert OBS_COLUMNS == ("recall", "precision", "f1", "log_real_share", "ratio", "pool_quality",
                           "balanced_accuracy", "progress")
    assert observation_width(10) == 8 + 10 and observation_width(10, 3) == 6 + 2 * 3 + 10
    env = SyntheticRatioCentralEnv(**TINY, sources=["augment", "gaussian"], pool_obs=True)
    assert len(env.observation_columns) == env.observation_space.shape[-1] == observation_width(10, 2, env.core.config)


@pytest.fixture
def with_new_columns(monkeypatch):
    """Two columns added through the table only: the step parity (one) and twice the ratio (per source)."""
    parity = ObsColumn("step_parity", "one", lambda core, copies: (core.t[copies] % 2)[:, None], low=0.0, high=1.0)
    double = ObsColumn("ratio_x2", "per_source",
                       lambda core, copies: 2 * core.source_ratios[copies] / core.config.max_ratio, high=2.0)
    cols = observation.COLUMNS
    at = [c.name for c in cols].index("is_class")
    monkeypatch.setattr(observation, "COLUMNS", cols[:at] + (parity, double) + cols[at:])


def test_a_column_added_to_the_table_reaches_every_view(with_new_columns):
    env = SyntheticRatioCentralEnv(**TINY, sources=["augment", "gaussian"])
    c = env.core.c
    assert env.observation_space.shape == (c, 6 + 2 * 2 + 1 + 2 + c)
    names = env.observation_columns
    assert names[10:13] == ("step_parity", "ratio_x2@augment", "ratio_x2@gaussian") and len(names) == names.index(
        "is_class_0") + c
    assert env.observation_space.high[0, names.index("ratio_x2@augment")] == 2.0
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(np.full(env.action_space.shape, 0.5, np.float32))
    assert np.all(obs[:, names.index("step_parity")] == 1.0)
    np.testing.assert_allclose(obs[:, names.index("ratio_x2@gaussian")], 2 * obs[:, names.index("ratio@gaussian")])
    pz = SyntheticRatioEnv(**TINY)
    assert pz.observation_columns[8] == "step_parity" and pz.observation_space("class_0").shape == (8 + 2 + c,)
    assert len(pz.observation_columns) == pz.observation_space("class_0").shape[0]


def test_a_saved_policys_width_follows_the_table(with_new_columns):
    from tailmix.envs.datasets import load_digits_lt
    from tailmix.policies import _check_policy_fits

    dataset = load_digits_lt()
    c = dataset.num_classes

    def policy(width):
        space = types.SimpleNamespace(shape=(width,))
        return types.SimpleNamespace(model=types.SimpleNamespace(observation_space=space), wrapper="shared")

    _check_policy_fits(policy(8 + 2 + c), dataset, "new")  # the table's width: fits
    with pytest.raises(ValueError, match="another dataset"):
        _check_policy_fits(policy(8 + c), dataset, "old")  # the width before the new columns
