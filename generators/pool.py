"""The generator pool: several fitted generators, placed over the visible devices, that fill a bank.

Which generator serves which class is an explicit ``assignment`` (default: all serve all; a class served
by several alternates shards between them). Models are placed round-robin over the visible GPUs
(``cuda:0..n-1``), or on the CPU when there is none. :meth:`GeneratorPool.fill_bank` samples every
class's quota in shards, filters them, and writes them into a :class:`~generators.bank.SyntheticBank`.
Each shard draws from its own ``torch.Generator`` seeded from ``(seed, class, shard)``, so the bytes of a
shard do not depend on which shards were filled before it: a resumed fill ends byte-identical to an
uninterrupted one, and a corrupt shard is refilled with exactly its original contents.
"""
from __future__ import annotations

import concurrent.futures as futures
import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import re
import threading
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from tailmix.io.atomic import file_lock
from tailmix.generators.bank import (BANK_FORMAT, MANIFEST_FILE, SHARD_RE, BankError, SyntheticBank, atomic_save_npy,
                             atomic_write_json, bank_key, canonical_json, conf_name, library_versions,
                             normalize_per_class, shard_name, summarize_class)
from tailmix.generators.filter import NoFilter

SEED_SCHEME = 1  # bump if derive_seed changes: it is hashed into bank keys


def derive_seed(*parts) -> int:
    """A 63-bit seed from any JSON-able parts (e.g. ``(seed, class, shard)``), stable across machines."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_devices(devices: str | torch.device | Sequence[str | torch.device] = "auto") -> list[torch.device]:
    """The devices to place generators on.

    Args:
        devices: ``"auto"``: every visible GPU (``cuda:0..n-1``), else ``[cpu]``; an empty
            ``CUDA_VISIBLE_DEVICES`` means no GPU even if torch initialised CUDA earlier. A device name or
            ``torch.device``: just that one. A sequence: those devices, as given (not probed, so a list
            can name devices ahead of time).
    """
    if isinstance(devices, str) and devices.strip().lower() == "auto":
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        if hidden is not None and hidden.strip() in ("", "-1"):
            return [torch.device("cpu")]
        from tailmix.classifiers.device import visible_devices

        gpus = [d for d in visible_devices() if d.type == "cuda"]
        return gpus or [torch.device("cpu")]
    if isinstance(devices, (str, torch.device)):
        devices = [devices]
    try:
        out = [d if isinstance(d, torch.device) else torch.device(d) for d in devices]
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"cannot parse devices {devices!r} ({err}); use 'auto', 'cpu', 'cuda:0' or a list of "
                         "them") from None
    if not out:
        raise ValueError("devices is empty; pass 'auto', 'cpu' or a non-empty list such as ['cuda:0', 'cuda:1']")
    out = [torch.device("cuda", 0) if d.type == "cuda" and d.index is None else d for d in out]
    if len(set(out)) != len(out):
        raise ValueError(f"devices lists a device twice ({[str(d) for d in out]}); name each device once")
    return out


class GeneratorPool:
    """Fitted generators, their class assignment and their device placement.

    Args:
        generators: ``{generator id: Generator}``; the ids are recorded in the bank for every shard.
        assignment: ``{class_id: [generator ids]}``. ``None`` (default): every generator serves every
            class. When given, a class missing from it has no generator and must get a zero quota.
        devices: ``"auto"`` (round-robin over visible GPUs, CPU without any), a device, or a list.
        replicate: Also put a copy of every generator on every other device, and spread each generator's shards
            over its copies (round-robin in the fill's order). A shard's images depend only on its seed, so the
            bank (key and bytes) is the one a single device fills; only the shards' recorded devices differ.
    """

    def __init__(self, generators: Mapping[str, object], *, assignment: Mapping[int, Sequence[str]] | None = None,
                 devices: str | torch.device | Sequence[str | torch.device] = "auto", replicate: bool = False) -> None:
        if not isinstance(generators, Mapping) or not generators:
            raise ValueError("generators must be a non-empty dict {id: Generator}, e.g. "
                             "{'ddpm': ClassConditionalDDPM(...)}")
        for name, gen in generators.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"generator ids must be non-empty strings; got {name!r}")
            missing = [m for m in ("fit", "sample", "config", "to") if not callable(getattr(gen, m, None))]
            if missing:
                raise ValueError(f"generator {name!r} ({type(gen).__name__}) lacks {missing}; pool members follow "
                                 "the generators.base.Generator interface")
        self.generators = dict(generators)
        self.assignment = self._check_assignment(assignment)
        self.devices = resolve_devices(devices)
        self._placement = {name: self.devices[i % len(self.devices)] for i, name in enumerate(self.generators)}
        for name, gen in self.generators.items():
            gen.to(self._placement[name])
        self.replicate = bool(replicate)
        self._replicas: dict[str, dict[torch.device, object]] = {}
        self._replicate(self.generators)

    def _replicate(self, names) -> None:
        """``{id: {device: generator}}``: the generator on its placement and, with ``replicate``, a copy of it on
        every other device (made again after ``fit``, so copies hold the fitted weights)."""
        for name in names:
            gen = self.generators[name]
            self._replicas[name] = {self._placement[name]: gen}
            if self.replicate:
                for dev in self.devices:
                    if dev not in self._replicas[name]:
                        self._replicas[name][dev] = copy.deepcopy(gen).to(dev)

    def shard_devices(self, name: str) -> list[torch.device]:
        """The devices that sample ``name``'s shards: its placement first, then its copies' (``replicate``)."""
        return list(self._replicas[name])

    def _check_assignment(self, assignment) -> dict[int, tuple[str, ...]] | None:
        if assignment is None:
            return None
        if not isinstance(assignment, Mapping):
            raise ValueError("assignment must be a dict {class_id: [generator ids]}; got "
                             f"{type(assignment).__name__}")
        out = {}
        for c, names in assignment.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                raise ValueError(f"assignment keys must be class ids (ints >= 0); got {c!r}")
            names = (names,) if isinstance(names, str) else tuple(names)
            unknown = [n for n in names if n not in self.generators]
            if not names or unknown:
                raise ValueError(f"assignment for class {c} names {list(names)}; each class needs at least one "
                                 f"generator id from {list(self.generators)}")
            out[int(c)] = names
        return out

    @property
    def placement(self) -> dict[str, str]:
        """``{generator id: device}`` as strings (e.g. ``{'ddpm': 'cuda:0', 'lora': 'cuda:1'}``)."""
        return {name: str(dev) for name, dev in self._placement.items()}

    def serving(self, num_classes: int) -> dict[int, tuple[str, ...]]:
        """Generator ids serving each class ``0..num_classes-1`` (empty tuple: none)."""
        if self.assignment is None:
            return {c: tuple(self.generators) for c in range(num_classes)}
        extra = [c for c in self.assignment if c >= num_classes]
        if extra:
            raise ValueError(f"assignment names classes {extra}, but the dataset has classes 0..{num_classes - 1}")
        return {c: self.assignment.get(c, ()) for c in range(num_classes)}

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, dataset, *, seed: int = 0, progress: bool = False) -> GeneratorPool:
        """Fit every generator not fitted yet (loaded ones are kept), one thread per device.

        Each generator's ``torch.Generator`` is seeded from ``(seed, "fit", id)``, so adding a generator to
        the pool does not change the others.
        """
        todo = [n for n, g in self.generators.items() if not getattr(g, "fitted", False)]

        def fit_one(name: str) -> None:
            g = torch.Generator().manual_seed(derive_seed(int(seed), "fit", name))
            with _on_device(self._placement[name]):
                self.generators[name].fit(dataset, generator=g, progress=progress)

        self._run_by_device([(self._placement[n], n) for n in todo], fit_one)
        self._replicate(todo)
        for name in self.generators:
            self._check_fitted(name, dataset)
        return self

    def _check_fitted(self, name: str, dataset) -> None:
        gen = self.generators[name]
        if not getattr(gen, "fitted", True):
            raise ValueError(f"generator {name!r} is not fitted; call pool.fit(dataset) first")
        shape = getattr(gen, "image_shape", None)
        if shape is not None and tuple(shape) != tuple(dataset.image_shape):
            raise ValueError(f"generator {name!r} makes images shaped {tuple(shape)} but the dataset's are "
                             f"{tuple(dataset.image_shape)}; fit it on this dataset")
        nc = getattr(gen, "num_classes", None)
        if nc is not None and int(nc) != dataset.num_classes:
            raise ValueError(f"generator {name!r} was fitted on {nc} classes, the dataset has {dataset.num_classes}")
        fitted_on = (gen.config().get("fit") or {}).get("dataset") if hasattr(gen, "config") else None
        if fitted_on is not None and fitted_on != dataset.fingerprint():
            warnings.warn(f"generator {name!r} was fitted on another dataset (fingerprint {fitted_on[:12]}...) than "
                          f"{dataset.name!r}; its samples may not match this data", stacklevel=3)

    # -- filling the bank ---------------------------------------------------------------------------
    def fill_bank(self, dataset, root: str | Path, *, per_class: int | Sequence[int], filter=None, seed: int = 0,
                  shard_size: int = 256, batch_size: int = 64, progress: bool = True) -> SyntheticBank:
        """Generate, filter and store ``per_class`` images of every class in a bank under ``root``.

        The bank folder is ``root/<key>``, the key hashing the dataset, the generator configs, the
        assignment, the filter, ``seed``, the quotas, ``shard_size`` and ``batch_size``. An existing bank
        with that key is verified shard by shard: good shards are kept, missing or corrupt ones are
        (re)filled, so an interrupted fill resumes and ends byte-identical to an uninterrupted one.

        Args:
            dataset: The ``LongTailDataset`` the generators were fitted on.
            root: Folder holding banks.
            per_class: Images to keep per class: one int, or one per class.
            filter: A :class:`~generators.filter.ClassifierFilter`, or ``None`` to keep every sample. A
                filter may keep fewer than the quota (its try limit); the bank records how many.
            seed: Fill seed; shard ``s`` of class ``c`` draws from ``torch.Generator`` seeded from
                ``(seed, c, s)``.
            shard_size: Images per shard file (also the unit of resumption).
            batch_size: Largest batch asked of a generator (its memory bound).
            progress: Show a tqdm bar over images.

        Returns:
            The complete bank.
        """
        return self._fill_bank(dataset, root, per_class=per_class, filter=filter, seed=seed, shard_size=shard_size,
                               batch_size=batch_size, progress=progress, runner=self._fill)

    def _fill_bank(self, dataset, root: str | Path, *, per_class, filter, seed: int, shard_size: int,
                   batch_size: int, progress: bool, runner) -> SyntheticBank:
        """:meth:`fill_bank`, with ``runner(folder, manifest, plan, filt, seed, shape, batch_size, progress)``
        making the missing shards (:meth:`_fill` here; ``generators.ray_pool`` runs them on Ray actors)."""
        c_total = dataset.num_classes
        shape = tuple(int(v) for v in dataset.image_shape)
        quotas = normalize_per_class(per_class, c_total)
        for label, value in (("shard_size", shard_size), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{label} must be a positive int; got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int; got {seed!r}")
        filt = NoFilter() if filter is None else filter
        if not callable(getattr(filt, "fill", None)) or not callable(getattr(filt, "config", None)):
            raise ValueError(f"filter must be None, NoFilter or a ClassifierFilter; got {type(filter).__name__}")
        serving = self.serving(c_total)
        orphans = [c for c in range(c_total) if quotas[c] and not serving[c]]
        if orphans:
            raise ValueError(f"classes {orphans} have a quota but no generator in the assignment; add them to "
                             "the assignment or give them per_class 0")
        used = sorted({n for c in range(c_total) if quotas[c] for n in serving[c]})
        for name in used:
            self._check_fitted(name, dataset)
        sampling = {"assignment": {str(c): list(serving[c]) for c in range(c_total) if quotas[c]},
                    "shard_size": int(shard_size), "batch_size": int(batch_size), "seed_scheme": SEED_SCHEME}
        gen_configs = {n: self.generators[n].config() for n in used}
        filter_config = filt.config()
        key = bank_key(dataset.fingerprint(), gen_configs, filter_config, int(seed), quotas, sampling=sampling)
        folder = Path(root) / key
        fresh = {"format": BANK_FORMAT, "key": key, "dataset_fingerprint": dataset.fingerprint(),
                 "dataset_name": dataset.name, "class_names": list(dataset.class_names),
                 "generator_configs": gen_configs, "filter_config": filter_config, "seed": int(seed),
                 "image_shape": list(shape), "num_classes": c_total, "per_class": quotas, "sampling": sampling,
                 "classes": {str(c): {"quota": quotas[c], "num_shards": math.ceil(quotas[c] / shard_size),
                                      "shards": []} for c in range(c_total)},
                 "complete": False, "versions": library_versions()}
        for entry in fresh["classes"].values():
            summarize_class(entry)
        if _read_only(folder):  # a shared, read-only cache: a complete bank is read without its lock file
            return _open_read_only(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with _fill_lock(folder):
            manifest = self._resume(folder, fresh)
            done = {(int(c), s["index"]) for c, e in manifest["classes"].items() for s in e["shards"]}
            plan = []
            turns: dict[str, int] = defaultdict(int)  # shards handed to each generator so far (its copies rotate)
            for c in range(c_total):
                names = serving[c]
                for s in range(manifest["classes"][str(c)]["num_shards"]):
                    if (c, s) not in done:
                        q = min(shard_size, quotas[c] - s * shard_size)
                        name = names[s % len(names)]
                        devs = self.shard_devices(name)
                        plan.append((devs[turns[name] % len(devs)], (c, s, q, name)))
                        turns[name] += 1
            if plan or not manifest["complete"]:
                runner(folder, manifest, plan, filt, int(seed), shape, int(batch_size), progress)
                manifest["complete"] = True
                atomic_write_json(folder / MANIFEST_FILE, manifest)
        return SyntheticBank.open(folder, verify=False)

    def _resume(self, folder: Path, fresh: dict) -> dict:
        """The manifest to continue from: the existing one minus bad shards, or ``fresh``."""
        for tmp in folder.glob(".*.tmp"):  # leftovers of writes a crash interrupted (we hold the lock)
            tmp.unlink(missing_ok=True)
        if not (folder / MANIFEST_FILE).exists():
            atomic_write_json(folder / MANIFEST_FILE, fresh)
            return fresh
        try:
            manifest = SyntheticBank.read_manifest(folder)
        except BankError as err:
            reason = re.sub(r"[;.]?\s*(?:[Dd]elete \S+ and )?run fill_bank again.*$", "", str(err))
            warnings.warn(f"discarding the unusable bank in {folder} and filling it anew: {reason}", stacklevel=3)
            for f in folder.iterdir():
                if SHARD_RE.match(f.name):
                    f.unlink()
            atomic_write_json(folder / MANIFEST_FILE, fresh)
            return fresh
        # the key checked out, so every input matches; only shards and bookkeeping can differ
        bad = SyntheticBank(folder, manifest).problems()
        if bad:
            warnings.warn(f"bank {folder.name}: refilling {len(bad)} bad shard(s): "
                          + "; ".join(f"class {c} shard {s} ({why})" for c, s, why in bad[:5]), stacklevel=3)
            drop = {(c, s) for c, s, _ in bad}
            for c, entry in manifest["classes"].items():
                entry["shards"] = [s for s in entry["shards"] if (int(c), s["index"]) not in drop]
                summarize_class(entry)
            manifest["complete"] = False
        if manifest.get("versions") != fresh["versions"]:
            warnings.warn(f"bank {folder.name} was started with {manifest.get('versions')}, now running "
                          f"{fresh['versions']}; resumed shards may differ in style", stacklevel=3)
        atomic_write_json(folder / MANIFEST_FILE, manifest)
        return manifest

    def _fill(self, folder: Path, manifest: dict, plan: list, filt, seed: int, shape: tuple, batch_size: int,
              progress: bool) -> None:
        from tqdm.auto import tqdm

        lock = threading.Lock()
        bar = tqdm(total=sum(item[2] for _, item in plan), unit="img", desc=f"bank {folder.name}",
                   disable=not progress)

        where = {item[:2]: dev for dev, item in plan}  # (class, shard) -> the device (copy) that samples it

        def fill_shard(item) -> None:
            c, s, quota, name = item
            dev = where[(c, s)]
            shard = make_shard(self._replicas[name][dev], filt, c, s, quota, name=name, seed=seed, shape=shape,
                               batch_size=batch_size)
            entry = write_shard(folder, shard, device=str(dev), filtered=filt.config() is not None)
            with lock:
                record_shard(folder, manifest, c, entry)
                bar.update(quota)

        try:
            self._run_by_device(plan, fill_shard)
        finally:
            bar.close()

    @staticmethod
    def _run_by_device(work: list[tuple[torch.device, object]], fn) -> None:
        """Run ``fn(item)`` for every item, one worker thread per device (inline for a single device).

        The first error stops every worker after its current item and is re-raised.
        """
        groups: dict[torch.device, list] = defaultdict(list)
        for dev, item in work:
            groups[dev].append(item)
        if len(groups) <= 1:
            for dev, items in groups.items():
                with _on_device(dev):
                    for item in items:
                        fn(item)
            return
        stop = threading.Event()

        def worker(dev: torch.device, items: list) -> None:
            with _on_device(dev):
                for item in items:
                    if stop.is_set():
                        return
                    try:
                        fn(item)
                    except BaseException:
                        stop.set()
                        raise

        with futures.ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="tailmix-pool") as ex:
            jobs = [ex.submit(worker, dev, items) for dev, items in groups.items()]
            futures.wait(jobs, return_when=futures.FIRST_EXCEPTION)
            stop.set()
        for job in jobs:
            job.result()  # re-raises the first failure

    # -- persistence --------------------------------------------------------------------------------
    def save(self, root: str | Path) -> Path:
        """Save every generator into ``root/<id>`` (reload with :meth:`load`)."""
        root = Path(root)
        for name, gen in self.generators.items():
            gen.save(root / name)
        return root

    @classmethod
    def load(cls, folders: Mapping[str, str | Path], *, assignment: Mapping[int, Sequence[str]] | None = None,
             devices: str | torch.device | Sequence[str | torch.device] = "auto") -> GeneratorPool:
        """Load saved generators ``{id: folder}`` (``generators.load_generator``) onto the pool's devices."""
        from tailmix.generators.base import load_generator

        devs = resolve_devices(devices)
        gens = {name: load_generator(path, device=devs[i % len(devs)])
                for i, (name, path) in enumerate(folders.items())}
        return cls(gens, assignment=assignment, devices=devs)

    def __repr__(self) -> str:
        return f"GeneratorPool({self.placement})"


@dataclasses.dataclass
class ShardResult:
    """One sampled and filtered shard, before it is written (what a remote worker sends back)."""

    class_id: int
    index: int
    quota: int
    generator: str
    seed: int
    images: np.ndarray
    confidences: np.ndarray
    tried: int
    accepted: int
    tries: int


def make_shard(gen, filt, class_id: int, shard: int, quota: int, *, name: str, seed: int, shape: tuple,
               batch_size: int) -> ShardResult:
    """Sample and filter shard ``shard`` of class ``class_id`` with generator ``gen`` (no file I/O).

    All randomness comes from a ``torch.Generator`` seeded from ``(seed, class_id, shard)``, so the result
    does not depend on which process or thread runs it (on the same device type and torch thread count).
    """
    shard_seed = derive_seed(seed, class_id, shard)
    result = filt.fill(_sampler(gen, class_id), class_id, quota,
                       generator=torch.Generator().manual_seed(shard_seed), batch_size=batch_size)
    images = np.asarray(result.images)
    if len(images) == 0:
        images = np.zeros((0, *shape), np.uint8)
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise ValueError(f"generator {name!r} returned {images.dtype} images shaped {images.shape[1:]} for "
                         f"class {class_id}; the bank needs uint8 {shape} like the dataset")
    return ShardResult(class_id=int(class_id), index=int(shard), quota=int(quota), generator=name, seed=shard_seed,
                       images=images, confidences=np.asarray(result.confidences, np.float32),
                       tried=int(result.candidates_tried), accepted=int(result.accepted), tries=int(result.tries))


def write_shard(folder: Path, shard: ShardResult, *, device: str, filtered: bool) -> dict:
    """Write a shard's image and confidence files atomically; returns its manifest entry."""
    c, s = shard.class_id, shard.index
    conf = shard.confidences
    return {"index": s, "file": shard_name(c, s), "conf_file": conf_name(c, s),
            "sha256": atomic_save_npy(folder / shard_name(c, s), shard.images),
            "conf_sha256": atomic_save_npy(folder / conf_name(c, s), conf),
            "count": int(len(shard.images)), "quota": shard.quota, "generator": shard.generator, "seed": shard.seed,
            "device": device, "tried": shard.tried, "accepted": shard.accepted, "tries": shard.tries,
            "confidence_sum": _finite_or_none(conf.astype(np.float64).sum()) if filtered else None}


def _finite_or_none(x) -> float | None:
    """JSON has no NaN: a filter without confidences (a near-copy filter alone) records null."""
    x = float(x)
    return x if np.isfinite(x) else None


def record_shard(folder: Path, manifest: dict, class_id: int, entry: dict) -> None:
    """Add a written shard of ``class_id`` to ``manifest`` and rewrite it, so the shard counts as done.

    The caller serialises calls (one manifest, several writers).
    """
    cls_entry = manifest["classes"][str(int(class_id))]
    cls_entry["shards"] = sorted(cls_entry["shards"] + [entry], key=lambda e: e["index"])
    summarize_class(cls_entry)
    atomic_write_json(folder / MANIFEST_FILE, manifest)


def _sampler(gen, class_id: int):
    """``sample_fn(n, generator)`` for a filter: no gradients, mixed precision on CUDA as the generator's
    ``precision`` says (``auto`` without one)."""
    from tailmix.classifiers.device import precision_autocast

    dev = torch.device(getattr(gen, "device", "cpu"))
    precision = getattr(gen, "precision", "auto")

    def sample(n: int, generator: torch.Generator) -> np.ndarray:
        # a device list may name GPUs this process cannot see (placement only): precision_autocast is a null
        # context there and on the CPU
        with torch.no_grad(), precision_autocast(dev, precision):
            return np.asarray(gen.sample(class_id, n, generator=generator))

    return sample


def _on_device(dev: torch.device):
    """Make ``dev`` the current CUDA device in this thread (no-op elsewhere)."""
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.device(dev)
    return contextlib.nullcontext()


def _read_only(folder: Path) -> bool:
    """Whether ``folder`` exists but its fill lock cannot be taken (the folder or its lock file is read-only)."""
    if not folder.is_dir():
        return False
    try:  # what file_lock does first; a probe, since os.access misses read-only mounts and says yes to root
        with open(folder / ".lock", "a"):
            return False
    except OSError:
        return True


def _open_read_only(folder: Path) -> SyntheticBank:
    """The complete bank in a read-only ``folder`` (verified shard by shard), or a :class:`BankError` saying why not."""
    try:
        return SyntheticBank.open(folder, verify=True)
    except BankError as err:
        raise BankError(f"{err} (the bank folder {folder} is read-only, so it cannot be filled or repaired here; "
                        "make it writable, or point the cache elsewhere)") from None


@contextlib.contextmanager
def _fill_lock(folder: Path, *, wait_s: float = 3600.0, poll_s: float = 0.5):
    """Hold the bank's fill lock, waiting while another process has it.

    Two processes that need the same bank (two benchmark runs started together) must not both write it;
    the second waits, then resumes from the first one's manifest and finds the bank complete. A holder that
    keeps it past ``wait_s`` seconds is reported instead of waited on forever.
    """
    held = contextlib.ExitStack()
    try:  # only the wait is translated: a TimeoutError from the fill itself must pass through as it is
        held.enter_context(file_lock(folder / ".lock", wait_s=wait_s, poll_s=poll_s, what="filling this bank"))
    except TimeoutError:
        raise BankError(f"another process has been filling {folder} for over {wait_s:.0f} s; wait for it, or "
                        "stop that process and run again (the fill resumes)") from None
    with held:
        yield
