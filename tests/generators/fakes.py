"""Small stand-ins for the pool tests: a fake generator and a fake scorer that read codes off the pixels.

A fake image carries its 'predicted class' in pixel (0, 0) and its 'confidence' (times 255) in pixel
(0, 1), so a scorer can be exact and tests can reason about what a filter must keep.
"""
from __future__ import annotations

import threading

import numpy as np
import torch


class FakeGenerator:
    """Follows the generators.base.Generator interface without any model.

    Args:
        wrong_rate: Fraction of samples whose code says 'another class' (the filter should reject them).
        fail_after: Raise on the sample call after this many successful calls (simulates a crash).
        offset: Shifts pixel values; part of config(), so it changes the bank key.
    """

    kind = "fake"

    def __init__(self, *, wrong_rate: float = 0.0, fail_after: int | None = None, offset: int = 0,
                 device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.wrong_rate = wrong_rate
        self.fail_after = fail_after
        self.offset = offset
        self.image_shape = None
        self.num_classes = None
        self.fitted = False
        self.calls: list[tuple[int, int]] = []
        self.threads: set[str] = set()
        self.fit_seeds: list[int] = []
        self.moves: list[torch.device] = []

    def fit(self, dataset, *, generator=None, progress=False):
        self.image_shape = tuple(dataset.image_shape)
        self.num_classes = dataset.num_classes
        self.fitted = True
        self.fit_seeds.append(None if generator is None else generator.initial_seed())
        return self

    def sample(self, class_id, n, *, generator):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("fake generator crashed on purpose")
        self.calls.append((int(class_id), int(n)))
        self.threads.add(threading.current_thread().name)
        h, w, c = self.image_shape
        x = torch.randint(0, 256, (n, h, w, c), generator=generator, dtype=torch.int64).numpy()
        x = (x + self.offset) % 256
        u = torch.rand(n, generator=generator).numpy()
        conf = torch.rand(n, generator=generator).numpy()
        pred = np.where(u < self.wrong_rate, (class_id + 1) % self.num_classes, class_id)
        x[:, 0, 0, 0] = pred
        x[:, 0, 1, 0] = np.round(conf * 255)
        return x.astype(np.uint8)

    def config(self):
        return {"kind": self.kind, "wrong_rate": self.wrong_rate, "offset": self.offset,
                "image_shape": None if self.image_shape is None else list(self.image_shape),
                "num_classes": self.num_classes}

    def to(self, device):
        self.device = torch.device(device)
        self.moves.append(self.device)
        return self

    def save(self, path):  # pragma: no cover - not needed by these tests
        raise NotImplementedError

    @classmethod
    def load(cls, path, device="cpu"):  # pragma: no cover
        raise NotImplementedError


def code_scorer(num_classes: int):
    """Scorer reading the pixel codes: probability ``conf`` on the coded class, the rest spread evenly."""

    def score(images: np.ndarray) -> np.ndarray:
        pred = images[:, 0, 0, 0].astype(np.int64) % num_classes
        conf = images[:, 0, 1, 0].astype(np.float64) / 255.0
        # keep the coded class the argmax: at least an even share
        conf = np.maximum(conf, 1.0 / num_classes)
        probs = np.repeat(((1.0 - conf) / (num_classes - 1))[:, None], num_classes, axis=1)
        probs[np.arange(len(images)), pred] = conf
        return probs

    return score
