"""The env ids under other libraries' own entry points, used the way their docs show (docs/integrations.md):
SB3's make_vec_env and PPO(policy, id), gymnasium's AsyncVectorEnv (spawn)."""
from __future__ import annotations

import dataclasses
import functools
import warnings

import gymnasium
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from tailmix.envs import CENTRAL_ID
from tailmix.envs.central import SyntheticRatioCentralEnv
from tests.conftest import make_tiny_dataset

TINY = dict(encoder="random", pool_size=16, max_steps=3)
#: Plain values only (no tailmix object to unpickle), as a user's script would pass: a worker must import tailmix
#: through the id's "tailmix:" module prefix (gymnasium's "module:id" form) to find the id.
DIGITS = dict(dataset="digits", **TINY)
PPO_TINY = dict(n_steps=32, batch_size=32, n_epochs=1, seed=0)


def _learn(venv) -> PPO:
    model = PPO("MlpPolicy", venv, **PPO_TINY).learn(64)
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (venv.num_envs, *venv.action_space.shape) and np.isfinite(actions).all()
    return model


def _no_render_warnings(record) -> None:
    """SB3 asks for render_mode='rgb_array' on every path from an id; gymnasium and the env once each warned."""
    said = [str(w.message) for w in record if "render" in str(w.message).lower()]
    assert not said, said


def test_make_vec_env_dummy_with_vecnormalize_and_ppo():
    """SB3's make_vec_env asks for render_mode='rgb_array': the env renders frames, with no warning."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        venv = make_vec_env(CENTRAL_ID, n_envs=2, seed=0, env_kwargs={"dataset": make_tiny_dataset(), **TINY})
    _no_render_warnings(record)
    assert isinstance(venv, DummyVecEnv)
    venv.reset()
    frame = venv.get_images()[0]
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    venv = VecNormalize(venv)
    try:
        model = _learn(venv)
        assert model.num_timesteps >= 64
    finally:
        venv.close()


@pytest.mark.slow
def test_make_vec_env_subproc_spawn_with_vecnormalize_and_ppo():
    venv = make_vec_env("tailmix:" + CENTRAL_ID, n_envs=2, seed=0, env_kwargs=DIGITS, vec_env_cls=SubprocVecEnv,
                        vec_env_kwargs={"start_method": "spawn"})
    venv = VecNormalize(venv)
    try:
        _learn(venv)
    finally:
        venv.close()


def test_ppo_with_the_id_string(monkeypatch):
    """``PPO("MlpPolicy", id)`` makes the env itself (render_mode='rgb_array', no kwargs): the registered id with
    tiny defaults in its spec, so the path is SB3's own."""
    spec = gymnasium.spec(CENTRAL_ID)
    monkeypatch.setitem(gymnasium.registry, CENTRAL_ID, dataclasses.replace(spec, kwargs=DIGITS))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = PPO("MlpPolicy", CENTRAL_ID, **PPO_TINY).learn(64)
    _no_render_warnings(record)
    assert model.num_timesteps >= 64
    model.get_env().close()


@pytest.mark.slow
def test_ppo_with_the_id_string_and_the_default_env():
    """The docs' SB3 one-liner itself: the default env (digits, cross-fitted encoder, fitted once and cached)."""
    model = PPO("MlpPolicy", CENTRAL_ID, n_steps=16, batch_size=16, n_epochs=1, seed=0).learn(16)
    assert model.observation_space.shape == (10, 18)
    model.get_env().close()


@pytest.mark.slow
def test_gymnasium_async_vector_env_spawn():
    fns = [functools.partial(SyntheticRatioCentralEnv, **DIGITS)] * 2
    venv = gymnasium.vector.AsyncVectorEnv(fns, context="spawn")
    try:
        obs, _ = venv.reset(seed=0)
        assert obs.shape == (2, 10, 18)
        for _ in range(3):
            obs, reward, terminated, truncated, _ = venv.step(venv.action_space.sample())
        assert np.isfinite(reward).all() and truncated.all() and not terminated.any()  # max_steps=3
    finally:
        venv.close()


@pytest.mark.parametrize("mode", ["sync", "vector_entry_point"])
def test_gymnasium_make_vec_with_its_vector_wrappers(mode):
    """Docs: gymnasium.make_vec (sync, or the batched env as the vector entry point) under gymnasium's own
    vector wrappers; the step infos batch into plain arrays (numbers only), whichever way the copies run."""
    from gymnasium.wrappers.vector import (ClipAction, FlattenObservation, NormalizeObservation, NormalizeReward,
                                           RecordEpisodeStatistics)

    from tailmix.envs.vector import SyntheticRatioVectorEnv

    venv = gymnasium.make_vec(CENTRAL_ID, num_envs=2, vectorization_mode=mode, dataset=make_tiny_dataset(), **TINY)
    assert isinstance(venv, SyntheticRatioVectorEnv) == (mode == "vector_entry_point")
    env = RecordEpisodeStatistics(NormalizeReward(NormalizeObservation(FlattenObservation(ClipAction(venv)))))
    obs, infos = env.reset(seed=0)
    episodes = 0
    for _ in range(2 * (TINY["max_steps"] + 1)):
        obs, reward, terminated, truncated, infos = env.step(env.action_space.sample())
        assert obs.shape == (2, 3 * 11) and np.isfinite(obs).all() and np.isfinite(reward).all()
        for key, value in infos.items():
            if key != "episode":
                assert isinstance(value, np.ndarray) and value.dtype != object, key
        episodes += int(infos["_episode"].sum()) if "episode" in infos else 0
    assert episodes == 4
    env.close()


def test_sb3_through_tailmix_make_vec_env_on_the_batched_env():
    """Docs: tailmix's own SB3 face, batched, per class agent (shared) or central, under VecNormalize."""
    from tailmix.agents.wrappers import BatchedVecEnv
    from tailmix.agents.wrappers import make_vec_env as tailmix_vec_env

    for wrapper in ("shared", "central"):
        venv = tailmix_vec_env(wrapper, {"dataset": make_tiny_dataset(), **TINY}, n_envs=2, seed=0)
        assert isinstance(venv, BatchedVecEnv)
        _learn(VecNormalize(venv))
        venv.close()


def test_supersuit_concat_vec_envs_trains_like_the_original():
    """The PettingZoo + SB3 tutorial's path: SuperSuit's ``concat_vec_envs_v1`` copies the built env with
    cloudpickle. The copies once stepped on heads that never trained (a constant reward, without a word)."""
    import supersuit as ss

    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    # training visibly moves the reward here (the tiny fixture scores the same trained or not)
    kwargs = dict(dataset="digits", encoder="random", pool_size=16, max_steps=5, epochs_per_step=2)
    venv = ss.concat_vec_envs_v1(ss.pettingzoo_env_to_vec_env_v1(SyntheticRatioEnv(**kwargs)), 2, num_cpus=0,
                                 base_class="gymnasium")
    original = SyntheticRatioEnv(**kwargs)
    venv.reset(seed=3)  # SuperSuit seeds copy i with seed + i
    original.reset(seed=4)
    c = original.num_classes
    assert venv.num_envs == 2 * c
    ours, theirs = [], []
    for _ in range(4):
        _, rewards, _, _, _ = venv.step(np.full((venv.num_envs, 1), -1.0, np.float32))
        _, reward, _, _, _ = original.step({a: np.full(1, -1.0, np.float32) for a in original.possible_agents})
        theirs.append(float(rewards[c]))  # copy 1's first agent
        ours.append(float(reward["class_0"]))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)  # SuperSuit batches rewards as float32
    assert ours[-1] - ours[0] > 0.05, f"the configuration no longer shows training: rewards {ours}"
    venv.close()
