"""Known-answer sources: a perfect generator made of real images, and a wrapper that corrupts chosen classes.

- :func:`oracle_source`: the real images the long-tail builder left out of every split (digits-LT leaves 762 of
  scikit-learn's 1,797 digits unused) as a synthetic source. Its samples are as good as samples get, so what a
  sampler gains with it bounds what a better generator could give.
- :class:`CorruptedSource`: serves, for each corrupted class, the pool of another class (images of the wrong
  class under the corrupted class's label), everything else unchanged. With the oracle source the right
  policy is then known: synthesise the clean classes, nothing for the corrupted ones, which no ratio shared
  by all classes can express. :func:`known_answer_kwargs` is the documented task.

Both follow the duck-typed source interface of :mod:`envs.sources` (``pool``, ``quality``, ``fingerprint``,
``num_classes``) and carry ``name`` and ``space`` (``"image"``).
"""
from __future__ import annotations

import hashlib

import numpy as np

from tailmix.envs.sources import ArraySource

#: The known-answer task's corruption on digits-LT: class 4 is served 9s and class 6 is served 5s. Chosen among
#: a few mappings for >= 3 points of headroom on val and test
#: (benchmarks/can-learned-samplers-find-a-known-answer/known-answer.md lists them).
KNOWN_ANSWER_CORRUPTION = {4: 9, 6: 5}


class OracleSource(ArraySource):
    """Real images that are in no split of the dataset, as per-class pools (see :func:`oracle_source`)."""

    space = "image"

    def __init__(self, pools, num_classes: int, quality=None, name: str | None = "oracle") -> None:
        super().__init__(pools, num_classes, quality, name=name)


def oracle_source(dataset) -> OracleSource:
    """The real images ``dataset`` left out of every split, as a source (a perfect generator).

    Images whose pixels equal an image of any split (train, val or test) are dropped, so the pools can never
    serve a copy of a val or test image. A class with no leftovers gets an empty pool (the env's ``empty_pool``
    setting decides what asking for it does).

    Args:
        dataset: A :class:`envs.datasets.LongTailDataset` built by the long-tail builder (``make_long_tail``,
            ``load_digits_lt``), which records the images it dropped.

    Raises:
        ValueError: when the dataset left no image out.
    """
    from tailmix.io.leakage import pixel_hashes

    images, labels = dataset.leftover()
    if not len(labels):
        raise ValueError(f"dataset {dataset.name!r} left no real image out of its splits, so there is no oracle "
                         "source; build it with envs.longtail.make_long_tail (which keeps the train images it drops, "
                         "e.g. make_long_tail(ds, imbalance_ratio=...)) or use the digits-LT dataset ('digits')")
    used = np.concatenate([pixel_hashes(dataset.split(s)[0]) for s in ("train", "val", "test")])
    fresh = ~np.isin(pixel_hashes(images), used)
    pools = {c: images[fresh & (labels == c)] for c in range(dataset.num_classes)}
    return OracleSource(pools, dataset.num_classes)


class CorruptedSource:
    """``source`` with the pools of some classes replaced by the pools of others.

    Args:
        source: Any source (``pool``, ``quality``, ``fingerprint``, ``num_classes``).
        corruption: ``{corrupted class: class whose images it is served}``, e.g. ``{5: 3, 7: 1}``: a step that asks
            for class 5's synthetic samples gets images of 3s labelled 5. The quality shown in the observation
            stays the corrupted class's own (the corruption is invisible there; only the reward reveals it).

    Raises:
        ValueError: for a mapping that is empty, names a class outside ``0..C-1``, or maps a class to itself.
    """

    space = "image"

    def __init__(self, source, corruption: dict[int, int]) -> None:
        c = int(source.num_classes)
        if not isinstance(corruption, dict) or not corruption:
            raise ValueError(f"corruption must be a non-empty dict {{corrupted class: served class}}, e.g. {{5: 3}}; "
                             f"got {corruption!r}")
        mapping = {}
        for bad, served in corruption.items():
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < c
                       for v in (bad, served)):
                raise ValueError(f"corruption {bad!r}: {served!r} must map class ids in 0..{c - 1}")
            if bad == served:
                raise ValueError(f"corruption maps class {bad} to itself; name another class whose images it gets")
            mapping[int(bad)] = int(served)
        self.source, self.corruption = source, mapping
        self.num_classes = c
        self.name = f"{getattr(source, 'name', 'source')}+corrupt"

    def pool(self, class_id: int) -> np.ndarray:
        return self.source.pool(self.corruption.get(class_id, class_id))

    def quality(self, class_id: int) -> float:
        return self.source.quality(class_id)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.source.fingerprint().encode())
        h.update(repr(sorted(self.corruption.items())).encode())
        return h.hexdigest()


def oracle_policy_ratios(train_counts, corrupted, max_ratio: float) -> np.ndarray:
    """The known answer: fill every clean class to the head count (clipped to ``max_ratio``), 0 for ``corrupted``."""
    counts = np.maximum(np.asarray(train_counts, np.float64), 1.0)
    ratios = np.clip(counts.max() / counts - 1.0, 0.0, float(max_ratio))
    ratios[list(corrupted)] = 0.0
    return ratios


def known_answer_kwargs(*, cache_dir: str | None = None, corruption: dict[int, int] | None = None, **overrides) -> dict:
    """The known-answer task: env keyword arguments for digits-LT with the corrupted oracle source.

    digits-LT (``load_digits_lt()``: train 100 ... 5 images per class, val 30 and test 40 per class), the oracle
    source (its 762 left-out real digits) with :data:`KNOWN_ANSWER_CORRUPTION`, feature mode with the default
    cross-fitted encoder and linear head, 10 steps per episode, ``max_ratio`` 8, ``empty_pool="zero"``. The right
    answer is known: :func:`oracle_policy_ratios` (fill the clean classes to the head count, nothing for the
    corrupted ones), which no ratio shared by all classes reaches.

    Example::

        from tailmix.envs.oracle import known_answer_kwargs
        from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
        env = SyntheticRatioEnv(**known_answer_kwargs())

    Args:
        cache_dir: Encoder cache (``None``: memory only).
        corruption: Another ``{corrupted: served}`` mapping (default :data:`KNOWN_ANSWER_CORRUPTION`).
        **overrides: Any other env setting (``credit``, ``reward_reference``, ``lr_schedule``, ...).
    """
    from tailmix.envs.datasets import load_digits_lt

    dataset = load_digits_lt()
    source = CorruptedSource(oracle_source(dataset), dict(KNOWN_ANSWER_CORRUPTION if corruption is None else corruption))
    kw = dict(dataset=dataset, source=source, max_steps=10, max_ratio=8.0, empty_pool="zero", cache_dir=cache_dir)
    kw.update(overrides)
    return kw
