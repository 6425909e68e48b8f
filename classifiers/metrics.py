"""Classification metrics from confusion matrices, in numpy: the one home of every metric tailmix reports.

The env's observations and rewards (val split, :func:`batched_confusion` and :func:`metrics_from_confusion`,
vectorised over K heads) and the benchmark tables (test split, :func:`classification_report`) are computed
here, with one definition of each metric:

- per-class precision, recall, F1: 0 where undefined (sklearn's ``zero_division=0``);
- balanced accuracy: mean recall over the classes present in ``y_true`` (as sklearn);
- macro-F1: mean F1 over the classes that occur in ``y_true`` or ``y_pred`` (sklearn's
  ``f1_score(average="macro")`` without ``labels``). A class absent from both has no defined F1 and is left
  out, rather than counted as 0: a val or test split that happens to miss a class is not penalised for it.

The env computes these every step; sklearn's versions cost ~10 ms a call against ~0.04 ms for a
``np.bincount`` confusion matrix, so nothing here imports sklearn. The tests check the numbers against sklearn.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts; row = true class, column = predicted class.

    Raises:
        ValueError: lengths differ, or a label is outside ``[0, num_classes)``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got shapes {y_true.shape} and "
                         f"{y_pred.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.array_equal(y, np.round(y))):
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y_true.size:
        lo = min(y_true.min(), y_pred.min())
        hi = max(y_true.max(), y_pred.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), found values in [{lo}, {hi}]; check "
                             "num_classes or the label encoding")
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_metrics(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class ``(precision, recall, f1)``, float64, 0 where undefined (sklearn's ``zero_division=0``)."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    precision = _div(tp, cm.sum(axis=0))
    recall = _div(tp, cm.sum(axis=1))
    f1 = _div(2.0 * precision * recall, precision + recall)
    return precision, recall, f1


def _balanced_accuracy(recall: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Balanced accuracy of K matrices from their recall and support ``(K, C)``: the one implementation behind
    :func:`balanced_accuracy` and :func:`metrics_from_confusion`, so val and test agree to the bit."""
    return recall.sum(-1) / np.maximum((support > 0).sum(-1), 1)  # absent classes have recall 0: they add 0


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (as sklearn); nan for an empty matrix."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    if not (support > 0).any():
        return float("nan")
    return float(_balanced_accuracy(per_class_metrics(cm)[1][None], support[None])[0])


def _macro_f1(f1: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of K matrices: the mean of ``f1`` ``(K, C)`` over the classes that occur in the true or
    predicted labels of ``cm`` ``(K, C, C)``; nan where none does.

    The one implementation behind :func:`macro_f1` and :func:`metrics_from_confusion`, so val and test scores
    of the same predictions agree to the bit. A matrix where every class occurs (the usual case) is one
    vectorised mean; only the others are averaged one by one.
    """
    seen = (cm.sum(axis=-2) + cm.sum(axis=-1)) > 0
    out = f1.mean(axis=-1)
    for k in np.flatnonzero(~seen.all(axis=-1)):
        out[k] = f1[k][seen[k]].mean() if seen[k].any() else np.nan
    return out


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur in ``y_true`` or ``y_pred``.

    This matches sklearn's ``f1_score(average="macro")`` without ``labels``; classes absent from both have
    no defined F1 and are skipped. Nan for an empty matrix.
    """
    cm = np.asarray(cm)
    return float(_macro_f1(per_class_metrics(cm)[2][None], cm[None])[0])


def batched_confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``y_true`` ``(M,)``, ``y_pred`` ``(K, M)`` -> confusion matrices ``(K, C, C)`` (rows = true)."""
    k = y_pred.shape[0]
    flat = (np.arange(k)[:, None] * num_classes + y_true[None, :]) * num_classes + y_pred
    return np.bincount(flat.ravel(), minlength=k * num_classes * num_classes).reshape(k, num_classes, num_classes)


def masked_confusion(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Like :func:`batched_confusion`, but copy ``k`` counts only the rows where ``mask[k]`` (``(K, M)`` bool) is
    set: each copy scored on its own held-out rows (``val_folds``), all in one bincount."""
    k = y_pred.shape[0]
    flat = (np.arange(k)[:, None] * num_classes + y_true[None, :]) * num_classes + y_pred
    return np.bincount(flat[mask], minlength=k * num_classes * num_classes).reshape(k, num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class recall/precision/F1, balanced accuracy and macro-F1 from confusion matrices ``(K, C, C)``.

    Vectorised over ``K`` because the env calls it every step (sklearn costs ~10 ms, this ~20 us). The
    definitions are the module's (those of :func:`classification_report`).
    """
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(2)
    predicted = cm.sum(1)
    recall = tp / np.maximum(support, 1)  # tp is 0 wherever support or predicted is 0: those metrics are 0
    precision = tp / np.maximum(predicted, 1)
    both = precision + recall
    f1 = 2 * precision * recall / np.where(both > 0, both, 1)
    return {"recall": recall, "precision": precision, "f1": f1,
            "balanced_accuracy": _balanced_accuracy(recall, support), "macro_f1": _macro_f1(f1, cm)}


def shot_groups(train_counts, thresholds: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Split classes into many-, medium- and few-shot groups by training count.

    Args:
        train_counts: ``(C,)`` training samples per class.
        thresholds: ``(hi, lo)``, e.g. the standard ``(100, 20)``: many ``> hi``, few ``< lo``, medium
            otherwise. ``None``: rank classes by count (descending, ties by class index); the head and tail
            ``round(C / 3)`` classes (at least one each when ``C >= 2``) are many and few, the rest medium.

    Returns:
        ``{"many", "medium", "few"}`` -> sorted int64 class indices (possibly empty).
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"train_counts must be a non-empty 1-D array, got shape {counts.shape}")
    if thresholds is not None:
        hi, lo = thresholds
        if lo > hi:
            raise ValueError(f"thresholds are (hi, lo) with hi >= lo, e.g. (100, 20); got {thresholds}")
        many = np.flatnonzero(counts > hi)
        few = np.flatnonzero(counts < lo)
        medium = np.flatnonzero((counts >= lo) & (counts <= hi))
        return {"many": many, "medium": medium, "few": few}
    c = counts.size
    k = max(1, int(round(c / 3))) if c >= 2 else 0
    order = np.argsort(-counts, kind="stable")
    return {"many": np.sort(order[:k]), "medium": np.sort(order[k:c - k]), "few": np.sort(order[c - k:])}


def classification_report(y_true, y_pred, num_classes: int, train_counts=None,
                          thresholds: tuple[int, int] | None = None) -> dict:
    """All metrics of one prediction, as plain Python types (JSON-ready).

    Args:
        y_true, y_pred: ``(N,)`` integer labels.
        num_classes: ``C``.
        train_counts: ``(C,)`` training counts, for the shot groups; without it they are nan.
        thresholds: See :func:`shot_groups`.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``precision``/``recall``/``f1``/``support``
        (per-class lists), ``many_shot``/``medium_shot``/``few_shot`` (mean recall over the group's classes
        present in ``y_true``; nan when there are none) and ``confusion_matrix`` (nested lists).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1 = per_class_metrics(cm)
    support = cm.sum(axis=1)
    total = int(support.sum())
    report = {
        "accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
    }
    if train_counts is not None and len(train_counts) != num_classes:
        raise ValueError(f"train_counts has {len(train_counts)} entries but num_classes is {num_classes}")
    groups = shot_groups(train_counts, thresholds) if train_counts is not None else None
    for key in ("many", "medium", "few"):
        value = float("nan")
        if groups is not None:
            idx = groups[key][support[groups[key]] > 0]
            if idx.size:
                value = float(recall[idx].mean())
        report[f"{key}_shot"] = value
    report["confusion_matrix"] = cm.tolist()
    return report
