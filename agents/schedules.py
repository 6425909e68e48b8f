"""Policies whose per-class ratios change over the episode: fixed schedules and knot schedules.

A schedule gives every class a ratio at each point of the episode, as a piecewise-linear function of the
episode fraction ``f = s / (T - 1)`` of step ``s`` (0 at the first step, 1 at the last; ``T = max_steps``).
It is defined by ``K`` knots at fractions ``0, 1/(K-1), ..., 1`` and interpolated linearly between them.

- :class:`BaselineSchedule`: a per-class shape of :mod:`agents.baselines` (``constant:x``, ``fill``, ``inverse``,
  ...) times a multiplier that moves over the episode. Specs for :func:`agents.baselines.make_baseline`:

  ==================  =====================================================================
  ``decay:<base>``    from the base ratios ``r`` at the first step to 0 at the last, linearly
  ``warmup:<base>``   from 0 to ``r``
  ``early:<base>``    ``r`` in the first half of the steps, 0 in the second
  ``late:<base>``     0 in the first half, ``r`` in the second
  ==================  =====================================================================

  e.g. ``decay:fill``, ``warmup:constant:2``, ``early:inverse:0.5``. ``r`` are the base policy's ratios as it
  plays them (clipped to ``[0, max_ratio]``).
- :class:`KnotSchedule`: free per-class actions at each knot (what ``agents.cem.cem_search(knots=K)`` finds), or
  with ``G >= 2`` sources free actions per class and source at each knot, ``(K, C, G)``.

A schedule only means something if what a class gets early is not forgotten by the end of the episode: in
feature mode use ``lr_schedule="cosine"`` (the head's learning rate decays over the episode, as pixel mode's
does); with the v0 constant rate the last steps overwrite the earlier ones.

The step is read from the observation's ``progress`` column (``t / max_steps``), so a schedule plays the same in
every view that hands it the per-agent observations.
"""
from __future__ import annotations

import math

import numpy as np

from tailmix.agents.policy import Policy, RatioBaseline, action_to_ratio, ratio_actions

#: Schedule kinds of :class:`BaselineSchedule`: name -> multiplier of the base ratios at each knot.
SCHEDULE_KINDS = {"decay": (1.0, 0.0), "warmup": (0.0, 1.0)}
#: Step-function kinds: name -> multiplier in the first half of the steps, in the second.
_HALVES = {"early": (1.0, 0.0), "late": (0.0, 1.0)}
KINDS = tuple(SCHEDULE_KINDS) + tuple(_HALVES)
#: The fixed schedule baselines a benchmark runs (one per kind and per shape that synthesises).
SCHEDULE_BASELINES = tuple(f"{kind}:{base}" for kind in KINDS for base in ("constant:1", "fill", "inverse"))


def episode_fraction(step: int, max_steps: int) -> float:
    """``step / (max_steps - 1)`` clipped to ``[0, 1]`` (0 for a one-step episode)."""
    return 0.0 if max_steps <= 1 else min(max(step / (max_steps - 1), 0.0), 1.0)


def knot_weights(fraction: float, num_knots: int) -> np.ndarray:
    """Weights ``(K,)`` of the knots at ``fraction`` (linear interpolation: at most two non-zero, summing to 1)."""
    w = np.zeros(num_knots, np.float64)
    if num_knots == 1:
        w[0] = 1.0
        return w
    pos = float(fraction) * (num_knots - 1)
    lo = min(int(math.floor(pos)), num_knots - 2)
    w[lo], w[lo + 1] = lo + 1 - pos, pos - lo
    return w


def interpolate(knots: np.ndarray, fraction: float) -> np.ndarray:
    """The schedule ``knots`` ``(..., K, C)`` at ``fraction``: ``(..., C)``."""
    knots = np.asarray(knots, np.float64)
    return np.einsum("...kc,k->...c", knots, knot_weights(fraction, knots.shape[-2]))


def schedule_actions(knots: np.ndarray, step: int, max_steps: int, action_ndim: int = 1) -> np.ndarray:
    """float32 actions of knot schedules ``(N, K, C)`` (or ``(K, C)``) at ``step``: what a :class:`KnotSchedule`
    plays and what :func:`agents.cem.evaluate_actions` evaluates, bit for bit. ``action_ndim=2``: schedules over
    ``(C, G)`` actions, ``(N, K, C, G)`` (or ``(K, C, G)``), interpolated entry by entry."""
    if action_ndim != 1:
        knots = np.asarray(knots)
        lead, tail = knots.shape[:knots.ndim - action_ndim], knots.shape[knots.ndim - action_ndim:]
        flat = schedule_actions(knots.reshape(*lead, -1), step, max_steps)  # (..., C * G): the same per entry
        return flat.reshape(*lead[:-1], *tail)
    return np.clip(interpolate(knots, episode_fraction(step, max_steps)), -1.0, 1.0).astype(np.float32)


def current_step(observations: dict, env) -> int:
    """The step about to be taken, from the ``progress`` column (``t / max_steps``) of any live agent's row."""
    from tailmix.envs.core import OBS_COLUMNS

    max_steps = int(env.config.max_steps)
    if not observations:
        return 0
    row = np.asarray(next(iter(observations.values())), np.float64).reshape(-1)
    columns = tuple(getattr(env, "observation_columns", OBS_COLUMNS))  # with several sources the column moves
    return int(round(row[columns.index("progress")] * max_steps))


class SchedulePolicy(Policy):
    """Base class: ratios that depend on the episode fraction; subclasses implement :meth:`ratios_at`."""

    def ratios_at(self, env, fraction: float) -> np.ndarray:
        """The ratio of each class at episode ``fraction``, in ``[0, env.max_ratio]``."""
        raise NotImplementedError

    def ratio_schedule(self, env) -> np.ndarray:
        """``(max_steps, C)``: the ratios played at each step of an episode."""
        t = int(env.config.max_steps)
        return np.stack([self.ratios_at(env, episode_fraction(s, t)) for s in range(t)])

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        fraction = episode_fraction(current_step(observations, env), int(env.config.max_steps))
        return ratio_actions(self.ratios_at(env, fraction), env, self.source)  # with several sources: on one


class BaselineSchedule(SchedulePolicy):
    """A fixed per-class shape whose size follows a schedule over the episode.

    Args:
        base: The per-class shape (a :class:`RatioBaseline`: ``none``, ``constant:x``, ``fill``, ``inverse``, ...).
        kind: ``"decay"`` (r -> 0), ``"warmup"`` (0 -> r), ``"early"`` (r, then 0 from the middle) or ``"late"``.
        name: Label for tables (default ``"<kind>:<base name>"``).
    """

    def __init__(self, base: RatioBaseline, kind: str, name: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"schedule kind {kind!r} is not known; choose one of {KINDS}")
        if not isinstance(base, RatioBaseline):
            raise ValueError(f"a schedule needs a fixed per-class shape (none, constant:<r>, fill, inverse[:<b>]); "
                             f"got {base!r}")
        self.base, self.kind = base, kind
        self.name = name or f"{kind}:{base.name}"

    def multiplier(self, fraction: float) -> float:
        """The factor on the base ratios at episode ``fraction``."""
        if self.kind in _HALVES:
            first, second = _HALVES[self.kind]
            return first if fraction < 0.5 else second
        start, end = SCHEDULE_KINDS[self.kind]
        return start + (end - start) * float(fraction)

    def ratios_at(self, env, fraction: float) -> np.ndarray:
        return self.base.ratios(env) * self.multiplier(fraction)


class KnotSchedule(SchedulePolicy):
    """Per-class actions at ``K`` knots over the episode, interpolated linearly (a :func:`cem_search` result).

    Args:
        knots: ``(K, C)`` actions in ``[-1, 1]`` (ratio ``(a + 1) / 2 * max_ratio``), or ``(K, C, G)``: one per
            class and source (a search over ``G`` sources; it plays every source's ratio).
        max_ratio: The ``max_ratio`` of the env the knots were found in.
        name: Label for tables.
    """

    def __init__(self, knots, max_ratio: float, name: str = "schedule") -> None:
        a = np.asarray(knots, np.float64)
        if a.ndim not in (2, 3) or not a.size or not np.isfinite(a).all() or (np.abs(a) > 1).any():
            raise ValueError(f"knots must be a (K, C) (or (K, C, G)) array of finite actions in [-1, 1]; got shape "
                             f"{a.shape}")
        if not (math.isfinite(max_ratio) and max_ratio > 0):
            raise ValueError(f"max_ratio must be a finite number > 0; got {max_ratio}")
        self.knots = a.astype(np.float32)
        self.max_ratio = float(max_ratio)
        self.name = name

    def _check(self, env) -> None:
        if len(env.possible_agents) != self.knots.shape[1]:
            raise ValueError(f"this schedule has {self.knots.shape[1]} classes but the env has "
                             f"{len(env.possible_agents)}; search again on this dataset")

    def ratios_at(self, env, fraction: float) -> np.ndarray:
        self._check(env)
        if self.knots.ndim == 3:  # (C, G): entry by entry, as schedule_actions plays them
            k, c, g = self.knots.shape
            a = np.clip(interpolate(self.knots.reshape(k, c * g), fraction), -1.0, 1.0).astype(np.float32)
            return np.clip(action_to_ratio(a.reshape(c, g), self.max_ratio), 0.0, float(env.max_ratio))
        a = np.clip(interpolate(self.knots, fraction), -1.0, 1.0).astype(np.float32)
        return np.clip(action_to_ratio(a, self.max_ratio), 0.0, float(env.max_ratio))

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        g = int(getattr(env, "num_sources", 1))
        own = 1 if self.knots.ndim == 2 else self.knots.shape[2]
        if float(env.max_ratio) != self.max_ratio or self.source is not None or (g > 1 if own == 1 else g != own):
            return super().act(observations, env)  # another scale or other sources: the ratios, re-expressed
        self._check(env)
        actions = schedule_actions(self.knots, current_step(observations, env), int(env.config.max_steps),
                                   action_ndim=self.knots.ndim - 1)
        index = {a: i for i, a in enumerate(env.possible_agents)}
        return {a: actions[index[a]].reshape(own) for a in env.agents}
