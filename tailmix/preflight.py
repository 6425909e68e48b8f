"""Checks made before any work: the settings against the file system and the machine (:func:`check_settings`,
called by ``tailmix.configs.check_config``), then against the loaded dataset (:func:`check_dataset`, called by
``tailmix.pipeline.load_data``), so that a mistake costs seconds, not a trained generator, bank and encoder.

Memory estimates are coarse (within about 2x of what was measured on digits-LT) and refuse only what cannot fit:
an estimate above :data:`MEMORY_SHARE` of the memory this machine has available.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Share of the available memory an estimate may take before the run is refused.
MEMORY_SHARE = 0.8
#: Bytes each pixel of the dataset costs at its peak: the uint8 array, the generator's float32 copy of the train
#: images and the encoder's float32 batches.
BYTES_PER_PIXEL = 9
#: Activations per pixel and UNet channel during one DDPM training step (forward and backward, every layer), a
#: coarse factor: 64 images of 28x28 in the ``small`` preset take about 0.3 GB.
ACTIVATION_FACTOR = 10
#: Per env copy and class: the copy's heads, optimiser state and per-step state (measured: about 0.5 MB per copy
#: of the batched digits-LT env, 10 classes, feature mode).
COPY_BYTES_PER_CLASS = 50_000
#: Per synthetic sample of one env step and copy: feature mode (a feature row, its draw and the head's batch; measured
#: 45-110 bytes on digits-LT) and pixel mode per pixel (measured: 13 bytes on 8x8 digits).
STEP_BYTES_FEATURE = 128
STEP_BYTES_PER_PIXEL = 16
#: Per rollout step, class slot and observation column: PPO's rollout buffer and what it copies (measured: 7.8 KB
#: per step and copy on digits-LT, 10 slots x 18 columns).
ROLLOUT_BYTES = 11 * 4


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new process (``MemAvailable``; else the physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def _refuse_memory(need: float, what: str, fix: str) -> None:
    have = available_memory()
    if have is not None and need > MEMORY_SHARE * have:
        raise ValueError(f"{what} would need about {_gb(need)} of memory; this machine has {_gb(have)} available. "
                         f"{fix}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes that were not UTF-8, kept by Python as surrogate escapes
        return False


# -- before the dataset is loaded ----------------------------------------------------------------------
def check_settings(cfg) -> None:
    """Refuse (``ValueError``, one line) settings that would fail only after the work, or exhaust memory."""
    run_dir = getattr(cfg, "run_dir", None)
    if run_dir and not _utf8(str(run_dir)):
        raise ValueError(f"--run-dir {os.fsencode(str(run_dir))!r} is not valid UTF-8 (TensorBoard and the results "
                         "tables cannot name it); choose a folder name in UTF-8")
    unlabeled = getattr(cfg, "unlabeled", None)
    if unlabeled:
        if cfg.source != "bank":
            raise ValueError(f"--unlabeled joins the ddpm generator's pretraining, which --source {cfg.source} does "
                             "not use; pass --source bank, or drop --unlabeled")
        if getattr(cfg, "pretrain_steps", None) == 0:
            raise ValueError("--unlabeled joins the ddpm generator's unconditional pretraining, but --pretrain-steps "
                             "is 0; give it some steps (or drop --unlabeled)")
        root = Path(unlabeled).expanduser()
        if not root.is_dir():
            raise ValueError(f"--unlabeled {unlabeled!r} is not a folder; pass a folder of images (sub-folders are "
                             "read too)")
        if _image_files(root) == 0:
            raise ValueError(f"--unlabeled {unlabeled!r} holds no image files; pass a folder of images (sub-folders "
                             "are read too)")
    check_image_size(cfg)


def _image_files(root: Path) -> int:
    """How many image files lie under ``root`` (hidden ones excepted), without reading them."""
    from tailmix.envs.datasets import _image_extensions

    ext = _image_extensions()
    n = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for f in files if not f.startswith(".") and os.path.splitext(f)[1].lower() in ext)
    return n


def image_size_memory(cfg, n_images: int) -> float:
    """Bytes of memory a run at ``cfg.image_size`` needs at its peak (coarse): the dataset at that size, and one
    training batch of the DDPM's activations when a generator is trained."""
    side = cfg.image_size or 28
    channels = cfg.channels or 3
    need = float(n_images) * side * side * channels * BYTES_PER_PIXEL
    from tailmix.generators.base import GENERATOR_KINDS

    kinds = str(getattr(cfg, "generator", "ddpm")).split()
    if cfg.source == "bank" and any(k in GENERATOR_KINDS and GENERATOR_KINDS[k].trains for k in kinds):
        from tailmix.generators.ddpm import PRESETS

        unet = PRESETS.get(cfg.preset, PRESETS["small"])["unet"]
        need += 64.0 * side * side * sum(unet["block_out_channels"]) * 4 * ACTIVATION_FACTOR
    return need


def check_image_size(cfg) -> None:
    """Refuse an ``--image-size`` whose images, read at that size, would not fit in memory (before reading any)."""
    size = getattr(cfg, "image_size", None)
    if size is None or not isinstance(size, int) or size < 1:
        return  # no folder resizing, or a bad value that the loader refuses with its own message
    root = Path(str(cfg.dataset)).expanduser()
    if not root.is_dir():
        return
    n = max(_image_files(root), 1)
    _refuse_memory(image_size_memory(cfg, n),
                   f"--image-size {size} ({n} images of {size}x{size} pixels, and the generator's activations)",
                   "Choose a smaller --image-size (default 28)")


# -- once the dataset is loaded ------------------------------------------------------------------------
def n_envs_memory(cfg, num_classes: int, step_bytes: float = 0.0) -> float:
    """Bytes the ``--n-envs`` env copies (each with ``step_bytes`` for its step's synthetic samples) and PPO's
    rollout buffer over them take (coarse)."""
    n_envs = getattr(cfg, "n_envs", 1)
    slots = n_envs * (num_classes if getattr(cfg, "wrapper", "shared") == "shared" else 1)
    n_steps = min(128, max(8, getattr(cfg, "timesteps", 0) // max(slots, 1)))  # agents.sb3's PPO rollout
    columns = num_classes + 8  # the observation: a one-hot class id and a few columns
    per_copy = COPY_BYTES_PER_CLASS * num_classes + n_steps * num_classes * columns * ROLLOUT_BYTES
    return float(n_envs) * (per_copy + step_bytes)


def step_memory(cfg, dataset) -> float:
    """Bytes one env step at ``--max-ratio`` takes for its synthetic samples, in one env copy (coarse)."""
    h, w, c = dataset.image_shape
    per_sample = STEP_BYTES_FEATURE if cfg.mode == "feature" else h * w * c * STEP_BYTES_PER_PIXEL
    return float(cfg.max_ratio) * float(dataset.train_counts.sum()) * per_sample


def check_dataset(cfg, dataset) -> None:
    """Refuse settings that do not fit ``dataset`` (``ValueError`` saying how to fix them), before any work."""
    k = getattr(cfg, "val_folds", 1)
    if isinstance(k, int) and k >= 2:
        import numpy as np

        pooled = np.bincount(np.concatenate([dataset.train_labels, dataset.val_labels]).astype(np.int64),
                             minlength=dataset.num_classes)
        rarest = int(np.argmin(pooled))
        if pooled[rarest] < k:
            raise ValueError(f"--val-folds {k} needs at least {k} images of every class in train + val (each fold "
                             f"holds every class); class {rarest} ({dataset.class_names[rarest]}) has "
                             f"{int(pooled[rarest])}. Use --val-folds <= {int(pooled.min())}, or 1 for the fixed val "
                             "split")
    largest = int(dataset.train_counts.max())
    if cfg.max_ratio * largest >= 2**31:
        raise ValueError(f"--max-ratio {cfg.max_ratio:g} would ask for up to {cfg.max_ratio * largest:.3g} synthetic "
                         f"images of one class (its {largest} real ones x the ratio), more than an env step can index; "
                         f"use --max-ratio < {2**31 / largest:.3g} (default 8)")
    _refuse_memory(step_memory(cfg, dataset), f"--max-ratio {cfg.max_ratio:g} (an env step of up to "
                   f"{cfg.max_ratio * int(dataset.train_counts.sum()):.3g} synthetic images)",
                   "Lower --max-ratio (default 8)")
    h, w, _ = dataset.image_shape
    if getattr(cfg, "unlabeled", None) and h != w:
        raise ValueError(f"--unlabeled images are resized to squares, but the dataset's are {h}x{w}; drop --unlabeled")
    n_envs = getattr(cfg, "n_envs", 1)
    if isinstance(n_envs, int) and n_envs > 1:
        _refuse_memory(n_envs_memory(cfg, dataset.num_classes, step_memory(cfg, dataset)),
                       f"--n-envs {n_envs} (env copies of {dataset.num_classes} classes and PPO's rollout over them)",
                       "Use fewer --n-envs (a few per CPU core is plenty)")


# -- one process per run folder ------------------------------------------------------------------------
def _lock_folder() -> Path:
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tailmix-run-locks-{uid}"


class RunDirClaim:
    """An exclusive claim on a run folder for this process's command (POSIX ``flock`` on a lock file named by the
    folder's resolved path, in a per-user temp folder, so nothing is written beside the user's files). The kernel
    drops it when the process ends, so a killed run never leaves a stale claim. :meth:`release` ends it."""

    def __init__(self, run_dir: str | Path) -> None:
        import hashlib

        self.path = Path(run_dir)
        self._fh = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no claim
            return
        folder = _lock_folder()
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            name = hashlib.sha256(str(self.path.expanduser().resolve()).encode("utf-8", "surrogateescape"))
            fh = open(folder / f"{name.hexdigest()[:32]}.lock", "a+")
        except OSError:  # no writable temp folder: run unclaimed, as before
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise ValueError(f"--run-dir {self.path} is being written by another tailmix process (pid {holder}); "
                             "wait for it to finish, or choose another --run-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None


def claim_run_dir(run_dir: str | Path) -> RunDirClaim:
    """Claim ``run_dir`` for this command, refusing (``ValueError``) one that another tailmix process is writing:
    without it, two runs into the same new folder both did their pre-PPO work, and the second failed only then."""
    return RunDirClaim(run_dir)
