"""Baseline policies: the ratios they ask for on a known count vector, seeding, specs, and the SB3 adapter."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.agents.baselines import (BASELINES, ConstantRatio, FillToHead, InverseFrequency, NoSynthetic, RandomRatio,
                              SB3Policy, make_baseline)
from tests.agents.fake_env import FakeRatioEnv


def ratios_set(policy, env, seed=0):
    """The ratios the env ends up with after one step of ``policy`` (through actions, not ``ratios()``)."""
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    actions = policy.act(obs, env)
    assert set(actions) == set(env.agents)
    for a in actions.values():
        assert a.shape == (1,) and a.dtype == np.float32 and -1 <= a[0] <= 1
    env.step(actions)
    return env.ratios


def test_fill_to_head_on_known_counts_is_clipped_to_max_ratio():
    np.testing.assert_allclose(ratios_set(FillToHead(), FakeRatioEnv((100, 50, 5), max_ratio=8.0)), [0, 1, 8],
                               atol=1e-5)
    np.testing.assert_allclose(ratios_set(FillToHead(), FakeRatioEnv((100, 50, 5), max_ratio=20.0)), [0, 1, 19],
                               atol=1e-5)
    np.testing.assert_allclose(FillToHead().raw_ratios(np.array([100.0, 50.0, 5.0])), [0, 1, 19])


def test_none_and_constant():
    env = FakeRatioEnv((100, 50, 5))
    np.testing.assert_allclose(ratios_set(NoSynthetic(), env), [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(ratios_set(ConstantRatio(0.5), env), [0.5] * 3, atol=1e-5)
    np.testing.assert_allclose(ratios_set(ConstantRatio(100), env), [8] * 3, atol=1e-5)  # clipped
    with pytest.raises(ValueError, match=">= 0"):
        ConstantRatio(-1)


def test_inverse_frequency_gives_every_class_the_same_synthetic_count():
    counts = np.array([100.0, 50.0, 5.0])
    raw = InverseFrequency().raw_ratios(counts)
    np.testing.assert_allclose(raw * counts, [155 / 3] * 3)  # budget 1: total synthetic = total real
    np.testing.assert_allclose(raw, [0.51667, 1.03333, 10.3333], rtol=1e-4)
    np.testing.assert_allclose(ratios_set(InverseFrequency(), FakeRatioEnv((100, 50, 5))), [0.51667, 1.03333, 8],
                               rtol=1e-4)
    np.testing.assert_allclose(InverseFrequency(0.5).raw_ratios(counts), raw / 2)


def test_random_is_seeded_and_varies():
    env = FakeRatioEnv()
    a = ratios_set(RandomRatio(), env, seed=1)
    b = ratios_set(RandomRatio(), env, seed=1)
    c = ratios_set(RandomRatio(), env, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert ((a >= 0) & (a <= 8)).all()


def test_policies_only_act_for_live_agents():
    env = FakeRatioEnv()
    obs, _ = env.reset(seed=0)
    env.agents = ["class_2"]  # as if the others had left
    for policy in (FillToHead(), RandomRatio()):
        assert list(policy.act(obs, env)) == ["class_2"]


def test_make_baseline_specs():
    names = [make_baseline(s).name for s in BASELINES]
    assert names == ["none", "constant:0.5", "constant:1", "constant:2", "fill", "inverse", "random"]
    assert isinstance(make_baseline("constant:2.5"), ConstantRatio) and make_baseline("constant:2.5").ratio == 2.5
    assert make_baseline("inverse:0.5").budget == 0.5
    assert make_baseline("random:4").seed == 4
    for bad in ("sinusoidal", "constant", "constant:abc", "constant:-1", "fill:2", ""):
        with pytest.raises(ValueError, match="constant"):
            make_baseline(bad)


class _FakeModel:
    """Just enough of an SB3 model: spaces and a predict that echoes a column of the observation."""

    def __init__(self, obs_shape, act_dim):
        from gymnasium import spaces

        self.observation_space = spaces.Box(-10, 10, obs_shape, np.float32)
        self.action_dim = act_dim

    def predict(self, obs, deterministic=True):
        obs = np.asarray(obs)
        if obs.ndim == 2 and self.action_dim == 1:  # shared: a batch of agent rows -> (n, 1)
            return obs[:, 4:5] * 2 - 1, None
        return obs[:, 4] * 0 + np.linspace(-1, 1, obs.shape[0]), None  # central: (C, d) -> (C,)


def test_sb3_policy_adapter_shapes_and_wrapper_mismatch():
    env = FakeRatioEnv()
    obs, _ = env.reset(seed=0)
    shared = SB3Policy(_FakeModel((11,), 1), wrapper="shared")
    acts = shared.act(obs, env)
    assert set(acts) == set(env.agents) and all(a.shape == (1,) for a in acts.values())
    central = SB3Policy(_FakeModel((3, 11), 3), wrapper="central")
    acts = central.act(obs, env)
    np.testing.assert_allclose([acts[f"class_{i}"][0] for i in range(3)], [-1, 0, 1])
    with pytest.raises(ValueError, match="central"):
        SB3Policy(_FakeModel((3, 11), 3), wrapper="shared").act(obs, env)
    with pytest.raises(ValueError, match="shared"):
        SB3Policy(_FakeModel((11,), 1), wrapper="central").act(obs, env)
    with pytest.raises(ValueError, match="wrapper"):
        SB3Policy(_FakeModel((11,), 1), wrapper="mappo")
