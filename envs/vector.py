"""``K`` copies of the env stepped together, their heads trained in one set of batched tensor ops.

Each copy has its own seed and RNG streams, so copy ``k`` follows exactly the trajectory a single env reset
with the same seed would follow, given the same actions (up to floating-point summation order). In pixel mode the
copies' CNNs are one grouped network (``envs.pixel_batched``), bit-identical to single envs on the CPU.

:class:`SyntheticRatioVectorEnv` is a gymnasium ``VectorEnv`` of the centralised view (observation
``(K, C, width)``, ``8 + C`` columns for v0, action ``(K, C)``; with ``G > 1`` sources ``(K, C, G)``), the ``vector_entry_point`` of the
central ids (``gymnasium.make_vec(id, num_envs=K, vectorization_mode="vector_entry_point")``). Autoreset:
``NEXT_STEP`` by default (gymnasium's, which its vector wrappers expect), ``SAME_STEP`` on request (SB3's
convention; ``tailmix.agents.wrappers.make_vec_env`` turns the env into an SB3 ``VecEnv`` with it), ``DISABLED``
on request (no autoreset: ``reset(options={"reset_mask": mask})`` restarts the ended copies; what TorchRL's
``GymWrapper`` prefers, which refuses ``NEXT_STEP``).

Infos are :meth:`envs.core.RatioCore.infos` (arrays with the copies first, numbers only; names:
:attr:`SyntheticRatioVectorEnv.class_names`) shaped as gymnasium's ``SyncVectorEnv`` batches the central env's
infos, so that code moves between ``make_vec(id, K, "sync")`` and this env unchanged: a ``_<key>`` mask beside
every key, ``nan_loss`` only where a step was rolled back, the test report (``eval_split="test"``) as a masked
dict of arrays, and with ``SAME_STEP`` an ended copy's infos are its new episode's, its last step's under
``final_info`` and ``final_obs``. With ``credit="difference"`` the env still returns the team reward ``(K,)``
(what ``credit="shared"`` gives) and puts the per-class difference rewards in ``infos["agent_rewards"]``
``(K, C)``.
"""
from __future__ import annotations

import numbers

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.core import RatioCore
from tailmix.envs.views import (RENDER_METADATA, accepted_render_mode, as_action_array, copy_info, observation_columns,
                                per_class_info, render_frame)


def _autoreset_mode(mode) -> AutoresetMode:
    """``mode`` as a supported :class:`AutoresetMode` (also from ``"next_step"``, ``"NextStep"``, ...)."""
    for m in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
        if mode == m or (isinstance(mode, str) and mode.replace("_", "").lower() in (m.value.lower(),
                                                                                       m.name.replace("_", "").lower())):
            return m
    raise ValueError(f"autoreset_mode={mode!r} is not supported; use AutoresetMode.NEXT_STEP (gymnasium's default), "
                     "AutoresetMode.SAME_STEP (SB3's) or AutoresetMode.DISABLED (TorchRL's)")


class SyntheticRatioVectorEnv(VectorEnv):
    """Batched centralised env.

    Args:
        num_envs: ``K`` copies.
        dataset: As for the single env.
        source: As for the single env.
        sources: As for the single env (a list of ``G`` source specs; not with ``source``).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default; gymnasium's): the step that ends the episodes
            returns their last observations, the next ``step()`` resets those copies (their actions are ignored,
            rewards 0). ``SAME_STEP``: ended copies are reset within the step; the observation returned is the
            new episode's first and ``infos["final_obs"]`` holds the last. ``DISABLED``: no autoreset; restart
            ended copies with ``reset(options={"reset_mask": mask})`` (a step with an ended copy raises).
            Strings (``"next_step"``) work too.
        **kwargs: :class:`envs.config.RatioEnvConfig` fields.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, **RENDER_METADATA}

    def __init__(self, num_envs: int, dataset=None, source=None, *, sources=None, render_mode: str | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, **kwargs) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer; got {num_envs!r}")
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        # per instance: gymnasium's vector wrappers read the mode from ``env.metadata``
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = accepted_render_mode(render_mode, type(self).__name__, stacklevel=3)
        self.config = RatioEnvConfig(**kwargs)
        self.core = RatioCore(dataset, source, self.config, num_copies=num_envs, sources=sources)
        self.num_envs = num_envs
        c = self.core.c
        self._action_shape = (c,) if self.core.g == 1 else (c, self.core.g)  # the central view's
        self.single_observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, self._action_shape, np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._episode_return = np.zeros(num_envs)
        self._autoreset = np.zeros(num_envs, bool)  # NEXT_STEP: copies whose episode ended at the last step

    @property
    def num_classes(self) -> int:
        return self.core.c

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes' names, in action-row order (infos hold numbers only)."""
        return self.core.class_names

    @property
    def observation_columns(self) -> tuple[str, ...]:
        """The name of every column of a copy's observation rows (as the single-copy views give)."""
        return observation_columns(self.core)

    def per_class_info(self, k: int = 0) -> list[dict]:
        """Copy ``k``'s last infos as one dict per class with its ``class_name``."""
        return per_class_info(self.core, k)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every copy, or with ``options={"reset_mask": mask}`` (bool ``(K,)``) only the masked ones.

        ``seed``: ``None``, an int (copy ``k`` gets ``seed + k``) or one seed per copy (unmasked copies' unused).
        Returns every copy's observations and infos.
        """
        mask = self._reset_mask(options)
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
        copies = list(np.flatnonzero(mask))
        self.core.reset(copies, [seeds[k] for k in copies])
        self._episode_return[mask] = 0
        self._autoreset[mask] = False
        return self._obs(), self._batched(self.core.infos())

    def _reset_mask(self, options: dict | None) -> np.ndarray:
        """``options["reset_mask"]`` checked (gymnasium's partial-reset option), or all copies."""
        if not options or options.get("reset_mask") is None:
            return np.ones(self.num_envs, bool)
        mask = np.asarray(options["reset_mask"])
        if mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with at least one "
                             f"True (the copies to reset); got {options['reset_mask']!r}")
        return mask

    def step(self, actions):
        """Step every copy. Infos are shaped as ``gymnasium.vector.SyncVectorEnv`` gives them for the central env
        (so code moves between the two unchanged): every key has its ``_<key>`` mask, ``nan_loss`` appears
        only where set, ``"test"`` (``eval_split="test"``) is a masked dict of arrays, and with ``SAME_STEP`` an
        ended copy's infos are its new episode's, its last ones under ``final_info`` and ``final_obs``."""
        if self._autoreset.any():  # NEXT_STEP: the copies that ended last step start anew, the actions unused
            self._check_actions(actions)
            # Copies run in lockstep (one reset, one episode length), so they all end, and restart, together.
            done = list(np.flatnonzero(self._autoreset))
            self.core.reset(done, [None] * len(done))
            self._episode_return[done] = 0
            self._autoreset[:] = False
            zeros = np.zeros(self.num_envs, bool)
            return self._obs(), np.zeros(self.num_envs), zeros, zeros.copy(), self._batched(self.core.infos())
        out = self.step_arrays(actions)
        truncated = out["truncated"]
        if out["reset_infos"] is None:
            infos = self._batched(out["infos"])
            for k, report in out["test"].items():
                infos = self._add_info(infos, {"test": report}, k)
        else:  # SAME_STEP, as SyncVectorEnv: an ended copy's infos are its reset's, its last ones beside them
            infos = _merge_batched(self._batched(out["infos"], ~truncated), self._batched(out["reset_infos"], truncated))
            for k in np.flatnonzero(truncated):
                final = copy_info(out["infos"], k)
                if k in out["test"]:
                    final["test"] = out["test"][k]
                infos = self._add_info(infos, {"final_obs": out["final_obs"][k], "final_info": final}, k)
        return out["obs"], out["reward"], out["terminated"], truncated, infos

    def step_arrays(self, actions) -> dict:
        """:meth:`step` without gymnasium's info batching (``NEXT_STEP`` autoresets not handled), for adapters
        that build their own infos (``agents.wrappers.BatchedVecEnv``).

        Returns a dict: ``obs``, ``reward``, ``terminated``, ``truncated``; ``infos`` (:meth:`RatioCore.infos`
        after the step, copies first); ``test`` (``{copy: test report}`` of the copies that ended, with
        ``eval_split="test"``); ``episode_return`` ``(K,)`` (the episodes' returns so far, the ended ones'
        complete); with ``SAME_STEP``, ``final_obs`` (the ended copies' last observations, ``(K, ...)``) and
        ``reset_infos`` (the core's infos after their reset), else ``None``.
        """
        if self._autoreset.any():
            raise RuntimeError("copies ended at the last step and wait for NEXT_STEP's autoreset, which step() does; "
                               "step_arrays() is for SAME_STEP or DISABLED autoreset")
        a = self._check_actions(actions)
        out = self.core.step(self.core.action_to_ratio(a))
        reward = out["reward"]
        self._episode_return += reward
        truncated = self.core.done.copy()
        result = {"reward": reward, "terminated": np.zeros(self.num_envs, bool), "truncated": truncated,
                  "infos": self.core.infos(step=True), "test": {}, "episode_return": self._episode_return.copy(),
                  "final_obs": None, "reset_infos": None}
        if truncated.any():
            if self.config.eval_split == "test":
                result["test"] = {int(k): self.core.test_report(k) for k in np.flatnonzero(truncated)}
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                result["final_obs"] = self._obs()
                done = list(np.flatnonzero(truncated))
                self.core.reset(done, [None] * len(done))
                self._episode_return[done] = 0
                result["reset_infos"] = self.core.infos()
            elif self.autoreset_mode == AutoresetMode.NEXT_STEP:
                self._autoreset = truncated.copy()
        result["obs"] = self._obs()
        return result

    def _check_actions(self, actions) -> np.ndarray:
        a = as_action_array(actions, "actions")
        if a.shape != (self.num_envs, *self._action_shape):
            raise ValueError(f"actions must have shape {(self.num_envs, *self._action_shape)}; got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf; use finite numbers in [-1, 1]")
        if self.autoreset_mode == AutoresetMode.DISABLED and self.core.done.any():
            ended = np.flatnonzero(self.core.done).tolist()
            raise RuntimeError(f"copies {ended} ended their episode and autoreset_mode is DISABLED; restart them "
                               "first with reset(options={'reset_mask': mask}) (mask True for those copies)")
        return a

    def _batched(self, arrays: dict, rows: np.ndarray | None = None) -> dict:
        """:meth:`RatioCore.infos` as ``SyncVectorEnv`` batches the central env's infos of the copies ``rows``
        (default all): each key beside its ``_<key>`` mask; ``nan_loss`` only where set (the central env reports
        it only then)."""
        rows = np.ones(self.num_envs, bool) if rows is None else np.asarray(rows, bool)
        out = {}
        for key, value in arrays.items():
            mask = rows & value if key == "nan_loss" else rows
            if not mask.any():
                continue
            if not mask.all():  # the copies without the key hold zeros there, as in SyncVectorEnv's arrays
                value = value.copy()
                value[~mask] = 0
            out[key], out[f"_{key}"] = value, mask.copy()
        return out

    def _obs(self) -> np.ndarray:
        return self.core.observations()

    def render(self):
        """``None``, or one frame per copy (a tuple, as ``SyncVectorEnv`` returns): with ``render_mode="ansi"`` a
        line of text, with ``"rgb_array"`` an image (``envs.views.render_frame``)."""
        if self.render_mode == "rgb_array":
            return tuple(render_frame(self.core, k) for k in range(self.num_envs))
        if self.render_mode != "ansi" or not self.core.metrics:
            return None
        bal = self.core.metrics["balanced_accuracy"]
        return tuple(f"step {int(self.core.t[k])}/{self.config.max_steps} balanced val acc {bal[k]:.3f} "
                     f"ratios {np.round(self.core.ratios[k], 2)}" for k in range(self.num_envs))


def _merge_batched(a: dict, b: dict) -> dict:
    """Two batched info dicts of disjoint copies (``_<key>`` masks) as one, as ``SyncVectorEnv`` fills them."""
    out = dict(a)
    for key, value in b.items():
        if key.startswith("_"):
            continue
        mask = b[f"_{key}"]
        if key not in out:
            out[key], out[f"_{key}"] = value, mask.copy()
            continue
        merged = out[key].copy()
        merged[mask] = value[mask]
        out[key], out[f"_{key}"] = merged, out[f"_{key}"] | mask
    return out
