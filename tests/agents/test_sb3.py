"""SB3 training through both wrappers: tiny runs, seeding, save/load, checkpoints and resume, TensorBoard."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import stable_baselines3 as sb3

from tailmix.agents.baselines import SB3Policy
from tailmix.agents.sb3 import ALGORITHMS, default_algo_kwargs, latest_checkpoint, load_model, make_model, train
from tests.agents.helpers import tiny_env_kwargs

PROBE = np.random.default_rng(0).uniform(0, 1, (5, 11)).astype(np.float32)


def probe_obs(wrapper):
    """A fixed batch of observations in the policy's input shape."""
    if wrapper == "shared":
        return PROBE
    return np.stack([PROBE[:3], PROBE[2:]])  # two (C=3, 11) matrices


@pytest.mark.parametrize("wrapper", ["shared", "central"])
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_tiny_run_of_each_algorithm_through_each_wrapper(algo, wrapper):
    model = train(algo, tiny_env_kwargs(), wrapper=wrapper, total_timesteps=64, seed=0)
    try:
        assert model.num_timesteps >= 64
        c = 3
        if wrapper == "shared":
            assert model.observation_space.shape == (11,) and model.action_space.shape == (1,)
        else:
            assert model.observation_space.shape == (c, 11) and model.action_space.shape == (c,)
        actions, _ = model.predict(probe_obs(wrapper), deterministic=True)
        assert np.isfinite(actions).all() and (np.abs(actions) <= 1).all()
        if algo in ("sac", "td3"):
            assert model.replay_buffer.size() > 0 and model._n_updates > 0  # it learned, not only collected
    finally:
        model.get_env().close()


def test_save_load_round_trip_and_agent_json(tmp_path):
    model = train("ppo", tiny_env_kwargs(), total_timesteps=64, seed=1, log_dir=tmp_path)
    assert (tmp_path / "model.zip").exists()
    meta = json.loads((tmp_path / "agent.json").read_text())
    assert meta["algo"] == "ppo" and meta["wrapper"] == "shared" and meta["num_timesteps"] == model.num_timesteps
    loaded = sb3.PPO.load(tmp_path / "model.zip")  # SB3's own loader, no tailmix code
    a, _ = model.predict(PROBE, deterministic=True)
    b, _ = loaded.predict(PROBE, deterministic=True)
    np.testing.assert_array_equal(a, b)
    c, _ = load_model(None, tmp_path / "model.zip").predict(PROBE, deterministic=True)  # algo from agent.json
    np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="no saved model"):
        load_model("ppo", tmp_path / "missing.zip")


@pytest.mark.parametrize("algo,wrapper", [("ppo", "shared"), ("sac", "central")])
def test_same_seed_same_learned_actions(algo, wrapper):
    def actions(seed):
        model = train(algo, tiny_env_kwargs(), wrapper=wrapper, total_timesteps=64, seed=seed)
        model.get_env().close()
        return model.predict(probe_obs(wrapper), deterministic=True)[0]

    a, b, c = actions(3), actions(3), actions(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_resume_continues_num_timesteps(tmp_path):
    first = train("sac", tiny_env_kwargs(), wrapper="shared", total_timesteps=48, seed=0, log_dir=tmp_path,
                  checkpoint_every=24)
    first.get_env().close()
    path, steps = latest_checkpoint(tmp_path, "sac")
    assert steps == 48 and path.exists()
    assert (tmp_path / "checkpoints" / "sac_replay_buffer_48_steps.pkl").exists()
    second = train("sac", tiny_env_kwargs(), wrapper="shared", total_timesteps=96, seed=0, log_dir=tmp_path,
                   checkpoint_every=24, resume=True)
    second.get_env().close()
    assert second.num_timesteps == 96  # 48 from the checkpoint + the 48 missing ones
    # The resumed run collects 16 vec steps itself (48 transitions / 3 slots); more rows means the checkpoint's
    # buffer was loaded (SB3 saves it in on_step, one transition before storing that step's, hence not 32).
    assert 16 < second.replay_buffer.size() <= 32
    assert latest_checkpoint(tmp_path, "sac")[1] == 96
    assert json.loads((tmp_path / "agent.json").read_text())["num_timesteps"] == 96


def test_resume_ppo_keeps_counter_and_tensorboard_run(tmp_path):
    train("ppo", tiny_env_kwargs(), total_timesteps=63, seed=0, log_dir=tmp_path, checkpoint_every=63,
          algo_kwargs={"n_steps": 21}).get_env().close()
    model = train("ppo", tiny_env_kwargs(), total_timesteps=126, seed=0, log_dir=tmp_path, resume=True)
    model.get_env().close()
    assert model.num_timesteps == 126
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["PPO_1"]  # continued, not a new run


def test_tensorboard_has_tailmix_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for wrapper in ("shared", "central"):
        log = tmp_path / wrapper
        train("a2c", tiny_env_kwargs(), wrapper=wrapper, total_timesteps=30, seed=0, log_dir=log).get_env().close()
        (run,) = list((log / "tb").iterdir())
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        for tag in ("tailmix/reward", "tailmix/balanced_accuracy", "tailmix/mean_ratio", "tailmix/recall/c0",
                    "tailmix/recall/c2", "tailmix/ratio/c1"):
            assert tag in tags, (wrapper, sorted(tags))
        recall = [e.value for e in acc.Scalars("tailmix/recall/c0")]
        assert all(0 <= v <= 1 for v in recall)


def test_sb3_policy_from_a_trained_model_drives_the_env():
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    model = train("td3", tiny_env_kwargs(), wrapper="central", total_timesteps=32, seed=0)
    model.get_env().close()
    env = SyntheticRatioEnv(**tiny_env_kwargs())
    policy = SB3Policy(model, wrapper="central")
    obs, _ = env.reset(seed=0)
    actions = policy.act(obs, env)
    expected, _ = model.predict(np.stack([obs[a] for a in env.possible_agents]), deterministic=True)
    np.testing.assert_allclose([actions[a][0] for a in env.possible_agents], expected)
    env.step(actions)


def test_defaults_and_errors(tmp_path):
    assert default_algo_kwargs("ppo", 3, 64)["policy_kwargs"]["log_std_init"] == -1.0
    assert default_algo_kwargs("ppo", 3, 64)["n_steps"] == 21
    assert default_algo_kwargs("sac", 3, 64)["learning_starts"] == 16
    with pytest.raises(ValueError, match="ppo"):
        train("dqn", tiny_env_kwargs(), total_timesteps=8)
    with pytest.raises(ValueError, match="wrapper"):
        train("ppo", tiny_env_kwargs(), wrapper="mappo", total_timesteps=8)
    with pytest.raises(ValueError, match="log_dir"):
        train("ppo", tiny_env_kwargs(), total_timesteps=8, checkpoint_every=4)
    with pytest.raises(ValueError, match="no ppo checkpoint"):
        train("ppo", tiny_env_kwargs(), total_timesteps=8, log_dir=tmp_path, resume=True)


@pytest.mark.slow
def test_a_small_learn_on_the_readme_shared_vec_env_is_small():
    """SB3's defaults ignore the run length: ``PPO("MlpPolicy", venv).learn(2_000)`` on the README's shared vec env
    (4 copies of digits, 40 slots) ran a full 2048-step rollout per slot, 81,920 transitions. ``make_model`` fits
    PPO's rollout to the run: 2,000 transitions."""
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

    from tailmix.agents.wrappers import make_vec_env

    class Counter(VecEnvWrapper):
        transitions = 0

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            out = self.venv.step_wait()
            self.transitions += self.num_envs
            return out

    env_kwargs = {"dataset": "digits", "encoder": "random", "max_steps": 3}  # the README's, a cheap encoder
    venv = Counter(VecNormalize(make_vec_env("shared", env_kwargs, n_envs=4, seed=0)))
    try:
        assert venv.num_envs == 40
        sb3_default = inspect.signature(sb3.PPO).parameters["n_steps"].default
        assert sb3_default * venv.num_envs == 81_920  # what PPO("MlpPolicy", venv).learn(2_000) runs
        model = make_model("ppo", venv, 2_000).learn(2_000)
        assert venv.transitions == model.num_timesteps == 2_000
    finally:
        venv.close()
    with pytest.raises(ValueError, match="total_timesteps"):
        make_model("ppo", venv, 0)


# -- issue 26, item 5: checkpoints written atomically; a resume skips one that does not load ----------------
def test_a_checkpoint_that_fails_to_save_leaves_no_truncated_file(tmp_path, monkeypatch):
    train("ppo", tiny_env_kwargs(), total_timesteps=42, seed=0, log_dir=tmp_path, checkpoint_every=21,
          algo_kwargs={"n_steps": 7, "batch_size": 21}).get_env().close()
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    assert sorted(before) == ["ppo_21_steps.zip", "ppo_42_steps.zip"]
    real_save = sb3.PPO.save

    def disk_full(self, path, *args, **kwargs):  # writes half of the file, then the disk is full
        real_save(self, path, *args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sb3.PPO, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        train("ppo", tiny_env_kwargs(), total_timesteps=84, seed=0, log_dir=tmp_path, checkpoint_every=21,
              resume=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    assert after == before  # no ppo_63_steps.zip cut short, no temp file left behind


def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path, capsys):
    train("ppo", tiny_env_kwargs(), total_timesteps=63, seed=0, log_dir=tmp_path, checkpoint_every=21,
          algo_kwargs={"n_steps": 7, "batch_size": 21}).get_env().close()
    latest = tmp_path / "checkpoints" / "ppo_63_steps.zip"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # as a full disk left it
    capsys.readouterr()
    model = train("ppo", tiny_env_kwargs(), total_timesteps=84, seed=0, log_dir=tmp_path, checkpoint_every=21,
                  resume=True)
    model.get_env().close()
    out = capsys.readouterr().out
    assert "ppo_63_steps.zip cannot be loaded" in out and "previous good one, ppo_42_steps.zip" in out
    assert model.num_timesteps == 84
    sb3.PPO.load(latest, device="cpu")  # written again, whole, on the way from 42 to 84
