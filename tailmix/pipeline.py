"""The application layer: from settings to a dataset, a trained generator, a filter, a filled bank, a fitted
encoder and the env's keyword arguments, each cached under ``cache_dir`` and reused by later runs.

The commands (``tailmix.commands``, beside ``tailmix.configs``, ``tailmix.runs`` and ``tailmix.policies``; the
CLI ``tailmix.train_agents`` parses and dispatches to them) and the scripts in ``benchmarks/`` both call this module,
so a bank or encoder made by one is found by the other. It sits above the env and the agents and below the CLI::

    bank = ensure_bank(Settings(dataset="digits"), load_data(Settings()))   # train + filter + fill (cached)
    kw = prepared_env_kwargs(Settings(), dataset)                           # SyntheticRatioEnv(**kw)

Cache keys are hashes of the dataset's fingerprint and of everything that changes the cached object (a changed
key retrains): generators under ``generators/<kind>-<key>``, reference filters under ``filters/<key>``, banks
under ``banks/`` (``generators.pool``), encoders under ``encoders/`` (``envs.features``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tailmix.envs.config import RatioEnvConfig

#: Synthetic sources of the env: a filled bank, classic augmentations, or virtual Gaussian features.
SOURCES = ("bank", "augment", "gaussian")


def _default_cache_dir() -> str:
    """The one default cache folder, the envs' (``envs.cache.default_cache_dir``), read when a config is made."""
    from tailmix.envs.cache import default_cache_dir

    return str(default_cache_dir())


@dataclass
class Settings:
    """What shapes the data, the synthetic bank, the encoder and the env (the CLI's commands extend it)."""

    dataset: str = "digits"
    """'digits' (embedded, no download), a MedMNIST flag looked up in --data-root, an .npz path, or an image
    folder (one sub-folder per class)."""
    data_root: str | None = None
    """Folder holding MedMNIST .npz files (default: $TAILMIX_DATA_DIR, then ~/.medmnist)."""
    seed: int = 0
    """Master seed (generators, filter, bank, encoder, training)."""
    mode: str = "feature"
    """Env classifier mode: 'feature' (head on frozen encoder features) or 'pixel' (CNN on pixels)."""
    max_steps: int = 10
    """Env steps (classifier training rounds) per episode."""
    max_ratio: float = 8.0
    """Largest synthetic-to-real ratio an action can ask for."""
    reward: str = "accuracy"
    """Env reward: 'accuracy', 'delta' or 'final'."""
    loss: str = "ce"
    """Classifier training loss inside the env (ce, logit_adjustment, balanced_softmax, class_balanced; focal
    and ldam_drw in pixel mode)."""
    source: str = "bank"
    """Synthetic source: 'bank' (diffusion bank, filled on demand), 'augment' (classic), 'gaussian' (features)."""
    generator: str = "ddpm"
    """Generator of the bank: any registered kind whose samples are images (generators.base.GENERATOR_KINDS):
    ddpm, lora (DDPM + per-class LoRA for tail classes), sketch, augment, pretrained (your own diffusers pipeline
    folder, --pretrained), ... Several (--generator ddpm augment) fill
    one bank each and give the env one source per bank (the pool as an action)."""
    preset: str = "small"
    """DDPM size preset: tiny (tests), small (CPU default), base (GPU)."""
    generator_steps: int | None = None
    """DDPM training steps (default: the preset's)."""
    per_class: int = 128
    """Synthetic candidates kept per class in the bank."""
    filter: bool = True
    """Keep only samples a long-tail-calibrated reference classifier assigns to their class."""
    filter_epochs: int = 30
    """Training epochs of the filter's reference classifier."""
    tau: float = 0.5
    """Filter confidence threshold."""
    device: str = "auto"
    """Generator device ('auto', 'cpu', 'cuda:0', ...). The env's classifier runs on the CPU."""
    cache_dir: str = field(default_factory=_default_cache_dir)
    """Cache of trained generators, filters, banks and encoders (reused across runs). Default: the per-user cache
    folder ($TAILMIX_CACHE_DIR, else $XDG_CACHE_HOME/tailmix, else ~/.cache/tailmix), where envs made from Python
    keep their encoders too."""
    quick: bool = False
    """Tiny settings everywhere: a smoke test of the whole pipeline in about a minute."""
    image_size: int | None = None
    """Image folders only: side of the square images after resizing (default 28). The bank, generator, filter
    and encoder caches are keyed by the resized pixels, so each size gets its own."""
    channels: int | None = None
    """Image folders only: 1 (grey) or 3 (RGB; the default, whatever the files hold)."""
    guidance_scale: float = 0.0
    """Classifier-guidance scale of the ddpm generator (0: off). Above 0, a noise-aware classifier is trained on
    top of the (cached) DDPM and steers sampling towards each class; classifier-free guidance stays on."""
    unlabeled: str | None = None
    """A folder of images without labels (any layout, read at the dataset's size) that join the ddpm generator's
    unconditional pretraining phase."""
    draw: str = "replace"
    """How an env step draws from a pool: 'replace' (v0: with replacement beyond the pool's size) or 'unique'
    (never one image twice in a step; what the pool lacks is reported as the shortfall)."""
    val_folds: int = 1
    """Env reward split: 1 (the fixed val split) or k >= 2 (train + val pooled into k folds; each episode trains
    on k - 1 of them and is rewarded on the held-out one)."""
    lr_schedule: str = "constant"
    """Feature mode: the env head's learning rate over an episode, 'constant' (v0) or 'cosine' (decays to near 0
    at the last step; pixel mode always decays)."""
    budget_minutes: float | str | None = None
    """Minutes the main job may take: a few steps of each phase are measured and generator steps, bank size,
    encoder epochs and agent timesteps are shrunk (never grown past their defaults) to fit; sizes given as flags
    are kept. 0 or none: no budget (``tailmix.budget``)."""
    pretrain_steps: int | None = None
    """DDPM unconditional pretraining steps (default: the preset's)."""
    filter_tries: int | None = None
    """Most candidate batches the filter generates per class shard (default: the filter's 10)."""
    encoder_epochs: int | None = None
    """Training epochs of the feature-mode encoder's CNNs (default: the env's 30; 5 with --quick)."""
    devices: str | None = None
    """Generator devices, comma-separated (cuda:0,cuda:1), 'auto' (every visible GPU; the CPU when there is none) or
    'cpu': the --generator kinds are placed round-robin over them and each bank's shards are spread over all of them
    (a copy of the generator per device; the bank is the same). Default: --device alone."""
    precision: str = "auto"
    """Mixed precision of generator fitting and sampling on CUDA: auto (bf16 where supported, else fp16 with a
    gradient scaler), fp32 (off), bf16 or fp16. The CPU always runs fp32."""
    pretrained: str | None = None
    """--generator pretrained: a local diffusers pipeline folder (model_index.json; Stable Diffusion or DDPMPipeline
    layout). Never downloaded; cached by the folder's fingerprint."""

    # The config's own accessors: the checks (tailmix.configs, policies) ask the config, not the pipeline.
    @property
    def generator_kinds(self) -> list[str]:
        """The generator kinds of ``--generator`` (one bank, and one env source, each)."""
        return generator_kinds(self)

    @property
    def generator_devices(self) -> list:
        """The generators' devices (:func:`generator_devices`; a ``ValueError`` for a device that does not exist)."""
        return generator_devices(self)


# -- small helpers ----------------------------------------------------------------------------
def cache_key(*parts) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as sorted JSON: the name of a cache entry."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict:
    """Python's and the main dependencies' versions (recorded beside results)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "diffusers", "peft", "gymnasium", "pettingzoo", "stable-baselines3", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


class phase:
    """Prints how long a phase of a command took (users of a 10-minute job want to know where it goes).

    Wall and CPU seconds (this process, all threads): on a shared machine the gap shows time lost waiting.
    """

    timings: list[tuple[str, float, float]] = []  # (name, wall, cpu) of every phase, for the summary at the end

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self):
        self.t0, self.c0 = time.time(), time.process_time()
        print(f"[{self.name}] ...", flush=True)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            wall, cpu = time.time() - self.t0, time.process_time() - self.c0
            phase.timings.append((self.name, wall, cpu))
            print(f"[{self.name}] done in {wall:.1f} s (cpu {cpu:.1f} s)", flush=True)


def _save_folder(path: Path, save) -> None:
    """``save(folder)`` into a temp folder beside ``path``, then rename it in whole (``tailmix.io.atomic.save_folder``):
    a crash never leaves a half-saved model under the real cache key, and concurrent savers of one key agree."""
    from tailmix.io.atomic import save_folder

    save_folder(path, save)


def writable_folder_problem(folder: str | Path) -> tuple[str | None, bool]:
    """Why files cannot be created in ``folder`` (made if missing): ``(reason or None, whether it is only a
    permission)``. Checked without writing anything: a path component that is a file, a broken symbolic link, a
    first existing ancestor that is not writable.
    """
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a broken symbolic link", False
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return (f"{folder} is a file, not a folder" if probe == folder else
                f"it lies below {probe}, which is a file, not a folder"), False
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by you", True
    try:  # os.access misses read-only mounts and immutable folders (and says yes to root): try for real
        os.rmdir(tempfile.mkdtemp(prefix=".tailmix-probe-", dir=probe))
    except OSError as err:
        return f"{probe} is not writable ({err.strerror})", True
    return None, False


def _require_writable_cache(cfg, folder: Path, what: str) -> None:
    """Refuse, before the work, to make ``what`` that could not be saved into the cache."""
    problem, _ = writable_folder_problem(folder)
    if problem:
        raise ValueError(f"cannot cache the {what} under --cache-dir {cfg.cache_dir}: {problem}. Entries already "
                         "in a read-only cache are read, but this one is missing; make the folder writable or "
                         "choose another --cache-dir")


def _remove_folder(path: Path) -> None:
    """Remove a broken cache entry (a read-only cache keeps it; the writability check then explains)."""
    from tailmix.io.atomic import remove_folder

    try:
        remove_folder(path)
    except OSError:
        pass


# -- data, generator, filter, bank, encoder -------------------------------------------------------
#: Above this many classes a warning gives an estimate of the cost (one agent per class, a C-way head per step).
WARN_CLASSES = 100
#: More classes than this are refused: the env has one agent per class and observes a one-hot of the class id.
MAX_CLASSES = 1000


def class_count_check(num_classes: int) -> str | None:
    """A warning line for a dataset of ``num_classes`` classes above :data:`WARN_CLASSES` (``None`` below), or a
    ``ValueError`` above :data:`MAX_CLASSES`.

    The estimate interpolates a measurement (``python -m benchmarks.many_classes 50 200 800``, 6 train images per
    8x8 class, 2 shared CPUs): env build 8.7 s / 16.4 s / 85 s and one env step 0.04 s / 1.03 s / 135 s at
    50 / 200 / 800 classes, so the step cost grows about as the class count to the power 3.5 above 200.
    """
    if num_classes > MAX_CLASSES:
        raise ValueError(f"the dataset has {num_classes} classes; the CLI supports at most {MAX_CLASSES} (the env has "
                         "one agent per class and observes a one-hot class id, so an env step at this size would take "
                         f"about {_step_seconds(num_classes):.0f} s). Group classes, or build SyntheticRatioEnv "
                         "yourself")
    if num_classes <= WARN_CLASSES:
        return None
    return (f"warning: {num_classes} classes: one agent per class and a {num_classes}-way head trained every env "
            f"step; expect about {_step_seconds(num_classes):.0f} s per env step on 2 CPUs (measured: 1 s at 200 "
            "classes, 135 s at 800), plus minutes to fit the encoder; --quick and a small --max-steps keep a first "
            "try short")


def _step_seconds(num_classes: int) -> float:
    if num_classes <= 200:
        return 1.03 * (num_classes / 200) ** 2.3
    return 1.03 * (num_classes / 200) ** 3.5


def load_data(cfg):
    """The dataset of ``cfg.dataset`` (``ValueError`` saying what is accepted when it cannot be loaded)."""
    from tailmix.preflight import check_dataset

    ds = _load_data(cfg)
    warning = class_count_check(ds.num_classes)
    if warning:
        print(warning, flush=True)
    check_dataset(cfg, ds)  # settings that do not fit this dataset, before any work
    return ds


def _load_data(cfg):
    from tailmix.envs.datasets import load_dataset

    size, channels = getattr(cfg, "image_size", None), getattr(cfg, "channels", None)
    if size is None and channels is None:
        return load_dataset(cfg.dataset, root=cfg.data_root)
    if size is not None and not (isinstance(size, int) and size >= 1):
        raise ValueError(f"--image-size must be >= 1; got {size}")
    if channels not in (None, 1, 3):
        raise ValueError(f"--channels must be 1 (grey) or 3 (RGB); got {channels}")
    if not Path(str(cfg.dataset)).expanduser().is_dir():
        raise ValueError(f"--image-size and --channels apply to image folders; --dataset {cfg.dataset!r} is not a "
                         "folder (MedMNIST sizes are flags such as retinamnist_64; arrays keep the size they have)")
    return load_dataset(cfg.dataset, root=cfg.data_root, image_size=28 if size is None else size,
                        grey=channels == 1)


def kind_class(cfg):
    """The registered class of ``cfg.generator`` (its capabilities say which settings apply)."""
    from tailmix.generators.base import generator_class

    return generator_class(cfg.generator)


def new_generator(cfg, dataset):
    """An unfitted generator of kind ``cfg.generator`` for ``dataset``, built through the generators' registry with
    the settings its class declares it takes (``Generator.trains``, ``pretrains``)."""
    from tailmix.classifiers.device import select_device
    from tailmix.generators.base import make_generator

    cls = kind_class(cfg)
    device = select_device(cfg.device)
    if getattr(cfg, "devices", None) and device not in generator_devices(cfg):  # one_kind sets a listed one
        device = generator_devices(cfg)[0]
    if not cls.trains:
        return make_generator(cfg.generator, dataset)  # no model: no preset, no training steps; runs on the CPU
    kw = dict(preset=cfg.preset, device=device)
    if cfg.generator_steps:
        kw["train_steps"] = cfg.generator_steps
    if getattr(cfg, "pretrain_steps", None) is not None and cls.pretrains:
        kw["pretrain_steps"] = cfg.pretrain_steps
    if getattr(cfg, "precision", "auto") != "auto":  # passed only when set: kinds of your own need not take it
        kw["precision"] = cfg.precision
    for name, keyword in cls.takes_settings.items():  # settings of this kind alone (the pretrained kind's folder)
        kw[keyword] = getattr(cfg, name, None)
    return make_generator(cfg.generator, dataset, **kw)


def fitted_generator(cfg, dataset, *, progress: bool = True):
    """Train the configured generator, or load it from the cache when this exact one was trained before."""
    import torch

    if getattr(cfg, "guidance_scale", 0.0) and kind_class(cfg).guided:  # the other kinds ignore the scale
        return guided_generator(cfg, dataset, progress=progress)
    gen = new_generator(cfg, dataset)
    unlabeled = unlabeled_images(cfg, dataset)
    extra = () if unlabeled is None else (unlabeled_fingerprint(unlabeled),)  # only when given: old keys hold
    key = cache_key(dataset.fingerprint(), gen.config(), cfg.seed, *extra)
    path = Path(cfg.cache_dir) / "generators" / f"{cfg.generator}-{key}"
    cached = _cached_generator(path, gen.device)
    if cached is not None:
        return cached
    _require_writable_cache(cfg, path.parent, f"{cfg.generator} generator")
    fit_kw = {} if unlabeled is None else {"unlabeled": unlabeled}
    gen.fit(dataset, generator=torch.Generator().manual_seed(cfg.seed), progress=progress, **fit_kw)
    _save_folder(path, gen.save)
    return gen


def _cached_generator(path: Path, device):
    """The generator saved at ``path``, or ``None`` when there is none; a broken entry is removed, never trusted."""
    from tailmix.generators.base import load_generator

    if not (path / "config.json").exists():
        return None
    try:
        return load_generator(path, device=device)
    except Exception as err:
        print(f"cached generator at {path} is unusable ({err}); retraining it")
        _remove_folder(path)
        return None


def guided_generator(cfg, dataset, *, progress: bool = True):
    """A generator with classifier guidance (a ``guided`` kind, e.g. ddpm): the unguided model of the same settings
    (trained or found in the cache) plus a noise-aware classifier trained on top, cached under a key that includes
    the guidance scale."""
    import torch

    scale = cfg.guidance_scale
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"--guidance-scale must be > 0 (0: no classifier guidance); got {scale}")
    if not kind_class(cfg).guided:
        from tailmix.generators.base import kinds_with

        raise ValueError(f"--guidance-scale applies to the generator kinds with classifier guidance "
                         f"({', '.join(kinds_with(guided=True))}); got {cfg.generator!r}")
    gen = fitted_generator(dataclasses.replace(cfg, guidance_scale=0.0), dataset, progress=progress)
    gen.classifier_scale = float(scale)
    path = Path(cfg.cache_dir) / "generators" / f"{cfg.generator}-guided-{cache_key(gen.config(), cfg.seed)}"
    cached = _cached_generator(path, gen.device)
    if cached is not None:
        return cached
    _require_writable_cache(cfg, path.parent, f"guided {cfg.generator} generator")
    gen.fit_guidance(dataset, generator=torch.Generator().manual_seed(cfg.seed), progress=progress)
    _save_folder(path, gen.save)
    return gen


def unlabeled_images(cfg, dataset):
    """The images of ``cfg.unlabeled`` (every image file under it, labels ignored) at the dataset's size and
    channels, or ``None`` without the option."""
    folder = getattr(cfg, "unlabeled", None)
    if not folder:
        return None
    cls = kind_class(cfg)
    if not cls.takes_unlabeled:  # refused, never silently ignored
        from tailmix.generators.base import kinds_with

        raise ValueError(f"--unlabeled: --generator {cfg.generator} cannot use images without labels "
                         f"({cls.unlabeled_refusal}); drop --unlabeled or use --generator "
                         f"{' or '.join(kinds_with(takes_unlabeled=True))}")
    import numpy as np

    from tailmix.envs.datasets import _image_extensions, _read_image

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"--unlabeled {folder!r} is not a folder; pass a folder of images (sub-folders are read too)")
    h, w, c = dataset.image_shape
    if h != w:
        raise ValueError(f"--unlabeled images are resized to squares, but the dataset's are {h}x{w}")
    ext = _image_extensions()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in ext
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"--unlabeled {folder!r} holds no image files ({', '.join(sorted(ext)[:6])}, ...)")
    return np.stack([_read_image(p, h, grey=c == 1) for p in files])


def unlabeled_fingerprint(images) -> str:
    """What the unlabeled images add to the generator's cache key."""
    from tailmix.generators.ddpm import images_fingerprint

    return "unlabeled:" + images_fingerprint(images)


def reference_filter(cfg, dataset, *, progress: bool = True):
    """The long-tail-calibrated reference filter (trained once per dataset, tau, epochs and seed, then cached)."""
    import torch

    from tailmix.generators.filter import ClassifierFilter

    augment = min(dataset.image_shape[:2]) >= 16  # random shifts of 8x8 digits destroy them
    path = Path(cfg.cache_dir) / "filters" / cache_key(dataset.fingerprint(), cfg.tau, cfg.seed, augment,
                                                       cfg.filter_epochs)
    if path.exists():
        try:
            return ClassifierFilter.load(path)
        except (ValueError, OSError) as err:
            print(f"cached filter at {path} is unreadable ({err}); retraining")
            _remove_folder(path)
    _require_writable_cache(cfg, path.parent, "reference filter")
    flt = ClassifierFilter.train_reference(dataset, tau=cfg.tau, augment=augment, epochs=cfg.filter_epochs,
                                           generator=torch.Generator().manual_seed(cfg.seed), progress=progress)
    _save_folder(path, flt.save)
    return flt


def ensure_bank(cfg, dataset, *, progress: bool = True):
    """The synthetic bank for this dataset and generator config (filled on demand, cached, resumable)."""
    from tailmix.generators.pool import GeneratorPool

    cls = kind_class(cfg)
    with phase(f"generator {cfg.generator}" + (f" ({cfg.preset})" if cls.trains else "")):
        gen = fitted_generator(cfg, dataset, progress=progress)
    flt = None
    if cfg.filter:
        with phase("reference filter"):
            flt = reference_filter(cfg, dataset, progress=progress)
        if getattr(cfg, "filter_tries", None):  # a fill setting, not the filter's training: enters the bank key
            flt.max_tries = int(cfg.filter_tries)
    with phase("synthetic bank"):
        devices = generator_devices(cfg)  # this kind's device first: the pool keeps it there
        if getattr(cfg, "devices", None) and gen.device in devices:
            devices = [gen.device] + [d for d in devices if d != gen.device]
        pool = GeneratorPool({cfg.generator: gen}, devices=devices, replicate=len(devices) > 1)
        bank = pool.fill_bank(dataset, Path(cfg.cache_dir) / "banks", per_class=cfg.per_class, filter=flt,
                              seed=cfg.seed, progress=progress)
    scale = getattr(cfg, "guidance_scale", 0.0) if cls.guided else 0.0
    for line in bank_warnings(bank.counts(), dataset, cfg.per_class, guidance_scale=scale):
        print(line)
    line = saturation_warning([bank.images(c) for c in range(dataset.num_classes)], dataset, guidance_scale=scale)
    if line:
        print(line)
    return bank


#: A class's synthetic images count as saturated when this share of their pixels is 0 or 255 ...
SATURATED_SHARE = 0.95
#: ... and the real train images' share is at least this much lower (dark backgrounds are common in real data).
SATURATION_MARGIN = 0.25


def saturation_warning(pools, dataset, *, guidance_scale: float = 0.0) -> str | None:
    """A warning naming the classes whose synthetic images (``pools``: one uint8 array per class) are nearly all
    black and white where the real ones are not, or ``None``. A too-large ``--guidance-scale`` does this (at 1e4 every
    pixel of the tiny DDPM's samples was 0 or 255), and without the filter such images would be served silently.
    """
    import numpy as np

    real = np.isin(dataset.train_images, (0, 255))
    bad = []
    for c, pool in enumerate(pools):
        if len(pool) == 0:
            continue
        share = float(np.isin(pool, (0, 255)).mean())
        real_share = float(real[dataset.train_labels == c].mean()) if (dataset.train_labels == c).any() else 0.0
        if share >= SATURATED_SHARE and share - real_share >= SATURATION_MARGIN:
            bad.append(f"{dataset.class_names[c]}: {share:.0%} (real {real_share:.0%})")
    if not bad:
        return None
    cause = (f"lower --guidance-scale (now {guidance_scale:g}; it helps at 0.01 to 10)" if guidance_scale else
             "train the generator longer (--generator-steps)")
    return (f"warning: the bank's images are saturated (pixels at 0 or 255) for {', '.join(bad)}; they carry little "
            f"of the class: {cause}")


def bank_warnings(counts, dataset, per_class: int, *, guidance_scale: float = 0.0) -> list[str]:
    """Warnings about classes whose (filtered) pool is empty or a small fraction of the quota.

    An empty pool serves nothing; a tiny one is drawn with replacement, so a fill policy repeats its few images
    hundreds of times (RetinaMNIST's filtered bank kept one image of its rarest class: fill repeated it ~420
    times, and feature and pixel mode disagreed about what that is worth).
    """
    import numpy as np

    counts = np.asarray(counts)
    names = dataset.class_names
    fix = "lower --tau or train the generator longer"
    if guidance_scale:  # a strong classifier guidance saturates samples, which the filter then rejects
        fix = f"lower --guidance-scale (now {guidance_scale:g}) or --tau, or train the generator longer"
    out = []
    empty = [names[c] for c in range(len(counts)) if counts[c] == 0]
    if empty:
        out.append(f"warning: the filter kept no sample of class(es) {empty}; their ratios will be served nothing "
                   f"({fix})")
    tiny = [f"{names[c]}: {int(counts[c])}" for c in range(len(counts)) if 0 < counts[c] < 0.1 * per_class]
    if tiny:
        out.append(f"warning: the bank holds under 10% of its quota of {per_class} for {', '.join(tiny)}; ratios "
                   f"above the pool size repeat those images ({fix})")
    return out


def generator_kinds(cfg) -> list[str]:
    """The generator kinds of ``--generator`` (one bank, and one env source, each)."""
    return str(cfg.generator).split()


def one_kind(cfg, kind: str):
    """``cfg`` for one generator kind of a several-kind ``--generator``; with ``--devices``, its ``device`` is the
    kind's own (kinds round-robin over the devices)."""
    if getattr(cfg, "devices", None):
        devices = generator_devices(cfg)
        home = devices[generator_kinds(cfg).index(kind) % len(devices)] if kind in generator_kinds(cfg) else devices[0]
        return dataclasses.replace(cfg, generator=kind, device=str(home))
    return dataclasses.replace(cfg, generator=kind)


def generator_devices(cfg) -> list:
    """The generators' devices: those of ``--devices`` (``auto``: every visible GPU, else the CPU; a comma-separated
    list: those, each checked to exist), or ``[--device]`` without it."""
    from tailmix.classifiers.device import select_device

    spec = getattr(cfg, "devices", None)
    if spec is None:
        return [select_device(cfg.device)]
    text = str(spec).strip()
    if text.lower() == "auto":
        from tailmix.generators.pool import resolve_devices

        return resolve_devices("auto")
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--devices is empty; pass auto, cpu or a comma-separated list such as cuda:0,cuda:1")
    try:
        devices = [select_device(name) for name in names]
    except ValueError as err:
        raise ValueError(f"--devices {text}: {err}".replace("device='cpu' or 'auto'", "--devices cpu or auto")
                         ) from None
    if len(set(devices)) != len(devices):
        raise ValueError(f"--devices {text} names a device twice; name each once")
    return devices


def num_sources(cfg) -> int:
    """Synthetic sources of the env this config builds (one per generator kind when the source is the bank)."""
    return len(generator_kinds(cfg)) if cfg.source == "bank" else 1


@dataclass(frozen=True)
class EnvSpec:
    """The env a command runs, built once from its settings (:func:`env_spec`) and passed down as it is: the
    dataset, the synthetic sources in action order and the validated settings (``envs.config.RatioEnvConfig``).

    The encoder phase (:func:`ensure_encoder`) and the time budget (``tailmix.budget``) read :attr:`config`;
    :meth:`kwargs` gives the env's keyword arguments (what ``SyntheticRatioEnv`` and the agents take).
    """

    dataset: object
    sources: tuple
    """One source spec (a ``BankSource``, ``"gaussian"``, or ``None`` for augmentations), or one per bank."""
    config: RatioEnvConfig
    """The env's settings, validated."""
    keywords: tuple[str, ...] = ()
    """The config fields the settings set; the env keeps its own defaults for the others, so :meth:`kwargs` names
    only these (a v0 run builds its env with exactly the keywords it always had)."""

    def kwargs(self) -> dict:
        """Keyword arguments of ``SyntheticRatioEnv`` for this env (``source=`` with one source, else ``sources=``)."""
        kw: dict = {"dataset": self.dataset}
        if len(self.sources) == 1:
            kw["source"] = self.sources[0]
        kw.update({name: getattr(self.config, name) for name in self.keywords})
        if len(self.sources) > 1:  # several generators: one source per bank, one ratio per source in each action
            kw["sources"] = list(self.sources)
        return kw

    @classmethod
    def from_kwargs(cls, kw: dict) -> EnvSpec:
        """The spec of env keyword arguments made elsewhere (a script's dict)."""
        from tailmix.envs.config import RatioEnvConfig

        keywords = tuple(k for k in kw if k not in ("dataset", "source", "sources"))
        sources = tuple(kw["sources"]) if "sources" in kw else (kw.get("source"),)
        return cls(kw["dataset"], sources, RatioEnvConfig(**{k: kw[k] for k in keywords}), keywords)

    def synthetic_images(self):
        """The synthetic images the env's encoder sees (as ``envs.core.build_engine`` passes them): the source's, or
        every source's together; ``None`` for the ones made on the fly (augmentations, Gaussian features)."""
        if len(self.sources) == 1:
            source = self.sources[0]
            return None if isinstance(source, str) else source
        from tailmix.envs.sources import combined_images

        return combined_images(list(self.sources))


def env_spec(cfg, dataset, *, progress: bool = True) -> EnvSpec:
    """The env of this config (the bank is filled first when the source needs it), its settings validated once."""
    from tailmix.envs.config import RatioEnvConfig

    if cfg.source not in SOURCES:
        raise ValueError(f"unknown --source {cfg.source!r}; choose one of {', '.join(SOURCES)}")
    sources: tuple = (None,)
    if cfg.source == "bank":
        from tailmix.envs.sources import BankSource

        sources = tuple(BankSource(ensure_bank(one_kind(cfg, kind), dataset, progress=progress))
                        for kind in generator_kinds(cfg))
    elif cfg.source == "gaussian":
        sources = ("gaussian",)
    settings = dict(mode=cfg.mode, max_steps=cfg.max_steps, max_ratio=cfg.max_ratio, reward=cfg.reward, loss=cfg.loss,
                    cache_dir=str(Path(cfg.cache_dir) / "encoders"), source_seed=cfg.seed, empty_pool="zero")
    # env v1 options, passed only when set, so that a v0 run's env keywords stay exactly as before
    for name, v0 in (("draw", "replace"), ("val_folds", 1), ("lr_schedule", "constant")):
        if getattr(cfg, name) != v0:
            settings[name] = getattr(cfg, name)
    if cfg.quick:
        settings.update(encoder_epochs=5, encoder_folds=3)
    if getattr(cfg, "encoder_epochs", None):
        settings["encoder_epochs"] = cfg.encoder_epochs
    return EnvSpec(dataset, sources, RatioEnvConfig(**settings), tuple(settings))


def env_kwargs(cfg, dataset, *, progress: bool = True) -> dict:
    """Keyword arguments of the env for this config (:func:`env_spec`'s, as a dict)."""
    return env_spec(cfg, dataset, progress=progress).kwargs()


def ensure_encoder(spec: EnvSpec | dict, *, progress: bool = True) -> None:
    """Fit (or load) the env's frozen encoder in a phase of its own, with a progress bar.

    The env would fit it silently when built. This builds the same ``EncoderConfig``
    (``envs.features.encoder_config``) from the spec's config, under the same pinned thread count, so the env then
    finds it in the in-memory and on-disk caches. ``spec``: an :class:`EnvSpec`, or env keyword arguments.
    """
    if isinstance(spec, dict):
        spec = EnvSpec.from_kwargs(spec)
    config = spec.config
    if config.mode != "feature":
        return
    from tailmix.classifiers.device import fixed_threads
    from tailmix.envs.features import encoder_config, fit_encoder

    with phase("encoder"), fixed_threads(config.num_threads):
        fit_encoder(spec.dataset, encoder_config(config), cache_dir=config.cache_dir, progress=progress,
                    synthetic=spec.synthetic_images(), pool_val=config.val_folds > 1)


def prepared_env(cfg, dataset) -> EnvSpec:
    """:func:`env_spec` with the bank filled and the encoder fitted, each in its own timed phase."""
    spec = env_spec(cfg, dataset)
    ensure_encoder(spec)
    return spec


def prepared_env_kwargs(cfg, dataset) -> dict:
    """:func:`prepared_env` as the env's keyword arguments."""
    return prepared_env(cfg, dataset).kwargs()
