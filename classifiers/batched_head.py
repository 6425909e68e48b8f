"""K linear or one-hidden-layer MLP softmax heads trained together by full-batch Adam.

This is the hot path of the environment's feature mode: every env step trains a head for a few epochs
on the current mix of real and synthetic features. A step must cost about a millisecond, so the head
uses hand-written gradients (no autograd graph, no optimizer objects) and full-batch epochs (a prototype on a
2-core CPU took 19 ms per mini-batched head epoch against 2.6 ms full-batch; ``benchmarks/env_speed.py`` times
today's step against a plain full-batch ``nn.Linear`` + Adam floor). ``K`` independent heads, one per env copy,
are trained in the same batched matrix products; a copy's numbers do not depend on the other copies.

Padding: copies may have different numbers of rows. Rows carry a weight, and padding rows have weight 0.

A step is launch-bound, not FLOP-bound (a 5-class head on 2,000 rows is ~50k multiply-adds), so the layout
minimises the number of tensor ops per epoch:

- every layer is stored as one ``(K, out, in + 1)`` matrix whose last column is the bias, and the inputs get
  a row of ones, so one GEMM gives outputs plus bias and one GEMM gives the weight and bias gradients;
- all layers of all copies live in one flat buffer (layer-major); Adam is PyTorch's fused kernel (one call
  for every copy, each copy with its own step count), where the foreach version took a dozen ops;
- logit offsets (logit adjustment, balanced softmax) are added to the bias for the epochs and taken off
  afterwards: biases have no weight decay, so Adam sees exactly the gradients of the offset logits.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

HEAD_LOSSES = ("ce", "logit_adjustment", "balanced_softmax", "class_balanced")


def loss_terms(loss: str, counts: torch.Tensor, *, tau: float = 1.0, beta: float = 0.9999
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time logit offsets and per-class weights that turn softmax CE into ``loss``.

    Args:
        loss: One of :data:`HEAD_LOSSES`.
        counts: ``(K, C)`` training rows per class in each copy's current mix.
        tau: Logit-adjustment temperature (Menon et al. 2021).
        beta: Class-balanced effective-number parameter (Cui et al. 2019).

    Returns:
        ``offset`` ``(K, C)`` added to logits during training only, and ``class_weight`` ``(K, C)``.
    """
    counts = counts.to(torch.float32).clamp_min(1.0)
    zeros = torch.zeros_like(counts)
    ones = torch.ones_like(counts)
    if loss == "ce":
        return zeros, ones
    if loss in ("logit_adjustment", "balanced_softmax"):
        # Balanced softmax is logit adjustment with tau = 1 (Ren et al. 2020; Menon et al. 2021).
        t = 1.0 if loss == "balanced_softmax" else tau
        prior = counts / counts.sum(dim=1, keepdim=True)
        return t * prior.log(), ones
    if loss == "class_balanced":
        eff = (1.0 - torch.pow(torch.tensor(beta), counts)) / (1.0 - beta)
        w = 1.0 / eff
        return zeros, w * counts.shape[1] / w.sum(dim=1, keepdim=True)
    raise ValueError(f"unknown head loss {loss!r}; choose one of {HEAD_LOSSES} (focal and LDAM-DRW need "
                     "mode='pixel', which trains with classifiers.losses)")


class _Batch(NamedTuple):
    """One call's training data, prepared once for all its epochs."""

    xa: torch.Tensor  # inputs with a row of ones, (D + 1, N) shared or (K, D + 1, N)
    onehot: torch.Tensor  # (1 or K, C, N)
    w_row: torch.Tensor  # (K, 1, N) row weights, normalised per copy
    neg_target: torch.Tensor | None  # MLP: -onehot * w, (K, C, N)
    wxa_t: torch.Tensor | None  # linear: (w * xa)^T, (K, N, D + 1)
    target_grad: torch.Tensor | None  # linear: onehot @ (w * xa)^T, (K, C, D + 1)


class BatchedHead:
    """``K`` softmax heads ``(D -> C)`` (linear, or ``D -> hidden -> C`` with ReLU) trained by Adam.

    Args:
        num_copies: ``K``, the number of independent heads.
        in_dim: Feature dimension ``D``.
        num_classes: ``C``.
        hidden: 0 for a linear head, else the MLP hidden width.
        lr: Adam learning rate.
        weight_decay: L2 penalty on weights (not biases), added to the gradient as ``torch.optim.Adam`` does.
        device: Where the parameters live.
        lr_schedule: ``"constant"`` (every step at ``lr``) or ``"cosine"``: Adam step ``t`` of a copy (counted from
            its last :meth:`reset`, so copies may be at different points of their episodes) uses
            ``lr * (1 + cos(pi * min(t / total_steps, 1))) / 2``: ``lr`` at the first step, near 0 at the last.
        total_steps: The episode's Adam steps (``max_steps * epochs``); needed by ``"cosine"``.
    """

    def __init__(self, num_copies: int, in_dim: int, num_classes: int, *, hidden: int = 0, lr: float = 0.05,
                 weight_decay: float = 1e-4, device: torch.device | str = "cpu", lr_schedule: str = "constant",
                 total_steps: int | None = None) -> None:
        if num_copies < 1 or in_dim < 1 or num_classes < 2 or hidden < 0:
            raise ValueError(f"need num_copies >= 1, in_dim >= 1, num_classes >= 2, hidden >= 0; got {num_copies}, "
                             f"{in_dim}, {num_classes}, {hidden}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule={lr_schedule!r} is invalid: use 'constant' or 'cosine'")
        if lr_schedule == "cosine" and (total_steps is None or int(total_steps) < 1):
            raise ValueError(f"lr_schedule='cosine' needs total_steps >= 1 (the episode's Adam steps); got {total_steps!r}")
        self.lr_schedule, self.total_steps = lr_schedule, None if total_steps is None else int(total_steps)
        self.k, self.d, self.c, self.hidden = num_copies, in_dim, num_classes, hidden
        self.lr, self.weight_decay = lr, weight_decay
        self.device = torch.device(device)
        self.layers = [(num_classes, in_dim)] if hidden == 0 else [(hidden, in_dim), (num_classes, hidden)]
        self.flat = torch.zeros(sum(num_copies * o * (i + 1) for o, i in self.layers), device=self.device)
        self._m = torch.zeros_like(self.flat)
        self._v = torch.zeros_like(self.flat)
        self._grad = torch.zeros_like(self.flat)
        decay = torch.cat([torch.ones(num_copies, o, i + 1).index_fill_(2, torch.tensor([i]), 0.0).flatten()
                           for o, i in self.layers])  # 1 on weights, 0 on biases
        self._decay = (decay * weight_decay).to(self.device)
        # Adam steps per copy. The fused Adam kernel takes one step tensor per parameter tensor, so every copy's
        # layers are passed as tensors of their own: copies keep their own bias corrections (they may reset at
        # different times) and the whole update is still one kernel call.
        self._steps = torch.zeros(num_copies, device=self.device)
        self._frozen: tuple | None = None  # see _frozen_inputs
        self._link_views()  # (K, out, in + 1) views of the flat buffers per layer, per-copy views for Adam

    def _link_views(self) -> None:
        """The per-layer and per-copy views of the flat buffers (``_w``, ``_gw``, ``_mw``, ``_vw``, ``_adam_args``).

        They must share memory with ``flat``, ``_grad``, ``_m``, ``_v`` and ``_steps``: Adam updates the views and
        the forward pass reads them. Pickle stores each tensor's storage on its own (deepcopy keeps views, pickle
        and cloudpickle do not), so :meth:`__setstate__` rebuilds the views rather than unpickling detached copies
        that the fused Adam step would update while the head kept predicting with its first weights.
        """
        self._w, self._gw = self._views_of(self.flat), self._views_of(self._grad)
        self._mw, self._vw = self._views_of(self._m), self._views_of(self._v)
        per_copy = [(i, j) for i in range(self.k) for j in range(len(self.layers))]
        self._adam_args = ([self._w[j][i] for i, j in per_copy], [self._gw[j][i] for i, j in per_copy],
                           [self._mw[j][i] for i, j in per_copy], [self._vw[j][i] for i, j in per_copy], [],
                           [self._steps[i] for i, _ in per_copy])

    #: Attributes that are views of the flat buffers, rebuilt on unpickling (see :meth:`_link_views`).
    _VIEWS = ("_w", "_gw", "_mw", "_vw", "_adam_args")

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in self._VIEWS}
        state["_frozen"] = None  # a cache of inputs derived from the caller's tensors, rebuilt on the next call
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._link_views()

    @property
    def params(self) -> list[torch.Tensor]:
        """Views in the conventional shapes: ``W1 (K, D, O)``, ``b1 (K, 1, O)`` (then ``W2``, ``b2`` for the MLP)."""
        return self._split(self._w)

    @staticmethod
    def _split(mats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for w in mats:
            out += [w[:, :, :-1].transpose(1, 2), w[:, :, -1:].transpose(1, 2)]
        return out

    # -- state -------------------------------------------------------------------------------
    def reset(self, generators: list[torch.Generator], copies: list[int] | None = None) -> None:
        """Re-initialise the heads of ``copies`` (default all), copy ``i`` from ``generators[i]``.

        Weights use PyTorch's default Linear init (uniform in +-1/sqrt(fan_in)), drawn on the CPU from
        the copy's own generator (weights ``(in, out)`` then bias, layer by layer) so that a copy's start does
        not depend on ``K`` or the device.
        """
        copies = list(range(self.k)) if copies is None else list(copies)
        if len(generators) != len(copies):
            raise ValueError(f"need one generator per copy: {len(generators)} for {len(copies)} copies")
        for g, i in zip(generators, copies):
            for w, (o, fan_in) in zip(self._w, self.layers):
                bound = 1.0 / math.sqrt(fan_in)
                weight = (torch.rand(fan_in, o, generator=g) * 2 - 1).mul_(bound)
                bias = (torch.rand(1, o, generator=g) * 2 - 1).mul_(bound)
                w[i] = torch.cat([weight, bias], 0).t().to(self.device)
            for mats in (self._mw, self._vw):
                for w in mats:
                    w[i] = 0
            self._steps[i] = 0

    def state_dict(self) -> dict:
        """Copies of the parameters and Adam state: ``params``, ``m``, ``v`` each a one-tensor list ``[(K, P)]``
        (every copy's flattened layers), and ``t`` ``(K,)``."""
        return {**{name: [torch.cat([w.reshape(self.k, -1) for w in views], 1)]
                   for name, views in self._state_views().items()}, "t": self._steps.clone()}

    def load_state_dict(self, state: dict) -> None:
        for name, views in self._state_views().items():
            src, col = state[name][0], 0
            for w in views:
                n = w[0].numel()
                w.copy_(src[:, col:col + n].reshape(w.shape))
                col += n
        self._steps.copy_(torch.as_tensor(state["t"], dtype=self._steps.dtype))

    def snapshot(self) -> tuple[torch.Tensor, ...]:
        """A cheap copy of everything training changes, for :meth:`restore` (four tensor copies)."""
        return self.flat.clone(), self._m.clone(), self._v.clone(), self._steps.clone()

    def restore(self, snapshot: tuple[torch.Tensor, ...], copies) -> None:
        """Put ``copies`` back to their state in ``snapshot``; the other copies keep theirs."""
        idx = torch.as_tensor(copies, dtype=torch.long, device=self.device)
        for buf, old in zip((self.flat, self._m, self._v), snapshot[:3]):
            for w, was in zip(self._views_of(buf), self._views_of(old)):
                w[idx] = was[idx]
        self._steps[idx] = snapshot[3][idx]

    def finite(self) -> torch.Tensor:
        """Per copy ``(K,)`` bool: are all its parameters and Adam moments finite?"""
        if bool(torch.isfinite(torch.cat([self.flat, self._m, self._v])).all()):  # the usual case: one check
            return torch.ones(self.k, dtype=torch.bool, device=self.device)
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for buf in (self.flat, self._m, self._v):
            for w in self._views_of(buf):
                ok &= torch.isfinite(w).reshape(self.k, -1).all(1)
        return ok

    def _views_of(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """``buf`` (the flat layout) as per-layer ``(K, out, in + 1)`` views."""
        views, start = [], 0
        for o, i in self.layers:
            n = self.k * o * (i + 1)
            views.append(buf[start:start + n].view(self.k, o, i + 1))
            start += n
        return views

    def _state_views(self) -> dict[str, list[torch.Tensor]]:
        return {"params": self._w, "m": self._mw, "v": self._vw}

    # -- math --------------------------------------------------------------------------------
    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs with a row of ones, ``(D + 1, N)`` for rows shared by every copy or ``(K, D + 1, N)``."""
        if x.dim() == 2:
            return torch.cat([x.t(), torch.ones(1, len(x), dtype=x.dtype, device=x.device)], 0)
        return torch.cat([x.transpose(1, 2), torch.ones(x.shape[0], 1, x.shape[1], dtype=x.dtype,
                                                          device=x.device)], 1)

    def _affine(self, w: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
        """``(K, O, N)`` outputs of layer ``w`` ``(K, O, I + 1)`` on augmented inputs ``xa``."""
        if xa.dim() == 2:  # one GEMM for all copies: (K*O, I+1) @ (I+1, N)
            k, o, _ = w.shape
            return (w.view(k * o, -1) @ xa).view(k, o, -1)
        return torch.bmm(w, xa)

    def _forward(self, xa: torch.Tensor):
        """Logits ``(K, C, N)``, and for the MLP the pre-activation and augmented hidden layer."""
        if self.hidden == 0:
            return self._affine(self._w[0], xa), None, None
        pre = self._affine(self._w[0], xa)
        ha = torch.ones(self.k, self.hidden + 1, pre.shape[2], device=pre.device)
        torch.clamp_min(pre, 0, out=ha[:, :-1])
        return torch.bmm(self._w[1], ha), pre, ha

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(K, N, D)`` (or ``(N, D)``, shared by all copies) -> logits ``(K, N, C)``."""
        return self._forward(self.inputs(x))[0].transpose(1, 2)

    def predict(self, x: torch.Tensor, *, augmented: bool = False) -> torch.Tensor:
        """Predicted classes ``(K, N)`` for ``x`` ``(K, N, D)`` or ``(N, D)``.

        ``augmented=True``: ``x`` is already :meth:`inputs` of the features (callers that predict on the same
        split every step keep it, saving a copy per step)."""
        # max(1).indices, not argmax(1): the same first-maximum index, ~8x faster over the middle axis on the CPU
        return self._forward(x if augmented else self.inputs(x))[0].max(1).indices

    def train_epochs(self, x: torch.Tensor, y: torch.Tensor, row_weight: torch.Tensor, epochs: int, *,
                     offset: torch.Tensor | None = None, class_weight: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Run ``epochs`` full-batch Adam steps; return the last epoch's loss per copy ``(K,)``.

        Args:
            x: ``(K, N, D)`` features per copy, or ``(N, D)`` rows shared by every copy (each copy's mix is
                then given by its row weights: one GEMM for all copies, no gathering).
            y: ``(K, N)`` (or ``(N,)`` with shared rows) int64 labels.
            row_weight: ``(K, N)`` float: how often each row is in the copy's mix (0 for padding or unused).
            epochs: Number of full-batch steps.
            offset: ``(K, C)`` logit offsets used only during training (logit adjustment).
            class_weight: ``(K, C)`` loss weight per class (class-balanced loss).
        """
        batch = self._prepare(x, y, row_weight, class_weight)
        if offset is not None:  # train the offset logits: shift the bias (no weight decay there), unshift after
            self._w[-1][:, :, -1].add_(offset)
        loss = torch.zeros(self.k, device=batch.xa.device)
        try:
            for epoch in range(epochs):
                # the loss value costs a pass over (K, C, N): only the last epoch's is reported
                last = self._grads(batch, need_loss=epoch == epochs - 1)
                loss = loss if last is None else last
                self._adam()
        finally:
            if offset is not None:
                self._w[-1][:, :, -1].sub_(offset)
        return loss

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor, row_weight: torch.Tensor, *,
                       offset: torch.Tensor | None = None, class_weight: torch.Tensor | None = None):
        """The weighted mean cross-entropy per copy and its gradients (no update), in the shapes of
        :attr:`params`. For tests."""
        batch = self._prepare(x, y, row_weight, class_weight)
        if offset is not None:
            self._w[-1][:, :, -1].add_(offset)
        try:
            loss = self._grads(batch, need_loss=True)
        finally:
            if offset is not None:
                self._w[-1][:, :, -1].sub_(offset)
        return loss, [g.clone() for g in self._split(self._gw)]

    def _prepare(self, x, y, row_weight, class_weight) -> _Batch:
        xa, onehot = self._frozen_inputs(x, y)
        if x.dim() == 2:  # rows shared by every copy
            w_row = row_weight if class_weight is None else row_weight * class_weight[:, y]
        else:
            w_row = row_weight if class_weight is None else row_weight * torch.gather(class_weight, 1, y)
        # Normalise per copy so the gradient scale does not depend on how many rows the mix has.
        # (contiguous: a column-major row weight makes every product below take a slow strided path)
        w_row = (w_row / w_row.sum(dim=1, keepdim=True).clamp_min(1e-12)).contiguous().unsqueeze(1)
        if self.hidden:  # dL/dz = softmax * w - onehot * w (contiguous: a broadcast product can come out permuted)
            return _Batch(xa, onehot, w_row, (onehot * w_row.neg()).contiguous(), None, None)
        # Linear head: dL/dW = (softmax * w - onehot * w) @ xa^T = softmax @ (w * xa)^T - const. Weighting the
        # inputs once per step (not the (K, C, N) gradient every epoch) takes the costliest op out of the epoch.
        wxa_t = (w_row * xa).transpose(1, 2)  # (K, N, D + 1)
        return _Batch(xa, onehot, w_row, None, wxa_t, torch.bmm(onehot.expand(self.k, -1, -1), wxa_t))

    def _frozen_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and one-hot labels of ``(x, y)``; kept for the next call when it passes the very same
        tensors (an env that trains on its whole frozen feature table every step builds them once)."""
        if self._frozen is not None and self._frozen[0] is x and self._frozen[1] is y:
            return self._frozen[2], self._frozen[3]
        if x.dim() == 2:
            onehot = torch.zeros(1, self.c, len(y), device=x.device)
            onehot.scatter_(1, y.view(1, 1, -1), 1.0)
        else:
            onehot = torch.zeros(x.shape[0], self.c, x.shape[1], device=x.device)
            onehot.scatter_(1, y.unsqueeze(1), 1.0)
        self._frozen = (x, y, self.inputs(x), onehot)  # references held, so `is` cannot match a recycled id
        return self._frozen[2], self._frozen[3]

    def _grads(self, batch: _Batch, need_loss: bool = False) -> torch.Tensor | None:
        """Gradients of the weighted cross-entropy into the flat gradient buffer; the loss if ``need_loss``."""
        if self.hidden == 0:
            z, pre, ha = self._affine(self._w[0], batch.xa), None, None
        else:
            z, pre, ha = self._forward(batch.xa)
        p = torch.softmax(z, dim=1)
        loss = None
        if need_loss:  # from the softmax already computed; the floor keeps a sure mistake finite
            loss = -(p * batch.onehot).sum(1).clamp_min_(1e-30).log_().mul_(batch.w_row.squeeze(1)).sum(1)
        if self.hidden == 0:
            torch.bmm(p, batch.wxa_t, out=self._gw[0]).sub_(batch.target_grad)
            return loss
        gz = torch.addcmul(batch.neg_target, p, batch.w_row)  # dL/dz, (K, C, N)
        torch.bmm(gz, ha.transpose(1, 2), out=self._gw[1])
        gh = torch.ops.aten.threshold_backward(torch.bmm(self._w[1][:, :, :-1].transpose(1, 2), gz), pre, 0)
        self._wgrad(gh, batch.xa, self._gw[0])
        return loss

    @staticmethod
    def _wgrad(g: torch.Tensor, xa: torch.Tensor, out: torch.Tensor) -> None:
        """dL/dW ``(K, O, I + 1)`` (bias column included) from output gradients ``g`` ``(K, O, N)``."""
        if xa.dim() == 2:
            k, o, n = g.shape
            torch.mm(g.reshape(k * o, n), xa.t(), out=out.view(k * o, -1))
        else:
            torch.bmm(g, xa.transpose(1, 2), out=out)

    def learning_rates(self) -> list[float]:
        """The learning rate of each copy's next Adam step (``lr`` for all under ``"constant"``)."""
        if self.lr_schedule == "constant":
            return [self.lr] * self.k
        total = self.total_steps
        return [self.lr * 0.5 * (1.0 + math.cos(math.pi * min(t / total, 1.0))) for t in self._steps.tolist()]

    def _adam(self) -> None:
        """One ``torch.optim.Adam`` update (fused kernel) of every copy, L2 on weights only."""
        if self.weight_decay:  # as torch.optim.Adam's weight_decay, but not on biases
            self._grad.addcmul_(self.flat, self._decay)
        if self.lr_schedule == "constant":
            self._steps += 1
            torch._fused_adam_(*self._adam_args, lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
                               amsgrad=False, maximize=False)
            return
        rates = self.learning_rates()  # from each copy's step count before this step (t = 0: the full rate)
        self._steps += 1
        groups: dict[float, list[int]] = {}
        for i, rate in enumerate(rates):
            groups.setdefault(rate, []).append(i)
        n_layers = len(self.layers)
        for rate, copies in groups.items():
            # The kernel takes one scalar rate: one call per distinct rate (one call when the copies are in step).
            if len(groups) == 1:
                args = self._adam_args
            else:
                sel = [i * n_layers + j for i in copies for j in range(n_layers)]
                args = tuple([a[x] for x in sel] if a else [] for a in self._adam_args)
            torch._fused_adam_(*args, lr=rate, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
                               amsgrad=False, maximize=False)
