"""Synthetic sources: where an env step's synthetic samples come from.

A source holds, per class, a finite pool of candidates generated ahead of time (env steps never call a
generator). Each step draws ``round(ratio_c * n_real_c)`` of them with the env's RNG: without replacement
while the pool is large enough, with replacement beyond it.

Interface (duck-typed, so users can plug in their own):
    ``pool(class_id) -> np.ndarray`` uint8 images ``(n, H, W, C)``; ``quality(class_id) -> float`` in
    [0, 1] (filter acceptance, 1.0 when unfiltered); ``fingerprint() -> str``; ``num_classes``.
A feature-space source (LMD-style Gaussian virtual features) is selected with ``source="gaussian"`` in
the env, because it needs the env's own encoder.
"""
from __future__ import annotations

import hashlib

import numpy as np


class ArraySource:
    """Pools given as arrays: ``{class_id: uint8 images}`` (missing classes have empty pools).

    Args:
        pools: Images per class.
        num_classes: Number of classes of the dataset.
        quality: Optional per-class quality in [0, 1] (default 1.0).
    """

    def __init__(self, pools: dict[int, np.ndarray], num_classes: int, quality: dict[int, float] | None = None
                 ) -> None:
        self.num_classes = num_classes
        self._pools = {}
        shape = None
        for c, imgs in pools.items():
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"pool for class {c} but the dataset has classes 0..{num_classes - 1}")
            imgs = np.asarray(imgs)
            if imgs.dtype != np.uint8 or imgs.ndim != 4:
                raise ValueError(f"pool of class {c} must be uint8 (n, H, W, C); got {imgs.dtype} {imgs.shape}")
            if shape is not None and len(imgs) and imgs.shape[1:] != shape:
                raise ValueError(f"pool of class {c} has images {imgs.shape[1:]}, others {shape}")
            shape = imgs.shape[1:] if len(imgs) else shape
            self._pools[int(c)] = imgs
        self._quality = {int(k): float(v) for k, v in (quality or {}).items()}

    def pool(self, class_id: int) -> np.ndarray:
        return self._pools.get(class_id, np.zeros((0, 1, 1, 1), np.uint8))

    def quality(self, class_id: int) -> float:
        return self._quality.get(class_id, 1.0)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in sorted(self._pools):
            h.update(str(c).encode())
            h.update(np.ascontiguousarray(self._pools[c]).tobytes())
        h.update(repr(sorted(self._quality.items())).encode())
        return h.hexdigest()


class BankSource(ArraySource):
    """The on-disk synthetic bank of the generator pool (``generators.bank.SyntheticBank``) as a source."""

    def __init__(self, bank) -> None:
        c = int(bank.manifest["num_classes"])
        super().__init__({k: np.asarray(bank.images(k)) for k in range(c)}, c,
                         {k: float(bank.quality(k)) for k in range(c)})
        self.bank = bank


def generator_source(generator, dataset, *, per_class: int | np.ndarray = 256, seed: int = 0,
                     fit: bool = True) -> ArraySource:
    """Fill pools by sampling any ``generators`` Generator (fitted on ``dataset`` first if ``fit``)."""
    import torch

    if fit:
        generator.fit(dataset, generator=torch.Generator().manual_seed(seed))
    per = np.broadcast_to(np.asarray(per_class), (dataset.num_classes,))
    pools = {}
    for c in range(dataset.num_classes):
        g = torch.Generator().manual_seed(seed * 7919 + c)
        pools[c] = generator.sample(c, int(per[c]), generator=g)
    return ArraySource(pools, dataset.num_classes)


def augmentation_source(dataset, *, per_class: int = 256, seed: int = 0) -> ArraySource:
    """The default source: classic augmentations (flips, small affine moves, jitter) of real images."""
    from tailmix.generators.augment import AugmentationGenerator

    return generator_source(AugmentationGenerator(), dataset, per_class=per_class, seed=seed)
