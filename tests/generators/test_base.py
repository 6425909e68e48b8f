"""tailmix.generators.base: light import, the lazy kind registry, load_generator dispatch and its errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tailmix.generators.base import (GENERATOR_KINDS, Generator, config_digest, load_generator, register_generator,
                             state_digest, write_config)
from tests.conftest import make_tiny_dataset


def test_import_generators_does_not_import_diffusers_or_peft():
    code = ("import tailmix.generators, tailmix.generators.base, sys; "
            "print(any(m.split('.')[0] in ('diffusers', 'peft') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_resolves_every_builtin_kind():
    assert set(GENERATOR_KINDS) >= {"ddpm", "lora", "sketch", "augment", "gaussian"}
    for kind in GENERATOR_KINDS:
        cls = GENERATOR_KINDS[kind]
        assert issubclass(cls, Generator) and cls.kind == kind
    from tailmix import generators

    assert generators.AugmentationGenerator is GENERATOR_KINDS["augment"]
    with pytest.raises(AttributeError):
        generators.NoSuchGenerator  # noqa: B018


class Constant(Generator):
    """A user-defined kind: every sample is one grey level."""

    kind = "constant"

    def __init__(self, *, level: int = 7, device="cpu"):
        super().__init__(device=device)
        self.level = level

    def fit(self, dataset, *, generator=None, progress=False):
        self._mark_fitted(dataset, generator=generator)
        return self

    def sample(self, class_id, n, *, generator):
        self._check_sample(class_id, n, generator)
        return np.full((n, *self.image_shape), self.level, np.uint8)

    def hparams(self):
        return {"level": self.level}

    def save(self, path):
        return write_config(path, self.config())

    @classmethod
    def load(cls, path, device="cpu"):
        from tailmix.generators.base import read_config

        cfg = read_config(path)
        gen = cls(level=cfg["level"], device=device)
        gen._restore_fit_info(cfg)
        return gen


def test_user_kinds_register_and_round_trip(tmp_path):
    ds = make_tiny_dataset()
    gen = Constant(level=9).fit(ds, generator=torch.Generator().manual_seed(4))
    cfg = gen.config()
    assert cfg["kind"] == "constant" and cfg["fit"]["seed"] == 4 and cfg["image_shape"] == [8, 8, 1]
    gen.save(tmp_path / "c")
    with pytest.raises(ValueError, match="register_generator"):
        load_generator(tmp_path / "c")
    register_generator("constant", Constant)
    try:
        loaded = load_generator(tmp_path / "c")
        assert loaded.config() == cfg
        assert (loaded.sample(1, 2, generator=torch.Generator()) == 9).all()
    finally:
        GENERATOR_KINDS._targets.pop("constant")


def test_load_generator_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Generator.save"):
        load_generator(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_generator(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"no": "kind"}))
    with pytest.raises(ValueError, match="'kind'"):
        load_generator(tmp_path / "bad")
    with pytest.raises(ValueError, match="non-empty"):
        register_generator("", Constant)


@pytest.mark.parametrize("kind", ["augment", "gaussian"])
def test_each_kinds_load_refuses_a_folder_another_kind_wrote(tmp_path, kind):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "ddpm"}))
    with pytest.raises(ValueError, match=f"holds a 'ddpm' generator, not '{kind}'; use generators.load_generator"):
        GENERATOR_KINDS[kind].load(tmp_path)


def test_digests_are_stable_and_sensitive():
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
    x = np.arange(6, dtype=np.float32)
    assert state_digest({"w": x}) == state_digest({"w": torch.from_numpy(x.copy())})
    assert state_digest({"w": x}) != state_digest({"w": x + 1})
