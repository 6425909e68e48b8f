"""Memorisation and leakage of a synthetic bank: near-copies of real train images, filtered out or reported.

A generator fitted on a few images of a tail class can return those images almost unchanged (LoRA on a
5-image class pulled a prototype's samples toward those five images). Such samples add no new information, and a copy of
an image that also sits in val or test inflates the reward or the test score. Two tools:

- :class:`NearCopyFilter` plugs into :meth:`generators.pool.GeneratorPool.fill_bank` like a
  :class:`~generators.filter.ClassifierFilter`: it rejects candidates whose nearest real train image is
  closer than a threshold (RMS pixel distance in [0, 1] units, :func:`tailmix.io.leakage.nearest_real`), passes
  the rest to an optional inner filter, and counts the rejections per class.
- :func:`bank_leakage_report` checks a filled bank after the fact: exact pixel copies of train / val / test
  images (:func:`tailmix.io.leakage.leakage_report`) and near-copies of train images, per class.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import threading

import numpy as np
import torch

from tailmix.io.leakage import leakage_report, nearest_real
from tailmix.generators.filter import FilterResult, NoFilter, SampleFn, fill_loop

SPLITS = ("train", "val", "test")
DEFAULT_MAX_TRIES = 10  # the try limit when no inner filter brings one (ClassifierFilter's default)
#: Near-copy examples kept per class in a report; the counts are always complete.
MAX_EXAMPLES = 5


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(threshold)) or not 0.0 < float(threshold) <= 1.0:
        hint = f" (pixel units? try {float(threshold) / 255:.4g})" if isinstance(threshold, (int, float)) \
            and not isinstance(threshold, bool) and 1.0 < float(threshold) <= 255.0 else ""
        raise ValueError(f"threshold must be an RMS pixel distance in (0, 1] ([0, 1] pixel units; 0.05 is about 13 "
                         f"grey levels); got {threshold!r}{hint}")
    return float(threshold)


def images_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 over the images' dtype, shape and bytes and their int64 labels (identifies a reference set)."""
    h = hashlib.sha256(f"{images.dtype.str}{images.shape}".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class NearCopyFilterResult(FilterResult):
    """A :class:`~generators.filter.FilterResult` that also says how many candidates were near-copies.

    Attributes:
        near_copies: Candidates of this fill rejected as near-copies of a real train image (they count in
            ``candidates_tried`` and not in ``accepted``).
    """

    near_copies: int = 0


class NearCopyFilter:
    """Reject candidates that are near-copies of real train images, then apply an inner filter to the rest.

    A candidate of class ``c`` is a near-copy when the RMS pixel distance (``[0, 1]`` units) to its nearest
    real image is ``< threshold``; the real images searched are those of class ``c`` (``same_class_only``) or
    all of them. Exact copies have distance 0. Kept candidates carry the inner filter's confidence (NaN
    without one, like :class:`~generators.filter.NoFilter`). Rejections are counted per class in
    :attr:`near_copy_counts` (this object's lifetime; a fill on Ray actors counts on their copies, so check
    the finished bank with :func:`bank_leakage_report`).

    Args:
        real_images: The real train images, uint8 ``(N, H, W, C)`` (never val or test: generators do not see
            them, and the filter must not make the bank depend on them).
        real_labels: Their labels, ints ``(N,)``.
        threshold: RMS distance in ``(0, 1]`` below which a candidate is a near-copy (0.05: about 13 grey
            levels of average difference).
        inner: A filter applied to the candidates that are not near-copies (e.g. a
            :class:`~generators.filter.ClassifierFilter`), or ``None`` / ``NoFilter`` to keep them all.
        same_class_only: Compare with real images of the candidate's class (default) or of every class.
        max_tries: Most batches one :meth:`fill` generates; ``None``: the inner filter's ``max_tries``, else 10.
        chunk_size: Block size of the nearest-neighbour search (bounds memory; does not change results).
    """

    name = "near_copy"

    def __init__(self, real_images: np.ndarray, real_labels: np.ndarray, *, threshold: float = 0.05, inner=None,
                 same_class_only: bool = True, max_tries: int | None = None, chunk_size: int = 1024) -> None:
        images = np.asarray(real_images)
        labels = np.asarray(real_labels)
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
            raise ValueError(f"real_images must be non-empty uint8 images (N, H, W, C), e.g. dataset.train_images; "
                             f"got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer) \
                or (labels < 0).any():
            raise ValueError(f"real_labels must be {len(images)} non-negative ints, one per real image; got "
                             f"{labels.dtype} {labels.shape}")
        self.threshold = _check_threshold(threshold)
        if isinstance(inner, NoFilter):
            inner = None  # the same behaviour, so the same bank key
        if inner is not None and not (callable(getattr(inner, "select", None))
                                      and callable(getattr(inner, "config", None))):
            raise ValueError(f"inner must be None or a filter with select(images, class_id) and config() (e.g. a "
                             f"ClassifierFilter); got {type(inner).__name__}")
        if not isinstance(same_class_only, bool):
            raise ValueError(f"same_class_only must be True or False; got {same_class_only!r}")
        if max_tries is None:
            inner_tries = getattr(inner, "max_tries", None)
            max_tries = inner_tries if isinstance(inner_tries, int) and inner_tries >= 1 else DEFAULT_MAX_TRIES
        if isinstance(max_tries, bool) or not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
            raise ValueError(f"max_tries must be a positive int (batches per fill) or None; got {max_tries!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
        # a private read-only copy: the digest in config() must keep describing what the filter compares with
        self._images = np.array(images, copy=True)
        self._images.flags.writeable = False
        self._labels = labels.astype(np.int64)
        self._labels.flags.writeable = False
        self.inner = inner
        self.same_class_only = same_class_only
        self.max_tries = int(max_tries)
        self.chunk_size = int(chunk_size)
        self._digest = images_digest(self._images, self._labels)
        self._rows = {int(c): np.flatnonzero(self._labels == c) for c in np.unique(self._labels)}
        self._lock = threading.Lock()  # the pool fills shards from one thread per device
        self._near: dict[int, int] = {}
        self._seen: dict[int, int] = {}

    @classmethod
    def from_dataset(cls, dataset, **kwargs) -> NearCopyFilter:
        """A filter against ``dataset``'s train split (keyword arguments as for the constructor)."""
        images, labels = dataset.split("train")
        return cls(images, labels, **kwargs)

    # -- pickling (Ray sends the filter to its actors; a lock does not pickle) -------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def scorer(self):
        """The inner filter's scorer (or None), so the Ray pool moves a GPU reference model like its own."""
        return getattr(self.inner, "scorer", None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self._images.shape[1:])  # type: ignore[return-value]

    # -- counting --------------------------------------------------------------------------------------
    @property
    def near_copy_counts(self) -> dict[int, int]:
        """Class id -> candidates rejected as near-copies so far (classes screened at least once)."""
        with self._lock:
            return {c: self._near.get(c, 0) for c in sorted(self._seen)}

    @property
    def screened_counts(self) -> dict[int, int]:
        """Class id -> candidates screened so far (the denominators of :attr:`near_copy_counts`)."""
        with self._lock:
            return dict(sorted(self._seen.items()))

    def reset_counts(self) -> None:
        """Forget the counts (e.g. between two fills)."""
        with self._lock:
            self._near.clear()
            self._seen.clear()

    # -- screening -------------------------------------------------------------------------------------
    def _reference(self, class_id: int) -> np.ndarray:
        """Indices of the real images a candidate of ``class_id`` is compared with."""
        if not self.same_class_only:
            return np.arange(len(self._images))
        return self._rows.get(int(class_id), np.zeros(0, np.int64))

    def nearest(self, images: np.ndarray, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Index (into the real images) of and RMS distance to each candidate's nearest reference image.

        Returns ``(indices, distances)``: int64 and float64 ``(n,)``; ``-1`` and ``inf`` when there is no
        reference image (a class without real train images under ``same_class_only``).
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != self._images.shape[1:]:
            raise ValueError(f"candidates are shaped {images.shape[1:] if images.ndim == 4 else images.shape} but "
                             f"the real images are {self.image_shape}; generate at the dataset's size")
        rows = self._reference(class_id)
        if len(images) == 0 or len(rows) == 0:
            return np.full(len(images), -1, np.int64), np.full(len(images), np.inf)
        j, dist = nearest_real(images, self._images[rows], chunk_size=self.chunk_size)
        return rows[j], dist

    def select(self, images: np.ndarray, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Which candidates of class ``class_id`` to keep.

        Returns:
            ``(keep_mask, confidences)``: bool ``(n,)``, True iff the candidate is not a near-copy and the
            inner filter keeps it; float32 ``(n,)`` inner confidence (NaN for near-copies, or without an
            inner filter).
        """
        keep, conf, _ = self._screen(images, class_id)
        return keep, conf

    def _screen(self, images: np.ndarray, class_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`select` plus the near-copy mask (counted here, so concurrent fills count correctly)."""
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or class_id < 0:
            raise ValueError(f"class_id must be a non-negative int; got {class_id!r}")
        images = np.asarray(images)
        n = len(images)
        _, dist = self.nearest(images, class_id)
        near = dist < self.threshold
        keep = ~near
        conf = np.full(n, np.nan, np.float32)
        if self.inner is not None and keep.any():
            # only the survivors are scored: near-copies never reach the (possibly expensive) classifier
            rest = np.flatnonzero(keep)
            inner_keep, inner_conf = self.inner.select(images[rest], class_id)
            inner_keep, inner_conf = np.asarray(inner_keep, bool), np.asarray(inner_conf, np.float32)
            assert inner_keep.shape == (len(rest),) and inner_conf.shape == (len(rest),)
            keep[rest] = inner_keep
            conf[rest] = inner_conf
        with self._lock:
            c = int(class_id)
            self._seen[c] = self._seen.get(c, 0) + n
            self._near[c] = self._near.get(c, 0) + int(near.sum())
        return keep, conf, near

    def fill(self, sample_fn: SampleFn, class_id: int, quota: int, *, generator: torch.Generator,
             batch_size: int = 64) -> NearCopyFilterResult:
        """Generate and screen until ``quota`` images are kept or ``max_tries`` batches were generated.

        Batches adapt to the acceptance so far exactly as in ``ClassifierFilter.fill``, so with no near-copy
        among the candidates the result equals the inner filter's own fill for the same seed.

        Args:
            sample_fn: ``sample_fn(n, generator) -> uint8 (n, H, W, C)`` candidates of ``class_id``.
            class_id: Target class.
            quota: Images to keep.
            generator: Passed to every ``sample_fn`` call (all randomness comes from it).
            batch_size: Largest batch asked of ``sample_fn``.
        """
        def screen(batch):
            keep, conf, is_near = self._screen(batch, class_id)
            return keep, conf, is_near.sum()

        images, confidences, tried, accepted, tries, near = fill_loop(
            screen, sample_fn, class_id, quota, generator=generator, batch_size=batch_size, max_tries=self.max_tries)
        return NearCopyFilterResult(images=images, confidences=confidences, candidates_tried=tried,
                                    accepted=accepted, acceptance_rate=accepted / tried if tried else math.nan,
                                    tries=tries, quota=int(quota), near_copies=int(near))

    def config(self) -> dict:
        """JSON description hashed into bank keys: threshold, reference set digest, try limit, inner filter."""
        return {"kind": "near_copy", "threshold": self.threshold, "same_class_only": self.same_class_only,
                "max_tries": self.max_tries,
                "real": {"n": int(len(self._images)), "shape": list(self.image_shape), "digest": self._digest},
                "inner": None if self.inner is None else self.inner.config()}

    def __repr__(self) -> str:
        return (f"NearCopyFilter(threshold={self.threshold}, same_class_only={self.same_class_only}, "
                f"real={len(self._images)}, inner={self.inner!r})")


# -- the report ----------------------------------------------------------------------------------------
def _plain(obj):
    """Tuples -> lists, numpy scalars -> Python, so the report survives a JSON round trip unchanged."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def bank_leakage_report(bank, dataset, *, threshold: float = 0.05, same_class_only: bool = True,
                        chunk_size: int = 1024) -> dict:
    """Per class: exact copies of train / val / test images in a bank, and near-copies of train images.

    Args:
        bank: A :class:`~generators.bank.SyntheticBank`.
        dataset: The real ``LongTailDataset`` (normally the one the bank was filled for).
        threshold: RMS pixel distance in ``(0, 1]`` below which a synthetic image is a near-copy (use the
            same value as a :class:`NearCopyFilter` to check it: a bank it filtered reports no near-copy).
        same_class_only: Search the nearest train image among the class's own (default) or all of them.
        chunk_size: Block size of the nearest-neighbour search.

    Returns:
        A JSON-serialisable dict (no NaN; ``None`` where a value does not exist):

        - ``"dataset"``, ``"bank"`` (its key), ``"dataset_matches_bank"`` (fingerprints equal),
          ``"threshold"``, ``"same_class_only"``;
        - ``"classes"``: one entry per class id, in order: ``class_id``, ``class_name``, ``n`` (synthetic
          images), ``n_real_train``, ``duplicates`` (synthetic images equal to an earlier one), ``exact``: per
          split ``copies`` (synthetic images equal to some real image of that split), ``fraction``,
          ``other_class`` (of those, copies of a real image labelled otherwise) and ``examples``
          ``[synthetic index, real index]``; ``near``: ``count`` (distance ``< threshold``, exact copies
          included), ``fraction``, ``min_distance``, ``median_distance``, ``other_class`` (nearest train image
          labelled otherwise; 0 under ``same_class_only``) and ``examples`` ``[synthetic index, train index,
          distance]``;
        - ``"totals"``: ``n``, ``exact`` per split, ``near``;
        - ``"real_splits"``: ``within`` / ``across`` of :func:`tailmix.io.leakage.leakage_report` (copies among the
          real splits themselves, which explain a synthetic "copy" of a val or test image);
        - ``"clean"``: True when no synthetic image copies or nearly copies a real one.
    """
    threshold = _check_threshold(threshold)
    if not isinstance(same_class_only, bool):
        raise ValueError(f"same_class_only must be True or False; got {same_class_only!r}")
    if bank.num_classes != dataset.num_classes or tuple(bank.image_shape) != tuple(dataset.image_shape):
        raise ValueError(f"the bank holds {bank.num_classes} classes of {tuple(bank.image_shape)} images but the "
                         f"dataset has {dataset.num_classes} classes of {tuple(dataset.image_shape)}; pass the "
                         "dataset the bank was filled for")
    synthetic = {c: bank.images(c) for c in range(bank.num_classes)}
    exact = leakage_report(dataset, synthetic=synthetic)
    train_x, train_y = dataset.split("train")
    near_filter = NearCopyFilter(train_x, train_y, threshold=threshold, same_class_only=same_class_only,
                                 chunk_size=chunk_size) if len(train_x) else None
    classes, totals = [], {"n": 0, "exact": {s: 0 for s in SPLITS}, "near": 0}
    for c in range(bank.num_classes):
        images = synthetic[c]
        n = int(len(images))
        e = exact["synthetic"][c]
        entry = {"class_id": c, "class_name": str(dataset.class_names[c]), "n": n,
                 "n_real_train": int(np.sum(train_y == c)), "duplicates": int(e["duplicates"]),
                 "exact": {s: {"copies": int(e[s]["copies"]), "fraction": e[s]["copies"] / n if n else None,
                               "other_class": int(e[s]["other_class"]), "examples": e[s]["examples"]}
                           for s in SPLITS}}
        idx, dist = (near_filter.nearest(images, c) if near_filter is not None
                     else (np.full(n, -1, np.int64), np.full(n, np.inf)))
        found = np.isfinite(dist)
        near = dist < threshold
        order = np.flatnonzero(near)[np.argsort(dist[near], kind="stable")][:MAX_EXAMPLES]  # closest first
        entry["near"] = {"count": int(near.sum()), "fraction": float(near.mean()) if n else None,
                         "min_distance": float(dist[found].min()) if found.any() else None,
                         "median_distance": float(np.median(dist[found])) if found.any() else None,
                         "other_class": int(np.sum(near & (train_y[np.maximum(idx, 0)] != c))) if n else 0,
                         "examples": [[int(i), int(idx[i]), float(dist[i])] for i in order]}
        totals["n"] += n
        totals["near"] += entry["near"]["count"]
        for s in SPLITS:
            totals["exact"][s] += entry["exact"][s]["copies"]
        classes.append(entry)
    report = {"dataset": dataset.name, "bank": bank.key,
              "dataset_matches_bank": bank.manifest.get("dataset_fingerprint") == dataset.fingerprint(),
              "threshold": threshold, "same_class_only": same_class_only, "classes": classes, "totals": totals,
              "real_splits": {"within": exact["within"], "across": exact["across"]},
              "clean": totals["near"] == 0 and not any(totals["exact"].values())}
    return _plain(report)


def format_bank_leakage(report: dict, class_names=None) -> str:
    """A short table of :func:`bank_leakage_report`'s dict, one row per class, and a verdict.

    Args:
        report: The report.
        class_names: Names to print (default: those in the report).
    """
    rows = report["classes"]
    names = [str(class_names[r["class_id"]]) if class_names is not None else r["class_name"] for r in rows]
    scope = "of the same class" if report["same_class_only"] else "of any class"
    lines = [f"Bank leakage for {report['dataset']!r} (bank {report['bank']}; near-copy: RMS distance < "
             f"{report['threshold']:g} to a train image {scope})"]
    if not report["dataset_matches_bank"]:
        lines.append("  note: the bank was filled for another dataset fingerprint than this one")
    width = max([len("class")] + [len(n) for n in names])
    header = ("synthetic", "=train", "=val", "=test", "near-copies", "min dist")
    lines.append(f"  {'class':<{width}}  " + "  ".join(f"{h:>11}" for h in header))

    def pct(k: int, n: int) -> str:
        return f"{k} ({k / n:.0%})" if n and k else str(k)

    for name, r in zip(names, rows):
        n = r["n"]
        dmin = "-" if r["near"]["min_distance"] is None else f"{r['near']['min_distance']:.3f}"
        cells = [str(n), *(pct(r["exact"][s]["copies"], n) for s in SPLITS), pct(r["near"]["count"], n), dmin]
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{v:>11}" for v in cells))
    shared = [f"{pair} {a['pairs']}" for pair, a in report["real_splits"]["across"].items() if a["pairs"]]
    if shared:
        lines.append(f"  real splits share images ({', '.join(shared)} pair(s)): a synthetic copy of a val or test "
                     "image can come from its twin in train")
    t = report["totals"]
    if report["clean"]:
        lines.append("  verdict: clean (no synthetic image copies or nearly copies a real one)")
    else:
        lines.append(f"  verdict: {t['exact']['train']} exact copies of train, {t['exact']['val']} of val, "
                     f"{t['exact']['test']} of test; {t['near']} near-copies of train out of {t['n']} synthetic "
                     "images (filter them with NearCopyFilter)")
    return "\n".join(lines)
