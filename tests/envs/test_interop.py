"""What other RL tools expect of any env: gymnasium's render convention, pickling and deep copies, envs freed
once dropped, and fitted encoders cached on disk so that a new process does not refit them."""
from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import cloudpickle
import gymnasium
import numpy as np
import pytest
import torch
from pettingzoo.test import render_test

from tailmix import envs
from tailmix.envs import features
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv, env as aec_env
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(encoder="random", pool_size=16, max_steps=3)


def tiny_kwargs(**over):
    return {"dataset": make_tiny_dataset(), **TINY, **over}


VIEWS = {
    "parallel": lambda **kw: SyntheticRatioEnv(**tiny_kwargs(**kw)),
    "aec": lambda **kw: aec_env(**tiny_kwargs(**kw)),
    "central": lambda **kw: SyntheticRatioCentralEnv(**tiny_kwargs(**kw)),
    "vector": lambda **kw: SyntheticRatioVectorEnv(2, **tiny_kwargs(**kw)),
}


def _actions(env, rng):
    """One random action in the form each view takes."""
    if isinstance(env, SyntheticRatioEnv) or hasattr(env, "agent_iter"):
        return {a: rng.uniform(-1, 1, 1).astype(np.float32) for a in env.possible_agents}
    return rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)


def _step(env, action):
    """The step's returns as a list (the AEC env steps its agents one by one and reports ``last()``)."""
    if hasattr(env, "agent_iter"):
        out = []
        for _ in range(env.num_agents):
            env.step(action[env.agent_selection])
            out.append(env.last())
        return out
    return list(env.step(action))


# -- render: gymnasium's convention ----------------------------------------------------------
@pytest.mark.parametrize("view", sorted(VIEWS))
@pytest.mark.parametrize("mode", ["human", "rgb_array_list"])
def test_an_unsupported_render_mode_is_accepted_with_a_warning(view, mode):
    """PettingZoo's render_test asks for 'human': the env is built, rendering is off."""
    with pytest.warns(UserWarning, match=f"render_mode='{mode}' is not supported"):
        env = VIEWS[view](render_mode=mode)
    env.reset(seed=0)
    assert env.render() is None
    assert getattr(env, "render_mode", None) is None


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_supported_render_modes(view):
    env = VIEWS[view](render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert all(isinstance(t, str) and "balanced val acc" in t for t in (text if view == "vector" else [text]))
    if view == "vector":
        assert len(text) == 2
    # 'rgb_array' (what SB3 asks for): a frame per copy, ratio and recall bars per class
    env = VIEWS[view](render_mode="rgb_array")
    assert env.metadata["render_modes"] == ["ansi", "rgb_array"] and env.metadata["render_fps"] > 0
    env.reset(seed=0)
    first = env.render()
    _step(env, _actions(env, np.random.default_rng(0)))
    frames = env.render()
    for frame, before in zip(frames, first) if view == "vector" else [(frames, first)]:
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape == before.shape
        assert frame.any() and not np.array_equal(frame, before)  # the ratios moved from 0
    if view == "vector":
        assert len(frames) == 2
    plain = VIEWS[view]()
    plain.reset(seed=0)
    assert plain.render() is None


def test_pettingzoo_render_test():
    render_test(lambda render_mode=None: aec_env(render_mode=render_mode, **tiny_kwargs()))


def test_gymnasium_make_with_rgb_array_and_the_passive_checker():
    """``gym.make`` with SB3's default mode: no warning (gymnasium's checker once missed ``render_fps`` and the mode
    itself); the passive checker's render check passes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*out of date", category=DeprecationWarning)  # v0 has a v1
        env = gymnasium.make(envs.CENTRAL_ID, render_mode="rgb_array", **tiny_kwargs())
        env.reset(seed=0)
        frame = env.render()  # the first render() runs gymnasium's passive render check
    assert env.render_mode == "rgb_array" and frame.dtype == np.uint8 and frame.shape[2] == 3


# -- pickling and deep copies --------------------------------------------------------------------
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("view", sorted(VIEWS) + ["pixel"])
def test_a_restored_copy_continues_the_same_trajectory(view, how):
    env = VIEWS["parallel"](mode="pixel", epochs_per_step=1) if view == "pixel" else VIEWS[view]()
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    _step(env, _actions(env, rng))  # mid-episode: RNG streams, optimiser state and ratios have moved on
    twin = pickle.loads(pickle.dumps(env)) if how == "pickle" else copy.deepcopy(env)
    assert twin is not env
    for _ in range(2):  # the rest of the episode (max_steps=3), the same actions for both
        action = _actions(env, rng)
        a, b = _step(env, action), _step(twin, action)
        assert repr(a) == repr(b)  # every observation, reward, flag and info, to the last digit


# A configuration in which training visibly moves the reward (digits, random encoder: balanced val accuracy about
# 0.64 -> 0.72 -> 0.78 -> 0.82 over the first steps at ratio 0), so that a copy whose heads no longer train cannot
# pass for the original. The tiny fixture above scores 1.0 from the first step, trained or not.
LEARNING = dict(dataset="digits", encoder="random", pool_size=16, max_steps=5, epochs_per_step=2)
LEARNING_VIEWS = {
    "parallel": lambda: SyntheticRatioEnv(**LEARNING),
    "central": lambda: SyntheticRatioCentralEnv(**LEARNING),
    "vector": lambda: SyntheticRatioVectorEnv(2, **LEARNING),
}
COPIES = {"pickle": lambda env: pickle.loads(pickle.dumps(env)),
          "cloudpickle": lambda env: cloudpickle.loads(cloudpickle.dumps(env)),  # SuperSuit's, SB3's, Ray's
          "deepcopy": copy.deepcopy}


def _reward(out) -> float:
    """The step's reward (the first agent's, the first copy's)."""
    reward = out[1]
    return float(next(iter(reward.values())) if isinstance(reward, dict) else np.asarray(reward).ravel()[0])


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("view", sorted(LEARNING_VIEWS))
@pytest.mark.parametrize("when", ["built", "reset"])
def test_a_copied_env_keeps_training(view, how, when):
    """A built env shipped to a worker (SuperSuit, Ray, ``SubprocVecEnv([lambda: env])``) trains as the original.

    Pickle does not keep tensor views sharing memory: an unpickled head once updated detached copies of its
    weights and scored its first weights at every step (reward 0.06 on digits while the original rose).
    """
    env = LEARNING_VIEWS[view]()
    if when == "reset":
        env.reset(seed=3)
    twin = COPIES[how](env)
    if when == "built":
        env.reset(seed=3), twin.reset(seed=3)
    # ratio 0 for every class: the reward then moves by training alone
    action = ({a: np.full(1, -1.0, np.float32) for a in env.possible_agents} if view == "parallel"
              else np.full(env.action_space.shape, -1.0, np.float32))
    rewards = []
    for _ in range(4):
        a, b = _step(env, action), _step(twin, action)
        assert repr(a) == repr(b)  # every observation, reward, flag and info, to the last digit
        rewards.append(_reward(a))
    assert rewards[-1] - rewards[0] > 0.05, f"the configuration no longer shows training: rewards {rewards}"


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_copied_fold_env_scores_on_its_own_feature_table(how):
    """With ``val_folds`` the reward rows are a view of the engine's feature table; a copy keeps them one."""
    twin = COPIES[how](SyntheticRatioCentralEnv(**tiny_kwargs(val_folds=2)))
    engine = twin.core.engine
    assert engine.val_x.untyped_storage().data_ptr() == engine.table.untyped_storage().data_ptr()
    assert torch.equal(engine.val_x, engine.table[:len(engine.real_idx)])


# -- envs are freed once dropped ---------------------------------------------------------------------
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_a_dropped_env_is_freed(view):
    env = VIEWS[view]()
    env.reset(seed=0)
    if hasattr(env, "possible_agents"):  # PettingZoo's space methods (an lru_cache there kept every env alive)
        for a in env.possible_agents:
            env.observation_space(a), env.action_space(a)
    ref = weakref.ref(env.unwrapped if hasattr(env, "unwrapped") else env)
    del env
    gc.collect()
    assert ref() is None


# -- the on-disk encoder cache -----------------------------------------------------------------------
CROSSFIT = dict(encoder="crossfit", encoder_folds=2, encoder_epochs=1, pool_size=16, max_steps=2)

CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
from tailmix.envs import features
from tests.conftest import make_tiny_dataset
os.environ["TAILMIX_CACHE_DIR"] = {cache!r}  # after the conftest import, which points it at its own folder
fitted = []
original = features._fit
features._fit = lambda *a, **k: fitted.append(1) or original(*a, **k)
from tailmix.envs.central import SyntheticRatioCentralEnv
dataset = make_tiny_dataset()
t0 = time.perf_counter()
env = SyntheticRatioCentralEnv(dataset=dataset, **{kw!r})
built = time.perf_counter() - t0
obs, _ = env.reset(seed=5)
print("fits", len(fitted), "built_s", round(built, 3), "obs", obs.tobytes().hex())
"""


def _run_child(cache: Path):
    code = CHILD.format(root=str(ROOT), kw=CROSSFIT, cache=str(cache))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1].split()
    return int(line[1]), float(line[3]), line[5]


def test_default_cache_is_the_per_user_folder(monkeypatch, tmp_path):
    from tailmix.envs.cache import default_cache_dir, encoder_cache_dir

    monkeypatch.delenv("TAILMIX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tailmix"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tailmix"
    monkeypatch.setenv("TAILMIX_CACHE_DIR", str(tmp_path / "mine"))
    assert encoder_cache_dir(None) == str(tmp_path / "mine" / "encoders")
    assert encoder_cache_dir(False) is None
    assert encoder_cache_dir(str(tmp_path / "x")) == str(tmp_path / "x")
    with pytest.raises(ValueError, match="cache_dir"):
        SyntheticRatioEnv(**tiny_kwargs(cache_dir=True))


@pytest.mark.slow
def test_a_new_process_loads_the_encoder_from_disk_with_the_same_numbers(tmp_path):
    features._MEMORY.clear()
    fits, first_s, obs = _run_child(tmp_path)
    assert fits == 1
    assert len(list((tmp_path / "encoders").glob("encoder-*.pt"))) == 1
    fits, second_s, obs2 = _run_child(tmp_path)
    assert fits == 0 and obs2 == obs  # loaded, not refitted, and the env's numbers are the fitted encoder's
    print(f"env build: {first_s:.2f} s with a fit, {second_s:.2f} s loading the cached encoder")
    # this process: a fit from scratch gives the same observation as the child that loaded the file
    off = SyntheticRatioCentralEnv(dataset=make_tiny_dataset(), cache_dir=False, **CROSSFIT)
    features._MEMORY.clear()
    assert off.reset(seed=5)[0].tobytes().hex() == obs


def test_cache_dir_false_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("TAILMIX_CACHE_DIR", str(tmp_path))
    features._MEMORY.clear()
    SyntheticRatioEnv(dataset=make_tiny_dataset(), cache_dir=False, **CROSSFIT)
    features._MEMORY.clear()
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_concurrent_processes_fit_the_encoder_once(tmp_path):
    code = CHILD.format(root=str(ROOT), kw=CROSSFIT, cache=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    lines = [out.strip().splitlines()[-1].split() for out, _ in outs]
    assert sorted(int(line[1]) for line in lines) == [0, 1]  # one fitted, the other waited and loaded its file
    assert lines[0][5] == lines[1][5]
