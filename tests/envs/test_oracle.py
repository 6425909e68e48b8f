"""The oracle source (real images no split holds) and the corruption wrapper."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.envs.datasets import load_digits_lt
from tailmix.io.leakage import pixel_hashes
from tailmix.envs.longtail import make_long_tail
from tailmix.envs.oracle import CorruptedSource, oracle_policy_ratios, oracle_source
from tailmix.envs.sources import ArraySource
from tests.conftest import make_tiny_dataset


def test_digits_lt_leftovers_are_the_unused_digits_of_the_right_class():
    from sklearn.datasets import load_digits

    ds = load_digits_lt()
    images, labels = ds.leftover()
    assert len(labels) == 1797 - 300 - 400 - int(ds.train_counts.sum()) == 762  # val 30/class, test 40/class
    used = set(np.concatenate([pixel_hashes(ds.split(s)[0]) for s in ("train", "val", "test")]).tolist())
    assert not used & set(pixel_hashes(images).tolist())
    bunch = load_digits()
    truth = dict(zip(pixel_hashes(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]).tolist(),
                     bunch.target.tolist()))
    assert [truth[h] for h in pixel_hashes(images).tolist()] == labels.tolist()

    src = oracle_source(ds)
    assert src.name == "oracle" and src.space == "image" and src.num_classes == 10
    for c in range(10):
        pool = src.pool(c)
        assert len(pool) == int((labels == c).sum()) and src.quality(c) == 1.0
        assert set(pixel_hashes(pool).tolist()) <= {h for h, y in truth.items() if y == c}
    assert src.fingerprint() == oracle_source(load_digits_lt()).fingerprint()


def test_leftovers_leave_the_splits_alone_and_add_up_over_calls():
    base = make_tiny_dataset(counts=(24, 24, 24))
    lt = make_long_tail(base, 4.0, n_max=20, seed=0)
    assert np.array_equal(lt.train_counts, [20, 10, 5])
    assert lt.fingerprint() == make_long_tail(base, 4.0, n_max=20, seed=0).fingerprint()
    _, labels = lt.leftover()
    assert np.array_equal(np.bincount(labels, minlength=3), [4, 14, 19])
    again = make_long_tail(lt, 2.0, n_max=10, seed=1)  # drops 10 + 3 + 0 more
    assert np.array_equal(np.bincount(again.leftover()[1], minlength=3), [14, 17, 19])


def test_no_leftovers_is_a_clear_error():
    with pytest.raises(ValueError, match="left no real image out"):
        oracle_source(make_tiny_dataset())


def test_oracle_drops_leftovers_that_copy_a_split_image():
    import dataclasses

    lt = make_long_tail(make_tiny_dataset(counts=(24, 24, 24)), 4.0, n_max=20, seed=0)
    images, labels = lt.leftover()
    # a leftover that is also a val image must not be served (it would leak val pixels into training)
    val = lt.val_images.copy()
    val[0] = images[0]
    leaky = dataclasses.replace(lt, val_images=val)
    assert len(oracle_source(leaky).pool(int(labels[0]))) == int((labels == labels[0]).sum()) - 1


def test_corruption_serves_another_class_pool():
    pools = {c: np.full((3 + c, 8, 8, 1), 10 * c, np.uint8) for c in range(4)}
    src = ArraySource(pools, 4, quality={1: 0.5, 2: 0.25})
    bad = CorruptedSource(src, {1: 3, 2: 0})
    assert np.array_equal(bad.pool(1), pools[3]) and np.array_equal(bad.pool(2), pools[0])
    assert np.array_equal(bad.pool(0), pools[0]) and np.array_equal(bad.pool(3), pools[3])
    assert bad.quality(1) == 0.5 and bad.quality(2) == 0.25  # the observation does not give it away
    assert bad.num_classes == 4 and bad.space == "image"
    assert bad.fingerprint() != src.fingerprint() != CorruptedSource(src, {1: 2}).fingerprint()
    for wrong in ({}, {1: 1}, {4: 0}, {0: -1}, {True: 0}):
        with pytest.raises(ValueError, match="corruption"):
            CorruptedSource(src, wrong)


def test_env_trains_on_the_corrupted_oracle_source():
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    lt = make_long_tail(make_tiny_dataset(counts=(24, 24, 24)), 4.0, n_max=20, seed=0)
    src = CorruptedSource(oracle_source(lt), {2: 1})
    env = SyntheticRatioEnv(dataset=lt, source=src, encoder="random", max_steps=2)
    env.reset(seed=0)
    _, _, _, _, infos = env.step({a: np.ones(1, np.float32) for a in env.agents})
    assert infos["class_2"]["n_synthetic"] == 5 * 8  # ratio 8 x 5 real images, served 1s
    assert np.allclose(oracle_policy_ratios(lt.train_counts, [2], 8.0), [0.0, 1.0, 0.0])


def test_known_answer_task_builds_and_its_oracle_policy_beats_every_fixed_ratio():
    """The documented task (with a random encoder, for speed): the per-class answer beats every shared shape."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.cem import _CountsView, make_search_env, val_fitness
    from tailmix.envs.oracle import KNOWN_ANSWER_CORRUPTION, known_answer_kwargs

    kw = known_answer_kwargs(encoder="random")
    assert kw["dataset"].name == "digits-lt" and kw["source"].corruption == KNOWN_ANSWER_CORRUPTION
    core = make_search_env(1, kw).core
    view = _CountsView(core.train_counts, core.config.max_ratio)
    fixed = [core.ratio_to_action(make_baseline(s).ratios(view))
             for s in ("none", "constant:0.5", "constant:2", "fill", "inverse")]
    answer = oracle_policy_ratios(core.train_counts, list(KNOWN_ANSWER_CORRUPTION), core.config.max_ratio)
    assert answer[list(KNOWN_ANSWER_CORRUPTION)].sum() == 0 and answer[0] == 0 and (answer > 0).sum() == 7
    fit = val_fitness(np.stack(fixed + [core.ratio_to_action(answer)]), kw, seeds=[0, 1]).mean(1)
    assert fit[-1] > fit[:-1].max() + 0.03, fit
