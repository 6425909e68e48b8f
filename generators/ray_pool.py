"""Fill a synthetic bank with Ray actors: one generator worker per GPU (or per CPU slot without GPUs).

:func:`fill_bank_ray` is :meth:`generators.pool.GeneratorPool.fill_bank` with the shards made on a Ray cluster.
Everything but the shard sampling is the pool's own code: the bank key, the manifest, resumption and
verification (``GeneratorPool._fill_bank``), the per-shard seeding, sampling and filtering
(:func:`~generators.pool.make_shard`) and the writing (:func:`~generators.pool.write_shard`,
:func:`~generators.pool.record_shard`). Workers only sample and filter; they send each shard back and the
driver writes it, so the bank lives on the driver's disk and no shared file system is needed.

Because shard ``s`` of class ``c`` draws only from a ``torch.Generator`` seeded from ``(seed, c, s)``, the
bank is byte-identical to a single-process ``fill_bank`` with the same arguments, shard files and manifest
alike, when the workers compute like the single process does: the same device type and the same torch
thread count (``threads_per_worker``, default 1; CPU kernels can round differently with another thread
count). The manifest records where each shard was made (``"device"``: ``"cpu"`` or ``"cuda:<i>"``), so on
GPUs that field follows the worker, not the pool's placement.

Needs the ``ray`` extra: ``pip install -e ".[ray]"``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

RAY_EXTRA_HINT = 'install the ray extra: pip install -e ".[ray]" (or pip install "ray[rllib]>=2.40")'


def import_ray():
    """``import ray``, or a ``ModuleNotFoundError`` naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ModuleNotFoundError(f"Ray is not installed ({err}); {RAY_EXTRA_HINT}") from None
    return ray


class _ShardWorker:
    """A Ray actor holding copies of the generators and the filter; makes one shard per call."""

    def __init__(self, generators: dict, filt, threads: int, use_gpu: bool) -> None:
        import ray

        from tailmix.generators.filter import ReferenceScorer

        torch.set_num_threads(threads)
        if use_gpu and torch.cuda.is_available():
            # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU, so it is cuda:0 here
            self.device = torch.device("cuda", 0)
            self.label = f"cuda:{ray.get_gpu_ids()[0]}"
        else:
            self.device = torch.device("cpu")
            self.label = "cpu"
        for gen in generators.values():
            gen.to(self.device)
        self.generators = generators
        self.filt = filt
        scorer = getattr(filt, "scorer", None)
        if isinstance(scorer, ReferenceScorer) and scorer.device != self.device:
            scorer.device = self.device
            scorer.model.to(self.device)

    def make(self, item: tuple, seed: int, shape: tuple, batch_size: int):
        from tailmix.generators.pool import _on_device, make_shard

        c, s, quota, name = item
        with _on_device(self.device):
            shard = make_shard(self.generators[name], self.filt, c, s, quota, name=name, seed=seed, shape=shape,
                               batch_size=batch_size)
        return shard, self.label


@contextlib.contextmanager
def _on_cpu_for_pickling(generators: Mapping, filt):
    """Move CUDA-placed generators (and a reference scorer) to the CPU while they are serialised.

    Workers may have no GPU (or other ones); each moves its copy to its own device. The caller's objects
    go back to where they were afterwards.
    """
    from tailmix.generators.filter import ReferenceScorer

    moved = []
    for gen in generators.values():
        dev = torch.device(getattr(gen, "device", "cpu"))
        if dev.type != "cpu":
            gen.to(torch.device("cpu"))
            moved.append((gen, dev))
    scorer = getattr(filt, "scorer", None)
    scorer_dev = scorer.device if isinstance(scorer, ReferenceScorer) else None
    if scorer_dev is not None and scorer_dev.type != "cpu":
        scorer.model.to("cpu")
    try:
        yield
    finally:
        for gen, dev in moved:
            gen.to(dev)
        if scorer_dev is not None and scorer_dev.type != "cpu":
            scorer.model.to(scorer_dev)


def _resources(ray, use_gpu: bool | None, num_workers: int | None, threads_per_worker: int) -> tuple[bool, int]:
    """Whether workers take a GPU each, and how many workers the cluster can run at once."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
    if use_gpu is None:
        use_gpu = gpus > 0
    if use_gpu and gpus == 0:
        raise ValueError("use_gpu=True but the Ray cluster has no GPU; pass use_gpu=None (auto) or False, or "
                         "start Ray on GPU machines")
    slots = gpus if use_gpu else cpus // threads_per_worker
    if num_workers is None:
        if slots < 1:
            raise ValueError(f"the Ray cluster has {cpus} CPUs, fewer than threads_per_worker={threads_per_worker}; "
                             "lower threads_per_worker or add CPUs")
        num_workers = slots
    return bool(use_gpu), int(num_workers)


def fill_bank_ray(pool_or_generators, dataset, root: str | Path, *, per_class: int | Sequence[int], filter=None,
                  seed: int = 0, num_workers: int | None = None, shard_size: int = 256, batch_size: int = 64,
                  assignment: Mapping[int, Sequence[str]] | None = None, use_gpu: bool | None = None,
                  threads_per_worker: int = 1, max_in_flight: int = 2, address: str | None = None,
                  progress: bool = True):
    """Generate, filter and store ``per_class`` images per class in a bank under ``root``, on Ray actors.

    Same bank (key, folder, shard files and manifest) as ``GeneratorPool.fill_bank`` with the same arguments;
    an existing bank is verified and only its missing or corrupt shards are made again.

    Args:
        pool_or_generators: A fitted :class:`~generators.pool.GeneratorPool`, or ``{id: fitted Generator}``
            (wrapped in a pool on the CPU with ``assignment``). Workers get pickled copies.
        dataset: The ``LongTailDataset`` the generators were fitted on.
        root: Folder holding banks (on the driver).
        per_class: Images to keep per class: one int, or one per class.
        filter: A ``ClassifierFilter``, or ``None`` to keep every sample.
        seed: Fill seed (see ``GeneratorPool.fill_bank``).
        num_workers: Actors to start (``None``: one per GPU in the cluster, or one per ``threads_per_worker``
            CPUs when it has none); never more than there are shards to make.
        shard_size: Images per shard file (also the unit of work sent to a worker).
        batch_size: Largest batch asked of a generator.
        assignment: ``{class_id: [generator ids]}`` when ``pool_or_generators`` is a dict (default: all
            serve all); a pool brings its own.
        use_gpu: ``None`` (default): a GPU per worker when the cluster has GPUs. ``True``: require them.
            ``False``: CPU workers only.
        threads_per_worker: Torch threads (and CPUs reserved) per CPU worker; keep it equal to the single
            process's ``torch.get_num_threads()`` where byte-identity with a single-process fill matters.
        max_in_flight: Shards queued per worker at once (2 keeps a worker busy while the driver writes).
        address: Ray address to connect to when Ray is not initialised yet (``None``: ``RAY_ADDRESS`` or a
            new local instance); an initialised Ray is used as it is.
        progress: Show a tqdm bar over images.

    Returns:
        The complete :class:`~generators.bank.SyntheticBank`.
    """
    from tailmix.generators.pool import GeneratorPool

    ray = import_ray()
    if isinstance(pool_or_generators, GeneratorPool):
        if assignment is not None:
            raise ValueError("assignment is given twice: the pool has its own; pass a dict of generators to set "
                             "one here, or build the pool with GeneratorPool(..., assignment=...)")
        pool = pool_or_generators
    elif isinstance(pool_or_generators, Mapping):
        pool = GeneratorPool(pool_or_generators, assignment=assignment, devices="cpu")
    else:
        raise ValueError(f"pool_or_generators must be a GeneratorPool or a dict {{id: Generator}}; got "
                         f"{type(pool_or_generators).__name__}")
    for label, value in (("threads_per_worker", threads_per_worker), ("max_in_flight", max_in_flight)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int; got {value!r}")
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 1):
        raise ValueError(f"num_workers must be a positive int or None (one per GPU / CPU slot); got {num_workers!r}")

    def runner(folder: Path, manifest: dict, plan: list, filt, seed_: int, shape: tuple, batch_size_: int,
               progress_: bool) -> None:
        if not plan:
            return
        if not ray.is_initialized():
            ray.init(address=address)
        gpu, workers = _resources(ray, use_gpu, num_workers, threads_per_worker)
        _run_on_actors(ray, pool, folder, manifest, [item for _, item in plan], filt, seed_, shape, batch_size_,
                       progress_, use_gpu=gpu, num_workers=min(workers, len(plan)), threads=threads_per_worker,
                       max_in_flight=max_in_flight)

    return pool._fill_bank(dataset, root, per_class=per_class, filter=filter, seed=seed, shard_size=shard_size,
                           batch_size=batch_size, progress=progress, runner=runner)


def _run_on_actors(ray, pool, folder: Path, manifest: dict, items: list, filt, seed: int, shape: tuple,
                   batch_size: int, progress: bool, *, use_gpu: bool, num_workers: int, threads: int,
                   max_in_flight: int) -> None:
    """Make ``items`` (``(class, shard, quota, generator id)``) on actors; the driver writes each result."""
    from tqdm.auto import tqdm

    from tailmix.generators.pool import record_shard, write_shard

    used = sorted({item[3] for item in items})
    gens = {name: pool.generators[name] for name in used}
    with _on_cpu_for_pickling(gens, filt):
        gens_ref, filt_ref = ray.put(gens), ray.put(filt)
    worker_cls = ray.remote(_ShardWorker)
    opts = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": threads}
    actors = [worker_cls.options(**opts).remote(gens_ref, filt_ref, threads, use_gpu) for _ in range(num_workers)]
    filtered = filt.config() is not None
    queue = list(reversed(items))  # pop() hands out the plan's order
    pending: dict = {}  # object ref -> actor
    bar = tqdm(total=sum(item[2] for item in items), unit="img", desc=f"bank {folder.name} (ray)",
               disable=not progress)

    def submit(actor) -> None:
        if queue:
            item = queue.pop()
            pending[actor.make.remote(item, seed, shape, batch_size)] = actor

    try:
        for _ in range(max_in_flight):
            for actor in actors:
                submit(actor)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done)
            shard, device = ray.get(done)  # a worker's error re-raises here (as its own type)
            entry = write_shard(folder, shard, device=device, filtered=filtered)
            record_shard(folder, manifest, shard.class_id, entry)
            bar.update(shard.quota)
            submit(actor)
    finally:
        bar.close()
        for actor in actors:  # also drops shards still queued after an error
            ray.kill(actor)
