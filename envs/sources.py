"""Synthetic sources: where an env step's synthetic samples come from.

A source holds, per class, a finite pool of candidates made ahead of time (env steps never call a
generator). Each step draws ``round(ratio_c * n_real_c)`` of them with the env's RNG (``draw="replace"``:
without replacement while the pool is large enough, with replacement beyond it; ``draw="unique"``: never
beyond the pool).

The :class:`Source` protocol: ``space`` (``"image"``: ``pool(class_id)`` returns uint8 images ``(n, H, W, C)``;
``"feature"``: the pool lives in the feature mode's encoder space, see :class:`GaussianSource`), ``name`` (a
short label for infos and baseline names, such as ``"ddpm"`` or ``"augment"``), ``num_classes``,
``pool(class_id)``, ``quality(class_id)`` in [0, 1] (filter acceptance, 1.0 when unfiltered) and
``fingerprint()``. A feature-space source also has ``fit_features(features, labels) -> Source``: the feature
engine calls it with its encoder's real train features and draws from the pools of what it returns.
:func:`make_source` turns every spec the env accepts into one; a user's object with only ``pool`` and
``quality`` still works (it is taken as an image source named ``source<g>``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

#: What a source's pool holds.
SPACES = ("image", "feature")
#: The string specs :func:`make_source` accepts.
SOURCE_KINDS = ("augment", "gaussian")


@runtime_checkable
class Source(Protocol):
    """What the env needs of a synthetic source (see the module docstring)."""

    space: str
    name: str
    num_classes: int

    def pool(self, class_id: int) -> np.ndarray: ...

    def quality(self, class_id: int) -> float: ...

    def fingerprint(self) -> str: ...


class ArraySource:
    """Pools given as arrays: ``{class_id: uint8 images}`` (missing classes have empty pools).

    Args:
        pools: Images per class.
        num_classes: Number of classes of the dataset.
        quality: Optional per-class quality in [0, 1] (default 1.0).
        name: Label in infos and baseline names (default: ``source<g>``, ``g`` its place in the env's list).
    """

    space = "image"

    def __init__(self, pools: dict[int, np.ndarray], num_classes: int, quality: dict[int, float] | None = None,
                 name: str | None = None) -> None:
        self.num_classes = num_classes
        self.name = name
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
    """The on-disk synthetic bank of the generator pool (``generators.bank.SyntheticBank``) as a source.

    Its name is the bank's generator id(s) as recorded in its manifest (``"ddpm"``; ``"ddpm+lora"`` for a
    bank filled by several), unless ``name`` is given.
    """

    def __init__(self, bank, name: str | None = None) -> None:
        manifest = bank.manifest
        c = int(manifest["num_classes"])
        kinds = sorted(manifest.get("generator_configs") or {})
        super().__init__({k: np.asarray(bank.images(k)) for k in range(c)}, c,
                         {k: float(bank.quality(k)) for k in range(c)}, name=name or "+".join(kinds) or "bank")
        self.bank = bank


class GaussianSource:
    """Feature-space virtual samples (LMD-style): a Gaussian per class fitted on the env's real train features.

    The feature engine fills it with its own encoder (:meth:`fit_features`), so it serves feature mode only.

    Args:
        num_classes: Classes of the dataset.
        pool_size: Virtual features drawn per class.
        seed: Class ``k`` draws from ``torch.Generator().manual_seed(seed * 7919 + k)``.
    """

    space = "feature"
    name = "gaussian"

    def __init__(self, num_classes: int, pool_size: int = 256, seed: int = 0) -> None:
        self.num_classes, self.pool_size, self.seed = int(num_classes), int(pool_size), int(seed)
        self._pools: list[np.ndarray] | None = None

    def fit_features(self, features: np.ndarray, labels: np.ndarray) -> GaussianSource:
        """A copy whose pools are drawn from Gaussians fitted on ``features`` (the env's encoder space)."""
        import torch

        from tailmix.generators.gaussian import GaussianFeatureGenerator

        gen = GaussianFeatureGenerator()
        gen.fit_features(features, labels, self.num_classes)
        out = GaussianSource(self.num_classes, self.pool_size, self.seed)
        out._pools = [np.asarray(gen.sample_features(k, self.pool_size,
                                                     generator=torch.Generator().manual_seed(self.seed * 7919 + k)))
                      for k in range(self.num_classes)]
        return out

    def pool(self, class_id: int) -> np.ndarray:
        if self._pools is None:
            raise ValueError("a GaussianSource has no pool until fit_features() fitted it on encoder features; "
                             "the env does that in feature mode")
        return self._pools[class_id]

    def quality(self, class_id: int) -> float:
        return 1.0

    def fingerprint(self) -> str:
        return f"gaussian:{self.num_classes}:{self.pool_size}:{self.seed}"


class _Declared:
    """A user's source that declares no ``space`` / ``name``: an image source under a default name."""

    space = "image"

    def __init__(self, inner, name: str) -> None:
        self.inner, self.name = inner, name
        self.num_classes = getattr(inner, "num_classes", None)

    def pool(self, class_id: int) -> np.ndarray:
        return self.inner.pool(class_id)

    def quality(self, class_id: int) -> float:
        return self.inner.quality(class_id)

    def fingerprint(self) -> str:
        fp = getattr(self.inner, "fingerprint", None)
        return fp() if callable(fp) else repr(self.inner)

    def __getattr__(self, attr):  # anything else the user's object has (e.g. ``bank``)
        inner = self.__dict__.get("inner")
        if inner is None:  # while unpickling, before __dict__ is filled
            raise AttributeError(attr)
        return getattr(inner, attr)


class _Combined:
    """Every image pool of several sources, per class, as one source (for encoders that train on them)."""

    space = "image"
    name = "combined"

    def __init__(self, sources: Sequence) -> None:
        self.sources = list(sources)
        self.num_classes = self.sources[0].num_classes

    def pool(self, class_id: int) -> np.ndarray:
        pools = [np.asarray(s.pool(class_id)) for s in self.sources]
        full = [p for p in pools if len(p)]
        return np.concatenate(full) if full else pools[0]

    def quality(self, class_id: int) -> float:
        return 1.0

    def fingerprint(self) -> str:
        return hashlib.sha256("|".join(s.fingerprint() for s in self.sources).encode()).hexdigest()


def source_specs(source=None, sources=None) -> list:
    """The env's list of source specs from its ``source`` / ``sources`` arguments (``[None]`` by default)."""
    if sources is None:
        return [source]
    if source is not None:
        raise ValueError("pass either source= (one source) or sources= (a list of them), not both; e.g. "
                         "sources=[source, 'augment']")
    if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
        raise ValueError(f"sources must be a list of source specs (e.g. ['augment', 'gaussian']); got "
                         f"{type(sources).__name__}. For one source use source= or a one-element list")
    if len(sources) == 0:
        raise ValueError("sources is empty (G = 0); give at least one source, e.g. sources=['augment'], or leave "
                         "it None for the default augmentations")
    return list(sources)


def make_source(spec, dataset, *, pool_size: int = 256, seed: int = 0, index: int = 0) -> Source:
    """A :class:`Source` from a spec.

    Args:
        spec: A source object (kept; one without ``space``/``name`` is taken as an image source),
            a ``generators.bank.SyntheticBank`` (-> :class:`BankSource`), ``"augment"`` (or ``None``: classic
            augmentations of the real images, :func:`augmentation_source`), or ``"gaussian"``
            (:class:`GaussianSource`, feature mode only).
        dataset: The env's dataset (augmentations are made from its train split).
        pool_size: Candidates per class of the ``augment`` and ``gaussian`` pools.
        seed: Seed of those pools.
        index: The source's place in the env's list (its default name is ``source<index>``).
    """
    if spec is None or (isinstance(spec, str) and spec == "augment"):
        return augmentation_source(dataset, per_class=pool_size, seed=seed)
    if isinstance(spec, str):
        if spec == "gaussian":
            return GaussianSource(dataset.num_classes, pool_size, seed)
        raise ValueError(f"source {spec!r} is not known; pass one of {SOURCE_KINDS} ('gaussian': feature mode), a "
                         "source object (tailmix.envs.sources), a tailmix.generators.bank.SyntheticBank, or None for "
                         "augmentations")
    from tailmix.generators.bank import SyntheticBank

    if isinstance(spec, SyntheticBank) or (hasattr(spec, "images") and hasattr(spec, "manifest")
                                           and not hasattr(spec, "pool")):
        return BankSource(spec)
    if not (callable(getattr(spec, "pool", None)) and callable(getattr(spec, "quality", None))):
        raise ValueError(f"source of type {type(spec).__name__} has no pool(class_id) and quality(class_id); pass "
                         f"one of {SOURCE_KINDS}, a source object (see tailmix.envs.sources) or a SyntheticBank")
    space, name = getattr(spec, "space", None), getattr(spec, "name", None)
    if space is not None and space not in SPACES:
        raise ValueError(f"source {name or index} declares space={space!r}; use one of {SPACES}")
    if space is None or not isinstance(name, str) or not name:
        if space == "feature":
            raise ValueError("a feature-space source must declare a name (a short string)")
        return _Declared(spec, name if isinstance(name, str) and name else f"source{index}")
    return spec


def combined_images(sources: Sequence):
    """The image sources of ``sources`` as one (the source itself when there is one), or ``None``."""
    images = [s for s in sources if s.space == "image"]
    if not images:
        return None
    return images[0] if len(images) == 1 else _Combined(images)


def generator_source(generator, dataset, *, per_class: int | np.ndarray = 256, seed: int = 0,
                     fit: bool = True, name: str | None = None) -> ArraySource:
    """Fill pools by sampling any ``generators`` Generator (fitted on ``dataset`` first if ``fit``)."""
    import torch

    if fit:
        generator.fit(dataset, generator=torch.Generator().manual_seed(seed))
    per = np.broadcast_to(np.asarray(per_class), (dataset.num_classes,))
    pools = {}
    for c in range(dataset.num_classes):
        g = torch.Generator().manual_seed(seed * 7919 + c)
        pools[c] = generator.sample(c, int(per[c]), generator=g)
    return ArraySource(pools, dataset.num_classes, name=name)


def augmentation_source(dataset, *, per_class: int = 256, seed: int = 0) -> ArraySource:
    """The default source: classic augmentations (flips, small affine moves, jitter) of real images."""
    from tailmix.generators.augment import AugmentationGenerator

    return generator_source(AugmentationGenerator(), dataset, per_class=per_class, seed=seed, name="augment")
