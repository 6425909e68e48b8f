"""Shared fixtures: tiny datasets made in memory, and the real MedMNIST folder from TAILMIX_DATA_DIR."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Torch results depend on the thread count; tests pin it so that repeated runs compare equal.
torch.set_num_threads(1)

# Envs cache fitted encoders in a per-user folder by default (envs.cache): the suite uses a temporary one, set
# here at import so that subprocesses (spawn-started workers) inherit it, and never writes into ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="tailmix-test-cache-")
os.environ["TAILMIX_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def make_tiny_dataset(num_classes: int = 3, size: int = 8, channels: int = 1, counts=(24, 10, 4),
                      n_val: int = 6, n_test: int = 6, seed: int = 0):
    """A learnable long-tailed toy dataset: each class is a noisy bright bar at its own position."""
    from tailmix.envs.datasets import LongTailDataset

    rng = np.random.default_rng(seed)

    def make(n_per_class):
        xs, ys = [], []
        for c, n in enumerate(n_per_class):
            base = np.zeros((size, size, channels), np.float32)
            row = int(round((c + 0.5) * size / num_classes - 0.5))
            base[max(row - 1, 0): row + 1, :, :] = 200.0
            x = base[None] + rng.normal(0, 30, (n, size, size, channels))
            xs.append(np.clip(x, 0, 255).astype(np.uint8))
            ys.append(np.full(n, c, np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    counts = tuple(counts)[:num_classes]
    tr = make(counts)
    va = make([n_val] * num_classes)
    te = make([n_test] * num_classes)
    return LongTailDataset("tiny", *tr, *va, *te, class_names=tuple(f"c{i}" for i in range(num_classes)))


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset()


@pytest.fixture
def tiny_rgb_dataset():
    return make_tiny_dataset(channels=3)


@pytest.fixture
def data_dir() -> Path:
    """The real MedMNIST folder. Skips when TAILMIX_DATA_DIR is unset; a missing file then fails the test."""
    value = os.environ.get("TAILMIX_DATA_DIR")
    if not value:
        pytest.skip("TAILMIX_DATA_DIR is not set; real MedMNIST tests need it (.ci/run sets it)")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"TAILMIX_DATA_DIR={value} is not a folder")
    return path
