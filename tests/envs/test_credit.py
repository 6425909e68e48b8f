"""Difference rewards (``credit="difference"``): per-class credit from counterfactual heads with common random numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.sources import ArraySource
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv, env as aec_env, parallel_env
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset
from tests.envs.helpers import whole_episode
from tests.envs.test_synthetic_ratio import TINY

DIFF = dict(TINY, credit="difference")


def hard_kwargs(**over):
    """A 4-class toy whose class-3 pool holds class-0 images: synthesis for class 3 hurts, so credit is non-zero."""
    ds = make_tiny_dataset(num_classes=4, size=8, counts=(20, 12, 6, 4), n_val=8, seed=3)
    pools = {c: ds.train_images[ds.train_labels == c] for c in range(4)}
    pools[3] = ds.train_images[ds.train_labels == 0]  # mislabeled: "class 3" samples are class-0 bars
    kw = dict(dataset=ds, source=ArraySource(pools, 4), encoder="random", max_steps=4, epochs_per_step=3,
              credit="difference")
    kw.update(over)
    return kw


def act(values):
    return {f"class_{i}": np.array([v], np.float32) for i, v in enumerate(values)}


# -- official checkers with the option on ----------------------------------------------------------
def test_official_checkers_pass_with_difference_credit():
    parallel_api_test(parallel_env(dataset=make_tiny_dataset(), **DIFF), num_cycles=5)
    api_test(aec_env(dataset=make_tiny_dataset(), **DIFF), num_cycles=5)
    seed_test(lambda: aec_env(dataset=make_tiny_dataset(), **DIFF), num_cycles=5)
    parallel_seed_test(lambda: parallel_env(dataset=make_tiny_dataset(), **DIFF))


def test_same_seed_same_actions_same_whole_trajectory():
    from gymnasium.utils.env_checker import data_equivalence

    a, b, c = (whole_episode(lambda: parallel_env(**hard_kwargs()), seed, 5) for seed in (3, 3, 4))
    assert data_equivalence(a, b)
    assert not data_equivalence(a, c)


# -- the counterfactuals ------------------------------------------------------------------------------
@pytest.mark.parametrize("default, action", [(0.0, -1.0), (2.0, -0.5)])  # action -0.5 is ratio 2 at max_ratio 8
def test_class_at_the_default_ratio_gets_exactly_zero(default, action):
    e = parallel_env(**hard_kwargs(credit_default=default))
    _, infos = e.reset(seed=1)
    assert all(infos[a]["counterfactual_balanced_accuracy"] == infos[a]["balanced_accuracy"] for a in e.agents)
    rng = np.random.default_rng(0)
    core = e.core
    nonzero = 0
    while e.agents:
        others = rng.uniform(-1, 1, 3)
        _, rew, _, _, infos = e.step(act([action, *others]))
        assert rew["class_0"] == 0.0  # same init, same mix row for row => the very same head
        nonzero += sum(rew[a] != 0.0 for a in ("class_1", "class_2", "class_3"))
        params = core.engine.head.params
        assert all(torch.equal(p[0], p[core._cf_head(0, 0, 0)]) for p in params)
    assert e.core.h == 1 + 4
    assert nonzero > 0


def test_difference_is_score_minus_counterfactual_and_harmful_synthesis_is_blamed():
    e = parallel_env(**hard_kwargs(max_steps=3))
    e.reset(seed=0)
    total = {a: 0.0 for a in e.agents}
    while e.agents:
        _, rew, _, _, infos = e.step(act([-1, -1, -1, 1]))  # only class 3 synthesises (mislabeled samples)
        for a in rew:
            i = infos[a]
            assert rew[a] == pytest.approx(i["balanced_accuracy"] - i["counterfactual_balanced_accuracy"], abs=1e-12)
            total[a] += rew[a]
    assert total["class_0"] == total["class_1"] == total["class_2"] == 0.0
    assert total["class_3"] < 0  # 8x class-0 images labelled 3: the counterfactual without them scores higher


def test_counterfactual_mix_differs_from_the_replica_in_its_class_rows_only():
    e = parallel_env(**hard_kwargs(credit_default=0.5))
    e.reset(seed=2)
    core = e.core
    n = np.array([[40, 0, 9, 32]])  # class 0 beyond its pool (20): some draws with replacement
    mixes = core._mixes(n)
    labels = core.engine.labels_np
    n_real = len(core.engine.real_idx)
    rep = mixes[0]
    assert np.bincount(labels[rep[n_real:]], minlength=4).tolist() == [40, 0, 9, 32]
    default = core._default_counts()
    assert default.tolist() == [10, 6, 3, 2]
    for c in range(4):
        cf = mixes[core._cf_head(0, 0, c)]
        assert np.array_equal(cf[:n_real], rep[:n_real])
        rs, cs = rep[n_real:], cf[n_real:]
        for other in range(4):  # every other class: the very same rows in the same order (common random numbers)
            if other != c:
                assert np.array_equal(rs[labels[rs] == other], cs[labels[cs] == other])
        mine_rep, mine_cf = rs[labels[rs] == c], cs[labels[cs] == c]
        assert len(mine_cf) == default[c]
        k = min(len(mine_rep), default[c])
        assert np.array_equal(mine_cf[:k], mine_rep[:k])  # a prefix of one draw: nested samples


def test_replica_draws_match_shared_credit_with_default_zero():
    """With credit_default=0 the actual classifier is exactly the shared-credit env's: same obs, team reward."""
    kw = hard_kwargs(reward="delta", synthetic_cost=0.01)
    d = parallel_env(**kw)
    s = parallel_env(**dict(kw, credit="shared"))
    od, _ = d.reset(seed=9)
    os_, _ = s.reset(seed=9)
    rng = np.random.default_rng(1)
    while d.agents:
        a = act(rng.uniform(-1, 1, 4))
        od, rd, _, _, idd = d.step(a)
        os_, rs, _, _, _ = s.step(a)
        for agent in d.possible_agents:
            assert np.allclose(od[agent], os_[agent], atol=1e-6)
            assert idd[agent]["team_reward"] == pytest.approx(rs[agent], abs=1e-6)


def test_reward_options_apply_to_the_difference():
    actions = [act([0.3, -1, 0.5, 1])] * 4

    def episode(**over):
        e = parallel_env(**hard_kwargs(**over))
        e.reset(seed=6)
        out = []
        for a in actions:
            _, rew, _, _, infos = e.step(a)
            out.append((np.array([rew[x] for x in e.possible_agents]), infos))
        return out

    acc = episode()
    delta = episode(reward="delta")
    final = episode(reward="final")
    costly = episode(synthetic_cost=0.5)
    scores = np.stack([r for r, _ in acc])
    # delta telescopes from 0 (identical heads at reset) to the last difference
    assert np.allclose(np.stack([r for r, _ in delta]).sum(0), scores[-1], atol=1e-12)
    assert np.all(np.stack([r for r, _ in final])[:-1] == 0) and np.allclose(final[-1][0], scores[-1])
    n_syn = np.array([costly[0][1][f"class_{i}"]["n_synthetic"] for i in range(4)])
    n_real = make_tiny_dataset(num_classes=4, size=8, counts=(20, 12, 6, 4), n_val=8, seed=3).train_counts.sum()
    assert np.allclose(costly[0][0], scores[0] - 0.5 * n_syn / n_real)  # default 0: charged for all own samples
    assert costly[0][1]["class_0"]["team_reward"] == pytest.approx(
        acc[0][1]["class_0"]["team_reward"] - 0.5 * n_syn.sum() / n_real)


def test_replicas_each_get_their_own_counterfactuals():
    e = parallel_env(**hard_kwargs(reward_replicas=2))
    assert e.core.h == 2 + 2 * 4
    e.reset(seed=0)
    while e.agents:
        _, rew, _, _, infos = e.step(act([-1, 0.5, -0.2, 1]))
        assert rew["class_0"] == 0.0
        assert rew["class_3"] == pytest.approx(infos["class_3"]["balanced_accuracy"]
                                               - infos["class_3"]["counterfactual_balanced_accuracy"], abs=1e-12)


# -- views and configuration ---------------------------------------------------------------------------
def test_vector_env_passes_per_class_rewards_to_the_shared_slots():
    kw = hard_kwargs()
    venv = SyntheticRatioVectorEnv(2, autoreset_mode="same_step", **kw)
    singles = [SyntheticRatioEnv(**kw) for _ in range(2)]
    vobs, _ = venv.reset(seed=[3, 4])
    for e, s in zip(singles, [3, 4]):
        e.reset(seed=s)
    rng = np.random.default_rng(0)
    for _ in range(2):
        a = rng.uniform(-1, 1, (2, 4)).astype(np.float32)
        _, vrew, _, _, vinfo = venv.step(a)
        for k, e in enumerate(singles):
            _, rew, _, _, infos = e.step(act(a[k]))
            assert np.allclose(vinfo["agent_rewards"][k], [rew[x] for x in e.possible_agents], atol=1e-5)
            assert vrew[k] == pytest.approx(infos["class_0"]["team_reward"], abs=1e-5)
    from tailmix.agents.wrappers import make_vec_env

    sb3 = make_vec_env("shared", venv, seed=0)
    sb3.reset()
    sb3.step_async(np.full((8, 1), -1.0, np.float32))
    _, rew, _, _ = sb3.step_wait()
    assert rew.shape == (8,)
    assert rew[0] == 0.0 and rew[4] == 0.0  # ratio 0 = default for everyone: no credit for anyone
    sb3.step_async(np.array([[-1], [-1], [-1], [1]] * 2, np.float32))
    _, rew, _, infos = sb3.step_wait()
    assert np.all(rew[[0, 1, 2, 4, 5, 6]] == 0.0) and rew[3] != 0.0
    with pytest.raises(ValueError, match="wrapper='shared'"):
        make_vec_env("central", venv)


@pytest.mark.parametrize("kw, msg", [
    (dict(credit="per_class"), "credit"),
    (dict(credit="difference", credit_default=-1.0), "credit_default"),
    (dict(credit="difference", credit_default=9.0), "credit_default"),
    (dict(credit_default=1.0), "only applies with credit='difference'"),
    (dict(credit="difference", mode="pixel"), "mode='feature'"),
    (dict(credit="difference", reward_reference=0.0), "drop reward_reference"),
])
def test_bad_credit_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        RatioEnvConfig(**kw)


def test_central_view_refuses_difference_credit():
    with pytest.raises(ValueError, match="single agent"):
        SyntheticRatioCentralEnv(dataset=make_tiny_dataset(), **DIFF)


def test_default_is_shared_credit():
    assert RatioEnvConfig().credit == "shared" and RatioEnvConfig().credit_default == 0.0
    e = parallel_env(dataset=make_tiny_dataset(), **TINY)
    _, infos = e.reset(seed=0)
    assert e.core.h == 1 and "counterfactual_balanced_accuracy" not in infos["class_0"]
    _, rew, _, _, infos = e.step(act([1, -1, 0]))
    assert len(set(rew.values())) == 1 and "team_reward" not in infos["class_0"]
