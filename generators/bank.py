"""The synthetic bank: per-class candidate images generated ahead of time, on disk, verified by checksums.

Env steps never call a generator; they draw from a bank that :meth:`generators.pool.GeneratorPool.fill_bank`
filled beforehand. A bank is a folder ``<root>/<key>/`` where ``key`` hashes everything that determines
its bytes (dataset, generator configs, filter, seed, quotas, sampling settings), so a changed input never
reuses a stale bank. Inside it:

- ``class_<c>_<s>.npy``: shard ``s`` of class ``c``, uint8 images ``(n, H, W, C)``;
- ``class_<c>_<s>.conf.npy``: the filter confidence of each image (float32 ``(n,)``, NaN without filter);
- ``manifest.json``: the key and its inputs, image shape, class count, per-class quota, per-class list of
  shards (file, sha256, count, generator id, sample seed, candidates tried/accepted), per-class
  acceptance and mean confidence, a ``complete`` flag and library versions.

Every file is written under a temporary name in the same folder, fsynced and ``os.replace``-d, and the
manifest is rewritten after each shard, so a crash leaves either the old or the new file, never half of
one, and an interrupted fill resumes from its completed shards.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tailmix.io.atomic import atomic_write_bytes

BANK_FORMAT = 1
MANIFEST_FILE = "manifest.json"
SHARD_RE = re.compile(r"^class_(\d+)_(\d+)(\.conf)?\.npy$")
_REQUIRED = ("format", "key", "dataset_fingerprint", "generator_configs", "filter_config", "seed", "image_shape",
             "num_classes", "per_class", "sampling", "classes", "complete")


class BankError(ValueError):
    """A bank folder is missing, corrupt, incomplete or does not match what was asked for."""


# -- keys ----------------------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: the same object gives the same string on every machine."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except TypeError as err:
        raise ValueError(f"bank inputs must be JSON-serialisable (dicts, lists, str, numbers, None): {err}; "
                         "make the generator's / filter's config() return plain Python values") from None


def normalize_per_class(per_class: int | Sequence[int], num_classes: int | None = None) -> int | list[int]:
    """Validate a quota: one int for every class, or one int per class (length ``num_classes``)."""
    if isinstance(per_class, (int, np.integer)) and not isinstance(per_class, bool):
        if per_class < 0:
            raise ValueError(f"per_class must be >= 0 (images per class); got {per_class}")
        return int(per_class) if num_classes is None else [int(per_class)] * num_classes
    try:
        values = [v for v in per_class]  # type: ignore[union-attr]
    except TypeError:
        raise ValueError(f"per_class must be an int or a sequence of ints (one per class); got {per_class!r}") \
            from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise ValueError(f"per_class must hold non-negative ints; got {values!r}")
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(f"per_class has {len(values)} entries but the dataset has {num_classes} classes; "
                         "give one quota per class or a single int")
    return [int(v) for v in values]


def bank_key(dataset_fingerprint: str, generator_configs: dict, filter_config: dict | None, seed: int,
             per_class: int | Sequence[int], *, sampling: dict | None = None) -> str:
    """The folder name of a bank: first 16 hex chars of the SHA-256 of the canonical JSON of its inputs.

    Args:
        dataset_fingerprint: ``LongTailDataset.fingerprint()``.
        generator_configs: ``{generator id: generator.config()}``.
        filter_config: The filter's ``config()``, or ``None`` without a filter.
        seed: The fill seed.
        per_class: Quota, an int or one int per class.
        sampling: Anything else that changes the bytes (the pool passes its class assignment, shard size
            and batch size).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int; got {seed!r}")
    payload = {"format": BANK_FORMAT, "dataset": str(dataset_fingerprint), "generators": generator_configs,
               "filter": filter_config, "seed": int(seed), "per_class": normalize_per_class(per_class),
               "sampling": sampling or {}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def manifest_key(manifest: dict) -> str:
    """Recompute the key a manifest's own contents hash to (detects edited or copied manifests)."""
    return bank_key(manifest["dataset_fingerprint"], manifest["generator_configs"], manifest["filter_config"],
                    manifest["seed"], manifest["per_class"], sampling=manifest["sampling"])


# -- atomic files ----------------------------------------------------------------------------------------
def atomic_save_npy(path: str | Path, array: np.ndarray) -> str:
    """``np.save`` atomically; returns the SHA-256 of the written file."""
    array = np.ascontiguousarray(array)
    return atomic_write_bytes(path, lambda fh: np.lib.format.write_array(fh, array, allow_pickle=False))


def atomic_write_json(path: str | Path, obj: Any) -> str:
    """Write indented, key-sorted, strict JSON (no NaN/inf, which other tools reject) atomically; returns its
    SHA-256."""
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode()
    return atomic_write_bytes(path, lambda fh: fh.write(text))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks (banks can be larger than memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions recorded in a manifest (samples can change across torch / numpy versions)."""
    versions = {"bank_format": str(BANK_FORMAT), "python": platform.python_version(), "numpy": np.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        from importlib.metadata import version

        versions["tailmix"] = version("tailmix")
    except Exception:  # not installed (running from a checkout)
        versions["tailmix"] = "unknown"
    return versions


def shard_name(class_id: int, shard: int) -> str:
    return f"class_{class_id}_{shard}.npy"


def conf_name(class_id: int, shard: int) -> str:
    return f"class_{class_id}_{shard}.conf.npy"


def summarize_class(entry: dict) -> None:
    """Recompute a class entry's totals (count, tried, accepted, acceptance, mean confidence) from its shards."""
    shards = entry["shards"]
    count = sum(s["count"] for s in shards)
    tried = sum(s["tried"] for s in shards)
    accepted = sum(s["accepted"] for s in shards)
    # (a NaN sum: a shard written before manifests were strict JSON, by a filter without confidences)
    scored = [s for s in shards if s["confidence_sum"] is not None and math.isfinite(s["confidence_sum"])]
    for s in shards:
        if s not in scored:
            s["confidence_sum"] = None
    conf_sum = sum(s["confidence_sum"] for s in scored)
    conf_n = sum(s["count"] for s in scored)
    entry.update(count=count, tried=tried, accepted=accepted,
                 acceptance=(accepted / tried) if tried else None,
                 mean_confidence=(conf_sum / conf_n) if conf_n else None)


# -- the bank --------------------------------------------------------------------------------------------
class SyntheticBank:
    """A read-only view of a bank folder (use :meth:`open`; :class:`~generators.pool.GeneratorPool` fills).

    Attributes:
        path: The bank folder ``<root>/<key>``.
    """

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = Path(path)
        self._manifest = manifest
        self._shapes = tuple(int(v) for v in manifest["image_shape"])

    # -- opening -------------------------------------------------------------------------------------
    @staticmethod
    def read_manifest(path: str | Path) -> dict:
        """Parse and sanity-check ``path/manifest.json`` (raises :class:`BankError` with a fix)."""
        folder = Path(path)
        if not folder.is_dir():
            raise BankError(f"no bank at {folder}; fill one with GeneratorPool.fill_bank(dataset, root, ...) "
                            "and open the folder it returns")
        file = folder / MANIFEST_FILE
        if not file.is_file():
            raise BankError(f"{folder} has no {MANIFEST_FILE}, so it is not a bank (or its fill never wrote a "
                            "shard); run fill_bank again")
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BankError(f"{file} is corrupt ({err}); delete {folder} and run fill_bank again") from None
        if not isinstance(manifest, dict):
            raise BankError(f"{file} is not a JSON object; delete {folder} and run fill_bank again")
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise BankError(f"{file} lacks {missing}; it was not written by this version of tailmix. Delete "
                            f"{folder} and run fill_bank again")
        if manifest["format"] != BANK_FORMAT:
            raise BankError(f"{file} has bank format {manifest['format']}, this tailmix reads format "
                            f"{BANK_FORMAT}; fill the bank again")
        if manifest["key"] != folder.name:
            raise BankError(f"{file} belongs to bank {manifest['key']!r} but sits in folder {folder.name!r}; a "
                            "bank must not be renamed or copied over another. Open the folder fill_bank returned")
        try:
            expected = manifest_key(manifest)
        except (KeyError, TypeError, ValueError) as err:
            raise BankError(f"{file} has malformed entries ({err}); delete {folder} and fill it again") from None
        if expected != manifest["key"]:
            raise BankError(f"{file} was edited: its contents hash to key {expected!r}, not {manifest['key']!r}. "
                            f"Delete {folder} and run fill_bank again")
        return manifest

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True, allow_incomplete: bool = False) -> SyntheticBank:
        """Open a bank folder.

        Args:
            path: The folder ``<root>/<key>`` (as returned by ``fill_bank``).
            verify: Re-hash every shard and compare with the manifest (reads the whole bank once).
            allow_incomplete: Open a bank whose fill was interrupted (normally refused, since its classes
                hold fewer images than asked for; resume it with ``fill_bank``).

        Raises:
            BankError: (a ``ValueError``) missing, corrupt, edited, incomplete or mismatched bank.
        """
        folder = Path(path)
        bank = cls(folder, cls.read_manifest(folder))
        if not bank.complete and not allow_incomplete:
            raise BankError(f"bank {folder} is incomplete (its fill was interrupted); run fill_bank again with the "
                            "same arguments to resume it, or pass allow_incomplete=True")
        if verify:
            bank.verify()
        return bank

    def problems(self) -> list[tuple[int, int, str]]:
        """Every shard that fails its check, as ``(class_id, shard, reason)`` (empty: all good)."""
        bad = []
        h, w, c = self._shapes
        for cls_id, shard in self._iter_shards():
            for file, digest, dtype, shape in (
                    (shard["file"], shard["sha256"], np.uint8, (shard["count"], h, w, c)),
                    (shard["conf_file"], shard["conf_sha256"], np.float32, (shard["count"],))):
                path = self.path / file
                if not path.is_file():
                    bad.append((cls_id, shard["index"], f"{file} is missing"))
                    break
                if file_sha256(path) != digest:
                    bad.append((cls_id, shard["index"], f"{file} fails its checksum"))
                    break
                arr = np.load(path, mmap_mode="r")
                if arr.dtype != dtype or arr.shape != shape:
                    bad.append((cls_id, shard["index"], f"{file} holds {arr.dtype} {arr.shape}, expected "
                                                        f"{np.dtype(dtype)} {shape}"))
                    break
        return bad

    def verify(self) -> SyntheticBank:
        """Check every shard's checksum, dtype and shape; raises :class:`BankError` listing the bad ones."""
        bad = self.problems()
        if bad:
            listed = "; ".join(f"class {c} shard {s}: {why}" for c, s, why in bad[:10])
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise BankError(f"bank {self.path} is corrupt: {listed}{more}. Run fill_bank again with the same "
                            "arguments: it refills the bad shards")
        return self

    # -- properties ----------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict:
        """A copy of the manifest (see the module docstring for its fields)."""
        return copy.deepcopy(self._manifest)

    @property
    def key(self) -> str:
        return self._manifest["key"]

    @property
    def complete(self) -> bool:
        return bool(self._manifest["complete"])

    @property
    def num_classes(self) -> int:
        return int(self._manifest["num_classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shapes  # type: ignore[return-value]

    @property
    def filtered(self) -> bool:
        return self._manifest["filter_config"] is not None

    def counts(self) -> np.ndarray:
        """Images per class (int64, length ``num_classes``)."""
        return np.array([self._class(c)["count"] for c in range(self.num_classes)], np.int64)

    @property
    def acceptance(self) -> np.ndarray:
        """Per-class filter acceptance rate (accepted / candidates tried); NaN where nothing was tried."""
        return np.array([np.nan if self._class(c)["acceptance"] is None else self._class(c)["acceptance"]
                         for c in range(self.num_classes)], np.float64)

    def quality(self, class_id: int, metric: str = "acceptance") -> float:
        """Quality of a class's pool in ``[0, 1]``, an observation for the env.

        Args:
            class_id: The class.
            metric: ``"acceptance"`` (filter acceptance rate) or ``"confidence"`` (mean filter confidence
                of the kept images).

        Returns 1.0 without a filter, or where no candidate was generated (nothing was rejected).
        """
        if metric not in ("acceptance", "confidence"):
            raise ValueError(f"metric must be 'acceptance' or 'confidence'; got {metric!r}")
        entry = self._class(class_id)
        if not self.filtered:
            return 1.0
        value = entry["acceptance"] if metric == "acceptance" else entry["mean_confidence"]
        return 1.0 if value is None or not math.isfinite(value) else float(min(max(value, 0.0), 1.0))

    # -- reading ---------------------------------------------------------------------------------------
    def _class(self, class_id: int) -> dict:
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) \
                or not 0 <= int(class_id) < self.num_classes:
            raise ValueError(f"class_id must be an int in [0, {self.num_classes}); got {class_id!r}")
        return self._manifest["classes"][str(int(class_id))]

    def _iter_shards(self):
        for c in range(self.num_classes):
            for shard in self._class(c)["shards"]:
                yield c, shard

    def _maps(self, class_id: int, which: str = "file") -> list[np.ndarray]:
        return [np.load(self.path / s[which], mmap_mode="r") for s in self._class(class_id)["shards"]]

    def images(self, class_id: int) -> np.ndarray:
        """All images of a class, concatenated in shard order (uint8 ``(n, H, W, C)``, in memory)."""
        maps = self._maps(class_id)
        if not maps:
            return np.zeros((0, *self._shapes), np.uint8)
        return np.concatenate(maps)

    def confidences(self, class_id: int) -> np.ndarray:
        """Filter confidence of each image of a class (float32, NaN without filter)."""
        maps = self._maps(class_id, "conf_file")
        return np.concatenate(maps) if maps else np.zeros(0, np.float32)

    def metadata(self, class_id: int) -> dict[str, np.ndarray]:
        """Per-image provenance: ``confidence``, ``generator`` (id), ``seed`` (sample seed) and ``shard``."""
        shards = self._class(class_id)["shards"]
        return {"confidence": self.confidences(class_id),
                "generator": np.array([s["generator"] for s in shards for _ in range(s["count"])], dtype=object),
                "seed": np.array([s["seed"] for s in shards for _ in range(s["count"])], np.uint64),
                "shard": np.array([s["index"] for s in shards for _ in range(s["count"])], np.int64)}

    def draw(self, class_id: int, n: int, rng: np.random.Generator, replace: bool | None = None) -> np.ndarray:
        """``n`` images of a class drawn with ``rng``, reading only the drawn rows from disk.

        Args:
            class_id: The class.
            n: How many.
            rng: The caller's generator (every draw comes from it, so seeds reproduce).
            replace: ``None`` (default): without replacement while ``n <= available`` (a random
                permutation), beyond that every image once plus the remainder with replacement. ``True``:
                all with replacement. ``False``: never (``n > available`` is an error).

        Raises:
            ValueError: ``n > 0`` from an empty class, or ``replace=False`` with too few images.
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy Generator (np.random.default_rng(seed)); got {type(rng).__name__}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int; got {n!r}")
        shards = self._class(class_id)["shards"]
        sizes = np.array([s["count"] for s in shards], np.int64)
        available = int(sizes.sum())
        if n == 0:
            return np.zeros((0, *self._shapes), np.uint8)
        if available == 0:
            raise ValueError(f"class {class_id} has no images in bank {self.key}; fill it (per_class > 0 and a "
                             "filter that accepts some samples) or keep this class's ratio at 0")
        if replace is False and n > available:
            raise ValueError(f"cannot draw {n} images of class {class_id} without replacement: the bank holds "
                             f"{available}; pass replace=None to allow repeats beyond that")
        if replace:
            idx = rng.integers(0, available, n)
        elif n <= available:
            idx = rng.choice(available, n, replace=False) if n < available else rng.permutation(available)
        else:
            idx = np.concatenate([rng.permutation(available), rng.integers(0, available, n - available)])
        return self._gather(class_id, idx, sizes)

    def _gather(self, class_id: int, idx: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (global within the class) from memory-mapped shards, in the order of ``idx``."""
        out = np.empty((len(idx), *self._shapes), np.uint8)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        which = np.searchsorted(starts, idx, side="right") - 1
        for s, shard in enumerate(self._class(class_id)["shards"]):
            pos = np.flatnonzero(which == s)
            if len(pos) == 0:
                continue
            local = idx[pos] - starts[s]
            order = np.argsort(local, kind="stable")  # sorted reads touch the file sequentially
            mm = np.load(self.path / shard["file"], mmap_mode="r")
            out[pos[order]] = mm[local[order]]
        return out

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"SyntheticBank({str(self.path)!r}, {state}, counts={self.counts().tolist()})"
