"""Training loops: fit a classifier on uint8 images, re-train its head, predict and encode.

Reproducibility: every random draw of training (mini-batch order, class-balanced sampling, flips and
shifts) comes from the passed ``torch.Generator``, never from global RNG, so the same model
initialisation, data and generator seed give identical weights on the CPU (with the thread count pinned,
see :func:`classifiers.device.fixed_threads`). Model initialisation itself is the caller's business.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailmix.classifiers.data import images_to_tensor
from tailmix.classifiers.device import autocast, autocast_dtype, select_device

SAMPLERS = ("uniform", "class_balanced")


# -- input checks ------------------------------------------------------------------------------
def _num_outputs(model: nn.Module, class_counts) -> int | None:
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    return None if class_counts is None else len(class_counts)


def _check_images(images) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images must be a uint8 numpy array shaped (N, H, W, C), got {desc}; convert with "
                         "np.asarray(images, np.uint8) and add a channel axis for grey images")
    if images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be channels-last (N, H, W, C) with C in (1, 3, 4), got shape "
                         f"{images.shape}; transpose NCHW arrays with images.transpose(0, 2, 3, 1)")


def _check_labels(images, labels, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels; pass one label per image")
    if len(labels) < 2:
        raise ValueError(f"need at least 2 training samples, got {len(labels)}")
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for a model with {num_classes} outputs, found "
                         f"[{labels.min()}, {labels.max()}]; encode labels as 0..C-1 or build the model "
                         "with more classes")
    return labels.astype(np.int64, copy=False)


def _check_settings(epochs: int, batch_size: int, lr: float, sampler: str) -> None:
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite float, got {lr!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def _resolve_loss(loss, class_counts, labels: np.ndarray, num_classes: int | None) -> nn.Module:
    if class_counts is None:
        c = num_classes if num_classes is not None else int(labels.max()) + 1
        class_counts = np.bincount(labels, minlength=c)
    else:
        class_counts = np.asarray(class_counts)
        if num_classes is not None and class_counts.shape != (num_classes,):
            raise ValueError(f"class_counts must have one entry per class ({num_classes}), got shape "
                             f"{class_counts.shape}")
    if isinstance(loss, nn.Module):
        return loss
    if isinstance(loss, str):
        from tailmix.classifiers.losses import make_loss

        return make_loss(loss, class_counts)
    raise ValueError(f"loss must be a classifiers.losses name or an nn.Module, got {type(loss).__name__}")


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    # None: seed a private generator from torch's global RNG, so torch.manual_seed still reproduces a run.
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))


# -- sampling and augmentation -----------------------------------------------------------------
def _epoch_order(labels: torch.Tensor, sampler: str, generator: torch.Generator) -> torch.Tensor:
    """Indices of one epoch: a permutation (uniform) or N draws with equal class mass (class_balanced)."""
    n = len(labels)
    if sampler == "uniform":
        return torch.randperm(n, generator=generator, device=generator.device).cpu()
    counts = torch.bincount(labels).double()
    weights = (1.0 / counts)[labels]  # every present class gets the same total probability
    return torch.multinomial(weights.to(generator.device), n, replacement=True, generator=generator).cpu()


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        # BatchNorm cannot train on one sample when the feature map is 1x1; fold it into the batch before.
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def random_flip_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int | None = None) -> torch.Tensor:
    """Random horizontal flips (p = 0.5) and integer shifts of up to ``max_shift`` pixels per image.

    Shifts pad by edge replication and crop, like the usual pad-and-crop but without a black border.
    Random numbers come from ``generator`` (on its own device), the work is done on ``x``'s device.

    Args:
        x: ``(N, C, H, W)`` float images.
        generator: Source of every random draw.
        max_shift: Largest shift in pixels; default ``max(1, min(H, W) // 8)`` (1 px at 8x8, 3 px at 28x28).
    """
    n, _, h, w = x.shape
    s = max(1, min(h, w) // 8) if max_shift is None else int(max_shift)
    flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
    shift = torch.randint(-s, s + 1, (n, 2), generator=generator, device=generator.device)
    flip, shift = flip.to(x.device), shift.to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if s == 0:
        return x
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    rows = torch.arange(h, device=x.device)[None, :] + s + shift[:, :1]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + s + shift[:, 1:]  # (N, W)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # advanced indexing put channels last


# -- the shared loop ---------------------------------------------------------------------------
def _fit(logits_of: Callable[[torch.Tensor, int], torch.Tensor], params: list[torch.Tensor], labels: np.ndarray,
         loss_fn: nn.Module, *, epochs: int, batch_size: int, lr: float, weight_decay: float, sampler: str,
         device: torch.device, generator: torch.Generator, progress: bool, before_epoch: Callable[[], None],
         after_epoch: Callable[[dict], None], use_amp: bool, opt: torch.optim.Optimizer | None = None) -> dict:
    """Mini-batch AdamW over ``params`` (or ``opt``); ``logits_of(idx, epoch)`` maps a CPU index batch to logits."""
    history: dict = {"loss": []}
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    if opt is None:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    # fp16 autocast needs loss scaling against underflow; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type) if use_amp and autocast_dtype(device) == torch.float16 else None
    y_cpu = torch.from_numpy(labels)
    y_dev = y_cpu.to(device)
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="training", leave=False)
    for epoch in epoch_iter:
        if hasattr(loss_fn, "set_epoch"):
            loss_fn.set_epoch(epoch, epochs)
        before_epoch()
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on device: no sync per batch
        for idx in _batches(_epoch_order(y_cpu, sampler, generator), batch_size):
            logits = logits_of(idx, epoch)
            loss = loss_fn(logits.float(), y_dev[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            total += loss.detach().double() * len(idx)
        history["loss"].append(float(total) / len(labels))
        after_epoch(history)
        if progress:
            epoch_iter.set_postfix(loss=f"{history['loss'][-1]:.4f}")
    return history


def _val_hook(model: nn.Module, val, num_classes: int | None, device: torch.device, batch_size: int):
    if val is None:
        return lambda history: None
    if not (isinstance(val, (tuple, list)) and len(val) == 2):
        raise ValueError("val must be a tuple (val_images, val_labels)")
    val_images, val_labels = val
    _check_images(val_images)
    val_labels = np.asarray(val_labels)
    if len(val_labels) != len(val_images):
        raise ValueError(f"val has {len(val_images)} images but {len(val_labels)} labels")
    c = num_classes if num_classes is not None else int(val_labels.max()) + 1

    def hook(history: dict) -> None:
        from tailmix.classifiers.metrics import balanced_accuracy, confusion_matrix

        pred = predict_logits(model, val_images, device=device, batch_size=max(batch_size, 256)).argmax(1)
        history.setdefault("val_balanced_accuracy", []).append(
            balanced_accuracy(confusion_matrix(val_labels, pred, c)))
    return hook


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, loss: str | nn.Module = "ce",
                     class_counts=None, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                     weight_decay: float = 5e-4, sampler: str = "uniform", augment: bool = False,
                     device: str | torch.device = "cpu", generator: torch.Generator | None = None,
                     progress: bool = False, val: tuple | None = None,
                     optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Train ``model`` (in place) on uint8 images with mini-batch AdamW, mixed precision on CUDA.

    Args:
        model: A backbone (``forward`` gives logits); moved to ``device`` and left in eval mode.
        images: uint8 ``(N, H, W, C)``; converted per batch with :func:`classifiers.data.images_to_tensor`.
        labels: ``(N,)`` ints in ``[0, C)``.
        loss: A :data:`classifiers.losses.LOSSES` name, or a loss module (its ``set_epoch`` is called).
        class_counts: ``(C,)`` counts given to a named loss; default: the counts of ``labels``.
        epochs: Passes over the data (class-balanced epochs draw ``N`` samples).
        batch_size: Mini-batch size (a trailing batch of one joins the batch before it).
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        sampler: ``"uniform"`` (shuffle) or ``"class_balanced"`` (each class equally likely, with replacement).
        augment: Random horizontal flips and small shifts (:func:`random_flip_shift`).
        device: Where to train (see :func:`classifiers.device.select_device`).
        generator: Source of all randomness; ``None`` seeds one from torch's global RNG.
        progress: Show a tqdm bar over epochs.
        val: Optional ``(images, labels)``; adds ``val_balanced_accuracy`` per epoch.
        optimizer: Continue with this optimiser over ``model``'s parameters, its moments and learning rate
            included (``lr`` and ``weight_decay`` are then ignored; the caller owns the schedule). Default: a
            fresh AdamW, as for a model trained in one call.

    Returns:
        ``{"loss": [mean training loss per epoch], "val_balanced_accuracy": [...] (with val)}``.
    """
    dev = select_device(device)
    _check_images(images)
    num_classes = _num_outputs(model, class_counts)
    y = _check_labels(images, labels, num_classes)
    _check_settings(epochs, batch_size, lr, sampler)
    loss_fn = _resolve_loss(loss, class_counts, y, num_classes).to(dev)
    gen = _default_generator(generator)
    model.to(dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer is not None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if any(id(p) not in held for p in trainable):
            raise ValueError("optimizer does not hold every trainable parameter of model; build it from "
                             "model.parameters() after moving the model to its device")
    hook = _val_hook(model, val, num_classes, dev, batch_size)

    def logits_of(idx: torch.Tensor, epoch: int) -> torch.Tensor:
        x = images_to_tensor(images[idx.numpy()], dev)
        if augment:
            x = random_flip_shift(x, gen)
        with autocast(dev):
            return model(x)

    history = _fit(logits_of, trainable, y, loss_fn, epochs=epochs,
                   batch_size=batch_size, lr=lr, weight_decay=weight_decay, sampler=sampler, device=dev,
                   generator=gen, progress=progress, before_epoch=model.train, after_epoch=hook, use_amp=True,
                   opt=optimizer)
    model.eval()
    return history


def _reset_linear(fc: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear init (uniform in ``±1/sqrt(fan_in)``), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(fc.in_features)
    with torch.no_grad():
        for p in (fc.weight, fc.bias):
            if p is not None:
                r = torch.rand(p.shape, generator=generator, device=generator.device, dtype=torch.float32)
                p.copy_((r * 2.0 - 1.0) * bound)


def retrain_head(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, loss: str | nn.Module = "ce",
                 class_counts=None, epochs: int = 10, batch_size: int = 64, sampler: str = "class_balanced",
                 lr: float = 1e-2, weight_decay: float = 5e-4, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, progress: bool = False) -> dict:
    """Classifier re-training (cRT, Kang et al. 2020): a fresh ``model.fc`` on the frozen features.

    The backbone is untouched (eval mode, so BatchNorm statistics do not move either); its features are
    computed once with :func:`encode`, then ``fc`` is re-initialised from ``generator`` and trained on
    them, by default with class-balanced sampling.

    Args:
        model: A backbone with ``features`` and an ``nn.Linear`` ``fc``.
        images, labels, loss, class_counts, epochs, batch_size, sampler, weight_decay, device, generator,
            progress: As in :func:`train_classifier`.
        lr: AdamW learning rate of the head (higher than for a whole network).

    Returns:
        ``{"loss": [mean loss per epoch]}``.
    """
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear) or not hasattr(model, "features"):
        raise ValueError("retrain_head needs a model with a features(x) method and an nn.Linear `fc` "
                         "(classifiers.backbones provide both)")
    dev = select_device(device)
    _check_images(images)
    y = _check_labels(images, labels, fc.out_features)
    _check_settings(epochs, batch_size, lr, sampler)
    loss_fn = _resolve_loss(loss, class_counts, y, fc.out_features).to(dev)
    gen = _default_generator(generator)
    feats = torch.from_numpy(encode(model, images, device=dev)).to(dev)
    model.to(dev).eval()
    _reset_linear(fc, gen)
    return _fit(lambda idx, epoch: fc(feats[idx.to(dev)]), list(fc.parameters()), y, loss_fn, epochs=epochs,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay, sampler=sampler, device=dev,
                generator=gen, progress=progress, before_epoch=lambda: None, after_epoch=lambda h: None,
                use_amp=False)


# -- inference ---------------------------------------------------------------------------------
def _run(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, out_dim: int | None,
         device, batch_size: int, *, dim: int = 0, empty: np.ndarray | None = None) -> np.ndarray:
    """``fn`` over ``images`` in mini-batches (eval mode, no grad, the mode restored), outputs joined along ``dim``
    (``empty`` when there are no images; default ``(0, out_dim)``)."""
    dev = select_device(device)
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(dev).eval()
    outs = []
    try:
        with torch.inference_mode(), autocast(dev):
            for start in range(0, len(images), batch_size):
                outs.append(fn(images_to_tensor(images[start:start + batch_size], dev)).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        return np.zeros((0, out_dim or 0), np.float32) if empty is None else empty
    return torch.cat(outs, dim).numpy().astype(np.float32, copy=False)


def predict_logits(model: nn.Module, images: np.ndarray, *, device: str | torch.device = "cpu",
                   batch_size: int = 256) -> np.ndarray:
    """float32 ``(N, C)`` logits of uint8 ``(N, H, W, C)`` images, in eval mode without gradients.

    The model's train/eval mode is restored afterwards.
    """
    return _run(model, model, images, _num_outputs(model, None), device, batch_size)


def encode(model: nn.Module, images: np.ndarray, *, device: str | torch.device = "cpu",
           batch_size: int = 256) -> np.ndarray:
    """float32 ``(N, D)`` penultimate features (``model.features``), in eval mode without gradients."""
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no features(x) method; use a classifiers.backbones model")
    return _run(model, model.features, images, getattr(model, "feature_dim", None), device, batch_size)
