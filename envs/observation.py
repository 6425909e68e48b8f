"""The observation's columns as one table: what each class's observation row holds, in order.

Each :class:`ObsColumn` names a column, says how many it spans (one; one per source; one per class), how its
values are written from the env's state (:class:`envs.core.RatioCore`) and its bounds. The env's observation
spaces, ``observation_columns`` on every view, the observations themselves and the width a saved policy must
expect (``tailmix.policies``) all come from :data:`COLUMNS`; a new column is one entry here.

With one source (v0) the row is ``recall, precision, f1, log_real_share, ratio, pool_quality,
balanced_accuracy, progress`` and the one-hot class id: ``8 + C`` columns. With ``G`` sources ``ratio`` and
``pool_quality`` repeat per source (named ``<column>@<source>``), ``pool_obs=True`` adds ``pool_fraction`` per
source and ``class_id_obs=False`` drops the one-hot id.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: How many entries a column spans: one, one per source (``<name>@<source>`` with ``G > 1``), or one per class.
SPANS = ("one", "per_source", "per_class")


@dataclass(frozen=True)
class ObsColumn:
    """One column (or group of columns) of a class's observation row.

    Attributes:
        name: The column's name (per source: ``<name>@<source>`` with several sources; per class:
            ``<name>_<i>``).
        span: ``"one"``, ``"per_source"`` or ``"per_class"`` (:data:`SPANS`).
        write: ``write(core, copies)``: the values of ``copies`` (a slice of the env copies), broadcastable to
            ``(K', C)`` (``"one"``), ``(K', C, G)`` (``"per_source"``) or ``(K', C, C)`` (``"per_class"``).
        low: Lower bound: a number, or ``low(core)`` for one that depends on the data.
        high: Upper bound: a number, or ``high(core)``.
        enabled: ``enabled(config)``: whether the env's :class:`envs.config.RatioEnvConfig` has the column
            (``None``: always).
        doc: What it holds, one line.
    """

    name: str
    span: str
    write: Callable
    low: float | Callable = 0.0
    high: float | Callable = 1.0
    enabled: Callable | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.span not in SPANS:
            raise ValueError(f"observation column {self.name!r}: span must be one of {SPANS}; got {self.span!r}")

    def width(self, num_classes: int, num_sources: int) -> int:
        return {"one": 1, "per_source": num_sources, "per_class": num_classes}[self.span]

    def names(self, source_names: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
        if self.span == "per_source":
            return (self.name,) if len(source_names) == 1 else tuple(f"{self.name}@{n}" for n in source_names)
        if self.span == "per_class":
            return tuple(f"{self.name}_{i}" for i in range(num_classes))
        return (self.name,)

    def is_on(self, config) -> bool:
        return self.enabled is None or bool(self.enabled(config))


def _metric(key: str):
    return lambda core, copies: core.metrics[key][copies]


def _log_share_low(core) -> float:
    """``log(1 / the largest real train size any episode sees)``: the smallest log share a class can have."""
    largest = core.train_counts.sum() if core.folds is None else core.folds.counts.sum(1).max()
    return math.floor(math.log(1.0 / largest))


#: Every observation column, in row order (the one table; see the module docstring).
COLUMNS: tuple[ObsColumn, ...] = (
    ObsColumn("recall", "one", _metric("recall"), doc="the class's validation recall"),
    ObsColumn("precision", "one", _metric("precision"), doc="its validation precision"),
    ObsColumn("f1", "one", _metric("f1"), doc="its validation F1"),
    ObsColumn("log_real_share", "one", lambda core, copies: core._copy_log_share[copies], low=_log_share_low,
              high=0.0, doc="log of its share of the real train images"),
    ObsColumn("ratio", "per_source", lambda core, copies: core.source_ratios[copies] / core.config.max_ratio,
              doc="its current ratio on each source / max_ratio"),
    ObsColumn("pool_quality", "per_source", lambda core, copies: core.quality,
              doc="the quality of its synthetic pool on each source"),
    ObsColumn("balanced_accuracy", "one", lambda core, copies: core.metrics["balanced_accuracy"][copies][:, None],
              doc="the balanced validation accuracy (the same for every class)"),
    ObsColumn("progress", "one",
              lambda core, copies: np.minimum(core.t[copies] / core.config.max_steps, 1.0)[:, None],
              doc="the episode's progress, step / max_steps"),
    ObsColumn("pool_fraction", "per_source", lambda core, copies: core.pool_fraction,
              enabled=lambda config: config.pool_obs,
              doc="min(1, pool size / (max_ratio * n_real)) per source (pool_obs=True)"),
    ObsColumn("is_class", "per_class", lambda core, copies: core._onehot,
              enabled=lambda config: config.class_id_obs,
              doc="the one-hot id of the class (class_id_obs=True)"),
)


def _config(config):
    if config is None:
        from tailmix.envs.config import RatioEnvConfig

        return RatioEnvConfig()
    return config


def active_columns(config=None) -> tuple[ObsColumn, ...]:
    """The columns an env with ``config`` (a :class:`envs.config.RatioEnvConfig`; ``None``: the defaults) has."""
    config = _config(config)
    return tuple(col for col in COLUMNS if col.is_on(config))


def column_names(source_names: tuple[str, ...], num_classes: int, config=None) -> tuple[str, ...]:
    """Every column's name, in row order: what ``observation_columns`` returns."""
    return tuple(n for col in active_columns(config) for n in col.names(tuple(source_names), num_classes))


def observation_width(num_classes: int, num_sources: int = 1, config=None) -> int:
    """The length of a class's observation row (``8 + C`` for v0's defaults)."""
    return sum(col.width(num_classes, num_sources) for col in active_columns(config))


def bounds(core) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``, each ``(C, width)`` float32: the observation space's bounds for ``core``."""
    c, g = core.c, core.g
    width = observation_width(c, g, core.config)
    low = np.zeros((c, width), np.float32)
    high = np.ones((c, width), np.float32)
    start = 0
    for col in active_columns(core.config):
        stop = start + col.width(c, g)
        low[:, start:stop] = col.low(core) if callable(col.low) else col.low
        high[:, start:stop] = col.high(core) if callable(col.high) else col.high
        start = stop
    return low, high


def write_observations(core, copies=slice(None)) -> np.ndarray:
    """The observation matrices ``(K', C, width)`` float32 of ``copies``, each column written by its entry."""
    c, g = core.c, core.g
    k = len(core.t[copies])
    obs = np.empty((k, c, observation_width(c, g, core.config)), np.float32)
    start = 0
    for col in active_columns(core.config):
        stop = start + col.width(c, g)
        values = col.write(core, copies)
        if col.span == "one":
            obs[:, :, start] = values
        else:
            obs[:, :, start:stop] = values
        start = stop
    return obs
