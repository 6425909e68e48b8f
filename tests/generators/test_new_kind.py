"""A new generator kind is one class and one registry line: the CLI's choices, its checks and the pipeline (generator
cache, bank, env) follow the capabilities the class declares, with no kind named anywhere else (issue 25 item 3)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tailmix.generators.base import Generator, read_config, write_config
from tests.test_train_agents import assert_main_error, write_npz


class MeanGenerator(Generator):
    """A toy kind with a "model": each class's mean train image, plus seeded Gaussian pixel noise when sampled.

    It declares that it trains (so the pipeline passes ``--preset``, ``--generator-steps`` and ``--device``) and its
    presets; every other capability keeps the base class's "no".
    """

    kind = "toy"
    trains = True
    presets = ("tiny", "small")
    fits = 0  # how many times any instance was fitted (the cache must spare the second run)

    def __init__(self, *, preset: str = "small", train_steps: int = 3, noise: float = 8.0, device="cpu"):
        super().__init__(device=device)
        self.preset, self.train_steps, self.noise = preset, int(train_steps), float(noise)
        self._means: np.ndarray | None = None

    def hparams(self) -> dict:
        return {"preset": self.preset, "train_steps": self.train_steps, "noise": self.noise}

    def _fitted_state(self) -> dict:
        return {"means": self._means}

    def fit(self, dataset, *, generator=None, progress=False):
        x, y = dataset.train_images.astype(np.float32), dataset.train_labels
        self._means = np.stack([x[y == c].mean(0) for c in range(dataset.num_classes)])
        self._mark_fitted(dataset, generator=generator)
        type(self).fits += 1
        return self

    def sample(self, class_id, n, *, generator):
        self._check_sample(class_id, n, generator)
        noise = torch.randn((n, *self._means.shape[1:]), generator=generator).numpy() * self.noise
        return np.clip(self._means[class_id] + noise, 0, 255).astype(np.uint8)

    def save(self, path):
        folder = write_config(path, self.config())
        np.save(folder / "means.npy", self._means)
        return folder

    @classmethod
    def load(cls, path, device="cpu"):
        cfg = read_config(path)
        gen = cls(preset=cfg["preset"], train_steps=cfg["train_steps"], noise=cfg["noise"], device=device)
        gen._means = np.load(Path(path) / "means.npy")
        gen._restore_fit_info(cfg)
        return gen


@pytest.fixture
def toy_kind(monkeypatch):
    """Registers the toy kind for one test (the registry is put back afterwards)."""
    from tailmix.generators.base import GENERATOR_KINDS, register_generator

    monkeypatch.setattr(GENERATOR_KINDS, "_targets", dict(GENERATOR_KINDS._targets))
    monkeypatch.setattr(MeanGenerator, "fits", 0)
    register_generator("toy", MeanGenerator)  # the one registry line


def _generate(tmp_path, run: str, *extra) -> Path:
    from tailmix import train_agents

    return train_agents.main(["generate", "--generator", "toy", "--dataset", str(write_npz(tmp_path / "toy.npz")),
                              "--preset", "tiny", "--generator-steps", "5", "--per-class", "6", "--no-filter",
                              "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / run), *extra])


def test_a_registered_kind_runs_through_the_cli(toy_kind, tmp_path):
    run = _generate(tmp_path, "run")
    assert json.loads((run / "bank.json").read_text())["counts"] == [6, 6, 6]
    assert (run / "quality.txt").is_file() and (run / "samples.png").is_file()
    saved, = (tmp_path / "cache" / "generators").glob("toy-*")  # cached under its kind, with the CLI's settings
    assert {k: read_config(saved)[k] for k in ("kind", "preset", "train_steps")} == {
        "kind": "toy", "preset": "tiny", "train_steps": 5}
    assert MeanGenerator.fits == 1
    _generate(tmp_path, "again")  # a second run loads it back through the registry (load_generator)
    assert MeanGenerator.fits == 1


def test_the_env_takes_a_bank_of_a_registered_kind(toy_kind, tmp_path):
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
    from tailmix.pipeline import Settings, env_kwargs, load_data

    cfg = Settings(dataset=str(write_npz(tmp_path / "toy.npz")), generator="toy", preset="tiny", per_class=6,
                   filter=False, cache_dir=str(tmp_path / "cache"), max_steps=2)
    kw = env_kwargs(cfg, load_data(cfg), progress=False)
    env = SyntheticRatioEnv(**{**kw, "encoder": "random"})
    env.reset(seed=0)
    assert env.core.source_names == ("toy",) and env.core.pool_sizes.tolist() == [6, 6, 6]


def test_the_cli_checks_follow_the_declared_capabilities(toy_kind, tmp_path, capsys):
    npz = write_npz(tmp_path / "toy.npz")
    argv = ["generate", "--generator", "toy", "--dataset", npz, "--run-dir", tmp_path / "run"]
    # its own presets, not the DDPM's
    assert_main_error([*argv, "--preset", "base"], capsys, "--preset", "'base'", "tiny, small")
    # no classifier guidance and no unlabeled images: the flags name the kinds that have them
    assert_main_error([*argv, "--guidance-scale", "1"], capsys, "--guidance-scale", "ddpm")
    assert_main_error([*argv, "--unlabeled", tmp_path], capsys, "--unlabeled", "ddpm")


def test_an_unregistered_kind_is_refused_naming_the_registered_ones(tmp_path, capsys):
    assert_main_error(["generate", "--generator", "toy", "--run-dir", tmp_path / "run"], capsys,
                      "unknown --generator 'toy'", "ddpm, lora, sketch, augment")
