"""The interface every synthetic-data generator of the pool implements, and loading by kind.

A generator is fitted on a dataset's ``train`` split, then ``sample(class_id, n, generator=g)`` returns
uint8 images shaped like the dataset's, every random draw coming from ``g`` (same seed, same images).
``config()`` is a JSON-serialisable dict that the bank hashes into its keys, so it holds everything that
changes the samples: the hyperparameters and, once fitted, a digest of the fitted state. ``save(path)``
writes a folder with ``config.json`` (its ``"kind"`` picks the class) and whatever the kind needs;
:func:`load_generator` reads any such folder back.

The registry (:data:`GENERATOR_KINDS`) is the one list of kinds: a new kind is one new module plus one line in
``_BUILTIN_KINDS`` (or one :func:`register_generator` call in your own code). Each class declares what it can do
as class attributes (:attr:`Generator.trains`, ``presets``, ``pretrains``, ``guided``, ``takes_unlabeled``,
``budgeted``, ``space``), and the application layer (``tailmix.pipeline``, ``configs``, ``budget``, the CLI's
``--generator`` choices) asks them through :func:`generator_class` and :func:`kinds_with` instead of naming kinds.
"""
from __future__ import annotations

import abc
import hashlib
import importlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

CONFIG_FILE = "config.json"
FORMAT_VERSION = 1

# kind -> "module:Class". Classes import lazily, so `import generators` never pulls in diffusers or peft.
_BUILTIN_KINDS: dict[str, str] = {
    "ddpm": "tailmix.generators.ddpm:ClassConditionalDDPM",
    "lora": "tailmix.generators.lora:LoRAClassAdapters",
    "sketch": "tailmix.generators.sketch:SketchConditionedDDPM",
    "augment": "tailmix.generators.augment:AugmentationGenerator",
    "gaussian": "tailmix.generators.gaussian:GaussianFeatureGenerator",
    "pretrained": "tailmix.generators.pretrained:PretrainedPipeline",
}


class _LazyKinds(Mapping):
    """Read-only mapping kind -> generator class that imports a class's module on first access."""

    def __init__(self, targets: dict[str, str | type]) -> None:
        self._targets = targets

    def __getitem__(self, kind: str) -> type[Generator]:
        target = self._targets.get(kind)
        if target is None:
            raise KeyError(kind)
        if isinstance(target, str):
            module, _, name = target.partition(":")
            target = getattr(importlib.import_module(module), name)
            self._targets[kind] = target
        return target

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, kind: object) -> bool:
        return kind in self._targets


GENERATOR_KINDS: Mapping[str, type[Generator]] = _LazyKinds(dict(_BUILTIN_KINDS))


def register_generator(kind: str, target: str | type) -> None:
    """Make ``load_generator`` know a user-defined kind (``target``: a class or ``"module:Class"``)."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string; got {kind!r}")
    GENERATOR_KINDS._targets[kind] = target  # type: ignore[attr-defined]


def generator_class(kind: str) -> type[Generator]:
    """The class registered for ``kind`` (``ValueError`` naming the registered kinds when there is none)."""
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"unknown generator kind {kind!r}; choose one of {sorted(GENERATOR_KINDS)} or register it "
                         "with generators.base.register_generator")
    return GENERATOR_KINDS[kind]


def kinds_with(**capabilities) -> tuple[str, ...]:
    """The registered kinds whose class has every given capability, in registry order.

    ``kinds_with(space="images")`` are the kinds that can fill a bank (the CLI's ``--generator`` choices);
    ``kinds_with(guided=True)`` those with classifier guidance.
    """
    return tuple(kind for kind in GENERATOR_KINDS
                 if all(getattr(GENERATOR_KINDS[kind], name) == value for name, value in capabilities.items()))


def make_generator(kind: str, dataset, **hparams) -> Generator:
    """A new, unfitted generator of a registered ``kind``, shaped for ``dataset``.

    Args:
        kind: A key of :data:`GENERATOR_KINDS` (``ddpm``, ``lora``, ``sketch``, ``augment``, ... or one added
            with :func:`register_generator`).
        dataset: What it will be fitted on (its ``image_shape`` and ``num_classes`` size the model).
        **hparams: Constructor settings of that kind (``preset``, ``train_steps``, ``device`` for the DDPMs).
    """
    return generator_class(kind).for_dataset(dataset, **hparams)


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Load any saved generator: reads ``path/config.json`` and dispatches on its ``"kind"``."""
    cfg = read_config(path)
    kind = cfg.get("kind")
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"{Path(path) / CONFIG_FILE} has kind {kind!r}, which is not a known generator kind "
                         f"({sorted(GENERATOR_KINDS)}); register it with generators.base.register_generator")
    gen = GENERATOR_KINDS[kind].load(path, device=device)
    verify_state(gen, path)
    return gen


def verify_state(gen: Generator, path: str | Path) -> None:
    """Check a loaded generator's weights against the ``state_digest`` its ``config.json`` recorded when it was
    saved: a flipped byte would otherwise be used, and a bank key (which holds that digest) would then name
    different images. A config without a digest (weights put there by hand) is not checked.

    Raises:
        ValueError: the weights do not match the digest.
    """
    recorded = (gen._fit_info or {}).get("state_digest")
    if recorded is None:
        return
    if state_digest(gen._fitted_state()) != recorded:
        raise ValueError(f"the weights in {path} do not match the state_digest in its {CONFIG_FILE} (corrupt or "
                         "replaced); train and save the generator again")


def read_config(path: str | Path, kind: str | None = None) -> dict:
    """The ``config.json`` of a saved generator folder (clear errors when it is missing or broken); with ``kind``,
    a folder another kind wrote is refused (each class's ``load`` passes its own)."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; pass the folder that Generator.save(path) wrote")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); save the generator again") from err
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise ValueError(f"{file} has no 'kind' entry; it was not written by Generator.save")
    if kind is not None and cfg["kind"] != kind:
        raise ValueError(f"{path} holds a {cfg['kind']!r} generator, not {kind!r}; use "
                         "generators.load_generator(path), which picks the class")
    return cfg


def write_config(path: str | Path, cfg: dict) -> Path:
    """Write ``cfg`` as ``path/config.json`` (creating the folder); returns the folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(folder / CONFIG_FILE)  # atomic: a crash never leaves half a config
    return folder


def config_digest(cfg: dict) -> str:
    """SHA-256 of a config's canonical JSON (sorted keys): stable across runs and machines."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def state_digest(arrays: dict[str, Any]) -> str:
    """SHA-256 over named arrays / tensors (sorted by name): a fingerprint of a fitted state."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).numpy()
        value = np.ascontiguousarray(value)
        h.update(name.encode())
        h.update(str(value.dtype).encode())
        h.update(repr(value.shape).encode())
        h.update(value.tobytes())
    return h.hexdigest()


def check_torch_generator(generator: Any, what: str = "generator") -> torch.Generator:
    """Return ``generator`` if it is a ``torch.Generator``; raise a ValueError that says how to make one."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{what} must be a torch.Generator (e.g. torch.Generator().manual_seed(0)); got "
                         f"{type(generator).__name__}. Every random draw comes from it, so seeds reproduce.")
    return generator


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Standard normal draws made on the generator's device, then moved: same seed, same numbers anywhere."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Integers in ``[0, high)`` drawn on the generator's device, then moved to ``device``."""
    return torch.randint(0, high, shape, generator=generator, device=generator.device).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform ``[0, 1)`` draws made on the generator's device, then moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def seed_of(generator: torch.Generator | None) -> int | None:
    """The seed a generator was created with (recorded in configs; ``None`` without a generator)."""
    return None if generator is None else int(generator.initial_seed())


class Generator(abc.ABC):
    """Base class of every synthetic-data generator.

    Subclasses set the class attribute ``kind`` and implement ``fit``, ``sample``, ``hparams``, ``save``,
    ``load`` (and ``_fitted_state`` when their fitted state is not enough to describe the samples
    otherwise). After ``fit`` they call :meth:`_mark_fitted`. The capability attributes below default to "no";
    a kind sets those it has, and the pipeline and the CLI follow them (a subclass inherits its parent's, so it
    sets back those it lacks).

    Attributes:
        kind: Registry name written into ``config.json``.
        space: ``"images"`` (sample returns uint8 images: the kind can fill a bank, so the CLI's ``--generator``
            takes it) or ``"features"`` (feature-space generator).
        trains: A model trained on the data: the pipeline builds it with ``preset`` (``--preset``, one of
            ``presets``), ``device`` (``--device``) and, when given, ``train_steps`` (``--generator-steps``).
            ``False``: built with its defaults only, on the CPU (augmentations).
        presets: The ``--preset`` names a training kind accepts.
        pretrains: Also takes ``pretrain_steps`` (``--pretrain-steps``): an unconditional phase first.
        guided: Has classifier guidance (``--guidance-scale``): a ``classifier_scale`` attribute and
            ``fit_guidance(dataset, generator=g, progress=p)`` that trains the guiding classifier on the fitted model.
        takes_unlabeled: ``fit(dataset, unlabeled=images)`` uses images without labels (``--unlabeled``).
        budgeted: The main job's time budget (``tailmix.budget``) can size it: :meth:`probe_costs` measures it,
            and the instance's ``train_steps`` and ``pretrain_steps`` are its default sizes.
        unlabeled_refusal: Why a kind without ``takes_unlabeled`` cannot use them (the CLI's one-line refusal).
        takes_settings: ``{Settings field: constructor keyword}`` of the settings only this kind takes (the
            pretrained kind's ``pretrained`` folder -> ``pipeline``): the pipeline passes them, the CLI requires
            them for the kind and refuses them when no listed kind takes them.
        device: Where the model runs.
    """

    kind: ClassVar[str] = ""
    space: ClassVar[str] = "images"
    trains: ClassVar[bool] = False
    presets: ClassVar[tuple[str, ...]] = ()
    pretrains: ClassVar[bool] = False
    guided: ClassVar[bool] = False
    takes_unlabeled: ClassVar[bool] = False
    budgeted: ClassVar[bool] = False
    unlabeled_refusal: ClassVar[str] = "it has no pretraining phase that images without labels could join"
    takes_settings: ClassVar[dict[str, str]] = {}

    def __init__(self, *, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._image_shape: tuple[int, int, int] | None = None
        self._num_classes: int | None = None
        self._fit_info: dict | None = None

    # -- shape of what it makes -----------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(H, W, C)`` of the samples (``None`` before fit)."""
        return self._image_shape

    @property
    def num_classes(self) -> int | None:
        """Number of classes it was fitted on (``None`` before fit)."""
        return self._num_classes

    @property
    def fitted(self) -> bool:
        return self._fit_info is not None

    # -- the interface ----------------------------------------------------------------------------
    @classmethod
    def for_dataset(cls, dataset, **hparams) -> Generator:
        """A new, unfitted generator for ``dataset`` (what :func:`make_generator` calls).

        The default passes ``hparams`` to the constructor: right for kinds whose model does not depend on the
        image shape or class count (augmentations, feature-space generators); the others override it.
        """
        return cls(**hparams)

    @abc.abstractmethod
    def fit(self, dataset, *, generator: torch.Generator | None = None, progress: bool = False) -> Generator:
        """Fit on ``dataset``'s train split (random draws from ``generator``); returns ``self``."""

    @abc.abstractmethod
    def sample(self, class_id: int, n: int, *, generator: torch.Generator) -> np.ndarray:
        """``n`` uint8 images ``(n, H, W, C)`` of class ``class_id``, drawn with ``generator``."""

    @abc.abstractmethod
    def hparams(self) -> dict:
        """The constructor's settings (JSON-serialisable, without ``device``)."""

    @abc.abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the fitted generator into folder ``path`` (with ``config.json``); returns the folder."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Generator:
        """Read a folder written by :meth:`save`."""

    def _fitted_state(self) -> dict[str, Any]:
        """Named arrays/tensors that determine the samples besides ``hparams`` (digested into the config)."""
        return {}

    @classmethod
    def check_settings(cls, **settings) -> None:
        """Refuse (``ValueError``, one line) bad values of the ``takes_settings`` of this kind before any work; the
        default requires each to be given."""
        for name, value in settings.items():
            if value is None:
                raise ValueError(f"--generator {cls.kind} needs --{name.replace('_', '-')}")

    def probe_costs(self, dataset, *, generator: torch.Generator, train_steps: int = 2,
                    sample_images: int = 8) -> tuple[float, float]:
        """Seconds per training step and per sampled image on this machine, measured on a throwaway model of this
        one's size (this one stays unfitted); what the time budget sizes a ``budgeted`` kind from."""
        raise NotImplementedError(f"generator kind {self.kind!r} has no cost model (budgeted = False)")

    def config(self) -> dict:
        """JSON-serialisable description: ``kind``, hyperparameters and, once fitted, the fitted state.

        ``fit`` holds the dataset fingerprint, the fit seed and a digest of the fitted weights, so two
        generators with equal configs give equal samples for equal seeds.
        """
        cfg = {"kind": self.kind, "format": FORMAT_VERSION, **self.hparams()}
        cfg["image_shape"] = list(self._image_shape) if self._image_shape else None
        cfg["num_classes"] = self._num_classes
        if self._fit_info is not None:
            info = dict(self._fit_info)
            if info.get("state_digest") is None:
                info["state_digest"] = self._fit_info["state_digest"] = state_digest(self._fitted_state())
            cfg["fit"] = info
        else:
            cfg["fit"] = None
        return cfg

    def to(self, device: torch.device | str) -> Generator:
        """Move the model to ``device`` (e.g. ``"cuda:1"``); returns ``self``."""
        self.device = torch.device(device)
        self._move(self.device)
        return self

    def _move(self, device: torch.device) -> None:
        """Hook for subclasses with modules/tensors to move."""

    # -- helpers for subclasses -------------------------------------------------------------------
    def _mark_fitted(self, dataset=None, *, generator: torch.Generator | None = None,
                     image_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                     extra: dict | None = None) -> None:
        """Record what the fit saw; the state digest is computed lazily by :meth:`config`."""
        if dataset is not None:
            image_shape = tuple(int(v) for v in dataset.image_shape)
            num_classes = int(dataset.num_classes)
        self._image_shape = tuple(image_shape) if image_shape is not None else None  # type: ignore[assignment]
        self._num_classes = num_classes
        self._fit_info = {"dataset": None if dataset is None else dataset.fingerprint(),
                          "dataset_name": None if dataset is None else dataset.name,
                          "seed": seed_of(generator), "state_digest": None, **(extra or {})}

    def _restore_fit_info(self, cfg: dict) -> None:
        """Restore shape, class count and fit record from a saved config (used by ``load``)."""
        self._image_shape = tuple(cfg["image_shape"]) if cfg.get("image_shape") else None  # type: ignore
        self._num_classes = cfg.get("num_classes")
        self._fit_info = dict(cfg["fit"]) if cfg.get("fit") else None

    def _check_sample(self, class_id: int, n: int, generator: Any) -> None:
        """Raise a ValueError that says how to fix a bad ``sample`` call."""
        if not self.fitted:
            raise ValueError(f"this {type(self).__name__} is not fitted; call fit(dataset) first, or load a "
                             "saved one with load_generator(path)")
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)):
            raise ValueError(f"class_id must be an int; got {type(class_id).__name__}")
        if not 0 <= int(class_id) < int(self._num_classes):  # type: ignore[arg-type]
            raise ValueError(f"class_id {class_id} is out of range; the generator was fitted on "
                             f"{self._num_classes} classes, so use 0..{self._num_classes - 1}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int (how many samples to draw); got {n!r}")
        check_torch_generator(generator)

    def _empty(self) -> np.ndarray:
        assert self._image_shape is not None
        return np.zeros((0, *self._image_shape), np.uint8)

    def __repr__(self) -> str:
        state = "fitted" if self.fitted else "unfitted"
        return f"{type(self).__name__}(kind={self.kind!r}, {state}, device={self.device})"
