"""Both engines implement the Engine protocol, with one mix type (arrays of table rows, real rows first)."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.envs.protocols import Engine
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
from tests.conftest import make_tiny_dataset


@pytest.mark.parametrize("mode", ["feature", "pixel"])
def test_engines_follow_the_protocol(mode):
    ds = make_tiny_dataset()
    e = SyntheticRatioEnv(dataset=ds, mode=mode, encoder="random", pool_size=6, max_steps=2)
    e.reset(seed=0)
    eng = e.core.engine
    assert isinstance(eng, Engine)
    n = np.array([[3, 0, 7]])
    mix = eng.mix_indices(n, [np.random.default_rng(0)])
    assert len(mix) == 1 and isinstance(mix[0], np.ndarray) and mix[0].dtype == np.int64
    real = eng.real_rows(0)
    assert np.array_equal(mix[0][:len(real)], real)
    labels = eng.row_labels(mix[0])
    assert np.array_equal(labels[:len(real)], ds.train_labels)
    assert np.bincount(labels[len(real):], minlength=3).tolist() == [3, 0, 7]
    loss = eng.train(mix)
    assert loss.shape == (1,) and eng.heads_finite().shape == (1,)
    assert eng.source_pool_sizes.shape == (3, 1)
