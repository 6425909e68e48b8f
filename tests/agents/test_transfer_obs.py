"""The transfer track: a shared policy trained without class ids (``class_id_obs=False``) acts zero-shot in an env
with another number of classes."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.agents.baselines import SB3Policy
from tailmix.agents.evaluate import evaluate
from tailmix.agents.sb3 import train
from tests.conftest import make_tiny_dataset

FAST = dict(encoder="random", max_steps=2, pool_size=16, cache_dir=False)


def test_a_shared_policy_trained_on_digits_acts_on_fewer_classes():
    model = train("ppo", dict(dataset="digits", class_id_obs=False, **FAST), wrapper="shared", total_timesteps=64,
                  seed=0)
    try:
        assert model.observation_space.shape == (8,)  # per-class statistics only: digits' 10 classes left no trace
        policy = SB3Policy(model, wrapper="shared")
        for ds in (make_tiny_dataset(), make_tiny_dataset(num_classes=2, channels=3, counts=(20, 3))):
            rows = evaluate(policy, dict(dataset=ds, class_id_obs=False, **FAST), seeds=(0,))
            assert len(rows[0]["ratios"]) == ds.num_classes
            assert np.isfinite(rows[0]["test_balanced_accuracy"])
        # with the ids (the default) the same model does not fit another number of classes, and says why
        with pytest.raises(ValueError, match="another dataset"):
            evaluate(policy, dict(dataset=make_tiny_dataset(), **FAST), seeds=(0,))
    finally:
        model.get_env().close()
