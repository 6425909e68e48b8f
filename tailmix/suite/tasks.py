"""The benchmark suite's tasks: frozen recipes registered as gymnasium and PettingZoo ids.

A task fixes everything a number depends on: the dataset and its split, the synthetic sources with their bank
recipes, the draw, the reward (the fixed val split or cross-validated folds), the head and loss, the episode
length and the largest ratio. Each task is registered under two ids, built by the same recipe:

- ``tailmix/<Name>-v<version>``: the PettingZoo parallel env (one agent per class),
- ``tailmix/<Name>Central-v<version>``: the gymnasium centralised env.

Keyword arguments given to ``make`` override the recipe's env settings (e.g. ``eval_split="test"`` to score a
policy), but then the result is no longer the task's: :func:`task_env_kwargs` records what was overridden in
``env.suite_task["overrides"]`` and the protocol runner refuses overrides that change the task.

Assets are built once into the cache (``cache_dir``, default ``$TAILMIX_CACHE_DIR`` or ``~/.cache/tailmix``):
the generator, its bank and the encoder, each keyed by a fingerprint; a task whose dataset file is missing fails
in one line before any work (say where the file goes). Bump a task's ``version`` whenever its recipe changes in
a way that can change a score: reference scores are stored per ``id`` (with version).

Add a task with :func:`register_task` (one call; the ids, the docs table and the runner derive from it).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

#: The env settings every suite task starts from: env v1's draws and pool observation, 10 steps, ratio <= 8, and a
#: head learning rate decayed over the episode (so what a class gets early counts, and schedules mean something).
BASE_ENV = {"draw": "unique", "pool_obs": True, "max_steps": 10, "max_ratio": 8.0, "empty_pool": "zero",
            "lr_schedule": "cosine"}


@dataclass(frozen=True)
class Task:
    """A frozen task recipe.

    Attributes:
        name: CamelCase name; the ids are ``tailmix/<name>-v<version>`` and ``tailmix/<name>Central-v<version>``.
        version: Bumped whenever a change can change a score.
        summary: One line: what the task asks of a sampler.
        dataset: ``{"kind": "digits-lt"}`` or ``{"kind": "medmnist", "flag": ..., "long_tail": {...} | None}``.
        sources: Source recipes in action order: ``"oracle"`` (the real images the long-tail builder left out: a
            perfect generator), ``"oracle+corrupt"`` (that, with :data:`envs.oracle.KNOWN_ANSWER_CORRUPTION`),
            ``"augment"``, ``"gaussian"``, ``"ddpm"`` / ``"lora"`` (a filtered bank of the pipeline's ``preset``).
        env: Env keyword arguments on top of :data:`BASE_ENV`.
        bank: Pipeline settings of the bank sources (``preset``, ``generator_steps``, ``per_class``).
        data_file: The file a task needs in ``$TAILMIX_DATA_DIR`` (``None``: none).
        card: Free text for the task card (what it tests, known limits).
    """

    name: str
    version: int
    summary: str
    dataset: dict
    sources: tuple[str, ...]
    env: dict = field(default_factory=dict)
    bank: dict = field(default_factory=dict)
    data_file: str | None = None
    card: str = ""

    @property
    def id(self) -> str:
        """The PettingZoo id."""
        return f"tailmix/{self.name}-v{self.version}"

    @property
    def central_id(self) -> str:
        """The gymnasium id."""
        return f"tailmix/{self.name}Central-v{self.version}"

    @property
    def env_settings(self) -> dict:
        """:data:`BASE_ENV` with the task's own settings on top (no dataset, no sources)."""
        return {**BASE_ENV, **self.env}

    def recipe(self) -> dict:
        """Everything that defines the task, as plain data (what :meth:`fingerprint` hashes)."""
        return {"name": self.name, "version": self.version, "dataset": self.dataset, "sources": list(self.sources),
                "env": self.env_settings, "bank": self.bank}

    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of :meth:`recipe`: changes whenever the recipe does."""
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` and register its two ids (a second call with the same task is a no-op)."""
    old = TASKS.get(task.name)
    if old is not None and old != task:
        raise ValueError(f"a different task named {task.name!r} is registered; bump its version or rename it")
    TASKS[task.name] = task
    _register_ids(task)
    return task


def get_task(name_or_id: str) -> Task:
    """A task by its name (``KnownAnswer``), either id, or a lowercase/hyphenated alias (``known-answer``)."""
    key = str(name_or_id).removeprefix("tailmix/")
    base, _, version = key.rpartition("-v")
    if base and version.isdigit():
        key = base.removesuffix("Central")
    norm = key.replace("-", "").replace("_", "").lower()
    for task in TASKS.values():
        if norm == task.name.lower() and (not version.isdigit() or not base or int(version) == task.version):
            return task
    raise ValueError(f"unknown suite task {name_or_id!r}; the tasks are {', '.join(t.id for t in TASKS.values())}")


def _register_ids(task: Task) -> None:
    import gymnasium

    if task.central_id not in gymnasium.registry:
        gymnasium.register(id=task.central_id, entry_point="tailmix.suite.tasks:central_env",
                           kwargs={"task": task.name})
    import pettingzoo

    if hasattr(pettingzoo, "register") and task.id not in pettingzoo.parallel_registry:
        pettingzoo.register("parallel", task.id, entry_point="tailmix.suite.tasks:parallel_env", kwargs={"task": task.name})


def data_dir(given: str | os.PathLike | None = None) -> Path | None:
    """Where the task's dataset files are: ``given``, else ``$TAILMIX_DATA_DIR`` (``None`` when neither is set)."""
    folder = given if given is not None else os.environ.get("TAILMIX_DATA_DIR")
    return Path(folder).expanduser() if folder else None


def check_data(task: Task, folder: str | os.PathLike | None = None) -> Path | None:
    """The task's data file, or a one-line ``FileNotFoundError`` before any work when it is missing."""
    if task.data_file is None:
        return None
    root = data_dir(folder)
    path = root / task.data_file if root is not None else None
    if path is None or not path.is_file():
        where = f"{root}" if root is not None else "no folder ($TAILMIX_DATA_DIR is not set)"
        raise FileNotFoundError(
            f"{task.id} needs the MedMNIST file {task.data_file} (28 px, official release) in {where}: put it in a "
            f"folder and set TAILMIX_DATA_DIR to that folder (or pass data_dir=); `pip install medmnist` and "
            f"`python -m medmnist save --flag={task.data_file.removesuffix('.npz')}` fetch it where a network is "
            "available")
    return path


def load_task_dataset(task: Task, folder: str | os.PathLike | None = None):
    """The task's :class:`LongTailDataset` (long-tailed by the recipe)."""
    spec = task.dataset
    if spec["kind"] == "digits-lt":
        from tailmix.envs.datasets import load_digits_lt

        return load_digits_lt()
    if spec["kind"] == "medmnist":
        import numpy as np

        from tailmix.envs.datasets import load_medmnist
        from tailmix.envs.longtail import make_long_tail

        ds = load_medmnist(check_data(task, folder))
        lt = spec.get("long_tail")
        if lt:
            order = [int(c) for c in np.argsort(-ds.train_counts, kind="stable")] if lt.get("order") == "count" else None
            ds = make_long_tail(ds, lt["imbalance_ratio"], seed=lt.get("seed", 0), class_order=order)
        return ds
    raise ValueError(f"task {task.name}: unknown dataset kind {spec['kind']!r}")


def _cache_root(cache_dir) -> Path:
    from tailmix.envs.cache import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir else Path(default_cache_dir())


def build_sources(task: Task, dataset, cache_dir=None, *, progress: bool = True) -> list:
    """The task's sources in action order (bank sources are built once into the cache)."""
    from tailmix.envs.oracle import KNOWN_ANSWER_CORRUPTION, CorruptedSource, oracle_source

    out = []
    for spec in task.sources:
        if spec == "oracle":
            out.append(oracle_source(dataset))
        elif spec == "oracle+corrupt":
            out.append(CorruptedSource(oracle_source(dataset), dict(KNOWN_ANSWER_CORRUPTION)))
        elif spec in ("augment", "gaussian"):
            out.append(spec)
        elif spec in ("ddpm", "lora"):
            out.append(_bank_source(task, spec, dataset, cache_dir, progress))
        else:
            raise ValueError(f"task {task.name}: unknown source recipe {spec!r}")
    return out


def _bank_source(task: Task, kind: str, dataset, cache_dir, progress: bool):
    from tailmix import pipeline
    from tailmix.envs.sources import BankSource

    cfg = pipeline.Settings(dataset=dataset.name, seed=0, generator=kind, cache_dir=str(_cache_root(cache_dir)),
                            device="cpu", **task.bank)
    source = BankSource(pipeline.ensure_bank(cfg, dataset, progress=progress))
    source.name = kind
    return source


def task_env_kwargs(task: Task | str, *, cache_dir=None, data_dir=None, progress: bool = True, **overrides) -> dict:
    """The env keyword arguments of ``task`` (dataset and sources built), with ``overrides`` on top."""
    task = get_task(task) if isinstance(task, str) else task
    dataset = load_task_dataset(task, data_dir)  # its first step is check_data: one line before any work
    sources = build_sources(task, dataset, cache_dir, progress=progress)
    kw = dict(task.env_settings, dataset=dataset, cache_dir=str(_cache_root(cache_dir) / "encoders"))
    if len(sources) == 1:
        kw["source"] = sources[0]
    else:
        kw["sources"] = sources
    kw.update(overrides)
    return kw


class FidelityWarning(UserWarning):
    """The task's fast reward failed the suite's fidelity gate (``docs/protocol.md``, amendment 2)."""


def warn_if_unfaithful(task: Task, overrides: dict) -> None:
    """Warn when ``task``'s fast (feature-mode) reward failed the fidelity gate in the shipped reference scores."""
    if overrides.get("mode", task.env_settings.get("mode", "feature")) != "feature":
        return
    from tailmix.suite.reference import reference_scores

    try:
        entry = reference_scores(task.id)
    except ValueError:  # no reference rows yet
        return
    gate = entry.get("gate")
    if gate and entry.get("fingerprint") == task.fingerprint() and not gate["passed"]:
        warnings.warn(f"{task.id}: its fast (feature-mode) reward failed the fidelity gate (Spearman "
                      f"{gate['spearman_fast_vs_pixel_test']:+.2f} against a CNN trained on the same mix, "
                      f"{gate['seeds']} pixel seeds); read its rewards as the fast reward's, not a trained CNN's "
                      "(docs/suite.md), or pass mode='pixel'", FidelityWarning, stacklevel=4)


def _tag(env, task: Task, overrides: dict) -> None:
    env.suite_task = {"id": task.id, "central_id": task.central_id, "version": task.version,
                      "fingerprint": task.fingerprint(), "overrides": sorted(overrides)}
    warn_if_unfaithful(task, overrides)


def central_env(task: str, cache_dir=None, data_dir=None, **overrides):
    """The gymnasium env of ``task`` (entry point of ``tailmix/<Name>Central-v<k>``)."""
    from tailmix.envs.central import SyntheticRatioCentralEnv

    t = get_task(task)
    env = SyntheticRatioCentralEnv(**task_env_kwargs(t, cache_dir=cache_dir, data_dir=data_dir, **overrides))
    _tag(env, t, overrides)
    return env


def parallel_env(task: str, cache_dir=None, data_dir=None, **overrides):
    """The PettingZoo parallel env of ``task`` (entry point of ``tailmix/<Name>-v<k>``)."""
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    t = get_task(task)
    env = SyntheticRatioEnv(**task_env_kwargs(t, cache_dir=cache_dir, data_dir=data_dir, **overrides))
    _tag(env, t, overrides)
    return env


def make(task: str, *, central: bool = False, **kwargs):
    """``make("KnownAnswer")``: the task's PettingZoo env (``central=True``: its gymnasium env)."""
    t = get_task(task)
    return central_env(t.name, **kwargs) if central else parallel_env(t.name, **kwargs)


_LT10 = {"imbalance_ratio": 10.0, "order": "count", "seed": 0}
_BANK = {"preset": "small", "per_class": 128}

register_task(Task(
    name="KnownAnswer", version=0,
    summary="digits-LT with a perfect generator whose classes 4 and 6 are corrupted: the right answer is known",
    dataset={"kind": "digits-lt"}, sources=("oracle+corrupt",),
    env={"draw": "replace", "pool_obs": False, "lr_schedule": "constant"},  # the known-answer task of v0, unchanged
    card="The oracle source is the real digits the long-tail builder left out, with class 4 served 9s and class 6 "
         "served 5s. Filling every clean class and giving the corrupted ones nothing is a good policy that no "
         "ratio shared by all classes expresses (the hand-written oracle policy; not an upper bound)."))
register_task(Task(
    name="DigitsLTPool", version=0,
    summary="digits-LT, per class a ratio for a DDPM bank and one for augmentations",
    dataset={"kind": "digits-lt"}, sources=("ddpm", "augment"), bank=_BANK,
    card="The class-conditional DDPM (preset small, classifier-filtered bank of 128 per class) beside classic "
         "augmentations of the real images."))
register_task(Task(
    name="RetinaMNISTLTPool", version=0,
    summary="RetinaMNIST made long-tailed (imbalance 10); sources: the dropped real images and augmentations",
    dataset={"kind": "medmnist", "flag": "retinamnist", "long_tail": _LT10}, sources=("oracle", "augment"),
    env={"val_folds": 5}, data_file="retinamnist.npz",
    card="Train 368/65/206/116/36 (classes ordered by count); the oracle pools (the real train images the "
         "long-tail builder dropped: 118/63/0/78/30) are small and uneven, the augmentation pools large. The "
         "reward is on 5 cross-validated folds of train + val."))
register_task(Task(
    name="BreastMNISTLTPool", version=0,
    summary="BreastMNIST made long-tailed (39 malignant vs 399 benign); sources: dropped real images, augmentations",
    dataset={"kind": "medmnist", "flag": "breastmnist", "long_tail": _LT10}, sources=("oracle", "augment"),
    env={"val_folds": 5}, data_file="breastmnist.npz",
    card="Two classes; the tail class (malignant) keeps 39 train images and its oracle pool holds the 108 it "
         "dropped. The reward is on 5 cross-validated folds of train + val."))
register_task(Task(
    name="RetinaMNISTPool", version=0,
    summary="RetinaMNIST as released; sources: a DDPM bank and augmentations",
    dataset={"kind": "medmnist", "flag": "retinamnist", "long_tail": None}, sources=("ddpm", "augment"),
    env={"val_folds": 5}, bank={**_BANK, "generator_steps": 300}, data_file="retinamnist.npz",
    card="The released splits (train 486/128/206/194/66). Reference rows wait for a fast reward that ranks "
         "policies as a trained CNN does on this dataset (see the fidelity column)."))
register_task(Task(
    name="BreastMNISTPool", version=0,
    summary="BreastMNIST as released; sources: a DDPM bank and augmentations",
    dataset={"kind": "medmnist", "flag": "breastmnist", "long_tail": None}, sources=("ddpm", "augment"),
    env={"val_folds": 5}, bank={**_BANK, "generator_steps": 300}, data_file="breastmnist.npz",
    card="The released splits (train 147 malignant / 399 benign). Reference rows wait for the fidelity check."))
