"""--guidance-scale and --unlabeled in the application layer: cache keys, reuse of the unguided DDPM, the CLI."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def digits():
    from tailmix.envs.datasets import load_dataset

    return load_dataset("digits")


def _settings(tmp_path, **kw):
    from tailmix.pipeline import Settings

    return Settings(preset="tiny", generator_steps=3, device="cpu", cache_dir=str(tmp_path), **kw)


def _folders(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "generators").iterdir() if not p.name.startswith("."))


def test_guidance_reuses_the_cached_unguided_ddpm(digits, tmp_path):
    from tailmix.pipeline import cache_key, fitted_generator, new_generator

    plain_key = cache_key(digits.fingerprint(), new_generator(_settings(tmp_path), digits).config(), 0)
    gen = fitted_generator(_settings(tmp_path, guidance_scale=0.5), digits, progress=False)
    assert gen.classifier_scale == 0.5 and gen.guidance_classifier is not None
    names = _folders(tmp_path)
    assert f"ddpm-{plain_key}" in names and len(names) == 2  # the unguided DDPM under its usual key + the guided one
    guided = [n for n in names if n.startswith("ddpm-guided-")]
    again = fitted_generator(_settings(tmp_path, guidance_scale=0.5), digits, progress=False)
    assert again.config() == gen.config() and _folders(tmp_path) == names  # loaded, not retrained
    other = fitted_generator(_settings(tmp_path, guidance_scale=1.0), digits, progress=False)
    assert other.config()["classifier_scale"] == 1.0 and len(_folders(tmp_path)) == 3  # one more guided entry
    assert guided[0] in _folders(tmp_path)
    plain = fitted_generator(_settings(tmp_path), digits, progress=False)
    assert "classifier_scale" not in plain.config() and len(_folders(tmp_path)) == 3  # scale 0: the plain one


def _write_pngs(folder, n: int, rng) -> None:
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        where = folder / ("sub" if i % 2 else "") / f"u{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(where)
    (folder / "notes.txt").write_text("not an image")  # ignored


def test_unlabeled_folder_joins_pretraining_and_the_cache_key(digits, tmp_path):
    from tailmix.pipeline import fitted_generator, unlabeled_images

    folder = tmp_path / "unlabeled"
    _write_pngs(folder, 5, np.random.default_rng(0))
    images = unlabeled_images(_settings(tmp_path, unlabeled=str(folder)), digits)
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8  # read at the dataset's size and channels
    with_ = fitted_generator(_settings(tmp_path / "c", unlabeled=str(folder)), digits, progress=False)
    without = fitted_generator(_settings(tmp_path / "c"), digits, progress=False)
    assert with_.config()["fit"]["unlabeled"]["count"] == 5 and "unlabeled" not in without.config()["fit"]
    assert len(_folders(tmp_path / "c")) == 2  # two cache entries: the key includes the unlabeled images
    with pytest.raises(ValueError, match="not a folder"):
        unlabeled_images(_settings(tmp_path, unlabeled=str(tmp_path / "missing")), digits)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        unlabeled_images(_settings(tmp_path, unlabeled=str(tmp_path / "empty")), digits)


def test_cli_flags_and_their_checks():
    from tailmix.configs import ENV_FIELDS
    from tailmix.train_agents import check_config, parse_args

    _, cfg, given = parse_args(["--guidance-scale", "2.5", "--unlabeled", "some/folder"])
    assert cfg.guidance_scale == 2.5 and cfg.unlabeled == "some/folder" and {"guidance_scale", "unlabeled"} <= given
    assert {"guidance_scale", "unlabeled"} <= set(ENV_FIELDS)  # a saved model is evaluated on the same bank
    _, cfg, _ = parse_args(["--guidance-scale", "-1"])
    with pytest.raises(ValueError, match="--guidance-scale must be"):
        check_config(cfg)
    _, cfg, _ = parse_args(["--guidance-scale", "1", "--generator", "augment"])
    with pytest.raises(ValueError, match="ddpm"):
        check_config(cfg)
