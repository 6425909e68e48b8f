"""Aggregate scores over runs, with intervals that cover run-to-run and test-image noise.

The definitions follow rliable (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"):
the interquartile mean (IQM, the mean of the middle 50% of runs), the probability of improvement
``P(X > Y)`` (a Mann-Whitney statistic, ties counted half) and percentile intervals from a *stratified*
bootstrap (runs are resampled within each task, never across tasks). They are written here with numpy
instead of importing ``rliable``: its release at the time of writing (1.2.0) imports ``arch``, whose release
(7.2) fails to import beside pandas 3 (``TypeError: deprecate_kwarg() missing 1 required positional argument``),
and it would add pandas, statsmodels and seaborn to the install for some forty lines of arithmetic.
``tests/suite/test_stats.py`` checks these functions against hand-computed values.

One more source of noise than rliable's: the **test images**. A balanced accuracy on RetinaMNIST's test split
moves by about a point when one image of its rarest class flips, so a row's interval also resamples the test
images (:func:`test_bootstrap`, from the per-class test recalls), and :func:`paired_interval` resamples runs
and test images together.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def iqm(scores) -> float:
    """Interquartile mean: the mean of the middle 50% of ``scores`` (rliable's ``aggregate_iqm``: a 25%
    trimmed mean, ``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(scores, np.float64).ravel())
    n = len(x)
    if n == 0:
        return float("nan")
    cut = int(0.25 * n)  # scipy's trim_mean drops int(0.25 * n) from each end
    return float(x[cut:n - cut].mean())


def probability_of_improvement(x, y) -> float:
    """``P(X > Y)`` for a random run of X against a random run of Y, ties counted half (rliable's per-task
    probability of improvement, the normalised Mann-Whitney U)."""
    a = np.asarray(x, np.float64).ravel()[:, None]
    b = np.asarray(y, np.float64).ravel()[None, :]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(((a > b).mean() + 0.5 * (a == b).mean()))


def bootstrap_interval(scores, statistic: Callable = np.mean, *, reps: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the runs in ``scores`` (1-D), resampling runs."""
    x = np.asarray(scores, np.float64).ravel()
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(reps)])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def stratified_bootstrap_interval(scores_by_task: dict, statistic: Callable = iqm, *, reps: int = 2000,
                                  level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """rliable's stratified bootstrap: runs resampled within each task, then ``statistic`` of all of them."""
    tasks = [np.asarray(v, np.float64).ravel() for v in scores_by_task.values()]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(reps):
        stats.append(statistic(np.concatenate([t[rng.integers(0, len(t), len(t))] for t in tasks])))
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def test_bootstrap(recalls, counts, *, reps: int = 1000, seed: int = 0) -> np.ndarray:
    """Balanced accuracies of R runs over ``reps`` resamples of the test images, stratified by class.

    Resampling class ``c``'s ``n_c`` test images with replacement, when a run classifies ``k_c`` of them
    correctly, gives a correct count distributed ``Binomial(n_c, k_c / n_c)``: so the per-class test recalls
    (``(R, C)``) and the class sizes of the test split (``(C,)``) are all it needs, no predictions. Each run is
    resampled on its own (the pairing of two runs on the same images is not kept, which makes a difference's
    interval wider, never narrower). Returns ``(reps, R)``.
    """
    r = np.atleast_2d(np.asarray(recalls, np.float64))
    n = np.asarray(counts, np.int64).ravel()
    if r.shape[1] != len(n):
        raise ValueError(f"recalls have {r.shape[1]} classes but counts {len(n)}")
    present = n > 0
    rng = np.random.default_rng(seed)
    k = np.rint(r[:, present] * n[present]).astype(np.int64)  # correct images per run and class
    draws = rng.binomial(np.broadcast_to(n[present], (reps,) + k.shape), np.clip(k / n[present], 0, 1))
    return (draws / n[present]).mean(-1)


def paired_interval(a, b, a_boot=None, b_boot=None, *, reps: int = 2000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile interval over method seeds, episode seeds and test images.

    Args:
        a, b: Scores ``(S, E)``: S method seeds (independent runs; 1 for a fixed policy) by E episode seeds. The
            episodes are shared by both (same classifier initialisation and draws), so they are resampled
            together (paired); the seeds of each method are resampled on their own.
        a_boot, b_boot: ``(B, S, E)`` scores of the same runs on B resamples of the test images
            (:func:`test_bootstrap`, reshaped); each resample of the interval takes one image resample per
            method (the pairing of two methods on the same images is not kept: wider, never narrower).

    Returns:
        ``(mean of a - mean of b, low, high)``, the mean on the full test split.
    """
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b need the same episodes (columns): {a.shape} vs {b.shape}")
    diff = float(a.mean() - b.mean())
    boots = a_boot is not None and b_boot is not None
    if boots:
        a_boot = np.asarray(a_boot, np.float64).reshape((-1,) + a.shape)
        b_boot = np.asarray(b_boot, np.float64).reshape((-1,) + b.shape)
    (sa, e), sb = a.shape, b.shape[0]
    if not boots and sa * e < 2:
        return diff, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for r in range(reps):
        ia, ib, ie = rng.integers(0, sa, sa), rng.integers(0, sb, sb), rng.integers(0, e, e)
        xa = a_boot[rng.integers(0, len(a_boot))] if boots else a
        xb = b_boot[rng.integers(0, len(b_boot))] if boots else b
        stats[r] = xa[np.ix_(ia, ie)].mean() - xb[np.ix_(ib, ie)].mean()
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return diff, float(lo), float(hi)
