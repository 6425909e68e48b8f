"""Classifier guidance for the DDPMs: a noise-aware classifier of ``x_t`` and its log-probability gradient.

HistoDiffusion-style guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis"):
a small CNN is trained on *noised* images ``x_t`` at random timesteps ``t`` (conditioned on ``t``), and
sampling adds the gradient of its ``log p(y | x_t, t)`` for the target class ``y``. With an epsilon-prediction
model (DDIM and DDPM samplers alike) this is the epsilon correction of their Algorithm 2::

    eps_hat = eps - sqrt(1 - alpha_bar_t) * scale * grad_x log p(y | x_t, t)

applied after classifier-free guidance, so both combine; the correction goes through the clipped ``x0``
prediction so that clipping cannot turn it around (:func:`guided_epsilon`). The classifier is trained with a
long-tail-calibrated loss (logit adjustment by default, :mod:`tailmix.classifiers.losses`): its raw logits
then estimate the class-*balanced* posterior, so the gradient is not pulled towards the head classes, whose
prior dominates a plain cross-entropy classifier on a long-tailed train split.

Every random draw (weights, batches, timesteps, noise) comes from the passed ``torch.Generator``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailmix.generators.base import randint, randn

#: Training settings of the noise-aware classifier (``ClassConditionalDDPM(classifier=...)`` overrides them).
#: ``steps=None`` takes the DDPM preset's value (:data:`PRESET_STEPS`).
CLASSIFIER_DEFAULTS: dict[str, Any] = {"width": 32, "steps": None, "batch_size": 64, "lr": 2e-3,
                                       "loss": "logit_adjustment"}
#: Classifier training steps per DDPM preset (a few seconds on a CPU for ``small``).
PRESET_STEPS = {"tiny": 30, "small": 1000, "base": 5000}
#: Long-tail losses that make sense for guidance (the logits must be usable without the training offset).
GUIDANCE_LOSSES = ("logit_adjustment", "balanced_softmax", "ce")


def classifier_settings(overrides: dict | None, preset: str) -> dict:
    """The classifier's settings: :data:`CLASSIFIER_DEFAULTS` with ``overrides``, checked."""
    unknown = sorted(set(overrides or {}) - set(CLASSIFIER_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown classifier setting(s) {unknown}; the noise-aware classifier takes "
                         f"{sorted(CLASSIFIER_DEFAULTS)}")
    s = {**CLASSIFIER_DEFAULTS, **(overrides or {})}
    if s["steps"] is None:
        s["steps"] = PRESET_STEPS.get(preset, PRESET_STEPS["small"])
    for name in ("width", "steps", "batch_size"):
        if isinstance(s[name], bool) or not isinstance(s[name], (int, np.integer)) or s[name] < 1:
            raise ValueError(f"classifier {name} must be a positive int; got {s[name]!r}")
        s[name] = int(s[name])
    if not float(s["lr"]) > 0:
        raise ValueError(f"classifier lr must be > 0; got {s['lr']}")
    s["lr"] = float(s["lr"])
    if s["loss"] not in GUIDANCE_LOSSES:
        raise ValueError(f"classifier loss must be one of {GUIDANCE_LOSSES}; got {s['loss']!r} (logit_adjustment "
                         "or balanced_softmax keep the gradient from favouring the head classes)")
    return s


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(N, dim)`` of integer timesteps (as in the DDPM UNet)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _Block(nn.Module):
    """conv -> GroupNorm -> + time (scale and shift) -> SiLU."""

    def __init__(self, cin: int, cout: int, stride: int, tdim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(min(8, cout), cout)
        self.time = nn.Linear(tdim, 2 * cout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time(temb)[:, :, None, None].chunk(2, dim=1)
        return F.silu(self.norm(self.conv(x)) * (1 + scale) + shift)


class NoiseAwareClassifier(nn.Module):
    """A small timestep-conditioned CNN: logits of ``(x_t, t)`` for ``num_classes`` classes.

    Args:
        in_channels: Image channels.
        num_classes: Number of classes (no null class).
        width: Channels of the first block (then ``2 * width``).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.tdim = 4 * width
        self.time = nn.Sequential(nn.Linear(width, self.tdim), nn.SiLU(), nn.Linear(self.tdim, self.tdim))
        self.width = width
        self.blocks = nn.ModuleList([_Block(in_channels, width, 1, self.tdim), _Block(width, 2 * width, 2, self.tdim),
                                     _Block(2 * width, 2 * width, 2, self.tdim)])
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(timestep_embedding(t, self.width))
        for block in self.blocks:
            x = block(x, temb)
        return self.fc(x.mean(dim=(2, 3)))


def build_classifier(in_channels: int, num_classes: int, settings: dict, generator: torch.Generator,
                     device: torch.device) -> NoiseAwareClassifier:
    """A new classifier whose initial weights are drawn from ``generator`` (the global RNG is left alone)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NoiseAwareClassifier(in_channels, num_classes, settings["width"])
    return model.to(device)


def train_noise_aware(model: NoiseAwareClassifier, x: torch.Tensor, y: torch.Tensor, counts: np.ndarray,
                      scheduler, settings: dict, *, generator: torch.Generator, progress: bool = False) -> list[float]:
    """Train ``model`` on images ``x`` (NCHW in ``[-1, 1]``) noised at uniform random timesteps.

    Args:
        x: Clean images, already padded to the UNet's size.
        y: Their labels.
        counts: Train images per class (the long-tail loss's prior).
        scheduler: The DDPM's training scheduler (``add_noise`` and ``num_train_timesteps``).
        settings: From :func:`classifier_settings`.
    Returns:
        The loss of every step.
    """
    from tailmix.classifiers.losses import make_loss

    counts = np.maximum(np.asarray(counts, np.float64), 1)  # a class without train images: a tiny prior, no log(0)
    loss_fn = make_loss(settings["loss"], counts if settings["loss"] != "ce" else None).to(x.device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=1e-4)
    steps, n = settings["steps"], len(x)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    batch = min(settings["batch_size"], n)
    T = int(scheduler.config.num_train_timesteps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="guidance classifier", unit="step")
    losses: list[float] = []
    model.train()
    try:
        for _ in range(steps):
            rows = randint(n, (batch,), generator, x.device)
            x0, labels = x[rows], y[rows]
            t = randint(T, (batch,), generator, x.device)
            xt = scheduler.add_noise(x0, randn(tuple(x0.shape), generator, x.device), t)
            loss = loss_fn(model(xt, t), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    return losses


def log_prob_gradient(model: NoiseAwareClassifier, x: torch.Tensor, t: torch.Tensor, class_id: int) -> torch.Tensor:
    """``grad_x sum_i log p(class_id | x_i, t_i)``: per-image gradients (the images do not interact)."""
    with torch.enable_grad():
        xg = x.detach().float().requires_grad_(True)
        logp = F.log_softmax(model(xg, t).float(), dim=1)[:, class_id].sum()
        (grad,) = torch.autograd.grad(logp, xg)
    return grad


def guided_epsilon(eps: torch.Tensor, x: torch.Tensor, alpha_bar: torch.Tensor, grad: torch.Tensor, scale: float,
                   clip: float | None) -> torch.Tensor:
    """The guided noise prediction ``eps - sqrt(1 - alpha_bar) * scale * grad`` (Dhariwal & Nichol, Algorithm 2).

    Written through the predicted ``x0`` so that clipping it (to ``[-clip, clip]``; ``None``: none) stays
    consistent: ``x0`` is clipped, moved by the correction (``(1 - alpha_bar) / sqrt(alpha_bar) * scale * grad``),
    clipped again, and the returned epsilon is the one that ``x0`` implies, so the sampler must step without
    clipping. Without clipping this is exactly the formula above. A scheduler that clipped the corrected ``x0``
    on its own would keep the raw epsilon's direction term: at high noise (``x0`` moves by ``1 / sqrt(alpha_bar)``
    times the correction, ~2e4 at the first "trailing" DDIM step) the clipped ``x0`` loses the correction and
    the direction term carries it with the opposite sign, pushing samples away from the class; an unclipped
    ``x0`` of that size would swamp the sample instead.
    """
    a, s1 = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    x0 = (x - s1 * eps) / a
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    x0 = x0 + (1 - alpha_bar) / a * scale * grad
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    return (x - a * x0) / s1


@torch.no_grad()
def class_probability(model: NoiseAwareClassifier, x: torch.Tensor, t: int | torch.Tensor,
                      class_id: int) -> torch.Tensor:
    """The classifier's probability of ``class_id`` for each image of ``x`` at timestep ``t``."""
    tt = torch.as_tensor(t, dtype=torch.long, device=x.device).expand(len(x))
    return F.softmax(model(x.float(), tt).float(), dim=1)[:, class_id]
