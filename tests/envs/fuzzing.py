"""Shared pieces of the hypothesis fuzz tests: settings, a one-BLAS-thread fixture, case-count reporting."""
from __future__ import annotations

import warnings
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings


def fuzz_settings(max_examples: int):
    """Deterministic hypothesis settings (CI must not vary between runs), no deadline on a busy CPU."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """numpy's BLAS (the Gaussian source's eigh) thrashes with many threads on a busy 2-core CPU: 1 s vs 1 ms."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    with threadpool_limits(limits=1):
        yield


class FuzzReport(UserWarning):
    """How many cases a fuzz test tried (shown in pytest's warnings summary, with or without ``-s``)."""


def report(test: str, outcomes: Counter, minimum: int) -> None:
    """Print and warn how many cases ran, by outcome; fail if hypothesis ran suspiciously few."""
    msg = f"fuzz {test}: {sum(outcomes.values())} cases {dict(sorted(outcomes.items()))}"
    print(msg)
    warnings.warn(FuzzReport(msg), stacklevel=2)
    assert sum(outcomes.values()) >= minimum, msg
