"""The suite's statistics against hand-computed values (rliable's definitions)."""
import numpy as np
import pytest

from tailmix.suite import stats


def test_iqm_is_the_25_percent_trimmed_mean():
    assert stats.iqm([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5)  # drops 1, 2 and 7, 100
    assert stats.iqm([3.0]) == 3.0


def test_probability_of_improvement_counts_ties_half():
    assert stats.probability_of_improvement([1, 2, 3], [2, 2, 2]) == pytest.approx(0.5)
    assert stats.probability_of_improvement([3, 3], [1, 2]) == 1.0


def test_test_bootstrap_keeps_the_mean_and_varies_with_class_size():
    recalls = np.array([[0.5, 1.0]])
    small = stats.test_bootstrap(recalls, [4, 4], reps=4000, seed=0)
    large = stats.test_bootstrap(recalls, [400, 400], reps=4000, seed=0)
    assert small.shape == (4000, 1)
    assert small.mean() == pytest.approx(0.75, abs=0.01) and large.mean() == pytest.approx(0.75, abs=0.01)
    assert small.std() > 5 * large.std()  # a point of balanced accuracy is one image of a small class
    perfect = stats.test_bootstrap(np.ones((2, 3)), [5, 5, 5], reps=50)
    assert (perfect == 1.0).all()


def test_paired_interval_covers_seeds_episodes_and_images():
    rng = np.random.default_rng(0)
    a = 0.60 + rng.normal(0, 0.01, (5, 5))
    b = 0.50 + rng.normal(0, 0.01, (1, 5))
    d, lo, hi = stats.paired_interval(a, b)
    assert d == pytest.approx(a.mean() - b.mean()) and lo < d < hi and lo > 0
    # the same scores with test-image noise of a tiny test split: the interval widens and can reach 0
    boot_a = stats.test_bootstrap(np.full((25, 2), 0.6), [5, 5], reps=500, seed=1).reshape(-1, 5, 5)
    boot_b = stats.test_bootstrap(np.full((5, 2), 0.5), [5, 5], reps=500, seed=2).reshape(-1, 1, 5)
    d2, lo2, hi2 = stats.paired_interval(np.full((5, 5), 0.6), np.full((1, 5), 0.5), boot_a, boot_b)
    assert d2 == pytest.approx(0.1) and hi2 - lo2 > hi - lo and lo2 < 0
    with pytest.raises(ValueError, match="same episodes"):
        stats.paired_interval(np.zeros((2, 3)), np.zeros((1, 4)))
