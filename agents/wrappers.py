"""Vectorised views of the env for Stable-Baselines3: parameter sharing (one slot per class agent) and central.

Our own thin wrappers instead of SuperSuit: SuperSuit's vector copies share one RNG, and in a prototype
SuperSuit 3.11 worked with SB3's PPO only without ``seed=``. Here every env copy keeps its own seed and RNG streams.

- :class:`SharedPolicyVecEnv`: ``K`` copies of a PettingZoo parallel env; each class agent of each copy is one
  slot of an SB3 ``VecEnv`` (``num_envs = K * C``), so one policy is shared by all agents (the one-hot class id
  in the observation tells them apart). Copies run in this process, or each in its own subprocess.
- :func:`make_central_vec_env`: ``K`` copies of the gymnasium view (one agent sets every ratio), each wrapped in
  SB3's ``Monitor``, in a ``DummyVecEnv`` or ``SubprocVecEnv``.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

WRAPPERS = ("shared", "central")


# -- one env copy ---------------------------------------------------------------------------------
class _CopyRunner:
    """Steps one PettingZoo parallel env copy as ``C`` slots: auto-reset, episode statistics, slot infos.

    Every agent must be live for the whole episode and all must end together (the tailmix env truncates every
    agent at ``max_steps``); a slot cannot sit idle in an SB3 ``VecEnv``.
    """

    def __init__(self, env_fn: Callable[[], Any]) -> None:
        self.env = env_fn()
        self.agents = list(self.env.possible_agents)
        self.episode_return = 0.0
        self.episode_length = 0
        self.t0 = time.time()

    def spaces(self):
        return ([self.env.observation_space(a) for a in self.agents], [self.env.action_space(a) for a in self.agents])

    def _stack(self, obs: dict) -> np.ndarray:
        return np.stack([np.asarray(obs[a], np.float32) for a in self.agents])

    def reset(self, seed: int | None, options: dict | None) -> tuple[np.ndarray, list[dict]]:
        obs, infos = self.env.reset(seed=seed, options=options or None)
        self.episode_return, self.episode_length = 0.0, 0
        return self._stack(obs), [self._slot_info(i, infos) for i in range(len(self.agents))]

    def _slot_info(self, i: int, infos: dict) -> dict:
        info = dict(infos.get(self.agents[i], {}))
        info["agent"] = self.agents[i]
        info["agent_index"] = i
        return info

    def step(self, actions: np.ndarray):
        live = list(self.env.agents)
        if live != self.agents:
            raise RuntimeError(f"SharedPolicyVecEnv needs every agent live each step; live: {live}. It only wraps "
                               "envs whose agents all stay until the episode ends together.")
        obs, rewards, terms, truncs, infos = self.env.step(
            {a: np.asarray(actions[i], np.float32).reshape(-1) for i, a in enumerate(self.agents)})
        obs_arr = self._stack(obs)
        rew = np.array([float(rewards[a]) for a in self.agents], np.float32)
        term = np.array([bool(terms[a]) for a in self.agents])
        trunc = np.array([bool(truncs[a]) for a in self.agents])
        done = term | trunc
        if done.any() and not done.all():
            raise RuntimeError("SharedPolicyVecEnv needs all agents to end their episode at the same step; agents "
                               f"{[a for a, d in zip(self.agents, done) if d]} ended alone")
        slot_infos = [self._slot_info(i, infos) for i in range(len(self.agents))]
        # The episode return is the team's return, counted once per copy, not once per agent: the shared reward
        # (every agent's), or under difference credit the ``team_reward`` the env reports beside the per-agent ones.
        team = infos.get(self.agents[0], {}).get("team_reward") if isinstance(infos, dict) else None
        self.episode_return += float(rew.mean()) if team is None else float(team)
        self.episode_length += 1
        if done.all():
            for i, info in enumerate(slot_infos):
                info["terminal_observation"] = obs_arr[i]
                info["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            slot_infos[0]["episode"] = {"r": self.episode_return, "l": self.episode_length,
                                        "t": round(time.time() - self.t0, 6)}
            obs_arr, reset_infos = self.reset(None, None)  # later resets continue the copy's own RNG stream
            for info, rinfo in zip(slot_infos, reset_infos):
                info["reset_info"] = rinfo
        return obs_arr, rew, done, slot_infos

    def call(self, name: str, args, kwargs):
        return getattr(self.env, name)(*args, **kwargs)

    def getattr(self, name: str):
        return getattr(self.env, name)

    def setattr(self, name: str, value) -> None:
        setattr(self.env, name, value)

    def is_wrapped(self, wrapper_class) -> bool:
        env = self.env
        while env is not None:
            if isinstance(env, wrapper_class):
                return True
            env = getattr(env, "env", None)
        return False

    def close(self) -> None:
        self.env.close()


def _worker(remote, parent_remote, fn_wrapper) -> None:
    """Subprocess loop: one :class:`_CopyRunner`, commands ``(method, args)`` over a pipe."""
    parent_remote.close()
    runner = _CopyRunner(fn_wrapper.var)
    while True:
        try:
            cmd, args = remote.recv()
        except EOFError:
            break
        try:
            if cmd == "close":
                runner.close()
                remote.send(("ok", None))
                break
            remote.send(("ok", getattr(runner, cmd)(*args)))
        except Exception as err:  # noqa: BLE001 - the parent re-raises it with the worker's message
            remote.send(("error", err))
    remote.close()


class _RemoteRunner:
    """A :class:`_CopyRunner` in a subprocess (same methods, called over a pipe)."""

    def __init__(self, env_fn: Callable[[], Any], ctx) -> None:
        from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper

        self.remote, work_remote = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(work_remote, self.remote, CloudpickleWrapper(env_fn)),
                                   daemon=True)
        self.process.start()
        work_remote.close()
        self.closed = False

    def send(self, cmd: str, *args) -> None:
        self.remote.send((cmd, args))

    def recv_raw(self):
        return self.remote.recv()

    def recv(self):
        status, value = self.recv_raw()
        if status == "error":
            raise value
        return value

    def __getattr__(self, cmd: str):
        def method(*args):
            self.send(cmd, *args)
            return self.recv()
        return method

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.send("close")
            self.recv()
        except (EOFError, BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        self.closed = True


# -- parameter sharing ----------------------------------------------------------------------------
class SharedPolicyVecEnv(VecEnv):
    """An SB3 ``VecEnv`` whose slots are the class agents of ``K`` PettingZoo parallel env copies.

    Slot ``k * C + i`` is agent ``possible_agents[i]`` of copy ``k``. Observation and action spaces are the
    per-agent ones (their union box if agents' bounds differ). Rewards are per agent: slot ``k * C + i`` gets agent
    ``i``'s reward (the shared reward by default in tailmix, its own difference reward with ``credit="difference"``).

    Conventions (SB3's): an episode's end auto-resets the copy and puts ``terminal_observation`` (and
    ``TimeLimit.truncated``) in each of its slots' infos; each slot's info is its agent's info dict plus
    ``agent`` and ``agent_index``; ``info["episode"] = {"r", "l", "t"}`` appears ONCE per episode per copy, in
    the copy's first slot, so SB3's episode statistics count episodes, not agents. ``r`` is the team return
    (the shared reward summed over the episode: the mean of the agents' rewards, or the env's ``team_reward`` info
    when it reports one, as tailmix does under ``credit="difference"``).

    Args:
        env_fns: One callable per copy, each returning a fresh PettingZoo ``ParallelEnv``.
        seed: Copy ``k`` is reset with ``seed + k`` at the first reset (``None``: unseeded). Later resets
            continue each copy's own RNG stream. ``seed()`` sets new seeds for the next reset.
        subprocess: Run each copy in its own process (``forkserver``/``spawn``), like SB3's ``SubprocVecEnv``.
        start_method: Multiprocessing start method when ``subprocess`` (default: ``forkserver`` if available).
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], *, seed: int | None = None, subprocess: bool = False,
                 start_method: str | None = None) -> None:
        if not env_fns:
            raise ValueError("env_fns is empty; pass one callable per env copy, e.g. [lambda: SyntheticRatioEnv(...)]")
        if subprocess:
            if start_method is None:
                start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            ctx = mp.get_context(start_method)
            self.runners = [_RemoteRunner(fn, ctx) for fn in env_fns]
        else:
            self.runners = [_CopyRunner(fn) for fn in env_fns]
        self.subprocess = subprocess
        self.n_copies = len(self.runners)
        obs_spaces, act_spaces = self.runners[0].spaces()
        self.agents = list(self.runners[0].getattr("possible_agents"))
        self.n_agents = len(self.agents)
        for r in self.runners[1:]:
            if list(r.getattr("possible_agents")) != self.agents:
                raise ValueError("every env copy must have the same agents; build all copies with the same settings")
        super().__init__(self.n_copies * self.n_agents, _union_box(obs_spaces, "observation"),
                         _union_box(act_spaces, "action"))
        self._copy_seeds: list[int | None] = self._seeds_from(seed)
        self._actions: np.ndarray | None = None
        self.closed = False

    # -- seeding --------------------------------------------------------------------------------
    def _seeds_from(self, seed: int | None) -> list[int | None]:
        return [None if seed is None else int(seed) + k for k in range(self.n_copies)]

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed copy ``k`` with ``seed + k`` at the next reset; returns each slot's copy seed."""
        self._copy_seeds = self._seeds_from(seed)
        return [self._copy_seeds[k] for k in range(self.n_copies) for _ in range(self.n_agents)]

    # -- stepping -------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        options = [self._options[k * self.n_agents] for k in range(self.n_copies)]
        if self.subprocess:
            for r, s, o in zip(self.runners, self._copy_seeds, options):
                r.send("reset", s, o)
            results = _gather(self.runners)
        else:
            results = [r.reset(s, o) for r, s, o in zip(self.runners, self._copy_seeds, options)]
        self._copy_seeds = [None] * self.n_copies
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, infos in results for info in infos]
        return np.concatenate([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        a = np.asarray(actions, np.float32)
        self._actions = a.reshape(self.n_copies, self.n_agents, *self.action_space.shape)

    def step_wait(self):
        assert self._actions is not None, "step_wait() without step_async()"
        if self.subprocess:
            for r, a in zip(self.runners, self._actions):
                r.send("step", a)
            results = _gather(self.runners)
        else:
            results = [r.step(a) for r, a in zip(self.runners, self._actions)]
        self._actions = None
        obs = np.concatenate([o for o, _, _, _ in results])
        rewards = np.concatenate([rw for _, rw, _, _ in results])
        dones = np.concatenate([d for _, _, d, _ in results])
        infos = [info for _, _, _, infos in results for info in infos]
        return obs, rewards, dones, infos

    def close(self) -> None:
        if self.closed:
            return
        for r in self.runners:
            r.close()
        self.closed = True

    # -- attribute access (indices are slots; each copy is asked once) ----------------------------
    def _copies(self, indices) -> tuple[list[int], list[int]]:
        slots = list(self._get_indices(indices))
        copies = [s // self.n_agents for s in slots]
        return slots, copies

    def _per_slot(self, indices, fn) -> list:
        _, copies = self._copies(indices)
        results = {k: fn(self.runners[k]) for k in dict.fromkeys(copies)}
        return [results[k] for k in copies]

    def get_attr(self, attr_name: str, indices=None) -> list:
        return self._per_slot(indices, lambda r: r.getattr(attr_name))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        self._per_slot(indices, lambda r: r.setattr(attr_name, value))

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list:
        """Call a method of the env copies behind ``indices`` (once per copy; each slot gets its copy's result)."""
        return self._per_slot(indices, lambda r: r.call(method_name, method_args, method_kwargs))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return self._per_slot(indices, lambda r: r.is_wrapped(wrapper_class))

    def get_images(self):
        return [None] * self.num_envs


def _gather(runners: list[_RemoteRunner]) -> list:
    """Every worker's reply (so no pipe is left holding one), then the first error, if any, re-raised."""
    replies = [r.recv_raw() for r in runners]
    for status, value in replies:
        if status == "error":
            raise value
    return [value for _, value in replies]


def _union_box(boxes: list, what: str) -> spaces.Box:
    first = boxes[0]
    if not isinstance(first, spaces.Box):
        raise ValueError(f"SharedPolicyVecEnv needs Box {what} spaces; got {type(first).__name__}")
    if any(not isinstance(b, spaces.Box) or b.shape != first.shape for b in boxes):
        raise ValueError(f"every agent must have the same {what} space shape to share one policy; got "
                         f"{[getattr(b, 'shape', b) for b in boxes]}")
    low = np.min([b.low for b in boxes], axis=0)
    high = np.max([b.high for b in boxes], axis=0)
    return spaces.Box(low.astype(first.dtype), high.astype(first.dtype), dtype=first.dtype)


# -- factories ------------------------------------------------------------------------------------
def _shared_env_fn(env_kwargs: dict) -> Callable[[], Any]:
    def make():
        from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

        return SyntheticRatioEnv(**env_kwargs)
    return make


def _central_env_fn(env_kwargs: dict) -> Callable[[], Any]:
    def make():
        from stable_baselines3.common.monitor import Monitor

        from tailmix.envs.central import SyntheticRatioCentralEnv

        return Monitor(SyntheticRatioCentralEnv(**env_kwargs))
    return make


def make_shared_vec_env(env_kwargs: dict, n_envs: int = 1, seed: int | None = 0, subprocess: bool = False
                        ) -> SharedPolicyVecEnv:
    """``n_envs`` copies of ``SyntheticRatioEnv(**env_kwargs)`` with parameter sharing (``n_envs * C`` slots)."""
    _check_n_envs(n_envs)
    return SharedPolicyVecEnv([_shared_env_fn(dict(env_kwargs)) for _ in range(n_envs)], seed=seed,
                              subprocess=subprocess)


def make_central_vec_env(env_kwargs: dict, n_envs: int = 1, seed: int | None = 0, subprocess: bool = False
                         ) -> VecEnv:
    """``n_envs`` copies of ``SyntheticRatioCentralEnv(**env_kwargs)``, each in SB3's ``Monitor``.

    Copy ``k`` is seeded with ``seed + k`` at the first reset. ``subprocess=True`` uses SB3's ``SubprocVecEnv``
    (each copy builds its own encoder, so start-up costs ``n_envs`` times as much).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    _check_n_envs(n_envs)
    fns = [_central_env_fn(dict(env_kwargs)) for _ in range(n_envs)]
    venv = SubprocVecEnv(fns) if subprocess else DummyVecEnv(fns)
    venv.seed(seed)
    return venv


def make_vec_env(wrapper: str, env_kwargs: dict, n_envs: int = 1, seed: int | None = 0, subprocess: bool = False
                 ) -> VecEnv:
    """The ``"shared"`` (parameter sharing) or ``"central"`` vectorised env."""
    if wrapper == "shared":
        return make_shared_vec_env(env_kwargs, n_envs, seed, subprocess)
    if wrapper == "central":
        return make_central_vec_env(env_kwargs, n_envs, seed, subprocess)
    raise ValueError(f"wrapper={wrapper!r} is not known; choose one of {WRAPPERS}")


def _check_n_envs(n_envs: int) -> None:
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer (env copies); got {n_envs!r}")
