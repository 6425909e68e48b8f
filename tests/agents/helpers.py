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


def two_source_env_kwargs(**over) -> dict:
    """A tiny env with two sources where only one helps: ``sources=[corrupted, clean]``.

    Three overlapping classes (noisy bars, train counts 40 / 8 / 2, val and test 20 each; the random encoder, so
    it builds in a fraction of a second). ``clean`` holds fresh real images of every class (an oracle: more of
    it lifts the balanced val accuracy from about 0.84 to 0.94); ``clean+corrupt`` serves class 0 images of
    class 1 and class 1 images of class 2 (:class:`envs.oracle.CorruptedSource`; class 2 is as clean as on the
    other source), so a ratio on it for class 0 or 1 costs a lot (0.18 with both sources' ratios at the maximum).
    """
    import numpy as np

    from tailmix.envs.datasets import LongTailDataset
    from tailmix.envs.oracle import CorruptedSource
    from tailmix.envs.sources import ArraySource

    rng = np.random.default_rng(0)

    def make(counts, size=8):
        xs, ys = [], []
        for c, n in enumerate(counts):
            base = np.zeros((size, size, 1), np.float32)
            row = int(round((c + 0.5) * size / 3 - 0.5))
            base[max(row - 1, 0): row + 1] = 200.0
            xs.append(np.clip(base[None] + rng.normal(0, 100, (n, size, size, 1)), 0, 255).astype(np.uint8))
            ys.append(np.full(n, c, np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    ds = LongTailDataset("two-source", *make((40, 8, 2)), *make((20,) * 3), *make((20,) * 3),
                         class_names=("c0", "c1", "c2"))
    x, y = make((40, 40, 40))
    clean = ArraySource({c: x[y == c] for c in range(3)}, 3, name="clean")
    kw = dict(dataset=ds, sources=[CorruptedSource(clean, {0: 1, 1: 2}), clean], encoder="random", max_steps=3,
              cache_dir=False)
    kw.update(over)
    return kw


def played_source_ratios(policy, kw, seed=0):
    """Per-source ratios ``(steps, C, G)`` the env used at each step of one episode of ``policy``."""
    import numpy as np

    from tailmix.agents.evaluate import make_eval_env

    env = make_eval_env(kw)
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    out = []
    while env.agents:
        obs, *_ = env.step(policy.act(obs, env))
        out.append(env.source_ratios)
    return np.stack(out)
