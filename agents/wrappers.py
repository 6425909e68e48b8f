"""The env as a Stable-Baselines3 ``VecEnv``: parameter sharing (one slot per class agent) or central.

:func:`make_vec_env` is the one way in (training uses it). In feature mode it is backed by the batched
:class:`envs.vector.SyntheticRatioVectorEnv` (every copy's heads trained in one set of tensor ops) through
:class:`BatchedVecEnv`; pixel mode (unless ``batched=True``) and ``subprocess=True`` step each copy on its own (the
two classes below).
Every path gives the same slots, seeds, per-slot infos (with ``class_name`` in each shared slot) and episode
statistics, so ``agents.callbacks.TailmixMetricsCallback`` logs per-class scalars on each.

Our own thin wrappers instead of SuperSuit: SuperSuit's vector copies share one RNG, and in a prototype
SuperSuit 3.11 worked with SB3's PPO only without ``seed=``. Here every env copy keeps its own seed and RNG streams.

- :class:`BatchedVecEnv`: ``K`` copies of the batched env, shared (``K * C`` slots) or central (``K`` slots).
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
        names = getattr(self.env, "class_names", None)  # tailmix's infos hold numbers; the name comes from the env
        if names is not None and "class_name" not in info and len(names) == len(self.agents):
            info["class_name"] = str(names[i])
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


# -- the batched env -------------------------------------------------------------------------------
class BatchedVecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a :class:`envs.vector.SyntheticRatioVectorEnv` (``SAME_STEP`` autoreset).

    ``shared=True``: slot ``k * C + j`` is class agent ``j`` of copy ``k`` (observation row ``j``, action
    ``(G,)``, its own reward under ``credit="difference"``, else the team reward), as :class:`SharedPolicyVecEnv`
    gives. ``shared=False``: slot ``k`` is copy ``k`` (the central view). Infos, episode statistics and seeding
    follow :class:`SharedPolicyVecEnv` and ``make_central_vec_env``; build it with :func:`make_vec_env`.
    """

    def __init__(self, venv, *, shared: bool = True, seed: int | None = None) -> None:
        from gymnasium.vector import AutoresetMode

        if not shared and venv.config.credit == "difference":
            raise ValueError("credit='difference' gives each class agent its own reward; the central wrapper has a "
                             "single agent per copy. Use wrapper='shared', or credit='shared'")
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:  # SB3's convention: reset within the step
            venv.autoreset_mode = AutoresetMode.SAME_STEP
            venv.metadata = {**venv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.venv = venv
        self.shared = shared
        self.n_copies = venv.num_envs
        self.c = venv.core.c
        self.class_names = venv.class_names
        self.agents = [f"class_{i}" for i in range(self.c)]
        core = venv.core
        if shared:
            obs_space = spaces.Box(core.obs_low.min(0), core.obs_high.max(0), dtype=np.float32)
            act_space = spaces.Box(-1.0, 1.0, (core.g,), np.float32)
        else:
            obs_space, act_space = venv.single_observation_space, venv.single_action_space
        super().__init__(self.n_copies * (self.c if shared else 1), obs_space, act_space)
        self._copy_seeds = self._seeds_from(seed)
        self._actions: np.ndarray | None = None
        self._t0 = time.time()
        self._lengths = np.zeros(self.n_copies, np.int64)

    def _seeds_from(self, seed: int | None) -> list[int | None]:
        return [None if seed is None else int(seed) + k for k in range(self.n_copies)]

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed copy ``k`` with ``seed + k`` at the next reset; returns each slot's copy seed."""
        self._copy_seeds = self._seeds_from(seed)
        per = self.c if self.shared else 1
        return [s for s in self._copy_seeds for _ in range(per)]

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        return obs.reshape(-1, obs.shape[-1]) if self.shared else obs

    def _slot_infos(self, infos: dict) -> list[dict]:
        """Per-slot infos from the vector env's arrays: a class agent's (shared) or a copy's (central)."""
        from tailmix.envs.views import class_infos, copy_info

        arrays = {key: v for key, v in infos.items() if isinstance(v, np.ndarray) and not key.startswith("_")}
        if not self.shared:
            return [copy_info(arrays, k) for k in range(self.n_copies)]
        out = []
        for rows in class_infos(arrays):
            for j, info in enumerate(rows):
                info.update(class_name=self.class_names[j], agent=self.agents[j], agent_index=j)
                out.append(info)
        return out

    def reset(self) -> np.ndarray:
        seeds = self._copy_seeds
        obs, infos = self.venv.reset(seed=None if all(s is None for s in seeds) else seeds)
        self._copy_seeds = [None] * self.n_copies  # later resets continue each copy's RNG streams
        self._reset_seeds()
        self._reset_options()
        self._lengths[:] = 0
        self.reset_infos = self._slot_infos(infos)
        return self._flat(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, np.float32).reshape(self.n_copies, *self.venv.single_action_space.shape)

    def step_wait(self):
        assert self._actions is not None, "step_wait() without step_async()"
        out = self.venv.step_arrays(self._actions)  # the core's arrays; SB3's infos are built here
        obs, reward, truncated, info = out["obs"], out["reward"], out["truncated"], out["infos"]
        self._actions = None
        self._lengths += 1
        per = self.c if self.shared else 1
        if self.shared and "agent_rewards" in info:  # difference credit: slot (k, j) gets class j's
            rewards = np.asarray(info["agent_rewards"], np.float32).reshape(-1)
        else:
            rewards = np.repeat(reward, per).astype(np.float32)
        dones = np.repeat(truncated, per)
        infos = self._slot_infos(info)
        if not self.shared:  # as SB3's DummyVecEnv sets it, on every step
            for k in range(self.n_copies):
                infos[k]["TimeLimit.truncated"] = bool(truncated[k])
        for k in np.flatnonzero(truncated):
            for j in range(per):
                slot = infos[k * per + j]
                fo = out["final_obs"][k]
                slot["terminal_observation"] = fo[j] if self.shared else fo
                slot["TimeLimit.truncated"] = True
                if k in out["test"]:
                    slot["test"] = out["test"][k]
            # once per episode per copy, not once per agent
            infos[k * per]["episode"] = {"r": float(out["episode_return"][k]), "l": int(self._lengths[k]),
                                         "t": round(time.time() - self._t0, 6)}
            self._lengths[k] = 0
        return self._flat(obs), rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> list:
        value = getattr(self, attr_name) if attr_name == "class_names" else getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list:
        """Call a method of the batched env once; every slot of ``indices`` gets its result."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self):
        return [None] * self.num_envs


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
    """``n_envs`` copies of ``SyntheticRatioEnv(**env_kwargs)``, each stepped on its own, with parameter sharing
    (``n_envs * C`` slots): :func:`make_vec_env`'s per-copy path (pixel mode, subprocesses)."""
    _check_n_envs(n_envs)
    return SharedPolicyVecEnv([_shared_env_fn(dict(env_kwargs)) for _ in range(n_envs)], seed=seed,
                              subprocess=subprocess)


def make_central_vec_env(env_kwargs: dict, n_envs: int = 1, seed: int | None = 0, subprocess: bool = False
                         ) -> VecEnv:
    """``n_envs`` copies of ``SyntheticRatioCentralEnv(**env_kwargs)``, each in SB3's ``Monitor``: the per-copy
    path of :func:`make_vec_env`.

    Copy ``k`` is seeded with ``seed + k`` at the first reset. ``subprocess=True`` uses SB3's ``SubprocVecEnv``
    (each copy builds its own encoder, so start-up costs ``n_envs`` times as much).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    _check_n_envs(n_envs)
    fns = [_central_env_fn(dict(env_kwargs)) for _ in range(n_envs)]
    venv = SubprocVecEnv(fns) if subprocess else DummyVecEnv(fns)
    venv.seed(seed)
    return venv


def make_vec_env(wrapper: str, env_kwargs, n_envs: int = 1, seed: int | None = 0, subprocess: bool = False, *,
                 batched: bool | None = None) -> VecEnv:
    """The env as an SB3 ``VecEnv``: ``"shared"`` (one slot per class agent of each copy, one policy shared by
    all) or ``"central"`` (one slot per copy, one agent sets every ratio).

    Args:
        wrapper: ``"shared"`` or ``"central"``.
        env_kwargs: Keyword arguments of the env (``dataset``, ``sources``, ``mode``, ...), or a built
            :class:`envs.vector.SyntheticRatioVectorEnv` (then ``n_envs`` is its ``num_envs``; it is switched to
            ``SAME_STEP`` autoreset, SB3's convention).
        n_envs: Env copies ``K``; copy ``k`` is reset with ``seed + k`` first, then continues its own RNG streams.
        seed: See ``n_envs`` (``None``: unseeded).
        subprocess: Step each copy in its own process (not batched).
        batched: ``None`` (default): batched in feature mode without ``subprocess``, else each copy on its own.
            The two give the same slots, seeds and infos; the batched env's numbers equal the per-copy envs' up
            to floating-point summation order in the batched heads (identical with ``n_envs=1``). ``True`` in
            pixel mode trains the copies' CNNs as one grouped network (``envs.pixel_batched``; identical to the
            per-copy envs on the CPU, faster on a GPU).

    Every shared slot's info is its class agent's (the PettingZoo env's per-agent info) with ``class_name``,
    ``agent`` and ``agent_index``; a central slot's info is the central env's (per-class arrays ``(C,)``; the
    names are ``get_attr("class_names")``). ``episode`` appears once per episode per copy.
    """
    from tailmix.envs.vector import SyntheticRatioVectorEnv

    if wrapper not in WRAPPERS:
        raise ValueError(f"wrapper={wrapper!r} is not known; choose one of {WRAPPERS}")
    if isinstance(env_kwargs, SyntheticRatioVectorEnv):
        if subprocess or batched is False:
            raise ValueError("a built SyntheticRatioVectorEnv runs batched in this process; pass env keyword "
                             "arguments (a dict) for subprocess=True or batched=False")
        return BatchedVecEnv(env_kwargs, shared=wrapper == "shared", seed=seed)
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of env keyword arguments or a SyntheticRatioVectorEnv; got "
                         f"{type(env_kwargs).__name__}")
    _check_n_envs(n_envs)
    feature = env_kwargs.get("mode", "feature") == "feature"
    if batched is None:
        batched = feature and not subprocess
    if batched:
        if subprocess:
            raise ValueError("batched=True needs subprocess=False (the batched env trains every copy in this "
                             "process); use batched=None to choose automatically")
        if wrapper == "central" and env_kwargs.get("credit", "shared") == "difference":
            raise ValueError("credit='difference' gives each class agent its own reward, but the central wrapper "
                             "has a single agent per copy; use wrapper='shared', or credit='shared'")
        venv = SyntheticRatioVectorEnv(n_envs, autoreset_mode="same_step", **env_kwargs)
        return BatchedVecEnv(venv, shared=wrapper == "shared", seed=seed)
    if wrapper == "shared":
        return make_shared_vec_env(env_kwargs, n_envs, seed, subprocess)
    return make_central_vec_env(env_kwargs, n_envs, seed, subprocess)


def _check_n_envs(n_envs: int) -> None:
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer (env copies); got {n_envs!r}")
