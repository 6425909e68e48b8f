"""The :class:`Engine` protocol: what :class:`envs.core.RatioCore` needs of the thing that trains and scores.

Two engines implement it (``envs.engine``): :class:`~envs.engine.FeatureEngine` (``K`` batched heads on frozen
features), :class:`~envs.engine.PixelEngine` (one CNN on pixels, ``K = 1``) and
:class:`~envs.pixel_batched.BatchedPixelEngine` (``K`` CNNs as one grouped network). The core talks to an engine
through these members only, so a third engine (another model family, another device) plugs in without
touching the core.

A *mix* is the same type in every engine: a 1-D int64 array of row indices into the engine's sample table,
the head's real rows first (:meth:`Engine.real_rows`), then its synthetic draws (in an order of the engine's
choosing; a row drawn twice appears twice). :meth:`Engine.row_labels` gives the class of any row, so the core can
build counterfactual mixes (difference credit) without knowing how an engine stores its samples.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Engine(Protocol):
    """What an engine provides (one return type per member; see the module docstring for a mix)."""

    #: ``K``: how many heads (classifiers) are trained side by side.
    k: int
    num_classes: int
    #: ``G``: the number of synthetic sources.
    num_sources: int
    #: The cross-validation folds of the reward (``envs.folds.CrossValidationFolds``), or ``None``.
    folds: Any
    #: ``(K, M)`` bool: each head's scored rows of the ``"val"`` predictions, or ``None`` (every row counts).
    val_mask: np.ndarray | None

    @property
    def source_pool_sizes(self) -> np.ndarray:
        """Pool size per class and source, ``(C, G)``."""
        ...

    def reset(self, generators: list[torch.Generator], copies: list[int] | None = None) -> None:
        """Fresh classifiers for heads ``copies`` (all by default), each initialised from its generator."""
        ...

    def set_folds(self, heads: list[int], folds: list[int]) -> None:
        """Put each of ``heads`` on held-out fold ``folds[i]`` (``folds`` is not ``None``)."""
        ...

    def real_rows(self, head: int) -> np.ndarray:
        """Table rows of the real images head ``head`` trains on (a mix starts with them)."""
        ...

    def row_labels(self, rows: np.ndarray) -> np.ndarray:
        """The class of each of ``rows`` (table rows, real or synthetic)."""
        ...

    def mix_indices(self, n_syn: np.ndarray, rngs: list[np.random.Generator], heads=None) -> list[np.ndarray]:
        """One mix per row of ``n_syn`` (``(K', C)`` or ``(K', C, G)`` draws per class and source), row ``i``
        drawn from ``rngs[i]`` for head ``heads[i]`` (default ``0..K'-1``)."""
        ...

    def train(self, mixes: list[np.ndarray]) -> np.ndarray:
        """Train every head on its mix for one env step; the last loss per head ``(K,)``."""
        ...

    def predict(self, split: str = "val") -> np.ndarray:
        """Predicted labels ``(K, M)`` on ``"val"`` or ``"test"``."""
        ...

    def labels_of(self, split: str) -> np.ndarray:
        """True labels ``(M,)`` of ``split``, in :meth:`predict`'s order."""
        ...

    def snapshot(self) -> Any:
        """What :meth:`restore` needs to undo a step."""
        ...

    def restore(self, snapshot: Any, heads: np.ndarray) -> None:
        """Roll ``heads`` back to ``snapshot`` (a diverged step)."""
        ...

    def heads_finite(self) -> np.ndarray:
        """Per head ``(K,)``: are its parameters and optimiser state finite?"""
        ...

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict) -> None:
        ...
