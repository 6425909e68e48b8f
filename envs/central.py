"""``tailmix/SyntheticRatioCentral-v0``: the same env as one gymnasium agent that sets every ratio."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tailmix.envs.views import RENDER_METADATA, SingleCopyViews, as_action_array, copy_info, render_frame


class SyntheticRatioCentralEnv(SingleCopyViews, gym.Env):
    """Centralised view of ``tailmix/SyntheticRatio-v0``.

    ## Description
    The same simulation as the PettingZoo env (``envs.synthetic_ratio``), controlled by one agent.

    ## Observation Space
    ``Box(float32, (C, 8 + C))`` with one source: row ``c`` is agent ``class_c``'s observation in the PettingZoo
    env (with ``G`` sources and ``pool_obs``: ``(C, 6 + 2G + P + C)``, the layout documented there; with
    ``class_id_obs=False`` the last ``C`` columns, the one-hot ids, are dropped); the columns' names are
    :attr:`observation_columns`.

    ## Action Space
    ``Box(-1, 1, (C,), float32)`` with one source (v0): element ``c`` is class ``c``'s action (same affine ratio
    map). With ``G > 1`` sources: ``Box(-1, 1, (C, G), float32)``, entry ``(c, g)`` sets class ``c``'s ratio for
    source ``g``; the sources' ratios add up.

    ## Rewards
    The shared reward of the PettingZoo env (balanced validation accuracy by default). ``credit="difference"``
    is refused: it splits the reward between class agents, and this view has one agent (for per-class credit
    use the PettingZoo env or ``agents.wrappers.make_vec_env("shared", ...)``).

    ## Starting State
    As in the PettingZoo env: a fresh classifier from ``reset(seed)``, every ratio at ``initial_ratio``.

    ## Episode End
    Truncated after ``max_steps`` steps; never terminated. With ``eval_split="test"`` the last info carries
    test metrics under ``"test"``.

    ## Arguments
    Those of the PettingZoo env (``dataset``, ``source`` or ``sources``, and :class:`envs.config.RatioEnvConfig`
    fields, ``draw`` and ``pool_obs`` among them).

    ## Version History
    * v0: initial release (``credit="difference"`` refused here; see Rewards). ``sources``, ``draw`` and
      ``pool_obs`` added with v1; their v0 defaults keep v0's spaces and numbers. ``class_id_obs`` (default
      ``True``) added later; ``False`` drops the one-hot ids. The info gained
      ``shortfall`` ``(C,)``, ``source_ratios`` and ``source_counts`` ``(C, G)``. Infos hold numbers and arrays
      only (every framework batches them): ``per_class`` (a list of dicts with names) left them for
      :meth:`per_class_info` and :attr:`class_names`; every per-class value is an array ``(C,)`` in the info.
      Per-copy info numbers are numpy scalars (``np.float64``, ``np.int64``; TorchRL's info reader takes numpy
      values only), ``nan_loss`` stays ``True`` when set. ``render_mode="rgb_array"`` (ratio and recall bars per
      class; SB3 asks for it), ``metadata["render_fps"]`` and :attr:`observation_columns` added. None of these
      changes a number.
    * v1 (``tailmix/SyntheticRatioCentral-v1``): ``envs.config.V1_DEFAULTS`` (``draw="unique"``,
      ``pool_obs=True``), as for the PettingZoo env.
    """

    metadata = dict(RENDER_METADATA)

    def __init__(self, dataset=None, source=None, *, sources=None, render_mode: str | None = None, **kwargs) -> None:
        if kwargs.get("credit", "shared") == "difference":
            raise ValueError("credit='difference' gives each class agent its own reward, but the central view has a "
                             "single agent; use credit='shared' here (reward_reference=0 lowers the noise), or the "
                             "PettingZoo env / agents.wrappers wrapper='shared' for per-class credit")
        self._build(dataset, source, render_mode, kwargs, sources=sources)
        c = self.core.c
        self._action_shape = (c,) if self.core.g == 1 else (c, self.core.g)
        self.action_space = spaces.Box(-1.0, 1.0, self._action_shape, np.float32)
        self.observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # The core keeps its own RNG streams (shared with the PettingZoo view); derive them from ours.
        core_seed = seed if seed is not None else (None if self.core.np_randoms[0] is not None
                                                   else int(self.np_random.integers(0, 2**62)))
        self.core.reset([0], [core_seed])
        return self.core.observation(0), self._info(step=False)

    def step(self, action):
        a = as_action_array(action, "action")
        if a.shape != self._action_shape:
            raise ValueError(f"action must have shape {self._action_shape} (classes" +
                             (")" if self.core.g == 1 else ", sources)") + f"; got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("action contains NaN or inf; actions must be finite numbers in [-1, 1]")
        out = self.core.step(self.core.action_to_ratio(a)[None])
        truncated = bool(self.core.done[0])
        info = self._info(step=True)
        if truncated and self.config.eval_split == "test":
            info["test"] = self.core.test_report(0)
        return self.core.observation(0), float(out["reward"][0]), False, truncated, info

    def _info(self, step: bool) -> dict:
        """The core's infos of the copy: per-copy numbers and per-class arrays ``(C,)`` / ``(C, G)``."""
        return copy_info(self.core.infos(slice(0, 1), step=step), 0)

    def render(self):
        if self.render_mode == "rgb_array":
            return render_frame(self.core)
        if self.render_mode == "ansi":
            return (f"step {int(self.core.t[0])}/{self.config.max_steps} balanced val acc "
                    f"{self.core.metrics['balanced_accuracy'][0]:.3f} ratios {np.round(self.core.ratios[0], 2)}")
        return None


def central_env_v1(**kwargs) -> SyntheticRatioCentralEnv:
    """``tailmix/SyntheticRatioCentral-v1``: the central env with ``envs.config.V1_DEFAULTS`` (keywords override)."""
    from tailmix.envs.config import V1_DEFAULTS

    return SyntheticRatioCentralEnv(**{**V1_DEFAULTS, **kwargs})
