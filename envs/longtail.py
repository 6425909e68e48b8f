"""The long-tail builder: subsample a dataset's train split to an exponential class profile.

The profile is the one of Cui et al. (2019), "Class-Balanced Loss Based on Effective Number of Samples":
the class at rank ``r`` (0 = head) keeps ``n_r = floor(n_max * rho ** (-r / (C - 1)))`` images, so the head
keeps ``n_max`` and the tail keeps ``floor(n_max / rho)``. Only ``train`` is subsampled: ``val`` and ``test``
stay as they are, so rewards and evaluation keep measuring every class.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from tailmix.io.dataset import LongTailDataset

# floor(n_max * rho ** (-r/(C-1))) is evaluated in floating point; a value that is exactly an integer
# (100 * 20 ** -1 == 5) can come out as 4.999999999999999 and floor would drop an image. Nudge by a tolerance
# far below any real fractional part.
_FLOOR_TOLERANCE = 1e-9


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Per-rank image counts of the exponential long-tail profile.

    Args:
        n_max: Images kept by the head class (rank 0).
        num_classes: Number of classes ``C`` (at least 2).
        imbalance_ratio: ``rho = n_head / n_tail`` (at least 1; 1 means balanced).

    Returns:
        int64 array of length ``num_classes``: ``floor(n_max * rho ** (-r / (C - 1)))`` for rank ``r``,
        non-increasing.

    Raises:
        ValueError: for invalid arguments, or when a rank's count rounds down to 0 (no silent fix-up).
    """
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be a positive integer (images in the head class); got {n_max!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (a long tail needs a head and a tail); "
                         f"got {num_classes!r}")
    rho = float(imbalance_ratio)
    if not math.isfinite(rho) or rho < 1.0:
        raise ValueError(f"imbalance_ratio must be a finite number >= 1 (head count / tail count; 1 is balanced); "
                         f"got {imbalance_ratio!r}")
    ranks = np.arange(num_classes, dtype=np.float64)
    exact = int(n_max) * rho ** (-ranks / (num_classes - 1))
    counts = np.floor(exact + _FLOOR_TOLERANCE).astype(np.int64)
    zero = np.flatnonzero(counts == 0)
    if zero.size:
        r = int(zero[0])
        raise ValueError(
            f"the long-tail profile n_max={n_max}, imbalance_ratio={rho:g}, {num_classes} classes gives 0 images to "
            f"rank {r} ({exact[r]:.3g} before rounding down); use imbalance_ratio <= {int(n_max)} (= n_max) or a "
            f"larger n_max")
    return counts


def _zero_rank(n_max, num_classes, imbalance_ratio) -> int | None:
    """The first rank whose profile count rounds to 0, or None (also None for arguments that are invalid)."""
    try:
        exact = int(n_max) * float(imbalance_ratio) ** (-np.arange(num_classes) / (num_classes - 1))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    zero = np.flatnonzero(np.floor(exact + _FLOOR_TOLERANCE) == 0)
    return int(zero[0]) if zero.size else None


def _validate_class_order(class_order: Sequence[int] | None, num_classes: int) -> list[int]:
    if class_order is None:
        return list(range(num_classes))
    order = [int(c) for c in class_order]
    if sorted(order) != list(range(num_classes)):
        raise ValueError(f"class_order must list every class id 0..{num_classes - 1} exactly once (rank 0 is the "
                         f"head); got {list(class_order)}")
    return order


def long_tail_indices(labels: np.ndarray, counts: Sequence[int], *, seed: int = 0) -> np.ndarray:
    """Indices that keep ``counts[c]`` images of each class ``c``, drawn without replacement.

    Args:
        labels: int labels ``(N,)``.
        counts: Images to keep per class id (not per rank).
        seed: Seed of the ``np.random.default_rng`` that draws the images.

    Returns:
        Sorted int64 indices into ``labels`` (the kept images stay in their original order).

    Raises:
        ValueError: when a class has fewer images than requested.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept = []
    # Classes are drawn in id order so that the same seed always consumes the RNG the same way.
    for c, n in enumerate(counts):
        pool = np.flatnonzero(labels == c)
        if n > len(pool):
            raise ValueError(f"class {c} has {len(pool)} train images but the long-tail profile needs {int(n)}; "
                             f"lower n_max or the imbalance_ratio, or reorder classes with class_order")
        kept.append(rng.choice(pool, size=int(n), replace=False))
    return np.sort(np.concatenate(kept)).astype(np.int64)


def _largest_feasible_n_max(available: np.ndarray, order: list[int], imbalance_ratio: float) -> int:
    """The largest head count whose whole profile fits the available images (counts grow with n_max)."""
    ranked = available[order]

    def fits(n: int) -> bool:
        num_classes = len(order)
        exact = n * float(imbalance_ratio) ** (-np.arange(num_classes) / (num_classes - 1))
        return bool(np.all(np.floor(exact + _FLOOR_TOLERANCE) <= ranked))

    lo, hi = 1, int(ranked[0])  # the head can never keep more than it has
    if hi < 1:
        return 1  # no head images at all: let the caller's count check raise with the class named
    while lo < hi:  # largest n in [lo, hi] with fits(n); fits(1) holds whenever every class has an image
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def make_long_tail(dataset: LongTailDataset, imbalance_ratio: float, *, n_max: int | None = None, seed: int = 0,
                   class_order: Sequence[int] | None = None) -> LongTailDataset:
    """Subsample ``dataset``'s train split to an exponential long tail (Cui et al. 2019).

    Args:
        dataset: The source dataset; only its ``train`` split is subsampled.
        imbalance_ratio: ``rho = n_head / n_tail`` (>= 1).
        n_max: Images kept by the head class. Default (None): the largest head count for which every class
            still has enough images for its target.
        seed: Seed of the ``np.random.default_rng`` that picks the kept images.
        class_order: Class ids from head to tail (``class_order[0]`` keeps ``n_max``). Default: ``0..C-1``.

    Returns:
        A new :class:`LongTailDataset` named ``"<name>-lt"`` whose ``meta["long_tail"]`` records
        ``imbalance_ratio``, ``n_max``, ``class_order``, ``counts`` (per class id, equal to ``train_counts``)
        and ``seed``; ``meta["leftover"]`` keeps the train images it dropped (``images``, ``labels``; added to those
        of an earlier call), which :meth:`LongTailDataset.leftover` returns (the oracle source, ``envs.oracle``).

    Raises:
        ValueError: when a class has fewer images than its target (the message names the class, the images
            available and the images needed), or when the profile rounds a class down to 0 images.
    """
    if not (dataclasses.is_dataclass(dataset) and hasattr(dataset, "train_labels") and hasattr(dataset, "meta")):
        raise ValueError(f"make_long_tail needs a LongTailDataset; got {type(dataset).__name__}. Build one with "
                         "tailmix.envs.datasets.from_arrays or a loader")
    num_classes = dataset.num_classes
    order = _validate_class_order(class_order, num_classes)
    available = dataset.train_counts
    n_max_fitted = n_max is None
    if n_max_fitted:
        n_max = _largest_feasible_n_max(available, order, imbalance_ratio)
    try:
        per_rank = long_tail_counts(n_max, num_classes, imbalance_ratio)
    except ValueError as err:  # name the class behind the rank: that is what the user knows
        rank = _zero_rank(n_max, num_classes, imbalance_ratio)
        if rank is None:
            raise
        c = order[rank]
        raise ValueError(str(err).replace(f"rank {rank} ", f"rank {rank} (class {c} {dataset.class_names[c]!r}) ", 1)
                         + ("; n_max was fitted to the train split" if n_max_fitted else "")) from err
    counts = np.zeros(num_classes, np.int64)
    counts[order] = per_rank
    for c in order:  # head first, so the first failure reported is the most informative one
        if counts[c] > available[c]:
            raise ValueError(
                f"class {c} ({dataset.class_names[c]!r}) has {int(available[c])} train images but the long-tail "
                f"profile (n_max={n_max}, imbalance_ratio={float(imbalance_ratio):g}) needs {int(counts[c])}; lower "
                f"n_max (or leave it None to fit the data), lower the imbalance_ratio, or reorder with class_order")
    keep = long_tail_indices(dataset.train_labels, counts, seed=seed)
    meta = dict(dataset.meta)
    meta["long_tail"] = {"imbalance_ratio": float(imbalance_ratio), "n_max": int(n_max), "class_order": order,
                         "counts": counts.tolist(), "seed": int(seed)}
    # The dropped images are in no split: kept aside (meta is not part of the fingerprint, so no number changes)
    # for a "perfect generator" made of real images (envs.oracle).
    dropped = np.setdiff1d(np.arange(len(dataset.train_labels)), keep)
    before_images, before_labels = dataset.leftover()
    meta["leftover"] = {"images": np.concatenate([before_images, dataset.train_images[dropped]]),
                        "labels": np.concatenate([before_labels, dataset.train_labels[dropped]])}
    out = dataclasses.replace(dataset, name=f"{dataset.name}-lt", train_images=dataset.train_images[keep],
                              train_labels=dataset.train_labels[keep], meta=meta)
    assert out.train_counts.tolist() == counts.tolist()
    return out
