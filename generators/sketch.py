"""Edge-map (sketch) conditioned class-conditional DDPM.

The UNet sees one extra input channel: the Sobel edge map of a real training image of the class. Training
pairs each image with its own edges; sampling draws real train images of the requested class with the
passed generator and uses their edges, so no annotation is needed at sampling time. Class conditioning
and classifier-free guidance work as in :class:`generators.ddpm.ClassConditionalDDPM` (the edge channel is
given to both the class and the null branch). Samples keep the layout of real images and vary texture
and intensity, a middle ground between augmentation and free generation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tailmix.generators.base import randint
from tailmix.generators.ddpm import ClassConditionalDDPM

CONDITION_FILE = "condition_images.npz"


def sobel_edges(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sobel gradient magnitude of uint8 ``(N, H, W, C)`` images -> float32 ``(N, 1, H, W)`` in ``[-1, 1]``.

    Colour images are averaged to grey first. Each map is divided by its own maximum, so dim and bright
    images give comparable sketches; a flat image gives -1 everywhere.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"sobel_edges expects uint8 images shaped (N, H, W, C); got "
                         f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)
    x = x.mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)  # (N, 1, H, W) grey in [0, 1]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx and d/dy
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    mag = g.pow(2).sum(dim=1, keepdim=True).sqrt()
    peak = mag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (mag / peak * 2.0 - 1.0).contiguous()


class SketchConditionedDDPM(ClassConditionalDDPM):
    """A :class:`ClassConditionalDDPM` whose UNet also gets a Sobel edge map of a real image of the class.

    Takes the same arguments as :class:`ClassConditionalDDPM`. After ``sample``,
    ``last_condition_indices`` holds the train-split rows whose edges conditioned each sample.
    """

    kind = "sketch"
    guided = False  # the DDPM's capabilities that the edge conditioning does not carry over
    takes_unlabeled = False
    budgeted = False
    unlabeled_refusal = ("its training conditions every image on an edge map of its class, which images without a "
                         "class lack")

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, **kwargs: Any) -> None:
        super().__init__(image_shape, num_classes, **kwargs)
        self._cond_images: np.ndarray | None = None
        self._cond_labels: np.ndarray | None = None
        self._edges: torch.Tensor | None = None
        self.last_condition_indices: np.ndarray = np.zeros(0, np.int64)

    def _in_channels(self) -> int:
        return self._image_shape[2] + 1  # type: ignore[index]

    def set_condition_images(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Set the real images (uint8 ``(N, H, W, C)``, labels ``(N,)``) whose edges condition sampling.

        ``fit`` sets them to the train split; call this after :meth:`from_unet` to sample without fitting.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(self._image_shape):
            raise ValueError(f"condition images must be uint8 {('N', *self._image_shape)}; got {images.dtype} "
                             f"{images.shape}")
        if np.shape(labels) != (len(images),):
            raise ValueError(f"labels must be shaped ({len(images)},); got {np.shape(labels)}")
        self._cond_images = np.ascontiguousarray(images)
        self._cond_labels = np.asarray(labels, np.int64)
        self._edges = self._pad(sobel_edges(self._cond_images, self.device))
        if self._fit_info is not None:
            self._fit_info["state_digest"] = None  # the samples changed: recompute the digest

    def _prepare_training(self, dataset) -> None:
        self.set_condition_images(dataset.train_images, dataset.train_labels)

    def _train_condition(self, index: torch.Tensor) -> torch.Tensor | None:
        assert self._edges is not None
        return self._edges[index.to(self._edges.device)]

    def _sample_condition(self, class_id: int, n: int, generator: torch.Generator) -> torch.Tensor | None:
        if self._cond_labels is None or self._edges is None:
            raise ValueError("the sketch model has no real images to take edges from; call fit(dataset) (with "
                             "resume=True to keep loaded weights) or set_condition_images(images, labels)")
        rows = np.flatnonzero(self._cond_labels == class_id)
        if len(rows) == 0:
            raise ValueError(f"class {class_id} has no train images whose edges could condition the samples; "
                             "sample another class, or pass your own images to sample_from_images")
        pick = randint(len(rows), (n,), generator).numpy()
        self.last_condition_indices = rows[pick]
        return self._edges[torch.as_tensor(self.last_condition_indices, device=self._edges.device)]

    def sample_from_images(self, class_id: int, images: np.ndarray, *, generator: torch.Generator) -> np.ndarray:
        """One sample of ``class_id`` per given uint8 image ``(n, H, W, C)``, conditioned on its edges."""
        self._check_sample(class_id, len(images), generator)
        if tuple(images.shape[1:]) != tuple(self._image_shape):
            raise ValueError(f"images are {images.shape[1:]} but the model makes {self._image_shape}; resize them")
        edges = self._pad(sobel_edges(images, self.device))
        self.last_condition_indices = np.full(len(images), -1, np.int64)
        return self._sample_with(self.unet, int(class_id), len(images), generator, cond=edges)

    def _fitted_state(self) -> dict[str, Any]:
        state = super()._fitted_state()
        state["condition_images"] = self._cond_images
        state["condition_labels"] = self._cond_labels
        return state

    def _move(self, device: torch.device) -> None:
        super()._move(device)
        if self._edges is not None:
            self._edges = self._edges.to(device)

    def save(self, path: str | Path) -> Path:
        """As :meth:`ClassConditionalDDPM.save`, plus the train images whose edges condition sampling."""
        folder = super().save(path)
        np.savez_compressed(folder / CONDITION_FILE, images=self._cond_images, labels=self._cond_labels)
        return folder

    def _load_extra(self, folder: Path) -> None:
        file = folder / CONDITION_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: the sketch model samples from the edges of these train "
                                    "images; save the model again")
        recorded = (self._fit_info or {}).get("state_digest")
        with np.load(file) as data:
            self.set_condition_images(data["images"], data["labels"])
        if self._fit_info is not None:  # the images it was saved with: keep the digest, load_generator checks it
            self._fit_info["state_digest"] = recorded
