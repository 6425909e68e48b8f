"""Classic augmentation as a generator: real images of the class, randomly flipped, moved and jittered.

The baseline every synthetic generator has to beat, and the env's default source. All parameters are
drawn from the passed ``torch.Generator`` and applied with plain torch ops (torchvision's v2 transforms
draw from the global RNG, which would break seeding), so a seed reproduces the samples exactly.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tailmix.generators.base import Generator, rand, randint, randn, read_config, write_config

OPS = ("flip", "vflip", "affine", "jitter", "noise")
IMAGES_FILE = "images.npz"


class AugmentationGenerator(Generator):
    """Samples = augmented copies of real train images of the requested class.

    Args:
        ops: Which augmentations to apply, in this fixed order: ``"flip"`` (horizontal, p=0.5),
            ``"vflip"`` (vertical, p=0.5), ``"affine"`` (rotation, translation, scale), ``"jitter"``
            (brightness and contrast), ``"noise"`` (additive Gaussian pixel noise).
        degrees: Max absolute rotation in degrees.
        translate: Max absolute shift as a fraction of the image size.
        scale: ``(min, max)`` zoom factor.
        brightness: Brightness factor drawn from ``[1 - b, 1 + b]``.
        contrast: Contrast factor drawn from ``[1 - c, 1 + c]`` (around each image's mean).
        noise_std: Std of the pixel noise, in units of the full ``[0, 1]`` range.
        device: Where the ops run.
    """

    kind = "augment"
    unlabeled_refusal = "it trains nothing: it augments the real images of each class"

    def __init__(self, *, ops: tuple[str, ...] = ("flip", "affine", "jitter"), degrees: float = 10.0,
                 translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1), brightness: float = 0.2,
                 contrast: float = 0.2, noise_std: float = 0.02, device: torch.device | str = "cpu") -> None:
        super().__init__(device=device)
        if isinstance(ops, str):
            ops = (ops,)
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {OPS}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops lists an augmentation twice: {list(ops)}; name each once")
        scale = tuple(float(s) for s in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max; got {scale}")
        for name, value in (("degrees", degrees), ("translate", translate), ("noise_std", noise_std)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0; got {value}")
        for name, value in (("brightness", brightness), ("contrast", contrast)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must lie in [0, 1) (a factor range 1 +- {name}); got {value}")
        self.ops = tuple(op for op in OPS if op in ops)  # fixed order: configs that name the same ops agree
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = scale
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.noise_std = float(noise_std)
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def hparams(self) -> dict:
        return {"ops": list(self.ops), "degrees": self.degrees, "translate": self.translate,
                "scale": list(self.scale), "brightness": self.brightness, "contrast": self.contrast,
                "noise_std": self.noise_std}

    def _fitted_state(self) -> dict[str, Any]:
        return {"images": self._images, "labels": self._labels}

    def fit(self, dataset, *, generator: torch.Generator | None = None, progress: bool = False
            ) -> AugmentationGenerator:
        """Keep the train images; no randomness (``generator`` is accepted for the common interface)."""
        self._images = np.ascontiguousarray(dataset.train_images)
        self._labels = np.asarray(dataset.train_labels, np.int64)
        self._mark_fitted(dataset, generator=None)  # the fit draws nothing, so the seed is irrelevant
        return self

    def sample(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        """``n`` augmented copies of real train images of ``class_id`` (images drawn with replacement)."""
        self._check_sample(class_id, n, generator)
        assert self._images is not None and self._labels is not None
        rows = np.flatnonzero(self._labels == int(class_id))
        if len(rows) == 0:
            raise ValueError(f"class {class_id} has no train images to augment; sample another class")
        if n == 0:
            return self._empty()
        pick = rows[randint(len(rows), (int(n),), generator).numpy()]
        x = torch.from_numpy(self._images[pick]).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = self.augment(x, generator)
        return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply ``ops`` to float ``(N, C, H, W)`` images in ``[0, 1]``, parameters drawn from ``generator``."""
        n, dev = len(x), x.device
        if "flip" in self.ops:
            x = torch.where((rand((n,), generator, dev) < 0.5)[:, None, None, None], x.flip(-1), x)
        if "vflip" in self.ops:
            x = torch.where((rand((n,), generator, dev) < 0.5)[:, None, None, None], x.flip(-2), x)
        if "affine" in self.ops:
            u = rand((n, 4), generator, dev) * 2.0 - 1.0  # angle, tx, ty in [-1, 1); scale from u[:, 3]
            angle = u[:, 0] * math.radians(self.degrees)
            lo, hi = self.scale
            s = lo + (u[:, 3] + 1.0) / 2.0 * (hi - lo)
            cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
            # affine_grid maps output to input coordinates in [-1, 1]: a shift of f * size is 2f there.
            theta = torch.stack([torch.stack([cos, -sin, 2 * self.translate * u[:, 1]], 1),
                                 torch.stack([sin, cos, 2 * self.translate * u[:, 2]], 1)], 1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if "jitter" in self.ops:
            u = rand((n, 2), generator, dev) * 2.0 - 1.0
            b = (1.0 + self.brightness * u[:, 0])[:, None, None, None]
            c = (1.0 + self.contrast * u[:, 1])[:, None, None, None]
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * c + mean) * b
        if "noise" in self.ops and self.noise_std > 0:
            x = x + self.noise_std * randn(tuple(x.shape), generator, dev)
        return x.clamp(0.0, 1.0)

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and the kept train images (``images.npz``)."""
        if not self.fitted:
            raise ValueError("save() needs a fitted generator; call fit(dataset) first")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / IMAGES_FILE, images=self._images, labels=self._labels)
        write_config(folder, self.config())
        return folder

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> AugmentationGenerator:
        folder = Path(path)
        cfg = read_config(folder, kind=cls.kind)
        gen = cls(ops=tuple(cfg["ops"]), degrees=cfg["degrees"], translate=cfg["translate"],
                  scale=tuple(cfg["scale"]), brightness=cfg["brightness"], contrast=cfg["contrast"],
                  noise_std=cfg["noise_std"], device=device)
        file = folder / IMAGES_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; save the generator again")
        with np.load(file) as data:
            gen._images, gen._labels = data["images"], data["labels"].astype(np.int64)
        gen._restore_fit_info(cfg)
        return gen
