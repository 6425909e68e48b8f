"""The settings every view of the env shares (PettingZoo, gymnasium, batched), validated in one place."""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

MODES = ("feature", "pixel")
REWARDS = ("accuracy", "delta", "final")
HEADS = ("linear", "mlp")
CREDITS = ("shared", "difference")
DRAWS = ("replace", "unique")

#: The defaults of the ``-v1`` ids (``tailmix/SyntheticRatio-v1``, ``tailmix/SyntheticRatioCentral-v1``) where they
#: differ from :class:`RatioEnvConfig`'s (which are v0's). Keyword arguments given to ``make`` override them.
V1_DEFAULTS: dict = {"draw": "unique", "pool_obs": True}
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class RatioEnvConfig:
    """Keyword arguments of ``tailmix/SyntheticRatio-v0`` and its views (all documented defaults; the ``-v1`` ids
    change those in :data:`V1_DEFAULTS`).

    Attributes:
        mode: ``"feature"``: a linear/MLP head on frozen encoder features (milliseconds per step);
            ``"pixel"``: a CNN trained on the pixels, the episode being one training run (one AdamW
            over the episode, cosine learning-rate decay; about a second per step on this CPU).
        max_steps: Rounds of classifier training per episode; all agents are truncated after it.
        max_ratio: Action ``a`` in [-1, 1] maps to ratio ``(a + 1) / 2 * max_ratio``.
        initial_ratio: Ratio of every class at reset (shown in the first observation).
        reward: ``"accuracy"`` (balanced val accuracy after the step), ``"delta"`` (its change over the
            step), ``"final"`` (0 until the last step, then the balanced val accuracy).
        synthetic_cost: Subtracted from the reward per synthetic sample used, relative to the real train
            size (a generation budget): ``reward -= cost * n_synthetic / n_real``.
        eval_split: ``None`` or ``"test"``: at the last step the infos carry test metrics (benchmarks).
        epochs_per_step: Training epochs per step (feature mode: full-batch Adam steps; pixel: epochs).
        head: ``"linear"`` or ``"mlp"`` (feature mode).
        hidden: MLP hidden width.
        lr: Learning rate of the head (feature) or the CNN's peak rate (pixel, decayed over the episode).
        loss: Training loss: ``ce``, ``logit_adjustment``, ``balanced_softmax``, ``class_balanced`` (both
            modes); ``focal`` and ``ldam_drw`` in pixel mode.
        encoder: Feature-mode encoder kind (``envs.features.ENCODERS``).
        encoder_epochs: Training epochs of the encoder CNN(s).
        encoder_folds: Cross-fitting folds.
        backbone: Pixel-mode CNN (``classifiers.backbones`` name).
        batch_size: Pixel-mode mini-batch size.
        pool_size: Synthetic candidates per class for the default augmentation / Gaussian source.
        source_seed: Seed of the default source's pools and of the encoder.
        num_threads: Torch threads while stepping (results depend on it; pinned so they repeat).
        device: Torch device of the classifier (``"cpu"``, ``"cuda:1"``, ``"auto"``).
        cache_dir: Where fitted encoders are cached on disk. ``None`` (default): the per-user cache folder
            (``$TAILMIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/tailmix``, else ``~/.cache/tailmix``; see
            ``envs.cache``), so a new process loads an encoder in about a second instead of refitting it;
            ``False``: memory only (nothing written); a path: that folder.
        reward_replicas: Heads trained per env copy on independent synthetic draws and initialisations
            (batched: heads in feature mode, grouped CNNs in pixel mode); reward and observations average over
            them, which lowers reward noise.
        reward_reference: ``None``, or a ratio (e.g. 0.0) for a reference head per copy: it starts from the same
            initial weights, is trained on that constant ratio for every class, and the reward becomes the
            balanced val accuracy minus the reference's (feature mode). Common random numbers remove the
            initialisation noise that otherwise swamps the effect of the ratios.
        reward_bootstrap: Bootstrap resamples of the val split used to report the reward's standard error
            (``reward_std`` in infos); 0 turns it off.
        credit: How the reward is split between the class agents. ``"shared"`` (default): every agent gets the
            team reward. ``"difference"``: difference rewards (Wolpert & Tumer 2002): agent ``c`` gets the team
            score minus that of a counterfactual head trained on the same mix except class ``c`` at
            ``credit_default`` (same initial weights, same synthetic draws for the other classes, trained in the
            same batched ops; feature mode). Costs ``C`` more heads per replica. ``reward`` ("delta",
            "final") and ``synthetic_cost`` apply to each agent's difference; ``reward_reference`` is refused
            (the counterfactuals already are the reference). The central view refuses it (one agent).
        credit_default: The ratio class ``c`` takes in its counterfactual (``credit="difference"`` only); with
            0 (default) the counterfactual drops class ``c``'s synthetic samples.
        empty_pool: What a step does when a class with an empty synthetic pool asks for samples:
            ``"error"`` raises ``ValueError``; ``"zero"`` serves none and flags ``pool_empty`` in infos
            (useful when a filter rejected every candidate of a class). With several sources it applies per
            (source, class) pool.
        draw: How a step draws from a pool. ``"replace"`` (v0): without replacement up to the pool's size, the
            remainder with replacement (a pool of one image can serve it 400 times). ``"unique"`` (v1's
            default): never the same synthetic image twice in a step; a request beyond the pool is capped at the
            pool's size and the infos report the ``shortfall`` (requested minus served).
        pool_obs: Add, per source, the observation column ``pool_fraction`` = ``min(1, pool size /
            (max_ratio * n_real))``: how much of what the class may ask for its pool can serve (v1: on).
        val_folds: ``1`` (default): the fixed split, train on the train split, observe and reward on val.
            ``k >= 2``: cross-validated reward: train and val are pooled and split once, stratified by class,
            into ``k`` folds (fixed by ``source_seed``); each episode draws its held-out fold from its reset
            seed, trains on the other ``k - 1`` folds and is observed and rewarded on the held-out one
            (``infos["val_fold"]``). The test split never enters. Every class needs ``k`` images in train +
            val. Feature mode cross-fits the encoder over the pooled split, so every pooled image's features
            come from a fold model that did not train on it.
        class_id_obs: ``True`` (default): each agent's observation ends with the one-hot id of its class, so one
            shared policy can tell the agents apart. ``False``: per-class statistics only (the row loses its last
            ``C`` columns), so the width does not depend on the number of classes and one shared policy fits any
            dataset (a transfer track: train on one task, score zero-shot on another).
        lr_schedule: Feature mode: ``"constant"`` (v0 default: every Adam step at ``lr``) or ``"cosine"``: the head's
            learning rate decays over the episode's ``max_steps * epochs`` Adam steps, from ``lr`` to near 0 at the
            last one (Adam state kept over the episode), as pixel mode's does. With a constant rate the last steps
            overwrite what earlier ratios taught, so a schedule of ratios over the episode means little; with the
            decay the episode is one training run. Pixel mode always decays on a cosine and ignores this field.
    """

    mode: str = "feature"
    max_steps: int = 10
    max_ratio: float = 8.0
    initial_ratio: float = 0.0
    reward: str = "accuracy"
    synthetic_cost: float = 0.0
    eval_split: str | None = None
    epochs_per_step: int | None = None
    head: str = "linear"
    hidden: int = 64
    lr: float | None = None
    loss: str = "ce"
    encoder: str = "crossfit"
    encoder_epochs: int = 30
    encoder_folds: int = 5
    backbone: str = "small_cnn"
    batch_size: int = 64
    pool_size: int = 256
    source_seed: int = 0
    num_threads: int | None = 1
    device: str = "cpu"
    cache_dir: str | bool | None = None
    empty_pool: str = "error"
    reward_replicas: int = 1
    reward_bootstrap: int = 0
    reward_reference: float | None = None
    credit: str = "shared"
    credit_default: float = 0.0
    draw: str = "replace"
    pool_obs: bool = False
    val_folds: int = 1
    lr_schedule: str = "constant"
    class_id_obs: bool = True

    def __post_init__(self) -> None:
        def bad(name, value, hint):
            raise ValueError(f"{name}={value!r} is invalid: {hint}")

        if self.mode not in MODES:
            bad("mode", self.mode, f"choose one of {MODES}")
        if self.reward not in REWARDS:
            bad("reward", self.reward, f"choose one of {REWARDS}")
        if self.head not in HEADS:
            bad("head", self.head, f"choose one of {HEADS}")
        # Type checks first: a string or None where a number belongs must give a ValueError, not a TypeError
        # from a comparison deep inside the engine (bool is an int in Python, but never a sensible count).
        def is_int(v) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def is_real(v) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        if not is_int(self.max_steps) or self.max_steps < 1:
            bad("max_steps", self.max_steps, "use a positive integer")
        if not is_real(self.max_ratio) or self.max_ratio <= 0:
            bad("max_ratio", self.max_ratio, "use a finite number > 0")
        if not is_real(self.initial_ratio) or not 0 <= self.initial_ratio <= self.max_ratio:
            bad("initial_ratio", self.initial_ratio, f"use a value in [0, max_ratio={self.max_ratio}]")
        if not is_real(self.synthetic_cost) or self.synthetic_cost < 0:
            bad("synthetic_cost", self.synthetic_cost, "use a finite number >= 0")
        if self.eval_split not in (None, "test"):
            bad("eval_split", self.eval_split, "use None or 'test' (val is always the reward split)")
        if self.epochs_per_step is not None and (not is_int(self.epochs_per_step) or self.epochs_per_step < 1):
            bad("epochs_per_step", self.epochs_per_step, "use a positive integer (or None for the mode's default)")
        if self.lr is not None and (not is_real(self.lr) or self.lr <= 0):
            bad("lr", self.lr, "use a finite number > 0 (or None for the mode's default)")
        for name in ("hidden", "pool_size", "batch_size", "encoder_epochs"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                bad(name, value, "use a positive integer")
        if not is_int(self.encoder_folds) or self.encoder_folds < 1:
            bad("encoder_folds", self.encoder_folds, "use a positive integer (crossfit needs >= 2)")
        if not is_int(self.source_seed) or self.source_seed < 0:
            bad("source_seed", self.source_seed, "use an integer >= 0")
        if self.mode == "pixel":
            from tailmix.classifiers.losses import LOSSES

            if self.loss not in LOSSES:  # feature mode checks its own (shorter) list when the head is built
                bad("loss", self.loss, f"choose one of {LOSSES}")
        from tailmix.classifiers.device import select_device

        select_device(self.device)  # ValueError naming the visible devices when it does not exist here
        from tailmix.classifiers.batched_head import HEAD_LOSSES  # the feature-mode losses
        from tailmix.classifiers.losses import LOSSES

        pixel_only = [name for name in LOSSES if name not in HEAD_LOSSES]
        if self.mode == "feature" and self.loss in pixel_only:
            bad("loss", self.loss, f"{' and '.join(pixel_only)} need mode='pixel'; feature mode supports "
                f"{', '.join(HEAD_LOSSES)}")
        if self.empty_pool not in ("error", "zero"):
            bad("empty_pool", self.empty_pool, "use 'error' or 'zero'")
        if not is_int(self.reward_replicas) or self.reward_replicas < 1:
            bad("reward_replicas", self.reward_replicas, "use a positive integer")
        if self.reward_reference is not None:
            if not is_real(self.reward_reference) or not 0 <= self.reward_reference <= self.max_ratio:
                bad("reward_reference", self.reward_reference, f"use None or a ratio in [0, max_ratio={self.max_ratio}]")
            if self.mode != "feature":
                bad("reward_reference", self.reward_reference, "the reference head is trained batched in mode='feature' only")
        if self.credit not in CREDITS:
            bad("credit", self.credit, f"choose one of {CREDITS}")
        if not is_real(self.credit_default) or not 0 <= self.credit_default <= self.max_ratio:
            bad("credit_default", self.credit_default, f"use a ratio in [0, max_ratio={self.max_ratio}]")
        if self.credit == "shared" and self.credit_default != 0:
            bad("credit_default", self.credit_default, "it only applies with credit='difference'; set that too, "
                "or leave credit_default at 0")
        if self.credit == "difference":
            if self.mode != "feature":
                bad("credit", self.credit, "the counterfactual heads are trained batched in mode='feature' only")
            if self.reward_reference is not None:
                bad("reward_reference", self.reward_reference, "credit='difference' already scores every agent "
                    "against a counterfactual head with common random numbers; drop reward_reference (None)")
        if not (self.cache_dir is None or self.cache_dir is False or isinstance(self.cache_dir, (str, os.PathLike))):
            bad("cache_dir", self.cache_dir, "use None (the per-user cache folder), False (memory only) or a folder path")
        if self.draw not in DRAWS:
            bad("draw", self.draw, f"choose one of {DRAWS}")
        if not isinstance(self.pool_obs, bool):
            bad("pool_obs", self.pool_obs, "use True or False")
        if not isinstance(self.class_id_obs, bool):
            bad("class_id_obs", self.class_id_obs, "use True (one-hot class id in the observation) or False")
        if self.lr_schedule not in LR_SCHEDULES:
            bad("lr_schedule", self.lr_schedule, f"choose one of {LR_SCHEDULES}")
        if not is_int(self.reward_bootstrap) or self.reward_bootstrap < 0 or self.reward_bootstrap == 1:
            bad("reward_bootstrap", self.reward_bootstrap, "use 0 (off) or a number of resamples >= 2")
        if not is_int(self.val_folds) or self.val_folds < 1:
            bad("val_folds", self.val_folds, "use 1 (the fixed val split) or an integer k >= 2 (k cross-validation "
                "folds of train + val)")
        if self.val_folds > 1 and self.mode == "feature" and self.encoder == "supervised":
            bad("val_folds", self.val_folds, "encoder='supervised' trains on every pooled image, so the held-out "
                "fold's features would be in-sample; use a crossfit encoder (default) or 'random'")

    @property
    def epochs(self) -> int:
        if self.epochs_per_step is not None:
            return self.epochs_per_step
        return 10 if self.mode == "feature" else 1

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.05 if self.mode == "feature" else 2e-3
