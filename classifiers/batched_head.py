"""K linear or one-hidden-layer MLP softmax heads trained together by full-batch Adam.

This is the hot path of the environment's feature mode: every env step trains a head for a few epochs
on the current mix of real and synthetic features. A step must cost about a millisecond, so the head
uses hand-written gradients (no autograd graph, no optimizer objects) and full-batch epochs (the
prototype lost 7x to mini-batching, FINDINGS.md). ``K`` independent heads, one per env copy, are trained
in the same batched matrix products; a copy's numbers do not depend on the other copies.

Padding: copies may have different numbers of rows. Rows carry a weight, and padding rows have weight 0.
"""
from __future__ import annotations

import math

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


class BatchedHead:
    """``K`` softmax heads ``(D -> C)`` (linear, or ``D -> hidden -> C`` with ReLU) trained by Adam.

    Args:
        num_copies: ``K``, the number of independent heads.
        in_dim: Feature dimension ``D``.
        num_classes: ``C``.
        hidden: 0 for a linear head, else the MLP hidden width.
        lr: Adam learning rate.
        weight_decay: L2 penalty on weights (not biases).
        device: Where the parameters live.
    """

    def __init__(self, num_copies: int, in_dim: int, num_classes: int, *, hidden: int = 0, lr: float = 0.05,
                 weight_decay: float = 1e-4, device: torch.device | str = "cpu") -> None:
        if num_copies < 1 or in_dim < 1 or num_classes < 2:
            raise ValueError(f"need num_copies >= 1, in_dim >= 1, num_classes >= 2; got {num_copies}, "
                             f"{in_dim}, {num_classes}")
        self.k, self.d, self.c, self.hidden = num_copies, in_dim, num_classes, hidden
        self.lr, self.weight_decay = lr, weight_decay
        self.device = torch.device(device)
        shapes = [(in_dim, num_classes), (1, num_classes)] if hidden == 0 else \
            [(in_dim, hidden), (1, hidden), (hidden, num_classes), (1, num_classes)]
        self.params = [torch.zeros((num_copies, *s), device=self.device) for s in shapes]
        self._m = [torch.zeros_like(p) for p in self.params]
        self._v = [torch.zeros_like(p) for p in self.params]
        self._t = torch.zeros(num_copies, device=self.device)

    # -- state -------------------------------------------------------------------------------
    def reset(self, generators: list[torch.Generator], copies: list[int] | None = None) -> None:
        """Re-initialise the heads of ``copies`` (default all), copy ``i`` from ``generators[i]``.

        Weights use PyTorch's default Linear init (uniform in +-1/sqrt(fan_in)), drawn on the CPU from
        the copy's own generator so that a copy's start does not depend on ``K`` or the device.
        """
        copies = list(range(self.k)) if copies is None else copies
        if len(generators) != len(copies):
            raise ValueError(f"need one generator per copy: {len(generators)} for {len(copies)} copies")
        for g, i in zip(generators, copies):
            for p in self.params:
                fan_in = self._fan_in(p)
                bound = 1.0 / math.sqrt(fan_in)
                p[i] = (torch.rand(p.shape[1:], generator=g) * 2 - 1).mul_(bound).to(self.device)
            for s in (*self._m, *self._v):
                s[i] = 0
            self._t[i] = 0

    def _fan_in(self, p: torch.Tensor) -> int:
        idx = next(j for j, q in enumerate(self.params) if q is p)
        return self.d if idx in (0, 1) else self.hidden

    def state_dict(self) -> dict:
        return {"params": [p.clone() for p in self.params], "m": [m.clone() for m in self._m],
                "v": [v.clone() for v in self._v], "t": self._t.clone()}

    def load_state_dict(self, state: dict) -> None:
        for dst, src in zip(self.params, state["params"]):
            dst.copy_(src)
        for dst, src in zip(self._m, state["m"]):
            dst.copy_(src)
        for dst, src in zip(self._v, state["v"]):
            dst.copy_(src)
        self._t.copy_(state["t"])

    # -- math --------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(K, N, D)`` (or ``(N, D)``, shared by all copies) -> logits ``(K, N, C)``."""
        return self._logits_t(self._xt(x)).transpose(1, 2)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``(K, N)`` for ``x`` ``(K, N, D)`` or ``(N, D)``."""
        return self._logits_t(self._xt(x)).argmax(1)

    def _xt(self, x: torch.Tensor) -> torch.Tensor:
        return x.t() if x.dim() == 2 else x.transpose(1, 2)

    @staticmethod
    def _lin(w: torch.Tensor, b: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """``(K, O, N)`` outputs of weights ``(K, D, O)`` and bias ``(K, 1, O)`` on ``xt``.

        ``xt`` is ``(K, D, N)`` (rows per copy) or ``(D, N)`` (rows shared by every copy): then all copies run
        as one GEMM of ``(K * O, D) @ (D, N)``, the fast case the env uses.
        """
        if xt.dim() == 2:  # explicit (K*O, D) GEMM: torch.matmul's broadcasting path was ~20x slower here
            k, d, o = w.shape
            return (w.transpose(1, 2).reshape(k * o, d) @ xt).view(k, o, -1).add_(b.transpose(1, 2))
        return torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), xt)

    @staticmethod
    def _wgrad(xt: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """dL/dW ``(K, D, O)`` from inputs ``xt`` and output gradients ``g`` ``(K, O, N)``."""
        if xt.dim() == 2:
            k, o, n = g.shape
            return (xt @ g.reshape(k * o, n).t()).view(-1, k, o).permute(1, 0, 2)
        return torch.bmm(xt, g.transpose(1, 2))

    # Internally logits are laid out (K, C, N): a softmax over a short last axis is ~20x slower on the CPU
    # than over the middle axis of a contiguous (K, C, N) tensor, and it is the hottest op of a step.
    def _logits_t(self, xt: torch.Tensor) -> torch.Tensor:
        if self.hidden == 0:
            return self._lin(*self.params, xt)
        w1, b1, w2, b2 = self.params
        return torch.baddbmm(b2.transpose(1, 2), w2.transpose(1, 2), self._lin(w1, b1, xt).clamp_min_(0))

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
        xt, onehot, w_row, off = self._prepare(x, y, row_weight, offset, class_weight)
        loss = torch.zeros(self.k, device=x.device)
        for epoch in range(epochs):
            # The loss value costs two passes over (K, C, N); only the last epoch's is reported.
            loss, grads = self._loss_and_grads(xt, onehot, w_row, off, need_loss=epoch == epochs - 1)
            self._adam(grads, 0.9, 0.999, 1e-8)
        return loss

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor, row_weight: torch.Tensor, *,
                       offset: torch.Tensor | None = None, class_weight: torch.Tensor | None = None):
        """The weighted mean cross-entropy per copy and its gradients (no update). For tests."""
        return self._loss_and_grads(*self._prepare(x, y, row_weight, offset, class_weight))

    def _prepare(self, x, y, row_weight, offset, class_weight):
        if x.dim() == 2:  # rows shared by every copy
            onehot = torch.zeros(1, self.c, len(y), device=x.device)
            onehot.scatter_(1, y.view(1, 1, -1), 1.0)
            w_row = row_weight if class_weight is None else row_weight * class_weight[:, y]
        else:
            k, n, _ = x.shape
            onehot = torch.zeros(k, self.c, n, device=x.device)
            onehot.scatter_(1, y.unsqueeze(1), 1.0)
            w_row = row_weight if class_weight is None else row_weight * torch.gather(class_weight, 1, y)
        # Normalise per copy so the gradient scale does not depend on how many rows the mix has.
        w_row = (w_row / w_row.sum(dim=1, keepdim=True).clamp_min(1e-12)).unsqueeze(1)
        off = None if offset is None else offset.unsqueeze(2)
        return self._xt(x), onehot, w_row, off

    def _loss_and_grads(self, xt, onehot, w_row, off, need_loss: bool = True):
        if self.hidden == 0:
            z = self._logits_t(xt)
        else:
            w1, b1, w2, b2 = self.params
            pre = self._lin(w1, b1, xt)
            h = pre.clamp_min(0)
            z = torch.baddbmm(b2.transpose(1, 2), w2.transpose(1, 2), h)
        if off is not None:
            z = z + off
        loss = -(torch.log_softmax(z, dim=1) * onehot).sum(1).mul(w_row.squeeze(1)).sum(1) if need_loss else None
        gz = torch.softmax(z, dim=1).sub_(onehot).mul_(w_row)  # dL/dz, (K, C, N)
        if self.hidden == 0:
            return loss, [self._wgrad(xt, gz), gz.sum(2).unsqueeze(1)]
        gh = torch.bmm(w2, gz).mul_((pre > 0).to(gz.dtype))
        return loss, [self._wgrad(xt, gh), gh.sum(2).unsqueeze(1),
                      torch.bmm(h, gz.transpose(1, 2)), gz.sum(2).unsqueeze(1)]

    def _adam(self, grads: list[torch.Tensor], b1: float, b2: float, eps: float) -> None:
        # foreach ops: one kernel launch per op for all parameters (a step is launch-bound, not FLOP-bound)
        if self.weight_decay:  # L2 on weights, not biases
            grads = [g.add(p, alpha=self.weight_decay) if j % 2 == 0 else g
                     for j, (p, g) in enumerate(zip(self.params, grads))]
        self._t += 1
        t = self._t.view(-1, 1, 1)
        c1 = 1 - b1 ** t
        c2_sqrt = (1 - b2 ** t).sqrt_()
        torch._foreach_mul_(self._m, b1)
        torch._foreach_add_(self._m, grads, alpha=1 - b1)
        torch._foreach_mul_(self._v, b2)
        torch._foreach_addcmul_(self._v, grads, grads, value=1 - b2)
        denom = torch._foreach_sqrt(self._v)
        torch._foreach_div_(denom, [c2_sqrt] * len(denom))
        torch._foreach_add_(denom, eps)
        step = torch._foreach_div(self._m, denom)
        torch._foreach_div_(step, [c1] * len(step))
        torch._foreach_add_(self.params, step, alpha=-self.lr)
