"""--devices and --precision (issue 28 item 2): kinds and bank shards spread over two devices, checked on a machine
without a GPU by a mocked device list (toy kinds whose 'model' runs anywhere)."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from tests.generators.test_new_kind import MeanGenerator
from tests.test_train_agents import write_npz


class OtherMean(MeanGenerator):
    kind = "toy2"


@pytest.fixture
def two_gpus(monkeypatch):
    """Two fake CUDA devices: torch says they exist, nothing ever runs on them (the toy kinds compute on the CPU)."""
    from tailmix.classifiers import device as device_mod
    from tailmix.generators import pool as pool_mod
    from tailmix.generators.base import GENERATOR_KINDS, register_generator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(pool_mod, "_on_device", lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(device_mod, "precision_autocast", lambda dev, precision="auto": contextlib.nullcontext())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(GENERATOR_KINDS, "_targets", dict(GENERATOR_KINDS._targets))
    register_generator("toy", MeanGenerator)
    register_generator("toy2", OtherMean)


def _settings(tmp_path, **kw):
    from tailmix.pipeline import Settings

    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return Settings(dataset=str(write_npz(tmp_path / "toy.npz")), preset="tiny", per_class=6, filter=False, **kw)


def test_devices_auto_and_lists_resolve_on_the_visible_gpus(two_gpus, tmp_path):
    from tailmix.pipeline import generator_devices, one_kind

    cuda = [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert generator_devices(_settings(tmp_path, devices="auto")) == cuda
    assert generator_devices(_settings(tmp_path, devices="cuda:1, cuda:0")) == cuda[::-1]
    cfg = _settings(tmp_path, generator="toy toy2", devices="auto")
    assert [one_kind(cfg, k).device for k in ("toy", "toy2")] == ["cuda:0", "cuda:1"]  # kinds round-robin
    with pytest.raises(ValueError, match="twice"):
        generator_devices(_settings(tmp_path, devices="cuda:0,cuda:0"))
    with pytest.raises(ValueError, match="--devices cuda:0,cuda:2: .*does not exist"):
        generator_devices(_settings(tmp_path, devices="cuda:0,cuda:2"))


def test_each_kind_lives_on_its_device_and_every_bank_spreads_over_both(two_gpus, tmp_path):
    from tailmix.pipeline import env_kwargs, load_data

    cfg = _settings(tmp_path, generator="toy toy2", devices="cuda:0,cuda:1", source="bank")
    kw = env_kwargs(cfg, load_data(cfg), progress=False)
    single = _settings(tmp_path, generator="toy toy2", device="cpu", cache_dir=str(tmp_path / "one"))
    for source, home in zip(kw["sources"], ("cuda:0", "cuda:1")):
        manifest = json.loads((source.bank.path / "manifest.json").read_text())
        used = [s["device"] for entry in manifest["classes"].values() for s in entry["shards"]]
        assert used[0] == home and set(used) == {"cuda:0", "cuda:1"}  # the kind's own device first, then both
    ref = env_kwargs(single, load_data(single), progress=False)["sources"]
    for spread, alone in zip(kw["sources"], ref):  # same key, same images as one device fills
        assert spread.bank.path.name == alone.bank.path.name
        for c in range(3):
            np.testing.assert_array_equal(spread.bank.images(c), alone.bank.images(c))


def test_the_cli_checks_devices_and_precision(capsys, tmp_path):
    from tests.test_preflight import refused

    line = refused(capsys, tmp_path, "generate", "--devices", "cuda:0,cuda:1")
    assert line.startswith("error: --devices cuda:0,cuda:1:") and "CUDA is not available" in line
    line = refused(capsys, tmp_path, "generate", "--precision", "fp8")
    assert "--precision 'fp8'" in line and "bf16" in line


def test_precision_is_full_on_the_cpu_and_enters_the_ddpm_config_only_when_set():
    from tailmix.classifiers.device import grad_scaler, precision_dtype
    from tailmix.generators.ddpm import ClassConditionalDDPM

    assert precision_dtype("cpu", "fp16") is None and not grad_scaler("cpu", "fp16").is_enabled()
    assert "precision" not in ClassConditionalDDPM((8, 8, 1), 3, preset="tiny").config()  # old cache keys hold
    assert ClassConditionalDDPM((8, 8, 1), 3, preset="tiny", precision="fp32").config()["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        ClassConditionalDDPM((8, 8, 1), 3, preset="tiny", precision="half")
