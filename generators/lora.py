"""One LoRA adapter per (tail) class on a frozen class-conditional DDPM (peft).

``UNet2DModel`` has no ``add_adapter``, so the UNet (a copy: the base model stays untouched) is wrapped
with peft's ``get_peft_model`` and each class gets its own named adapter ``class_{c}``, trained on that
class's real images only while the base weights stay frozen. Sampling a class with an adapter switches
to it; other classes use the base with adapters disabled. Seeds: SD+LoRA self-validation; LoRA on a
handful of images pulls samples towards them (a prototype's 5-image class did), so keep ``steps_per_class`` modest.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailmix.generators.base import Generator, check_torch_generator, read_config, write_config
from tailmix.generators.ddpm import ClassConditionalDDPM, _jsonable, seeded
from tailmix.io.atomic import honour_umask_tree

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "time_emb_proj")
BASE_FOLDER = "base"
ADAPTER_FOLDER = "adapters"


def _require_peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - peft is in install_requires
        raise ImportError("LoRA adapters need peft; install tailmix with `pip install -e .` (or `pip install peft`)"
                          ) from err
    return peft


def adapter_name(class_id: int) -> str:
    return f"class_{int(class_id)}"


def tail_classes(counts: np.ndarray) -> list[int]:
    """Classes whose train count is below the median count (the default classes that get an adapter)."""
    counts = np.asarray(counts)
    return [int(c) for c in np.flatnonzero(counts < np.median(counts))]


def available_targets(unet: torch.nn.Module, candidates: tuple[str, ...] = DEFAULT_TARGETS) -> list[str]:
    """The names in ``candidates`` that end some module name of ``unet`` (what peft can wrap)."""
    names = [n for n, _ in unet.named_modules()]
    return [t for t in candidates if any(n == t or n.endswith("." + t) for n in names)]


class LoRAClassAdapters(Generator):
    """A class-conditional DDPM plus a LoRA adapter for each of ``classes``.

    Args:
        base: The DDPM to adapt (fitted here by ``fit`` when it is not fitted yet). It is never modified.
        classes: Classes that get an adapter (default: train count below the median, set in ``fit``).
        rank: LoRA rank ``r``.
        alpha: LoRA scaling ``lora_alpha`` (update scaled by ``alpha / rank``).
        steps_per_class: Optimisation steps per adapter (batches of the base's ``batch_size``, capped at
            the class's image count).
        lr: AdamW learning rate of the adapters.
        target_modules: Module-name suffixes to adapt (default: those of ``DEFAULT_TARGETS`` that exist).
        cfg_dropout: Label dropout while training an adapter (default: the base's).
    """

    kind = "lora"
    trains = True  # the settings go to the base DDPM (for_dataset)
    presets = ClassConditionalDDPM.presets
    pretrains = True
    takes_unlabeled = True  # fit(unlabeled=...) passes them to the base DDPM's pretraining

    def __init__(self, base: ClassConditionalDDPM, *, classes: list[int] | None = None, rank: int = 4,
                 alpha: float = 8.0, steps_per_class: int = 200, lr: float = 1e-3,
                 target_modules: list[str] | None = None, cfg_dropout: float | None = None) -> None:
        if not isinstance(base, ClassConditionalDDPM):
            raise ValueError(f"base must be a ClassConditionalDDPM (or a subclass); got {type(base).__name__}")
        super().__init__(device=base.device)
        if int(rank) < 1:
            raise ValueError(f"rank must be >= 1; got {rank}")
        if int(steps_per_class) < 0:
            raise ValueError(f"steps_per_class must be >= 0; got {steps_per_class}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0; got {lr}")
        if cfg_dropout is not None and not 0.0 <= cfg_dropout <= 1.0:
            raise ValueError(f"cfg_dropout is a probability in [0, 1]; got {cfg_dropout}")
        self.base = base
        self.classes = None if classes is None else sorted({int(c) for c in classes})
        if self.classes is not None:
            self._check_classes(self.classes, base.num_classes)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.steps_per_class = int(steps_per_class)
        self.lr = float(lr)
        if target_modules is not None:
            missing = set(target_modules) - set(available_targets(base.unet, tuple(target_modules)))
            if missing:
                raise ValueError(f"target_modules {sorted(missing)} match no module of the UNet; choose among "
                                 f"{available_targets(base.unet)} (or other module-name suffixes)")
        self.target_modules = list(target_modules) if target_modules is not None else available_targets(base.unet)
        if not self.target_modules:
            raise ValueError(f"none of {DEFAULT_TARGETS} exists in the UNet; pass target_modules explicitly")
        self.cfg_dropout = cfg_dropout
        self._image_shape = base.image_shape
        self._num_classes = base.num_classes
        self.model = None  # the peft-wrapped copy of the base UNet, built by fit / load
        self.loss_history: dict[int, list[float]] = {}

    @staticmethod
    def _check_classes(classes: list[int], num_classes: int | None) -> None:
        bad = [c for c in classes if not 0 <= c < int(num_classes)]  # type: ignore[arg-type]
        if bad:
            raise ValueError(f"classes {bad} are out of range; the base model has classes 0..{num_classes - 1}")

    def _lora_config(self):
        peft = _require_peft()
        return peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=list(self.target_modules),
                               lora_dropout=0.0, bias="none")

    @property
    def adapted_classes(self) -> list[int]:
        """Classes that have a trained adapter (empty before fit)."""
        return list(self.classes or []) if self.model is not None else []

    @classmethod
    def for_dataset(cls, dataset, **hparams) -> LoRAClassAdapters:
        """Adapters (default settings) on a new base DDPM for ``dataset``; ``hparams`` go to the base."""
        return cls(ClassConditionalDDPM.for_dataset(dataset, **hparams))

    def hparams(self) -> dict:
        return {"classes": self.classes, "rank": self.rank, "alpha": self.alpha,
                "steps_per_class": self.steps_per_class, "lr": self.lr, "target_modules": self.target_modules,
                "cfg_dropout": self.cfg_dropout, "base": self.base.config()}

    def _fitted_state(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        return {n: p for n, p in self.model.named_parameters() if "lora_" in n}

    def _move(self, device: torch.device) -> None:
        self.base.to(device)
        if self.model is not None:
            self.model.to(device)

    # -- training ---------------------------------------------------------------------------------
    def fit(self, dataset, *, generator: torch.Generator | None = None, progress: bool = False,
            unlabeled: np.ndarray | None = None) -> LoRAClassAdapters:
        """Train one adapter per class on that class's real train images (fits the base first if needed).

        Args:
            unlabeled: Images without labels for the base DDPM's unconditional pretraining (``base.fit``), so the
                base must not be fitted yet.
        """
        peft = _require_peft()
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        check_torch_generator(generator)
        base = self.base
        if unlabeled is not None and base.fitted:
            raise ValueError("unlabeled images join the base DDPM's pretraining, but the base is fitted already; pass "
                             "them to base.fit(dataset, unlabeled=...) before wrapping it, or give an unfitted base")
        if not base.fitted:
            base.fit(dataset, generator=generator, progress=progress,
                     **({} if unlabeled is None else {"unlabeled": unlabeled}))
        base._check_dataset(dataset)
        base._prepare_training(dataset)  # conditioned bases (sketch) need their inputs for this dataset
        self.classes = tail_classes(dataset.train_counts) if self.classes is None else self.classes
        self._check_classes(self.classes, dataset.num_classes)
        empty = [c for c in self.classes if dataset.train_counts[c] == 0]
        if empty:
            raise ValueError(f"classes {empty} have no train images to adapt to; drop them from classes")
        unet = copy.deepcopy(base.unet)  # the base keeps its own weights
        for p in unet.parameters():
            p.requires_grad_(False)
        model = None
        self.loss_history = {}
        x_all = base._images_to_padded(dataset.train_images)
        labels = dataset.train_labels
        for c in self.classes:
            name = adapter_name(c)
            with seeded(generator):  # LoRA A matrices are initialised from the global RNG
                if model is None:
                    model = peft.get_peft_model(unet, self._lora_config(), adapter_name=name)
                else:
                    model.add_adapter(name, self._lora_config())
            model.set_adapter(name)
            params = [p for n, p in model.named_parameters() if f".{name}." in n]
            assert params, f"no parameters for adapter {name}"
            for p in params:
                p.requires_grad_(True)
            rows = torch.as_tensor(np.flatnonzero(labels == c), dtype=torch.long)
            y = torch.full((len(rows),), c, dtype=torch.long, device=base.device)
            self.loss_history[c] = base._train_loop(
                model.get_base_model(), params, x_all[rows.to(x_all.device)], y,
                phases=[(name, self.steps_per_class, False)], lr=self.lr, generator=generator,
                progress=progress, cfg_dropout=self.cfg_dropout, index=rows,
                desc=f"lora {name}")
        self.model = model
        if model is not None:
            model.eval()
        self._mark_fitted(dataset, generator=generator)
        return self

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        """Samples of ``class_id`` with its adapter when it has one, otherwise with the plain base."""
        self._check_sample(class_id, n, generator)
        c = int(class_id)
        if self.model is None or c not in self.classes:
            return self.base._sample_with(self.base.unet, c, int(n), generator)
        self.model.set_adapter(adapter_name(c))
        return self.base._sample_with(self.model.get_base_model(), c, int(n), generator)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path, *, base_path: str | Path | None = None) -> Path:
        """Write ``config.json``, the adapters (peft format) and the base (or a reference to it).

        Args:
            path: Folder to write.
            base_path: A folder where the base is already saved; it is referenced instead of copied.
        """
        if not self.fitted:
            raise ValueError("save() needs fitted adapters; call fit(dataset) first")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        if base_path is None:
            self.base.save(folder / BASE_FOLDER)
            ref = BASE_FOLDER
        else:
            saved = read_config(base_path)
            if saved.get("fit", {}) != _jsonable(self.base.config()["fit"]):
                raise ValueError(f"{base_path} holds a different base model than this one; save the base "
                                 "there first (base.save(base_path)) or omit base_path to copy it")
            ref = os.path.relpath(Path(base_path).resolve(), folder.resolve())
        if self.model is not None:
            self.model.save_pretrained(folder / ADAPTER_FOLDER)
            honour_umask_tree(folder / ADAPTER_FOLDER)  # safetensors writes 0o600; other files follow the umask
        cfg = self.config()
        cfg["base_path"] = ref
        write_config(folder, _jsonable(cfg))
        return folder

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> LoRAClassAdapters:
        """Load a folder written by :meth:`save` (adapters in peft's ``save_pretrained`` layout)."""
        from tailmix.generators.base import load_generator

        peft = _require_peft()
        folder = Path(path)
        cfg = read_config(folder, kind=cls.kind)
        base = load_generator(folder / cfg.get("base_path", BASE_FOLDER), device=device)
        gen = cls(base, classes=cfg["classes"], rank=cfg["rank"], alpha=cfg["alpha"],
                  steps_per_class=cfg["steps_per_class"], lr=cfg["lr"], target_modules=cfg["target_modules"],
                  cfg_dropout=cfg["cfg_dropout"])
        classes = cfg["classes"] or []
        if classes:
            unet = copy.deepcopy(base.unet)
            model = None
            for c in classes:
                sub = folder / ADAPTER_FOLDER / adapter_name(c)
                if not sub.is_dir():
                    raise FileNotFoundError(f"{sub} is missing: the adapter of class {c}; save the generator again")
                if model is None:
                    model = peft.PeftModel.from_pretrained(unet, sub, adapter_name=adapter_name(c))
                else:
                    model.load_adapter(sub, adapter_name=adapter_name(c))
            gen.model = model.to(gen.device).eval()
        gen._restore_fit_info(cfg)
        return gen
