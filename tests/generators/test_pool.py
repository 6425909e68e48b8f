"""The generator pool: device placement, class assignment, fitting and (parallel) bank filling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tailmix.generators.bank import SyntheticBank
from tailmix.generators.pool import GeneratorPool, derive_seed, resolve_devices
from tests.conftest import make_tiny_dataset
from tests.generators.fakes import FakeGenerator


def fake_gpus(monkeypatch, n: int) -> None:
    """Pretend torch sees ``n`` CUDA devices (placement only; nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def gens(*names, **kwargs):
    return {n: FakeGenerator(**kwargs) for n in names}


# -- placement ----------------------------------------------------------------------------------------
def test_round_robin_placement_over_a_device_list():
    g = gens("a", "b", "c")
    pool = GeneratorPool(g, devices=["cuda:0", "cuda:1"])
    assert pool.placement == {"a": "cuda:0", "b": "cuda:1", "c": "cuda:0"}
    assert [g[n].device for n in "abc"] == [torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cuda", 0)]
    assert GeneratorPool(gens("a"), devices="cpu").placement == {"a": "cpu"}
    assert GeneratorPool(gens("a"), devices=torch.device("cpu")).placement == {"a": "cpu"}
    assert resolve_devices(["cuda"]) == [torch.device("cuda", 0)]


def test_auto_uses_every_visible_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpus(monkeypatch, 2)
    pool = GeneratorPool(gens("a", "b", "c"), devices="auto")
    assert pool.placement == {"a": "cuda:0", "b": "cuda:1", "c": "cuda:0"}


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpus(monkeypatch, 0)
    assert GeneratorPool(gens("a", "b"), devices="auto").placement == {"a": "cpu", "b": "cpu"}


@pytest.mark.parametrize("value", ["", "-1"])
def test_empty_cuda_visible_devices_means_cpu(monkeypatch, value):
    fake_gpus(monkeypatch, 2)  # even if torch initialised CUDA before the variable was set
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert resolve_devices("auto") == [torch.device("cpu")]
    assert GeneratorPool(gens("a", "b"), devices="auto").placement == {"a": "cpu", "b": "cpu"}


def test_bad_devices_and_generators_raise():
    with pytest.raises(ValueError, match="twice"):
        resolve_devices(["cuda:0", "cuda:0"])
    with pytest.raises(ValueError, match="empty"):
        resolve_devices([])
    with pytest.raises(ValueError, match="cannot parse"):
        resolve_devices(["gpu-7"])
    with pytest.raises(ValueError, match="non-empty dict"):
        GeneratorPool({})
    with pytest.raises(ValueError, match="lacks"):
        GeneratorPool({"x": object()})


# -- assignment and fitting -----------------------------------------------------------------------
def test_assignment_validation_and_serving():
    with pytest.raises(ValueError, match="generator id"):
        GeneratorPool(gens("a"), assignment={0: ["b"]}, devices="cpu")
    with pytest.raises(ValueError, match="class ids"):
        GeneratorPool(gens("a"), assignment={-1: ["a"]}, devices="cpu")
    pool = GeneratorPool(gens("a", "b"), assignment={0: "a", 2: ["a", "b"]}, devices="cpu")
    assert pool.serving(3) == {0: ("a",), 1: (), 2: ("a", "b")}
    with pytest.raises(ValueError, match="dataset has classes"):
        pool.serving(2)
    assert GeneratorPool(gens("a", "b"), devices="cpu").serving(2) == {0: ("a", "b"), 1: ("a", "b")}


def test_fit_skips_fitted_generators_and_seeds_by_name(tiny_dataset):
    g = gens("a", "b")
    g["b"].fit(tiny_dataset)
    GeneratorPool(g, devices="cpu").fit(tiny_dataset, seed=3)
    assert g["a"].fit_seeds == [derive_seed(3, "fit", "a")]
    assert len(g["b"].fit_seeds) == 1  # not refitted
    wrong = FakeGenerator().fit(make_tiny_dataset(size=6))
    with pytest.raises(ValueError, match="shaped"):
        GeneratorPool({"w": wrong}, devices="cpu").fit(tiny_dataset)


def test_fill_bank_checks_its_inputs(tiny_dataset, tmp_path):
    pool = GeneratorPool(gens("a"), devices="cpu")
    with pytest.raises(ValueError, match="not fitted"):
        pool.fill_bank(tiny_dataset, tmp_path, per_class=2, progress=False)
    pool.fit(tiny_dataset)
    with pytest.raises(ValueError, match="one quota per class"):
        pool.fill_bank(tiny_dataset, tmp_path, per_class=[1, 2], progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        pool.fill_bank(tiny_dataset, tmp_path, per_class=2, shard_size=0, progress=False)
    with pytest.raises(ValueError, match="filter"):
        pool.fill_bank(tiny_dataset, tmp_path, per_class=2, filter="strict", progress=False)
    partial = GeneratorPool(gens("a"), assignment={0: ["a"]}, devices="cpu").fit(tiny_dataset)
    with pytest.raises(ValueError, match=r"classes \[1, 2\] have a quota"):
        partial.fill_bank(tiny_dataset, tmp_path, per_class=2, progress=False)
    bank = partial.fill_bank(tiny_dataset, tmp_path, per_class=[2, 0, 0], progress=False)
    assert bank.counts().tolist() == [2, 0, 0]


def test_a_class_with_several_generators_alternates_shards(tiny_dataset, tmp_path):
    g = gens("a", "b")
    g["b"] = FakeGenerator(offset=7)
    pool = GeneratorPool(g, assignment={0: ["a", "b"], 1: ["b"], 2: ["a"]}, devices="cpu").fit(tiny_dataset)
    bank = pool.fill_bank(tiny_dataset, tmp_path, per_class=[5, 2, 2], shard_size=2, batch_size=8, progress=False)
    shards = bank.manifest["classes"]
    assert [s["generator"] for s in shards["0"]["shards"]] == ["a", "b", "a"]
    assert [s["generator"] for s in shards["1"]["shards"]] == ["b"]
    assert [s["generator"] for s in shards["2"]["shards"]] == ["a"]
    assert sorted(bank.manifest["generator_configs"]) == ["a", "b"]
    assert bank.metadata(0)["generator"].tolist() == ["a", "a", "b", "b", "a"]
    assert {c for c, _ in g["a"].calls} == {0, 2} and {c for c, _ in g["b"].calls} == {0, 1}
    # the assignment is part of the key: serving class 1 by 'a' instead makes another bank
    other = GeneratorPool(g, assignment={0: ["a", "b"], 1: ["a"], 2: ["a"]}, devices="cpu")
    assert other.fill_bank(tiny_dataset, tmp_path, per_class=[5, 2, 2], shard_size=2, batch_size=8,
                           progress=False).key != bank.key


# -- parallel filling -------------------------------------------------------------------------------
def test_parallel_fill_over_two_devices_matches_a_single_device_fill(tiny_dataset, tmp_path):
    def pool_on(devices):
        return GeneratorPool({"a": FakeGenerator(), "b": FakeGenerator(offset=3)}, devices=devices).fit(tiny_dataset)

    kwargs = dict(per_class=[6, 4, 4], shard_size=2, batch_size=2, progress=False, seed=5)
    serial = pool_on("cpu")
    one = serial.fill_bank(tiny_dataset, tmp_path / "one", **kwargs)
    parallel = pool_on(["cuda:0", "cuda:1"])  # fake GPUs: placement and threads only, sampling runs on the CPU
    two = parallel.fill_bank(tiny_dataset, tmp_path / "two", **kwargs)
    assert one.key == two.key
    assert parallel.generators["a"].threads.isdisjoint(parallel.generators["b"].threads)  # one thread per device
    for c in range(3):
        np.testing.assert_array_equal(one.images(c), two.images(c))
    devices = {s["generator"]: s["device"] for e in two.manifest["classes"].values() for s in e["shards"]}
    assert devices == {"a": "cuda:0", "b": "cuda:1"}
    SyntheticBank.open(two.path)


def test_a_failing_device_stops_the_fill_and_raises(tiny_dataset, tmp_path):
    g = {"a": FakeGenerator(), "b": FakeGenerator(fail_after=1)}
    pool = GeneratorPool(g, devices=["cuda:0", "cuda:1"]).fit(tiny_dataset)
    with pytest.raises(RuntimeError, match="on purpose"):
        pool.fill_bank(tiny_dataset, tmp_path, per_class=[4, 4, 4], shard_size=1, batch_size=1, progress=False)
    folder = next(tmp_path.iterdir())
    partial = SyntheticBank.open(folder, allow_incomplete=True, verify=True)
    assert not partial.complete and 1 <= partial.counts().sum() < 12
    # resuming with healthy generators completes it
    pool = GeneratorPool({"a": FakeGenerator(), "b": FakeGenerator()}, devices=["cuda:0", "cuda:1"]).fit(tiny_dataset)
    bank = pool.fill_bank(tiny_dataset, tmp_path, per_class=[4, 4, 4], shard_size=1, batch_size=1, progress=False)
    assert bank.path == folder and bank.counts().tolist() == [4, 4, 4]


def test_progress_bar_runs(tiny_dataset, tmp_path, capsys):
    pool = GeneratorPool(gens("a"), devices="cpu").fit(tiny_dataset)
    pool.fill_bank(tiny_dataset, tmp_path, per_class=3, progress=True)
    assert "img" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_gpu_fill_with_autocast(tiny_dataset, tmp_path):
    from tailmix.generators.augment import AugmentationGenerator

    pool = GeneratorPool({"aug": AugmentationGenerator()}, devices="auto").fit(tiny_dataset)
    assert pool.placement["aug"].startswith("cuda")
    bank = pool.fill_bank(tiny_dataset, tmp_path, per_class=4, progress=False)
    assert bank.counts().tolist() == [4, 4, 4]


def test_real_generator_with_a_trained_filter_end_to_end(tiny_dataset, tmp_path):
    """A real Generator subclass (augmentations) through fit, a reference filter, the bank and a reload."""
    from tailmix.generators.augment import AugmentationGenerator
    from tailmix.generators.filter import ClassifierFilter

    filt = ClassifierFilter.train_reference(tiny_dataset, epochs=30, generator=torch.Generator().manual_seed(0))
    pool = GeneratorPool({"aug": AugmentationGenerator()}, devices="auto").fit(tiny_dataset, seed=0)
    bank = pool.fill_bank(tiny_dataset, tmp_path, per_class=6, filter=filt, shard_size=4, batch_size=8,
                          progress=False)
    assert bank.counts().tolist() == [6, 6, 6]
    assert np.all(bank.confidences(2) >= 0.5) and np.all(bank.acceptance > 0.5)
    # a saved and reloaded pool + filter hit the same bank key (resumption across processes works)
    pool.save(tmp_path / "gens")
    filt.save(tmp_path / "filter")
    reloaded = GeneratorPool.load({"aug": tmp_path / "gens" / "aug"}, devices="cpu")
    again = reloaded.fill_bank(tiny_dataset, tmp_path, per_class=6, filter=ClassifierFilter.load(tmp_path / "filter"),
                               shard_size=4, batch_size=8, progress=False)
    assert again.key == bank.key


@pytest.mark.slow  # imports diffusers (several seconds on a cold start)
def test_ddpm_bank_refills_byte_identical_after_save_and_load(tiny_dataset, tmp_path):
    """A diffusion generator reloaded from disk regenerates a lost shard with exactly its old bytes."""
    from tailmix.generators import load_generator
    from tailmix.generators.ddpm import ClassConditionalDDPM

    model = ClassConditionalDDPM(tiny_dataset.image_shape, tiny_dataset.num_classes, preset="tiny", batch_size=16)
    pool = GeneratorPool({"ddpm": model}, devices="auto").fit(tiny_dataset, seed=0)
    kwargs = dict(per_class=4, shard_size=2, batch_size=4, progress=False)
    bank = pool.fill_bank(tiny_dataset, tmp_path / "banks", **kwargs)
    before = (bank.path / "class_2_1.npy").read_bytes()
    model.save(tmp_path / "ddpm")
    (bank.path / "class_2_1.npy").unlink()
    reloaded = GeneratorPool({"ddpm": load_generator(tmp_path / "ddpm")}, devices="cpu")
    with pytest.warns(UserWarning, match="refilling 1 bad shard"):
        again = reloaded.fill_bank(tiny_dataset, tmp_path / "banks", **kwargs)
    assert again.key == bank.key and (again.path / "class_2_1.npy").read_bytes() == before


def test_fill_lock_waits_for_another_holder_then_reports_a_stuck_one(tmp_path):
    """A second filler of the same bank waits for the first (two runs started together) instead of failing."""
    import fcntl
    import threading

    from tailmix.generators.bank import BankError
    from tailmix.generators.pool import _fill_lock

    holder = open(tmp_path / ".lock", "w")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description: conflicts like a process
    with pytest.raises(BankError, match="for over"):
        with _fill_lock(tmp_path, wait_s=0.2, poll_s=0.05):
            pass
    threading.Timer(0.2, lambda: fcntl.flock(holder, fcntl.LOCK_UN)).start()
    entered = []
    with _fill_lock(tmp_path, wait_s=10.0, poll_s=0.05):
        entered.append(True)
    holder.close()
    assert entered


def test_replicate_copies_fitted_generators_onto_every_device_and_spreads_their_shards(tmp_path):
    """Two devices named ahead of time (no GPU here: the fake generator samples on the CPU wherever it is put)."""
    ds = make_tiny_dataset()
    pool = GeneratorPool({"a": FakeGenerator()}, devices=["cuda:0", "cuda:1"], replicate=True).fit(ds)
    copies = pool._replicas["a"]
    assert [str(d) for d in pool.shard_devices("a")] == ["cuda:0", "cuda:1"]
    assert copies[torch.device("cuda", 1)] is not pool.generators["a"] and copies[torch.device("cuda", 1)].fitted
    bank = pool.fill_bank(ds, tmp_path / "two", per_class=8, shard_size=4, seed=0, progress=False)
    used = [s["device"] for e in bank.manifest["classes"].values() for s in e["shards"]]
    assert used.count("cuda:0") == used.count("cuda:1") == 3
    alone = GeneratorPool({"a": FakeGenerator()}, devices="cpu").fit(ds)
    other = alone.fill_bank(ds, tmp_path / "one", per_class=8, shard_size=4, seed=0, progress=False)
    assert bank.path.name == other.path.name  # the same key: devices are placement, not content
    for c in range(ds.num_classes):
        np.testing.assert_array_equal(bank.images(c), other.images(c))
