"""HeadLayout: the index arithmetic of replicas, reference and counterfactual heads."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.envs.heads import HeadLayout


def test_plain_layout_is_one_head_per_copy():
    lay = HeadLayout(copies=3, classes=4)
    assert (lay.per_copy, lay.total, lay.first_counterfactual) == (1, 3, 1)
    assert lay.replica_heads() == [0, 1, 2]
    assert list(lay.heads_of(2)) == [2]
    metrics = {"recall": np.arange(12.0).reshape(3, 4)}
    assert lay.replica_mean(metrics) is metrics  # one head per copy: as they are


def test_replicas_reference_and_counterfactuals_do_not_overlap():
    lay = HeadLayout(copies=2, classes=3, replicas=2, reference=True, counterfactual=True)
    assert lay.per_copy == 2 + 1 + 2 * 3 and lay.total == 2 * 9
    for k in range(2):
        own = list(lay.heads_of(k))
        named = ([lay.replica(k, j) for j in range(2)] + [lay.reference_head(k)]
                 + [lay.counterfactual_head(k, j, c) for j in range(2) for c in range(3)])
        assert sorted(named) == own  # every head of the copy named exactly once
    assert lay.reference_head(1) == 9 + 2
    assert list(range(lay.total))[lay.reference_heads()] == [lay.reference_head(0), lay.reference_head(1)]
    assert lay.counterfactual_head(1, 1, 2) == 9 + 3 + 3 + 2
    assert lay.replica_heads() == [0, 1, 9, 10]


def test_per_copy_reductions():
    lay = HeadLayout(copies=2, classes=2, replicas=2, reference=True, counterfactual=True)  # H = 2 + 1 + 4 = 7
    per_head = np.arange(14, dtype=float)
    mean = lay.replica_mean({"balanced_accuracy": per_head, "recall": np.stack([per_head, -per_head], 1)})
    assert mean["balanced_accuracy"].tolist() == [0.5, 7.5]
    assert mean["recall"].tolist() == [[0.5, -0.5], [7.5, -7.5]]
    assert lay.reference_values(per_head).tolist() == [2.0, 9.0]
    # counterfactuals of copy 0: heads 3, 4 (replica 0, classes 0 and 1) and 5, 6 (replica 1)
    assert lay.counterfactual_means(per_head).tolist() == [[4.0, 5.0], [11.0, 12.0]]
    assert lay.per_head(np.array([[1, 2], [3, 4]])).shape == (14, 2)


@pytest.mark.parametrize("replicas,reference,counterfactual", [(1, False, False), (3, True, False), (2, False, True)])
def test_the_core_uses_the_layout(replicas, reference, counterfactual):
    from tailmix.envs.config import RatioEnvConfig
    from tailmix.envs.core import RatioCore
    from tests.conftest import make_tiny_dataset

    cfg = RatioEnvConfig(encoder="random", pool_size=8, max_steps=2, reward_replicas=replicas,
                         reward_reference=0.5 if reference else None,
                         credit="difference" if counterfactual else "shared")
    core = RatioCore(make_tiny_dataset(), None, cfg, num_copies=2)
    assert core.layout == HeadLayout(2, 3, replicas, reference, counterfactual)
    assert core.h == core.layout.per_copy and len(core.torch_gens) == core.layout.total
