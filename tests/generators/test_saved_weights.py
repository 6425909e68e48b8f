"""Saved generator weights (issue 26): checked against the digest recorded beside them when loaded (item 3), and
written with the file modes the umask gives, like every other file of the cache (item 13)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from tailmix.generators import load_generator
from tailmix.generators.ddpm import ClassConditionalDDPM
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def ds():
    return make_tiny_dataset()


def _ddpm(ds, **kw) -> ClassConditionalDDPM:
    return ClassConditionalDDPM(ds.image_shape, ds.num_classes, preset="tiny", batch_size=16, **kw)


def _flip_a_weight_byte(folder: Path) -> Path:
    """Flip one byte near the end of the first safetensors file under ``folder`` (the tensor data, not the header)."""
    file = sorted(folder.rglob("*.safetensors"))[0]
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x40
    file.write_bytes(bytes(data))
    return file


@pytest.mark.parametrize("kind", ["ddpm", "ema", "guided", "lora", "sketch"])
def test_saved_generators_load_and_pass_their_digest(kind, ds, tmp_path):
    from tailmix.generators.lora import LoRAClassAdapters
    from tailmix.generators.sketch import SketchConditionedDDPM

    if kind == "lora":
        gen = LoRAClassAdapters(_ddpm(ds).fit(ds, generator=g(0)), steps_per_class=2)
    elif kind == "sketch":
        gen = SketchConditionedDDPM(ds.image_shape, ds.num_classes, preset="tiny", batch_size=16)
    else:
        kw = {"ema": {"ema_decay": 0.9}, "guided": {"classifier_scale": 0.5, "classifier": {"steps": 2}}}
        gen = _ddpm(ds, **kw.get(kind, {}))
    gen.fit(ds, generator=g(0))
    digest = gen.config()["fit"]["state_digest"]
    gen.save(tmp_path / "gen")
    again = load_generator(tmp_path / "gen")
    assert again.config()["fit"]["state_digest"] == digest
    _flip_a_weight_byte(tmp_path / "gen")
    with pytest.raises(ValueError, match="do not match the state_digest"):
        load_generator(tmp_path / "gen")


def test_a_corrupt_cached_generator_is_retrained_not_used(ds, tmp_path, capsys):
    from tailmix.pipeline import Settings, fitted_generator

    cfg = Settings(preset="tiny", generator_steps=2, pretrain_steps=1, cache_dir=str(tmp_path))
    first = fitted_generator(cfg, ds, progress=False)
    path = next((tmp_path / "generators").iterdir())
    _flip_a_weight_byte(path)
    again = fitted_generator(cfg, ds, progress=False)
    assert "do not match the state_digest" in capsys.readouterr().out
    # retrained from the same seed: the same weights, so the bank key names the same images again
    assert again.config()["fit"]["state_digest"] == first.config()["fit"]["state_digest"]
    assert load_generator(path).config() == again.config()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_safetensors_files_honour_the_umask(umask, ds, tmp_path):
    from tailmix.generators.lora import LoRAClassAdapters

    gen = LoRAClassAdapters(_ddpm(ds).fit(ds, generator=g(0)), steps_per_class=1).fit(ds, generator=g(0))
    old = os.umask(umask)
    try:
        gen.save(tmp_path / "lora")
    finally:
        os.umask(old)
    files = sorted((tmp_path / "lora").rglob("*.safetensors"))
    assert len(files) >= 2  # the base's UNet and an adapter
    for f in [*files, *(tmp_path / "lora").rglob("*.json")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
