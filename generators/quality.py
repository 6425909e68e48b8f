"""How good is a bank? Per-class acceptance, confidence and a Frechet distance to the real images.

The Frechet distance (FID's formula) compares the mean and covariance of synthetic and real train images
in a feature space. Any ``feature_fn`` works (e.g. a trained encoder's penultimate layer); the default is
a fixed random projection of the pixels to 32 dimensions, cheap and free of downloads, which catches
gross mismatches (wrong brightness, blobs, mode collapse) but not fine semantics. Tail classes have few
real images, so covariances get a small ridge (``eps * I``) and a class with one image has zero
covariance; compare distances between banks of the same dataset, not across datasets.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tailmix.io.atomic import atomic_write_bytes

FeatureFn = Callable[[np.ndarray], np.ndarray]


def random_projection_features(image_shape: Sequence[int], dim: int = 32, seed: int = 0) -> FeatureFn:
    """A fixed, seeded Gaussian projection of pixels (scaled to ``[-1, 1]``) to ``dim`` features."""
    d_in = int(np.prod(image_shape))
    proj = np.random.default_rng(seed).standard_normal((d_in, dim)) / math.sqrt(d_in)

    def features(images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != tuple(image_shape):
            raise ValueError(f"images are {images.shape[1:]}, the projection expects {tuple(image_shape)}")
        x = images.reshape(len(images), -1).astype(np.float64) / 127.5 - 1.0
        return x @ proj

    return features


def _mean_cov(feats: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    d = feats.shape[1]
    mu = feats.mean(axis=0)
    cov = np.cov(feats, rowvar=False).reshape(d, d) if len(feats) > 1 else np.zeros((d, d))
    return mu, cov + eps * np.eye(d)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray, *, eps: float = 1e-6) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between two feature sets ``(n, D)``.

    Uses ``Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))``, a symmetric PSD form that stays
    real and stable for rank-deficient covariances (tiny classes). NaN when either set is empty.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (n, D) with the same D; got {a.shape} and {b.shape}")
    if len(a) == 0 or len(b) == 0:
        return math.nan
    mu_a, s_a = _mean_cov(a, eps)
    mu_b, s_b = _mean_cov(b, eps)
    root_a = _sqrt_psd(s_a)
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
                  - 2 * np.sqrt(np.clip(cross, 0, None)).sum())
    return max(value, 0.0)


def _class_images(source, class_id: int, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    if isinstance(source, Mapping):
        imgs = np.asarray(source.get(class_id, np.zeros((0, 1, 1, 1), np.uint8)))
        if max_samples is not None and len(imgs) > max_samples:
            imgs = imgs[np.sort(rng.choice(len(imgs), max_samples, replace=False))]
        return imgs
    n = int(source.counts()[class_id])
    if max_samples is not None and n > max_samples:
        return source.draw(class_id, max_samples, rng, replace=False)  # reads only those rows
    return source.images(class_id)


def quality_report(bank, dataset, *, feature_fn: FeatureFn | None = None, max_samples: int | None = 2048,
                   eps: float = 1e-6, seed: int = 0) -> dict[int, dict]:
    """Per-class quality of a bank against ``dataset``'s real train images.

    Args:
        bank: A :class:`~generators.bank.SyntheticBank`, or ``{class_id: uint8 images}``.
        dataset: The ``LongTailDataset`` the bank was made for.
        feature_fn: uint8 images ``(n, H, W, C)`` -> features ``(n, D)``; default: a seeded random
            projection of the pixels to 32 dimensions.
        max_samples: At most this many synthetic images per class enter the distance (a seeded subset),
            so huge banks stay cheap; ``None`` uses all.
        eps: Covariance ridge.
        seed: Seeds the subset.

    Returns:
        ``{class_id: {"n": synthetic count, "n_real": real train count, "acceptance": filter acceptance
        rate (NaN: no filter), "mean_confidence": mean filter confidence (NaN: no filter), "frechet":
        distance to the real train images (NaN: an empty side)}}``.
    """
    images, labels = dataset.split("train")
    feature_fn = feature_fn or random_projection_features(dataset.image_shape)
    rng = np.random.default_rng(seed)
    is_bank = not isinstance(bank, Mapping)
    if is_bank and tuple(bank.image_shape) != tuple(dataset.image_shape):
        raise ValueError(f"the bank holds {tuple(bank.image_shape)} images, the dataset {tuple(dataset.image_shape)}; "
                         "pass the dataset the bank was filled for")
    report = {}
    for c in range(dataset.num_classes):
        synth = _class_images(bank, c, max_samples, rng)
        real = images[labels == c]
        if is_bank:
            entry = bank.manifest["classes"][str(c)]
            n = int(entry["count"])
            acceptance = math.nan if entry["acceptance"] is None or not bank.filtered else float(entry["acceptance"])
            conf = math.nan if entry["mean_confidence"] is None else float(entry["mean_confidence"])
        else:
            n, acceptance, conf = len(synth), math.nan, math.nan
        fd = math.nan
        if len(synth) and len(real):
            fd = frechet_distance(np.asarray(feature_fn(np.ascontiguousarray(synth))),
                                  np.asarray(feature_fn(real)), eps=eps)
        report[c] = {"n": n, "n_real": int(len(real)), "acceptance": acceptance, "mean_confidence": conf,
                     "frechet": fd}
    return report


def format_quality_report(report: Mapping[int, Mapping], class_names: Sequence[str] | None = None) -> str:
    """A fixed-width text table of :func:`quality_report` (one row per class)."""

    def num(v, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    header = ("class", "real", "synthetic", "acceptance", "confidence", "frechet")
    rows = []
    for c in sorted(report):
        r = report[c]
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        rows.append((f"{c} {name}" if class_names is not None else name, str(r["n_real"]), str(r["n"]),
                     num(r["acceptance"], ".1%"), num(r["mean_confidence"], ".3f"), num(r["frechet"], ".3f")))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt_row = lambda cells: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)  # noqa: E731
                                      for i, (cell, w) in enumerate(zip(cells, widths)))
    lines = [fmt_row(header), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in rows]
    return "\n".join(lines)


def save_sample_grid(source, path: str | Path, *, per_class: int = 8, class_names: Sequence[str] | None = None,
                     seed: int = 0) -> Path:
    """Write a PNG with one row of up to ``per_class`` samples per class (atomically).

    Args:
        source: A :class:`~generators.bank.SyntheticBank` or ``{class_id: uint8 images (n, H, W, C)}``.
        path: Output ``.png`` file (its folder is created).
        per_class: Images per row (a seeded draw without replacement; fewer when the class has fewer).
        class_names: Row labels (default: the bank's class names, else the class ids).
        seed: Seeds which images are shown.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int; got {per_class!r}")
    rng = np.random.default_rng(seed)
    if isinstance(source, Mapping):
        classes = sorted(int(c) for c in source)
        rows = {c: _class_images(source, c, per_class, rng) for c in classes}
    else:
        classes = list(range(source.num_classes))
        counts = source.counts()
        rows = {c: source.draw(c, min(per_class, int(counts[c])), rng, replace=False) for c in classes}
        if class_names is None:
            class_names = source.manifest.get("class_names")
    if not classes:
        raise ValueError("nothing to draw: the source has no classes")
    fig = Figure(figsize=(per_class * 0.9 + 1.6, len(classes) * 0.9 + 0.2), dpi=100)
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for r, c in enumerate(classes):
        imgs = rows[c]
        for k in range(per_class):
            ax = axes[r][k]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if k < len(imgs):
                img = imgs[k]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          vmin=0, vmax=255, interpolation="nearest")
        label = class_names[c] if class_names is not None and c < len(class_names) else f"class {c}"
        axes[r][0].set_ylabel(f"{label}\n(n={len(imgs)})" if len(imgs) < per_class else label, rotation=0,
                              ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=1.4 / (per_class * 0.9 + 1.6), right=0.99, top=0.99, bottom=0.01, wspace=0.05,
                        hspace=0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png"))
    return path
