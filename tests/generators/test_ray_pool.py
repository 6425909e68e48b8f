"""Bank filling on Ray actors: the same bank, byte for byte, as a single-process fill with the same seed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')

from tailmix.generators.bank import SyntheticBank  # noqa: E402
from tailmix.generators.filter import ClassifierFilter  # noqa: E402
from tailmix.generators.pool import GeneratorPool  # noqa: E402
from tailmix.generators.ray_pool import _ShardWorker, fill_bank_ray  # noqa: E402
from tests.generators.fakes import FakeGenerator, code_scorer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# each fill starts fresh actor processes (they import torch: ~5 s apiece on 2 cores)
slow_ray = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs whose workers can import ``tests.*`` (the fakes)."""
    started = not ray.is_initialized()
    if started:
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024**2, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    if started:
        ray.shutdown()


def files(bank: SyntheticBank) -> dict[str, bytes]:
    """Every file of a bank folder (shards, confidences, manifest) by name."""
    return {p.name: p.read_bytes() for p in sorted(bank.path.iterdir()) if not p.name.startswith(".")}


def fitted(tiny_dataset, **gens):
    return {name: gen.fit(tiny_dataset) for name, gen in gens.items()}


@slow_ray
def test_ray_fill_is_byte_identical_to_a_single_process_fill(local_ray, tiny_dataset, tmp_path):
    filt = ClassifierFilter(code_scorer(3), tau=0.3, max_tries=5, name="codes")
    kwargs = dict(per_class=[7, 4, 3], filter=filt, seed=11, shard_size=2, batch_size=4, progress=False)

    def pool():
        g = fitted(tiny_dataset, a=FakeGenerator(wrong_rate=0.3), b=FakeGenerator(offset=5, wrong_rate=0.3))
        return GeneratorPool(g, assignment={0: ["a", "b"], 1: ["b"], 2: ["a"]}, devices="cpu")

    local = pool().fill_bank(tiny_dataset, tmp_path / "local", **kwargs)
    driver = pool()
    remote = fill_bank_ray(driver, tiny_dataset, tmp_path / "ray", num_workers=2, **kwargs)
    assert remote.key == local.key and remote.complete
    assert files(remote) == files(local)  # shard files, confidences and manifest
    assert remote.counts().tolist() == [7, 4, 3] and not np.all(remote.acceptance == 1.0)
    SyntheticBank.open(remote.path, verify=True)
    # the work really ran on the actors: the driver's generators were never asked for a sample
    assert driver.generators["a"].calls == [] and driver.generators["b"].calls == []


@pytest.mark.slow  # imports diffusers in every actor
def test_a_diffusion_generator_gives_the_same_bytes_on_actors(local_ray, tiny_dataset, tmp_path):
    """A real model (tiny DDPM, DDIM sampling on the CPU) from a dict of generators, default worker count."""
    from tailmix.generators.ddpm import ClassConditionalDDPM

    model = ClassConditionalDDPM(tiny_dataset.image_shape, tiny_dataset.num_classes, preset="tiny", batch_size=16)
    pool = GeneratorPool({"ddpm": model}, devices="cpu").fit(tiny_dataset, seed=0)
    kwargs = dict(per_class=[3, 2, 2], seed=4, shard_size=2, batch_size=2, progress=False)
    local = pool.fill_bank(tiny_dataset, tmp_path / "local", **kwargs)
    remote = fill_bank_ray({"ddpm": model}, tiny_dataset, tmp_path / "ray", **kwargs)
    assert files(remote) == files(local)
    assert {s["device"] for e in remote.manifest["classes"].values() for s in e["shards"]} == {"cpu"}


@slow_ray
def test_resumes_a_bank_with_a_lost_shard(local_ray, tiny_dataset, tmp_path):
    kwargs = dict(per_class=[4, 4, 2], seed=3, shard_size=2, batch_size=2, progress=False)
    pool = GeneratorPool(fitted(tiny_dataset, a=FakeGenerator()), devices="cpu")
    bank = pool.fill_bank(tiny_dataset, tmp_path, **kwargs)
    before = files(bank)
    (bank.path / "class_1_1.npy").unlink()
    fresh = GeneratorPool(fitted(tiny_dataset, a=FakeGenerator()), devices="cpu")
    with pytest.warns(UserWarning, match="refilling 1 bad shard"):
        again = fill_bank_ray(fresh, tiny_dataset, tmp_path, num_workers=1, **kwargs)
    assert again.path == bank.path and files(again) == before
    # a complete bank is reused as it is: no actor starts, the driver's generator is not called either
    assert fill_bank_ray(fresh, tiny_dataset, tmp_path, **kwargs).path == bank.path
    assert fresh.generators["a"].calls == []


@slow_ray
def test_a_worker_error_reaches_the_driver_and_leaves_a_resumable_bank(local_ray, tiny_dataset, tmp_path):
    kwargs = dict(per_class=[4, 4, 4], shard_size=1, batch_size=1, progress=False)
    broken = fitted(tiny_dataset, a=FakeGenerator(fail_after=2))  # each actor copy fails on its third shard
    with pytest.raises(RuntimeError, match="on purpose"):
        fill_bank_ray(broken, tiny_dataset, tmp_path, num_workers=1, max_in_flight=1, **kwargs)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    partial = SyntheticBank.open(folder, allow_incomplete=True, verify=True)
    assert not partial.complete and partial.counts().sum() == 2
    bank = fill_bank_ray(fitted(tiny_dataset, a=FakeGenerator()), tiny_dataset, tmp_path, **kwargs)
    assert bank.path == folder and bank.counts().tolist() == [4, 4, 4]


def test_bad_arguments_raise_clear_errors(local_ray, tiny_dataset, tmp_path):
    gens = fitted(tiny_dataset, a=FakeGenerator())
    with pytest.raises(ValueError, match="GeneratorPool or a dict"):
        fill_bank_ray([FakeGenerator()], tiny_dataset, tmp_path, per_class=1)
    with pytest.raises(ValueError, match="num_workers"):
        fill_bank_ray(gens, tiny_dataset, tmp_path, per_class=1, num_workers=0)
    with pytest.raises(ValueError, match="assignment is given twice"):
        fill_bank_ray(GeneratorPool(gens, devices="cpu"), tiny_dataset, tmp_path, per_class=1, assignment={0: ["a"]})
    with pytest.raises(ValueError, match="no GPU"):
        fill_bank_ray(gens, tiny_dataset, tmp_path, per_class=1, use_gpu=True, progress=False)
    with pytest.raises(ValueError, match="not fitted"):
        fill_bank_ray({"a": FakeGenerator()}, tiny_dataset, tmp_path, per_class=1, progress=False)


def test_worker_places_its_copy_on_the_cpu_without_gpus(tiny_dataset):
    """The actor class itself, called in-process: CPU placement and the pool's per-shard function."""
    gen = FakeGenerator(device="cpu").fit(tiny_dataset)
    worker = _ShardWorker({"a": gen}, ClassifierFilter(code_scorer(3), tau=0.0), threads=1, use_gpu=False)
    shard, device = worker.make((2, 0, 3, "a"), seed=0, shape=(8, 8, 1), batch_size=2)
    assert device == "cpu" and gen.device == torch.device("cpu")
    assert shard.class_id == 2 and shard.images.shape == (3, 8, 8, 1) and shard.tried >= 3
