"""Numerical faults: a step whose training diverges (NaN/inf loss or head) is reported and rolled back.

Faults are injected where they arise in practice: non-finite synthetic features (a broken generator or
encoder), a non-finite real row, a learning rate far too large, and a pixel-mode CNN that blows up. The env
must flag the step (``infos[agent]["nan_loss"] = True``), restore the classifier to its state before the
step, and keep later steps finite; in the batched env only the copy that diverged is rolled back.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset

FAST = dict(encoder="random", pool_size=16, max_steps=5)
ONLY_CLASS_1 = {"class_0": -np.ones(1), "class_1": np.ones(1), "class_2": -np.ones(1)}  # synthetic only for 1
NO_SYNTHETIC = {"class_0": -np.ones(1), "class_1": -np.ones(1), "class_2": -np.ones(1)}


def poison_pool(engine, cls: int, value: float) -> None:
    """Overwrite class ``cls``'s synthetic rows of the feature table (as a broken generator would produce)."""
    start, n = int(engine.pool_starts[cls]), int(engine.pool_sizes[cls])
    engine.table[start:start + n] = value


def head_state(engine) -> list[torch.Tensor]:
    s = engine.state_dict()
    return [t.clone() for t in (*s["params"], *s["m"], *s["v"], s["t"])]


def finite_state(engine) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in head_state(engine))


def assert_obs_ok(env, obs) -> None:
    for agent, o in obs.items():
        assert np.isfinite(o).all() and env.observation_space(agent).contains(o), (agent, o)


@pytest.mark.parametrize("head", ["linear", "mlp"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_synthetic_features_are_flagged_and_rolled_back(head, value):
    env = SyntheticRatioEnv(dataset=make_tiny_dataset(), head=head, reward="delta", **FAST)
    env.reset(seed=0)
    _, _, _, _, infos = env.step(NO_SYNTHETIC)
    assert not any("nan_loss" in i for i in infos.values())  # a healthy step is not flagged
    engine = env.core.engine
    before, bal_before = head_state(engine), infos["class_0"]["balanced_accuracy"]
    poison_pool(engine, 1, value)

    obs, rew, _, _, infos = env.step(ONLY_CLASS_1)
    assert all(i["nan_loss"] is True for i in infos.values())
    for old, new in zip(before, head_state(engine)):  # params, Adam moments and step count all restored
        assert torch.equal(old, new)
    assert infos["class_0"]["balanced_accuracy"] == bal_before  # same head, same predictions
    assert rew["class_0"] == 0.0  # "delta" of a rolled-back step
    assert_obs_ok(env, obs)
    assert infos["class_1"]["n_synthetic"] == env.max_ratio * 10  # the infos still say what was drawn

    for _ in range(3):  # later steps without the broken pool train normally
        obs, rew, _, _, infos = env.step(NO_SYNTHETIC)
        assert not any("nan_loss" in i for i in infos.values())
        assert_obs_ok(env, obs)
        assert np.isfinite(list(rew.values())).all()
    assert finite_state(engine)
    assert not torch.equal(before[0], head_state(engine)[0])  # and it did keep learning


@pytest.mark.parametrize("head", ["linear", "mlp"])
@pytest.mark.parametrize("lr,epochs", [(1e30, 1), (1e30, 3), (1e38, 1), (3e38, 2)])
def test_huge_learning_rate_never_leaves_a_non_finite_head(head, lr, epochs):
    """The loss is taken before the last update, so the head state itself must be checked too."""
    env = SyntheticRatioEnv(dataset=make_tiny_dataset(), head=head, lr=lr, epochs_per_step=epochs, **FAST)
    env.reset(seed=0)
    flagged = 0
    while env.agents:
        obs, rew, _, _, infos = env.step({a: np.ones(1) for a in env.agents})
        flagged += bool(infos["class_0"].get("nan_loss"))
        assert finite_state(env.core.engine), f"step {infos['class_0']['step']} left a non-finite head"
        assert_obs_ok(env, obs)
        assert np.isfinite(list(rew.values())).all()
    assert flagged >= 1  # these rates do diverge; the env must say so


def test_a_non_finite_real_row_rolls_back_every_step_and_reset_recovers():
    env = SyntheticRatioEnv(dataset=make_tiny_dataset(), **FAST)
    env.reset(seed=1)
    engine = env.core.engine
    init = head_state(engine)
    original = engine.table[0].clone()
    engine.table[0] = float("nan")
    while env.agents:
        obs, rew, _, trunc, infos = env.step(NO_SYNTHETIC)
        assert infos["class_0"]["nan_loss"] is True
        assert_obs_ok(env, obs)
    assert all(trunc.values())  # the episode still ends normally
    for old, new in zip(init, head_state(engine)):
        assert torch.equal(old, new)  # never trained on a poisoned mix
    engine.table[0] = original
    env.reset(seed=1)
    _, _, _, _, infos = env.step(NO_SYNTHETIC)
    assert "nan_loss" not in infos["class_0"] and finite_state(engine)


def test_central_view_reports_nan_loss():
    env = SyntheticRatioCentralEnv(dataset=make_tiny_dataset(), **FAST)
    env.reset(seed=0)
    poison_pool(env.core.engine, 2, np.nan)
    obs, rew, _, _, info = env.step(np.array([-1.0, -1.0, 1.0], np.float32))
    assert info["nan_loss"] is True and np.isfinite(rew) and np.isfinite(obs).all()
    obs, rew, _, _, info = env.step(np.array([-1.0, -1.0, -1.0], np.float32))
    assert "nan_loss" not in info and env.observation_space.contains(obs)


def test_vector_env_rolls_back_only_the_copy_that_diverged():
    ds = make_tiny_dataset()
    bad = SyntheticRatioVectorEnv(3, dataset=ds, **FAST)
    ref = SyntheticRatioVectorEnv(3, dataset=ds, **FAST)  # the same copies, never poisoned
    seeds = [3, 4, 5]
    bad.reset(seed=seeds)
    ref.reset(seed=seeds)
    warm = np.full((3, 3), -0.5, np.float32)
    bad.step(warm)
    ref.step(warm)
    before = head_state(bad.core.engine)
    poison_pool(bad.core.engine, 1, np.nan)

    act = np.full((3, 3), -1.0, np.float32)
    act[1, 1] = 1.0  # only copy 1 draws the broken class-1 pool
    obs_b, rew_b, _, _, info_b = bad.step(act)
    obs_r, rew_r, _, _, info_r = ref.step(act)
    # as gymnasium's SyncVectorEnv batches the central env's flag: only where set, with its mask
    assert info_b["nan_loss"].tolist() == info_b["_nan_loss"].tolist() == [False, True, False]
    assert "nan_loss" not in info_r and "_nan_loss" not in info_r
    after, reference = head_state(bad.core.engine), head_state(ref.core.engine)
    for old, new, want in zip(before, after, reference):
        assert torch.equal(new[1], old[1])  # copy 1 rolled back
        for k in (0, 2):  # the others trained exactly as if nothing had happened
            assert torch.equal(new[k], want[k])
    assert np.array_equal(obs_b[[0, 2]], obs_r[[0, 2]]) and np.array_equal(rew_b[[0, 2]], rew_r[[0, 2]])
    assert bad.observation_space.contains(obs_b) and np.isfinite(rew_b).all()

    for _ in range(2):  # afterwards every copy, the rolled-back one included, trains normally
        obs_b, rew_b, _, _, info_b = bad.step(np.full((3, 3), -1.0, np.float32))
        assert "nan_loss" not in info_b and np.isfinite(obs_b).all() and np.isfinite(rew_b).all()
    assert finite_state(bad.core.engine)
    assert not torch.equal(head_state(bad.core.engine)[0][1], before[0][1])


@pytest.mark.parametrize("reported_loss", [float("nan"), 0.5])
def test_pixel_mode_blow_up_is_rolled_back(monkeypatch, reported_loss):
    """A CNN step that leaves NaN weights is undone, whether or not its reported loss was finite."""
    import tailmix.classifiers.training as training

    env = SyntheticRatioEnv(dataset=make_tiny_dataset(), mode="pixel", epochs_per_step=1, **FAST)
    env.reset(seed=0)
    _, _, _, _, infos = env.step(NO_SYNTHETIC)
    model = env.core.engine.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = training.train_classifier

    def blow_up(model, *args, **kwargs):
        real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return {"loss": [reported_loss]}

    opt_before = copy.deepcopy(env.core.engine.optimizer.state_dict()["state"])
    monkeypatch.setattr(training, "train_classifier", blow_up)
    obs, rew, _, _, bad_infos = env.step(NO_SYNTHETIC)
    assert bad_infos["class_0"]["nan_loss"] is True
    for k, v in env.core.engine.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    opt_after = env.core.engine.optimizer.state_dict()["state"]  # Adam's moments and step counts roll back too
    assert opt_before.keys() == opt_after.keys() and opt_before
    for i in opt_before:
        for k, v in opt_before[i].items():
            assert torch.equal(v, opt_after[i][k]), (i, k)
    assert bad_infos["class_0"]["balanced_accuracy"] == infos["class_0"]["balanced_accuracy"]
    assert_obs_ok(env, obs)
    monkeypatch.setattr(training, "train_classifier", real)
    obs, rew, _, _, infos = env.step(NO_SYNTHETIC)
    assert "nan_loss" not in infos["class_0"]
    assert_obs_ok(env, obs)
    assert all(bool(torch.isfinite(v).all()) for v in env.core.engine.model.state_dict().values()
               if v.is_floating_point())
