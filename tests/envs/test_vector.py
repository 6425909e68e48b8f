"""The batched vector env: each copy equals a single env with the same seed and actions."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset
from tests.envs.test_synthetic_ratio import TINY


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_each_copy_follows_the_single_env_trajectory(head):
    ds = make_tiny_dataset()
    k = 3
    venv = SyntheticRatioVectorEnv(k, dataset=ds, head=head, **TINY)
    singles = [SyntheticRatioCentralEnv(dataset=ds, head=head, **TINY) for _ in range(k)]
    seeds = [11, 12, 40]
    vobs, _ = venv.reset(seed=seeds)
    sobs = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    rng = np.random.default_rng(0)
    for t in range(TINY["max_steps"]):
        for i in range(k):
            assert np.allclose(vobs[i], sobs[i], atol=1e-5)
        acts = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
        vobs, vrew, _, vtrunc, vinfo = venv.step(acts)
        outs = [e.step(acts[i]) for i, e in enumerate(singles)]
        for i, (o, r, _, tr, info) in enumerate(outs):
            assert vrew[i] == pytest.approx(r, abs=1e-5)
            assert vtrunc[i] == tr
            assert np.array_equal(vinfo["n_synthetic"][i], info["n_synthetic"])
            sobs[i] = o
    assert np.allclose(vinfo["final_obs"], np.stack(sobs), atol=1e-5)


def test_autoreset_and_sb3_shared_slots():
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **TINY)
    sb3 = venv.as_sb3(shared=True, seed=0)
    assert isinstance(sb3, VecEnv) and sb3.num_envs == 6
    obs = sb3.reset()
    assert obs.shape == (6, 11)
    episodes = 0
    for _ in range(2 * TINY["max_steps"]):
        sb3.step_async(np.zeros((6, 1), np.float32))
        obs, rew, done, infos = sb3.step_wait()
        episodes += sum("episode" in i for i in infos)
        assert rew.shape == (6,) and obs.shape == (6, 11)
    assert episodes == 4  # two episodes per copy, counted once each (not once per agent)


def test_sb3_ppo_runs_on_the_batched_env():
    from stable_baselines3 import PPO

    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **TINY).as_sb3(shared=True, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=12, batch_size=24, n_epochs=1, seed=0)
    model.learn(64)
    assert model.num_timesteps >= 64


def test_pixel_mode_and_bad_actions_are_refused():
    with pytest.raises(ValueError, match="feature"):
        SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), mode="pixel", **TINY)
    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **TINY)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        venv.step(np.full((2, 3), np.nan))


def test_cosine_lr_schedule_copies_follow_the_single_env_and_constant_is_the_default():
    from tailmix.envs.config import RatioEnvConfig

    assert RatioEnvConfig().lr_schedule == "constant"
    with pytest.raises(ValueError, match="lr_schedule"):
        RatioEnvConfig(lr_schedule="step")
    ds = make_tiny_dataset()
    k = 2
    venv = SyntheticRatioVectorEnv(k, dataset=ds, lr_schedule="cosine", **TINY)
    singles = [SyntheticRatioCentralEnv(dataset=ds, lr_schedule="cosine", **TINY) for _ in range(k)]
    const = SyntheticRatioCentralEnv(dataset=ds, **TINY)
    head = venv.core.engine.head
    assert head.lr_schedule == "cosine" and head.total_steps == TINY["max_steps"] * venv.config.epochs
    seeds = [3, 9]
    vobs, _ = venv.reset(seed=seeds)
    for e, s in zip(singles, seeds):
        e.reset(seed=s)
    const.reset(seed=seeds[0])
    rng = np.random.default_rng(1)
    for t in range(TINY["max_steps"]):
        acts = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
        vobs, vrew, _, _, vinfo = venv.step(acts)
        outs = [e.step(acts[i]) for i, e in enumerate(singles)]
        const.step(acts[0])
        last = t == TINY["max_steps"] - 1  # the vector env autoresets: the last observation is in final_obs
        for i, (o, r, *_rest) in enumerate(outs):
            assert vrew[i] == pytest.approx(r, abs=1e-5)
            assert np.allclose(vinfo["final_obs"][i] if last else vobs[i], o, atol=1e-5)
    # the episode's rate has decayed to ~0 by its end (the autoreset copies are back at lr); the constant env's
    # has not, and its head differs
    assert head.learning_rates() == [venv.config.learning_rate] * k
    assert singles[0].core.engine.head.learning_rates()[0] < 1e-3 * venv.config.learning_rate
    assert const.core.engine.head.learning_rates() == [venv.config.learning_rate]
    assert not np.allclose(singles[0].core.engine.head.flat.numpy(), const.core.engine.head.flat.numpy())
