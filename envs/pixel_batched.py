"""Pixel mode for ``K`` heads at once: :class:`BatchedPixelEngine`.

The batched vector env in ``mode="pixel"`` (one head per copy) and ``reward_replicas > 1`` in pixel mode train
``K`` SmallCNNs. This engine trains them as one grouped network (``classifiers.batched_cnn``): one convolution
call per layer and mini-batch for all heads. Head ``k`` draws its mix, initial weights, sample order and AdamW
state exactly as a :class:`~envs.engine.PixelEngine` given head ``k``'s generators does, so on the CPU a copy of
the vector env follows the single env's trajectory bit for bit (``tests/envs/test_pixel_batched.py``); on a GPU
to float tolerance. The single env (``K = 1``) keeps :class:`~envs.engine.PixelEngine`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from tailmix.envs.engine import PixelEngine, _EpisodeEpochs, draw_pool_indices, segment_counts


class BatchedPixelEngine(PixelEngine):
    """``K`` :class:`~envs.engine.PixelEngine` heads trained in one batched call per mini-batch.

    Args:
        num_copies: ``K``.
        Others: as :class:`~envs.engine.PixelEngine` (``backbone`` must be ``"small_cnn"``; no ``folds``).
    """

    def __init__(self, dataset, pools, *, num_copies: int, backbone: str = "small_cnn", loss: str = "ce",
                 epochs: int = 1, batch_size: int = 64, lr: float = 2e-3, device="cpu", eval_test: bool = False,
                 max_steps: int = 10, folds=None) -> None:
        if backbone != "small_cnn":
            raise ValueError(f"several pixel-mode heads are trained batched for backbone='small_cnn' only, got "
                             f"{backbone!r}; use small_cnn, or step single pixel-mode envs one by one")
        if folds is not None:
            raise ValueError("val_folds >= 2 with several pixel-mode heads (the vector env, reward_replicas) is not "
                             "supported: heads on different folds train on different numbers of images and cannot "
                             "share mini-batches; use val_folds=1, or step single pixel-mode envs one by one")
        super().__init__(dataset, pools, backbone=backbone, loss=loss, epochs=epochs, batch_size=batch_size, lr=lr,
                         device=device, eval_test=eval_test, max_steps=max_steps, folds=None)
        self.k = int(num_copies)
        self._gens: list[torch.Generator | None] = [None] * self.k
        self._epochs = np.zeros(self.k, np.int64)  # each head's epoch of its episode (heads reset apart)
        self._test_pred = None  # every head's test predictions until the weights change

    def reset(self, generators: list[torch.Generator], copies=None) -> None:
        from tailmix.classifiers.backbones import make_backbone
        from tailmix.classifiers.batched_cnn import BatchedAdamW, BatchedSmallCNN

        heads = list(range(self.k)) if copies is None else list(copies)
        self._test_pred = None
        if self.model is None:
            with torch.random.fork_rng(devices=[]):  # placeholders until each head is loaded below
                self.model = BatchedSmallCNN(self.k, self.dataset.image_shape[-1], self.num_classes).to(self.device)
            self.optimizer = BatchedAdamW(self.model.parameters(), self.k, lr=self.lr, weight_decay=5e-4)
        for head, g in zip(heads, generators):
            # PixelEngine.reset's draws: a seed for the global RNG that the module's init reads
            state = torch.random.get_rng_state()
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            net = make_backbone(self.backbone, self.dataset.image_shape[-1], self.num_classes)
            torch.random.set_rng_state(state)
            self.model.load_copy(head, net.state_dict())
            self._gens[head] = g
            self._epochs[head] = 0
        self.optimizer.reset_copies(heads)

    def learning_rates(self) -> list[float]:
        """Each head's rate for its next step: cosine decay over its episode's epochs (see ``learning_rate``)."""
        return [self.lr * 0.5 * (1.0 + math.cos(math.pi * min(int(e) / max(self.total_epochs, 1), 1.0)))
                for e in self._epochs]

    def mix_indices(self, n_syn: np.ndarray, rngs: list[np.random.Generator], heads=None) -> list[np.ndarray]:
        """One mix per row of ``n_syn``, drawn as :meth:`PixelEngine.mix_indices` draws a head's."""
        n = segment_counts(n_syn)
        n_real = len(self._real_y)
        out = []
        for row, rng in zip(n, rngs):
            picks = [n_real + self._seg_starts[s] + draw_pool_indices(rng, int(c), int(self.pool_sizes[s]))
                     for s, c in enumerate(row) if c]
            out.append(np.concatenate([np.arange(n_real), *picks]).astype(np.int64))
        return out

    def _images(self, mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_real = len(self._real_y)
        real, syn = mix[:n_real], mix[n_real:] - n_real
        seg = np.searchsorted(self._seg_starts, syn, side="right") - 1
        picks = [(s, syn[seg == s] - self._seg_starts[s]) for s in np.unique(seg)]
        imgs = [self._real_x[real]] + [self.pools[s][p] for s, p in picks]
        labels = [self._real_y[real]] + [np.full(len(p), self._seg_class[s], np.int64) for s, p in picks]
        return np.concatenate(imgs), np.concatenate(labels)

    def train(self, mixes: list[np.ndarray]) -> np.ndarray:
        from tailmix.classifiers.batched_cnn import train_batched
        from tailmix.classifiers.losses import make_loss

        self._test_pred = None
        data = [self._images(m) for m in mixes]
        inner = [make_loss(self.loss, np.maximum(np.bincount(y, minlength=self.num_classes), 1)) for _, y in data]
        n_real = len(self._real_y)
        self.optimizer.lrs = self.learning_rates()  # one rate per step, as PixelEngine sets it
        last = np.full(self.k, np.nan)
        for _ in range(self.epochs):
            # PixelEngine's compute matching: each head's epoch is n_real samples of its mix, without replacement
            takes = [torch.randperm(len(y), generator=g)[:n_real].numpy() if len(y) > n_real else slice(None)
                     for (_, y), g in zip(data, self._gens)]
            losses = [_EpisodeEpochs(fn, int(e), self.total_epochs) for fn, e in zip(inner, self._epochs)]
            self._epochs += 1
            hist = train_batched(self.model, [x[t] for (x, _), t in zip(data, takes)],
                                 [y[t] for (_, y), t in zip(data, takes)], loss=losses, epochs=1,
                                 batch_size=self.batch_size, device=self.device, generators=self._gens,
                                 optimizer=self.optimizer)
            last = np.asarray(hist["loss"][-1], np.float64)
        return last

    def predict(self, split: str = "val") -> np.ndarray:
        from tailmix.classifiers.batched_cnn import predict_logits_batched

        if split == "test" and self.test_y is None:
            raise ValueError("the env was built without the test split; pass eval_split='test'")
        if split == "test" and self._test_pred is not None:  # the core asks once per copy at an episode's end
            return self._test_pred
        images = self._val_x if split == "val" else self.dataset.test_images
        pred = predict_logits_batched(self.model, images, device=self.device).argmax(2)
        if split == "test":
            self._test_pred = pred
        return pred

    def snapshot(self):
        opt = [(s["exp_avg"].clone(), s["exp_avg_sq"].clone()) if (s := self.optimizer.state.get(p)) else None
               for p in self.optimizer.param_groups[0]["params"]]
        return self.state_dict(), opt, list(self.optimizer.steps)

    def restore(self, snapshot, heads: np.ndarray) -> None:
        """Roll ``heads`` back: their block of every weight, buffer and AdamW moment, and their step counts."""
        model, opt, steps = snapshot
        self._test_pred = None
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                for h in heads:
                    view = self.model._copy_view(name, t, int(h))
                    if view is not None:
                        view.copy_(self.model._copy_view(name, model[name], int(h)))
            for p, saved in zip(self.optimizer.param_groups[0]["params"], opt):
                state = self.optimizer.state.get(p)
                if not state:
                    continue
                for key, old in zip(("exp_avg", "exp_avg_sq"), saved or (None, None)):
                    cur = state[key].view(self.k, -1)
                    for h in heads:
                        cur[int(h)].copy_(old.view(self.k, -1)[int(h)]) if old is not None else cur[int(h)].zero_()
        for h in heads:
            self.optimizer.steps[int(h)] = steps[int(h)]

    def load_state_dict(self, state: dict) -> None:
        self._test_pred = None
        self.model.load_state_dict(state)

    def heads_finite(self) -> np.ndarray:
        return np.array([all(bool(torch.isfinite(v).all()) for v in self.model.copy_tensors(h) if v.is_floating_point())
                         for h in range(self.k)])
