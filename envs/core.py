"""The simulation behind every view of the env: ``K`` copies, each with its own seed, ratios and classifier.

:class:`RatioCore` owns the per-copy state (RNGs, step counter, ratios, last metrics) and turns ratios into
observations, rewards and infos. The PettingZoo env, the gymnasium view and the batched vector env are thin
shells around it, so they cannot drift apart.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium.utils import seeding

from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.engine import FeatureEngine, PixelEngine, batched_confusion, metrics_from_confusion, synthetic_counts

#: Per-class observation columns before the one-hot class id.
OBS_COLUMNS = ("recall", "precision", "f1", "log_real_share", "ratio", "pool_quality", "balanced_accuracy",
               "progress")


def as_action_array(value, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a ValueError saying what was wrong (never a TypeError/OverflowError).

    Strings, bytes and complex numbers are refused rather than parsed: an action is a real number.
    """
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "biufO":
            raise TypeError(f"dtype {raw.dtype}")
        out = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{what} must be real numbers (a float array); got {type(value).__name__} "
                         f"({err})") from None
    return out


def resolve_dataset(dataset):
    """A :class:`LongTailDataset` from a dataset object or a ``load_dataset`` spec string."""
    from tailmix.envs.datasets import LongTailDataset, load_dataset

    if dataset is None:
        dataset = "digits"
    if isinstance(dataset, str):
        return load_dataset(dataset)
    if not isinstance(dataset, LongTailDataset):
        raise ValueError(f"dataset must be a LongTailDataset or a spec string like 'digits'; got "
                         f"{type(dataset).__name__}. Wrap arrays with tailmix.envs.datasets.from_arrays.")
    return dataset


def _validate_source(source, dataset) -> None:
    if getattr(source, "num_classes", dataset.num_classes) != dataset.num_classes:
        raise ValueError(f"the synthetic source has {source.num_classes} classes but the dataset has "
                         f"{dataset.num_classes}; build the source (or bank) from this dataset")
    for c in range(dataset.num_classes):
        pool = source.pool(c)
        if len(pool) and tuple(pool.shape[1:]) != dataset.image_shape:
            raise ValueError(f"synthetic images of class {c} are {tuple(pool.shape[1:])} but the dataset's are "
                             f"{dataset.image_shape}; generate them at the dataset's size")


def build_engine(dataset, source, config: RatioEnvConfig, num_copies: int = 1):
    """Build the feature or pixel engine and the per-class pool quality for ``dataset`` and ``source``."""
    from tailmix.envs.sources import augmentation_source

    c = dataset.num_classes
    if isinstance(source, str) and source != "gaussian":
        raise ValueError(f"source={source!r} is not known; pass a source object (envs.sources), a "
                         "tailmix.generators.bank.SyntheticBank, 'gaussian' (feature mode), or None for augmentations")
    if source == "gaussian" and config.mode != "feature":
        raise ValueError("source='gaussian' draws virtual features and needs mode='feature'")
    if source is not None and not isinstance(source, str) and not hasattr(source, "pool"):
        if hasattr(source, "images") and hasattr(source, "manifest"):
            from tailmix.envs.sources import BankSource
            source = BankSource(source)
        else:
            raise ValueError("source must have pool(class_id) and quality(class_id) (see envs.sources)")
    if source is None:
        source = augmentation_source(dataset, per_class=config.pool_size, seed=config.source_seed)
    if source != "gaussian":
        _validate_source(source, dataset)
        quality = np.array([float(source.quality(k)) for k in range(c)], np.float32)
    else:
        quality = np.ones(c, np.float32)
    eval_test = config.eval_split == "test"
    from tailmix.classifiers.device import select_device

    device = select_device(config.device)  # resolves "auto"; torch.device("auto") would not parse
    if config.mode == "pixel":
        engine = PixelEngine(dataset, [source.pool(k) for k in range(c)], backbone=config.backbone,
                             loss=config.loss, epochs=config.epochs, batch_size=config.batch_size,
                             lr=config.learning_rate, device=device, eval_test=eval_test,
                             max_steps=config.max_steps)
        return engine, quality
    from tailmix.envs.features import EncoderConfig, fit_encoder

    enc = fit_encoder(dataset, EncoderConfig(kind=config.encoder, folds=config.encoder_folds,
                                             epochs=config.encoder_epochs, seed=config.source_seed),
                      cache_dir=config.cache_dir,
                      synthetic=None if isinstance(source, str) else source)  # crossfit_joint trains on it
    real = enc.train_features()
    if source == "gaussian":
        from tailmix.generators.gaussian import GaussianFeatureGenerator

        gen = GaussianFeatureGenerator()
        gen.fit_features(real, dataset.train_labels, c)
        pools = [gen.sample_features(k, config.pool_size,
                                     generator=torch.Generator().manual_seed(config.source_seed * 7919 + k))
                 for k in range(c)]
    else:
        pools = [enc.encode(source.pool(k), salt=f"pool{k}") for k in range(c)]
    val = enc.encode(dataset.val_images, salt="val")
    test = enc.encode(dataset.test_images, salt="test") if eval_test else None
    engine = FeatureEngine(real, dataset.train_labels, pools, val, dataset.val_labels, test,
                           dataset.test_labels if eval_test else None, num_copies=num_copies,
                           hidden=config.hidden if config.head == "mlp" else 0, lr=config.learning_rate,
                           loss=config.loss, epochs=config.epochs, device=device,
                           lr_schedule=config.lr_schedule, total_steps=config.max_steps * config.epochs)
    return engine, quality


def _rank_within(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Position of each entry among the entries with the same label before it (0, 1, ... per label)."""
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=num_classes))[:-1]])
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - starts[labels[order]]
    return rank


class RatioCore:
    """``K`` env copies stepping together.

    Args:
        dataset: A :class:`LongTailDataset` or spec string.
        source: Synthetic source (``envs.sources``), a bank, ``"gaussian"``, or ``None`` (augmentations).
        config: The shared settings.
        num_copies: ``K``.
    """

    def __init__(self, dataset, source, config: RatioEnvConfig, num_copies: int = 1) -> None:
        self.config = config
        self.dataset = resolve_dataset(dataset)
        self.k = num_copies
        self.c = c = self.dataset.num_classes
        counts = self.dataset.train_counts
        if (counts == 0).any():
            # Its agent could do nothing (ratio x 0 real images = 0 synthetic ones) and its log share is -inf.
            cls = int(np.flatnonzero(counts == 0)[0])
            raise ValueError(f"class {cls} ({self.dataset.class_names[cls]!r}) has no real train images; every class "
                             "needs at least one (the synthetic count is ratio x real count). Add images or drop it")
        if config.max_ratio * counts.max() >= 2**31:
            raise ValueError(f"max_ratio={config.max_ratio:g} would ask for up to {config.max_ratio * counts.max():.3g} "
                             "synthetic samples of one class, more than fit in memory; lower max_ratio")
        from tailmix.classifiers.device import fixed_threads

        self._threads = lambda: fixed_threads(config.num_threads)
        # a step does no numpy linear algebra (mixes, metrics and counts are sorts and bincounts): torch only
        self._step_threads = lambda: fixed_threads(config.num_threads, blas=False)
        with self._threads():
            # R replicas per copy (reward_replicas): independent heads on independent synthetic draws,
            # trained side by side in the same batched ops; rewards and observations average over them.
            self.r = config.reward_replicas
            # reward_reference: one more head per copy, started from the same initial weights as replica 0 but
            # trained on the reference ratio; the reward is measured against it (common random numbers).
            self.ref = config.reward_reference is not None
            # credit="difference": C counterfactual heads per replica (class c at credit_default, every other
            # class as the replica's mix), same initial weights and same draws as their replica.
            self.diff = config.credit == "difference"
            self.cf0 = self.r + int(self.ref)  # index of the first counterfactual head within a copy
            self.h = self.cf0 + (self.r * c if self.diff else 0)  # heads per copy
            self.engine, self.quality = build_engine(self.dataset, source, config, num_copies * self.h)
        self.train_counts = self.dataset.train_counts
        self.pool_sizes = self.engine.pool_sizes
        share = self.train_counts / self.train_counts.sum()
        self.log_share = np.log(np.maximum(share, 1e-12)).astype(np.float32)
        self.obs_dim = len(OBS_COLUMNS) + c
        low = np.zeros((c, self.obs_dim), np.float32)
        low[:, 3] = math.floor(math.log(1.0 / self.train_counts.sum()))
        high = np.ones((c, self.obs_dim), np.float32)
        high[:, 3] = 0.0
        self.obs_low, self.obs_high = low, high
        self._onehot = np.eye(c, dtype=np.float32)
        self.np_randoms: list[np.random.Generator | None] = [None] * num_copies
        self.torch_gens = [torch.Generator() for _ in range(num_copies * self.h)]
        self._draw_rngs: list[np.random.Generator | None] = [None] * (num_copies * self.h)
        self.reference_bal = np.full(num_copies, np.nan)
        self.counterfactual_bal = np.full((num_copies, c), np.nan)
        self.prev_class_score = np.zeros((num_copies, c), np.float64)
        self._boot_rngs: list[np.random.Generator | None] = [None] * num_copies
        self.reward_std = np.full(num_copies, np.nan)
        self.t = np.zeros(num_copies, np.int64)
        self.ratios = np.full((num_copies, c), config.initial_ratio, np.float64)
        self.metrics: dict[str, np.ndarray] = {}
        self.started = np.zeros(num_copies, bool)
        self.done = np.zeros(num_copies, bool)
        self.prev_bal = np.zeros(num_copies, np.float64)

    # -- action mapping ----------------------------------------------------------------------
    def action_to_ratio(self, action):
        return (np.clip(np.asarray(action, np.float64), -1.0, 1.0) + 1.0) * 0.5 * self.config.max_ratio

    def ratio_to_action(self, ratio):
        r = np.clip(np.asarray(ratio, np.float64), 0.0, self.config.max_ratio)
        return (r / self.config.max_ratio * 2.0 - 1.0).astype(np.float32)

    # -- episode control ---------------------------------------------------------------------
    def reset(self, copies: list[int], seeds: list[int | None]) -> None:
        """Start a new episode in ``copies``: fresh classifier, ratios at ``initial_ratio``."""
        # Seed every copy before touching any: a bad seed (gymnasium's error) must not half-reset the copies.
        fresh = {k: seeding.np_random(seed)[0] for k, seed in zip(copies, seeds)
                 if seed is not None or self.np_randoms[k] is None}
        for k in copies:
            if k in fresh:
                self.np_randoms[k] = fresh[k]
            rng = self.np_randoms[k]
            for j in range(self.r):
                h = k * self.h + j
                self.torch_gens[h].manual_seed(int(rng.integers(0, 2**62)))
                # One replica draws from the copy's own stream (R = 1 is the plain env); others get their own.
                self._draw_rngs[h] = rng if j == 0 else np.random.default_rng(int(rng.integers(0, 2**62)))
            if self.ref:
                h = k * self.h + self.r
                self.torch_gens[h].manual_seed(self.torch_gens[k * self.h].initial_seed())
                self._draw_rngs[h] = np.random.default_rng(int(rng.integers(0, 2**62)))
            if self.diff:  # counterfactuals start where their replica starts; they draw through it (_mixes)
                for j in range(self.r):
                    seed = self.torch_gens[k * self.h + j].initial_seed()
                    for cls in range(self.c):
                        self.torch_gens[self._cf_head(k, j, cls)].manual_seed(seed)
            if self.config.reward_bootstrap:
                self._boot_rngs[k] = np.random.default_rng(int(rng.integers(0, 2**62)))
            self.t[k] = 0
            self.ratios[k] = self.config.initial_ratio
            self.started[k] = True
            self.done[k] = False
        with self._threads():
            heads = [k * self.h + j for k in copies for j in range(self.h)]
            self.engine.reset([self.torch_gens[h] for h in heads], heads)
            self._evaluate()
        self.prev_bal[copies] = self._score()[copies]
        if self.diff:
            self.prev_class_score[copies] = self._class_score()[copies]

    def _cf_head(self, k: int, j: int, cls: int) -> int:
        """Index of the counterfactual head of copy ``k``, replica ``j``, class ``cls``."""
        return k * self.h + self.cf0 + j * self.c + cls

    def _class_score(self) -> np.ndarray:
        """``(K, C)``: balanced val accuracy minus each class's counterfactual's (replica means)."""
        return self.metrics["balanced_accuracy"][:, None] - self.counterfactual_bal

    def _default_counts(self) -> np.ndarray:
        """Synthetic counts ``(C,)`` of every class at ``credit_default`` (none from an empty pool)."""
        n = synthetic_counts(np.full(self.c, float(self.config.credit_default)), self.train_counts)
        return np.where(self.pool_sizes == 0, 0, n)

    def _mixes(self, n_syn: np.ndarray) -> list:
        """Row indices of every head's mix for the copies' synthetic counts ``n_syn`` ``(K, C)``."""
        if not self.diff:
            return self.engine.mix_indices(self._head_counts(n_syn), self._draw_rngs)
        # Difference credit: each replica draws once, enough for its own count and the default of every class;
        # its mix and its C counterfactuals are per-class prefixes of that one draw. So a counterfactual differs
        # from its replica in class c's synthetic rows only (common random numbers), and a class at the default
        # gives a counterfactual whose mix is its replica's, row for row. With credit_default = 0 the replica's
        # draw is exactly what credit="shared" draws.
        default = self._default_counts()
        per = np.repeat(n_syn, self.r, axis=0)  # (K*R, C)
        reps = [k * self.h + j for k in range(self.k) for j in range(self.r)]
        drawn = self.engine.mix_indices(np.maximum(per, default[None, :]), [self._draw_rngs[i] for i in reps])
        n_real = len(self.engine.real_idx)  # mix_indices lists the real rows first, then the synthetic draws
        mixes: list = [None] * (self.k * self.h)
        for i, (head, mix) in enumerate(zip(reps, drawn)):
            k, j = divmod(i, self.r)
            real, syn = mix[:n_real], mix[n_real:]
            lab = self.engine.labels_np[syn]
            rank = _rank_within(lab, self.c)
            own = rank < per[i][lab]
            mixes[head] = np.concatenate([real, syn[own]])
            for cls in range(self.c):
                keep = np.where(lab == cls, rank < default[cls], own)
                mixes[self._cf_head(k, j, cls)] = np.concatenate([real, syn[keep]])
        return mixes

    def _shape_reward(self, score: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """The ``reward`` option (accuracy / delta / final) applied to a score per copy (and per class)."""
        if self.config.reward == "accuracy":
            return score.copy()
        if self.config.reward == "delta":
            return score - prev
        last = (self.t >= self.config.max_steps).reshape(-1, *([1] * (score.ndim - 1)))
        return np.where(last, score, 0.0)

    def _score(self) -> np.ndarray:
        """Balanced val accuracy per copy, relative to the reference head when there is one."""
        bal = self.metrics["balanced_accuracy"]
        return bal - self.reference_bal if self.ref else bal.copy()

    def _head_counts(self, n_syn: np.ndarray) -> np.ndarray:
        """Synthetic counts per head: the copy's for its replicas, the reference ratio's for its reference."""
        per = np.repeat(n_syn, self.h, axis=0)
        if self.ref:
            ref = synthetic_counts(np.full(self.c, float(self.config.reward_reference)), self.train_counts)
            ref = np.where(self.pool_sizes == 0, 0, ref)  # a reference cannot draw from an empty pool either
            per[self.r::self.h] = ref
        return per

    def step(self, ratios: np.ndarray) -> dict:
        """Train every copy on its mix for one round; return rewards, nan flags and synthetic counts."""
        if not self.started.all():
            raise RuntimeError("step() called before reset(); call reset(seed=...) first")
        if self.done.any():
            raise RuntimeError("step() called after the episode ended; call reset() to start a new one")
        new_ratios = np.clip(np.asarray(ratios, np.float64).reshape(self.k, self.c), 0.0, self.config.max_ratio)
        n_syn = synthetic_counts(new_ratios, self.train_counts[None, :])
        empty = (n_syn > 0) & (self.pool_sizes[None, :] == 0)
        if empty.any() and self.config.empty_pool == "zero":
            # Serve nothing: the ratio stays as asked (the agent sees it); the count reported is honest.
            n_syn = np.where(self.pool_sizes[None, :] == 0, 0, n_syn)
        elif empty.any():  # checked before any state changes, so the env stays usable after this error
            cls = int(np.argwhere(empty)[0][1])
            raise ValueError(f"class {cls} ({self.dataset.class_names[cls]}) asked for synthetic samples but the "
                             "source has none for it; fill the bank for every class or keep its ratio at 0")
        self.ratios = new_ratios
        with self._step_threads():
            mixes = self._mixes(n_syn)
            snapshot = self.engine.snapshot()
            loss = self.engine.train(mixes)
            # The loss is the last epoch's, taken before its update: that update can still overflow the head
            # (Adam's second moment to inf at lr=1e30), so the state is checked too.
            bad_heads = ~np.isfinite(loss) | ~self.engine.heads_finite()
            if bad_heads.any():  # a diverged step must not poison the next ones: roll the heads back
                self.engine.restore(snapshot, np.flatnonzero(bad_heads))
            self._evaluate()
        bad = bad_heads.reshape(self.k, self.h).any(1)
        self.t += 1
        bal = self._score()
        reward = self._shape_reward(bal, self.prev_bal)
        cost = self.config.synthetic_cost / self.train_counts.sum()
        if cost:
            reward = reward - cost * n_syn.sum(1)
        self.prev_bal = bal.copy()
        if self.diff:
            # Difference of the team reward with class c at the default: the accuracy part is the counterfactual
            # head's, the cost part is class c's own synthetic samples beyond the default's.
            score = self._class_score()
            agent_reward = self._shape_reward(score, self.prev_class_score)
            if cost:
                agent_reward = agent_reward - cost * (n_syn - self._default_counts()[None, :])
            self.prev_class_score = score
        else:
            agent_reward = np.repeat(reward[:, None], self.c, axis=1)
        self.done = self.t >= self.config.max_steps
        return {"reward": reward.astype(np.float64), "agent_reward": agent_reward.astype(np.float64), "nan": bad,
                "n_synthetic": n_syn, "loss": loss, "reward_std": self.reward_std.copy()}

    def _evaluate(self) -> None:
        pred = self.engine.predict("val")
        y = self.engine.labels_of("val")
        per_head = metrics_from_confusion(batched_confusion(y, pred, self.c))
        if self.h == 1:  # one head per copy: its metrics as they are
            self.metrics = per_head
        else:
            self.metrics = {key: v.reshape(self.k, self.h, *v.shape[1:])[:, :self.r].mean(1)
                            for key, v in per_head.items()}
        if self.ref:
            self.reference_bal = per_head["balanced_accuracy"].reshape(self.k, self.h)[:, self.r].copy()
        if self.diff:
            cf = per_head["balanced_accuracy"].reshape(self.k, self.h)[:, self.cf0:]
            self.counterfactual_bal = cf.reshape(self.k, self.r, self.c).mean(1)
        if self.config.reward_bootstrap:
            self.reward_std = self._bootstrap_std(y, pred)

    def _bootstrap_std(self, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Std of the balanced val accuracy over bootstrap resamples of the val split, per copy.

        The val split is a sample too: on RetinaMNIST (120 images, 6 of the rarest class) this noise is larger
        than most effects of the ratios (FINDINGS.md). Every resample is scored for all replicas of a copy.
        """
        out = np.full(self.k, np.nan)
        m = len(y)
        for k, rng in enumerate(self._boot_rngs):
            if rng is None:
                continue
            idx = rng.integers(0, m, (self.config.reward_bootstrap, m))
            heads = pred[k * self.h:k * self.h + self.r]  # (R, M): the replicas, not the reference
            b = idx.shape[0]
            yy = y[idx]  # (B, M)
            flat = ((np.arange(b)[:, None, None] * self.r + np.arange(self.r)[None, :, None]) * self.c
                    + yy[:, None, :]) * self.c + heads[:, idx].transpose(1, 0, 2)
            cm = np.bincount(flat.ravel(), minlength=b * self.r * self.c * self.c).reshape(b * self.r, self.c, self.c)
            bal = metrics_from_confusion(cm)["balanced_accuracy"].reshape(b, self.r).mean(1)
            out[k] = bal.std(ddof=1) if b > 1 else 0.0
        return out

    def test_report(self, k: int) -> dict:
        """Test-split metrics of copy ``k`` (``classifiers.metrics.classification_report``)."""
        from tailmix.classifiers.metrics import classification_report

        with self._threads():
            preds = self.engine.predict("test")[k * self.h:k * self.h + self.r]
        y = self.engine.labels_of("test")
        reports = [classification_report(y, p, self.c, train_counts=self.train_counts) for p in preds]
        if self.r == 1:
            return reports[0]
        # Replicas: the mean of every numeric entry (the confusion matrix is summed).
        out = {}
        for key, value in reports[0].items():
            vals = [r[key] for r in reports]
            if key == "confusion_matrix":
                out[key] = np.sum(np.asarray(vals), axis=0).tolist()
            elif isinstance(value, (int, float, np.floating)):
                out[key] = float(np.mean(vals))
            elif isinstance(value, list):
                out[key] = np.mean(np.asarray(vals, dtype=float), axis=0).tolist()
            else:
                out[key] = value
        return out

    # -- views -------------------------------------------------------------------------------
    def observation(self, k: int) -> np.ndarray:
        """The ``(C, 8 + C)`` per-class observation matrix of copy ``k``."""
        return self.observations(slice(k, k + 1))[0]

    def observations(self, copies=slice(None)) -> np.ndarray:
        """Observation matrices ``(K', C, 8 + C)`` of ``copies`` (all by default), built in one go."""
        m = self.metrics
        recall = m["recall"][copies]
        k = len(recall)
        obs = np.empty((k, self.c, self.obs_dim), np.float32)
        obs[:, :, 0] = recall
        obs[:, :, 1] = m["precision"][copies]
        obs[:, :, 2] = m["f1"][copies]
        obs[:, :, 3] = self.log_share
        obs[:, :, 4] = self.ratios[copies] / self.config.max_ratio
        obs[:, :, 5] = self.quality
        obs[:, :, 6] = m["balanced_accuracy"][copies][:, None]
        obs[:, :, 7] = np.minimum(self.t[copies] / self.config.max_steps, 1.0)[:, None]
        obs[:, :, len(OBS_COLUMNS):] = self._onehot
        return obs

    def class_info(self, k: int, cls: int, n_syn: np.ndarray | None = None) -> dict:
        m = self.metrics
        info = {
            "class_name": self.dataset.class_names[cls],
            "ratio": float(self.ratios[k, cls]),
            "n_real": int(self.train_counts[cls]),
            "n_synthetic": int(0 if n_syn is None else n_syn[k, cls]),
            "recall": float(m["recall"][k, cls]),
            "precision": float(m["precision"][k, cls]),
            "f1": float(m["f1"][k, cls]),
            "balanced_accuracy": float(m["balanced_accuracy"][k]),
            "macro_f1": float(m["macro_f1"][k]),
            "step": int(self.t[k]),
            "pool_empty": bool(self.pool_sizes[cls] == 0),
        }
        if self.config.reward_bootstrap:
            info["reward_std"] = float(self.reward_std[k])
        if self.ref:
            info["reference_balanced_accuracy"] = float(self.reference_bal[k])
        if self.diff:
            info["counterfactual_balanced_accuracy"] = float(self.counterfactual_bal[k, cls])
        return info


class SingleCopyViews:
    """Read-only conveniences shared by the single-copy env views (PettingZoo and gymnasium).

    :meth:`_build` sets ``self.render_mode``, ``self.config`` and ``self.core`` (a one-copy :class:`RatioCore`).
    """

    def _build(self, dataset, source, render_mode, kwargs: dict) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'ansi'")
        self.render_mode = render_mode
        self.config = RatioEnvConfig(**kwargs)
        self.core = RatioCore(dataset, source, self.config, num_copies=1)

    @property
    def num_classes(self) -> int:
        return self.core.c

    @property
    def dataset(self):
        return self.core.dataset

    @property
    def ratios(self) -> np.ndarray:
        """The current ratio of every class."""
        return self.core.ratios[0].copy()

    @property
    def train_counts(self) -> np.ndarray:
        """Real train images per class."""
        return self.core.train_counts.copy()

    @property
    def max_ratio(self) -> float:
        return self.config.max_ratio

    def action_to_ratio(self, action):
        """Affine map ``[-1, 1] -> [0, max_ratio]`` (clipped), vectorised."""
        return self.core.action_to_ratio(action)

    def ratio_to_action(self, ratio):
        """Inverse of :meth:`action_to_ratio` (ratios clipped to ``[0, max_ratio]``)."""
        return self.core.ratio_to_action(ratio)
