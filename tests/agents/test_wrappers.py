"""The parameter-sharing VecEnv and the centralised vec env, against SB3's conventions and checkers."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import SubprocVecEnv, VecCheckNan

from tailmix.agents.wrappers import SharedPolicyVecEnv, make_central_vec_env, make_shared_vec_env, make_vec_env
from tests.agents.fake_env import FakeRatioEnv
from tests.agents.helpers import tiny_env_kwargs


def fake_vec(copies=2, seed=0, **kw):
    return SharedPolicyVecEnv([functools.partial(FakeRatioEnv, **kw) for _ in range(copies)], seed=seed)


def rollout(venv, steps, rng):
    obs = venv.reset()
    out = [obs]
    all_infos = []
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (venv.num_envs, 1)).astype(np.float32)
        obs, rew, done, infos = venv.step(actions)
        out += [obs, rew, done]
        all_infos.append(infos)
    return out, all_infos


def test_shared_slots_spaces_and_shapes():
    venv = fake_vec(copies=2)
    assert venv.num_envs == 6  # 2 copies x 3 class agents
    assert venv.observation_space.shape == (11,) and venv.action_space.shape == (1,)
    assert venv.action_space.low[0] == -1 and venv.action_space.high[0] == 1
    checked = VecCheckNan(venv, raise_exception=True)
    obs = checked.reset()
    assert obs.shape == (6, 11) and obs.dtype == np.float32
    # slot k * C + i is agent i of copy k: its one-hot id sits at column 8 + i
    assert np.array_equal(obs[:, 8:].argmax(1), [0, 1, 2, 0, 1, 2])
    obs, rew, done, infos = checked.step(np.zeros((6, 1), np.float32))
    assert obs.shape == (6, 11) and rew.shape == (6,) and done.shape == (6,) and len(infos) == 6
    assert [i["agent"] for i in infos] == ["class_0", "class_1", "class_2"] * 2
    assert infos[4]["class_name"] == "c1" and "recall" in infos[4]
    with pytest.raises(ValueError):
        checked.step(np.full((6, 1), np.nan, np.float32))


def test_auto_reset_terminal_observation_and_episode_counted_once_per_copy():
    venv = fake_vec(copies=2, max_steps=3)
    venv.reset()
    episodes = []
    for t in range(1, 7):
        obs, rew, done, infos = venv.step(np.ones((6, 1), np.float32))
        assert done.all() == (t % 3 == 0) and done.any() == (t % 3 == 0)
        episodes += [(t, s, i["episode"]) for s, i in enumerate(infos) if "episode" in i]
        if t % 3 == 0:
            for i in infos:
                assert i["terminal_observation"].shape == (11,)
                assert i["terminal_observation"][7] == pytest.approx(1.0)  # progress t/T of the last step
                assert i["TimeLimit.truncated"] is True
            assert np.allclose(obs[:, 7], 0.0)  # auto-reset: new episode's first observation
        else:
            assert not any("terminal_observation" in i for i in infos)
    # 2 episodes x 2 copies, each counted once, in the copy's first slot (not once per agent)
    assert [(t, s) for t, s, _ in episodes] == [(3, 0), (3, 3), (6, 0), (6, 3)]
    for _, _, ep in episodes:
        assert ep["l"] == 3 and set(ep) == {"r", "l", "t"}
        assert 0 < ep["r"] <= 3  # the shared reward summed over 3 steps, not over agents too


def test_copies_get_their_own_seeds_and_rngs():
    venv = fake_vec(copies=3, seed=10)
    venv.reset()
    assert venv.get_attr("last_seed") == [10] * 3 + [11] * 3 + [12] * 3
    # different seeds -> different noise -> different rewards
    _, rew, _, _ = venv.step(np.zeros((9, 1), np.float32))
    assert len({float(rew[0]), float(rew[3]), float(rew[6])}) == 3
    # seed() sets the seeds of the next reset only; later auto-resets continue each copy's stream
    assert venv.seed(5)[::3] == [5, 6, 7]
    venv.reset()
    assert venv.get_attr("last_seed", indices=[0, 4, 8]) == [5, 6, 7]
    venv.step(np.zeros((9, 1), np.float32))
    venv.step(np.zeros((9, 1), np.float32))
    venv.step(np.zeros((9, 1), np.float32))
    assert venv.get_attr("last_seed") == [None] * 9


def test_same_seed_same_rollout_and_different_seed_differs():
    a, _ = rollout(fake_vec(seed=3), 7, np.random.default_rng(0))
    b, _ = rollout(fake_vec(seed=3), 7, np.random.default_rng(0))
    c, _ = rollout(fake_vec(seed=4), 7, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_env_method_and_attrs_reach_each_copy_once():
    venv = fake_vec(copies=2)
    venv.reset()
    assert venv.get_attr("resets") == [1] * 6
    # once per copy, even though each copy has 3 slots
    assert venv.env_method("ratio_to_action", 8.0) == [np.float32(1.0)] * 6
    venv.env_method("reset", seed=1, indices=[0, 1, 2])
    assert venv.get_attr("resets") == [2, 2, 2, 1, 1, 1]
    venv.set_attr("noise", 0.0, indices=[3])
    assert venv.get_attr("noise") == [0.01] * 3 + [0.0] * 3
    assert venv.env_is_wrapped(Monitor) == [False] * 6


@pytest.mark.slow
def test_shared_subprocess_matches_in_process():
    fns = [functools.partial(FakeRatioEnv) for _ in range(2)]
    local = SharedPolicyVecEnv(fns, seed=7)
    remote = SharedPolicyVecEnv(fns, seed=7, subprocess=True)
    try:
        a, ia = rollout(local, 4, np.random.default_rng(1))
        b, ib = rollout(remote, 4, np.random.default_rng(1))
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert [sorted(i) for i in ia[2]] == [sorted(i) for i in ib[2]]
        assert remote.get_attr("last_seed") == [None] * 6  # auto-reset at step 3 continued the streams
        with pytest.raises(ValueError, match="non-finite"):
            remote.step(np.full((6, 1), np.inf, np.float32))
    finally:
        remote.close()


def test_shared_wrapper_on_real_env():
    venv = VecCheckNan(make_shared_vec_env(tiny_env_kwargs(), n_envs=2, seed=0), raise_exception=True)
    obs = venv.reset()
    assert obs.shape == (6, 11)
    assert venv.observation_space.contains(obs[0])
    infos = None
    for _ in range(3):
        obs, rew, done, infos = venv.step(np.zeros((6, 1), np.float32))
    assert done.all() and all("terminal_observation" in i for i in infos)
    assert sum("episode" in i for i in infos) == 2
    assert {"class_name", "ratio", "recall", "balanced_accuracy", "agent"} <= set(infos[1])
    assert infos[1]["ratio"] == pytest.approx(4.0)  # action 0 -> half of max_ratio 8


def test_central_env_passes_sb3_check_env():
    from tailmix.envs.central import SyntheticRatioCentralEnv

    check_env(SyntheticRatioCentralEnv(**tiny_env_kwargs()), warn=True)


@pytest.mark.slow
def test_central_vec_env_in_process_and_subprocess():
    venv = make_central_vec_env(tiny_env_kwargs(), n_envs=2, seed=0)
    assert venv.num_envs == 2 and venv.action_space.shape == (3,) and venv.observation_space.shape == (3, 11)
    assert venv.env_is_wrapped(Monitor) == [True, True]
    obs = venv.reset()
    infos = None
    for _ in range(3):
        obs, rew, done, infos = venv.step(np.zeros((2, 3), np.float32))
    assert done.all() and all("episode" in i and "terminal_observation" in i for i in infos)

    sub = make_central_vec_env(tiny_env_kwargs(), n_envs=2, seed=0, subprocess=True)
    try:
        assert isinstance(sub, SubprocVecEnv)
        # compare first resets: venv.reset() again would continue its seeded RNG streams (seed None)
        venv = make_central_vec_env(tiny_env_kwargs(), n_envs=2, seed=0)
        assert np.array_equal(sub.reset(), venv.reset())
        local = [venv.step(np.full((2, 3), 0.5, np.float32)) for _ in range(2)]
        remote = [sub.step(np.full((2, 3), 0.5, np.float32)) for _ in range(2)]
        for (o1, r1, _, _), (o2, r2, _, _) in zip(local, remote):
            np.testing.assert_allclose(o1, o2, atol=1e-6)
            np.testing.assert_allclose(r1, r2, atol=1e-6)
        assert sub.get_attr("np_random_seed") == [0, 1]
    finally:
        sub.close()
        venv.close()


def test_unknown_wrapper_and_bad_n_envs():
    with pytest.raises(ValueError, match="shared"):
        make_vec_env("supersuit", tiny_env_kwargs())
    with pytest.raises(ValueError, match="n_envs"):
        make_shared_vec_env(tiny_env_kwargs(), n_envs=0)
    with pytest.raises(ValueError, match="env_fns"):
        SharedPolicyVecEnv([])


# -- the one SB3 face: make_vec_env, batched or per copy -------------------------------------------
def _steps(venv, actions, n):
    obs = [venv.reset()]
    out = []
    for _ in range(n):
        o, r, d, infos = venv.step(actions)
        obs.append(o)
        out.append((r, d, infos))
    return obs, out


@pytest.mark.parametrize("wrapper", ["shared", "central"])
@pytest.mark.parametrize("sources", [None, [None, "augment"]], ids=["G1", "G2"])
def test_make_vec_env_batched_equals_per_copy(wrapper, sources):
    """The batched path gives the per-copy path's slots, seeds, rewards, dones, infos and episode statistics."""
    from tailmix.agents.wrappers import BatchedVecEnv

    kw = tiny_env_kwargs() if sources is None else tiny_env_kwargs(source=None, sources=sources)
    g = 1 if sources is None else 2
    batched = make_vec_env(wrapper, kw, n_envs=2, seed=3)
    per_copy = make_vec_env(wrapper, kw, n_envs=2, seed=3, batched=False)
    assert isinstance(batched, BatchedVecEnv) and not isinstance(per_copy, BatchedVecEnv)
    assert batched.num_envs == per_copy.num_envs == (6 if wrapper == "shared" else 2)
    assert batched.observation_space == per_copy.observation_space
    assert batched.action_space == per_copy.action_space
    assert batched.action_space.shape == ((g,) if wrapper == "shared" else ((3,) if g == 1 else (3, g)))
    actions = np.random.default_rng(0).uniform(-1, 1, (batched.num_envs, *batched.action_space.shape))
    actions = actions.astype(np.float32)
    (obs_b, out_b), (obs_p, out_p) = _steps(batched, actions, 4), _steps(per_copy, actions, 4)
    for ob, op in zip(obs_b, obs_p):  # 4 steps: one episode of 3 and the first step of the next
        np.testing.assert_allclose(ob, op, atol=1e-5)
    for (rb, db, ib), (rp, dp, ip) in zip(out_b, out_p):
        np.testing.assert_allclose(rb, rp, atol=1e-5)
        assert np.array_equal(db, dp)
        for slot_b, slot_p in zip(ib, ip):
            slot_p = {k: v for k, v in slot_p.items() if k != "reset_info"}
            assert set(slot_b) == set(slot_p)
            for key, v in slot_p.items():
                if key == "episode":
                    assert slot_b[key]["r"] == pytest.approx(v["r"], abs=1e-5) and slot_b[key]["l"] == v["l"]
                elif isinstance(v, (str, bool)):
                    assert slot_b[key] == v, key
                else:
                    np.testing.assert_allclose(slot_b[key], v, atol=1e-5, err_msg=key)
    assert sum("episode" in i for i in out_b[2][2]) == 2  # once per copy
    if wrapper == "shared":
        assert [i["class_name"] for i in out_b[0][2][:3]] == ["c0", "c1", "c2"]
    assert batched.get_attr("class_names") == per_copy.get_attr("class_names")[:1] * batched.num_envs
    per_copy.close()


def test_make_vec_env_chooses_its_backend_and_takes_a_built_vector_env():
    from tailmix.agents.wrappers import BatchedVecEnv
    from tailmix.envs.vector import SyntheticRatioVectorEnv

    assert isinstance(make_vec_env("shared", tiny_env_kwargs(), n_envs=1), BatchedVecEnv)
    assert isinstance(make_vec_env("shared", tiny_env_kwargs(mode="pixel", epochs_per_step=1)), SharedPolicyVecEnv)
    venv = SyntheticRatioVectorEnv(2, **tiny_env_kwargs())  # NEXT_STEP by default; the adapter needs SAME_STEP
    sb3 = make_vec_env("central", venv, seed=0)
    assert sb3.num_envs == 2 and venv.metadata["autoreset_mode"].name == "SAME_STEP"
    assert isinstance(make_vec_env("shared", tiny_env_kwargs(mode="pixel", epochs_per_step=1), n_envs=2,
                                   batched=True), BatchedVecEnv)  # opt-in: one grouped CNN (envs.pixel_batched)
    with pytest.raises(ValueError, match="subprocess"):
        make_vec_env("shared", tiny_env_kwargs(), batched=True, subprocess=True)
    with pytest.raises(ValueError, match="subprocess"):
        make_vec_env("shared", venv, subprocess=True)
    with pytest.raises(ValueError, match="env_kwargs"):
        make_vec_env("shared", "digits")


@pytest.mark.parametrize("wrapper", ["shared", "central"])
@pytest.mark.parametrize("batched", [True, False])
def test_metrics_callback_logs_per_class_scalars_on_every_path(wrapper, batched, tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    from tailmix.agents.callbacks import TailmixMetricsCallback

    venv = make_vec_env(wrapper, tiny_env_kwargs(), n_envs=2, seed=0, batched=batched)
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(8 * (1 if wrapper == "central" else 3), callback=TailmixMetricsCallback())
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for tag in ("tailmix/recall/c0", "tailmix/recall/c2", "tailmix/ratio/c1", "tailmix/mean_ratio",
                "tailmix/balanced_accuracy", "tailmix/reward"):
        assert tag in header, (wrapper, batched, header)
    venv.close()


def test_rllib_env_names_each_agents_info():
    """RLlib's callback reads ``class_name`` from each agent's info; the env creator adds it (no Ray needed)."""
    from tailmix.agents.rllib import with_class_names

    infos = {"class_0": {"recall": 0.5}, "class_1": {"recall": 0.25}, "__common__": {}}
    named = with_class_names(infos, ("cat", "dog"), ["class_0", "class_1"])
    assert named["class_0"] == {"recall": 0.5, "class_name": "cat"} and named["class_1"]["class_name"] == "dog"
    assert named["__common__"] == {} and "class_name" not in infos["class_0"]
