"""RLlib PPO on the PettingZoo env: the wrapper, the shared-policy config, a tiny run on a local Ray, the logs."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')
pytest.importorskip("ray.rllib", reason='RLlib is not installed (pip install -e ".[ray]")')

from tailmix.agents.rllib import (POLICY_ID, RLlibPolicy, _policy_mapping_fn, build_ppo_config,  # noqa: E402
                          default_ppo_settings, load_rllib_policy, make_rllib_env, tensorboard_scalars, train_rllib)
from tests.agents.helpers import tiny_env_kwargs  # noqa: E402


def scalars(run_folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard run folder: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# -- no Ray cluster needed --------------------------------------------------------------------------------
def test_pettingzoo_env_runs_inside_rllibs_wrapper():
    env = make_rllib_env(tiny_env_kwargs())
    assert env.agents == env.possible_agents == ["class_0", "class_1", "class_2"]  # the env's order, not a set's
    assert env.observation_space["class_1"].shape == (11,) and env.action_space["class_0"].shape == (1,)
    obs, infos = env.reset(seed=3)
    assert set(obs) == set(infos) == set(env.possible_agents)
    steps = 0
    while True:
        obs, rewards, terminated, truncated, infos = env.step({a: np.array([0.5], np.float32) for a in obs})
        steps += 1
        assert len(set(rewards.values())) == 1  # one shared reward
        if truncated["__all__"]:
            break
    assert steps == 3 and terminated["__all__"] is False


def test_every_class_agent_maps_to_the_one_shared_policy():
    config = build_ppo_config(tiny_env_kwargs(), seed=1, num_env_runners=3, num_classes=3, total_timesteps=90)
    assert set(config.policies) == {POLICY_ID}
    assert {_policy_mapping_fn(f"class_{i}") for i in range(5)} == {POLICY_ID}
    assert config.num_env_runners == 3 and config.seed == 1
    # SB3-sized batches: ceil(90 / (3 classes * 3 runners)) = 10 env steps per runner
    assert config.train_batch_size_per_learner == 30 and config.minibatch_size == 30
    assert config.lr == 3e-4 and config.lambda_ == 0.95 and config.clip_param == 0.2 and not config.use_kl_loss
    assert config.model_config["free_log_std"] and not config.model_config["vf_share_layers"]
    override = build_ppo_config(tiny_env_kwargs(), num_classes=3, algo_kwargs={"train_batch_size": 12, "lr": 1e-3})
    assert override.train_batch_size_per_learner == 12 and override.lr == 1e-3
    assert default_ppo_settings(3, None, 0)["train_batch_size"] == 128


def test_tensorboard_scalars_use_sb3_names():
    result = {"training_iteration": 4,
              "env_runners": {"num_agent_steps_sampled_lifetime": {"class_0": 30, "class_1": 30},
                              "agent_episode_returns_mean": {"class_0": 1.0, "class_1": 3.0},
                              "episode_len_mean": 3.0, "episode_return_mean": 4.0,
                              "tailmix": {"recall": {"a": 0.5}, "reward": 0.25}},
              "learners": {POLICY_ID: {"entropy": 1.5, "vf_loss": 0.1, "policy_loss": -0.2,
                                       "vf_explained_var": float("nan")}},
              "config": {"lr": 1.0}}
    out = tensorboard_scalars(result)
    assert out["time/total_timesteps"] == 60 and out["time/iterations"] == 4
    assert out["rollout/ep_rew_mean"] == 2.0 and out["rollout/ep_len_mean"] == 3.0  # per agent, as SB3's slots
    assert out["train/entropy_loss"] == -1.5 and out["train/value_loss"] == 0.1
    assert out["train/policy_gradient_loss"] == -0.2 and "train/explained_variance" not in out  # NaN dropped
    assert out["tailmix/recall/a"] == 0.5 and out["tailmix/reward"] == 0.25
    assert out["rllib/env_runners/episode_return_mean"] == 4.0
    assert not any(k.startswith("rllib/config") or k.startswith("rllib/env_runners/tailmix") for k in out)


def test_bad_arguments_raise_before_ray_starts(tmp_path):
    with pytest.raises(ValueError, match="exactly one of total_timesteps"):
        train_rllib(tiny_env_kwargs(), log_dir=tmp_path)
    with pytest.raises(ValueError, match="exactly one of total_timesteps"):
        train_rllib(tiny_env_kwargs(), log_dir=tmp_path, total_timesteps=10, iterations=1)
    with pytest.raises(ValueError, match="iterations must be a positive"):
        train_rllib(tiny_env_kwargs(), log_dir=tmp_path, iterations=0)
    with pytest.raises(ValueError, match="num_env_runners"):
        train_rllib(tiny_env_kwargs(), log_dir=tmp_path, iterations=1, num_env_runners=-1)
    with pytest.raises(ValueError, match="max_ratio"):
        train_rllib(tiny_env_kwargs(max_ratio=-1.0), log_dir=tmp_path, iterations=1)
    with pytest.raises(ValueError, match="not a train_rllib checkpoint"):
        load_rllib_policy(tmp_path)
    assert not ray.is_initialized()


def test_missing_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray.rllib.algorithms.ppo", None)  # what an install without rllib looks like
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[ray\]"'):
        train_rllib(tiny_env_kwargs(), log_dir=tmp_path, iterations=1)


# -- a local Ray instance ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024**2)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow  # two env runners start (each imports torch and RLlib): ~35 s on 2 cores
def test_tiny_run_with_two_env_runners_logs_like_sb3_and_its_policy_plays(local_ray, tmp_path):
    checkpoint = train_rllib(tiny_env_kwargs(), log_dir=tmp_path, total_timesteps=60, seed=0, num_env_runners=2,
                             checkpoint_every=30)
    assert checkpoint == (tmp_path / "checkpoint").resolve() and checkpoint.is_dir()
    meta = json.loads((tmp_path / "agent.json").read_text())
    assert meta["backend"] == "rllib" and meta["algo"] == "ppo" and meta["num_env_runners"] == 2
    assert meta["num_timesteps"] >= 60 and meta["iterations"] >= 1
    # one module for all classes: the checkpoint holds exactly the shared policy
    modules = sorted(p.name for p in (checkpoint / "learner_group" / "learner" / "rl_module").iterdir() if p.is_dir())
    assert modules == [POLICY_ID]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [f"ppo_{meta['num_timesteps']}_steps"]

    runs = sorted((tmp_path / "tb").iterdir())
    assert [r.name for r in runs] == ["RLLIB_PPO_1"]  # SB3's <NAME>_<n> layout under log_dir/tb
    tb = scalars(runs[0])
    for tag in ("rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "time/total_timesteps",
                "train/value_loss", "train/policy_gradient_loss", "tailmix/reward", "tailmix/balanced_accuracy",
                "tailmix/mean_ratio", *(f"tailmix/{k}/c{i}" for k in ("recall", "ratio") for i in range(3))):
        assert tag in tb, tag
    assert tb["rollout/ep_len_mean"][-1][1] == 3.0  # max_steps of the tiny env
    assert tb["time/total_timesteps"][-1] == (meta["num_timesteps"], float(meta["num_timesteps"]))
    assert tb["rllib/fault_tolerance/num_healthy_workers"][-1][1] == 2.0  # both env runners sampled
    assert 0.0 <= tb["tailmix/balanced_accuracy"][-1][1] <= 1.0 and 0.0 <= tb["tailmix/mean_ratio"][-1][1] <= 8.0

    # the policy plays a full episode through the baselines interface, without a Ray cluster
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    policy = load_rllib_policy(checkpoint)
    assert isinstance(policy, RLlibPolicy)
    log_std = [p.item() for n, p in policy.module.named_parameters() if n.endswith("log_std")]
    assert log_std and abs(log_std[0] + 1.0) < 0.2  # started at log_std_init=-1, barely trained
    env = SyntheticRatioEnv(**tiny_env_kwargs())
    obs, _ = env.reset(seed=0)
    first = None
    while env.agents:
        actions = policy.act(obs, env)
        assert set(actions) == set(env.agents)
        assert all(a.shape == (1,) and a.dtype == np.float32 and -1 <= a[0] <= 1 for a in actions.values())
        first = first or actions
        obs, *_ = env.step(actions)
    obs, _ = env.reset(seed=0)
    again = policy.act(obs, env)  # deterministic: the mean action
    assert all(np.array_equal(again[a], first[a]) for a in again)
