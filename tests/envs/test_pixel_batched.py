"""Pixel mode over several heads (vector env, reward_replicas): one grouped CNN whose copies follow the single
pixel env bit for bit on the CPU; a blown-up head is rolled back alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.pixel_batched import BatchedPixelEngine
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset

TINY = dict(mode="pixel", pool_size=16, max_steps=3, max_ratio=2.0, batch_size=8)


@pytest.mark.parametrize("loss, sources", [("ce", None), ("logit_adjustment", None), ("ce", [None, "augment"])],
                         ids=["ce", "logit_adjustment", "two-sources"])
def test_vector_pixel_copies_equal_single_pixel_envs(loss, sources):
    ds = make_tiny_dataset()
    k = 3
    kw = dict(loss=loss, eval_split="test", **TINY) | ({} if sources is None else dict(sources=sources))
    venv = SyntheticRatioVectorEnv(k, dataset=ds, autoreset_mode=AutoresetMode.SAME_STEP, **kw)
    assert isinstance(venv.core.engine, BatchedPixelEngine)
    singles = [SyntheticRatioCentralEnv(dataset=ds, **kw) for _ in range(k)]
    seeds = [3, 4, 50]
    vobs, _ = venv.reset(seed=seeds)
    sobs = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    rng = np.random.default_rng(0)
    for _ in range(TINY["max_steps"]):
        for i in range(k):
            assert np.array_equal(vobs[i], sobs[i])
        acts = rng.uniform(-1, 1, (k, *venv.single_action_space.shape)).astype(np.float32)
        vobs, vrew, _, _, vinfo = venv.step(acts)
        for i, e in enumerate(singles):
            o, r, _, _, info = e.step(acts[i])
            assert vrew[i] == r  # bit-identical on the CPU
            # SAME_STEP: an ended copy's infos are its new episode's; its last step's are under final_info
            ended = "final_info" in vinfo and bool(vinfo["_final_info"][i])
            step_info = vinfo["final_info"] if ended else vinfo
            assert np.array_equal(step_info["n_synthetic"][i], info["n_synthetic"])
            sobs[i] = o
    assert np.array_equal(np.stack(list(vinfo["final_obs"])), np.stack(sobs))
    for i in range(k):  # the episode-end test report too
        assert vinfo["final_info"]["test"]["balanced_accuracy"][i] == info_test(singles[i])


def info_test(env) -> float:
    return env.core.test_report(0)["balanced_accuracy"]


def test_copies_reset_apart_keep_their_own_schedule():
    """A reset mask restarts one copy: its learning rate and Adam steps start over, the others' go on."""
    ds = make_tiny_dataset()
    venv = SyntheticRatioVectorEnv(2, dataset=ds, autoreset_mode=AutoresetMode.DISABLED, **dict(TINY, max_steps=4))
    single = SyntheticRatioCentralEnv(dataset=ds, **dict(TINY, max_steps=4))
    venv.reset(seed=[1, 2])
    acts = np.zeros((2, 3), np.float32)
    venv.step(acts)
    venv.reset(options={"reset_mask": np.array([False, True])}, seed=[None, 9])
    sobs, _ = single.reset(seed=9)
    for _ in range(2):
        vobs, vrew, *_ = venv.step(acts)
        sobs, srew, *_ = single.step(acts[1])
        assert vrew[1] == srew and np.array_equal(vobs[1], sobs)
    engine = venv.core.engine
    assert engine.optimizer.steps[0] > engine.optimizer.steps[1] > 0


def test_pixel_replicas_train_batched_and_average():
    env = SyntheticRatioEnv(dataset=make_tiny_dataset(), reward_replicas=2, **TINY)
    assert isinstance(env.core.engine, BatchedPixelEngine) and env.core.engine.k == 2
    env.reset(seed=0)
    _, rew, _, _, _ = env.step({a: np.zeros(1, np.float32) for a in env.possible_agents})
    assert np.isfinite(list(rew.values())).all()


def test_one_blown_up_head_is_rolled_back_alone(monkeypatch):
    import tailmix.classifiers.batched_cnn as bc

    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **TINY)
    venv.reset(seed=[0, 1])
    acts = np.zeros((2, 3), np.float32)
    venv.step(acts)
    engine = venv.core.engine
    before = [[t.clone() for t in engine.model.copy_tensors(h)] for h in range(2)]
    steps_before = list(engine.optimizer.steps)
    real = bc.train_batched

    def blow_up_head_1(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        with torch.no_grad():
            model.copy_tensors(1)[0].fill_(float("nan"))
        return out

    monkeypatch.setattr(bc, "train_batched", blow_up_head_1)
    _, rew, _, _, infos = venv.step(acts)
    assert infos["nan_loss"].tolist() == [False, True]
    assert all(torch.equal(a, b) for a, b in zip(engine.model.copy_tensors(1), before[1]))
    assert not all(torch.equal(a, b) for a, b in zip(engine.model.copy_tensors(0), before[0]))
    assert engine.optimizer.steps[1] == steps_before[1] and engine.optimizer.steps[0] > steps_before[0]
    assert engine.heads_finite().all() and np.isfinite(rew).all()


def test_unsupported_settings_are_clear_errors():
    ds = make_tiny_dataset(counts=(24, 12, 8))
    with pytest.raises(ValueError, match="val_folds"):
        SyntheticRatioVectorEnv(2, dataset=ds, val_folds=2, **TINY)
    with pytest.raises(ValueError, match="small_cnn"):
        SyntheticRatioVectorEnv(2, dataset=ds, backbone="resnet18", **TINY)


def _fidelity():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
    spec = importlib.util.spec_from_file_location("fidelity_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fidelity_pixel_batch_scores_equal_one_seed_at_a_time(tmp_path):
    """--pixel-batch K replays K seeds in one batched env; the scores are the one-by-one scores, bit for bit."""
    import json
    from types import SimpleNamespace

    from tailmix.envs.sources import augmentation_source

    fid = _fidelity()
    ds = make_tiny_dataset()
    sources = (augmentation_source(ds, per_class=8, seed=0),)
    policies = ("ratio 0", "ratio 1", "fill")
    args = SimpleNamespace(max_steps=2, max_ratio=4.0, pixel_epochs=1, cache_dir=str(tmp_path), draw="unique",
                           policies=policies, pixel_batch=1)
    one = fid.score_pixel(ds, sources, [0, 1, 2], args, tmp_path / "one.json")
    args.pixel_batch = 2
    batched = fid.score_pixel(ds, sources, [0, 1, 2], args, tmp_path / "batched.json")
    assert batched == one
    saved = json.loads((tmp_path / "batched.json").read_text())
    assert saved == json.loads((tmp_path / "one.json").read_text())  # one file format: either fills the same file


@pytest.mark.parametrize("wrapper", ["shared", "central"])
def test_make_vec_env_batched_pixel_equals_per_copy(wrapper):
    """SB3 training over pixel-mode copies: batched=True gives the per-copy path's rewards and dones exactly."""
    from tailmix.agents.wrappers import BatchedVecEnv, make_vec_env

    kw = dict(dataset=make_tiny_dataset(), **TINY)
    batched = make_vec_env(wrapper, kw, n_envs=2, seed=3, batched=True)
    per_copy = make_vec_env(wrapper, kw, n_envs=2, seed=3)
    assert isinstance(batched, BatchedVecEnv) and not isinstance(per_copy, BatchedVecEnv)
    rng = np.random.default_rng(0)
    assert np.array_equal(batched.reset(), per_copy.reset())
    for _ in range(4):  # an episode of 3 and the first step of the next
        act = rng.uniform(-1, 1, (batched.num_envs, *batched.action_space.shape)).astype(np.float32)
        ob, rb, db, _ = batched.step(act)
        op, rp, dp, _ = per_copy.step(act)
        assert np.array_equal(ob, op) and np.array_equal(rb, rp) and np.array_equal(db, dp)
    per_copy.close()


def test_pixel_batched_benchmark_runs_and_reports_per_copy_ratios(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pixel_batched.py"
    spec = importlib.util.spec_from_file_location("pixel_batched_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--datasets", "digits-lt", "--ks", "1", "2", "--rounds", "1", "--steps", "1"])
    assert [r["config"] for r in rows] == ["single", "batched 1", "batched 2"]
    assert rows[0]["ratio_cpu"] == 1.0 and all(r["cpu_copy"] > 0 for r in rows)
    assert rows[2]["cpu_copy"] == pytest.approx(rows[2]["cpu_step"] / 2)
    assert "| digits-lt (335 train, 8x8x1) | batched 2 | 2 |" in capsys.readouterr().out
