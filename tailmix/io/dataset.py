"""The dataset every layer shares: :class:`LongTailDataset`, three real splits of a long-tailed image dataset.

uint8 images shaped ``(N, H, W, C)`` (``C`` is 1 for grey, 3 for RGB) and int64 labels shaped ``(N,)`` for the
``train``, ``val`` and ``test`` splits. ``train`` feeds the generators and the classifier, ``val`` gives
observations and rewards, ``test`` is touched only by evaluation. The loaders that build one live in
:mod:`tailmix.envs.datasets`, the long-tail builder in :mod:`tailmix.envs.longtail`; this module sits in the bottom
layer so that every layer (the leakage checks, the generators, the envs) may name the type.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

#: The splits of every dataset, in order.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LongTailDataset:
    """Three real splits of a (long-tailed) image classification dataset.

    Attributes:
        name: Short name used in logs and cache keys (e.g. ``"digits-lt"``).
        train_images, val_images, test_images: uint8 arrays ``(N, H, W, C)``.
        train_labels, val_labels, test_labels: int64 arrays ``(N,)`` with values in ``[0, C)``.
        class_names: One human-readable name per class.
        meta: Free-form provenance (source file, long-tail profile, counts, seed).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if c < 2:
            raise ValueError(
                f"dataset {self.name!r} has {c} class(es); a classification env needs at least 2. "
                "Check the labels or the class folders."
            )
        shape = None
        for split in SPLITS:
            x, y = self.split(split)
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
                raise ValueError(
                    f"{split}_images must be a uint8 array shaped (N, H, W, C) with C in (1, 3); got "
                    f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}. Convert with "
                    "tailmix.envs.datasets.from_arrays, which rescales and reshapes."
                )
            if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int64:
                raise ValueError(f"{split}_labels must be an int64 array shaped (N,); got {y.dtype} {y.shape}")
            if len(x) != len(y):
                raise ValueError(f"{split} has {len(x)} images but {len(y)} labels; they must match one to one")
            if len(y) and (y.min() < 0 or y.max() >= c):
                raise ValueError(f"{split}_labels must lie in [0, {c}); found {y.min()}..{y.max()}")
            if shape is not None and len(x) and x.shape[1:] != shape:
                raise ValueError(f"{split} images are {x.shape[1:]} but train images are {shape}; resize them alike")
            if split == "train":
                shape = x.shape[1:]
        if len(self.train_labels) == 0 or len(self.val_labels) == 0:
            raise ValueError(f"dataset {self.name!r} needs non-empty train and val splits")

    # -- views -------------------------------------------------------------------------------
    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images, labels)`` of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def counts(self, split: str = "train") -> np.ndarray:
        """Images per class in ``split`` (int64, length ``num_classes``)."""
        return np.bincount(self.split(split)[1], minlength=self.num_classes).astype(np.int64)

    @property
    def train_counts(self) -> np.ndarray:
        return self.counts("train")

    def leftover(self) -> tuple[np.ndarray, np.ndarray]:
        """Real images in none of the splits: those the long-tail builder dropped from train (``images``
        ``(N, H, W, C)`` uint8, ``labels`` ``(N,)`` int64; empty when nothing was left out, e.g. MedMNIST as shipped)."""
        lo = self.meta.get("leftover")
        if lo is None:
            return np.zeros((0, *self.image_shape), np.uint8), np.zeros(0, np.int64)
        return lo["images"], lo["labels"]

    def fingerprint(self) -> str:
        """SHA-256 of every split's pixels and labels and the class names: a cache key for banks."""
        h = hashlib.sha256()
        h.update(repr(self.class_names).encode())
        for split in SPLITS:
            x, y = self.split(split)
            h.update(split.encode())
            h.update(repr(x.shape).encode())
            h.update(np.ascontiguousarray(x).tobytes())
            h.update(np.ascontiguousarray(y).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:  # short: the arrays are large
        return (f"LongTailDataset(name={self.name!r}, classes={self.num_classes}, image_shape={self.image_shape}, "
                f"train={len(self.train_labels)} {self.train_counts.tolist()}, val={len(self.val_labels)}, "
                f"test={len(self.test_labels)})")
