"""LMD-style virtual features: a Gaussian per class in an encoder's feature space.

Each class gets the mean and covariance of its real features. A tail class with a handful of samples
cannot estimate a covariance, so it borrows one: its scatter is pooled with ``prior_samples``
pseudo-observations of the shared within-class covariance (a normal-inverse-Wishart style posterior
mean), which reduces to the pooled covariance for a 1-sample class and to the class's own for a large
one. ``eps * I`` keeps every covariance positive definite. It works on features, not pixels: ``sample``
raises, ``sample_features`` draws.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailmix.generators.base import Generator, check_torch_generator, randn, read_config, write_config

STATS_FILE = "gaussian.npz"


class GaussianFeatureGenerator(Generator):
    """Per-class Gaussians over feature vectors, with covariance borrowing for rare classes.

    Args:
        eps: Added to every covariance's diagonal (numerical floor).
        prior_samples: Weight, in pseudo-samples, of the pooled within-class covariance in each class's
            covariance: ``(S_c + k * pooled) / (n_c - 1 + k)`` with ``S_c`` the class scatter matrix.
            ``0`` uses each class's own covariance (then a 1-sample class gets the pooled one).
        cov_scale: Multiplies every covariance (``> 1`` spreads virtual features more widely).
        device: Kept for the common interface; the statistics live in numpy.
    """

    kind = "gaussian"
    space = "features"

    def __init__(self, *, eps: float = 1e-3, prior_samples: float = 10.0, cov_scale: float = 1.0,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(device=device)
        if eps < 0 or prior_samples < 0 or cov_scale <= 0:
            raise ValueError(f"need eps >= 0, prior_samples >= 0 and cov_scale > 0; got eps={eps}, "
                             f"prior_samples={prior_samples}, cov_scale={cov_scale}")
        self.eps = float(eps)
        self.prior_samples = float(prior_samples)
        self.cov_scale = float(cov_scale)
        self.means: np.ndarray | None = None        # (C, D) float64
        self.covariances: np.ndarray | None = None  # (C, D, D) float64, eps and scale included
        self.counts: np.ndarray | None = None       # (C,) int64
        self._factors: np.ndarray | None = None     # (C, D, D): cov = F @ F.T

    @property
    def feature_dim(self) -> int | None:
        return None if self.means is None else int(self.means.shape[1])

    def hparams(self) -> dict:
        return {"eps": self.eps, "prior_samples": self.prior_samples, "cov_scale": self.cov_scale}

    def _fitted_state(self) -> dict[str, Any]:
        return {"means": self.means, "covariances": self.covariances, "counts": self.counts}

    # -- fitting ----------------------------------------------------------------------------------
    def fit_features(self, features, labels, num_classes: int) -> GaussianFeatureGenerator:
        """Estimate every class's mean and (borrowed) covariance.

        Args:
            features: ``(N, D)`` float array or tensor (e.g. an encoder's train features).
            labels: ``(N,)`` int class ids in ``[0, num_classes)``.
            num_classes: Number of classes (classes without features cannot be sampled).
        """
        x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if x.ndim != 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"features must be a non-empty numeric (N, D) array; got {x.dtype} {x.shape}")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf; check the encoder's output")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be an int array shaped ({len(x)},); got {y.dtype} {y.shape}")
        if int(num_classes) < 1 or y.min() < 0 or y.max() >= int(num_classes):
            raise ValueError(f"labels must lie in [0, num_classes={num_classes}); found {y.min()}..{y.max()}")
        c, d = int(num_classes), x.shape[1]
        counts = np.bincount(y, minlength=c).astype(np.int64)
        means = np.zeros((c, d))
        scatters = np.zeros((c, d, d))
        for k in np.flatnonzero(counts):
            xk = x[y == k]
            means[k] = xk.mean(axis=0)
            r = xk - means[k]
            scatters[k] = r.T @ r
        dof = int(counts.sum() - (counts > 0).sum())
        if dof > 0:
            pooled = scatters.sum(axis=0) / dof
        elif len(x) > 1:  # every class has one sample: fall back to the spread of all features
            r = x - x.mean(axis=0)
            pooled = r.T @ r / (len(x) - 1)
        else:
            pooled = np.zeros((d, d))
        k_ = self.prior_samples
        covs = np.zeros((c, d, d))
        for k in range(c):
            denom = counts[k] - 1 + k_
            covs[k] = (scatters[k] + k_ * pooled) / denom if counts[k] > 1 and denom > 0 else pooled
        covs = covs * self.cov_scale + self.eps * np.eye(d)
        self.means, self.covariances, self.counts = means, covs, counts
        self._factors = self._factorise(covs)
        self._num_classes = c
        self._image_shape = None
        self._fit_info = {"dataset": None, "dataset_name": None, "seed": None, "state_digest": None}
        return self

    @staticmethod
    def _factorise(covs: np.ndarray) -> np.ndarray:
        """Symmetric square roots (eigh, negative eigenvalues clipped): robust where Cholesky may fail."""
        w, v = np.linalg.eigh((covs + np.swapaxes(covs, 1, 2)) / 2.0)
        return v * np.sqrt(np.clip(w, 0.0, None))[:, None, :]

    def fit(self, dataset, *, generator: torch.Generator | None = None, progress: bool = False,
            features=None) -> GaussianFeatureGenerator:
        """Fit on features of ``dataset``'s train images (pass ``features=encoder(train_images)``)."""
        if features is None:
            raise ValueError("GaussianFeatureGenerator models feature vectors, not pixels: pass "
                             "features=<(N, D) encoder features of dataset.train_images>, or call "
                             "fit_features(features, dataset.train_labels, dataset.num_classes)")
        if len(features) != len(dataset.train_labels):
            raise ValueError(f"features has {len(features)} rows but the train split has "
                             f"{len(dataset.train_labels)} images; encode dataset.train_images in order")
        self.fit_features(features, dataset.train_labels, dataset.num_classes)
        self._fit_info = {"dataset": dataset.fingerprint(), "dataset_name": dataset.name, "seed": None,
                          "state_digest": None}
        return self

    # -- sampling ---------------------------------------------------------------------------------
    def sample_features(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        """``n`` virtual features of ``class_id``: float32 ``(n, D)`` drawn with ``generator``."""
        if not self.fitted:
            raise ValueError("the Gaussian generator is not fitted; call fit_features(features, labels, "
                             "num_classes) first")
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) \
                or not 0 <= int(class_id) < int(self._num_classes):  # type: ignore[arg-type]
            raise ValueError(f"class_id must be an int in 0..{self._num_classes - 1}; got {class_id!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int (how many features to draw); got {n!r}")
        check_torch_generator(generator)
        k = int(class_id)
        if self.counts[k] == 0:  # type: ignore[index]
            raise ValueError(f"class {k} had no features at fit time, so it has no distribution; fit with at "
                             "least one sample of it")
        z = randn((int(n), self.feature_dim), generator, "cpu").double().numpy()  # type: ignore[arg-type]
        return (self.means[k] + z @ self._factors[k].T).astype(np.float32)  # type: ignore[index]

    def sample(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        raise ValueError("GaussianFeatureGenerator draws feature vectors, not images: use "
                         "sample_features(class_id, n, generator=g) (the env does so with source='gaussian')")

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and the per-class statistics (``gaussian.npz``)."""
        if not self.fitted:
            raise ValueError("save() needs a fitted generator; call fit_features(...) first")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / STATS_FILE, means=self.means, covariances=self.covariances,
                            counts=self.counts)
        write_config(folder, self.config())
        return folder

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> GaussianFeatureGenerator:
        folder = Path(path)
        cfg = read_config(folder, kind=cls.kind)
        gen = cls(eps=cfg["eps"], prior_samples=cfg["prior_samples"], cov_scale=cfg["cov_scale"], device=device)
        file = folder / STATS_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; save the generator again")
        with np.load(file) as data:
            gen.means, gen.covariances = data["means"], data["covariances"]
            gen.counts = data["counts"].astype(np.int64)
        gen._factors = cls._factorise(gen.covariances)
        gen._restore_fit_info(cfg)
        return gen
