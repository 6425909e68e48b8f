"""The PettingZoo env and its gymnasium view under the official checkers, plus our own checks."""
from __future__ import annotations

import types

import gymnasium
import torch
import numpy as np
import pettingzoo
import pytest
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, parallel_seed_test, seed_test

from tailmix import envs
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.sources import ArraySource
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv, env as aec_env, parallel_env
from tests.conftest import make_tiny_dataset
from tests.envs.helpers import whole_episode

TINY = dict(encoder="random", pool_size=16, max_steps=3)


def tiny_kwargs(**over):
    kw = dict(dataset=make_tiny_dataset(), **TINY)
    kw.update(over)
    return kw


# -- official checkers -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["feature", "pixel"])
def test_parallel_api(mode):
    parallel_api_test(parallel_env(**tiny_kwargs(mode=mode)), num_cycles=5)


def test_aec_api():
    api_test(aec_env(**tiny_kwargs()), num_cycles=5)


def test_seed_tests():
    seed_test(lambda: aec_env(**tiny_kwargs()), num_cycles=5)
    parallel_seed_test(lambda: parallel_env(**tiny_kwargs()))


def test_max_cycles():
    mod = types.SimpleNamespace(parallel_env=lambda max_cycles: parallel_env(max_cycles=max_cycles, **tiny_kwargs()),
                                env=lambda max_cycles: aec_env(max_cycles=max_cycles, **tiny_kwargs()))
    max_cycles_test(mod)


def test_registered_ids_make_working_envs():
    envs.register_envs()  # a second registration is a no-op, not a warning
    penv = pettingzoo.make("parallel", envs.PARALLEL_ID, **tiny_kwargs())
    assert isinstance(penv, SyntheticRatioEnv)
    aenv = pettingzoo.make("aec", envs.PARALLEL_ID, **tiny_kwargs())
    aenv.reset(seed=0)
    genv = gymnasium.make(envs.CENTRAL_ID, **tiny_kwargs())
    obs, _ = genv.reset(seed=0)
    assert obs.shape == (3, 8 + 3)


def test_gymnasium_and_sb3_check_env():
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    gym_check(SyntheticRatioCentralEnv(**tiny_kwargs()), skip_render_check=True)
    sb3_check(SyntheticRatioCentralEnv(**tiny_kwargs()), warn=True)


# -- the contract ----------------------------------------------------------------------------
def test_spaces_observation_layout_and_state():
    e = parallel_env(**tiny_kwargs())
    obs, infos = e.reset(seed=1)
    assert e.possible_agents == ["class_0", "class_1", "class_2"]
    assert e.action_space("class_0") == gymnasium.spaces.Box(-1, 1, (1,), np.float32)
    for i, a in enumerate(e.agents):
        assert obs[a].shape == (11,) and obs[a].dtype == np.float32
        assert e.observation_space(a).contains(obs[a])
        assert obs[a][8 + i] == 1.0 and obs[a][8:].sum() == 1.0  # one-hot id
        assert e.class_names[i] == f"c{i}" and "class_name" not in infos[a]  # names: an env attribute
    assert e.state().shape == (33,)
    assert np.allclose(e.state()[:11], obs["class_0"])


def test_actions_map_to_ratios_and_draw_round_ratio_times_count():
    e = parallel_env(**tiny_kwargs(max_ratio=2.0))
    e.reset(seed=0)
    acts = {"class_0": np.array([-1.0], np.float32), "class_1": np.array([0.0], np.float32),
            "class_2": np.array([5.0], np.float32)}  # out of range: clipped to 1
    _, _, _, _, infos = e.step(acts)
    assert np.allclose(e.ratios, [0.0, 1.0, 2.0])
    assert [infos[a]["n_synthetic"] for a in e.possible_agents] == [0, 10, 8]
    assert np.allclose(e.ratio_to_action(e.action_to_ratio(np.array([-0.5, 0.25]))), [-0.5, 0.25])


def test_episode_truncates_and_reports_test_metrics_only_when_asked():
    for split in (None, "test"):
        e = parallel_env(**tiny_kwargs(eval_split=split))
        e.reset(seed=0)
        for t in range(3):
            obs, rew, term, trunc, infos = e.step({a: np.zeros(1, np.float32) for a in e.agents})
            assert len(set(rew.values())) == 1  # shared reward
            assert not any(term.values())
            assert all(trunc.values()) == (t == 2)
            assert ("test" in infos["class_0"]) == (split == "test" and t == 2)
        assert e.agents == []
    assert 0.0 <= infos["class_0"]["test"]["balanced_accuracy"] <= 1.0


@pytest.mark.parametrize("reward", ["accuracy", "delta", "final"])
def test_reward_options(reward):
    e = parallel_env(**tiny_kwargs(reward=reward))
    _, infos = e.reset(seed=3)
    prev = infos["class_0"]["balanced_accuracy"]
    for t in range(3):
        _, rew, _, _, infos = e.step({a: np.zeros(1, np.float32) for a in e.agents})
        bal = infos["class_0"]["balanced_accuracy"]
        expected = {"accuracy": bal, "delta": bal - prev, "final": bal if t == 2 else 0.0}[reward]
        assert rew["class_0"] == pytest.approx(expected)
        prev = bal


def test_synthetic_cost_is_charged_per_sample():
    free = parallel_env(**tiny_kwargs())
    paid = parallel_env(**tiny_kwargs(synthetic_cost=0.5))
    act = {a: np.ones(1, np.float32) for a in free.possible_agents}
    free.reset(seed=0)
    paid.reset(seed=0)
    _, r0, _, _, infos = free.step(act)
    _, r1, _, _, _ = paid.step(act)
    n_syn = sum(i["n_synthetic"] for i in infos.values())
    assert r0["class_0"] - r1["class_0"] == pytest.approx(0.5 * n_syn / 38)


def test_synthetic_data_changes_learning():
    """Ratios are not ignored: a different mix trains a different classifier."""
    heads = []
    for a in (-1.0, 1.0):
        e = parallel_env(**tiny_kwargs())
        e.reset(seed=0)
        e.step({k: np.array([a], np.float32) for k in e.possible_agents})
        heads.append(e.core.engine.head.params[0].clone())
    assert not np.allclose(heads[0].numpy(), heads[1].numpy())


@pytest.mark.parametrize("mode", ["feature", "pixel"])
def test_same_seed_same_actions_same_whole_trajectory(mode):
    """PettingZoo's parallel seed test looks at one step; we compare every step of an episode."""
    a, b, c = (whole_episode(lambda: parallel_env(**tiny_kwargs(mode=mode, max_steps=4)), seed, 123)
               for seed in (7, 7, 8))
    from gymnasium.utils.env_checker import data_equivalence

    assert data_equivalence(a, b)
    assert not data_equivalence(a, c)


def test_central_view_matches_parallel_env():
    p = parallel_env(**tiny_kwargs())
    g = SyntheticRatioCentralEnv(**tiny_kwargs())
    po, _ = p.reset(seed=5)
    go, _ = g.reset(seed=5)
    assert np.array_equal(np.stack([po[a] for a in p.possible_agents]), go)
    act = np.array([-0.5, 0.0, 0.5], np.float32)
    po, pr, _, _, _ = p.step({a: act[i:i + 1] for i, a in enumerate(p.possible_agents)})
    go, gr, _, _, _ = g.step(act)
    assert np.array_equal(np.stack([po[a] for a in p.possible_agents]), go) and pr["class_0"] == gr


def test_bank_like_source_is_accepted_and_quality_observed():
    ds = make_tiny_dataset()
    pools = {c: ds.train_images[ds.train_labels == c][:3] for c in range(3)}
    src = ArraySource(pools, 3, quality={0: 0.9, 1: 0.5, 2: 0.25})
    e = parallel_env(dataset=ds, source=src, **TINY)
    obs, _ = e.reset(seed=0)
    assert [obs[a][5] for a in e.possible_agents] == pytest.approx([0.9, 0.5, 0.25])
    e.step({a: np.ones(1, np.float32) for a in e.agents})  # pools of 3 serve 24 with replacement


def test_gaussian_feature_source():
    e = parallel_env(source="gaussian", **tiny_kwargs())
    e.reset(seed=0)
    e.step({a: np.ones(1, np.float32) for a in e.agents})


# -- bad input -------------------------------------------------------------------------------
def test_bad_actions_raise_clear_errors():
    e = parallel_env(**tiny_kwargs())
    with pytest.raises(RuntimeError, match="reset"):
        e.step({a: np.zeros(1, np.float32) for a in e.possible_agents})
    e.reset(seed=0)
    ok = {a: np.zeros(1, np.float32) for a in e.agents}
    for bad, msg in [({**ok, "class_0": np.array([np.nan])}, "finite"),
                     ({**ok, "class_1": np.array([np.inf])}, "finite"),
                     ({**ok, "class_0": np.zeros(2)}, "shape"),
                     ({k: v for k, v in ok.items() if k != "class_2"}, "missing"),
                     ({**ok, "class_9": np.zeros(1)}, "unknown"),
                     ([0.0, 0.0, 0.0], "dict")]:
        with pytest.raises(ValueError, match=msg):
            e.step(bad)
    for _ in range(3):
        e.step(ok)
    with pytest.raises(RuntimeError, match="ended"):
        e.step(ok)


def test_source_without_samples_for_a_requested_class():
    ds = make_tiny_dataset()
    src = ArraySource({0: ds.train_images[:2]}, 3)
    e = parallel_env(dataset=ds, source=src, **TINY)
    e.reset(seed=0)
    e.step({"class_0": np.ones(1), "class_1": -np.ones(1), "class_2": -np.ones(1)})  # ratio 0: fine
    with pytest.raises(ValueError, match="class 1"):
        e.step({"class_0": np.ones(1), "class_1": np.ones(1), "class_2": -np.ones(1)})


@pytest.mark.parametrize("kw,msg", [(dict(mode="gpu"), "mode"), (dict(reward="f1"), "reward"),
                                    (dict(max_steps=0), "max_steps"), (dict(max_ratio=float("nan")), "max_ratio"),
                                    (dict(eval_split="val"), "eval_split"), (dict(loss="focal"), "pixel"),
                                    (dict(source="diffusion"), "source")])
def test_bad_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        parallel_env(**tiny_kwargs(**kw))


def test_one_class_dataset_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        make_tiny_dataset(num_classes=1, counts=(5,))


def test_crossfit_encoder_features_are_out_of_fold():
    """Every real train feature comes from a fold model that did not train on that image."""
    from tailmix.envs.features import EncoderConfig, fit_encoder

    ds = make_tiny_dataset()
    enc = fit_encoder(ds, EncoderConfig(kind="crossfit", folds=2, epochs=15, seed=0))
    feats = enc.train_features()
    assert feats.shape == (len(ds.train_labels), 3)
    for f, model in enumerate(enc.models):
        held = enc.fold_of_train == f
        from tailmix.envs.features import _log_probs
        assert np.allclose(feats[held], _log_probs(model, ds.train_images[held]), atol=1e-5)
    # val features come from single fold models too, and the stacked head can learn from them
    e = parallel_env(dataset=ds, encoder="crossfit", encoder_folds=2, encoder_epochs=15, pool_size=16, max_steps=5)
    e.reset(seed=0)
    for _ in range(5):
        _, rew, _, _, _ = e.step({a: -np.ones(1, np.float32) for a in e.agents})
    assert rew["class_0"] > 0.5  # well above chance (1/3) on the toy bars


def test_empty_pool_zero_option_serves_nothing_and_flags_it():
    ds = make_tiny_dataset()
    src = ArraySource({0: ds.train_images[:2]}, 3)
    e = parallel_env(dataset=ds, source=src, **TINY)
    e.reset(seed=0)
    with pytest.raises(ValueError, match="empty_pool='zero'"):  # the error names the option (issue 26 item 13)
        e.step({a: np.ones(1, np.float32) for a in e.possible_agents})
    e = parallel_env(dataset=ds, source=src, empty_pool="zero", **TINY)
    e.reset(seed=0)
    _, _, _, _, infos = e.step({a: np.ones(1, np.float32) for a in e.possible_agents})
    assert [infos[a]["n_synthetic"] for a in e.possible_agents] == [24 * 8, 0, 0]
    assert [infos[a]["pool_empty"] for a in e.possible_agents] == [False, True, True]


def test_reward_replicas_average_independent_heads_and_bootstrap_reports_noise():
    e = parallel_env(**tiny_kwargs(reward_replicas=3, reward_bootstrap=50, max_steps=2))
    e.reset(seed=0)
    act = {a: np.zeros(1, np.float32) for a in e.agents}
    _, rew, _, _, infos = e.step(act)
    heads = e.core.engine.head.params[0]
    assert heads.shape[0] == 3 and not torch.allclose(heads[0], heads[1])  # independent replicas
    pred = e.core.engine.predict("val")
    from tailmix.classifiers.metrics import batched_confusion, metrics_from_confusion
    per = metrics_from_confusion(batched_confusion(e.core.engine.labels_of("val"), pred, 3))["balanced_accuracy"]
    assert rew["class_0"] == pytest.approx(per.mean())
    std = infos["class_0"]["reward_std"]
    assert np.isfinite(std) and std >= 0
    # the same seed repeats the replicas and the bootstrap
    e2 = parallel_env(**tiny_kwargs(reward_replicas=3, reward_bootstrap=50, max_steps=2))
    e2.reset(seed=0)
    _, rew2, _, _, infos2 = e2.step(act)
    assert rew2 == rew and infos2["class_0"]["reward_std"] == std


def test_reward_std_is_nan_without_bootstrap_and_pixel_reference_needs_feature_mode():
    e = parallel_env(**tiny_kwargs())
    _, infos = e.reset(seed=0)
    assert "reward_std" not in infos["class_0"]
    with pytest.raises(ValueError, match="feature"):  # pixel replicas train batched (tests/envs/test_pixel_batched.py)
        parallel_env(**tiny_kwargs(mode="pixel", reward_reference=0.0))


def test_crossfit_aligned_maps_every_fold_into_fold_zero_space():
    from tailmix.envs.features import EncoderConfig, fit_encoder

    ds = make_tiny_dataset()
    enc = fit_encoder(ds, EncoderConfig(kind="crossfit_aligned", folds=3, epochs=10, seed=0))
    feats = enc.train_features()
    assert feats.shape == (len(ds.train_labels), enc.models[0].feature_dim)
    assert np.allclose(feats.mean(0), 0, atol=1e-4)  # standardised
    for f in range(3):
        held = enc.fold_of_train == f
        assert np.allclose(feats[held], enc.fold_features(f, ds.train_images[held]), atol=1e-4)
    # images no model saw are encoded by one fold model each, reproducibly
    a = enc.encode(ds.val_images, salt="val")
    assert np.array_equal(a, enc.encode(ds.val_images, salt="val")) and np.isfinite(a).all()


def test_pixel_mode_ldam_drw_sees_the_episode_schedule():
    """Deferred re-weighting switches on late in the episode, not never (each step trains 1 epoch)."""
    e = parallel_env(**tiny_kwargs(mode="pixel", loss="ldam_drw", max_steps=5))
    e.reset(seed=0)
    seen = []
    from tailmix.envs import engine as eng

    orig = eng._EpisodeEpochs.set_epoch

    def spy(self, epoch, total):
        seen.append((self.offset + epoch, self.total))
        orig(self, epoch, total)

    eng._EpisodeEpochs.set_epoch = spy
    try:
        while e.agents:
            e.step({a: np.zeros(1, np.float32) for a in e.agents})
    finally:
        eng._EpisodeEpochs.set_epoch = orig
    assert seen == [(t, 5) for t in range(5)]


def test_reward_reference_head_shares_the_init_so_equal_actions_score_zero():
    e = parallel_env(**tiny_kwargs(reward_reference=0.0, max_steps=3))
    _, infos = e.reset(seed=4)
    assert infos["class_0"]["reference_balanced_accuracy"] == infos["class_0"]["balanced_accuracy"]
    for _ in range(2):  # ratio 0 = the reference's ratio: identical heads, zero advantage, every step
        _, rew, _, _, infos = e.step({a: -np.ones(1, np.float32) for a in e.agents})
        assert rew["class_0"] == 0.0
    _, rew, _, _, infos = e.step({a: np.ones(1, np.float32) for a in e.agents})
    i = infos["class_0"]
    assert rew["class_0"] == pytest.approx(i["balanced_accuracy"] - i["reference_balanced_accuracy"])
    heads = e.core.engine.head.params[0]
    assert heads.shape[0] == 2 and not torch.equal(heads[0], heads[1])
    with pytest.raises(ValueError, match="reward_reference"):
        parallel_env(**tiny_kwargs(mode="pixel", reward_reference=0.0))


def test_pixel_mode_is_one_training_run_with_a_cosine_schedule_over_the_episode():
    """One AdamW lives through the episode (its step count grows) and its rate decays from lr to near 0."""
    e = parallel_env(**tiny_kwargs(mode="pixel", max_steps=4))
    e.reset(seed=0)
    engine = e.core.engine
    lrs, steps = [], []
    while e.agents:
        lrs.append(engine.learning_rate())
        e.step({a: np.zeros(1, np.float32) for a in e.agents})
        assert engine.optimizer.param_groups[0]["lr"] == lrs[-1]
        steps.append(int(next(iter(engine.optimizer.state.values()))["step"]))
    base = engine.lr
    assert lrs == pytest.approx([base * 0.5 * (1 + np.cos(np.pi * t / 4)) for t in range(4)])
    assert lrs[0] == base and lrs[-1] < 0.2 * base
    assert steps[0] > 0 and all(b - a == steps[0] for a, b in zip(steps, steps[1:]))  # moments carried over
    first = e.core.engine.optimizer
    e.reset(seed=0)
    assert e.core.engine.optimizer is not first and not e.core.engine.optimizer.state  # a new run per episode


def test_pixel_mode_matches_compute_across_actions():
    """A step trains as many mini-batches at the largest ratio as at ratio 0: an epoch is n_real samples of the mix."""
    counts = {}
    for action in (-1.0, 1.0):
        e = parallel_env(**tiny_kwargs(mode="pixel", max_steps=2, epochs_per_step=2))
        e.reset(seed=0)
        _, _, _, _, infos = e.step({a: np.full(1, action, np.float32) for a in e.agents})
        counts[action] = int(next(iter(e.core.engine.optimizer.state.values()))["step"])
        assert (sum(i["n_synthetic"] for i in infos.values()) > 0) == (action > 0)
    n_real, batch = len(e.core.dataset.train_labels), e.core.engine.batch_size
    per_epoch = -(-n_real // batch) - (n_real % batch == 1)  # a trailing batch of one joins the one before
    assert counts[-1.0] == counts[1.0] == 2 * per_epoch
