"""Leakage checks: the same pixels in two splits, duplicates inside a split, synthetic copies of real images.

A reward measured on val images that also sit in train (or a test score on images the generator memorised)
overstates what a policy achieves. These checks find exact copies by hashing pixels and near copies by
nearest-neighbour distance; they report what they find and never fail on it, because public datasets do
contain duplicates (BreastMNIST has one image in both train and test, with different labels).
"""
from __future__ import annotations

import hashlib
from itertools import combinations

import numpy as np

from tailmix.io.dataset import SPLITS, LongTailDataset  # noqa: F401 (SPLITS: what the reports iterate)

#: Example index pairs kept per finding; the counts are always complete.
MAX_EXAMPLES = 5


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """One 64-bit BLAKE2b hash per image of its pixels, dtype and shape.

    Args:
        images: Array ``(N, ...)``; each ``images[i]`` is hashed on its own.

    Returns:
        uint64 array ``(N,)``; equal images give equal hashes (collisions of distinct images: ~N^2 / 2^64).
    """
    x = np.asarray(images)
    if x.ndim < 1:
        raise ValueError("images must be an array shaped (N, ...); got a scalar")
    header = f"{x.dtype.str}{x.shape[1:]}".encode()  # the same bytes in another shape are another image
    out = np.empty(len(x), np.uint64)
    for i in range(len(x)):
        h = hashlib.blake2b(header, digest_size=8)
        h.update(np.ascontiguousarray(x[i]).tobytes())
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def _index(hashes: np.ndarray) -> dict[int, np.ndarray]:
    """Hash -> sorted indices of the images with that hash."""
    if len(hashes) == 0:
        return {}
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
    ends = np.r_[starts[1:], len(sorted_h)]
    return {int(sorted_h[s]): np.sort(order[s:e]) for s, e in zip(starts, ends)}


def _within(hashes: np.ndarray, labels: np.ndarray) -> dict:
    groups = {h: idx for h, idx in _index(hashes).items() if len(idx) > 1}
    examples, conflicts = [], 0
    for idx in sorted(groups.values(), key=lambda g: int(g[0])):
        conflicts += int(len(np.unique(labels[idx])) > 1)
        for j in idx[1:]:
            if len(examples) < MAX_EXAMPLES:
                examples.append((int(idx[0]), int(j)))
    return {"groups": len(groups), "extra_copies": int(sum(len(g) - 1 for g in groups.values())),
            "label_conflicts": conflicts, "examples": examples}


def _across(h_a: np.ndarray, y_a: np.ndarray | None, index_b: dict[int, np.ndarray], y_b: np.ndarray) -> dict:
    """Pairs (i in A, j in B) with equal pixels; label mismatches when A has labels."""
    pairs, mismatched, a_hit, b_hit, examples = 0, 0, 0, set(), []
    for i, h in enumerate(h_a):
        js = index_b.get(int(h))
        if js is None:
            continue
        a_hit += 1
        b_hit.update(int(j) for j in js)
        pairs += len(js)
        if y_a is not None:
            mismatched += int(np.sum(y_b[js] != y_a[i]))
        for j in js:
            if len(examples) < MAX_EXAMPLES:
                examples.append((int(i), int(j)))
    out = {"pairs": int(pairs), "images_first": int(a_hit), "images_second": len(b_hit), "examples": examples}
    if y_a is not None:
        out["label_mismatches"] = int(mismatched)
    return out


def leakage_report(dataset: LongTailDataset, synthetic: dict[int, np.ndarray] | None = None) -> dict:
    """Exact pixel copies between and within splits, and between synthetic and real images.

    Args:
        dataset: The real dataset.
        synthetic: Optional class id -> uint8 images ``(N, H, W, C)`` generated for that class.

    Returns:
        A JSON-friendly dict:

        - ``"within"``: per split, ``groups`` of identical images, ``extra_copies`` (images beyond the first of
          each group), ``label_conflicts`` (groups whose labels differ) and ``examples`` (index pairs).
        - ``"across"``: per split pair ``"train/val"``, ``"train/test"``, ``"val/test"``: ``pairs`` of equal
          images, ``images_first`` / ``images_second`` involved, ``label_mismatches``, ``examples`` ``(i, j)``.
        - ``"synthetic"``: per class id, ``n`` images, ``duplicates`` among them, and per real split
          ``copies`` (synthetic images equal to some real image of that split), ``other_class`` (of those, how
          many copy a real image of another class) and ``examples`` ``(synthetic index, real index)``;
          None when no synthetic images are given.
        - ``"clean"``: True when nothing at all was found.
    """
    if not (callable(getattr(dataset, "split", None)) and hasattr(dataset, "name")):
        raise ValueError(f"leakage_report needs a LongTailDataset; got {type(dataset).__name__}")
    hashes = {s: pixel_hashes(dataset.split(s)[0]) for s in SPLITS}
    labels = {s: dataset.split(s)[1] for s in SPLITS}
    index = {s: _index(hashes[s]) for s in SPLITS}
    report: dict = {"dataset": dataset.name, "sizes": {s: int(len(labels[s])) for s in SPLITS}}
    report["within"] = {s: _within(hashes[s], labels[s]) for s in SPLITS}
    report["across"] = {f"{a}/{b}": _across(hashes[a], labels[a], index[b], labels[b])
                        for a, b in combinations(SPLITS, 2)}
    found = any(w["groups"] for w in report["within"].values()) or any(a["pairs"] for a in report["across"].values())
    report["synthetic"] = None
    if synthetic is not None:
        report["synthetic"] = {}
        for c, images in sorted(synthetic.items()):
            c = int(c)
            images = np.asarray(images)
            if len(images) and images.shape[1:] != dataset.image_shape:
                raise ValueError(f"synthetic images of class {c} are {images.shape[1:]} but the dataset's are "
                                 f"{dataset.image_shape}; generate them at the dataset's size")
            if len(images) and images.dtype != np.uint8:
                raise ValueError(f"synthetic images of class {c} are {images.dtype}; pass uint8 images like the "
                                 "real ones (classifiers.data.tensor_to_images converts tensors)")
            h = pixel_hashes(images)
            entry = {"n": int(len(images)), "duplicates": _within(h, np.zeros(len(h), np.int64))["extra_copies"]}
            for s in SPLITS:
                hit = _across(h, None, index[s], labels[s])
                other = sum(int(np.any(labels[s][index[s][int(x)]] != c)) for x in h if int(x) in index[s])
                entry[s] = {"copies": hit["images_first"], "other_class": int(other), "examples": hit["examples"]}
                found = found or hit["pairs"] > 0
            found = found or entry["duplicates"] > 0
            report["synthetic"][c] = entry
    report["clean"] = not found
    return report


def format_leakage_report(report: dict) -> str:
    """A short human-readable summary of :func:`leakage_report`'s dict."""
    sizes = report.get("sizes", {})
    lines = [f"Leakage report for {report.get('dataset', '?')!r} "
             f"(train {sizes.get('train', '?')}, val {sizes.get('val', '?')}, test {sizes.get('test', '?')})"]
    for split, w in report["within"].items():
        if w["groups"]:
            lines.append(f"  {split}: {w['extra_copies']} duplicate image(s) in {w['groups']} group(s), "
                         f"{w['label_conflicts']} group(s) with conflicting labels; e.g. {w['examples']}")
        else:
            lines.append(f"  {split}: no duplicates")
    for pair, a in report["across"].items():
        if a["pairs"]:
            first, second = pair.split("/")
            lines.append(f"  {pair}: {a['pairs']} identical pair(s) ({a['images_first']} {first} image(s), "
                         f"{a['images_second']} {second} image(s)), {a.get('label_mismatches', 0)} with different "
                         f"labels; e.g. ({first} index, {second} index) {a['examples']}")
        else:
            lines.append(f"  {pair}: no shared images")
    if report.get("synthetic") is not None:
        for c, e in report["synthetic"].items():
            copies = ", ".join(f"{e[s]['copies']} of {s}" + (f" ({e[s]['other_class']} of another class)"
                                                               if e[s]["other_class"] else "") for s in SPLITS)
            lines.append(f"  synthetic class {c}: {e['n']} image(s), {e['duplicates']} internal duplicate(s), "
                         f"exact copies: {copies}")
    lines.append("  verdict: clean" if report["clean"] else "  verdict: copies found (see above)")
    return "\n".join(lines)


def _flat01(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    x = np.asarray(images)
    scale = 255.0 if x.dtype == np.uint8 else 1.0  # uint8 pixels -> [0, 1]; floats are taken as [0, 1] already
    return x.reshape(len(x), -1).astype(dtype) / dtype(scale)


def nearest_real(synthetic: np.ndarray, real: np.ndarray, *, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index of and root-mean-square pixel distance (in [0, 1] units) to each synthetic image's nearest real one.

    Blocks of ``chunk_size`` synthetic by ``chunk_size`` real images are compared at a time, so memory stays
    bounded (a few ``chunk_size**2`` floats plus two blocks of pixels) whatever the set sizes.

    Args:
        synthetic: ``(N, H, W, C)`` uint8 images (or floats in [0, 1]).
        real: ``(M, H, W, C)`` images of the same shape, M >= 1.
        chunk_size: Block size of the search.

    Returns:
        ``(indices, distances)``: int64 ``(N,)`` and float64 ``(N,)``.
    """
    synthetic, real = np.asarray(synthetic), np.asarray(real)
    if len(real) == 0:
        raise ValueError("real holds no images; nearest neighbours need at least one real image")
    if synthetic.shape[1:] != real.shape[1:]:
        raise ValueError(f"synthetic images are {synthetic.shape[1:]} but real ones are {real.shape[1:]}; compare "
                         "images of one shape")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    n = len(synthetic)
    best_d2 = np.full(n, np.inf)
    best_j = np.zeros(n, np.int64)
    for s0 in range(0, n, chunk_size):
        s = _flat01(synthetic[s0:s0 + chunk_size])
        s2 = np.einsum("ij,ij->i", s, s, dtype=np.float64)
        for r0 in range(0, len(real), chunk_size):
            r = _flat01(real[r0:r0 + chunk_size])
            r2 = np.einsum("ij,ij->i", r, r, dtype=np.float64)
            # ||s - r||^2 expanded: one matrix product instead of a (chunk, chunk, D) difference tensor.
            d2 = s2[:, None] + r2[None, :] - 2.0 * (s @ r.T).astype(np.float64)
            j = np.argmin(d2, axis=1)
            d = d2[np.arange(len(j)), j]
            better = d < best_d2[s0:s0 + len(j)]
            best_d2[s0:s0 + len(j)][better] = d[better]
            best_j[s0:s0 + len(j)][better] = j[better] + r0
    # The expansion loses precision for near-identical images; recompute the chosen pairs exactly.
    dist = np.empty(n)
    for s0 in range(0, n, chunk_size):
        diff = (_flat01(synthetic[s0:s0 + chunk_size], np.float64)
                - _flat01(real[best_j[s0:s0 + chunk_size]], np.float64))
        dist[s0:s0 + chunk_size] = np.sqrt(np.mean(diff * diff, axis=1))
    return best_j, dist


def near_copies(synthetic: np.ndarray, real: np.ndarray, threshold: float = 0.05, *,
                chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Flag synthetic images that are (near) copies of a real image: a sign of a memorising generator.

    Args:
        synthetic: ``(N, H, W, C)`` uint8 images (or floats in [0, 1]).
        real: ``(M, H, W, C)`` real images of the same shape.
        threshold: RMS pixel distance in [0, 1] units below which an image counts as a copy (0.05 is about
            13 grey levels of average difference).
        chunk_size: Block size of the nearest-neighbour search (bounds memory).

    Returns:
        ``(mask, distances)``: bool ``(N,)`` with ``distance < threshold``, and each image's RMS distance to
        its nearest real image.
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be a distance >= 0 in [0, 1] pixel units; got {threshold!r}")
    _, dist = nearest_real(synthetic, real, chunk_size=chunk_size)
    return dist < threshold, dist
