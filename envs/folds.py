"""Cross-validation folds of the pooled train + val split, for the env's ``val_folds`` option.

With ``val_folds = k >= 2`` the real train and val images are pooled (train first, then val, in the dataset's
order) and split once, stratified by class, into ``k`` folds; the assignment is fixed by ``source_seed``. Each
episode draws its held-out fold from its reset seed, trains on the other ``k - 1`` folds and is observed and
rewarded on the held-out one, so a policy cannot overfit a single val split. The test split never enters.
"""
from __future__ import annotations

import numpy as np


class CrossValidationFolds:
    """A fixed stratified ``k``-fold split of the pooled real train + val images.

    Args:
        train_labels: ``(N_train,)`` labels of the real train split.
        val_labels: ``(N_val,)`` labels of the val split.
        num_classes: ``C``.
        k: Number of folds (>= 2).
        seed: Seed of the assignment (the env's ``source_seed``).

    Attributes:
        labels: ``(N,)`` pooled labels (train first, then val).
        fold: ``(N,)`` fold of each pooled image.
        held_out: per fold, the pooled row indices it holds (the episode's reward rows).
        train_rows: per fold, the pooled row indices of the other ``k - 1`` folds (the episode's real rows).
        counts: ``(k, C)`` real training images per class of an episode holding out each fold.
    """

    def __init__(self, train_labels, val_labels, num_classes: int, k: int, seed: int = 0) -> None:
        if k < 2:
            raise ValueError(f"CrossValidationFolds needs k >= 2 folds; got {k} (val_folds=1 is the fixed split)")
        self.k = int(k)
        self.num_classes = c = int(num_classes)
        self.n_train = len(train_labels)
        self.labels = np.concatenate([np.asarray(train_labels, np.int64), np.asarray(val_labels, np.int64)])
        per_class = np.bincount(self.labels, minlength=c)
        if (per_class < k).any():
            cls = int(np.argmin(per_class))
            raise ValueError(f"val_folds={k} needs at least {k} images of every class in train + val, so that every "
                             f"fold holds each class once; class {cls} has {int(per_class[cls])}. Use val_folds <= "
                             f"{int(per_class.min())} (or 1 for the fixed val split)")
        rng = np.random.default_rng([int(seed), 0x6F6C64])  # a stream of its own: the encoder's folds use seed
        self.fold = np.empty(len(self.labels), np.int64)
        for cls in range(c):
            idx = np.flatnonzero(self.labels == cls)
            rng.shuffle(idx)
            # consecutive positions go to consecutive folds: every fold gets floor or ceil of n_c / k, never 0
            self.fold[idx] = (np.arange(len(idx)) + rng.integers(k)) % k
        self.held_out = [np.flatnonzero(self.fold == f) for f in range(k)]
        self.train_rows = [np.flatnonzero(self.fold != f) for f in range(k)]
        self.counts = np.stack([np.bincount(self.labels[r], minlength=c) for r in self.train_rows]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def pooled(self, train, val) -> np.ndarray:
        """``train`` and ``val`` arrays (images, features) stacked in the pooled order."""
        return np.concatenate([np.asarray(train), np.asarray(val)])
