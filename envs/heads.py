"""Where each head sits in the engine's flat list of heads: :class:`HeadLayout`.

Every env copy trains ``H`` heads side by side, copy-major (copy ``k`` owns heads ``k*H .. k*H + H - 1``):

- ``R`` replicas (``reward_replicas``): independent heads on independent draws; metrics average over them;
- with ``reward_reference``, one reference head (trained on the reference ratio; the reward is measured
  against it);
- with ``credit="difference"``, ``R * C`` counterfactual heads: for replica ``j`` and class ``c``, the replica's
  mix with class ``c`` at ``credit_default``.

The layout owns this index arithmetic and the reshapes from per-head values to per-copy ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HeadLayout:
    """The heads of ``copies`` env copies over ``classes`` classes (see the module docstring)."""

    copies: int
    classes: int
    replicas: int = 1
    reference: bool = False
    counterfactual: bool = False

    @property
    def first_counterfactual(self) -> int:
        """Index of the first counterfactual head within a copy (after the replicas and the reference)."""
        return self.replicas + int(self.reference)

    @property
    def per_copy(self) -> int:
        """``H``: heads per copy."""
        return self.first_counterfactual + (self.replicas * self.classes if self.counterfactual else 0)

    @property
    def total(self) -> int:
        """``K * H``: heads in all."""
        return self.copies * self.per_copy

    def heads_of(self, k: int) -> range:
        """Every head of copy ``k``."""
        return range(k * self.per_copy, (k + 1) * self.per_copy)

    def replica(self, k: int, j: int) -> int:
        """Head of copy ``k``'s replica ``j``."""
        return k * self.per_copy + j

    def reference_head(self, k: int) -> int:
        """Head of copy ``k``'s reference (``reference`` must be set)."""
        return k * self.per_copy + self.replicas

    def reference_heads(self) -> slice:
        """Every copy's reference head (``reference`` must be set), as a slice of the flat head list."""
        return slice(self.replicas, None, self.per_copy)

    def counterfactual_head(self, k: int, j: int, cls: int) -> int:
        """Head of the counterfactual of copy ``k``, replica ``j``, class ``cls``."""
        return k * self.per_copy + self.first_counterfactual + j * self.classes + cls

    def replica_heads(self) -> list[int]:
        """Every replica head, copy-major (copy 0's replicas, then copy 1's, ...)."""
        return [self.replica(k, j) for k in range(self.copies) for j in range(self.replicas)]

    def per_head(self, per_copy: np.ndarray) -> np.ndarray:
        """A per-copy array ``(K, ...)`` repeated for each of a copy's heads ``(K*H, ...)``."""
        return np.repeat(per_copy, self.per_copy, axis=0)

    def replica_mean(self, per_head: dict) -> dict:
        """Per-head metrics ``{key: (K*H, ...)}`` as per-copy means over the replicas ``{key: (K, ...)}``.

        One head per copy: the same dict, its arrays as they are.
        """
        if self.per_copy == 1:
            return per_head
        return {key: v.reshape(self.copies, self.per_copy, *v.shape[1:])[:, :self.replicas].mean(1)
                for key, v in per_head.items()}

    def reference_values(self, per_head: np.ndarray) -> np.ndarray:
        """The reference head's entry of each copy ``(K,)`` from per-head scalars ``(K*H,)``."""
        return per_head.reshape(self.copies, self.per_copy)[:, self.replicas].copy()

    def counterfactual_means(self, per_head: np.ndarray) -> np.ndarray:
        """Per copy and class ``(K, C)``: the counterfactual heads' scalars ``(K*H,)`` averaged over replicas."""
        cf = per_head.reshape(self.copies, self.per_copy)[:, self.first_counterfactual:]
        return cf.reshape(self.copies, self.replicas, self.classes).mean(1)
