"""A user's own pretrained diffusion pipeline, with one LoRA adapter per class (peft): the ``pretrained`` kind.

tailmix's other kinds train small DDPMs from scratch; this one loads a local diffusers pipeline folder (what
``save_pretrained`` writes, with ``model_index.json``) and never downloads anything. Two layouts are read:

* **latent** (Stable Diffusion / latent diffusion): ``unet`` (``UNet2DConditionModel``), ``vae``
  (``AutoencoderKL``), ``text_encoder`` + ``tokenizer`` (CLIP; transformers) and ``scheduler``;
* **pixel** (``DDPMPipeline``): ``unet`` (an unconditional ``UNet2DModel``) and ``scheduler``.

Each class is conditioned by a prompt (``"a {name} image"``, the class name filled in; latent layout) or by a
learned class token (one vector in the text encoder's output space, trained with the adapter; no text encoder
needed), and gets its own LoRA adapter ``class_{c}`` trained on that class's real images, resized to the
pipeline's resolution; the pipeline's weights stay frozen. Samples are drawn at the pipeline's resolution with
DDIM (deterministic given the start noise, which comes from the ``torch.Generator``) and resized to the
dataset's. The pipeline enters configs (so bank and cache keys) by its fingerprint (:func:`pipeline_fingerprint`),
not its path; a saved generator holds the adapters and a reference to the pipeline folder, which must still have
that fingerprint when it is loaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tailmix.classifiers.device import PRECISIONS, grad_scaler, precision_autocast
from tailmix.generators.base import (Generator, check_torch_generator, randint, randn, read_config,
                                     write_config)
from tailmix.generators.ddpm import _jsonable, seeded
from tailmix.generators.lora import DEFAULT_TARGETS, _require_peft, adapter_name, available_targets, tail_classes
from tailmix.io.atomic import honour_umask_tree

#: The flag that names the pipeline folder on the command line (quoted by every error about it).
FLAG = "--pretrained"
LAYOUTS = ("latent", "pixel")
CONDITIONINGS = ("prompt", "token")
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_FOLDER = "adapters"
TOKENS_FILE = "class_tokens.pt"
#: Fine-tuning budgets per preset (what ``--preset`` means for this kind).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(steps_per_class=2, sample_steps=2, batch_size=2),
    "small": dict(steps_per_class=100, sample_steps=20, batch_size=4),
    "base": dict(steps_per_class=500, sample_steps=50, batch_size=8),
}
#: Files that configure a pipeline (hashed whole); every other file (weights) is hashed with its size.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: a big folder is read once


def _require_transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("the pretrained kind's text encoder and tokenizer need transformers; install "
                          "`pip install 'tailmix[pipelines]'`, or pass conditioning='token' (learned class tokens, "
                          "no text encoder)") from err
    return transformers


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def pipeline_fingerprint(folder: str | Path) -> str:
    """SHA-256 over a pipeline folder's files (relative path, size and content digest of each; hidden files and
    folders skipped): two folders with equal fingerprints hold the same model, wherever they lie."""
    root = Path(folder)
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            h.update(f"{rel}\0{path.stat().st_size}\0{_file_digest(path)}\n".encode())
    return h.hexdigest()


def read_pipeline(folder: str | Path | None, conditioning: str = "prompt") -> tuple[Path, str, dict]:
    """Check a local pipeline folder: ``(resolved folder, layout, model_index)``; a one-line ``ValueError`` saying
    what to pass when it is missing or not a pipeline this kind reads."""
    if folder is None or str(folder) == "":
        raise ValueError(f"the pretrained generator needs a local diffusers pipeline folder: pass {FLAG} PATH (the "
                         "folder save_pretrained wrote, with model_index.json; tailmix never downloads)")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"{FLAG} {folder}: no such folder; pass a local diffusers pipeline folder (with "
                         "model_index.json, as save_pretrained writes it; tailmix never downloads)")
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"{FLAG} {folder} has no model_index.json; pass the folder a diffusers pipeline's "
                         "save_pretrained wrote (for a bare UNet2DModel folder use ClassConditionalDDPM.from_unet)")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{FLAG} {folder}: model_index.json is not valid JSON ({err}); save the pipeline again"
                         ) from None

    def cls(name):
        entry = index.get(name)
        return entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[1] else None

    unet = cls("unet")
    if unet == "UNet2DConditionModel":
        layout, need = "latent", ["unet", "vae", "scheduler"] + (["text_encoder", "tokenizer"]
                                                                  if conditioning == "prompt" else [])
    elif unet == "UNet2DModel":
        layout, need = "pixel", ["unet", "scheduler"]
        if "vae" in index and cls("vae"):
            raise ValueError(f"{FLAG} {folder}: a UNet2DModel with a VAE (a latent pixel pipeline) is not supported; "
                             "pass a Stable-Diffusion-layout or DDPMPipeline-layout folder")
    else:
        raise ValueError(f"{FLAG} {folder}: its unet is {unet!r}; the pretrained kind reads pipelines whose unet is a "
                         "UNet2DConditionModel (Stable Diffusion layout) or a UNet2DModel (DDPMPipeline layout)")
    missing = [n for n in need if not cls(n) or not (root / n).is_dir()]
    if missing:
        extra = (" (conditioning='token' needs no text encoder)" if set(missing) & {"text_encoder", "tokenizer"}
                 else "")
        raise ValueError(f"{FLAG} {folder} lacks {', '.join(missing)} (listed in model_index.json and a sub-folder "
                         f"each){extra}; pass a complete pipeline folder")
    return root.resolve(), layout, index


class PretrainedPipeline(Generator):
    """A local diffusers pipeline with a LoRA adapter (and, with learned tokens, a class token) per class.

    Args:
        pipeline: The pipeline folder (``model_index.json`` and one sub-folder per component).
        classes: Classes that get an adapter: ``None`` (every class), ``"tail"`` (train count below the median;
            prompt conditioning only, the others are sampled from the pipeline with their prompt) or a list.
        conditioning: ``"prompt"`` (the text encoder reads ``prompt``) or ``"token"`` (a learned vector per class
            replaces the text; the pixel layout has no text input, so its adapters are its only conditioning).
        prompt: Prompt template; ``{name}`` is replaced by the class name.
        rank: LoRA rank. alpha: LoRA scale (update scaled by ``alpha / rank``).
        steps_per_class: Optimisation steps per adapter. batch_size: Images per step.
        lr: AdamW learning rate of the adapters (and tokens).
        sample_steps: DDIM steps when sampling. guidance_scale: classifier-free guidance (1: off; the empty
            prompt, or a zero token, is the unconditional input; latent layout only).
        sample_batch_size: Images per UNet batch while sampling.
        target_modules: Module-name suffixes to adapt (default: the attention projections, else the DDPM's).
        precision: ``auto`` (bf16 on GPUs that support it, else fp16 with a gradient scaler; full precision on
            the CPU), ``fp32``, ``bf16`` or ``fp16`` (the last two on CUDA only; the CPU always runs fp32).
        device: Where the pipeline runs.
        preset: ``tiny`` / ``small`` / ``base``: default ``steps_per_class``, ``sample_steps`` and ``batch_size``.
    """

    kind = "pretrained"
    trains = True
    presets = tuple(PRESETS)
    takes_settings = {"pretrained": "pipeline"}  # --pretrained PATH -> PretrainedPipeline(pipeline=PATH)
    unlabeled_refusal = ("its pipeline is pretrained already; fine-tune the pipeline on the unlabeled images before "
                         "passing it to --pretrained")

    def __init__(self, pipeline: str | Path, *, classes: list[int] | str | None = None,
                 conditioning: str = "prompt", prompt: str = "a {name} image", rank: int = 4, alpha: float = 8.0,
                 steps_per_class: int | None = None, batch_size: int | None = None, lr: float = 1e-4,
                 sample_steps: int | None = None, guidance_scale: float = 1.0, sample_batch_size: int = 16,
                 target_modules: list[str] | None = None, precision: str = "auto", preset: str = "small",
                 device: torch.device | str = "cpu") -> None:
        super().__init__(device=device)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}; got {conditioning!r}")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.path, self.layout, self.index = read_pipeline(pipeline, conditioning)
        if self.layout == "pixel" and conditioning == "prompt":
            conditioning = "token"  # no text input: the adapter (and nothing else) tells the classes apart
        p = PRESETS[preset]
        self.preset = preset
        self.conditioning = conditioning
        if classes is not None and classes != "tail":
            classes = sorted({int(c) for c in classes})
        if classes is not None and conditioning == "token":
            raise ValueError("with learned class tokens (and in the pixel layout) every class needs its adapter; "
                             "leave classes=None, or use conditioning='prompt' with a latent pipeline")
        self.classes = classes
        self.prompt = str(prompt)
        self.rank, self.alpha, self.lr = int(rank), float(alpha), float(lr)
        self.steps_per_class = int(p["steps_per_class"] if steps_per_class is None else steps_per_class)
        self.batch_size = int(p["batch_size"] if batch_size is None else batch_size)
        self.sample_steps = int(p["sample_steps"] if sample_steps is None else sample_steps)
        self.guidance_scale = float(guidance_scale)
        self.sample_batch_size = int(sample_batch_size)
        for name in ("rank", "batch_size", "sample_steps", "sample_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.steps_per_class < 0 or self.lr <= 0:
            raise ValueError(f"steps_per_class must be >= 0 and lr > 0; got {self.steps_per_class}, {self.lr}")
        self.target_modules = None if target_modules is None else list(target_modules)
        self.precision = precision
        self.fingerprint = pipeline_fingerprint(self.path)
        self.class_names: list[str] | None = None
        self.model = None  # the peft-wrapped UNet (fit / load)
        self.tokens: torch.nn.Parameter | None = None  # (C, 1, D) learned class tokens
        self.loss_history: dict[int, list[float]] = {}
        self._parts: dict[str, Any] | None = None

    @classmethod
    def check_settings(cls, *, pretrained: str | None = None) -> None:
        """The ``--pretrained`` folder is a pipeline this kind reads (checked before any work)."""
        read_pipeline(pretrained)

    @classmethod
    def for_dataset(cls, dataset, *, pipeline: str | Path | None = None, train_steps: int | None = None,
                    **hparams) -> PretrainedPipeline:
        """The kind for ``dataset`` (what ``make_generator`` calls); ``train_steps`` sets ``steps_per_class``."""
        if train_steps is not None:
            hparams["steps_per_class"] = train_steps
        return cls(pipeline, **hparams)

    # -- the pipeline's parts (loaded on first use: a cache lookup needs only the fingerprint) -------
    def _components(self) -> dict[str, Any]:
        if self._parts is not None:
            return self._parts
        try:
            parts = self._load_components()
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            if str(err).startswith(FLAG):
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{FLAG} {self.path}: its components do not load ({first}); pass a complete pipeline "
                             "folder saved with save_pretrained (full-precision weights, no variant suffix)") from None
        for name in ("unet", "vae", "text_encoder"):
            if name in parts:
                parts[name].requires_grad_(False)
                parts[name].to(self.device).eval()
        self._parts = parts
        return parts

    def _load_components(self) -> dict[str, Any]:
        import diffusers

        parts: dict[str, Any] = {}
        if self.layout == "latent":
            parts["unet"] = diffusers.UNet2DConditionModel.from_pretrained(self.path / "unet")
            parts["vae"] = diffusers.AutoencoderKL.from_pretrained(self.path / "vae")
            if self.conditioning == "prompt":
                transformers = _require_transformers()
                parts["text_encoder"] = transformers.CLIPTextModel.from_pretrained(self.path / "text_encoder")
                parts["tokenizer"] = transformers.CLIPTokenizer.from_pretrained(self.path / "tokenizer")
            if parts["unet"].config.addition_embed_type is not None or parts["unet"].config.class_embed_type:
                raise ValueError(f"{FLAG} {self.path}: its UNet needs extra conditioning inputs "
                                 f"({parts['unet'].config.addition_embed_type or parts['unet'].config.class_embed_type}"
                                 ", e.g. Stable Diffusion XL); pass a Stable Diffusion 1.x/2.x-layout pipeline")
        else:
            parts["unet"] = diffusers.UNet2DModel.from_pretrained(self.path / "unet")
            if parts["unet"].config.num_class_embeds is not None or parts["unet"].config.class_embed_type:
                raise ValueError(f"{FLAG} {self.path}: its UNet2DModel is class-conditional; wrap it with "
                                 "ClassConditionalDDPM.from_unet instead (this kind adapts unconditional pipelines)")
        train = diffusers.DDPMScheduler.from_pretrained(self.path / "scheduler")
        parts["train_scheduler"] = train
        parts["sample_scheduler"] = diffusers.DDIMScheduler.from_config(train.config)
        return parts

    @property
    def resolution(self) -> int:
        """Side of the images the pipeline makes (its UNet's sample size, times the VAE's scale)."""
        parts = self._components()
        size = parts["unet"].config.sample_size
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        if self.layout == "latent":
            size *= 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        return size

    @property
    def pipeline_channels(self) -> int:
        parts = self._components()
        return int(parts["vae"].config.in_channels if self.layout == "latent" else parts["unet"].config.in_channels)

    def _targets(self) -> list[str]:
        unet = self._components()["unet"]
        if self.target_modules is not None:
            missing = set(self.target_modules) - set(available_targets(unet, tuple(self.target_modules)))
            if missing:
                raise ValueError(f"target_modules {sorted(missing)} match no module of the pipeline's UNet; choose "
                                 f"among {available_targets(unet)} or other module-name suffixes")
            return self.target_modules
        targets = available_targets(unet, ATTENTION_TARGETS) or available_targets(unet, DEFAULT_TARGETS)
        if not targets:
            raise ValueError("no module of the pipeline's UNet matches the default LoRA targets; pass target_modules")
        return targets

    def hparams(self) -> dict:
        return {"pipeline_fingerprint": self.fingerprint, "layout": self.layout, "classes": self.classes,
                "conditioning": self.conditioning, "prompt": self.prompt, "rank": self.rank, "alpha": self.alpha,
                "steps_per_class": self.steps_per_class, "batch_size": self.batch_size, "lr": self.lr,
                "sample_steps": self.sample_steps, "guidance_scale": self.guidance_scale,
                "sample_batch_size": self.sample_batch_size, "target_modules": self.target_modules,
                "precision": self.precision, "preset": self.preset, "class_names": self.class_names}

    def _fitted_state(self) -> dict[str, Any]:
        out = {} if self.model is None else {n: p for n, p in self.model.named_parameters() if "lora_" in n}
        if self.tokens is not None:
            out["class_tokens"] = self.tokens
        return out

    def _move(self, device: torch.device) -> None:
        if self._parts is not None:
            for name in ("unet", "vae", "text_encoder"):
                if name in self._parts:
                    self._parts[name].to(device)
        if self.tokens is not None:
            self.tokens = torch.nn.Parameter(self.tokens.detach().to(device), requires_grad=False)

    # -- precision ------------------------------------------------------------------------------------
    def _autocast(self):
        return precision_autocast(self.device, self.precision)

    # -- conditioning -----------------------------------------------------------------------------
    def _class_classes(self, dataset) -> list[int]:
        if self.classes is None:
            return list(range(dataset.num_classes))
        if self.classes == "tail":
            return tail_classes(dataset.train_counts)
        bad = [c for c in self.classes if not 0 <= c < dataset.num_classes]
        if bad:
            raise ValueError(f"classes {bad} are out of range; the dataset has classes 0..{dataset.num_classes - 1}")
        return list(self.classes)

    @torch.no_grad()
    def _encode_prompt(self, text: str) -> torch.Tensor:
        parts = self._components()
        tok = parts["tokenizer"]
        ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(self.device)
        return parts["text_encoder"](ids)[0].float()  # (1, L, D)

    def _condition(self, class_id: int | None, b: int) -> torch.Tensor | None:
        """The UNet's ``encoder_hidden_states`` for ``b`` images of ``class_id`` (``None``: unconditional)."""
        if self.layout == "pixel":
            return None
        if self.conditioning == "token":
            dim = self._components()["unet"].config.cross_attention_dim
            tok = torch.zeros(1, 1, dim, device=self.device) if class_id is None else self.tokens[class_id][None]
            return tok.expand(b, -1, -1)
        text = "" if class_id is None else self.prompt.format(name=self.class_names[class_id])
        return self._encode_prompt(text).expand(b, -1, -1)

    def _unet_call(self, unet, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        with self._autocast():
            if self.layout == "pixel":
                return unet(x, t).sample.float()
            return unet(x, t, encoder_hidden_states=cond).sample.float()

    # -- images in and out ------------------------------------------------------------------------
    def _to_pipeline(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, C)`` -> float ``(N, C', R, R)`` in [-1, 1] at the pipeline's size and channels."""
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
        ch = self.pipeline_channels
        if x.shape[1] != ch:
            x = x.mean(1, keepdim=True).expand(-1, ch, -1, -1) if ch in (1, 3) and x.shape[1] in (1, 3) else None
            if x is None:
                raise ValueError(f"the pipeline makes {ch}-channel images; tailmix datasets have 1 or 3 channels")
        r = self.resolution
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(-1, 1).to(self.device)

    def _to_dataset(self, x: torch.Tensor) -> np.ndarray:
        """float ``(N, C', R, R)`` in [-1, 1] -> uint8 ``(N, H, W, C)`` at the dataset's size and channels."""
        h, w, c = self._image_shape  # type: ignore[misc]
        x = x.float().clamp(-1, 1)
        if x.shape[1] != c:
            x = x.mean(1, keepdim=True) if c == 1 else x[:, :1].expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Training targets: latents (the VAE's posterior mean, scaled) or the pixels themselves."""
        if self.layout == "pixel":
            return x
        vae = self._components()["vae"]
        sf = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        out = [vae.encode(x[i:i + 16]).latent_dist.mean * sf for i in range(0, len(x), 16)]
        return torch.cat(out).float()

    # -- training ---------------------------------------------------------------------------------
    def fit(self, dataset, *, generator: torch.Generator | None = None, progress: bool = False,
            unlabeled: np.ndarray | None = None) -> PretrainedPipeline:
        """Train an adapter (and token) per class on that class's train images, the pipeline frozen."""
        if unlabeled is not None:
            raise ValueError("the pretrained kind does not pretrain (its pipeline is pretrained already), so it "
                             "cannot use unlabeled images; drop --unlabeled for it or use --generator ddpm/lora")
        peft = _require_peft()
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        check_torch_generator(generator)
        self._image_shape = tuple(int(v) for v in dataset.image_shape)  # type: ignore[assignment]
        self._num_classes = int(dataset.num_classes)
        self.class_names = [str(n) for n in dataset.class_names]
        classes = self._class_classes(dataset)
        empty = [c for c in classes if dataset.train_counts[c] == 0]
        if empty:
            raise ValueError(f"classes {empty} have no train images to adapt to; leave them out of classes")
        parts = self._components()
        unet = parts["unet"]
        sched = parts["train_scheduler"]
        config = peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self._targets(),
                                 lora_dropout=0.0, bias="none")
        if self.conditioning == "token" and self.layout == "latent":
            dim = unet.config.cross_attention_dim
            self.tokens = torch.nn.Parameter(randn((dataset.num_classes, 1, dim), generator, self.device))
        model = None
        self.loss_history = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(classes) * self.steps_per_class, desc="pretrained lora", unit="step")
        scaler = grad_scaler(self.device, self.precision)
        try:
            for c in classes:
                name = adapter_name(c)
                with seeded(generator):  # peft initialises LoRA A matrices from the global RNG
                    if model is None:
                        model = peft.get_peft_model(unet, config, adapter_name=name)
                    else:
                        model.add_adapter(name, config)
                model.set_adapter(name)
                params = [p for n, p in model.named_parameters() if f".{name}." in n]
                for p in params:
                    p.requires_grad_(True)
                z = self._encode(self._to_pipeline(dataset.train_images[dataset.train_labels == c]))
                prompt_cond = None if self.conditioning == "token" else self._condition(c, 1)
                trainable = params + ([self.tokens] if self.tokens is not None else [])
                opt = torch.optim.AdamW(trainable, lr=self.lr, weight_decay=0.0)
                base = model.get_base_model()
                base.train()
                losses = []
                for _ in range(self.steps_per_class):
                    rows = randint(len(z), (min(self.batch_size, len(z)),), generator, "cpu")
                    x0 = z[rows.to(z.device)]
                    noise = randn(tuple(x0.shape), generator, self.device)
                    t = randint(sched.config.num_train_timesteps, (len(x0),), generator, self.device)
                    xt = sched.add_noise(x0, noise, t)
                    if self.conditioning == "token":
                        cond = None if self.layout == "pixel" else self.tokens[c][None].expand(len(x0), -1, -1)
                    else:
                        cond = prompt_cond.expand(len(x0), -1, -1)
                    pred = self._unet_call(base, xt, t, cond)
                    target = sched.get_velocity(x0, noise, t) if sched.config.prediction_type == "v_prediction" \
                        else noise
                    loss = F.mse_loss(pred, target)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    losses.append(float(loss.detach()))
                    if bar is not None:
                        bar.update(1)
                base.eval()
                for p in params:
                    p.requires_grad_(False)
                self.loss_history[c] = losses
        finally:
            if bar is not None:
                bar.close()
        if self.tokens is not None:
            self.tokens.requires_grad_(False)
        self.model = model
        self._mark_fitted(dataset, generator=generator, extra={"adapted_classes": classes})
        return self

    @property
    def adapted_classes(self) -> list[int]:
        """Classes with a trained adapter (empty before fit)."""
        return list((self._fit_info or {}).get("adapted_classes") or [])

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        """``n`` uint8 images of ``class_id`` at the dataset's size: DDIM at the pipeline's resolution, resized."""
        self._check_sample(class_id, n, generator)
        c, n = int(class_id), int(n)
        if n == 0:
            return self._empty()
        parts = self._components()
        unet = parts["unet"] if self.model is None else self.model.get_base_model()
        adapted = self.model is not None and c in self.adapted_classes
        if adapted:
            self.model.set_adapter(adapter_name(c))
        off = self.model.disable_adapter() if self.model is not None and not adapted else contextlib.nullcontext()
        out = []
        with torch.inference_mode(), off:
            for start in range(0, n, self.sample_batch_size):
                out.append(self._to_dataset(self._denoise(unet, c, min(self.sample_batch_size, n - start),
                                                          generator)))
        return np.concatenate(out)

    def _denoise(self, unet, c: int, b: int, generator: torch.Generator) -> torch.Tensor:
        parts = self._components()
        sched = parts["sample_scheduler"]
        sched.set_timesteps(self.sample_steps)
        ch = unet.config.in_channels
        size = unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        x = randn((b, ch, h, w), generator, self.device) * sched.init_noise_sigma
        guided = self.layout == "latent" and self.guidance_scale != 1.0
        cond = self._condition(c, b)
        if guided:
            cond = torch.cat([cond, self._condition(None, b)])
        for t in sched.timesteps:
            xin = sched.scale_model_input(torch.cat([x, x]) if guided else x, t)
            tt = torch.full((len(xin),), int(t), dtype=torch.long, device=self.device)
            eps = self._unet_call(unet, xin, tt, cond)
            if guided:
                e_cls, e_null = eps.chunk(2)
                eps = e_null + self.guidance_scale * (e_cls - e_null)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        if self.layout == "latent":
            vae = parts["vae"]
            sf = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
            with self._autocast():
                x = vae.decode(x / sf).sample.float()
        return x

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (with the pipeline folder's path and fingerprint), the adapters (peft format)
        and the learned class tokens; the pipeline itself is referenced, not copied."""
        if not self.fitted:
            raise ValueError("save() needs a fitted generator; call fit(dataset) first")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        if self.model is not None:
            self.model.save_pretrained(folder / ADAPTER_FOLDER)
            honour_umask_tree(folder / ADAPTER_FOLDER)
        if self.tokens is not None:
            torch.save(self.tokens.detach().cpu(), folder / TOKENS_FILE)
        cfg = self.config()
        cfg["pipeline_path"] = str(self.path)
        write_config(folder, _jsonable(cfg))
        return folder

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> PretrainedPipeline:
        """Read a folder written by :meth:`save`; the pipeline folder it names must still have its fingerprint."""
        peft = _require_peft()
        folder = Path(path)
        cfg = read_config(folder, kind=cls.kind)
        keys = ("classes", "conditioning", "prompt", "rank", "alpha", "steps_per_class", "batch_size", "lr",
                "sample_steps", "guidance_scale", "sample_batch_size", "target_modules", "precision", "preset")
        gen = cls(cfg["pipeline_path"], device=device, **{k: cfg[k] for k in keys if k in cfg})
        if gen.fingerprint != cfg["pipeline_fingerprint"]:
            raise ValueError(f"the pipeline at {cfg['pipeline_path']} changed since {folder} was trained on it (its "
                             "fingerprint differs); put the original pipeline back or train the generator again")
        gen.class_names = cfg.get("class_names")
        gen._restore_fit_info(cfg)
        adapted = gen.adapted_classes
        unet = gen._components()["unet"]
        model = None
        for c in adapted:
            sub = folder / ADAPTER_FOLDER / adapter_name(c)
            if not sub.is_dir():
                raise FileNotFoundError(f"{sub} is missing: the adapter of class {c}; save the generator again")
            if model is None:
                model = peft.PeftModel.from_pretrained(unet, sub, adapter_name=adapter_name(c))
            else:
                model.load_adapter(sub, adapter_name=adapter_name(c))
        gen.model = None if model is None else model.to(gen.device).eval()
        if (folder / TOKENS_FILE).is_file():
            tokens = torch.load(folder / TOKENS_FILE, map_location="cpu", weights_only=True)
            gen.tokens = torch.nn.Parameter(tokens.to(gen.device), requires_grad=False)
        return gen


def write_tiny_pipeline(folder: str | Path, layout: str = "latent", *, image_size: int = 16, seed: int = 0) -> Path:
    """Write a tiny pipeline with random weights (a few thousand parameters each) into ``folder``, in the latent
    (Stable Diffusion: UNet2DConditionModel, AutoencoderKL, CLIP text encoder + tokenizer, scheduler) or pixel
    (DDPMPipeline) layout: what the tests and ``benchmarks/gpu_generators.py --tiny`` use; nothing is downloaded
    (the tokenizer's vocabulary is written here: single characters, no merges)."""
    import diffusers

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    root = Path(folder)
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if layout == "pixel":
            unet = diffusers.UNet2DModel(sample_size=image_size, in_channels=3, out_channels=3, layers_per_block=1,
                                         block_out_channels=(4, 8), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                         attention_head_dim=4)
            diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(root)
            return root
        transformers = _require_transformers()
        unet = diffusers.UNet2DConditionModel(
            sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(4, 8),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8, norm_num_groups=4, attention_head_dim=4)
        vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(4, 4),
                                      latent_channels=4, norm_num_groups=2, layers_per_block=1, sample_size=image_size)
        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
        for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
            vocab[ch] = len(vocab)
            vocab[ch + "</w>"] = len(vocab)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    tok_dir = root / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = transformers.CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                                           model_max_length=16)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    tokenizer.save_pretrained(tok_dir)
    sched.save_pretrained(root / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}
    (root / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return root
