"""``K`` copies of the env stepped together, their heads trained in one set of batched tensor ops.

Each copy has its own seed and RNG streams, so copy ``k`` follows exactly the trajectory a single env reset
with the same seed would follow, given the same actions (up to floating-point summation order). Feature mode
only: pixel mode trains a CNN per copy, which gains nothing from batching here.

Two faces over one :class:`envs.core.RatioCore`:

- :class:`SyntheticRatioVectorEnv`: a gymnasium ``VectorEnv`` of the centralised view (observation
  ``(K, C, 8 + C)``, action ``(K, C)``; with ``G > 1`` sources ``(K, C, G)``), same-step autoreset.
- :meth:`SyntheticRatioVectorEnv.as_sb3` : an SB3 ``VecEnv``, either centralised (``K`` slots) or with
  parameter sharing (``K * C`` slots, one per class agent, episode statistics once per copy).

With ``credit="difference"`` the gymnasium face still returns the team reward ``(K,)`` (what
``credit="shared"`` gives) and puts the per-class difference rewards in ``infos["agent_rewards"]``
``(K, C)``; the parameter-sharing SB3 face gives each class slot its own, and its centralised face refuses
the option (one agent per copy).
"""
from __future__ import annotations

import numbers
import time

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.core import RatioCore, accepted_render_mode, as_action_array


class SyntheticRatioVectorEnv(VectorEnv):
    """Batched centralised env.

    Args:
        num_envs: ``K`` copies.
        dataset: As for the single env.
        source: As for the single env.
        sources: As for the single env (a list of ``G`` source specs; not with ``source``).
        **kwargs: :class:`envs.config.RatioEnvConfig` fields (``mode`` must be ``"feature"``).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["ansi"]}

    def __init__(self, num_envs: int, dataset=None, source=None, *, sources=None, render_mode: str | None = None,
                 **kwargs) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer; got {num_envs!r}")
        self.render_mode = accepted_render_mode(render_mode, type(self).__name__, stacklevel=3)
        self.config = RatioEnvConfig(**kwargs)
        if self.config.mode != "feature":
            raise ValueError("the batched env trains heads on features; use mode='feature', or step pixel-mode "
                             "envs one by one (agents.wrappers)")
        self.core = RatioCore(dataset, source, self.config, num_copies=num_envs, sources=sources)
        self.num_envs = num_envs
        c = self.core.c
        self._action_shape = (c,) if self.core.g == 1 else (c, self.core.g)  # the central view's
        self.single_observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, self._action_shape, np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._episode_return = np.zeros(num_envs)

    @property
    def num_classes(self) -> int:
        return self.core.c

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is None or isinstance(seed, numbers.Integral):
            seeds = [None if seed is None else int(seed) + k for k in range(self.num_envs)]
        elif isinstance(seed, (list, tuple, np.ndarray)):
            # numpy ints become Python ints (gymnasium's seeding takes only those); anything else is passed on
            # for gymnasium to refuse with its own error.
            seeds = [int(s) if isinstance(s, numbers.Integral) else s for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} copies")
        else:
            raise ValueError(f"seed must be None, an int, or a list of {self.num_envs} ints/None; got {seed!r}")
        self.core.reset(list(range(self.num_envs)), seeds)
        self._episode_return[:] = 0
        return self._obs(), self._infos()

    def step(self, actions):
        a = as_action_array(actions, "actions")
        if a.shape != (self.num_envs, *self._action_shape):
            raise ValueError(f"actions must have shape {(self.num_envs, *self._action_shape)}; got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf; use finite numbers in [-1, 1]")
        out = self.core.step(self.core.action_to_ratio(a))
        reward = out["reward"]
        self._episode_return += reward
        truncated = self.core.done.copy()
        terminated = np.zeros(self.num_envs, bool)
        infos = self._infos(out["n_synthetic"])
        infos["nan_loss"] = out["nan"]
        if self.config.credit == "difference":
            infos["agent_rewards"] = out["agent_reward"]
        if truncated.any():
            if self.config.eval_split == "test":
                infos["test"] = [self.core.test_report(k) for k in range(self.num_envs)]
            infos["final_obs"] = self._obs()
            infos["episode_return"] = self._episode_return.copy()
            done = list(np.flatnonzero(truncated))
            self.core.reset(done, [None] * len(done))
            self._episode_return[done] = 0
        return self._obs(), reward, terminated, truncated, infos

    def _obs(self) -> np.ndarray:
        return self.core.observations()

    def _infos(self, n_syn=None) -> dict:
        return {"ratios": self.core.ratios.copy(), "balanced_accuracy": self.core.metrics["balanced_accuracy"].copy(),
                "macro_f1": self.core.metrics["macro_f1"].copy(), "recall": self.core.metrics["recall"].copy(),
                "n_synthetic": np.zeros((self.num_envs, self.core.c), np.int64) if n_syn is None else n_syn,
                "shortfall": self.core.shortfall.copy() if n_syn is not None else np.zeros_like(self.core.shortfall),
                "source_ratios": self.core.source_ratios.copy(),
                "source_counts": (self.core.last_counts.copy() if n_syn is not None
                                  else np.zeros_like(self.core.last_counts)),
                **({} if self.core.folds is None else {"val_fold": self.core.val_fold.copy()})}

    def render(self):
        """``None``, or with ``render_mode="ansi"`` one line per copy (a tuple, as ``SyncVectorEnv`` returns)."""
        if self.render_mode != "ansi" or not self.core.metrics:
            return None
        bal = self.core.metrics["balanced_accuracy"]
        return tuple(f"step {int(self.core.t[k])}/{self.config.max_steps} balanced val acc {bal[k]:.3f} "
                     f"ratios {np.round(self.core.ratios[k], 2)}" for k in range(self.num_envs))

    def as_sb3(self, *, shared: bool = True, seed: int | None = None):
        """This env as a Stable-Baselines3 ``VecEnv``; ``shared=True`` gives one slot per class agent."""
        return BatchedSB3VecEnv(self, shared=shared, seed=seed)


class BatchedSB3VecEnv:
    """SB3 ``VecEnv`` over a :class:`SyntheticRatioVectorEnv` (built lazily to keep SB3 imports local)."""

    def __new__(cls, venv: SyntheticRatioVectorEnv, *, shared: bool = True, seed: int | None = None):
        from stable_baselines3.common.vec_env import VecEnv

        class _Impl(VecEnv):
            def __init__(self) -> None:
                self.venv = venv
                self.shared = shared
                self.c = venv.core.c
                n = venv.num_envs * (self.c if shared else 1)
                if not shared and venv.config.credit == "difference":
                    raise ValueError("credit='difference' gives each class agent its own reward; as_sb3(shared=False) "
                                     "has one agent per copy. Use as_sb3(shared=True), or credit='shared'")
                if shared:
                    obs_space = spaces.Box(venv.core.obs_low.min(0), venv.core.obs_high.max(0), dtype=np.float32)
                    act_space = spaces.Box(-1.0, 1.0, (venv.core.g,), np.float32)
                else:
                    obs_space, act_space = venv.single_observation_space, venv.single_action_space
                super().__init__(n, obs_space, act_space)
                self._seed = seed
                self._actions = None
                self._t0 = time.time()
                self._lengths = np.zeros(venv.num_envs, np.int64)

            def _flat(self, obs: np.ndarray) -> np.ndarray:
                return obs.reshape(-1, obs.shape[-1]) if self.shared else obs

            def reset(self):
                obs, _ = self.venv.reset(seed=self._seed)
                self._seed = None  # later resets continue each copy's RNG stream
                self._lengths[:] = 0
                return self._flat(obs)

            def step_async(self, actions) -> None:
                self._actions = np.asarray(actions, np.float32).reshape(self.venv.num_envs, *self.venv._action_shape)

            def step_wait(self):
                obs, reward, _, truncated, info = self.venv.step(self._actions)
                self._lengths += 1
                per = self.c if self.shared else 1
                if self.shared and "agent_rewards" in info:  # difference credit: slot (k, j) gets class j's
                    rewards = np.asarray(info["agent_rewards"], np.float32).reshape(-1)
                else:
                    rewards = np.repeat(reward, per).astype(np.float32)
                dones = np.repeat(truncated, per)
                infos = [{} for _ in range(self.num_envs)]
                for k in range(self.venv.num_envs):
                    for j in range(per):
                        slot = infos[k * per + j]
                        slot["balanced_accuracy"] = float(info["balanced_accuracy"][k])
                        slot["ratio"] = info["ratios"][k, j] if self.shared else info["ratios"][k].copy()
                        if self.shared:
                            slot["recall"] = float(info["recall"][k, j])
                        if truncated[k]:
                            fo = info["final_obs"][k]
                            slot["terminal_observation"] = fo[j] if self.shared else fo
                            slot["TimeLimit.truncated"] = True
                            if "test" in info:
                                slot["test"] = info["test"][k]
                    if truncated[k]:  # once per episode per copy, not once per agent
                        infos[k * per]["episode"] = {"r": float(info["episode_return"][k]),
                                                     "l": int(self._lengths[k]), "t": time.time() - self._t0}
                        self._lengths[k] = 0
                return self._flat(obs), rewards, dones, infos

            def close(self) -> None:
                self.venv.close()

            def get_attr(self, attr_name, indices=None):
                return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

            def set_attr(self, attr_name, value, indices=None) -> None:
                setattr(self.venv, attr_name, value)

            def env_method(self, method_name, *args, indices=None, **kwargs):
                return [getattr(self.venv, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

            def env_is_wrapped(self, wrapper_class, indices=None):
                return [False for _ in self._get_indices(indices)]

            def seed(self, seed=None):
                self._seed = seed
                return [seed] * self.num_envs

        return _Impl()
