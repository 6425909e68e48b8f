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

from tailmix.classifiers.metrics import batched_confusion, metrics_from_confusion
from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.engine import FeatureEngine, PixelEngine, masked_confusion, synthetic_counts

#: Per-class observation columns before the one-hot class id (v0: one source, no pool-size columns).
OBS_COLUMNS = ("recall", "precision", "f1", "log_real_share", "ratio", "pool_quality", "balanced_accuracy",
               "progress")


def observation_columns(names: tuple[str, ...], pool_obs: bool = False) -> tuple[str, ...]:
    """Per-class observation columns before the one-hot id, for sources ``names`` (``G = len(names)``).

    ``recall, precision, f1, log_real_share``, then per source ``ratio`` (``/ max_ratio``), per source
    ``pool_quality``, ``balanced_accuracy, progress``, and with ``pool_obs`` per source ``pool_fraction``
    (``min(1, pool size / (max_ratio * n_real))``). Per-source columns are named ``<column>@<source>`` when
    ``G > 1``; with one source and ``pool_obs=False`` this is :data:`OBS_COLUMNS`.
    """
    def per(col):
        return (col,) if len(names) == 1 else tuple(f"{col}@{n}" for n in names)

    cols = OBS_COLUMNS[:4] + per("ratio") + per("pool_quality") + OBS_COLUMNS[6:]
    return cols + (per("pool_fraction") if pool_obs else ())


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
    if source.num_classes is not None and source.num_classes != dataset.num_classes:
        raise ValueError(f"the synthetic source {source.name!r} has {source.num_classes} classes but the dataset has "
                         f"{dataset.num_classes}; build the source (or bank) from this dataset")
    if source.space != "image":
        return
    for c in range(dataset.num_classes):
        pool = source.pool(c)
        if len(pool) and tuple(pool.shape[1:]) != dataset.image_shape:
            raise ValueError(f"synthetic images of class {c} are {tuple(pool.shape[1:])} but the dataset's are "
                             f"{dataset.image_shape}; generate them at the dataset's size")


def resolve_sources(dataset, specs: list, config: RatioEnvConfig) -> list:
    """The env's :class:`envs.sources.Source` list from its specs (``envs.sources.make_source``), validated.

    A string kind that appears again later in the list (two ``"augment"`` pools) draws its pools from
    ``source_seed + j`` for its ``j``-th repeat, so the copies differ; the first is v0's pool.
    """
    from tailmix.envs.sources import make_source

    def kind(spec):  # None is "augment"; objects are never repeats
        return "augment" if spec is None else spec if isinstance(spec, str) else object()

    out = []
    for g, spec in enumerate(specs):
        repeat = sum(1 for s in specs[:g] if kind(s) == kind(spec))
        src = make_source(spec, dataset, pool_size=config.pool_size, seed=config.source_seed + repeat, index=g)
        if src.space == "feature" and config.mode != "feature":
            raise ValueError(f"source {src.name!r} serves features (e.g. 'gaussian' draws virtual features) and "
                             "needs mode='feature'")
        _validate_source(src, dataset)
        out.append(src)
    return out


def source_names(sources: list) -> tuple[str, ...]:
    """Each source's name, made unique by a ``_<g>`` suffix where an earlier source has the same name."""
    names: list[str] = []
    for g, src in enumerate(sources):
        name = str(src.name)
        names.append(f"{name}_{g}" if name in names else name)
    return tuple(names)


def build_engine(dataset, source, config: RatioEnvConfig, num_copies: int = 1):
    """Build the feature or pixel engine and the pool quality ``(C, G)`` for ``dataset`` and its sources.

    ``source`` is one source spec (``envs.sources.make_source``) or a list of them (``G`` sources). The engine
    chooses what to do with each by its declared ``space``: image pools are encoded (feature mode) or trained on
    (pixel mode); feature pools are fitted on the encoder's real train features (feature mode only).
    """
    from tailmix.envs.sources import combined_images

    c = dataset.num_classes
    specs = list(source) if isinstance(source, (list, tuple)) else [source]
    sources = resolve_sources(dataset, specs, config)
    quality = np.array([[float(s.quality(k)) for s in sources] for k in range(c)], np.float32)
    one = len(sources) == 1  # one source: the engines get per-class pools, as in v0
    eval_test = config.eval_split == "test"
    folds = None
    if config.val_folds > 1:  # cross-validated reward: train + val pooled into fixed stratified folds
        from tailmix.envs.folds import CrossValidationFolds

        folds = CrossValidationFolds(dataset.train_labels, dataset.val_labels, c, config.val_folds,
                                     seed=config.source_seed)
    from tailmix.classifiers.device import select_device

    device = select_device(config.device)  # resolves "auto"; torch.device("auto") would not parse
    if config.mode == "pixel":
        pools = [[s.pool(k) for k in range(c)] for s in sources]
        engine = PixelEngine(dataset, pools[0] if one else pools, backbone=config.backbone,
                             loss=config.loss, epochs=config.epochs, batch_size=config.batch_size,
                             lr=config.learning_rate, device=device, eval_test=eval_test,
                             max_steps=config.max_steps, folds=folds)
        return engine, quality
    from tailmix.envs.cache import encoder_cache_dir
    from tailmix.envs.features import encoder_config, fit_encoder

    enc = fit_encoder(dataset, encoder_config(config), cache_dir=encoder_cache_dir(config.cache_dir),
                      synthetic=combined_images(sources),  # crossfit_joint trains on the image pools
                      pool_val=folds is not None)
    real = enc.train_features()  # with folds: the pooled train + val rows, each out of fold
    pools = []
    for g, src in enumerate(sources):
        if src.space == "feature":
            # fitted on the train split only, as a generator is (with folds too: the val rows stay unseen by it)
            fitted = src.fit_features(real[:len(dataset.train_labels)], dataset.train_labels)
            pools.append([np.asarray(fitted.pool(k), np.float32) for k in range(c)])
        else:  # the first source keeps v0's salts, so one source encodes exactly as before
            salt = "pool" if g == 0 else f"pool{g}."
            pools.append([enc.encode(src.pool(k), salt=f"{salt}{k}") for k in range(c)])
    if folds is None:
        val = enc.encode(dataset.val_images, salt="val")
        real_labels = dataset.train_labels
    else:  # the val images are rows of the pooled real block; the engine scores each head on its held-out fold
        val, real_labels = None, folds.labels
    test = enc.encode(dataset.test_images, salt="test") if eval_test else None
    engine = FeatureEngine(real, real_labels, pools[0] if one else pools, val, dataset.val_labels, test,
                           dataset.test_labels if eval_test else None, num_copies=num_copies,
                           hidden=config.hidden if config.head == "mlp" else 0, lr=config.learning_rate,
                           loss=config.loss, epochs=config.epochs, device=device, folds=folds,
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
        source: Synthetic source (``envs.sources``), a bank, ``"augment"``, ``"gaussian"``, or ``None``
            (augmentations).
        config: The shared settings.
        num_copies: ``K``.
        sources: Instead of ``source``, a list of ``G >= 1`` source specs (the pool as an action: each class
            sets one ratio per source; the ratios add up).
    """

    def __init__(self, dataset, source, config: RatioEnvConfig, num_copies: int = 1, *, sources=None) -> None:
        from tailmix.envs.sources import source_specs

        specs = source_specs(source, sources)
        self.config = config
        self.dataset = resolve_dataset(dataset)
        self.k = num_copies
        self.c = c = self.dataset.num_classes
        self.g = len(specs)
        if self.g > 1 and config.credit == "difference":
            raise ValueError("credit='difference' is not supported with several sources yet (its counterfactual "
                             "draws are per class); use credit='shared' (reward_reference=0 lowers the noise), or one "
                             "source")
        counts = self.dataset.train_counts
        if (counts == 0).any():
            # Its agent could do nothing (ratio x 0 real images = 0 synthetic ones) and its log share is -inf.
            cls = int(np.flatnonzero(counts == 0)[0])
            raise ValueError(f"class {cls} ({self.dataset.class_names[cls]!r}) has no real train images; every class "
                             "needs at least one (the synthetic count is ratio x real count). Add images or drop it")
        if config.max_ratio * counts.max() >= 2**31:
            raise ValueError(f"max_ratio={config.max_ratio:g} would ask for up to {config.max_ratio * counts.max():.3g} "
                             "synthetic samples of one class, more than fit in memory; lower max_ratio")
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
            self.sources = resolve_sources(self.dataset, specs, config)
            self.source_names = source_names(self.sources)
            self.engine, self.quality = build_engine(self.dataset, self.sources, config, num_copies * self.h)
        self.train_counts = self.dataset.train_counts
        self.pool_sizes_g = self.engine.source_pool_sizes  # (C, G)
        self.pool_sizes = self.pool_sizes_g.sum(1)  # (C,): every source's candidates of the class
        # pool_obs: each source's pool relative to the most the class may ask of it (max_ratio * n_real)
        self.pool_fraction = np.minimum(1.0, self.pool_sizes_g / (config.max_ratio * self.train_counts[:, None])
                                        ).astype(np.float32)
        share = self.train_counts / self.train_counts.sum()
        self.log_share = np.log(np.maximum(share, 1e-12)).astype(np.float32)
        # Per copy: the real counts and log shares of its episode. With val_folds >= 2 they are those of the
        # episode's k - 1 training folds (set at reset), so copies on different folds differ; else the train split's.
        self.folds = self.engine.folds
        self.copy_counts = np.tile(np.asarray(self.train_counts, np.int64), (num_copies, 1))
        self._copy_log_share = np.tile(self.log_share, (num_copies, 1))
        self.val_fold = np.zeros(num_copies, np.int64)  # held-out fold of each copy's episode (val_folds >= 2)
        largest = self.train_counts.sum() if self.folds is None else self.folds.counts.sum(1).max()
        self.obs_columns = observation_columns(self.source_names, config.pool_obs)
        self.obs_dim = len(self.obs_columns) + c
        low = np.zeros((c, self.obs_dim), np.float32)
        low[:, 3] = math.floor(math.log(1.0 / largest))
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
        # Ratios per class and source (initial_ratio on source 0, as a plain baseline's); ``ratios`` is their sum.
        self.source_ratios = np.zeros((num_copies, c, self.g), np.float64)
        self.source_ratios[:, :, 0] = config.initial_ratio
        self.ratios = self.source_ratios.sum(2)
        self.last_counts = np.zeros((num_copies, c, self.g), np.int64)  # served per class and source, last step
        self.shortfall = np.zeros((num_copies, c), np.int64)
        self.n_synthetic = np.zeros((num_copies, c), np.int64)  # served per class at the last step (0 after reset)
        self.nan_loss = np.zeros(num_copies, bool)  # the last step diverged and was rolled back
        self.team_reward = np.zeros(num_copies, np.float64)  # the last step's shared reward (difference credit)
        self.agent_reward = np.zeros((num_copies, c), np.float64)  # the last step's reward of every class agent
        self.metrics: dict[str, np.ndarray] = {}
        self.started = np.zeros(num_copies, bool)
        self.done = np.zeros(num_copies, bool)
        self.prev_bal = np.zeros(num_copies, np.float64)

    # Methods, not lambdas kept on the instance: the env must pickle (spawn-started workers, deepcopy).
    def _threads(self):
        from tailmix.classifiers.device import fixed_threads

        return fixed_threads(self.config.num_threads)

    def _step_threads(self):
        """A step does no numpy linear algebra (mixes, metrics and counts are sorts and bincounts): torch only."""
        from tailmix.classifiers.device import fixed_threads

        return fixed_threads(self.config.num_threads, blas=False)

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
            if self.folds is not None:  # the held-out fold comes first from the episode's stream
                self._set_fold(k, int(rng.integers(self.folds.k)))
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
            self.source_ratios[k] = 0.0
            self.source_ratios[k, :, 0] = self.config.initial_ratio
            self.ratios[k] = self.source_ratios[k].sum(1)
            self.last_counts[k] = 0
            self.shortfall[k] = 0
            self.n_synthetic[k] = 0
            self.nan_loss[k] = False
            self.team_reward[k] = 0.0
            self.agent_reward[k] = 0.0
            self.started[k] = True
            self.done[k] = False
        with self._threads():
            heads = [k * self.h + j for k in copies for j in range(self.h)]
            self.engine.reset([self.torch_gens[h] for h in heads], heads)
            self._evaluate()
        self.prev_bal[copies] = self._score()[copies]
        if self.diff:
            self.prev_class_score[copies] = self._class_score()[copies]

    def _set_fold(self, k: int, fold: int) -> None:
        """Put copy ``k`` on held-out fold ``fold``: its heads' real rows, reward rows, counts and shares."""
        self.val_fold[k] = fold
        self.engine.set_folds(list(range(k * self.h, (k + 1) * self.h)), [fold] * self.h)
        counts = self.folds.counts[fold]
        self.copy_counts[k] = counts
        self._copy_log_share[k] = np.log(np.maximum(counts / counts.sum(), 1e-12))

    def _cf_head(self, k: int, j: int, cls: int) -> int:
        """Index of the counterfactual head of copy ``k``, replica ``j``, class ``cls``."""
        return k * self.h + self.cf0 + j * self.c + cls

    def _class_score(self) -> np.ndarray:
        """``(K, C)``: balanced val accuracy minus each class's counterfactual's (replica means)."""
        return self.metrics["balanced_accuracy"][:, None] - self.counterfactual_bal

    def _serve(self, req: np.ndarray) -> np.ndarray:
        """What a request ``(..., C, G)`` is served: none from an empty pool, at most the pool with ``draw="unique"``."""
        served = np.where(self.pool_sizes_g == 0, 0, req)
        if self.config.draw == "unique":
            served = np.minimum(served, self.pool_sizes_g)
        return served

    def _on_source0(self, ratio: float, counts: np.ndarray | None = None) -> np.ndarray:
        """Served counts ``(..., C, G)`` of every class at ``ratio`` on source 0 (nothing from the others), for the
        real ``counts`` ``(..., C)`` (default: the train split's)."""
        counts = self.train_counts if counts is None else counts
        req = np.zeros((*np.shape(counts), self.g), np.int64)
        req[..., 0] = synthetic_counts(np.full(self.c, float(ratio)), counts)
        return self._serve(req)

    def _default_counts(self) -> np.ndarray:
        """Synthetic counts ``(C,)`` of every class at ``credit_default`` (none from an empty pool)."""
        return self._on_source0(self.config.credit_default)[:, 0]

    def _copy_default_counts(self) -> np.ndarray:
        """:meth:`_default_counts` per copy ``(K, C)``, from each copy's real counts (they differ with val_folds)."""
        return self._on_source0(self.config.credit_default, self.copy_counts)[..., 0]

    def _mixes(self, n_syn: np.ndarray) -> list:
        """Row indices of every head's mix for the copies' synthetic counts ``n_syn`` ``(K, C, G)`` (or ``(K, C)``
        with one source)."""
        if n_syn.ndim == 2:
            n_syn = n_syn[..., None]
        if not self.diff:
            return self.engine.mix_indices(self._head_counts(n_syn), self._draw_rngs)
        n_syn = n_syn[..., 0]  # difference credit has one source (checked at construction)
        # Difference credit: each replica draws once, enough for its own count and the default of every class;
        # its mix and its C counterfactuals are per-class prefixes of that one draw. So a counterfactual differs
        # from its replica in class c's synthetic rows only (common random numbers), and a class at the default
        # gives a counterfactual whose mix is its replica's, row for row. With credit_default = 0 the replica's
        # draw is exactly what credit="shared" draws.
        default = self._copy_default_counts()
        per = np.repeat(n_syn, self.r, axis=0)  # (K*R, C)
        reps = [k * self.h + j for k in range(self.k) for j in range(self.r)]
        drawn = self.engine.mix_indices(np.maximum(per, np.repeat(default, self.r, axis=0)),
                                        [self._draw_rngs[i] for i in reps], heads=reps)
        mixes: list = [None] * (self.k * self.h)
        for i, (head, mix) in enumerate(zip(reps, drawn)):
            k, j = divmod(i, self.r)
            n_real = len(self.engine.real_rows(head))  # mix_indices lists the real rows first, then the draws
            real, syn = mix[:n_real], mix[n_real:]
            lab = self.engine.labels_np[syn]
            rank = _rank_within(lab, self.c)
            own = rank < per[i][lab]
            mixes[head] = np.concatenate([real, syn[own]])
            for cls in range(self.c):
                keep = np.where(lab == cls, rank < default[k, cls], own)
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
        """Synthetic counts per head ``(K*H, C, G)``: the copy's for its replicas, the reference ratio's (on
        source 0) for its reference."""
        per = np.repeat(n_syn, self.h, axis=0)
        if self.ref:  # a reference cannot draw from an empty pool either
            per[self.r::self.h] = self._on_source0(self.config.reward_reference, self.copy_counts)
        return per

    def step(self, ratios: np.ndarray) -> dict:
        """Train every copy on its mix for one round; return rewards, nan flags and synthetic counts."""
        if not self.started.all():
            raise RuntimeError("step() called before reset(); call reset(seed=...) first")
        if self.done.any():
            raise RuntimeError("step() called after the episode ended; call reset() to start a new one")
        new_ratios = np.clip(np.asarray(ratios, np.float64).reshape(self.k, self.c, self.g), 0.0,
                             self.config.max_ratio)
        req = synthetic_counts(new_ratios, self.copy_counts[:, :, None])  # (K, C, G) requested
        empty = (req > 0) & (self.pool_sizes_g[None] == 0)
        if empty.any() and self.config.empty_pool != "zero":  # checked before any state changes: the env stays usable
            _, cls, g = (int(v) for v in np.argwhere(empty)[0])
            which = "the source" if self.g == 1 else f"source {g} ({self.source_names[g]!r})"
            raise ValueError(f"class {cls} ({self.dataset.class_names[cls]}) asked for synthetic samples but {which} "
                             "has none for it; fill the bank for every class or keep its ratio at 0")
        # empty_pool="zero" serves nothing from an empty pool: the ratio stays as asked (the agent sees it), the
        # counts reported are what was served. draw="unique" serves at most the pool: no image twice in a step.
        served = self._serve(req)
        self.source_ratios = new_ratios
        self.ratios = new_ratios.sum(2)
        self.last_counts = served
        self.shortfall = (req - served).sum(2)
        n_syn = served.sum(2)  # (K, C)
        with self._step_threads():
            mixes = self._mixes(served)
            snapshot = self.engine.snapshot()
            loss = self.engine.train(mixes)
            # The loss is the last epoch's, taken before its update: that update can still overflow the head
            # (Adam's second moment to inf at lr=1e30), so the state is checked too.
            bad_heads = ~np.isfinite(loss) | ~self.engine.heads_finite()
            if bad_heads.any():  # a diverged step must not poison the next ones: roll the heads back
                self.engine.restore(snapshot, np.flatnonzero(bad_heads))
            self._evaluate()
        bad = bad_heads.reshape(self.k, self.h).any(1)
        self.n_synthetic = n_syn
        self.nan_loss = bad
        self.t += 1
        bal = self._score()
        reward = self._shape_reward(bal, self.prev_bal)
        cost = self.config.synthetic_cost / self.copy_counts.sum(1)  # (K,): relative to each copy's real size
        if self.config.synthetic_cost:
            reward = reward - cost * n_syn.sum(1)
        self.prev_bal = bal.copy()
        if self.diff:
            # Difference of the team reward with class c at the default: the accuracy part is the counterfactual
            # head's, the cost part is class c's own synthetic samples beyond the default's.
            score = self._class_score()
            agent_reward = self._shape_reward(score, self.prev_class_score)
            if self.config.synthetic_cost:
                agent_reward = agent_reward - cost[:, None] * (n_syn - self._copy_default_counts())
            self.prev_class_score = score
        else:
            agent_reward = np.repeat(reward[:, None], self.c, axis=1)
        self.done = self.t >= self.config.max_steps
        self.team_reward = reward.astype(np.float64)
        self.agent_reward = agent_reward.astype(np.float64)
        return {"reward": reward.astype(np.float64), "agent_reward": agent_reward.astype(np.float64), "nan": bad,
                "n_synthetic": n_syn, "loss": loss, "reward_std": self.reward_std.copy(),
                "source_counts": served, "shortfall": self.shortfall.copy()}

    def _evaluate(self) -> None:
        pred = self.engine.predict("val")
        y = self.engine.labels_of("val")
        mask = self.engine.val_mask  # val_folds >= 2 (feature mode): each head's held-out rows of the pooled split
        cm = batched_confusion(y, pred, self.c) if mask is None else masked_confusion(y, pred, mask, self.c)
        per_head = metrics_from_confusion(cm)
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
        than most effects of the ratios (a prototype's PPO raised val accuracy to the best fixed policy's and
        lost on test). Every resample is scored for all replicas of a copy.
        """
        out = np.full(self.k, np.nan)
        mask = self.engine.val_mask
        for k, rng in enumerate(self._boot_rngs):
            if rng is None:
                continue
            heads = pred[k * self.h:k * self.h + self.r]  # (R, M): the replicas, not the reference
            yk = y
            if mask is not None:  # val_folds: the copy's held-out rows only
                yk, heads = y[mask[k * self.h]], heads[:, mask[k * self.h]]
            m = len(yk)
            idx = rng.integers(0, m, (self.config.reward_bootstrap, m))
            b = idx.shape[0]
            yy = yk[idx]  # (B, M)
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
        reports = [classification_report(y, p, self.c, train_counts=self.copy_counts[k]) for p in preds]
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
        obs[:, :, 3] = self._copy_log_share[copies]
        g = self.g
        obs[:, :, 4:4 + g] = self.source_ratios[copies] / self.config.max_ratio
        obs[:, :, 4 + g:4 + 2 * g] = self.quality
        obs[:, :, 4 + 2 * g] = m["balanced_accuracy"][copies][:, None]
        obs[:, :, 5 + 2 * g] = np.minimum(self.t[copies] / self.config.max_steps, 1.0)[:, None]
        if self.config.pool_obs:
            obs[:, :, 6 + 2 * g:6 + 3 * g] = self.pool_fraction
        obs[:, :, len(self.obs_columns):] = self._onehot
        return obs

    def infos(self, copies=slice(None), *, step: bool = False) -> dict[str, np.ndarray]:
        """The step infos of ``copies`` (all by default) as arrays, the one place they are built.

        Every value is a number array with the copies first: per copy ``(K',)`` (:data:`COPY_INFO_KEYS`) or per
        class ``(K', C)`` / ``(K', C, G)`` (:data:`CLASS_INFO_KEYS`); no strings, no nested containers, so any
        framework can batch them. Names are :attr:`class_names` (:meth:`per_class_info` gives named dicts).
        ``step=True`` (after :meth:`step`) adds ``nan_loss`` and, with ``credit="difference"``, ``team_reward``
        and ``agent_rewards``; after a reset the counts of the last step are 0.
        """
        m = self.metrics
        k = len(self.t[copies])
        out = {
            "ratios": self.ratios[copies].copy(),
            "n_real": self.copy_counts[copies].copy(),
            "n_synthetic": self.n_synthetic[copies].copy(),
            "recall": m["recall"][copies].copy(),
            "precision": m["precision"][copies].copy(),
            "f1": m["f1"][copies].copy(),
            "balanced_accuracy": m["balanced_accuracy"][copies].copy(),
            "macro_f1": m["macro_f1"][copies].copy(),
            "step": self.t[copies].copy(),
            "pool_empty": np.broadcast_to(self.pool_sizes == 0, (k, self.c)).copy(),
            "shortfall": self.shortfall[copies].copy(),
            # per source (G entries per class): ratio, images served at the last step, pool size
            "source_ratios": self.source_ratios[copies].copy(),
            "source_counts": self.last_counts[copies].copy(),
            "pool_sizes": np.broadcast_to(self.pool_sizes_g, (k, self.c, self.g)).copy(),
        }
        if self.config.reward_bootstrap:
            out["reward_std"] = self.reward_std[copies].copy()
        if self.folds is not None:
            out["val_fold"] = self.val_fold[copies].copy()
        if self.ref:
            out["reference_balanced_accuracy"] = self.reference_bal[copies].copy()
        if self.diff:
            out["counterfactual_balanced_accuracy"] = self.counterfactual_bal[copies].copy()
        if step:
            out["nan_loss"] = self.nan_loss[copies].copy()
            if self.diff:
                out["team_reward"] = self.team_reward[copies].copy()
                out["agent_rewards"] = self.agent_reward[copies].copy()
        return out

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(n) for n in self.dataset.class_names)


#: Keys of :meth:`RatioCore.infos` whose arrays hold one entry per class (after the copy axis); the others
#: hold one per copy.
CLASS_INFO_KEYS = ("ratios", "n_real", "n_synthetic", "recall", "precision", "f1", "pool_empty", "shortfall",
                   "source_ratios", "source_counts", "pool_sizes", "counterfactual_balanced_accuracy",
                   "agent_rewards")
#: Per-class keys under another name in one class's info (v0's per-agent key ``ratio``); ``agent_rewards`` is
#: the agent's reward itself and is left out there.
_CLASS_KEY_NAMES = {"ratios": "ratio", "agent_rewards": None}


def _plain(value):
    """A 0-d array as the Python number of its kind; arrays stay arrays."""
    return value.item() if np.ndim(value) == 0 else value


def copy_info(infos: dict, k: int) -> dict:
    """Copy ``k``'s slice of :meth:`RatioCore.infos` (the central view's info): per-copy keys as Python numbers,
    per-class keys as arrays ``(C,)`` / ``(C, G)``. ``nan_loss`` appears only when set (``True``), as in v0."""
    out = {key: _plain(np.asarray(v[k]).copy()) for key, v in infos.items()}
    if not out.pop("nan_loss", False):
        return out
    out["nan_loss"] = True
    return out


def class_infos(infos: dict) -> list[list[dict]]:
    """Every class of every copy from :meth:`RatioCore.infos`: ``out[k][cls]`` is a PettingZoo agent's info
    (numbers, and ``(G,)`` arrays for the per-source keys). ``ratios`` is named ``ratio`` there; ``nan_loss``
    appears only when set (``True``), as in v0."""
    k_count, c = np.shape(infos["ratios"])[:2]
    # Python numbers come from one ``tolist()`` per key (faster than an ``item()`` per entry); deeper arrays
    # (per source) are sliced as arrays.
    per_copy, per_class, per_source = {}, {}, {}
    for key, v in infos.items():
        v = np.asarray(v)
        if key not in CLASS_INFO_KEYS:
            per_copy[key] = v.tolist() if v.ndim == 1 else list(v)
        elif _CLASS_KEY_NAMES.get(key, key) is None:
            continue
        elif v.ndim == 2:
            per_class[_CLASS_KEY_NAMES.get(key, key)] = v.tolist()
        else:
            per_source[_CLASS_KEY_NAMES.get(key, key)] = v
    out = []
    for k in range(k_count):
        common = {key: v[k] for key, v in per_copy.items()}
        nan = common.pop("nan_loss", False)
        rows = []
        for cls in range(c):
            info = {key: v[k][cls] for key, v in per_class.items()}
            info.update({key: v[k, cls].copy() for key, v in per_source.items()})
            info.update(common)
            if nan:
                info["nan_loss"] = True
            rows.append(info)
        out.append(rows)
    return out


def class_info(infos: dict, k: int, cls: int) -> dict:
    """Class ``cls`` of copy ``k`` from :meth:`RatioCore.infos` (see :func:`class_infos`)."""
    one = {key: np.asarray(v)[k:k + 1] for key, v in infos.items()}
    return class_infos(one)[0][cls]


def per_class_info(core: RatioCore, k: int = 0) -> list[dict]:
    """Copy ``k``'s infos as one dict per class with its ``class_name`` (for reading, not for batching)."""
    rows = class_infos(core.infos(slice(k, k + 1)))[0]
    return [{"class_name": name, **row} for name, row in zip(core.class_names, rows)]


#: Render modes every view implements: ``render()`` returns ``None`` or the ``"ansi"`` text.
RENDER_MODES = ("ansi",)


def accepted_render_mode(render_mode, owner: str, stacklevel: int = 4) -> str | None:
    """``render_mode`` if the envs implement it, else ``None`` after a warning (gymnasium's convention).

    Frameworks ask for modes by default (SB3's ``make_vec_env`` and ``PPO("MlpPolicy", id)`` pass
    ``"rgb_array"``, PettingZoo's ``render_test`` ``"human"``) and expect the env to be built anyway; ``gym.make``
    itself only warns about a mode missing from ``metadata["render_modes"]``. The mode is then dropped (not
    kept as asked), so ``render()`` returns ``None`` and wrappers that need frames (``RecordVideo``) say so.
    """
    if render_mode is None or render_mode in RENDER_MODES:
        return render_mode
    import warnings

    warnings.warn(f"{owner}: render_mode={render_mode!r} is not supported (modes: None, 'ansi'); rendering is off "
                  "and render() returns None", stacklevel=stacklevel)
    return None


class SingleCopyViews:
    """Read-only conveniences shared by the single-copy env views (PettingZoo and gymnasium).

    :meth:`_build` sets ``self.render_mode``, ``self.config`` and ``self.core`` (a one-copy :class:`RatioCore`).
    """

    def _build(self, dataset, source, render_mode, kwargs: dict, sources=None) -> None:
        self.render_mode = accepted_render_mode(render_mode, type(self).__name__)
        self.config = RatioEnvConfig(**kwargs)
        self.core = RatioCore(dataset, source, self.config, num_copies=1, sources=sources)

    @property
    def num_classes(self) -> int:
        return self.core.c

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes' names, in agent / action-row order (step infos hold numbers only)."""
        return self.core.class_names

    def per_class_info(self) -> list[dict]:
        """The last step's infos as one dict per class with its ``class_name`` (v0's ``infos["per_class"]``)."""
        return per_class_info(self.core, 0)

    @property
    def dataset(self):
        return self.core.dataset

    @property
    def ratios(self) -> np.ndarray:
        """The current ratio of every class (summed over sources)."""
        return self.core.ratios[0].copy()

    @property
    def source_ratios(self) -> np.ndarray:
        """The current ratio of every class from every source, ``(C, G)``."""
        return self.core.source_ratios[0].copy()

    @property
    def num_sources(self) -> int:
        """``G``, the number of synthetic sources (the length of each class agent's action)."""
        return self.core.g

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources' names (unique), in action order."""
        return self.core.source_names

    @property
    def train_counts(self) -> np.ndarray:
        """Real train images per class (with ``val_folds >= 2``: of the episode's training folds)."""
        return self.core.copy_counts[0].copy()

    @property
    def max_ratio(self) -> float:
        return self.config.max_ratio

    def action_to_ratio(self, action):
        """Affine map ``[-1, 1] -> [0, max_ratio]`` (clipped), vectorised."""
        return self.core.action_to_ratio(action)

    def ratio_to_action(self, ratio):
        """Inverse of :meth:`action_to_ratio` (ratios clipped to ``[0, max_ratio]``)."""
        return self.core.ratio_to_action(ratio)
