"""Env v1: several synthetic sources as the action, unique draws, pool sizes in the observation, the -v1 ids."""
from __future__ import annotations

import types

import gymnasium
import numpy as np
import pettingzoo
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, parallel_seed_test, seed_test

from tailmix import envs
from tailmix.agents.baselines import baselines_for, make_baseline
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.sources import ArraySource, BankSource, GaussianSource, Source, make_source
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset
from tests.envs.helpers import whole_episode
from tests.envs.test_synthetic_ratio import TINY

DS = make_tiny_dataset()  # counts (24, 10, 4), 8x8x1


def array_source(ds=DS, n=5, name=None, classes=None):
    """Real train images of each class (the first ``n``) as a pool."""
    classes = range(ds.num_classes) if classes is None else classes
    return ArraySource({c: ds.train_images[ds.train_labels == c][:n] for c in classes}, ds.num_classes, name=name)


def three_sources():
    return ["augment", "gaussian", array_source(name="real")]


def kw(g: int, **over):
    out = dict(dataset=DS, **TINY)
    if g == 3:
        out["sources"] = three_sources()
    out.update(over)
    return out


# -- official checkers on the v1 ids, G = 1 and G = 3 -----------------------------------------
@pytest.mark.parametrize("g", [1, 3])
def test_pettingzoo_checkers_on_v1(g):
    make = lambda **k: pettingzoo.make("parallel", envs.PARALLEL_V1_ID, **kw(g, **k))  # noqa: E731
    aec = lambda **k: pettingzoo.make("aec", envs.PARALLEL_V1_ID, **kw(g, **k))  # noqa: E731
    parallel_api_test(make(), num_cycles=5)
    api_test(aec(), num_cycles=5)
    seed_test(aec, num_cycles=5)
    parallel_seed_test(make)
    mod = types.SimpleNamespace(parallel_env=lambda max_cycles: make(max_cycles=max_cycles),
                                env=lambda max_cycles: aec(max_cycles=max_cycles))
    max_cycles_test(mod)


@pytest.mark.parametrize("g", [1, 3])
def test_gymnasium_and_sb3_check_env_on_v1(g):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = gymnasium.make(envs.CENTRAL_V1_ID, **kw(g)).unwrapped
    assert env.action_space.shape == ((3,) if g == 1 else (3, 3))
    gym_check(env, skip_render_check=True)
    sb3_check(gymnasium.make(envs.CENTRAL_V1_ID, **kw(g)).unwrapped, warn=True)


def test_v1_ids_carry_the_v1_defaults_and_v0_ids_keep_v0s():
    v1 = pettingzoo.make("parallel", envs.PARALLEL_V1_ID, **kw(1))
    assert (v1.config.draw, v1.config.pool_obs) == ("unique", True)
    assert v1.metadata["name"] == envs.PARALLEL_V1_ID
    assert pettingzoo.make("parallel", envs.PARALLEL_V1_ID, **kw(1, draw="replace")).config.draw == "replace"
    g1 = gymnasium.make(envs.CENTRAL_V1_ID, **kw(1)).unwrapped
    assert (g1.config.draw, g1.config.pool_obs) == ("unique", True)
    v0 = pettingzoo.make("parallel", envs.PARALLEL_ID, **kw(1))
    assert (v0.config.draw, v0.config.pool_obs) == ("replace", False)
    assert v0.observation_space("class_0").shape == (8 + 3,)
    assert v1.observation_space("class_0").shape == (8 + 1 + 3,)  # one pool-fraction column
    envs.register_envs()  # still a no-op the second time


# -- the pool as an action --------------------------------------------------------------------
def test_one_source_in_a_list_is_the_v0_env_exactly():
    src = array_source()
    a = whole_episode(lambda: SyntheticRatioEnv(dataset=DS, source=src, **TINY), 3, 9)
    b = whole_episode(lambda: SyntheticRatioEnv(dataset=DS, sources=[src], **TINY), 3, 9)
    assert data_equivalence(a, b)
    e = SyntheticRatioEnv(dataset=DS, sources=[None], **TINY)  # None, "augment": the default augmentations
    assert e.source_names == ("augment",) and e.action_space("class_0").shape == (1,)


@pytest.mark.parametrize("mode", ["feature", "pixel"])
def test_same_seed_same_actions_same_whole_trajectory_with_three_sources(mode):
    sources = three_sources() if mode == "feature" else ["augment", array_source(), "augment"]

    def make():
        return SyntheticRatioEnv(dataset=DS, sources=sources, mode=mode, draw="unique", pool_obs=True,
                                 **{**TINY, "max_steps": 4})

    a, b, c = (whole_episode(make, seed, 123) for seed in (7, 7, 8))
    assert data_equivalence(a, b)
    assert not data_equivalence(a, c)


def test_sources_ratios_add_up_and_infos_report_each_source():
    e = SyntheticRatioEnv(**kw(3, max_ratio=2.0, pool_size=64))
    assert e.source_names == ("augment", "gaussian", "real")
    assert e.action_space("class_0") == gymnasium.spaces.Box(-1, 1, (3,), np.float32)
    e.reset(seed=0)
    act = {"class_0": np.array([-1, 0, 1], np.float32), "class_1": np.array([0, 0, -1], np.float32),
           "class_2": np.array([1, -1, -1], np.float32)}
    _, _, _, _, infos = e.step(act)
    expect = np.array([[0, 1, 2], [1, 1, 0], [2, 0, 0]], float)
    np.testing.assert_allclose(e.source_ratios, expect)
    np.testing.assert_allclose(e.ratios, expect.sum(1))
    counts = np.rint(expect * DS.train_counts[:, None]).astype(int)  # draw="replace" serves every request
    for i, a in enumerate(e.possible_agents):
        assert infos[a]["source_counts"].tolist() == counts[i].tolist()
        assert infos[a]["n_synthetic"] == counts[i].sum()
        assert infos[a]["ratio"] == pytest.approx(expect[i].sum())
        assert infos[a]["shortfall"] == 0


def test_observation_layout_with_three_sources_and_pool_obs():
    e = SyntheticRatioEnv(**kw(3, draw="unique", pool_obs=True, max_ratio=2.0, pool_size=16))
    cols = e.observation_columns
    assert cols[:4] == ("recall", "precision", "f1", "log_real_share")
    assert cols[4:7] == ("ratio@augment", "ratio@gaussian", "ratio@real")
    assert cols[7:10] == ("pool_quality@augment", "pool_quality@gaussian", "pool_quality@real")
    assert cols[10:12] == ("balanced_accuracy", "progress")
    assert cols[12:15] == ("pool_fraction@augment", "pool_fraction@gaussian", "pool_fraction@real")
    assert cols[15:] == ("is_class_0", "is_class_1", "is_class_2")
    obs, _ = e.reset(seed=0)
    sizes = np.array([[16, 16, 5], [16, 16, 5], [16, 16, 4]])
    frac = np.minimum(1, sizes / (2.0 * DS.train_counts[:, None]))
    for i, a in enumerate(e.possible_agents):
        assert obs[a].shape == (15 + 3,) and e.observation_space(a).contains(obs[a])
        np.testing.assert_allclose(obs[a][12:15], frac[i], rtol=1e-6)
    obs, *_ = e.step({a: np.array([1, -1, 0], np.float32) for a in e.agents})
    np.testing.assert_allclose(obs["class_1"][4:7], [1, 0, 0.5])


def test_vector_env_follows_single_envs_copy_by_copy_with_three_sources():
    k = 3
    opts = dict(dataset=DS, sources=three_sources(), draw="unique", pool_obs=True, **TINY)
    venv = SyntheticRatioVectorEnv(k, autoreset_mode="same_step", **opts)
    assert venv.single_action_space.shape == (3, 3) and venv.action_space.shape == (k, 3, 3)
    singles = [SyntheticRatioCentralEnv(**opts) for _ in range(k)]
    seeds = [11, 12, 40]
    vobs, _ = venv.reset(seed=seeds)
    sobs = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    rng = np.random.default_rng(0)
    for _ in range(TINY["max_steps"]):
        for i in range(k):
            assert np.allclose(vobs[i], sobs[i], atol=1e-5)
        acts = rng.uniform(-1, 1, (k, 3, 3)).astype(np.float32)
        vobs, vrew, _, vtrunc, vinfo = venv.step(acts)
        for i, e in enumerate(singles):
            o, r, _, tr, info = e.step(acts[i])
            assert vrew[i] == pytest.approx(r, abs=1e-5) and vtrunc[i] == tr
            step_info = vinfo["final_info"] if tr else vinfo  # SAME_STEP: the last step's infos (gymnasium's key)
            assert np.array_equal(step_info["source_counts"][i], info["source_counts"])
            assert np.array_equal(step_info["shortfall"][i], info["shortfall"])
            sobs[i] = o
    assert np.allclose(np.stack(vinfo["final_obs"]), np.stack(sobs), atol=1e-5)
    from tailmix.agents.wrappers import make_vec_env

    sb3 = make_vec_env("shared", venv, seed=0)
    assert sb3.action_space.shape == (3,) and sb3.reset().shape == (k * 3, 18)
    sb3.step_async(np.zeros((k * 3, 3), np.float32))
    assert sb3.step_wait()[1].shape == (k * 3,)


# -- unique draws -----------------------------------------------------------------------------
def _captured_mixes(env, actions):
    seen = []
    train = env.core.engine.train

    def spy(mixes):
        seen.append([np.asarray(m).copy() if not isinstance(m, tuple) else tuple(np.copy(p) for p in m)
                     for m in mixes])
        return train(mixes)

    env.core.engine.train = spy
    _, _, _, _, infos = env.step(actions)
    return seen[0][0], infos


@pytest.mark.parametrize("mode", ["feature", "pixel"])
@pytest.mark.parametrize("draw", ["unique", "replace"])
def test_unique_draws_never_repeat_an_image_and_report_the_shortfall(mode, draw):
    one = ArraySource({c: DS.train_images[DS.train_labels == c][:1] for c in range(3)}, 3)  # 1 image per class
    e = SyntheticRatioEnv(dataset=DS, source=one, mode=mode, draw=draw, **TINY)
    e.reset(seed=0)
    mix, infos = _captured_mixes(e, {a: np.ones(1, np.float32) for a in e.agents})  # ratio 8
    asked = 8 * DS.train_counts
    syn = mix[len(e.core.engine.real_rows(0)):]  # both engines: a mix is table rows, the real ones first
    repeats = len(syn) - len(np.unique(syn))
    if draw == "unique":
        assert repeats == 0
        assert [infos[a]["n_synthetic"] for a in e.possible_agents] == [1, 1, 1]
        assert [infos[a]["shortfall"] for a in e.possible_agents] == (asked - 1).tolist()
    else:  # today's behaviour: the one image is served 8 * n_real times
        assert repeats == (asked - 1).sum()
        assert [infos[a]["n_synthetic"] for a in e.possible_agents] == asked.tolist()
        assert [infos[a]["shortfall"] for a in e.possible_agents] == [0, 0, 0]


def test_unique_draws_cap_each_source_separately():
    e = SyntheticRatioEnv(dataset=DS, sources=[array_source(n=1), array_source(n=3)], draw="unique", **TINY)
    e.reset(seed=0)
    _, _, _, _, infos = e.step({a: np.ones(2, np.float32) for a in e.agents})
    assert infos["class_0"]["source_counts"].tolist() == [1, 3]
    assert infos["class_0"]["shortfall"] == 2 * 8 * 24 - 4
    assert infos["class_0"]["pool_sizes"].tolist() == [1, 3]


def test_empty_pool_zero_works_per_source_and_class():
    partial = array_source(classes=[0])  # nothing for classes 1 and 2
    e = SyntheticRatioEnv(dataset=DS, sources=[array_source(), partial], empty_pool="zero", draw="unique", **TINY)
    e.reset(seed=0)
    _, _, _, _, infos = e.step({a: np.ones(2, np.float32) for a in e.agents})
    assert infos["class_1"]["source_counts"].tolist() == [5, 0] and infos["class_1"]["shortfall"] == 2 * 80 - 5
    assert not infos["class_1"]["pool_empty"]  # source 0 still has images for it


# -- baselines per source ---------------------------------------------------------------------
def test_baselines_target_one_source_by_name_or_index():
    e = SyntheticRatioEnv(**kw(3, max_ratio=8.0))
    obs, _ = e.reset(seed=0)
    fill = np.clip(24 / DS.train_counts - 1, 0, 8)
    for spec, g in [("fill@gaussian", 1), ("fill@2", 2), ("fill", 0), ("fill@augment", 0)]:
        policy = make_baseline(spec)
        assert policy.name == spec
        actions = policy.act(obs, e)
        assert all(a.shape == (3,) for a in actions.values())
        ratios = e.action_to_ratio(np.stack([actions[a] for a in e.possible_agents]))
        expect = np.zeros((3, 3))
        expect[:, g] = fill
        np.testing.assert_allclose(ratios, expect, atol=1e-5)
    assert make_baseline("constant:0.5@real").name == "constant:0.5@real"
    rand = make_baseline("random@1")
    rand.reset(0)
    r = e.action_to_ratio(np.stack(list(rand.act(obs, e).values())))
    assert (r[:, [0, 2]] == 0).all() and (r[:, 1] > 0).all()
    with pytest.raises(ValueError, match="sources are"):
        make_baseline("fill@ddpm").act(obs, e)
    with pytest.raises(ValueError, match="after '@'"):
        make_baseline("fill@")
    assert "fill@gaussian" in baselines_for(e.source_names) and "inverse@real" in baselines_for(e.source_names)
    assert baselines_for(("augment",)) == baselines_for()


def test_plain_baselines_on_one_source_act_as_in_v0():
    e = SyntheticRatioEnv(dataset=DS, **TINY)
    obs, _ = e.reset(seed=0)
    for spec in ("fill", "inverse", "constant:1", "random:3"):
        p = make_baseline(spec)
        p.reset(3)
        a = p.act(obs, e)
        assert all(v.shape == (1,) and v.dtype == np.float32 for v in a.values())


# -- sources ----------------------------------------------------------------------------------
def test_make_source_kinds_and_the_protocol():
    src = make_source("augment", DS, pool_size=4)
    assert isinstance(src, Source) and (src.space, src.name) == ("image", "augment") and len(src.pool(0)) == 4
    gauss = make_source("gaussian", DS, pool_size=4)
    assert isinstance(gauss, GaussianSource) and gauss.space == "feature"
    with pytest.raises(ValueError, match="fit_features"):
        gauss.pool(0)
    plain = types.SimpleNamespace(num_classes=3, pool=lambda c: DS.train_images[:2], quality=lambda c: 1.0)
    wrapped = make_source(plain, DS, index=4)
    assert (wrapped.space, wrapped.name) == ("image", "source4") and len(wrapped.pool(1)) == 2
    bank = types.SimpleNamespace(manifest={"num_classes": 3, "generator_configs": {"ddpm": {}}},
                                 images=lambda c: DS.train_images[:2], quality=lambda c: 0.5)
    as_bank = make_source(bank, DS)
    assert isinstance(as_bank, BankSource) and as_bank.name == "ddpm" and as_bank.quality(0) == 0.5
    kept = array_source(name="mine")
    assert make_source(kept, DS) is kept
    e = SyntheticRatioEnv(dataset=DS, sources=["augment", "augment"], **TINY)
    assert e.source_names == ("augment", "augment_1")  # repeated kinds: distinct pools and names
    pools = e.core.engine.pool_sizes
    assert len(pools) == 6


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("over,msg", [
    (dict(sources=["augment", "diffusion"]), "not known"),
    (dict(sources=[]), "empty"),
    (dict(sources="augment"), "list"),
    (dict(sources=["augment"], source="augment"), "not both"),
    (dict(sources=["augment", object()]), "pool"),
    (dict(sources=["augment", "gaussian"], mode="pixel"), "mode='feature'"),
    (dict(sources=["augment", "augment"], credit="difference"), "several sources"),
    (dict(draw="sometimes"), "draw"),
    (dict(pool_obs=1), "pool_obs"),
])
def test_bad_source_lists_and_options_raise_clear_errors(over, msg):
    with pytest.raises(ValueError, match=msg):
        SyntheticRatioEnv(**{**dict(dataset=DS, **TINY), **over})


def test_a_class_no_source_can_serve_is_a_clear_error():
    e = SyntheticRatioEnv(dataset=DS, sources=[array_source(classes=[0]), array_source(classes=[0, 2])],
                          empty_pool="error", **TINY)
    e.reset(seed=0)
    with pytest.raises(ValueError, match=r"class 1 .*source 0"):
        e.step({a: np.ones(2, np.float32) for a in e.agents})
    e.step({"class_0": np.ones(2), "class_1": -np.ones(2), "class_2": np.array([-1.0, 1.0])})  # still usable


def test_wrong_action_shapes_with_three_sources():
    p = SyntheticRatioEnv(**kw(3))
    p.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\).*augment, gaussian, real"):
        p.step({a: np.zeros(1, np.float32) for a in p.agents})
    c = SyntheticRatioCentralEnv(**kw(3))
    c.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        c.step(np.zeros(3, np.float32))
    v = SyntheticRatioVectorEnv(2, **kw(3))
    v.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 3\)"):
        v.step(np.zeros((2, 3), np.float32))
