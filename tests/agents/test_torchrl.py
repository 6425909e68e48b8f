"""TorchRL's own wrappers around the env ids, with TorchRL's checker (``check_env_specs``) and rollouts that cross
an episode boundary (docs/integrations.md, "TorchRL"). Skipped where torchrl is not installed
(``pip install -e ".[torchrl]"``; .ci/run installs it)."""
from __future__ import annotations

import gymnasium
import numpy as np
import pettingzoo
import pytest

pytest.importorskip("torchrl", reason='torchrl is not installed (pip install -e ".[torchrl]")')

from torchrl.envs import GymEnv, GymWrapper, PettingZooWrapper  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

from tailmix.envs import CENTRAL_ID, CENTRAL_V1_ID, PARALLEL_ID, PARALLEL_V1_ID, parallel_env  # noqa: E402
from tailmix.envs.core import OBS_COLUMNS  # noqa: E402
from tailmix.envs.vector import SyntheticRatioVectorEnv  # noqa: E402
from tests.conftest import make_tiny_dataset  # noqa: E402

TINY = dict(encoder="random", pool_size=16, max_steps=3)
#: The observation column t / max_steps (one source: the same index in v0 and v1): tells a first observation (0)
#: from a last one (1), so a rollout shows whether TorchRL got the true last observation and then a fresh episode.
PROGRESS = OBS_COLUMNS.index("progress")
STEPS = 2 * TINY["max_steps"] + 1  # two whole episodes and the first step of a third


def _progress_is_right(obs, next_obs):
    """Root observations start episodes (0, 1/3, 2/3, 0, ...); next ones end them (1/3, 2/3, 1, 1/3, ...)."""
    t = np.arange(STEPS) % TINY["max_steps"]
    assert np.allclose(obs[..., PROGRESS].numpy(), t / TINY["max_steps"], atol=1e-6)
    assert np.allclose(next_obs[..., PROGRESS].numpy(), (t + 1) / TINY["max_steps"], atol=1e-6)


def _done_at_episode_ends(done):
    ends = (np.arange(STEPS) % TINY["max_steps"]) == TINY["max_steps"] - 1
    assert (done.numpy().reshape(-1, STEPS) == ends).all()


@pytest.mark.parametrize("env_id", [PARALLEL_ID, PARALLEL_V1_ID])
def test_pettingzoo_wrapper_on_the_parallel_env(env_id):
    """Every class agent in one TorchRL group; step infos (numbers only) batch into the group's ``info``."""
    ds = make_tiny_dataset()
    pz = parallel_env(dataset=ds, **TINY) if env_id == PARALLEL_ID else pettingzoo.make("parallel", env_id,
                                                                                        dataset=ds, **TINY)
    env = PettingZooWrapper(env=pz)
    assert env.group_map == {"class": ["class_0", "class_1", "class_2"]}
    check_env_specs(env, seed=0)
    td = env.rollout(TINY["max_steps"])
    assert td.batch_size == (TINY["max_steps"],)
    assert td["class", "observation"].shape == (TINY["max_steps"], 3, *pz.observation_space("class_0").shape)
    assert td["next", "done"].squeeze(-1).tolist() == [False, False, True]
    reward = td["next", "class", "reward"].squeeze(-1)
    assert np.isfinite(reward.numpy()).all() and (reward == reward[:, :1]).all()  # one team reward
    assert td["next", "class", "info", "step"].tolist() == [[1] * 3, [2] * 3, [3] * 3]

    td = env.rollout(STEPS, break_when_any_done=False)  # TorchRL resets the env after each episode
    _progress_is_right(td["class", "observation"][:, 0], td["next", "class", "observation"][:, 0])
    _done_at_episode_ends(td["next", "done"])
    env.close()


@pytest.mark.parametrize("env_id", [CENTRAL_ID, CENTRAL_V1_ID])
def test_gym_wrapper_on_the_central_env(env_id):
    """Observations, rewards, ends, and the infos, which TorchRL reads only on request (``auto_register_info_dict``)
    and whose reader (0.14.1) takes numpy values only: the central env's per-copy numbers are numpy scalars (they
    were Python numbers, and the reader failed on them)."""
    env = GymWrapper(gymnasium.make(env_id, dataset=make_tiny_dataset(), **TINY))
    env.auto_register_info_dict()
    check_env_specs(env, seed=0)
    td = env.rollout(STEPS, break_when_any_done=False)
    assert td["observation"].shape == (STEPS, *env.observation_spec["observation"].shape)
    _progress_is_right(td["observation"][:, 0], td["next", "observation"][:, 0])
    _done_at_episode_ends(td["next", "done"])
    assert np.isfinite(td["next", "reward"].numpy()).all()
    assert td["next", "step"].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert td["next", "recall"].shape == (STEPS, 3) and td["next", "balanced_accuracy"].shape == (STEPS,)
    env.close()


@pytest.mark.parametrize("env_id", [CENTRAL_ID, CENTRAL_V1_ID])
@pytest.mark.parametrize("autoreset_mode", ["disabled", "same_step"])
def test_gym_wrapper_on_the_batched_env(env_id, autoreset_mode):
    """Docs: ``GymWrapper(gymnasium.make_vec(id, K, "vector_entry_point", autoreset_mode=...))``. TorchRL refuses
    gymnasium's default NEXT_STEP; with DISABLED it resets ended copies itself (``reset_mask``), with SAME_STEP it
    swaps in ``final_obs``: either way each copy's rollout has the true last observations and fresh episodes."""
    venv = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point",
                              autoreset_mode=autoreset_mode, dataset=make_tiny_dataset(), **TINY)
    assert isinstance(venv, SyntheticRatioVectorEnv)
    env = GymWrapper(venv)
    assert env.batch_size == (2,)
    if autoreset_mode == "disabled":
        env.auto_register_info_dict()
    check_env_specs(env, seed=0)
    td = env.rollout(TINY["max_steps"])
    assert td.batch_size == (2, TINY["max_steps"])
    td = env.rollout(STEPS, break_when_any_done=False)
    assert td.batch_size == (2, STEPS)
    _progress_is_right(td["observation"][:, :, 0], td["next", "observation"][:, :, 0])
    _done_at_episode_ends(td["next", "done"])
    assert np.isfinite(td["next", "reward"].numpy()).all()
    if autoreset_mode == "disabled":  # the infos are each step's own (SAME_STEP's are not read right by TorchRL)
        assert td["next", "step"].tolist() == [[1, 2, 3, 1, 2, 3, 1]] * 2
        assert td["next", "recall"].shape == (2, STEPS, 3)
    env.close()


@pytest.mark.slow
def test_gym_env_with_num_envs():
    """``GymEnv(id, num_envs=2)``: TorchRL builds a gymnasium ``AsyncVectorEnv`` (subprocesses) of the central env.
    Within an episode it is right; at an episode's end TorchRL (0.14.1) reads a zero last observation, since that
    AsyncVectorEnv autoresets NEXT_STEP: the batched env above is the path to use."""
    env = GymEnv(CENTRAL_ID, num_envs=2, dataset=make_tiny_dataset(), **TINY)
    try:
        assert env.batch_size == (2,)
        check_env_specs(env, seed=0)
        td = env.rollout(TINY["max_steps"])
        assert td.batch_size == (2, TINY["max_steps"])
        assert np.allclose(td["next", "observation"][:, :2, 0, PROGRESS].numpy(), [[1 / 3, 2 / 3]] * 2, atol=1e-6)
        assert td["next", "step"][:, :2].tolist() == [[1, 2]] * 2
    finally:
        env.close()
