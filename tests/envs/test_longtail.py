"""The long-tail builder: exact profile counts, seeded subsampling, clear errors for impossible profiles."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tailmix.envs.datasets import from_arrays
from tailmix.envs.longtail import long_tail_counts, long_tail_indices, make_long_tail


def _balanced(n_per_class: int, num_classes: int, seed: int = 0):
    """A balanced dataset whose pixels encode the image index, so kept images can be traced back."""
    n = n_per_class * num_classes
    labels = np.repeat(np.arange(num_classes), n_per_class)
    images = np.zeros((n, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 1, 0] = np.arange(n) // 256
    val = np.zeros((num_classes * 2, 4, 4, 1), np.uint8)
    return from_arrays(images, labels, val, np.repeat(np.arange(num_classes), 2), val,
                       np.repeat(np.arange(num_classes), 2), name="bal", seed=seed)


def _source_index(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 1, 0].astype(int)


@pytest.mark.parametrize("n_max,num_classes,rho", [(100, 10, 20.0), (500, 10, 100.0), (486, 5, 7.36),
                                                   (50, 2, 3.0), (1000, 7, 10.0), (30, 4, 1.0)])
def test_counts_match_the_formula(n_max, num_classes, rho):
    counts = long_tail_counts(n_max, num_classes, rho)
    expected = [math.floor(n_max * rho ** (-c / (num_classes - 1)) + 1e-9) for c in range(num_classes)]
    assert counts.tolist() == expected
    assert counts.dtype == np.int64
    assert counts[0] == n_max and counts[-1] == math.floor(n_max / rho + 1e-9)
    assert np.all(np.diff(counts) <= 0)


def test_counts_known_values():
    # The digits-lt default and CIFAR-10-LT's classic profile (Cui et al. 2019, imbalance 100).
    assert long_tail_counts(100, 10, 20).tolist() == [100, 71, 51, 36, 26, 18, 13, 9, 6, 5]
    assert long_tail_counts(5000, 10, 100).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_exact_integers_are_not_lost_to_rounding():
    # Each profile below is exact powers of two, but numpy evaluated some terms as 0.9999999999999999 or
    # 7.999999999999999 (on x86-64): a plain floor would drop an image (or raise for a tail that is really 1).
    assert long_tail_counts(64, 7, 64).tolist() == [64, 32, 16, 8, 4, 2, 1]
    assert long_tail_counts(32, 6, 32).tolist() == [32, 16, 8, 4, 2, 1]


def test_zero_count_raises_naming_the_rank():
    with pytest.raises(ValueError, match=r"rank 7 .*imbalance_ratio <= 10"):
        long_tail_counts(10, 10, 20.0)


@pytest.mark.parametrize("kwargs", [dict(n_max=0, num_classes=3, imbalance_ratio=2.0),
                                    dict(n_max=10, num_classes=1, imbalance_ratio=2.0),
                                    dict(n_max=10, num_classes=3, imbalance_ratio=0.5),
                                    dict(n_max=10, num_classes=3, imbalance_ratio=float("nan"))])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        long_tail_counts(**kwargs)


def test_make_long_tail_counts_meta_and_untouched_held_out():
    ds = _balanced(60, 4)
    lt = make_long_tail(ds, 10.0, n_max=50, seed=3)
    expected = long_tail_counts(50, 4, 10.0).tolist()
    assert lt.train_counts.tolist() == expected
    assert lt.meta["long_tail"] == {"imbalance_ratio": 10.0, "n_max": 50, "class_order": [0, 1, 2, 3],
                                    "counts": expected, "seed": 3}
    assert lt.name == "bal-lt"
    np.testing.assert_array_equal(lt.val_images, ds.val_images)
    np.testing.assert_array_equal(lt.test_labels, ds.test_labels)
    assert ds.train_counts.tolist() == [60] * 4  # the source is not modified
    src = _source_index(lt.train_images)
    assert len(np.unique(src)) == len(src)  # drawn without replacement
    np.testing.assert_array_equal(ds.train_labels[src], lt.train_labels)  # images keep their labels


def test_make_long_tail_is_seeded():
    ds = _balanced(60, 4)
    a = _source_index(make_long_tail(ds, 10.0, n_max=50, seed=1).train_images)
    b = _source_index(make_long_tail(ds, 10.0, n_max=50, seed=1).train_images)
    c = _source_index(make_long_tail(ds, 10.0, n_max=50, seed=2).train_images)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    idx = long_tail_indices(ds.train_labels, [5, 4, 3, 2], seed=7)
    np.testing.assert_array_equal(idx, long_tail_indices(ds.train_labels, [5, 4, 3, 2], seed=7))
    assert np.bincount(ds.train_labels[idx]).tolist() == [5, 4, 3, 2]


def test_class_order_puts_the_head_first():
    ds = _balanced(60, 4)
    lt = make_long_tail(ds, 10.0, n_max=50, class_order=[2, 0, 3, 1])
    per_rank = long_tail_counts(50, 4, 10.0)
    assert lt.train_counts.tolist() == [per_rank[1], per_rank[3], per_rank[0], per_rank[2]]
    assert lt.meta["long_tail"]["counts"] == lt.train_counts.tolist()
    with pytest.raises(ValueError, match="class_order"):
        make_long_tail(ds, 10.0, n_max=50, class_order=[0, 1, 2, 2])


def test_default_n_max_is_the_largest_that_fits():
    # Class 1 has 30 images: with rho = 4 over 3 classes its target is floor(n_max / 2), so n_max = 61 fits
    # and 62 would not, even though the head class has 100.
    labels = np.repeat([0, 1, 2], [100, 30, 100])
    images = np.zeros((len(labels), 2, 2, 1), np.uint8)
    ds = from_arrays(images, labels, images[:3], np.array([0, 1, 2]), images[:3], np.array([0, 1, 2]), name="x")
    lt = make_long_tail(ds, 4.0)
    assert lt.meta["long_tail"]["n_max"] == 61
    assert lt.train_counts.tolist() == [61, 30, 15]


def test_too_few_images_names_class_available_and_needed():
    ds = _balanced(20, 3)
    with pytest.raises(ValueError, match=r"class 0 .*has 20 train images .*needs 50"):
        make_long_tail(ds, 2.0, n_max=50)


def test_impossible_profile_raises():
    ds = _balanced(20, 3)
    with pytest.raises(ValueError, match=r"0 images to rank 2 \(class 2 'class_2'\)"):
        make_long_tail(ds, 50.0)  # at most 20 in the head, so the tail rounds to 0
