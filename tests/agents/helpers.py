"""Tiny settings of the real env shared by the agent tests."""
from __future__ import annotations

from tests.conftest import make_tiny_dataset


def tiny_env_kwargs(**over) -> dict:
    """``SyntheticRatioEnv`` keyword arguments that build in about a second and step in milliseconds.

    The synthetic pools are the real train images (an ``ArraySource``): fast, deterministic, and independent of
    the generators package.
    """
    from tailmix.envs.sources import ArraySource

    ds = make_tiny_dataset()
    source = ArraySource({c: ds.train_images[ds.train_labels == c] for c in range(ds.num_classes)}, ds.num_classes)
    kw = dict(dataset=ds, source=source, max_steps=3, encoder_folds=2, encoder_epochs=2, pool_size=16)
    kw.update(over)
    return kw
