"""Class-conditional DDPM trained from scratch: diffusers ``UNet2DModel`` + classifier-free guidance.

The UNet embeds ``num_classes + 1`` labels; the last id is the *null* class. Training ("pretrain, then
specialise") first runs ``pretrain_steps`` with every label set to null (unconditional, on all train
images), then ``train_steps`` class-conditional steps in which each label is replaced by null with
probability ``cfg_dropout``. Sampling uses DDIM (few steps) or the full DDPM sampler, with guidance
``eps = eps_null + s * (eps_class - eps_null)`` computed in one batched forward.

Two options beyond that (both off by default, so the default config, and every cache key made from it, is
unchanged): ``fit(dataset, unlabeled=images)`` adds images without labels to the unconditional pretraining phase,
and ``classifier_scale > 0`` trains a noise-aware classifier after the DDPM and steers sampling with the gradient
of its log-probability of the target class (classifier guidance, :mod:`tailmix.generators.guidance`), on top of
classifier-free guidance.

Every random draw (weight init, batches, noise, timesteps, label dropout, sampling noise) comes from the
passed ``torch.Generator``, so a seed reproduces the model and its samples on a given device.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tailmix.classifiers.device import PRECISIONS, grad_scaler, precision_autocast

from tailmix.generators.base import Generator, check_torch_generator, rand, randint, randn, read_config, write_config
from tailmix.io.atomic import atomic_write_serialised, honour_umask_tree

# Architectures per preset. `tiny` is for tests (8x8 in seconds), `small` for a CPU (0.64M parameters; a
# prototype of it trained at ~0.55 s per step at 16x16 grey, batch 64, on a 2-core CPU), `base` for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(unet=dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D",) * 2,
                           up_block_types=("UpBlock2D",) * 2, norm_num_groups=4, add_attention=False),
                 train_steps=8, pretrain_steps=2, sample_steps=2),
    "small": dict(unet=dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownBlock2D",) * 2,
                            up_block_types=("UpBlock2D",) * 2, norm_num_groups=8, add_attention=False),
                  train_steps=1000, pretrain_steps=200, sample_steps=20),
    "base": dict(unet=dict(block_out_channels=(64, 128, 256), layers_per_block=2,
                           down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32,
                           add_attention=True, attention_head_dim=32),
                 train_steps=20000, pretrain_steps=5000, sample_steps=50),
}
SAMPLERS = ("ddim", "ddpm")
UNET_FOLDER = "unet"
LOG_FILE = "train_log.json"
GUIDANCE_FOLDER = "guidance"  # the noise-aware classifier of classifier guidance (weights, settings, losses)


def images_fingerprint(images: np.ndarray) -> str:
    """SHA-256 of an image array's shape, dtype and bytes (unlabeled images enter configs and cache keys by it)."""
    a = np.ascontiguousarray(images)
    h = hashlib.sha256(f"{a.shape}|{a.dtype}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _require_diffusers():
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - diffusers is in install_requires
        raise ImportError("the DDPM generators need diffusers; install tailmix with `pip install -e .` "
                          "(or `pip install diffusers`)") from err
    return diffusers


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively, so configs compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def seeded(generator: torch.Generator):
    """A context in which the global CPU RNG is seeded from ``generator`` and restored afterwards.

    Module constructors (and peft's LoRA init) draw from the global RNG; this makes them follow the
    passed generator without disturbing the caller's global state.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    # Initialisation on a GPU would draw from the CUDA generators: fork and seed those too when in use.
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []))
    if cuda:
        torch.manual_seed(seed)  # CPU and every CUDA device; fork_rng restores them on exit
    else:
        torch.default_generator.manual_seed(seed)
    return stack


class WeightEMA:
    """An exponential moving average of a module's floating-point weights (parameters and buffers).

    ``update`` after each optimiser step uses decay ``min(decay, (1 + n) / (10 + n))`` at the n-th update (the
    warm-up of diffusers' ``EMAModel``), so early updates follow the weights closely and the average soon forgets
    the random initialisation; ``copy_to`` writes the average into a module of the same architecture.
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().to(self.shadow[k].dtype), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict(self.shadow, strict=False)


class ClassConditionalDDPM(Generator):
    """A class-conditional diffusion model with classifier-free guidance, trained from scratch.

    Args:
        image_shape: ``(H, W, C)`` of the dataset's images (C in {1, 3}).
        num_classes: Number of classes; the UNet embeds one more (the null class).
        preset: ``"tiny"`` (tests), ``"small"`` (CPU default) or ``"base"`` (GPU) architecture + budgets.
        train_steps: Class-conditional optimisation steps (default: the preset's).
        pretrain_steps: Unconditional steps before them, all labels null (default: the preset's).
        batch_size: Training batch size.
        lr: AdamW learning rate (linear warm-up over the first 5% of steps, at most 100).
        cfg_dropout: Probability that a label is replaced by null during conditional training.
        guidance_scale: Classifier-free guidance ``s`` (1 = conditional only, 0 = unconditional).
        sample_steps: DDIM steps when ``sampler="ddim"`` (default: the preset's).
        sampler: ``"ddim"`` (``sample_steps`` steps, deterministic given the start noise) or ``"ddpm"``
            (all ``num_train_timesteps`` ancestral steps).
        num_train_timesteps: Diffusion length of the noise schedule.
        beta_schedule: diffusers beta schedule (``"squaredcos_cap_v2"`` suits small images).
        sample_batch_size: Images per UNet batch while sampling.
        grad_clip: Max gradient norm (``None``: no clipping).
        unet: Overrides of the preset's ``UNet2DModel`` arguments (e.g. ``{"block_out_channels": [16, 32]}``).
        device: Where the UNet runs; mixed precision (autocast) is used on CUDA only.
        precision: Mixed precision of fitting and sampling on CUDA (``classifiers.device.PRECISIONS``): ``auto``
            (bf16 where supported, else fp16 with a gradient scaler), ``fp32`` (off), ``bf16``, ``fp16``. The CPU
            always runs fp32. Enters the config only when not ``auto``.
        classifier_scale: Classifier-guidance scale (0: off). Above 0, ``fit`` also trains a noise-aware
            classifier (:mod:`tailmix.generators.guidance`) and sampling adds ``scale`` times the gradient of
            its ``log p(class | x_t, t)`` (epsilon correction); combines with classifier-free guidance.
        classifier: The noise-aware classifier's training settings (``width``, ``steps``, ``batch_size``,
            ``lr``, ``loss``; see ``guidance.CLASSIFIER_DEFAULTS``).
        ema_decay: Keep an exponential moving average of the UNet weights during ``fit`` and sample (and save)
            with it: the usual remedy for the step-to-step noise of diffusion weights. ``None`` (the default):
            no average, the config and cache keys of models without it are unchanged. The decay at step ``n``
            is ``min(ema_decay, (1 + n) / (10 + n))`` (the warm-up of diffusers' ``EMAModel``), so the average
            forgets the random initialisation. The raw (last-step) weights stay in memory as ``raw_state``;
            ``resume=True`` trains on from the averaged ones.
    """

    kind = "ddpm"
    trains = True
    presets = tuple(PRESETS)
    pretrains = True
    guided = True
    takes_unlabeled = True
    budgeted = True

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, *, preset: str = "small",
                 train_steps: int | None = None, pretrain_steps: int | None = None, batch_size: int = 64,
                 lr: float = 2e-3, cfg_dropout: float = 0.1, guidance_scale: float = 2.0,
                 sample_steps: int | None = None, sampler: str = "ddim", num_train_timesteps: int = 1000,
                 beta_schedule: str = "squaredcos_cap_v2", sample_batch_size: int = 256,
                 grad_clip: float | None = 1.0, unet: dict | None = None,
                 device: torch.device | str = "cpu", classifier_scale: float = 0.0,
                 classifier: dict | None = None, ema_decay: float | None = None, precision: str = "auto") -> None:
        from tailmix.generators.guidance import classifier_settings

        super().__init__(device=device)
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        shape = tuple(int(v) for v in image_shape)
        if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3); got {image_shape}. "
                             "Pass dataset.image_shape")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}. Pass dataset.num_classes")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
        if not 0.0 <= cfg_dropout <= 1.0:
            raise ValueError(f"cfg_dropout is a probability in [0, 1]; got {cfg_dropout}")
        p = PRESETS[preset]
        self.preset = preset
        self.train_steps = int(p["train_steps"] if train_steps is None else train_steps)
        self.pretrain_steps = int(p["pretrain_steps"] if pretrain_steps is None else pretrain_steps)
        self.sample_steps = int(p["sample_steps"] if sample_steps is None else sample_steps)
        for name in ("train_steps", "pretrain_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name, value in (("batch_size", batch_size), ("sample_steps", self.sample_steps),
                            ("sample_batch_size", sample_batch_size), ("num_train_timesteps", num_train_timesteps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0; got {lr}")
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.cfg_dropout = float(cfg_dropout)
        self.guidance_scale = float(guidance_scale)
        self.sampler = sampler
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.sample_batch_size = int(sample_batch_size)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.unet_kwargs = _jsonable({**p["unet"], **(unet or {})})
        self._image_shape = shape
        self._num_classes = int(num_classes)
        self.loss_history: list[float] = []
        self.unet = self._build_unet(torch.Generator().manual_seed(0))
        self.train_scheduler = self._make_train_scheduler()
        if not (isinstance(classifier_scale, (int, float)) and math.isfinite(classifier_scale)
                and classifier_scale >= 0):
            raise ValueError(f"classifier_scale must be a finite number >= 0 (0: no classifier guidance); got "
                             f"{classifier_scale!r}")
        self.classifier_scale = float(classifier_scale)
        self.classifier_kwargs = dict(classifier or {})
        self.classifier_settings = classifier_settings(self.classifier_kwargs, preset)
        self.guidance_classifier: torch.nn.Module | None = None
        self.guidance_history: list[float] = []
        if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and 0.0 < ema_decay < 1.0):
            raise ValueError(f"ema_decay must be a number in (0, 1), e.g. 0.999, or None for no weight average; got "
                             f"{ema_decay!r}")
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.raw_state: dict[str, torch.Tensor] | None = None  # last-step weights when fit kept an average
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.precision = precision

    # -- construction -----------------------------------------------------------------------------
    @property
    def null_class(self) -> int:
        """The label id meaning "no class" (classifier-free guidance)."""
        return int(self._num_classes)  # type: ignore[arg-type]

    @property
    def downsample_factor(self) -> int:
        """Images are padded to a multiple of this (each down block but the last halves the size)."""
        return 2 ** (len(self.unet_kwargs["block_out_channels"]) - 1)

    @property
    def padded_size(self) -> tuple[int, int]:
        f = self.downsample_factor
        h, w, _ = self._image_shape  # type: ignore[misc]
        return (math.ceil(h / f) * f, math.ceil(w / f) * f)

    def _in_channels(self) -> int:
        """UNet input channels (the sketch variant adds an edge channel)."""
        return self._image_shape[2]  # type: ignore[index]

    def _build_unet(self, generator: torch.Generator):
        diffusers = _require_diffusers()
        kw = dict(self.unet_kwargs)
        for key in ("block_out_channels", "down_block_types", "up_block_types"):
            kw[key] = tuple(kw[key])
        with seeded(generator):
            unet = diffusers.UNet2DModel(sample_size=self.padded_size, in_channels=self._in_channels(),
                                         out_channels=self._image_shape[2], num_class_embeds=self.null_class + 1,
                                         **kw)
        return unet.to(self.device)

    def _make_train_scheduler(self):
        diffusers = _require_diffusers()
        return diffusers.DDPMScheduler(num_train_timesteps=self.num_train_timesteps,
                                       beta_schedule=self.beta_schedule, prediction_type="epsilon",
                                       clip_sample=True)

    def _make_sample_scheduler(self, **overrides):
        """The sampler's scheduler; ``overrides`` change its config (classifier guidance clips x0 itself)."""
        diffusers = _require_diffusers()
        if self.sampler == "ddpm":
            sched = diffusers.DDPMScheduler.from_config(self.train_scheduler.config, **overrides)
            sched.set_timesteps(self.num_train_timesteps)
        else:
            # "trailing" starts at the last training timestep, which matters with very few steps.
            sched = diffusers.DDIMScheduler.from_config(self.train_scheduler.config, timestep_spacing="trailing",
                                                        **overrides)
            sched.set_timesteps(self.sample_steps)
        return sched

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def probe_costs(self, dataset, *, generator: torch.Generator, train_steps: int = 2,
                    sample_images: int = 8) -> tuple[float, float]:
        """Seconds per training step and per sampled image, on a fresh UNet of this one's size (warm-up calls first:
        first-call costs are not per step); draws come from ``generator`` only."""
        import time

        g = generator
        unet = self._build_unet(g)
        x = self._images_to_padded(dataset.train_images)
        y = torch.as_tensor(dataset.train_labels, dtype=torch.long, device=self.device)
        params = [p for p in unet.parameters() if p.requires_grad]

        def train(k: int) -> None:
            self._train_loop(unet, params, x, y, phases=[("probe", k, False)], lr=self.lr, generator=g)

        train(1)  # warm-up
        t0 = time.perf_counter()
        train(train_steps)
        step = (time.perf_counter() - t0) / train_steps
        # at the batch the bank asks for (a small batch costs several times more per image), over two denoising
        # steps scaled to the sampler's: a whole sampling run of a full batch would cost as much as the bank's start
        n = min(sample_images, self.sample_batch_size)
        steps = len(self._make_sample_scheduler().timesteps)
        short = self._make_sample_scheduler()
        short.set_timesteps(2)
        self._denoise(unet, 0, n, g, None, sched=short)  # warm-up: the first sampling call costs more
        t0 = time.perf_counter()
        self._denoise(unet, 0, n, g, None, sched=short)
        return step, (time.perf_counter() - t0) / (len(short.timesteps) * n) * steps

    @classmethod
    def for_dataset(cls, dataset, **hparams) -> ClassConditionalDDPM:
        """A new model sized for ``dataset``'s images and classes; ``hparams`` go to the constructor."""
        return cls(tuple(dataset.image_shape), int(dataset.num_classes), **hparams)

    def hparams(self) -> dict:
        return {"preset": self.preset, "train_steps": self.train_steps, "pretrain_steps": self.pretrain_steps,
                "batch_size": self.batch_size, "lr": self.lr, "cfg_dropout": self.cfg_dropout,
                "guidance_scale": self.guidance_scale, "sample_steps": self.sample_steps, "sampler": self.sampler,
                "num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "sample_batch_size": self.sample_batch_size, "grad_clip": self.grad_clip,
                "unet": self.unet_kwargs, **self._guidance_hparams(),
                **({} if self.ema_decay is None else {"ema_decay": self.ema_decay}),  # absent: old keys hold
                **({} if self.precision == "auto" else {"precision": self.precision})}

    def _guidance_hparams(self) -> dict:
        """Classifier-guidance settings, only when in use: an unguided model keeps its config (and cache keys)."""
        if self.classifier_scale == 0 and self.guidance_classifier is None:
            return {}
        return {"classifier_scale": self.classifier_scale, "classifier": dict(self.classifier_settings)}

    def _fitted_state(self) -> dict[str, Any]:
        state = dict(self.unet.state_dict())
        if self.guidance_classifier is not None:
            state.update({f"guidance.{k}": v for k, v in self.guidance_classifier.state_dict().items()})
        return state

    def _move(self, device: torch.device) -> None:
        self.unet.to(device)
        if self.guidance_classifier is not None:
            self.guidance_classifier.to(device)

    # -- pixels <-> padded tensors ----------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad NCHW to the UNet's size (replicated borders, centred); ``_crop`` undoes it."""
        (hp, wp), (h, w) = self.padded_size, x.shape[-2:]
        if (hp, wp) == (h, w):
            return x
        top, left = (hp - h) // 2, (wp - w) // 2
        return F.pad(x, (left, wp - w - left, top, hp - h - top), mode="replicate")

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        (hp, wp), (h, w, _) = self.padded_size, self._image_shape
        top, left = (hp - h) // 2, (wp - w) // 2
        return x[..., top:top + h, left:left + w]

    def _images_to_padded(self, images: np.ndarray) -> torch.Tensor:
        from tailmix.classifiers.data import images_to_tensor

        return self._pad(images_to_tensor(images, self.device))

    def _check_dataset(self, dataset) -> None:
        if tuple(dataset.image_shape) != tuple(self._image_shape):
            raise ValueError(f"the dataset's images are {dataset.image_shape} but this model was built for "
                             f"{self._image_shape}; construct it with image_shape=dataset.image_shape")
        if dataset.num_classes != self._num_classes:
            raise ValueError(f"the dataset has {dataset.num_classes} classes but this model was built for "
                             f"{self._num_classes}; construct it with num_classes=dataset.num_classes")

    # -- the model call (hooks for conditioned variants) -------------------------------------------
    def _autocast(self):
        return precision_autocast(self.device, self.precision)

    def _forward(self, unet, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                 cond: torch.Tensor | None) -> torch.Tensor:
        """Noise prediction; ``cond`` is extra input channels (``None`` here, edges for the sketch model)."""
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        return unet(x, t, class_labels=labels).sample

    def _train_condition(self, index: torch.Tensor) -> torch.Tensor | None:
        """Extra input channels for the training images at ``index`` (none for the plain DDPM)."""
        return None

    def _sample_condition(self, class_id: int, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """Extra input channels for ``n`` samples of ``class_id`` (none for the plain DDPM)."""
        return None

    # -- training ---------------------------------------------------------------------------------
    def fit(self, dataset, *, generator: torch.Generator | None = None, progress: bool = False,
            resume: bool = False, unlabeled: np.ndarray | None = None) -> ClassConditionalDDPM:
        """Train on ``dataset``'s train split: unconditional pretraining, then conditional.

        With ``classifier_scale > 0`` the noise-aware classifier of classifier guidance is trained afterwards
        (:meth:`fit_guidance`, same generator).

        Args:
            dataset: A :class:`envs.datasets.LongTailDataset` with this model's image shape and classes.
            generator: Source of every random draw (weights, batches, noise); ``None``: a random seed.
            progress: Show a tqdm bar.
            resume: Keep the current weights (e.g. from :meth:`from_unet` or :meth:`load`) and train on
                from them, instead of re-initialising from ``generator``.
            unlabeled: Extra uint8 images ``(N, H, W, C)`` of the same domain, without labels: the unconditional
                pretraining phase draws from them and the train images together (the conditional phase uses
                the labeled ones only). Their fingerprint is recorded in the config.
        """
        self._check_dataset(dataset)
        pre_x = self._unlabeled_tensor(dataset, unlabeled) if unlabeled is not None else None
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        check_torch_generator(generator)
        previous = self.config()["fit"] if resume and self.fitted else None
        if resume and not self.fitted:
            raise ValueError("resume=True needs weights to start from; load them first (load or from_unet), "
                             "or fit with resume=False to train from scratch")
        if not resume:
            self.unet = self._build_unet(generator)  # re-initialised from the generator: same seed, same model
        x = self._images_to_padded(dataset.train_images)
        y = torch.as_tensor(dataset.train_labels, dtype=torch.long, device=self.device)
        self._prepare_training(dataset)
        params = [p for p in self.unet.parameters() if p.requires_grad]
        ema = None if self.ema_decay is None else WeightEMA(self.unet, self.ema_decay)
        self.loss_history = self._train_loop(
            self.unet, params, x, y, phases=[("pretrain", self.pretrain_steps, True),
                                             ("conditional", self.train_steps, False)],
            lr=self.lr, generator=generator, progress=progress, pretrain_x=pre_x, ema=ema)
        self.raw_state = None
        if ema is not None:  # sampling, saving and the state digest all use the average from here on
            self.raw_state = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
            ema.copy_to(self.unet)
        extra = {"resumed_from": previous} if resume else {}
        if unlabeled is not None:
            extra["unlabeled"] = {"count": int(len(unlabeled)), "digest": images_fingerprint(unlabeled)}
        self.guidance_classifier, self.guidance_history = None, []
        self._mark_fitted(dataset, generator=generator, extra=extra or None)
        if self.classifier_scale != 0:
            self.fit_guidance(dataset, generator=generator, progress=progress)
        return self

    def _unlabeled_tensor(self, dataset, unlabeled) -> torch.Tensor:
        """Checked unlabeled images, padded, joined after the train images (the pretraining data)."""
        if type(self)._train_condition is not ClassConditionalDDPM._train_condition:
            raise ValueError(f"unlabeled images are supported by the plain DDPM only; the {self.kind!r} kind "
                             "conditions on per-image inputs that unlabeled images lack")
        images = np.asarray(unlabeled)
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(self._image_shape):
            raise ValueError(f"unlabeled must be uint8 images shaped (N, {', '.join(map(str, self._image_shape))}) "
                             f"like the dataset's; got {images.dtype} {images.shape}. Load the folder at the "
                             "dataset's image size and channels")
        if len(images) == 0:
            raise ValueError("unlabeled holds no images; pass None to train without unlabeled images")
        if self.pretrain_steps == 0:
            raise ValueError("unlabeled images join the unconditional pretraining phase, but pretrain_steps is 0; "
                             "set pretrain_steps > 0")
        return torch.cat([self._images_to_padded(dataset.train_images), self._images_to_padded(images)])

    def fit_guidance(self, dataset, *, generator: torch.Generator | None = None,
                     progress: bool = False) -> ClassConditionalDDPM:
        """Train the noise-aware classifier of classifier guidance on ``dataset``'s train split.

        The DDPM's weights are untouched, so a trained (e.g. cached) DDPM gains guidance without retraining;
        sampling uses it whenever ``classifier_scale > 0``.

        Args:
            dataset: The dataset the DDPM was fitted on (its train images are noised at random timesteps).
            generator: Source of every random draw (weights, batches, timesteps, noise).
            progress: Show a tqdm bar.
        """
        from tailmix.generators.guidance import build_classifier, train_noise_aware

        if not self.fitted:
            raise ValueError("fit_guidance needs a fitted DDPM (its noise schedule and padding); call fit(dataset) "
                             "or load one first")
        self._check_dataset(dataset)
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        check_torch_generator(generator)
        x = self._images_to_padded(dataset.train_images)
        y = torch.as_tensor(dataset.train_labels, dtype=torch.long, device=self.device)
        clf = build_classifier(self._image_shape[2], self._num_classes, self.classifier_settings, generator,
                               self.device)
        self.guidance_history = train_noise_aware(clf, x, y, dataset.train_counts, self.train_scheduler,
                                                  self.classifier_settings, generator=generator, progress=progress)
        self.guidance_classifier = clf
        self._fit_info["guidance"] = {"seed": int(generator.initial_seed())}  # type: ignore[index]
        self._fit_info["state_digest"] = None  # type: ignore[index]  # the classifier's weights join the digest
        return self

    @classmethod
    def from_unet(cls, path: str | Path, image_shape: tuple[int, int, int], num_classes: int, *,
                  device: torch.device | str = "cpu", **kwargs: Any) -> ClassConditionalDDPM:
        """Wrap user-provided ``UNet2DModel`` weights (a local ``save_pretrained`` folder) as a fitted model.

        The UNet must embed ``num_classes + 1`` labels (the last one null) and map the image channels
        (plus the variant's extra channels) to the image channels. ``kwargs`` set the training and
        sampling options; the architecture comes from the folder. Fine-tune with ``fit(..., resume=True)``
        or add per-class LoRA adapters on top.
        """
        diffusers = _require_diffusers()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} has no config.json; pass a folder written by "
                                    "UNet2DModel.save_pretrained")
        unet = diffusers.UNet2DModel.from_pretrained(folder)
        arch = {k: _jsonable(unet.config[k]) for k in ("block_out_channels", "layers_per_block", "down_block_types",
                                                          "up_block_types", "norm_num_groups", "add_attention",
                                                          "attention_head_dim") if k in unet.config}
        model = cls(image_shape, num_classes, device=device, unet={**kwargs.pop("unet", {}), **arch}, **kwargs)
        want = (model._in_channels(), model._image_shape[2], model.null_class + 1)
        got = (unet.config.in_channels, unet.config.out_channels, unet.config.num_class_embeds)
        if got != want:
            raise ValueError(f"{folder} has (in_channels, out_channels, num_class_embeds) = {got} but this model "
                             f"needs {want}; the UNet must embed num_classes + 1 labels (the last is null)")
        model.unet = unet.to(model.device).eval()
        model._mark_fitted(None, image_shape=model._image_shape, num_classes=model._num_classes,
                           extra={"source": str(folder.resolve())})
        return model

    def _prepare_training(self, dataset) -> None:
        """Hook: precompute what ``_train_condition`` needs (the sketch model's edge maps)."""

    def _train_loop(self, unet, params: list[torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor, *,
                    phases: list[tuple[str, int, bool]], lr: float, generator: torch.Generator,
                    progress: bool = False, cfg_dropout: float | None = None,
                    index: torch.Tensor | None = None, desc: str | None = None,
                    pretrain_x: torch.Tensor | None = None, ema: WeightEMA | None = None) -> list[float]:
        """Epsilon-prediction MSE training of ``params`` of ``unet`` on padded images ``x`` / labels ``y``.

        Args:
            phases: ``(name, steps, unconditional)`` run in order with one optimizer.
            cfg_dropout: Label dropout (default: the model's).
            index: Dataset row of each ``x`` (for ``_train_condition``); default ``arange``.
            desc: Progress-bar label.
            pretrain_x: Images the unconditional phases draw from instead of ``x`` (train plus unlabeled
                images); ``None``: ``x``, with exactly the draws of a model trained without them.
            ema: A weight average of ``unet`` updated after every step (it draws no random numbers, so the
                training itself is the same with or without it).
        Returns:
            The loss of every step.
        """
        total = sum(steps for _, steps, _ in phases)
        if total == 0:
            return []
        cfg_dropout = self.cfg_dropout if cfg_dropout is None else cfg_dropout
        index = torch.arange(len(x)) if index is None else index.cpu()
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        warmup = max(1, min(100, total // 20))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        scaler = grad_scaler(self.device, self.precision)  # fp16 only
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc or f"{self.kind} fit", unit="step")
        losses: list[float] = []
        n = len(x)
        batch = min(self.batch_size, n)
        order, pos = torch.randperm(n, generator=generator, device=generator.device).cpu(), 0
        extra = None  # [order, pos] over pretrain_x, drawn when first used so runs without it keep their draws
        unet.train()
        try:
            for phase, steps, uncond in phases:
                for _ in range(steps):
                    if uncond and pretrain_x is not None:  # train + unlabeled images; labels are null anyway
                        m, b = len(pretrain_x), min(self.batch_size, len(pretrain_x))
                        if extra is None or extra[1] + b > m:
                            extra = [torch.randperm(m, generator=generator, device=generator.device).cpu(), 0]
                        rows = extra[0][extra[1]:extra[1] + b]
                        extra[1] += b
                        loss = self._step_loss(unet, pretrain_x, None, rows, None, True, cfg_dropout, generator)
                    else:
                        if pos + batch > n:  # a fresh permutation per epoch: every image is seen equally often
                            order, pos = torch.randperm(n, generator=generator, device=generator.device).cpu(), 0
                        rows = order[pos:pos + batch]
                        pos += batch
                        loss = self._step_loss(unet, x, y, rows, index, uncond, cfg_dropout, generator)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if self.grad_clip is not None:
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    if ema is not None:
                        ema.update(unet)
                    losses.append(float(loss.detach()))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(phase=phase, loss=f"{losses[-1]:.4f}")
        finally:
            if bar is not None:
                bar.close()
            unet.eval()
        return losses

    def _step_loss(self, unet, x: torch.Tensor, y: torch.Tensor | None, rows: torch.Tensor,
                   index: torch.Tensor | None, uncond: bool, cfg_dropout: float,
                   generator: torch.Generator) -> torch.Tensor:
        """The noise-prediction loss of one batch ``x[rows]`` (``y=None``: no labels, all null)."""
        b = len(rows)
        x0 = x[rows.to(x.device)]
        if y is None:
            labels = torch.full((b,), self.null_class, dtype=torch.long, device=self.device)
        else:
            labels = y[rows.to(y.device)].clone()
        drop = rand((b,), generator, self.device) < (1.0 if uncond else cfg_dropout)
        labels[drop] = self.null_class
        noise = randn(tuple(x0.shape), generator, self.device)
        t = randint(self.num_train_timesteps, (b,), generator, self.device)
        xt = self.train_scheduler.add_noise(x0, noise, t)
        cond = None if index is None else self._train_condition(index[rows])
        with self._autocast():
            pred = self._forward(unet, xt, t, labels, cond)
        return F.mse_loss(pred.float(), noise)

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        """``n`` uint8 images ``(n, H, W, C)`` of ``class_id``; the start noise comes from ``generator``."""
        self._check_sample(class_id, n, generator)
        return self._sample_with(self.unet, int(class_id), int(n), generator)

    def _check_guidance(self) -> None:
        if self.classifier_scale != 0 and self.guidance_classifier is None:
            raise ValueError(f"classifier_scale={self.classifier_scale} needs the noise-aware classifier; call "
                             "fit_guidance(dataset) (fit trains it when classifier_scale > 0), or set "
                             "classifier_scale=0")

    @torch.no_grad()
    def _sample_with(self, unet, class_id: int, n: int, generator: torch.Generator,
                     cond: torch.Tensor | None = None) -> np.ndarray:
        """Sample with a given network (the LoRA variant passes the adapted UNet)."""
        from tailmix.classifiers.data import tensor_to_images

        self._check_guidance()
        if n == 0:
            return self._empty()
        guided = self.classifier_scale != 0
        # Unguided sampling needs no autograd at all: inference mode skips the version counters and view tracking
        # that no_grad keeps (same kernels, same numbers). Classifier guidance differentiates the classifier.
        with contextlib.nullcontext() if guided else torch.inference_mode():
            if cond is None:
                cond = self._sample_condition(class_id, n, generator)
            unet.eval()
            # Classifier guidance clips the predicted x0 *before* its correction (guided.guided_epsilon); the
            # scheduler must not clip again, or clipping would cancel the guidance at high noise. One scheduler
            # serves every batch: its step() keeps no state between calls.
            sched = self._make_sample_scheduler(**({"clip_sample": False} if guided else {}))
            out = []
            for start in range(0, n, self.sample_batch_size):
                b = min(self.sample_batch_size, n - start)
                c = None if cond is None else cond[start:start + b].to(self.device)
                out.append(tensor_to_images(self._crop(self._denoise(unet, class_id, b, generator, c, sched))))
        return np.concatenate(out)

    def _denoise(self, unet, class_id: int, b: int, generator: torch.Generator,
                 cond: torch.Tensor | None, sched=None) -> torch.Tensor:
        guided = self.classifier_scale != 0
        if sched is None:
            sched = self._make_sample_scheduler(**({"clip_sample": False} if guided else {}))
        clip = self.train_scheduler.config.clip_sample_range if self.train_scheduler.config.clip_sample else None
        c = self._image_shape[2]  # type: ignore[index]
        x = randn((b, c, *self.padded_size), generator, self.device) * sched.init_noise_sigma
        s = self.guidance_scale
        if s == 1.0:
            labels = torch.full((b,), class_id, dtype=torch.long, device=self.device)
        elif s == 0.0:
            labels = torch.full((b,), self.null_class, dtype=torch.long, device=self.device)
        else:  # conditional and null halves in one batched forward
            labels = torch.cat([torch.full((b,), class_id, dtype=torch.long, device=self.device),
                                torch.full((b,), self.null_class, dtype=torch.long, device=self.device)])
            cond = None if cond is None else torch.cat([cond, cond])
        for t in sched.timesteps:
            xin = sched.scale_model_input(x if s in (0.0, 1.0) else torch.cat([x, x]), t)
            tt = torch.full((len(xin),), int(t), dtype=torch.long, device=self.device)
            with self._autocast():
                eps = self._forward(unet, xin, tt, labels, cond).float()
            if s not in (0.0, 1.0):
                e_cls, e_null = eps.chunk(2)
                eps = e_null + s * (e_cls - e_null)
            if guided:  # classifier guidance: eps - sqrt(1 - alpha_bar_t) * scale * grad log p(y | x_t, t)
                from tailmix.generators.guidance import guided_epsilon, log_prob_gradient

                grad = log_prob_gradient(self.guidance_classifier, x, tt[:b], class_id)
                eps = guided_epsilon(eps, x, sched.alphas_cumprod[int(t)].to(self.device), grad,
                                     self.classifier_scale, clip)
            if self.sampler == "ddpm":
                x = sched.step(eps, t, x, generator=generator).prev_sample
            else:
                x = sched.step(eps, t, x, eta=0.0).prev_sample
        return x

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json``, ``unet/`` (diffusers ``save_pretrained``) and the training losses."""
        if not self.fitted:
            raise ValueError("save() needs a fitted model; call fit(dataset) first")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / UNET_FOLDER)
        honour_umask_tree(folder / UNET_FOLDER)  # safetensors writes 0o600; the cache's other files follow the umask
        (folder / LOG_FILE).write_text(json.dumps({"loss": self.loss_history}), encoding="utf-8")
        if self.guidance_classifier is not None:
            sub = folder / GUIDANCE_FOLDER
            sub.mkdir(exist_ok=True)
            state = {k: v.detach().cpu() for k, v in self.guidance_classifier.state_dict().items()}
            atomic_write_serialised(sub / "classifier.pt", lambda fh: torch.save(state, fh))  # full disk: OSError
            (sub / LOG_FILE).write_text(json.dumps({"loss": self.guidance_history}), encoding="utf-8")
        cfg = self.config()
        cfg["scheduler"] = dict(self.train_scheduler.config)
        write_config(folder, _jsonable(cfg))
        return folder

    @classmethod
    def _from_config(cls, cfg: dict, device: torch.device | str) -> ClassConditionalDDPM:
        keys = ("preset", "train_steps", "pretrain_steps", "batch_size", "lr", "cfg_dropout", "guidance_scale",
                "sample_steps", "sampler", "num_train_timesteps", "beta_schedule", "sample_batch_size",
                "grad_clip", "unet", "classifier_scale", "classifier", "ema_decay", "precision")
        return cls(tuple(cfg["image_shape"]), int(cfg["num_classes"]), device=device,
                   **{k: cfg[k] for k in keys if k in cfg})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ClassConditionalDDPM:
        """Load a folder written by :meth:`save` (or user-provided weights in the same layout)."""
        diffusers = _require_diffusers()
        folder = Path(path)
        cfg = read_config(folder, kind=cls.kind)
        if not (folder / UNET_FOLDER).is_dir():
            raise FileNotFoundError(f"{folder / UNET_FOLDER} is missing; it holds the UNet weights that "
                                    "save() writes with diffusers' save_pretrained")
        model = cls._from_config(cfg, device)
        model.unet = diffusers.UNet2DModel.from_pretrained(folder / UNET_FOLDER).to(model.device).eval()
        if model.unet.config.num_class_embeds != model.null_class + 1:
            raise ValueError(f"{folder / UNET_FOLDER} embeds {model.unet.config.num_class_embeds} labels but the "
                             f"config has {model.null_class} classes (+1 null); the folder is inconsistent")
        if "scheduler" in cfg:
            model.train_scheduler = diffusers.DDPMScheduler.from_config(cfg["scheduler"])
        if (folder / LOG_FILE).is_file():
            model.loss_history = json.loads((folder / LOG_FILE).read_text(encoding="utf-8"))["loss"]
        model._restore_fit_info(cfg)
        model._load_guidance(folder)
        model._load_extra(folder)
        return model

    def _load_guidance(self, folder: Path) -> None:
        """Read the noise-aware classifier that :meth:`save` wrote (when the config says there is one)."""
        from tailmix.generators.guidance import NoiseAwareClassifier

        weights = folder / GUIDANCE_FOLDER / "classifier.pt"
        has = "classifier" in read_config(folder)
        if has != weights.is_file():
            raise FileNotFoundError(f"{folder}: the config and {weights} disagree about classifier guidance (one "
                                    "is missing); save the generator again")
        if not has:
            return
        clf = NoiseAwareClassifier(self._image_shape[2], self._num_classes, self.classifier_settings["width"])
        clf.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.guidance_classifier = clf.to(self.device).eval()
        log = folder / GUIDANCE_FOLDER / LOG_FILE
        if log.is_file():
            self.guidance_history = json.loads(log.read_text(encoding="utf-8"))["loss"]

    def _load_extra(self, folder: Path) -> None:
        """Hook for subclasses that save more than the UNet."""
