"""``class_id_obs=False``: observations without the one-hot class id (per-class statistics only)."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from tailmix import envs
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.core import OBS_COLUMNS
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv, parallel_env
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset

TINY = dict(encoder="random", pool_size=16, max_steps=3)


def tiny_kwargs(**over):
    return {"dataset": make_tiny_dataset(), **TINY, **over}


def test_width_columns_and_values_follow_the_option():
    with_id, without = SyntheticRatioEnv(**tiny_kwargs()), SyntheticRatioEnv(**tiny_kwargs(class_id_obs=False))
    assert with_id.config.class_id_obs is True  # the default keeps every id's spaces
    assert with_id.observation_space("class_0").shape == (8 + 3,)
    assert without.observation_space("class_0").shape == (8,) and without.state_space.shape == (3 * 8,)
    assert without.observation_columns == OBS_COLUMNS
    assert with_id.observation_columns[:8] == OBS_COLUMNS
    # the same statistics, only the id columns gone, at every step of the same episode
    a, _ = with_id.reset(seed=3)
    b, _ = without.reset(seed=3)
    for _ in range(3):
        for agent in with_id.possible_agents:
            np.testing.assert_array_equal(a[agent][:8], b[agent])
            assert without.observation_space(agent).contains(b[agent])
        actions = {agent: np.array([0.5], np.float32) for agent in with_id.possible_agents}
        a, *_ = with_id.step(actions)
        b, *_ = without.step(actions)


def test_width_with_several_sources_pool_obs_and_the_batched_view():
    kw = tiny_kwargs(sources=["augment", "augment"], pool_obs=True, class_id_obs=False)
    e = SyntheticRatioEnv(**kw)
    width = 6 + 3 * 2  # recall .. log share, 2 ratios, 2 qualities, balanced accuracy, progress, 2 pool fractions
    assert e.observation_space("class_1").shape == (width,) and len(e.observation_columns) == width
    assert not any(c.startswith("is_") for c in e.observation_columns)
    central = SyntheticRatioCentralEnv(**kw)
    assert central.observation_space.shape == (3, width) and central.reset(seed=0)[0].shape == (3, width)
    venv = SyntheticRatioVectorEnv(2, **kw)
    assert venv.single_observation_space.shape == (3, width) and venv.reset(seed=0)[0].shape == (2, 3, width)


def test_official_checkers_on_the_option():
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    parallel_api_test(parallel_env(**tiny_kwargs(class_id_obs=False)), num_cycles=5)
    gym_check(SyntheticRatioCentralEnv(**tiny_kwargs(class_id_obs=False)), skip_render_check=True)
    sb3_check(SyntheticRatioCentralEnv(**tiny_kwargs(class_id_obs=False)), warn=True)
    genv = gymnasium.make(envs.CENTRAL_V1_ID, **tiny_kwargs(class_id_obs=False))
    assert genv.reset(seed=0)[0].shape == (3, 8 + 1)  # v1: pool_obs on (one pool-fraction column), no ids


@pytest.mark.parametrize("bad", [0, 1, "no", None])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match="class_id_obs"):
        SyntheticRatioEnv(**tiny_kwargs(class_id_obs=bad))
