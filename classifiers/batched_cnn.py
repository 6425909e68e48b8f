"""``K`` independent small CNNs trained in one call: grouped convolutions, one optimiser step for all copies.

Pixel mode trains one :class:`classifiers.backbones.SmallCNN` per env copy (or per seed of a replay). Here the
``K`` copies are one network whose convolutions have ``groups=K``: copy ``k`` owns channel block ``k`` of every
layer, so a mini-batch of ``K`` copies is one convolution call per layer instead of ``K``. BatchNorm is per
channel, hence per copy; the last linear layer is one small matrix product per copy.

Every copy keeps its own initial weights, data, loss, mini-batch order, augmentations (each from its own
``torch.Generator``, drawn in the order :func:`classifiers.training.train_classifier` draws them) and AdamW
state (step count and learning rate per copy, :class:`BatchedAdamW`). On the CPU the result is **bit-identical**
to ``K`` separate :func:`~classifiers.training.train_classifier` runs at SmallCNN's default width (32, what pixel
mode uses; tests/classifiers/test_batched_cnn.py checks it): there oneDNN's grouped convolutions give each group
exactly the plain convolution's result, forward and backward. Two exceptions are worked around: the first layer (3
input channels per group sum in another order) runs copy by copy, and AdamW updates copy by copy (a vectorised
loop's scalar tail rounds differently). At narrower widths the grouped backward of 8- and 16-channel groups sums in
another order, and on other devices kernels may too: there copies agree with single runs to float tolerance.

What batching buys depends on the device. On a GPU a small CNN at batch 64 is bound by kernel launches, and
one grouped call does ``K`` copies' work for about one launch each. On one CPU core the convolutions are already
compute-bound, so the per-copy time stays about that of a single run (``benchmarks/pixel_batched.py``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailmix.classifiers.backbones import SmallCNN, _check_sizes
from tailmix.classifiers.data import images_to_tensor
from tailmix.classifiers.device import autocast, autocast_dtype, select_device
from tailmix.classifiers.training import (_batches, _run, _check_images, _check_labels, _check_settings, _epoch_order,
                                          _resolve_loss, random_flip_shift)

#: SmallCNN's conv blocks: (input channels, output channels) as multiples of ``width`` (0: the image's) and stride.
_BLOCKS = ((0, 1, 1), (1, 2, 2), (2, 2, 1), (2, 4, 2))


class BatchedSmallCNN(nn.Module):
    """``K`` :class:`~classifiers.backbones.SmallCNN` copies as one module with grouped convolutions.

    The state of copy ``k`` is :meth:`copy_state_dict` ``(k)``, a ``SmallCNN`` state dict; :meth:`from_models`
    stacks ``K`` networks built (and initialised) one by one, so each copy keeps its own initialisation.

    Args:
        copies: ``K``.
        in_channels: Image channels (1 grey, 3 RGB).
        num_classes: Output logits per copy.
        width: ``SmallCNN``'s width.
    """

    def __init__(self, copies: int, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 1:
            raise ValueError(f"copies must be a positive integer, got {copies!r}")
        _check_sizes(in_channels, num_classes)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.copies, self.in_channels, self.num_classes, self.width = int(copies), in_channels, num_classes, width
        #: Run the first convolution copy by copy (bit-identical to single networks on the CPU) instead of as one
        #: grouped call; ``None``: on the CPU only.
        self.exact: bool | None = None
        k = self.copies
        layers: list[nn.Module] = []
        for cin, cout, stride in _BLOCKS:
            cin = in_channels if cin == 0 else cin * width
            layers.append(nn.Sequential(
                nn.Conv2d(k * cin, k * cout * width, 3, stride=stride, padding=1, bias=False, groups=k),
                nn.BatchNorm2d(k * cout * width), nn.ReLU(inplace=True)))
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = d = 4 * width
        bound = 1.0 / math.sqrt(d)  # nn.Linear's default init, per copy
        self.fc_weight = nn.Parameter(torch.empty(k, num_classes, d).uniform_(-bound, bound))  # (K, C, D)
        self.fc_bias = nn.Parameter(torch.empty(k, num_classes).uniform_(-bound, bound))  # (K, C)

    @classmethod
    def from_models(cls, models: Sequence[SmallCNN]) -> "BatchedSmallCNN":
        """Stack ``models`` (same sizes) into one batched module on their device; copy ``k`` is ``models[k]``."""
        if not models or not all(isinstance(m, SmallCNN) for m in models):
            raise ValueError("from_models needs a non-empty list of classifiers.backbones.SmallCNN models")
        first = models[0]
        conv = first.body[0][0]
        with torch.random.fork_rng(devices=[]):  # the placeholder init below must not move the global RNG
            out = cls(len(models), conv.in_channels, first.fc.out_features, conv.out_channels)
        out.to(conv.weight.device)
        for k, m in enumerate(models):
            out.load_copy(k, m.state_dict())
        return out

    # -- the per-copy view of the state ------------------------------------------------------------
    def _copy_view(self, name: str, tensor: torch.Tensor, k: int) -> torch.Tensor | None:
        """Copy ``k``'s block of a batched state entry (a view), or ``None`` for entries all copies share."""
        if tensor.ndim == 0:  # BatchNorm's num_batches_tracked
            return None
        return tensor.view(self.copies, -1, *tensor.shape[1:])[k] if not name.startswith("fc_") else tensor[k]

    def copy_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Copy ``k`` as a :class:`~classifiers.backbones.SmallCNN` state dict (cloned tensors)."""
        out = {}
        for name, t in self.state_dict().items():
            view = self._copy_view(name, t, k)
            key = {"fc_weight": "fc.weight", "fc_bias": "fc.bias"}.get(name, name)
            out[key] = (t if view is None else view).detach().clone()
        return out

    def load_copy(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Overwrite copy ``k`` with a :class:`~classifiers.backbones.SmallCNN` state dict of the same sizes."""
        with torch.no_grad():
            for name, t in self.state_dict().items():
                view = self._copy_view(name, t, k)
                if view is not None:
                    src = state[{"fc_weight": "fc.weight", "fc_bias": "fc.bias"}.get(name, name)]
                    if tuple(src.shape) != tuple(view.shape):
                        raise ValueError(f"{name}: copy has shape {tuple(view.shape)}, the state {tuple(src.shape)}; "
                                         "build both with the same in_channels, num_classes and width")
                    view.copy_(src)

    def copy_tensors(self, k: int) -> list[torch.Tensor]:
        """Views of copy ``k``'s block of every parameter and buffer (for finiteness checks and roll-backs)."""
        return [v for name, t in self.state_dict(keep_vars=True).items()
                if (v := self._copy_view(name, t.data, k)) is not None]

    # -- forward -----------------------------------------------------------------------------------
    def _stem(self, xs) -> torch.Tensor:
        """The first convolution of every copy, ``(B, K * width, H, W)``, from each copy's ``(B, C, H, W)`` batch.

        On the CPU it runs copy by copy: oneDNN's grouped kernel for 3 input channels per group sums in another
        order than the plain convolution (the later layers' grouped kernels match it exactly), and this layer
        is ~5% of the arithmetic. Elsewhere one grouped call.
        """
        conv = self.body[0][0]
        if not self._exact():
            return conv(torch.cat(list(xs), 1) if isinstance(xs, list) else xs)
        if not isinstance(xs, list):
            xs = list(xs.view(xs.shape[0], self.copies, -1, *xs.shape[2:]).unbind(1))
        w = conv.weight.view(self.copies, -1, *conv.weight.shape[1:])
        return torch.cat([F.conv2d(x, w[k], stride=conv.stride, padding=conv.padding) for k, x in enumerate(xs)], 1)

    def _exact(self) -> bool:
        return self.body[0][0].weight.device.type == "cpu" if self.exact is None else bool(self.exact)

    def _features(self, stem: torch.Tensor) -> torch.Tensor:
        b = stem.shape[0]
        first = self.body[0]
        h = first[2](first[1](stem))
        return self.body[1:](h).view(b, self.copies, -1).transpose(0, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, C, H, W)`` images (one batch per copy) -> ``(K, B, feature_dim)``."""
        if x.ndim != 5 or x.shape[0] != self.copies:
            raise ValueError(f"got images shaped {tuple(x.shape)} for {self.copies} copies; pass one batch per "
                             "copy, shaped (K, B, C, H, W) (forward_shared feeds the same images to every copy)")
        if self._exact():
            return self._features(self._stem(list(x.unbind(0))))
        return self._features(self._stem(x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])))

    def _heads(self, feats: torch.Tensor) -> torch.Tensor:
        # One linear per copy, each on a contiguous (B, D) block: the same matrix product a single SmallCNN does.
        return torch.stack([F.linear(feats[k].contiguous(), self.fc_weight[k], self.fc_bias[k])
                            for k in range(self.copies)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, C, H, W)`` -> logits ``(K, B, num_classes)``, copy ``k`` on batch ``x[k]``."""
        return self._heads(self.features(x))

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images seen by every copy -> logits ``(K, B, num_classes)``."""
        xs = [x] * self.copies if self._exact() else x.repeat(1, self.copies, 1, 1)
        return self._heads(self._features(self._stem(xs)))


class BatchedAdamW(torch.optim.Optimizer):
    """AdamW over parameters whose leading axis is the copy (``K`` blocks), with a step count and learning rate
    per copy.

    The update is ``torch.optim.AdamW``'s single-tensor one, operation for operation, so on the CPU copy ``k``
    moves exactly as a ``torch.optim.AdamW`` over its own network would. When every copy is at the same step
    with the same rate the update runs on whole tensors; otherwise copy by copy on views of its block.

    Args:
        params: The batched module's parameters (each viewable as ``(K, -1)``).
        copies: ``K``.
        lr, betas, eps, weight_decay: As ``torch.optim.AdamW``; ``lr`` is every copy's start rate.
    """

    def __init__(self, params, copies: int, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.copies = int(copies)
        for p in self.param_groups[0]["params"]:
            if p.ndim == 0 or p.shape[0] % self.copies:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} has no copy axis of {self.copies} blocks")
        #: Learning rate of each copy (python floats, as torch's AdamW uses); set before :meth:`step`.
        self.lrs = [float(lr)] * self.copies
        #: Adam steps taken by each copy (its bias correction).
        self.steps = [0.0] * self.copies
        #: Update copy by copy (bit-identical to separate AdamWs on the CPU) even when all copies share a step and
        #: rate; ``None``: on the CPU only.
        self.exact: bool | None = None

    def reset_copies(self, copies: Sequence[int]) -> None:
        """A fresh optimiser for ``copies``: moments zeroed, step count 0 (the rate is the caller's)."""
        for p in self.param_groups[0]["params"]:
            state = self.state.get(p)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    m = state[key].view(self.copies, -1)
                    for k in copies:
                        m[k].zero_()
        for k in copies:
            self.steps[k] = 0.0

    def state_dict(self) -> dict:
        out = super().state_dict()
        out["copies"] = {"lrs": list(self.lrs), "steps": list(self.steps)}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("copies", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.lrs, self.steps = list(extra["lrs"]), list(extra["steps"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        for k in range(self.copies):
            self.steps[k] += 1.0
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            # Whole tensors when every copy is at the same step and rate, off the CPU. On the CPU always copy by
            # copy: a vectorised loop ends in a scalar tail, and some ops (lerp_, addcdiv_) round differently
            # there, so a copy's block must start where a single network's tensor starts to update alike.
            exact = p.device.type == "cpu" if self.exact is None else self.exact
            uniform = not exact and len(set(self.steps)) == 1 and len(set(self.lrs)) == 1
            blocks = [(p, p.grad, state["exp_avg"], state["exp_avg_sq"], self.lrs[0], self.steps[0])] if uniform \
                else [(p.view(self.copies, -1)[k], p.grad.view(self.copies, -1)[k], state["exp_avg"].view(
                    self.copies, -1)[k], state["exp_avg_sq"].view(self.copies, -1)[k], self.lrs[k], self.steps[k])
                      for k in range(self.copies)]
            for param, grad, exp_avg, exp_avg_sq, lr, step in blocks:
                # torch.optim.adam._single_tensor_adam with decoupled weight decay, operation for operation
                if group["weight_decay"] != 0:
                    param.mul_(1 - lr * group["weight_decay"])
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(group["eps"])
                param.addcdiv_(exp_avg, denom, value=-step_size)
        return loss


def _per_copy(value, k: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ValueError(f"{name} has {len(value)} entries for {k} copies; pass one per copy or a single value")
        return list(value)
    return [value] * k


def train_batched(model: BatchedSmallCNN, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                  loss="ce", class_counts=None, epochs: int = 10, batch_size: int = 64, lr=1e-3,
                  weight_decay: float = 5e-4, sampler: str = "uniform", augment: bool = False,
                  device: str | torch.device = "cpu", generators: Sequence[torch.Generator],
                  optimizer: BatchedAdamW | None = None) -> dict:
    """Train every copy of ``model`` (in place) on its own images: ``K`` :func:`~classifiers.training.train_classifier`
    runs in one loop.

    Copy ``k`` gets ``images[k]``, ``labels[k]``, loss ``loss[k]`` and every random draw from ``generators[k]``, in
    the order ``train_classifier`` makes them; on the CPU it ends with the weights a ``train_classifier`` call on
    the copy alone ends with (same initial weights, data and generator state). The copies share mini-batch
    boundaries, so every copy must train on the same number of images.

    Args:
        model: The copies; moved to ``device`` and left in eval mode.
        images: ``K`` uint8 ``(N, H, W, C)`` arrays, the same ``N`` for all.
        labels: ``K`` ``(N,)`` int arrays.
        loss: A loss name or module, or one per copy (modules' ``set_epoch`` is called).
        class_counts: ``(C,)`` counts for a named loss, or one per copy; default each copy's label counts.
        epochs, batch_size, weight_decay, sampler, augment: As :func:`~classifiers.training.train_classifier`.
        lr: Learning rate, or one per copy (ignored with ``optimizer``, whose :attr:`BatchedAdamW.lrs` the
            caller sets).
        device: Where to train (:func:`classifiers.device.select_device`); nothing assumes CUDA.
        generators: ``K`` generators, each the source of its copy's randomness.
        optimizer: Continue with this :class:`BatchedAdamW` over ``model``'s parameters; default a fresh one.

    Returns:
        ``{"loss": [per epoch, the mean training loss of each copy (a list of K floats)]}``.
    """
    if not isinstance(model, BatchedSmallCNN):
        raise ValueError(f"train_batched trains a BatchedSmallCNN, got {type(model).__name__}; stack SmallCNNs "
                         "with BatchedSmallCNN.from_models")
    k = model.copies
    dev = select_device(device)
    if len(images) != k or len(labels) != k or len(generators) != k:
        raise ValueError(f"the model has {k} copies but got {len(images)} image sets, {len(labels)} label sets and "
                         f"{len(generators)} generators; pass one of each per copy")
    for x in images:
        _check_images(x)
    ys = [_check_labels(x, y, model.num_classes) for x, y in zip(images, labels)]
    sizes = sorted({len(y) for y in ys})
    if len(sizes) > 1:
        raise ValueError(f"every copy must train on the same number of images (they share mini-batches), got "
                         f"{sizes}; subsample the larger sets or train them apart")
    lrs = [float(v) for v in _per_copy(lr, k, "lr")]
    for v in lrs:
        _check_settings(epochs, batch_size, v, sampler)
    losses = [_resolve_loss(fn, counts, y, model.num_classes).to(dev) for fn, counts, y in
              zip(_per_copy(loss, k, "loss"), _per_copy(class_counts, k, "class_counts"), ys)]
    model.to(dev)
    if optimizer is None:
        optimizer = BatchedAdamW(model.parameters(), k, lr=lrs[0], weight_decay=weight_decay)
        optimizer.lrs = lrs
    elif optimizer.copies != k:
        raise ValueError(f"the optimizer is for {optimizer.copies} copies, the model has {k}")
    use_amp = autocast_dtype(dev) == torch.float16
    scaler = torch.amp.GradScaler(dev.type) if use_amp else None  # shared: an overflow skips every copy's step
    y_cpu = [torch.from_numpy(y) for y in ys]
    y_dev = [y.to(dev) for y in y_cpu]
    history: dict = {"loss": []}
    for epoch in range(epochs):
        for fn in losses:
            if hasattr(fn, "set_epoch"):
                fn.set_epoch(epoch, epochs)
        model.train()
        orders = [_batches(_epoch_order(y, sampler, g), batch_size) for y, g in zip(y_cpu, generators)]
        totals = [torch.zeros((), dtype=torch.float64, device=dev) for _ in range(k)]
        for step_idx in zip(*orders):
            xs = []
            for c in range(k):
                x = images_to_tensor(images[c][step_idx[c].numpy()], dev)
                xs.append(random_flip_shift(x, generators[c]) if augment else x)
            with autocast(dev):
                logits = model(torch.stack(xs))
            per_copy = [fn(logits[c].float(), y_dev[c][step_idx[c].to(dev)]) for c, fn in enumerate(losses)]
            total = torch.stack(per_copy).sum() if k > 1 else per_copy[0]
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                total.backward()
                optimizer.step()
            else:
                scaler.scale(total).backward()
                scaler.step(optimizer)
                scaler.update()
            for c in range(k):
                totals[c] += per_copy[c].detach().double() * len(step_idx[c])
        history["loss"].append([float(t) / len(ys[0]) for t in totals])
    model.eval()
    return history


def predict_logits_batched(model: BatchedSmallCNN, images: np.ndarray, *, device: str | torch.device = "cpu",
                           batch_size: int = 256) -> np.ndarray:
    """float32 logits ``(K, N, C)`` of every copy on the same uint8 ``(N, H, W, C)`` images (eval mode, no grad).

    The model's train/eval mode is restored afterwards.
    """
    return _run(model, model.forward_shared, images, None, device, batch_size, dim=1,
                empty=np.zeros((model.copies, 0, model.num_classes), np.float32))


def init_seed(generator: torch.Generator) -> int:
    """The global-RNG seed a copy's network is initialised from, drawn from its generator (as pixel mode does)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def make_copies(seeds: Sequence[int], in_channels: int, num_classes: int, *, width: int = 32,
                device: str | torch.device = "cpu") -> BatchedSmallCNN:
    """``K`` SmallCNNs, copy ``k`` initialised after ``torch.manual_seed(seeds[k])``, stacked on ``device``.

    Torch's global RNG is restored afterwards, so building copies does not move it.
    """
    state = torch.random.get_rng_state()
    try:
        models = []
        for s in seeds:
            torch.manual_seed(int(s))
            models.append(SmallCNN(in_channels, num_classes, width))
    finally:
        torch.random.set_rng_state(state)
    return BatchedSmallCNN.from_models(models).to(select_device(device))


__all__ = ["BatchedAdamW", "BatchedSmallCNN", "init_seed", "make_copies", "predict_logits_batched", "train_batched"]
