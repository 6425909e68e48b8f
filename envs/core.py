"""The simulation behind every view of the env: ``K`` copies, each with its own seed, ratios and classifier.

:class:`RatioCore` owns the per-copy state (RNGs, step counter, ratios, last metrics) and orchestrates a step:
ratios to served counts, mixes drawn and trained by the engine (``envs.protocols.Engine``), heads scored,
rewards computed (``envs.rewards``), observations and infos built. Which head is which (replicas, reference,
counterfactuals) is ``envs.heads.HeadLayout``'s. The PettingZoo env, the gymnasium view and the batched vector
env are thin shells around the core, so they cannot drift apart.
"""
from __future__ import annotations

import numpy as np
import torch
from gymnasium.utils import seeding

from tailmix.classifiers.metrics import batched_confusion, masked_confusion, metrics_from_confusion
from tailmix.envs.assembly import build_engine, resolve_dataset, resolve_sources, source_names
from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.engine import synthetic_counts
from tailmix.envs.heads import HeadLayout
from tailmix.envs.observation import COLUMNS, bounds, column_names, write_observations
from tailmix.envs.protocols import Engine
from tailmix.envs.rewards import bootstrap_std, class_scores, counterfactual_mixes, relative_score, step_rewards

#: Per-class observation columns before the one-hot class id with one source and the default config (v0); the
#: table itself is :data:`envs.observation.COLUMNS`.
OBS_COLUMNS = tuple(col.name for col in COLUMNS if col.span != "per_class" and col.enabled is None)


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
            # reward_reference: one more head per copy, started from the same initial weights as replica 0 but
            # trained on the reference ratio; the reward is measured against it (common random numbers).
            # credit="difference": C counterfactual heads per replica (class c at credit_default, every other
            # class as the replica's mix), same initial weights and same draws as their replica.
            self.layout = HeadLayout(num_copies, c, replicas=config.reward_replicas,
                                     reference=config.reward_reference is not None,
                                     counterfactual=config.credit == "difference")
            self.r, self.h = self.layout.replicas, self.layout.per_copy  # replicas and heads per copy
            self.ref, self.diff = self.layout.reference, self.layout.counterfactual
            self.sources = resolve_sources(self.dataset, specs, config)
            self.source_names = source_names(self.sources)
            self.engine: Engine
            self.engine, self.quality = build_engine(self.dataset, self.sources, config, self.layout.total)
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
        # The observation's columns, width and bounds: one table (envs.observation.COLUMNS).
        self.obs_columns = column_names(self.source_names, c, config)  # every column, the one-hot id's included
        self.obs_dim = len(self.obs_columns)
        self.obs_low, self.obs_high = bounds(self)
        self._onehot = np.eye(c, dtype=np.float32)
        self.np_randoms: list[np.random.Generator | None] = [None] * num_copies
        self.torch_gens = [torch.Generator() for _ in range(self.layout.total)]
        self._draw_rngs: list[np.random.Generator | None] = [None] * self.layout.total
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
                h = self.layout.replica(k, j)
                self.torch_gens[h].manual_seed(int(rng.integers(0, 2**62)))
                # One replica draws from the copy's own stream (R = 1 is the plain env); others get their own.
                self._draw_rngs[h] = rng if j == 0 else np.random.default_rng(int(rng.integers(0, 2**62)))
            if self.ref:
                h = self.layout.reference_head(k)
                self.torch_gens[h].manual_seed(self.torch_gens[self.layout.replica(k, 0)].initial_seed())
                self._draw_rngs[h] = np.random.default_rng(int(rng.integers(0, 2**62)))
            if self.diff:  # counterfactuals start where their replica starts; they draw through it (_mixes)
                for j in range(self.r):
                    seed = self.torch_gens[self.layout.replica(k, j)].initial_seed()
                    for cls in range(self.c):
                        self.torch_gens[self.layout.counterfactual_head(k, j, cls)].manual_seed(seed)
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
            heads = [h for k in copies for h in self.layout.heads_of(k)]
            self.engine.reset([self.torch_gens[h] for h in heads], heads)
            self._evaluate()
        self.prev_bal[copies] = self._score()[copies]
        if self.diff:
            self.prev_class_score[copies] = self._class_score()[copies]

    def _set_fold(self, k: int, fold: int) -> None:
        """Put copy ``k`` on held-out fold ``fold``: its heads' real rows, reward rows, counts and shares."""
        self.val_fold[k] = fold
        self.engine.set_folds(list(self.layout.heads_of(k)), [fold] * self.h)
        counts = self.folds.counts[fold]
        self.copy_counts[k] = counts
        self._copy_log_share[k] = np.log(np.maximum(counts / counts.sum(), 1e-12))

    def _cf_head(self, k: int, j: int, cls: int) -> int:
        """Index of the counterfactual head of copy ``k``, replica ``j``, class ``cls``."""
        return self.layout.counterfactual_head(k, j, cls)

    def _class_score(self) -> np.ndarray:
        """``(K, C)``: balanced val accuracy minus each class's counterfactual's (replica means)."""
        return class_scores(self.metrics["balanced_accuracy"], self.counterfactual_bal)

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
        # its counterfactuals are cut from that draw (envs.rewards.counterfactual_mixes).
        default = self._copy_default_counts()
        per = np.repeat(n_syn, self.r, axis=0)  # (K*R, C)
        reps = self.layout.replica_heads()
        drawn = self.engine.mix_indices(np.maximum(per, np.repeat(default, self.r, axis=0)),
                                        [self._draw_rngs[i] for i in reps], heads=reps)
        n_real = [len(self.engine.real_rows(head)) for head in reps]  # a mix lists its real rows first
        labels = [self.engine.row_labels(mix[n:]) for mix, n in zip(drawn, n_real)]
        return counterfactual_mixes(self.layout, drawn, n_real, labels, per, default)

    def _score(self) -> np.ndarray:
        """Balanced val accuracy per copy, relative to the reference head when there is one."""
        return relative_score(self.metrics["balanced_accuracy"], self.reference_bal if self.ref else None)

    def _head_counts(self, n_syn: np.ndarray) -> np.ndarray:
        """Synthetic counts per head ``(K*H, C, G)``: the copy's for its replicas, the reference ratio's (on
        source 0) for its reference."""
        per = self.layout.per_head(n_syn)
        if self.ref:  # a reference cannot draw from an empty pool either
            per[self.layout.reference_heads()] = self._on_source0(self.config.reward_reference, self.copy_counts)
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
                             "has none for it; fill the bank for every class, keep its ratio at 0, or make the env "
                             "with empty_pool='zero' (an empty pool then serves nothing)")
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
        credit = {}
        if self.diff:
            credit = dict(class_score=self._class_score(), prev_class_score=self.prev_class_score,
                          default_counts=self._copy_default_counts())
        reward, agent_reward = step_rewards(self.config.reward, self.config.synthetic_cost,
                                            self.t >= self.config.max_steps, bal, self.prev_bal, n_syn,
                                            self.copy_counts, **credit)
        self.prev_bal = bal.copy()
        if self.diff:
            self.prev_class_score = credit["class_score"]
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
        self.metrics = self.layout.replica_mean(per_head)
        if self.ref:
            self.reference_bal = self.layout.reference_values(per_head["balanced_accuracy"])
        if self.diff:
            self.counterfactual_bal = self.layout.counterfactual_means(per_head["balanced_accuracy"])
        if self.config.reward_bootstrap:
            self.reward_std = bootstrap_std(self.layout, y, pred, mask, self._boot_rngs, self.config.reward_bootstrap)

    def test_report(self, k: int) -> dict:
        """Test-split metrics of copy ``k`` (``classifiers.metrics.classification_report``)."""
        from tailmix.classifiers.metrics import classification_report

        with self._threads():
            first = self.layout.replica(k, 0)
            preds = self.engine.predict("test")[first:first + self.r]
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
        """The ``(C, width)`` per-class observation matrix of copy ``k`` (``8 + C`` columns for v0)."""
        return self.observations(slice(k, k + 1))[0]

    def observations(self, copies=slice(None)) -> np.ndarray:
        """Observation matrices ``(K', C, width)`` of ``copies`` (all by default), built in one go, each column by
        its entry of :data:`envs.observation.COLUMNS`."""
        return write_observations(self, copies)

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
