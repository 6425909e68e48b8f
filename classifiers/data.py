"""Conversions between the package's uint8 NHWC images and the float NCHW tensors models use.

One convention everywhere (classifiers, DDPM, filters): pixels map affinely from ``[0, 255]`` to
``[-1, 1]``.
"""
from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` in ``[-1, 1]`` on ``device``."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images shaped (N, H, W, C); got {images.dtype} {images.shape}")
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float ``(N, C, H, W)`` in ``[-1, 1]`` -> uint8 ``(N, H, W, C)`` (clipped, rounded)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
