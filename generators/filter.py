"""Filtering generated candidates with a reference classifier (SD+LoRA self-validation, HistoDiffusion).

A reference classifier scores each candidate; a candidate of class ``c`` is kept when the classifier
assigns it to ``c`` with probability ``>= tau``. The pool generates more until a shard's quota is kept or
a try limit is reached, and records the acceptance rate per class.

The reference classifier must be calibrated for the long tail: a plain cross-entropy one on RetinaMNIST
accepted 81-94% of head-class samples and 0-7% of tail samples in a prototype, i.e. it filtered the tail
away; on real val images it keeps 2.8% of the tail half (``python -m benchmarks.filter_quality --dataset
$TAILMIX_DATA_DIR/retinamnist.npz``, docs/results). :meth:`ClassifierFilter.train_reference` therefore trains
with logit adjustment by default.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CALIBRATIONS = ("logit_adjustment", "balanced_softmax", "class_balanced_sampling", "none")
REFERENCE_WEIGHTS = "reference.pt"
REFERENCE_CONFIG = "reference.json"
FILTER_CONFIG = "filter.json"

SampleFn = Callable[[int, torch.Generator], np.ndarray]


@dataclasses.dataclass(frozen=True)
class FilterResult:
    """What one :meth:`ClassifierFilter.fill` produced.

    Attributes:
        images: Kept images, uint8 ``(k, H, W, C)``, ``k <= quota`` (fewer when the try limit was hit).
        confidences: Reference probability of the target class for each kept image (float32; NaN unfiltered).
        candidates_tried: Candidates generated.
        accepted: Candidates that passed the filter (may exceed ``k``: the surplus of the last batch is cut).
        acceptance_rate: ``accepted / candidates_tried`` (NaN when nothing was tried).
        tries: Batches generated.
        quota: Images that were asked for.
    """

    images: np.ndarray
    confidences: np.ndarray
    candidates_tried: int
    accepted: int
    acceptance_rate: float
    tries: int
    quota: int = 0

    @property
    def quota_met(self) -> bool:
        """Whether the fill kept as many images as asked for (False: the try limit stopped it)."""
        return len(self.images) >= self.quota


def _check_fill_args(class_id: int, quota: int, generator, batch_size: int) -> None:
    if isinstance(quota, bool) or not isinstance(quota, (int, np.integer)) or quota < 0:
        raise ValueError(f"quota must be a non-negative int (images to keep); got {quota!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)); "
                         f"got {type(generator).__name__}")
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or class_id < 0:
        raise ValueError(f"class_id must be a non-negative int; got {class_id!r}")


def _check_batch(images, n: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != n:
        raise ValueError(f"sample_fn({n}, generator) must return {n} uint8 images (n, H, W, C); got "
                         f"{images.dtype} {images.shape}")
    return images


def fill_loop(screen, sample_fn: SampleFn, class_id: int, quota: int, *, generator: torch.Generator,
              batch_size: int, max_tries: int):
    """Generate batches and keep what ``screen`` keeps until ``quota`` are kept or ``max_tries`` batches ran.

    ``screen(batch) -> (keep_mask, confidences, flagged)`` decides per candidate (``flagged`` counts e.g.
    near-copies). Batch sizes follow the acceptance so far (at most ``batch_size``), so a small quota does not
    cost a full batch; they depend only on earlier results, so a seeded fill is reproducible.

    Returns:
        ``(images, confidences, tried, accepted, tries, flagged)``.
    """
    _check_fill_args(class_id, quota, generator, batch_size)
    kept, confs = [], []
    tried = accepted = tries = flagged = 0
    shape_ref = None
    while accepted < quota and tries < max_tries:
        need = quota - accepted
        rate = accepted / tried if tried else 1.0
        # ask for what the acceptance so far predicts is needed; a 5% floor keeps a bad start from asking for
        # huge batches and the batch_size cap bounds memory
        n = int(min(batch_size, math.ceil(need / max(rate, 0.05))))
        batch = _check_batch(sample_fn(n, generator), n)
        shape_ref = batch
        keep, conf, flag = screen(batch)
        flagged += int(flag)
        kept.append(batch[keep])
        confs.append(conf[keep])
        tried += n
        accepted += int(keep.sum())
        tries += 1
    images = np.concatenate(kept)[:quota] if kept else _empty_like(shape_ref)
    confidences = np.concatenate(confs)[:quota].astype(np.float32) if confs else np.zeros(0, np.float32)
    return images, confidences, tried, accepted, tries, flagged


class NoFilter:
    """Keeps every candidate (confidence NaN); the pool's default. Its ``config()`` is ``None``."""

    name = "none"
    max_tries = None

    def select(self, images: np.ndarray, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(images)
        return np.ones(n, bool), np.full(n, np.nan, np.float32)

    def fill(self, sample_fn: SampleFn, class_id: int, quota: int, *, generator: torch.Generator,
             batch_size: int = 64) -> FilterResult:
        """Sample exactly ``quota`` images in batches of at most ``batch_size``."""
        _check_fill_args(class_id, quota, generator, batch_size)
        batches, tries = [], 0
        have = 0
        while have < quota:
            n = min(batch_size, quota - have)
            batches.append(_check_batch(sample_fn(n, generator), n))
            have += n
            tries += 1
        images = np.concatenate(batches) if batches else None
        return FilterResult(images=images if images is not None else _empty_like(None),
                            confidences=np.full(have, np.nan, np.float32), candidates_tried=have, accepted=have,
                            acceptance_rate=1.0 if have else math.nan, tries=tries, quota=int(quota))

    def config(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NoFilter()"


def _empty_like(batch: np.ndarray | None) -> np.ndarray:
    if batch is None:
        return np.zeros((0, 1, 1, 1), np.uint8)
    return np.zeros((0, *batch.shape[1:]), np.uint8)


class ClassifierFilter:
    """Keep candidates that a reference classifier assigns to their class with probability ``>= tau``.

    Args:
        scorer: Maps uint8 images ``(n, H, W, C)`` to class probabilities ``(n, C)`` (rows sum to 1).
        tau: Confidence threshold in ``[0, 1]``.
        max_tries: Most batches one :meth:`fill` generates before giving up on its quota.
        name: Identifies the scorer in :meth:`config` (hashed into bank keys, so give different scorers
            different names; a trained reference records a digest of its weights instead).
    """

    def __init__(self, scorer: Callable[[np.ndarray], np.ndarray], *, tau: float = 0.5, max_tries: int = 10,
                 name: str = "custom") -> None:
        if not callable(scorer):
            raise ValueError(f"scorer must be callable (uint8 images -> (n, C) probabilities); got {scorer!r}")
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0.0 <= float(tau) <= 1.0:
            raise ValueError(f"tau must be a probability in [0, 1]; got {tau!r}")
        if isinstance(max_tries, bool) or not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
            raise ValueError(f"max_tries must be a positive int (batches per fill); got {max_tries!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        self.scorer = scorer
        self.tau = float(tau)
        self.max_tries = int(max_tries)
        self.name = name

    # -- scoring ---------------------------------------------------------------------------------------
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """The scorer's ``(n, C)`` probabilities, checked."""
        probs = np.asarray(self.scorer(images), dtype=np.float64)
        if probs.ndim != 2 or len(probs) != len(images):
            raise ValueError(f"the scorer must return probabilities shaped (n, C) = ({len(images)}, C); got "
                             f"{probs.shape}")
        if not np.all(np.isfinite(probs)):
            raise ValueError("the scorer returned NaN or inf probabilities; check the reference classifier")
        return probs

    def select(self, images: np.ndarray, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Which candidates of class ``class_id`` to keep.

        Returns:
            ``(keep_mask, confidences)``: bool ``(n,)``, True iff argmax is ``class_id`` and its probability
            is ``>= tau``; float32 ``(n,)`` probability of ``class_id``.
        """
        if len(images) == 0:
            return np.zeros(0, bool), np.zeros(0, np.float32)
        probs = self.probabilities(images)
        if not 0 <= int(class_id) < probs.shape[1]:
            raise ValueError(f"class_id {class_id} is out of range for a scorer with {probs.shape[1]} classes")
        conf = probs[:, int(class_id)]
        keep = (probs.argmax(axis=1) == int(class_id)) & (conf >= self.tau)
        return keep, conf.astype(np.float32)

    def fill(self, sample_fn: SampleFn, class_id: int, quota: int, *, generator: torch.Generator,
             batch_size: int = 64) -> FilterResult:
        """Generate and filter until ``quota`` images are kept or ``max_tries`` batches were generated.

        Batch sizes adapt to the acceptance seen so far (at most ``batch_size``), so a small quota does
        not cost a full batch; they depend only on earlier results, so a seeded fill is reproducible.

        Args:
            sample_fn: ``sample_fn(n, generator) -> uint8 (n, H, W, C)`` candidates of ``class_id``.
            class_id: Target class.
            quota: Images to keep.
            generator: Passed to every ``sample_fn`` call (all randomness comes from it).
            batch_size: Largest batch asked of ``sample_fn``.
        """
        images, confidences, tried, accepted, tries, _ = fill_loop(
            lambda batch: (*self.select(batch, class_id), 0), sample_fn, class_id, quota, generator=generator,
            batch_size=batch_size, max_tries=self.max_tries)
        return FilterResult(images=images, confidences=confidences, candidates_tried=tried, accepted=accepted,
                            acceptance_rate=accepted / tried if tried else math.nan, tries=tries,
                            quota=int(quota))

    def config(self) -> dict:
        """JSON description hashed into bank keys (threshold, try limit, scorer identity)."""
        cfg = {"kind": "classifier", "name": self.name, "tau": self.tau, "max_tries": self.max_tries}
        if isinstance(self.scorer, ReferenceScorer):
            cfg["reference"] = self.scorer.config()
        return cfg

    # -- the reference classifier ------------------------------------------------------------------------
    @classmethod
    def train_reference(cls, dataset, *, tau: float = 0.5, calibration: str = "logit_adjustment",
                        epochs: int = 30, batch_size: int = 64, lr: float = 1e-3, width: int = 32,
                        augment: bool = True, max_tries: int = 10, device: str | torch.device = "cpu",
                        generator: torch.Generator | None = None, progress: bool = False) -> ClassifierFilter:
        """Train a SmallCNN reference on ``dataset``'s real train split, calibrated for the long tail.

        Args:
            dataset: A ``LongTailDataset`` (only its train split is used).
            tau: Confidence threshold of the returned filter.
            calibration: ``"logit_adjustment"`` (default; logit-adjusted loss, Menon et al. 2021),
                ``"balanced_softmax"`` (Ren et al. 2020), ``"class_balanced_sampling"`` (cross-entropy on
                class-balanced batches) or ``"none"`` (plain cross-entropy: biased toward head classes).
            epochs: Training epochs.
            batch_size: Mini-batch size.
            lr: AdamW learning rate.
            width: SmallCNN width.
            augment: Random flips and shifts while training.
            max_tries: The filter's try limit.
            device: Where to train and score.
            generator: Source of all randomness (initial weights included); ``None``: seed 0.
            progress: Show a progress bar.
        """
        scorer = ReferenceScorer.train(dataset, calibration=calibration, epochs=epochs, batch_size=batch_size,
                                       lr=lr, width=width, augment=augment, device=device, generator=generator,
                                       progress=progress)
        return cls(scorer, tau=tau, max_tries=max_tries, name="reference")

    def save(self, path: str | Path) -> Path:
        """Save a filter built by :meth:`train_reference` (folder with its config and reference weights)."""
        if not isinstance(self.scorer, ReferenceScorer):
            raise ValueError("only a filter with a trained reference (ClassifierFilter.train_reference) can be "
                             "saved; a custom scorer is code, so rebuild it with ClassifierFilter(scorer, ...)")
        folder = self.scorer.save(path)
        from tailmix.generators.bank import atomic_write_json

        atomic_write_json(folder / FILTER_CONFIG, {"tau": self.tau, "max_tries": self.max_tries, "name": self.name})
        return folder

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ClassifierFilter:
        """Load a filter saved by :meth:`save` (reusing its reference keeps bank keys stable)."""
        file = Path(path) / FILTER_CONFIG
        if not file.is_file():
            raise ValueError(f"{file} does not exist; pass a folder written by ClassifierFilter.save")
        cfg = json.loads(file.read_text(encoding="utf-8"))
        return cls(ReferenceScorer.load(path, device=device), tau=cfg["tau"], max_tries=cfg["max_tries"],
                   name=cfg["name"])

    def __repr__(self) -> str:
        return f"ClassifierFilter(name={self.name!r}, tau={self.tau}, max_tries={self.max_tries})"


class ReferenceScorer:
    """A trained SmallCNN as a filter scorer: uint8 images -> softmax probabilities.

    With ``calibration="logit_adjustment"`` or ``"balanced_softmax"`` the model was trained on
    prior-shifted logits, so its raw logits are already balanced; no adjustment happens at scoring time.

    Args:
        model: A ``classifiers.backbones.SmallCNN``.
        settings: How it was trained (``in_channels``, ``num_classes``, ``width``, ``calibration``, ...).
        device: Where to score.
        batch_size: Scoring batch size.
    """

    def __init__(self, model: torch.nn.Module, settings: dict, *, device: str | torch.device = "cpu",
                 batch_size: int = 256) -> None:
        self.model = model.eval()
        self.settings = dict(settings)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._digest: str | None = None

    @staticmethod
    def _build(settings: dict) -> torch.nn.Module:
        from tailmix.classifiers.backbones import SmallCNN

        return SmallCNN(settings["in_channels"], settings["num_classes"], width=settings["width"])

    @classmethod
    def train(cls, dataset, *, calibration: str = "logit_adjustment", epochs: int = 30, batch_size: int = 64,
              lr: float = 1e-3, width: int = 32, augment: bool = True, device: str | torch.device = "cpu",
              generator: torch.Generator | None = None, progress: bool = False) -> ReferenceScorer:
        """Train on ``dataset``'s train split (see :meth:`ClassifierFilter.train_reference`)."""
        from tailmix.classifiers.device import select_device
        from tailmix.classifiers.training import train_classifier

        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}; got {calibration!r}. Use "
                             "'logit_adjustment' unless you have a reason: 'none' filters the tail away")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int; got {epochs!r}")
        dev = select_device(device)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        if not isinstance(gen, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None; got {type(gen).__name__}")
        images, labels = dataset.split("train")
        counts = dataset.train_counts
        if np.any(counts == 0):
            raise ValueError(f"every class needs real train images to train a reference; counts are "
                             f"{counts.tolist()}")
        settings = {"in_channels": int(dataset.image_shape[2]), "num_classes": int(dataset.num_classes),
                    "width": int(width), "calibration": calibration, "epochs": epochs, "batch_size": batch_size,
                    "lr": lr, "augment": bool(augment), "class_counts": counts.tolist(),
                    "dataset": dataset.fingerprint(), "seed": int(gen.initial_seed())}
        # initial weights come from torch's global RNG: seed it from our generator inside a fork so the
        # caller's global state is untouched
        init_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = cls._build(settings)
        loss = {"logit_adjustment": "logit_adjustment", "balanced_softmax": "balanced_softmax"}.get(calibration, "ce")
        sampler = "class_balanced" if calibration == "class_balanced_sampling" else "uniform"
        history = train_classifier(model, images, labels, loss=loss, class_counts=counts, epochs=epochs,
                                   batch_size=batch_size, lr=lr, sampler=sampler, augment=augment, device=dev,
                                   generator=gen, progress=progress)
        settings["final_loss"] = float(history["loss"][-1]) if history.get("loss") else None
        return cls(model, settings, device=dev)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from tailmix.classifiers.training import predict_logits

        logits = predict_logits(self.model, images, device=self.device, batch_size=self.batch_size)
        logits = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def config(self) -> dict:
        """Settings plus a digest of the weights: two references with equal configs score alike."""
        if self._digest is None:
            from tailmix.generators.base import state_digest

            self._digest = state_digest(self.model.state_dict())
        return {**{k: v for k, v in self.settings.items() if k != "final_loss"}, "state_digest": self._digest}

    def save(self, path: str | Path) -> Path:
        """Write ``reference.pt`` (state dict) and ``reference.json`` (settings) into folder ``path``."""
        from tailmix.generators.bank import atomic_write_json
        from tailmix.io.atomic import atomic_write_serialised

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        atomic_write_serialised(folder / REFERENCE_WEIGHTS, lambda fh: torch.save(state, fh))
        atomic_write_json(folder / REFERENCE_CONFIG, {**self.settings, "state_digest": self.config()["state_digest"]})
        return folder

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ReferenceScorer:
        """Read a folder written by :meth:`save`; checks the weights against the recorded digest."""
        from tailmix.classifiers.device import select_device
        from tailmix.generators.base import state_digest

        folder = Path(path)
        cfg_file, weights = folder / REFERENCE_CONFIG, folder / REFERENCE_WEIGHTS
        if not cfg_file.is_file() or not weights.is_file():
            raise ValueError(f"{folder} lacks {REFERENCE_CONFIG} or {REFERENCE_WEIGHTS}; pass a folder written by "
                             "ClassifierFilter.save / ReferenceScorer.save")
        settings = json.loads(cfg_file.read_text(encoding="utf-8"))
        digest = settings.pop("state_digest", None)
        model = cls._build(settings)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        scorer = cls(model, settings, device=select_device(device))
        if digest is not None and state_digest(model.state_dict()) != digest:
            raise ValueError(f"{weights} does not match the digest in {cfg_file} (corrupt or replaced); train "
                             "and save the reference again")
        scorer._digest = digest
        scorer.model.to(scorer.device)
        return scorer
