"""The policy interface every fixed, scheduled and learned sampler shares, and how ratios become actions.

:class:`Policy` is what ``agents.evaluate`` runs; :class:`RatioBaseline` is a fixed per-class ratio vector;
:func:`ratio_actions` turns ratios into per-agent actions on one source of an env with several. Both
``agents.baselines`` (the fixed shapes) and ``agents.schedules`` (shapes over the episode) build on this module.
"""
from __future__ import annotations

import numpy as np


def _source_index(target, env) -> int:
    """The index of source ``target`` (a name in ``env.source_names``, or an index) in ``env``."""
    names = tuple(getattr(env, "source_names", ("source0",)))
    if target is None:
        return 0
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        g = int(target)
        if 0 <= g < len(names):
            return g
    elif target in names:
        return names.index(target)
    raise ValueError(f"the baseline targets source {target!r} but the env's sources are {list(names)} (indices "
                     f"0..{len(names) - 1}); name one of them after '@'")


#: The ``@`` target of an equal mix: ``fill@mix`` splits ``fill``'s ratio ``r`` into ``r / G`` on each of ``G`` sources.
EQUAL_MIX = "mix"


class Policy:
    """Base class: subclasses set ``name`` and implement :meth:`act`.

    ``source`` (``None``, a source name or index, or :data:`EQUAL_MIX`): where a fixed baseline's ratios go in an
    env with several sources (``None``: source 0; ``"mix"``: split equally over every source).
    """

    name: str = "policy"
    source: str | int | None = None

    def reset(self, seed: int | None = None) -> None:
        """Called before each episode; stateless policies ignore it."""

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class RatioBaseline(Policy):
    """A fixed per-class ratio vector, the same at every step; subclasses implement :meth:`raw_ratios`."""

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        """The wanted ratio of each class, before clipping to ``[0, max_ratio]``."""
        raise NotImplementedError

    def ratios(self, env) -> np.ndarray:
        """The ratios this baseline sets in ``env``: :meth:`raw_ratios` clipped to ``[0, env.max_ratio]``."""
        counts = np.asarray(env.train_counts, np.float64)
        return np.clip(self.raw_ratios(counts), 0.0, float(env.max_ratio))

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        return ratio_actions(self.ratios(env), env, self.source)


def spread_ratios(ratios: np.ndarray, env, source=None) -> np.ndarray:
    """Per-class ratios ``(C,)`` as ``(C, G)`` per-source ratios of ``env``: all on ``source`` (a name or index;
    ``None``: source 0) and 0 on the others, or with ``source=EQUAL_MIX`` (``"mix"``) ``ratios / G`` on each."""
    g = int(getattr(env, "num_sources", 1))
    ratios = np.asarray(ratios, np.float64)
    if source == EQUAL_MIX:
        names = tuple(getattr(env, "source_names", ()))
        if EQUAL_MIX in names and g > 1:
            raise ValueError(f"a source of the env is named {EQUAL_MIX!r}, which '@{EQUAL_MIX}' reserves for the equal "
                             f"mix; target that source by its index instead (e.g. fill@{names.index(EQUAL_MIX)})")
        return np.repeat(ratios[:, None] / g, g, axis=1)
    full = np.zeros((len(ratios), g), np.float64)
    full[:, _source_index(source, env)] = ratios
    return full


def ratio_actions(ratios: np.ndarray, env, source=None) -> dict[str, np.ndarray]:
    """Per-agent actions that set class ``c``'s ratio to ``ratios[c]`` on ``source`` (``None``: source 0) and 0 on
    every other source of ``env`` (``source="mix"``: ``ratios[c] / G`` on each): how every fixed policy (static or
    scheduled) turns its ratios into actions. ``ratios`` may also be ``(C, G)``, one per source (``source=None``)."""
    g = int(getattr(env, "num_sources", 1))
    if np.ndim(ratios) == 2:  # already per source (a CEM vector or knot schedule over the pool action)
        if np.shape(ratios)[1] != g or source is not None:
            raise ValueError(f"these ratios set {np.shape(ratios)[1]} source(s) per class but the env has {g} "
                             f"({', '.join(getattr(env, 'source_names', ()))}); search again with the env's sources")
    elif g > 1 or source is not None:  # the ratios on one source (or split equally), 0 on the others
        ratios = spread_ratios(ratios, env, source)
    actions = np.asarray(env.ratio_to_action(ratios), np.float32).reshape(len(env.possible_agents), -1)
    index = {a: i for i, a in enumerate(env.possible_agents)}
    return {a: actions[index[a]] for a in env.agents}


def action_to_ratio(action, max_ratio: float) -> np.ndarray:
    """The env's affine map ``[-1, 1] -> [0, max_ratio]`` (clipped)."""
    return (np.clip(np.asarray(action, np.float64), -1.0, 1.0) + 1.0) * 0.5 * float(max_ratio)
