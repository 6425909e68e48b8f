"""Long-tail classification losses, all ``forward(logits, targets) -> scalar``.

Every loss takes the training class counts (``ce`` ignores them) and has ``set_epoch(epoch,
total_epochs)`` so the training loop can call it blindly; only LDAM-DRW uses it. Losses are computed in
float32 even when the logits come out of autocast.

References:
    Cui et al. 2019, Class-Balanced Loss Based on Effective Number of Samples.
    Lin et al. 2017, Focal Loss for Dense Object Detection.
    Cao et al. 2019, Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss (LDAM-DRW).
    Menon et al. 2021, Long-Tail Learning via Logit Adjustment.
    Ren et al. 2020, Balanced Meta-Softmax for Long-Tailed Visual Recognition.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "class_balanced", "focal", "ldam_drw", "logit_adjustment", "balanced_softmax")


def _as_counts(class_counts, name: str) -> np.ndarray:
    counts = np.asarray(class_counts.detach().cpu() if torch.is_tensor(class_counts) else class_counts,
                        dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"{name}: class_counts must be a 1-D array with one count per class (>= 2 classes), "
                         f"got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"{name}: class_counts must be finite and non-negative, got {counts.tolist()}")
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"{name}: classes {missing} have a count of 0, and this loss divides by or takes the "
                         "log of counts; pass counts >= 1 (e.g. np.maximum(counts, 1)) or use loss='ce'")
    return counts


def class_balanced_weights(class_counts, beta: float = 0.9999) -> torch.Tensor:
    """Cui et al. 2019 weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to ``C``."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = _as_counts(class_counts, "class_balanced_weights")
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    w = w * len(counts) / w.sum()
    return torch.as_tensor(w, dtype=torch.float32)


def _log_prior(counts: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def _check_logits(logits: torch.Tensor, num_classes: int, name: str) -> None:
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"{name}: expected logits shaped (N, {num_classes}) to match class_counts, "
                         f"got {tuple(logits.shape)}")


class LongTailLoss(nn.Module):
    """Base: stores the counts, has a no-op :meth:`set_epoch`."""

    name = "base"

    def __init__(self, class_counts=None) -> None:
        super().__init__()
        self.num_classes = None if class_counts is None else len(np.asarray(class_counts))

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the training loop at the start of each epoch (0-based). No-op unless overridden."""

    def _check(self, logits: torch.Tensor) -> None:
        if self.num_classes is not None:
            _check_logits(logits, self.num_classes, self.name)


class CrossEntropy(LongTailLoss):
    """Plain softmax cross-entropy; ``class_counts`` (optional) only fixes the expected logit width."""

    name = "ce"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits.float(), targets)


def _focal_terms(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample softmax focal loss ``-(1 - p_y)^gamma log p_y`` (``gamma = 0``: cross-entropy)."""
    logp = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    if gamma == 0:
        return -logp
    return -((1.0 - logp.exp()).clamp_min(0.0) ** gamma) * logp


class FocalLoss(LongTailLoss):
    """Softmax focal loss (Lin et al. 2017), mean over the batch.

    Args:
        class_counts: Optional; only fixes the expected logit width.
        gamma: Focusing parameter; 0 gives cross-entropy.
    """

    name = "focal"

    def __init__(self, class_counts=None, gamma: float = 2.0) -> None:
        super().__init__(class_counts)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return _focal_terms(logits, targets, self.gamma).mean()


class ClassBalancedLoss(LongTailLoss):
    """Class-balanced loss (Cui et al. 2019): per-sample weight ``w_y`` by effective number of samples.

    The loss is ``mean_i w_{y_i} * l_i`` (divided by the batch size, as in the authors' code), with the
    weights normalised to sum to ``C``; equal counts give weights of 1, i.e. the base loss.

    Args:
        class_counts: Training samples per class (all >= 1).
        beta: Effective-number parameter in ``[0, 1)``.
        base: ``"softmax"`` (cross-entropy) or ``"focal"``.
        gamma: Focal ``gamma`` when ``base="focal"``.
    """

    name = "class_balanced"

    def __init__(self, class_counts, beta: float = 0.9999, base: str = "softmax", gamma: float = 2.0) -> None:
        super().__init__(class_counts)
        if base not in ("softmax", "focal"):
            raise ValueError(f"class_balanced base must be 'softmax' or 'focal', got {base!r}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.base, self.gamma = base, float(gamma) if base == "focal" else 0.0
        self.register_buffer("weight", class_balanced_weights(class_counts, beta))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return (self.weight[targets] * _focal_terms(logits, targets, self.gamma)).mean()


class LDAMDRWLoss(LongTailLoss):
    """LDAM loss with deferred re-weighting (Cao et al. 2019).

    The target logit is lowered by a class margin ``m_c ∝ n_c^{-1/4}`` (the largest margin is ``max_m``)
    and all logits are scaled by ``s``. From epoch ``drw_start * total_epochs`` onward (as told by
    :meth:`set_epoch`), samples are weighted by the class-balanced weights (``beta``), averaged with
    the weights as denominator like the authors' ``F.cross_entropy(weight=...)``.

    The paper pairs ``s = 30`` with normalised (cosine) logits; on the plain linear ``fc`` of our
    backbones ``s`` scales raw logits, so a smaller ``s`` or learning rate may train more smoothly.

    Args:
        class_counts: Training samples per class (all >= 1).
        max_m: Largest margin.
        s: Logit scale.
        drw_start: Fraction of the epochs after which re-weighting starts (1.0 or more: never).
        beta: Class-balanced ``beta`` of the deferred weights.
    """

    name = "ldam_drw"

    def __init__(self, class_counts, max_m: float = 0.5, s: float = 30.0, drw_start: float = 0.8,
                 beta: float = 0.9999) -> None:
        super().__init__(class_counts)
        counts = _as_counts(class_counts, self.name)
        if max_m < 0 or s <= 0:
            raise ValueError(f"ldam_drw needs max_m >= 0 and s > 0, got max_m={max_m}, s={s}")
        margins = counts ** -0.25
        margins = margins * (max_m / margins.max())
        self.s, self.drw_start = float(s), float(drw_start)
        self.register_buffer("margins", torch.as_tensor(margins, dtype=torch.float32))
        self.register_buffer("drw_weight", class_balanced_weights(counts, beta))
        self.reweighting = False

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Switch the class-balanced weights on once ``epoch >= drw_start * total_epochs``."""
        self.reweighting = epoch >= self.drw_start * total_epochs

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        logits = logits.float()
        shifted = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * self.margins[targets][:, None]
        weight = self.drw_weight if self.reweighting else None
        return F.cross_entropy(self.s * shifted, targets, weight=weight)


class LogitAdjustedLoss(LongTailLoss):
    """Logit-adjusted softmax cross-entropy (Menon et al. 2021): CE on ``logits + tau * log(prior)``.

    Args:
        class_counts: Training samples per class (all >= 1); the prior is ``counts / counts.sum()``.
        tau: Temperature; 0 gives cross-entropy.
    """

    name = "logit_adjustment"

    def __init__(self, class_counts, tau: float = 1.0) -> None:
        super().__init__(class_counts)
        self.tau = float(tau)
        self.register_buffer("offset", self.tau * _log_prior(_as_counts(class_counts, self.name)))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits.float() + self.offset, targets)


class BalancedSoftmaxLoss(LongTailLoss):
    """Balanced softmax (Ren et al. 2020): CE on ``logits + log(counts)``; uniform counts give CE."""

    name = "balanced_softmax"

    def __init__(self, class_counts) -> None:
        super().__init__(class_counts)
        counts = _as_counts(class_counts, self.name)
        self.register_buffer("offset", torch.as_tensor(np.log(counts), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits.float() + self.offset, targets)


_REGISTRY = {"ce": CrossEntropy, "class_balanced": ClassBalancedLoss, "focal": FocalLoss,
             "ldam_drw": LDAMDRWLoss, "logit_adjustment": LogitAdjustedLoss,
             "balanced_softmax": BalancedSoftmaxLoss}


def make_loss(name: str, class_counts=None, **kwargs) -> LongTailLoss:
    """Build a loss by name.

    Args:
        name: One of :data:`LOSSES`.
        class_counts: Training samples per class, ``(C,)``. Required (all >= 1) by ``class_balanced``,
            ``ldam_drw``, ``logit_adjustment`` and ``balanced_softmax``; optional for ``ce`` and ``focal``
            (where it only checks the logit width).
        **kwargs: The loss's own options (``beta``, ``base``, ``gamma``, ``max_m``, ``s``, ``drw_start``,
            ``tau``).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    if class_counts is None and name not in ("ce", "focal"):
        raise ValueError(f"loss {name!r} needs class_counts (training samples per class)")
    if class_counts is not None:
        np_counts = np.asarray(class_counts.detach().cpu() if torch.is_tensor(class_counts) else class_counts)
        if np_counts.ndim != 1 or np_counts.size < 2:
            raise ValueError(f"class_counts must be 1-D with one count per class (>= 2 classes), "
                             f"got shape {np_counts.shape}")
        class_counts = np_counts
    try:
        return _REGISTRY[name](class_counts, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad keyword arguments for loss {name!r}: {exc}") from None


def posthoc_logit_adjustment(logits, class_counts, tau: float = 1.0):
    """Post-hoc logit adjustment (Menon et al. 2021): ``logits - tau * log(prior)``.

    Args:
        logits: ``(N, C)`` torch tensor or numpy array (returned as the same kind).
        class_counts: Training samples per class (all >= 1).
        tau: Temperature; 0 leaves the logits unchanged.
    """
    log_prior = np.log(_as_counts(class_counts, "posthoc_logit_adjustment"))
    log_prior -= np.log(np.exp(log_prior).sum())
    if logits.shape[-1] != len(log_prior):
        raise ValueError(f"logits have {logits.shape[-1]} classes but class_counts has {len(log_prior)}")
    if torch.is_tensor(logits):
        return logits - tau * torch.as_tensor(log_prior, dtype=logits.dtype, device=logits.device)
    logits = np.asarray(logits)
    return (logits - tau * log_prior).astype(logits.dtype if logits.dtype.kind == "f" else np.float64,
                                             copy=False)
