"""What one env step does, for ``K`` env copies at once: build each mix, train, score on val.

The PettingZoo env is ``K = 1``; the batched vector env steps ``K`` copies through the same code, so a
copy's trajectory is the single env's (up to floating-point summation order).

- :class:`FeatureEngine`: features of real train, val, test and every synthetic pool are computed once
  (``envs.features``); a step gathers the mix's rows from one feature table and trains ``K`` heads in
  batched tensor ops (``classifiers.batched_head``).
- :class:`PixelEngine`: a step fine-tunes a CNN on the mixed images (``K = 1`` per engine).

Both implement the :class:`envs.protocols.Engine` protocol (a mix is an array of table rows in both).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch


def synthetic_counts(ratios: np.ndarray, real_counts: np.ndarray) -> np.ndarray:
    """``round(ratio_c * n_real_c)`` (half to even, as numpy rounds), int64, any leading shape."""
    return np.rint(ratios * real_counts).astype(np.int64)


def source_pools(pools) -> bool:
    """Are ``pools`` given per source (``G`` lists of ``C`` per-class arrays) rather than per class (one source)?"""
    return len(pools) > 0 and isinstance(pools[0], (list, tuple))


def pool_segments(pools) -> tuple[list, np.ndarray]:
    """The (source, class) pools in table order (source-major) and the class of each segment."""
    if not source_pools(pools):
        return list(pools), np.arange(len(pools))
    c = len(pools[0])
    if any(len(p) != c for p in pools):
        raise ValueError(f"every source needs one pool per class ({c}); got {[len(p) for p in pools]}")
    return [p for per_class in pools for p in per_class], np.tile(np.arange(c), len(pools))


def segment_counts(n_syn: np.ndarray) -> np.ndarray:
    """Draws per copy and segment ``(K, G * C)`` (source-major) from counts ``(K, C)`` or ``(K, C, G)``."""
    n = np.asarray(n_syn, np.int64)
    if n.ndim == 3:
        n = n.transpose(0, 2, 1).reshape(n.shape[0], -1)
    return n


def draw_pool_indices(rng: np.random.Generator, n: int, pool_size: int) -> np.ndarray:
    """``n`` indices into a pool: without replacement while possible, the remainder with replacement."""
    if n <= pool_size:
        return rng.choice(pool_size, n, replace=False) if n < pool_size else rng.permutation(pool_size)
    return np.concatenate([rng.permutation(pool_size), rng.integers(0, pool_size, n - pool_size)])


class PoolSampler:
    """Draws synthetic rows for every class of every copy in a handful of numpy calls.

    Every class's pool is one segment of a concatenated index range. One vector of random keys, sorted within
    each segment, is a random permutation of every pool at once; class ``c`` takes the first ``n_c`` of its
    segment (without replacement), and only a class asking for more than its pool holds draws the remainder
    with replacement. A step's cost then does not grow with the number of classes (the prototype drew class
    by class).
    """

    def __init__(self, pool_sizes: np.ndarray, offset: int = 0) -> None:
        self.sizes = np.asarray(pool_sizes, np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.offset = offset
        self.owner = np.repeat(np.arange(len(self.sizes)), self.sizes)  # class of each pooled row
        self._owner_f = self.owner.astype(np.float64)
        self.rank = np.arange(len(self.owner)) - self.starts[self.owner]  # position within its class

    def draw_many(self, rngs: list[np.random.Generator], n: np.ndarray) -> list[np.ndarray]:
        """Indices (plus ``offset``) of ``n[k, c]`` draws from each class ``c``'s pool for each of ``K`` copies,
        copy ``k`` from ``rngs[k]`` only.

        A copy's draws do not depend on the other copies: its generator makes the same calls in the same order
        as alone (none at all when it asks for nothing); the copies only share the sort.
        """
        n = np.asarray(n, np.int64)
        active = np.flatnonzero(n.any(1))
        out = [np.zeros(0, np.int64) for _ in rngs]
        if not len(active):
            return out
        # per-class random permutations: sort keys class + U[0, 1) (one float argsort is 5x faster than lexsort)
        keys = np.stack([rngs[k].random(len(self.owner)) for k in active]) + self._owner_f
        order = np.argsort(keys, axis=1)
        taken = self.rank[None, :] < n[active][:, self.owner]
        for row, k in enumerate(active):
            picked = order[row][taken[row]]
            short = np.flatnonzero(n[k] > self.sizes)
            if len(short):  # beyond the pool: the rest with replacement
                extra = [self.starts[c] + rngs[k].integers(0, self.sizes[c], n[k, c] - self.sizes[c]) for c in short]
                picked = np.concatenate([picked, *extra])
            out[k] = picked + self.offset
        return out


class FeatureEngine:
    """``K`` heads on frozen features.

    Args:
        real_features: ``(N, D)`` out-of-fold features of the real train split.
        real_labels: ``(N,)``.
        pools: per class, ``(P_c, D)`` synthetic features; or, for ``G`` sources, a list of ``G`` such lists.
        val_features, val_labels: the reward split.
        test_features, test_labels: optional, for evaluation at episode end.
        num_copies: ``K``.
        head_kwargs: passed to :class:`classifiers.batched_head.BatchedHead`.
        loss: a :data:`classifiers.batched_head.HEAD_LOSSES` name.
        epochs: full-batch epochs per step.
        lr_schedule, total_steps: the head's learning-rate schedule over an episode of ``total_steps`` Adam steps
            (:class:`classifiers.batched_head.BatchedHead`); each copy follows its own episode.
    """

    def __init__(self, real_features, real_labels, pools, val_features, val_labels, test_features=None,
                 test_labels=None, *, num_copies: int = 1, hidden: int = 0, lr: float = 0.05,
                 weight_decay: float = 1e-4, loss: str = "ce", epochs: int = 10, device="cpu", folds=None,
                 lr_schedule: str = "constant", total_steps: int | None = None) -> None:
        from tailmix.classifiers.batched_head import BatchedHead, loss_terms

        self._loss_terms = loss_terms
        self.device = torch.device(device)
        segments, seg_class = pool_segments(pools)
        self.num_sources = len(segments) // len(pools[0]) if source_pools(pools) else 1
        self.num_classes = c = len(segments) // self.num_sources
        self.loss, self.epochs = loss, epochs
        loss_terms(loss, torch.ones(1, c))  # validates the name early
        # The table: real rows, then every (source, class) pool block, source-major (one source: class blocks).
        blocks = [np.asarray(real_features, np.float32)] + [np.asarray(p, np.float32).reshape(-1, real_features.shape[1])
                                                             for p in segments]
        self.pool_sizes = np.array([len(p) for p in blocks[1:]], np.int64)  # per segment
        self.pool_starts = len(real_features) + np.concatenate([[0], np.cumsum(self.pool_sizes)[:-1]])
        self._pools = PoolSampler(self.pool_sizes, offset=len(real_features))
        self.table = torch.from_numpy(np.concatenate(blocks)).to(self.device)
        labels = np.concatenate([np.asarray(real_labels, np.int64)] +
                                [np.full(n, k, np.int64) for k, n in zip(seg_class, self.pool_sizes)])
        self.labels = torch.from_numpy(labels).to(self.device)
        self.labels_np = labels
        self.real_idx = np.arange(len(real_features))
        self.real_counts = np.bincount(real_labels, minlength=c).astype(np.int64)
        if folds is None:  # with folds the reward rows are the pooled real block (set below)
            self.val_x = torch.from_numpy(np.asarray(val_features, np.float32)).to(self.device)
            self.val_y = np.asarray(val_labels, np.int64)
        self.test_x = None if test_features is None else torch.from_numpy(np.asarray(test_features, np.float32)).to(self.device)
        self.test_y = None if test_labels is None else np.asarray(test_labels, np.int64)
        self.head = BatchedHead(num_copies, self.table.shape[1], c, hidden=hidden, lr=lr,
                                weight_decay=weight_decay, device=self.device, lr_schedule=lr_schedule,
                                total_steps=total_steps)
        self.k = num_copies
        self._inputs: dict[str, torch.Tensor] = {}
        self._table_check = (-1, True)  # (table version checked, finite?)
        self.folds = folds
        self.val_mask = None  # (K, N) held-out rows of each head (folds only)
        if folds is not None:
            # The reward split is the pooled real block of the table: predict on all of it, score each head on its
            # held-out fold (one GEMM and one bincount for every head, whatever fold each is on).
            self.val_x = self.table[:len(real_features)]
            self.val_y = self.labels_np[:len(real_features)]
            self._real_rows = [folds.train_rows[0]] * num_copies
            self.val_mask = np.broadcast_to(folds.fold == 0, (num_copies, len(folds))).copy()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.folds is not None:  # a view of the table's real block: pickle would store a detached copy
            del state["val_x"]
        state["_table_check"] = (-1, True)  # keyed by the table's version counter, which unpickling restarts
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.folds is not None:
            self.val_x = self.table[:len(self.real_idx)]

    def set_folds(self, heads: list[int], folds: list[int]) -> None:
        """Put each of ``heads`` on held-out fold ``folds[i]``: it trains on the other folds' real rows."""
        for h, f in zip(heads, folds):
            self._real_rows[h] = self.folds.train_rows[f]
            self.val_mask[h] = self.folds.fold == f

    def real_rows(self, head: int) -> np.ndarray:
        """Table rows of the real images head ``head`` trains on (its episode's folds, or the train split)."""
        return self.real_idx if self.folds is None else self._real_rows[head]

    def row_labels(self, rows: np.ndarray) -> np.ndarray:
        """The class of each of the table's ``rows``."""
        return self.labels_np[rows]

    def reset(self, generators: list[torch.Generator], copies: list[int] | None = None) -> None:
        self.head.reset(generators, copies)

    @property
    def source_pool_sizes(self) -> np.ndarray:
        """Pool size per class and source, ``(C, G)``."""
        return self.pool_sizes.reshape(self.num_sources, self.num_classes).T.copy()

    def mix_indices(self, n_syn: np.ndarray, rngs: list[np.random.Generator], heads=None) -> list[np.ndarray]:
        """Row indices (into the feature table) of each copy's real + synthetic mix (``n_syn``: ``(K, C)`` or
        ``(K, C, G)``, draws per class and source).

        ``heads``: the head each row of ``n_syn`` is for (default ``0..K-1``); with ``folds`` its real rows."""
        n = segment_counts(n_syn)
        if self.folds is not None:
            heads = range(len(rngs)) if heads is None else heads
            return [np.concatenate([self._real_rows[h], syn]) for h, syn in zip(heads, self._pools.draw_many(rngs, n))]
        return [np.concatenate([self.real_idx, syn]) for syn in self._pools.draw_many(rngs, n)]

    def train(self, mixes: list[np.ndarray]) -> np.ndarray:
        """Train every copy's head for ``epochs`` on its mix; return the last loss per copy."""
        # Every copy trains on the rows any copy uses, weighted by how often its own mix holds them: one shared
        # (U, D) matrix and one GEMM per layer for all copies, instead of gathering (K, N, D) mixes.
        # bincount over the table (not np.unique: sorting K mixes cost ~5 ms at K = 64)
        rows = len(self.labels_np)
        owner = np.repeat(np.arange(self.k) * rows, [len(m) for m in mixes])
        weight = np.bincount(owner + np.concatenate(mixes), minlength=self.k * rows).reshape(self.k, rows)
        used = np.flatnonzero(weight.any(0)) if self.k > 1 else np.flatnonzero(weight[0])
        # Most of the table in use: train on all of it (zero weights elsewhere), whose augmented inputs the head
        # then builds once, instead of gathering rows every step. Zero-weight rows still cost arithmetic (~0.1 us
        # each per step), gathering ~50 us: worth it from three quarters of the table up.
        dense = 4 * len(used) >= 3 * rows
        if dense:
            used = slice(None)
            x, y = self.table, self.labels
        else:
            weight = np.ascontiguousarray(weight[:, used])  # fancy indexing can return a column-major array
            used_t = torch.from_numpy(used).to(self.device)
            x = self.table[used_t]
            y = self.labels[used_t]
        if (dense or self.k > 1) and not self._finite(x, dense):
            # A broken row (NaN features) times a zero weight is still NaN in a shared GEMM: give each copy only
            # its own rows, so a fault stays in the copy that drew it (and is rolled back there).
            mine = torch.from_numpy(weight > 0).to(self.device)
            x = torch.where(mine.unsqueeze(-1), x.unsqueeze(0), torch.zeros((), device=self.device))
            y = y.unsqueeze(0).expand(self.k, -1)
        weight = weight.astype(np.float32)
        offset = class_weight = None
        if self.loss != "ce":  # the loss terms need each copy's class counts (a bincount: no BLAS, exact)
            lab = np.arange(self.k)[:, None] * self.num_classes + self.labels_np[used][None, :]
            counts = np.bincount(lab.ravel(), weights=weight.ravel(), minlength=self.k * self.num_classes)
            counts = torch.from_numpy(counts.reshape(self.k, self.num_classes).astype(np.float32)).to(self.device)
            offset, class_weight = self._loss_terms(self.loss, counts)
        loss = self.head.train_epochs(x, y, torch.from_numpy(weight).to(self.device), self.epochs,
                                      offset=offset if self.loss != "class_balanced" else None,
                                      class_weight=class_weight if self.loss == "class_balanced" else None)
        return loss.cpu().numpy()

    def _finite(self, x: torch.Tensor, whole_table: bool) -> bool:
        """Is ``x`` free of NaN/inf? For the whole table the answer is kept until the table is written to
        (torch counts in-place writes in ``_version``)."""
        if not whole_table:
            return bool(torch.isfinite(x).all())
        if self._table_check[0] != self.table._version:
            self._table_check = (self.table._version, bool(torch.isfinite(self.table).all()))
        return self._table_check[1]

    def predict(self, split: str = "val") -> np.ndarray:
        """Predicted labels ``(K, M)`` on ``val`` or ``test``."""
        x = self.val_x if split == "val" else self.test_x
        if x is None:
            raise ValueError("the env was built without test features; pass eval_split='test'")
        if split not in self._inputs:  # the split's features are frozen: augment them once
            self._inputs[split] = self.head.inputs(x)
        return self.head.predict(self._inputs[split], augmented=True).cpu().numpy()

    def labels_of(self, split: str) -> np.ndarray:
        return self.val_y if split == "val" else self.test_y

    def state_dict(self) -> dict:
        return self.head.state_dict()

    def snapshot(self):
        """What :meth:`restore` needs to undo a step (cheaper than :meth:`state_dict`)."""
        return self.head.snapshot()

    def restore(self, snapshot, heads: np.ndarray) -> None:
        self.head.restore(snapshot, heads)

    def heads_finite(self) -> np.ndarray:
        """Per head: are its parameters and optimiser moments finite?"""
        return self.head.finite().cpu().numpy()

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state)


class _EpisodeEpochs(torch.nn.Module):
    """A loss whose ``set_epoch`` counts epochs over the whole episode, not within one env step.

    Each step trains for ``epochs_per_step`` epochs; a deferred schedule (LDAM-DRW switches re-weighting on
    at 80% of training) must see the episode's epoch, or it never switches on.
    """

    def __init__(self, inner: torch.nn.Module, offset: int, total: int) -> None:
        super().__init__()
        self.inner, self.offset, self.total = inner, offset, total

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        self.inner.set_epoch(self.offset + epoch, self.total)

    def forward(self, logits, targets):
        return self.inner(logits, targets)


class PixelEngine:
    """One CNN trained on pixels, a few epochs per step (``K = 1``).

    The episode is one training run: the AdamW optimiser (its moments included) lives from ``reset`` to the
    episode's end, and its learning rate follows a cosine decay over the episode's ``max_steps * epochs``
    epochs, from ``lr`` down to near 0 in the last step. Ending on a small learning rate makes the
    episode-end classifier, and so the reward and the test score, depend far less on the last few
    mini-batches than a constant rate or an optimiser rebuilt every step would.

    Compute is matched across actions: an epoch is as many samples as the real training split, drawn from
    the mix without replacement (all of it when the mix is no larger). With whole-mix epochs a ratio of 2
    would get three times the gradient steps of ratio 0, and the env would reward synthetic data for the
    extra training rather than for its images.

    Args:
        dataset: the :class:`envs.datasets.LongTailDataset`.
        pools: per class, uint8 synthetic images; or, for ``G`` sources, a list of ``G`` such lists.
        backbone: ``classifiers.backbones`` name.
        loss: ``classifiers.losses`` name.
        epochs: epochs per step, each of ``len(train split)`` samples of the mix.
        batch_size, lr: optimiser settings (``lr`` is the peak, at the first step).
        eval_test: keep the test split for episode-end evaluation.
        max_steps: the episode length, over which the learning rate decays.
    """

    def __init__(self, dataset, pools, *, backbone: str = "small_cnn", loss: str = "ce", epochs: int = 1,
                 batch_size: int = 64, lr: float = 2e-3, device="cpu", eval_test: bool = False,
                 max_steps: int = 10, folds=None) -> None:
        self.dataset, self.backbone, self.loss = dataset, backbone, loss
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.device = torch.device(device)
        self.num_classes = dataset.num_classes
        self.k = 1
        segments, self._seg_class = pool_segments(pools)  # (source, class) pools, source-major
        self.num_sources = len(segments) // self.num_classes
        self.pools = [np.asarray(p, np.uint8).reshape(-1, *dataset.image_shape) for p in segments]
        self.pool_sizes = np.array([len(p) for p in self.pools], np.int64)  # per segment
        # A mix's synthetic rows are numbered after the real ones, segment by segment (the Engine protocol's table)
        self._seg_starts = np.concatenate([[0], np.cumsum(self.pool_sizes)[:-1]]).astype(np.int64)
        self.real_counts = dataset.train_counts
        self.val_y = dataset.val_labels
        self.test_y = dataset.test_labels if eval_test else None
        self.model = None
        self.optimizer = None
        self._gen = None
        self.total_epochs = max_steps * epochs  # the episode's schedule (cosine decay; LDAM-DRW's deferral)
        self._epoch = 0
        self.folds = folds
        self.val_mask = None  # pixel mode predicts only the held-out rows, so it needs no mask
        self._real_x, self._real_y = dataset.train_images, dataset.train_labels
        self._val_x = dataset.val_images
        if folds is not None:  # cross-validated reward: the pooled real images, re-split per episode
            self._pool_x = folds.pooled(dataset.train_images, dataset.val_images)
            self.set_folds([0], [0])

    def set_folds(self, heads: list[int], folds: list[int]) -> None:
        """Train on every fold but ``folds[0]`` and score on it (``K = 1``)."""
        f = folds[0]
        tr, held = self.folds.train_rows[f], self.folds.held_out[f]
        self._real_x, self._real_y = self._pool_x[tr], self.folds.labels[tr]
        self._val_x, self.val_y = self._pool_x[held], self.folds.labels[held]

    def reset(self, generators: list[torch.Generator], copies=None) -> None:
        from tailmix.classifiers.backbones import make_backbone

        g = generators[0]
        self._gen = g
        self._epoch = 0
        state = torch.random.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))  # module init uses the global RNG
        self.model = make_backbone(self.backbone, self.dataset.image_shape[-1], self.num_classes).to(self.device)
        torch.random.set_rng_state(state)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=5e-4)

    def learning_rate(self) -> float:
        """The rate of the next step: cosine decay over the episode's epochs, ``lr`` at epoch 0."""
        frac = min(self._epoch / max(self.total_epochs, 1), 1.0)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    @property
    def source_pool_sizes(self) -> np.ndarray:
        """Pool size per class and source, ``(C, G)``."""
        return self.pool_sizes.reshape(self.num_sources, self.num_classes).T.copy()

    def real_rows(self, head: int) -> np.ndarray:
        """Rows ``0 .. n_real - 1``: the episode's real train images (its training folds with ``folds``)."""
        return np.arange(len(self._real_y))

    def row_labels(self, rows: np.ndarray) -> np.ndarray:
        """The class of each of ``rows``: the real images' labels, then each pool segment's class."""
        rows = np.asarray(rows, np.int64)
        n_real = len(self._real_y)
        seg = np.searchsorted(self._seg_starts, rows - n_real, side="right") - 1
        return np.where(rows < n_real, self._real_y[np.minimum(rows, n_real - 1)], self._seg_class[seg])

    def mix_indices(self, n_syn: np.ndarray, rngs: list[np.random.Generator], heads=None) -> list[np.ndarray]:
        """The one head's mix (``K = 1``): every real row, then each (source, class) pool's draws."""
        n_syn = segment_counts(n_syn)[0]
        n_real = len(self._real_y)
        picks = [n_real + self._seg_starts[s] + draw_pool_indices(rngs[0], int(n), int(self.pool_sizes[s]))
                 for s, n in enumerate(n_syn) if n]
        return [np.concatenate([np.arange(n_real), *picks]).astype(np.int64)]

    def train(self, mixes: list[np.ndarray]) -> np.ndarray:
        from tailmix.classifiers.losses import make_loss
        from tailmix.classifiers.training import train_classifier

        mix = mixes[0]
        n_real = len(self._real_y)
        real, syn = mix[:n_real], mix[n_real:] - n_real
        seg = np.searchsorted(self._seg_starts, syn, side="right") - 1  # the mix lists segments in order
        picks = [(s, syn[seg == s] - self._seg_starts[s]) for s in np.unique(seg)]
        imgs = [self._real_x[real]] + [self.pools[s][p] for s, p in picks]
        labels = [self._real_y[real]] + [np.full(len(p), self._seg_class[s], np.int64) for s, p in picks]
        x, y = np.concatenate(imgs), np.concatenate(labels)
        inner = make_loss(self.loss, np.maximum(np.bincount(y, minlength=self.num_classes), 1))  # the mix's prior
        n_real = len(self._real_y)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        last = np.nan
        for _ in range(self.epochs):
            # An epoch is n_real samples of the mix, drawn without replacement: the same number of mini-batches
            # whatever the action, so a larger mix is rewarded for what its images teach, not for extra
            # gradient steps (feature mode, likewise, trains a fixed number of full-batch steps).
            take = torch.randperm(len(y), generator=self._gen)[:n_real].numpy() if len(y) > n_real else slice(None)
            loss = _EpisodeEpochs(inner, self._epoch, self.total_epochs)
            self._epoch += 1
            hist = train_classifier(self.model, x[take], y[take], loss=loss, epochs=1, batch_size=self.batch_size,
                                    device=self.device, generator=self._gen, optimizer=self.optimizer)
            losses = hist.get("loss", [np.nan]) if isinstance(hist, dict) else [np.nan]
            last = float(losses[-1]) if len(losses) else np.nan
        return np.array([last])

    def predict(self, split: str = "val") -> np.ndarray:
        from tailmix.classifiers.training import predict_logits

        if split == "test" and self.test_y is None:
            raise ValueError("the env was built without the test split; pass eval_split='test'")
        images = self._val_x if split == "val" else self.dataset.test_images
        return predict_logits(self.model, images, device=self.device).argmax(1)[None, :]

    def labels_of(self, split: str) -> np.ndarray:
        return self.val_y if split == "val" else self.test_y

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def snapshot(self) -> tuple[dict, dict]:
        return self.state_dict(), copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot: tuple[dict, dict], heads: np.ndarray) -> None:
        model, optimizer = snapshot  # one model: the only head; its Adam moments roll back with it
        self.load_state_dict(model)
        self.optimizer.load_state_dict(optimizer)

    def heads_finite(self) -> np.ndarray:
        return np.array([all(bool(torch.isfinite(v).all()) for v in self.model.state_dict().values()
                             if v.is_floating_point())])
