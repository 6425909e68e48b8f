"""Frozen encoders for the env's feature mode, built so that real and synthetic features are alike.

The trap: an encoder trained on the very real images whose features the head then trains on gives overfit,
separable real features, while synthetic features look foreign, so the env punishes synthetic data that pixel
mode rewards (in a prototype on digits-LT, filling every class to the head count gained 2.1 points of test
balanced accuracy in pixel mode and lost 4.4 in feature mode with such an encoder). ``python -m
benchmarks.fidelity`` ranks fixed policies with each encoder here against pixel mode (docs/results/fidelity.md,
"Does feature mode rank policies like pixel mode?"). The encoders here avoid it:

- ``crossfit`` (default): ``folds`` CNNs, each trained on the real train split minus one fold. A real
  train image is encoded by the model that did not see it (out-of-fold, as in stacking); every other image
  (synthetic, val, test) by one fold model drawn at random with the encoder's seed, so that every feature in
  the env is one unseen model's view. Features are the models' log-probabilities, a space in which the fold
  models agree (their penultimate spaces do not).
- ``crossfit_aligned``: the same fold models, but features are their penultimate activations (richer than
  log-probabilities), each fold's space mapped linearly onto fold 0's by ridge regression fitted on train
  images both models saw, then standardised.
- ``crossfit_joint``: like ``crossfit`` (out-of-fold log-probabilities), but each fold model trains on real
  AND synthetic images (the env's synthetic pools, labelled by the class they were generated for), so the
  encoder knows what synthetic images look like instead of finding them foreign. The synthetic pools are
  split into folds too, and every image a fold model trained on (real or synthetic) is encoded by the fold
  model that did not see it, recognised by its bytes. Needs ``synthetic=`` (the env's source) in
  :func:`fit_encoder`.
- ``crossfit_augment``: like ``crossfit``, but the fold models train with random flips and small shifts
  (``classifiers.training.random_flip_shift``), so their views depend less on the exact pixels of the
  real images, which synthetic images never reproduce.
- ``random``: a randomly initialised, never trained CNN (random features; no image is seen).
- ``supervised``: one CNN trained on all real train images (the flawed baseline, kept to measure against).

With ``pool_val=True`` (the env's ``val_folds >= 2``) the real set the encoder cross-fits over is the pooled train
+ val split (train first, then val): every pooled image, val included, gets its features from a fold model that
did not train on it, and :meth:`FrozenEncoder.train_features` returns the pooled rows.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ENCODERS = ("crossfit", "crossfit_aligned", "crossfit_joint", "crossfit_augment", "random", "supervised")
#: Encoders that train on the synthetic pools too, so :func:`fit_encoder` needs ``synthetic=``.
NEEDS_SYNTHETIC = ("crossfit_joint",)


@dataclass(frozen=True)
class EncoderConfig:
    """How the frozen encoder is built.

    Attributes:
        kind: One of :data:`ENCODERS`.
        folds: Number of cross-fitting folds (``crossfit`` only).
        epochs: Training epochs of each encoder CNN.
        width: SmallCNN width.
        loss: Training loss of the encoder CNNs (a ``classifiers.losses`` name).
        seed: Seed of fold assignment, CNN initialisation and training.
    """

    kind: str = "crossfit"
    folds: int = 5
    epochs: int = 30
    width: int = 32
    loss: str = "ce"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ENCODERS:
            raise ValueError(f"unknown encoder {self.kind!r}; choose one of {ENCODERS}")
        if self.kind.startswith("crossfit") and self.folds < 2:
            raise ValueError(f"crossfit needs folds >= 2, got {self.folds}")
        if self.kind == "crossfit_aligned" and self.folds < 3:
            # The alignment is fitted on images two fold models both trained on; with 2 folds there are none.
            raise ValueError(f"crossfit_aligned needs folds >= 3 (got {self.folds}); use more folds or 'crossfit'")


class FrozenEncoder:
    """A fitted encoder: :meth:`train_features` for the real train split, :meth:`encode` for the rest."""

    def __init__(self, config: EncoderConfig, models: list, fold_of_train: np.ndarray | None,
                 train_features: np.ndarray, standardise: tuple[np.ndarray, np.ndarray] | None,
                 maps: list[np.ndarray] | None = None, seen: dict[bytes, int] | None = None,
                 pooled_val: bool = False) -> None:
        self.config = config
        # True: the real set the models were cross-fitted over is train + val (pool_val in fit_encoder).
        self.pooled_val = pooled_val
        # Digest of every image a fold model trained on -> the fold that held it out (crossfit_joint), so
        # encode() gives seen images their out-of-fold view.
        self.seen = seen or {}
        self.maps = maps
        self.models = models
        self.fold_of_train = fold_of_train
        self._train_features = train_features
        self._standardise = standardise

    @property
    def dim(self) -> int:
        return int(self._train_features.shape[1])

    def train_features(self) -> np.ndarray:
        """Features of the real train split, in the dataset's order (out-of-fold for ``crossfit``); with
        ``pooled_val``, of the pooled train + val split (train first, then val)."""
        return self._train_features

    def encode(self, images: np.ndarray, *, salt: str = "") -> np.ndarray:
        """Encode images none of the models trained on. ``salt`` varies the fold draw between sets."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.config.kind.startswith("crossfit"):
            seed = int.from_bytes(hashlib.sha256(f"{self.config.seed}/{salt}".encode()).digest()[:8], "little")
            which = np.random.default_rng(seed).integers(0, len(self.models), len(images))
            if self.seen:
                for i, img in enumerate(images):
                    which[i] = self.seen.get(_digest(img), which[i])
            out = np.zeros((len(images), self.dim), np.float32)
            for f in range(len(self.models)):
                idx = np.flatnonzero(which == f)
                if len(idx):
                    out[idx] = self.fold_features(f, images[idx])
            return out
        return self._post(_penultimate(self.models[0], images))

    def fold_features(self, f: int, images: np.ndarray) -> np.ndarray:
        """Features of ``images`` by fold model ``f`` (in the common space of every fold)."""
        if self.config.kind in ("crossfit", "crossfit_joint", "crossfit_augment"):
            return _log_probs(self.models[f], images)
        return self._post(_apply_map(_penultimate(self.models[f], images), self.maps[f]))

    def _post(self, feats: np.ndarray) -> np.ndarray:
        if self._standardise is None:
            return feats
        mu, sd = self._standardise
        return ((feats - mu) / sd).astype(np.float32)


def _digest(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + repr(image.shape).encode()).digest()[:16]


def synthetic_pools(synthetic, num_classes: int) -> list[np.ndarray]:
    """Per-class uint8 pools from a source (``pool(class_id)``), a dict or a sequence of arrays."""
    if hasattr(synthetic, "pool"):
        pools = [np.asarray(synthetic.pool(k)) for k in range(num_classes)]
    elif isinstance(synthetic, dict):
        pools = [np.asarray(synthetic.get(k, np.zeros((0, 1, 1, 1), np.uint8))) for k in range(num_classes)]
    else:
        pools = [np.asarray(p) for p in synthetic]
        if len(pools) != num_classes:
            raise ValueError(f"synthetic has {len(pools)} pools but the dataset has {num_classes} classes; "
                             "give one (possibly empty) pool per class")
    for k, p in enumerate(pools):
        if len(p) and (p.dtype != np.uint8 or p.ndim != 4):
            raise ValueError(f"synthetic pool of class {k} must be uint8 (n, H, W, C); got {p.dtype} {p.shape}")
    return pools


def _log_probs(model, images: np.ndarray) -> np.ndarray:
    from tailmix.classifiers.training import predict_logits

    logits = torch.from_numpy(predict_logits(model, images, device="cpu"))
    return torch.log_softmax(logits, dim=1).numpy().astype(np.float32)


def _penultimate(model, images: np.ndarray) -> np.ndarray:
    from tailmix.classifiers.training import encode

    return encode(model, images, device="cpu").astype(np.float32)


def _train_cnn(images, labels, num_classes, config: EncoderConfig, seed: int, *, train: bool = True):
    from tailmix.classifiers.backbones import SmallCNN
    from tailmix.classifiers.training import train_classifier

    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # module init draws from the global RNG; restore it afterwards
    model = SmallCNN(images.shape[-1], num_classes, width=config.width)
    torch.random.set_rng_state(torch_state)
    if train:
        counts = np.bincount(labels, minlength=num_classes)
        train_classifier(model, images, labels, loss=config.loss, class_counts=np.maximum(counts, 1),
                         epochs=config.epochs, batch_size=64, lr=2e-3, sampler="uniform",
                         augment=config.kind == "crossfit_augment",
                         device="cpu", generator=g)
    model.eval()
    return model


def fit_encoder(dataset, config: EncoderConfig = EncoderConfig(), *, synthetic=None,
                cache_dir: str | Path | None = None, progress: bool = False, pool_val: bool = False) -> FrozenEncoder:
    """Fit (or load from the in-memory or on-disk cache) the frozen encoder of ``dataset``.

    Args:
        dataset: The :class:`LongTailDataset`.
        config: Which encoder and how to train it.
        synthetic: The env's synthetic images: a source (``pool(class_id)``), ``{class: images}`` or one uint8
            array per class. Used (and required) only by :data:`NEEDS_SYNTHETIC` encoders; ignored otherwise.
        cache_dir: Where fitted encoders are cached on disk (``None``: memory only; the env's default is a
            per-user folder, ``envs.cache``).
        progress: Show a bar over the fold models.
        pool_val: Fit over the pooled train + val split (the env's ``val_folds >= 2``), so that val images get
            out-of-fold features too; ``train_features()`` then covers train + val. Refused for ``supervised``
            (its one model would have trained on every pooled image).
    """
    if pool_val and config.kind == "supervised":
        raise ValueError("encoder 'supervised' trains on every real image it encodes; pooling val into it would make "
                         "the held-out fold's features in-sample. Use a crossfit encoder or 'random'")
    pools = None
    if config.kind in NEEDS_SYNTHETIC:
        if synthetic is None or isinstance(synthetic, str):
            raise ValueError(f"encoder {config.kind!r} trains on the synthetic images too and needs them as "
                             "synthetic=<source or per-class uint8 images>; with source='gaussian' (virtual "
                             "features) or no images use encoder='crossfit'")
        pools = synthetic_pools(synthetic, dataset.num_classes)
        if any(len(p) and p.shape[1:] != dataset.image_shape for p in pools):
            raise ValueError(f"synthetic images must have the dataset's shape {dataset.image_shape}")
    key = _cache_key(dataset, config, pools, pool_val)
    if key in _MEMORY:
        return _MEMORY[key]
    path = Path(cache_dir) / f"encoder-{key}.pt" if cache_dir else None
    with _fit_lock(path):  # concurrent processes: one fits, the others wait and load its file
        if path is not None and path.exists():
            try:
                enc = _load(path, dataset, config, pool_val)
                _MEMORY[key] = enc
                return enc
            except Exception:  # a corrupt cache is rebuilt, never trusted
                path.unlink(missing_ok=True)
        enc = _fit(dataset, config, progress=progress, pools=pools, pool_val=pool_val)
        if path is not None:
            _save(enc, path)
    _MEMORY[key] = enc
    return enc


def _fit_lock(path: Path | None):
    """An exclusive lock on ``path``'s encoder (``tailmix.io.atomic.file_lock``); nothing for a memory-only cache."""
    import contextlib

    if path is None:
        return contextlib.nullcontext()
    from tailmix.io.atomic import file_lock

    lock = path.parent / f".{path.stem}.lock"
    try:  # what file_lock opens; fails in a read-only shared cache (os.access would say yes to root)
        if path.parent.is_dir():
            open(lock, "a").close()
        read_only = False
    except OSError:
        read_only = True
    if read_only:
        # A read-only shared cache: a cached encoder is read without the lock; a missing one cannot be saved.
        if path.is_file():
            return contextlib.nullcontext()
        raise ValueError(f"the encoder cache {path.parent} is read-only and lacks this encoder ({path.name}); make "
                         "it writable or choose another cache folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(lock, what="fitting the same encoder")


_MEMORY: dict[str, FrozenEncoder] = {}


def _stratified_folds(labels: np.ndarray, num_classes: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(len(labels), np.int64)
    for cls in range(num_classes):  # stratified: every fold holds every class it can
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        fold[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return fold


def _fit(dataset, config: EncoderConfig, *, progress: bool, pools: list[np.ndarray] | None = None,
         pool_val: bool = False) -> FrozenEncoder:
    x, y = dataset.train_images, dataset.train_labels
    if pool_val:  # the cross-validated reward's pooled split: every image in it must be encoded out of fold
        x, y = np.concatenate([x, dataset.val_images]), np.concatenate([y, dataset.val_labels])
    enc = _fit_on(x, y, dataset, config, progress=progress, pools=pools)
    enc.pooled_val = pool_val
    return enc


def _fit_on(x, y, dataset, config: EncoderConfig, *, progress: bool, pools: list[np.ndarray] | None) -> FrozenEncoder:
    c = dataset.num_classes
    if config.kind.startswith("crossfit"):
        fold = _stratified_folds(y, c, config.folds, np.random.default_rng(config.seed))
        seen: dict[bytes, int] = {}
        if pools is not None:
            sx = np.concatenate([p for p in pools if len(p)] or [np.zeros((0, *x.shape[1:]), np.uint8)])
            sy = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(pools)])
            # The synthetic folds draw from a stream of their own, so the real folds match crossfit's.
            sfold = _stratified_folds(sy, c, config.folds, np.random.default_rng([config.seed, 1]))
            for img, f in zip(x, fold):
                seen[_digest(img)] = int(f)
            for img, f in zip(sx, sfold):
                seen.setdefault(_digest(img), int(f))  # an exact real copy keeps the real image's fold
        models = []
        feats = np.zeros((len(y), c), np.float32)
        it = range(config.folds)
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc="cross-fitted encoders", leave=False)
        for f in range(config.folds):
            n_fit = int((fold != f).sum())
            if n_fit < 2:  # classifiers.training would say only "need at least 2 training samples"
                raise ValueError(f"the crossfit encoder's fold {f} leaves {n_fit} of the {len(y)} real images to train "
                                 f"on (encoder_folds={config.folds}); use fewer folds, encoder='random', or more "
                                 "train images")
        for f in it:
            held = fold == f
            fx, fy = x[~held], y[~held]
            if pools is not None:
                fx = np.concatenate([fx, sx[sfold != f]])
                fy = np.concatenate([fy, sy[sfold != f]])
            m = _train_cnn(fx, fy, c, config, config.seed * 1000 + f)
            models.append(m)
            if held.any():
                feats[held] = _log_probs(m, x[held])
        if config.kind in ("crossfit", "crossfit_augment"):
            return FrozenEncoder(config, models, fold, feats, None)
        if config.kind == "crossfit_joint":
            return FrozenEncoder(config, models, fold, feats, None, seen=seen)
        return _align(config, models, fold, x)
    model = _train_cnn(x, y, c, config, config.seed, train=config.kind == "supervised")
    raw = _penultimate(model, x)
    mu, sd = raw.mean(0), raw.std(0) + 1e-6
    enc = FrozenEncoder(config, [model], None, ((raw - mu) / sd).astype(np.float32), (mu, sd))
    return enc


def _apply_map(feats: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (np.concatenate([feats, np.ones((len(feats), 1), np.float32)], 1) @ w).astype(np.float32)


def _align(config: EncoderConfig, models: list, fold: np.ndarray, x: np.ndarray, ridge: float = 1e-2
           ) -> FrozenEncoder:
    """Map every fold model's penultimate space onto fold 0's (ridge regression on images both saw)."""
    maps = []
    for f in range(len(models)):
        if f == 0:
            maps.append(np.vstack([np.eye(models[0].feature_dim, dtype=np.float32),
                                   np.zeros((1, models[0].feature_dim), np.float32)]))
            continue
        both = (fold != 0) & (fold != f)
        if not both.any():
            raise ValueError(f"crossfit_aligned: no train image was seen by both fold models 0 and {f}, so their "
                             "feature spaces cannot be aligned; use more train images or encoder='crossfit'")
        src = _penultimate(models[f], x[both])
        dst = _penultimate(models[0], x[both])
        a = np.concatenate([src, np.ones((len(src), 1), np.float32)], 1).astype(np.float64)
        w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ dst)
        maps.append(w.astype(np.float32))
    raw = np.zeros((len(x), models[0].feature_dim), np.float32)
    for f, m in enumerate(models):
        held = fold == f
        if held.any():
            raw[held] = _apply_map(_penultimate(m, x[held]), maps[f])
    mu, sd = raw.mean(0), raw.std(0) + 1e-6
    return FrozenEncoder(config, models, fold, ((raw - mu) / sd).astype(np.float32), (mu, sd), maps)


def _cache_key(dataset, config: EncoderConfig, pools: list[np.ndarray] | None = None, pool_val: bool = False) -> str:
    d = {"data": dataset.fingerprint(), "config": asdict(config), "v": 1}
    if pool_val:  # only then: the keys of encoders fitted on the train split stay as they were
        d["pooled_val"] = True
    if pools is not None:  # only NEEDS_SYNTHETIC encoders; the other keys stay as they were
        h = hashlib.sha256()
        for p in pools:
            h.update(repr(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        d["synthetic"] = h.hexdigest()
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save(enc: FrozenEncoder, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"config": asdict(enc.config), "models": [m.state_dict() for m in enc.models],
            "fold": enc.fold_of_train, "train_features": enc.train_features(),
            "standardise": enc._standardise, "maps": enc.maps, "seen": enc.seen, "pooled_val": enc.pooled_val}
    from tailmix.io.atomic import atomic_write_serialised

    atomic_write_serialised(path, lambda fh: torch.save(blob, fh))  # a full disk: an OSError (one line in the CLI)


def _load(path: Path, dataset, config: EncoderConfig, pool_val: bool = False) -> FrozenEncoder:
    from tailmix.classifiers.backbones import SmallCNN

    blob = torch.load(path, weights_only=False)
    if blob["config"] != asdict(config):
        raise ValueError("encoder cache config mismatch")
    if bool(blob.get("pooled_val", False)) != pool_val:
        raise ValueError("encoder cache pooled-val mismatch")
    models = []
    for sd in blob["models"]:
        m = SmallCNN(dataset.image_shape[-1], dataset.num_classes, width=config.width)
        m.load_state_dict(sd)
        m.eval()
        models.append(m)
    return FrozenEncoder(config, models, blob["fold"], blob["train_features"], blob["standardise"],
                         blob.get("maps"), seen=blob.get("seen"), pooled_val=pool_val)


def encoder_config(config) -> EncoderConfig:
    """The :class:`EncoderConfig` of an env config (``envs.config.RatioEnvConfig``).

    The one place where env settings become encoder settings: the env (``envs.core.build_engine``), the
    application layer (``tailmix.pipeline.ensure_encoder``, which fits the encoder ahead of the env) and the
    benchmarks all build it here, so they find one another's encoders in the cache.
    """
    return EncoderConfig(kind=config.encoder, folds=config.encoder_folds, epochs=config.encoder_epochs,
                         seed=config.source_seed)
