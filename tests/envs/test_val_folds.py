"""The cross-validated reward (``val_folds``): folds of train + val, one held out per episode, honest features."""
from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test, seed_test

from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.folds import CrossValidationFolds
from tailmix.envs.synthetic_ratio import env as aec_env, parallel_env
from tests.conftest import make_tiny_dataset

TINY = dict(encoder="random", pool_size=16, max_steps=3)


def tiny_kwargs(**over):
    kw = dict(dataset=make_tiny_dataset(), **TINY)
    kw.update(over)
    return kw


def _acts(env, value=0.0):
    return {a: np.full(1, value, np.float32) for a in env.agents}


def _rollout(env, seed, actions):
    obs, infos = env.reset(seed=seed)
    out = [(obs, None, infos)]
    for a in actions:
        obs, rew, _, _, infos = env.step({k: np.full(1, a[i], np.float32) for i, k in enumerate(env.agents)})
        out.append((obs, rew, infos))
    return out


def test_folds_are_stratified_and_partition_train_and_val():
    ds = make_tiny_dataset()
    f = CrossValidationFolds(ds.train_labels, ds.val_labels, 3, k=4, seed=0)
    pooled = np.concatenate([ds.train_labels, ds.val_labels])
    assert np.array_equal(f.labels, pooled) and len(f) == len(pooled)
    held = np.concatenate(f.held_out)
    assert np.array_equal(np.sort(held), np.arange(len(pooled)))  # a partition: every image in exactly one fold
    for fold in range(4):
        assert np.array_equal(np.sort(np.concatenate([f.train_rows[fold], f.held_out[fold]])), np.arange(len(pooled)))
        assert not np.intersect1d(f.train_rows[fold], f.held_out[fold]).size
        assert np.array_equal(f.counts[fold], np.bincount(pooled[f.train_rows[fold]], minlength=3))
    per = np.stack([np.bincount(pooled[h], minlength=3) for h in f.held_out])  # (folds, classes)
    assert (per >= 1).all() and (per.max(0) - per.min(0) <= 1).all()  # stratified: sizes differ by at most one
    same = CrossValidationFolds(ds.train_labels, ds.val_labels, 3, k=4, seed=0)
    other = CrossValidationFolds(ds.train_labels, ds.val_labels, 3, k=4, seed=1)
    assert np.array_equal(same.fold, f.fold) and not np.array_equal(other.fold, f.fold)


def test_episode_trains_and_rewards_on_disjoint_rows():
    e = parallel_env(**tiny_kwargs(val_folds=3))
    eng = e.core.engine
    for seed in range(6):
        _, infos = e.reset(seed=seed)
        fold = infos["class_0"]["val_fold"]
        val_rows = np.flatnonzero(eng.val_mask[0])
        assert np.array_equal(val_rows, e.core.folds.held_out[fold])
        mix = eng.mix_indices(np.full((1, 3), 5), [np.random.default_rng(0)])[0]
        real = mix[mix < len(e.core.folds)]  # rows below the pooled block's end are real images
        assert np.array_equal(real, e.core.folds.train_rows[fold])
        assert not np.intersect1d(real, val_rows).size
        assert [infos[a]["n_real"] for a in e.possible_agents] == e.core.folds.counts[fold].tolist()
        _, rew, _, _, infos = e.step(_acts(e, 1.0))
        # the reward is the balanced accuracy on the held-out fold only
        pred = eng.predict("val")[0, val_rows]
        y = eng.labels_of("val")[val_rows]
        bal = np.mean([(pred[y == c] == c).mean() for c in range(3)])
        assert rew["class_0"] == pytest.approx(bal)
        assert [infos[a]["n_synthetic"] for a in e.possible_agents] == (e.core.folds.counts[fold] * 8).tolist()  # ratio 8


def test_reset_seed_picks_the_fold_and_the_same_seed_repeats_it():
    e = parallel_env(**tiny_kwargs(val_folds=3))
    folds = [e.reset(seed=s)[1]["class_0"]["val_fold"] for s in range(12)]
    assert set(folds) == {0, 1, 2}
    actions = [np.array([0.2, -0.5, 1.0]), np.array([1.0, 0.0, -1.0]), np.array([-0.3, 0.4, 0.9])]
    a = _rollout(parallel_env(**tiny_kwargs(val_folds=3)), 7, actions)
    b = _rollout(parallel_env(**tiny_kwargs(val_folds=3)), 7, actions)
    for (oa, ra, ia), (ob, rb, ib) in zip(a, b):
        assert ia["class_0"]["val_fold"] == ib["class_0"]["val_fold"]
        for k in oa:
            assert np.array_equal(oa[k], ob[k])
        assert ra == rb
    # observations carry the episode's real shares: copies on different folds differ
    shares = {}
    for s in range(12):
        obs, infos = e.reset(seed=s)
        shares[infos["class_0"]["val_fold"]] = obs["class_2"][3]
        counts = e.core.folds.counts[infos["class_0"]["val_fold"]]
        assert obs["class_2"][3] == pytest.approx(np.log(counts[2] / counts.sum()))
    assert len(set(np.round(list(shares.values()), 6))) > 1


def test_pooled_encoder_features_are_out_of_fold(tmp_path):
    """Every pooled train + val feature comes from a fold model that did not train on that image."""
    from tailmix.envs import features
    from tailmix.envs.features import EncoderConfig, _log_probs, fit_encoder

    ds = make_tiny_dataset()
    cfg = EncoderConfig(kind="crossfit", folds=2, epochs=15, seed=0)
    features._MEMORY.clear()  # another test in this process may hold these encoders in memory (then no file here)
    enc = fit_encoder(ds, cfg, pool_val=True, cache_dir=tmp_path)
    x = np.concatenate([ds.train_images, ds.val_images])
    feats = enc.train_features()
    assert enc.pooled_val and feats.shape == (len(x), 3)
    for f, model in enumerate(enc.models):
        held = enc.fold_of_train == f
        assert held[len(ds.train_labels):].any()  # val images are held out by some fold model, as train ones
        assert np.allclose(feats[held], _log_probs(model, x[held]), atol=1e-5)
    # a fold model trained on the images outside its fold: it fits those better than the ones it held out
    m0 = enc.models[0]
    inside, outside = enc.fold_of_train != 0, enc.fold_of_train == 0
    y = np.concatenate([ds.train_labels, ds.val_labels])
    lp = _log_probs(m0, x)
    assert lp[inside, y[inside]].mean() > lp[outside, y[outside]].mean()
    # cached apart from the train-split encoder, and reloaded as pooled
    plain = fit_encoder(ds, cfg, cache_dir=tmp_path)
    assert not plain.pooled_val and len(plain.train_features()) == len(ds.train_labels)
    features._MEMORY.clear()
    again = fit_encoder(ds, cfg, pool_val=True, cache_dir=tmp_path)
    assert again.pooled_val and np.array_equal(again.train_features(), feats)
    assert len(list(tmp_path.glob("encoder-*.pt"))) == 2


def test_env_feature_rows_are_the_pooled_out_of_fold_features():
    e = parallel_env(**tiny_kwargs(encoder="crossfit", encoder_folds=2, encoder_epochs=3, val_folds=3))
    from tailmix.envs.features import EncoderConfig, fit_encoder

    enc = fit_encoder(e.dataset, EncoderConfig(kind="crossfit", folds=2, epochs=3, seed=0), pool_val=True)
    n = len(e.core.folds)
    assert np.array_equal(e.core.engine.table[:n].numpy(), enc.train_features())


def test_val_folds_1_is_the_fixed_split_env():
    actions = [np.array([0.2, -0.5, 1.0]), np.array([1.0, 0.0, -1.0]), np.array([-0.3, 0.4, 0.9])]
    for extra in ({}, {"reward_reference": 0.0, "synthetic_cost": 0.1}):
        a = _rollout(parallel_env(**tiny_kwargs(**extra)), 3, actions)
        b = _rollout(parallel_env(**tiny_kwargs(val_folds=1, **extra)), 3, actions)
        for (oa, ra, ia), (ob, rb, ib) in zip(a, b):
            for k in oa:
                assert np.array_equal(oa[k], ob[k])
            assert ra == rb
            assert ia == ib and "val_fold" not in ia["class_0"]


def test_official_checkers_with_val_folds():
    from gymnasium.utils.env_checker import check_env as gym_check

    parallel_api_test(parallel_env(**tiny_kwargs(val_folds=3)), num_cycles=5)
    seed_test(lambda: aec_env(**tiny_kwargs(val_folds=3)), num_cycles=5)
    parallel_seed_test(lambda: parallel_env(**tiny_kwargs(val_folds=3)))
    gym_check(SyntheticRatioCentralEnv(**tiny_kwargs(val_folds=3)), skip_render_check=True)


def test_central_view_and_test_split_at_episode_end():
    e = SyntheticRatioCentralEnv(**tiny_kwargs(val_folds=3, eval_split="test"))
    _, info = e.reset(seed=1)
    assert isinstance(info["val_fold"], np.integer) and 0 <= info["val_fold"] < 3
    assert e.train_counts.tolist() == e.core.folds.counts[info["val_fold"]].tolist()
    for _ in range(3):
        _, _, _, truncated, info = e.step(np.zeros(3, np.float32))
    assert truncated and "test" in info and len(info["test"]["recall"]) == 3


def test_vector_env_follows_single_envs_copy_by_copy():
    from tailmix.envs.vector import SyntheticRatioVectorEnv

    kw = tiny_kwargs(val_folds=3, reward_reference=0.0, synthetic_cost=0.01)
    v = SyntheticRatioVectorEnv(4, autoreset_mode="same_step", **kw)
    obs, info = v.reset(seed=[0, 1, 2, 3])
    assert len(set(info["val_fold"].tolist())) > 1  # the copies are on different folds
    rng = np.random.default_rng(0)
    acts = [rng.uniform(-1, 1, (4, 3)).astype(np.float32) for _ in range(3)]
    seen_obs, seen_rew = [obs], []
    for a in acts:
        o, r, _, truncated, inf = v.step(a)
        seen_obs.append(inf["final_obs"] if truncated.any() else o)
        seen_rew.append(r)
    for k in range(4):
        e = SyntheticRatioCentralEnv(**kw)
        o, i = e.reset(seed=k)
        assert i["val_fold"] == info["val_fold"][k]
        np.testing.assert_allclose(o, seen_obs[0][k], atol=1e-6)
        for t, a in enumerate(acts):
            o, r, _, _, _ = e.step(a[k])
            np.testing.assert_allclose(o, seen_obs[t + 1][k], atol=1e-5)
            assert r == pytest.approx(seen_rew[t][k], abs=1e-6)


def test_difference_credit_and_replicas_use_the_episode_folds():
    e = parallel_env(**tiny_kwargs(val_folds=3, credit="difference", reward_replicas=2, max_steps=2))
    e.reset(seed=0)
    _, rew, _, _, infos = e.step(_acts(e, -1.0))  # every class at the default ratio 0: every difference is 0
    assert all(r == 0.0 for r in rew.values())
    _, rew, _, _, _ = e.step(_acts(e, 0.5))
    assert all(np.isfinite(list(rew.values())))


def test_pixel_mode_trains_on_the_folds():
    e = parallel_env(**tiny_kwargs(mode="pixel", val_folds=3, max_steps=1))
    _, infos = e.reset(seed=2)
    fold = infos["class_0"]["val_fold"]
    eng, folds = e.core.engine, e.core.folds
    assert np.array_equal(eng._real_y, folds.labels[folds.train_rows[fold]])
    assert np.array_equal(eng.labels_of("val"), folds.labels[folds.held_out[fold]])
    _, rew, _, _, _ = e.step(_acts(e, 0.0))
    assert 0.0 <= rew["class_0"] <= 1.0


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3", True, None])
def test_bad_val_folds_values_raise(bad):
    with pytest.raises(ValueError, match="val_folds"):
        parallel_env(**tiny_kwargs(val_folds=bad))


def test_too_many_folds_for_a_class_and_supervised_encoder_raise():
    # the rarest tiny class has 4 train + 6 val images
    with pytest.raises(ValueError, match="val_folds=11 needs at least 11 images of every class"):
        parallel_env(**tiny_kwargs(val_folds=11))
    parallel_env(**tiny_kwargs(val_folds=10))  # exactly enough
    with pytest.raises(ValueError, match="supervised"):
        parallel_env(**tiny_kwargs(encoder="supervised", val_folds=2))


def test_cli_prefits_the_pooled_encoder(tmp_path):
    import tailmix.pipeline as ta
    from tailmix.envs import features
    from tailmix.envs.features import EncoderConfig, fit_encoder

    kw = tiny_kwargs(encoder="crossfit", encoder_folds=2, encoder_epochs=2, val_folds=3, cache_dir=str(tmp_path))
    features._MEMORY.clear()
    ta.ensure_encoder(kw, progress=False)
    cfg = EncoderConfig(kind="crossfit", folds=2, epochs=2, seed=0)
    key = features._cache_key(kw["dataset"], cfg, None, pool_val=True)
    assert [p.name for p in tmp_path.glob("encoder-*.pt")] == [f"encoder-{key}.pt"]  # the pooled one, not train-only
    features._MEMORY.clear()
    assert fit_encoder(kw["dataset"], cfg, pool_val=True, cache_dir=tmp_path).pooled_val
