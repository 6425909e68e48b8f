"""The application layer (tailmix.pipeline): generators built through the registry, stable cache keys, one
encoder config and one list of feature-mode losses."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def digits():
    from tailmix.envs.datasets import load_dataset

    return load_dataset("digits")


def test_the_bank_kinds_are_the_registry_kinds_of_images():
    from tailmix.generators.base import GENERATOR_KINDS, kinds_with

    assert kinds_with(space="images") == ("ddpm", "lora", "sketch", "augment", "pretrained")  # gaussian: features
    assert set(kinds_with(space="images")) <= set(GENERATOR_KINDS)
    assert kinds_with(guided=True) == kinds_with(budgeted=True) == ("ddpm",)
    assert kinds_with(takes_unlabeled=True) == ("ddpm", "lora")  # lora: its base DDPM pretrains on them
    assert kinds_with(trains=True) == ("ddpm", "lora", "sketch", "pretrained")
    assert kinds_with(pretrains=True) == ("ddpm", "lora", "sketch")


@pytest.mark.parametrize("kind", ["ddpm", "sketch", "lora", "augment"])
def test_new_generator_is_the_registry_class_with_the_settings(kind, digits):
    from tailmix.generators.base import GENERATOR_KINDS
    from tailmix.pipeline import Settings, new_generator

    gen = new_generator(Settings(generator=kind, preset="tiny", generator_steps=7, device="cpu"), digits)
    assert type(gen) is GENERATOR_KINDS[kind] and not gen.fitted
    if kind in ("ddpm", "sketch"):
        assert gen.image_shape == digits.image_shape and gen.preset == "tiny" and gen.train_steps == 7
        assert gen.config()["preset"] == "tiny"
    if kind == "lora":  # adapters with their defaults on a new base DDPM that takes the settings
        assert gen.base.preset == "tiny" and gen.base.train_steps == 7


def test_make_generator_refuses_an_unknown_kind(digits):
    from tailmix.generators.base import make_generator

    with pytest.raises(ValueError, match="unknown generator kind 'nope'.*register_generator"):
        make_generator("nope", digits)


def test_generator_cache_key_is_stable(digits):
    """A changed key would retrain every cached generator: this pins the key of the tiny digits DDPM (the value
    the CLI computed before the application layer moved out of it)."""
    from tailmix.pipeline import Settings, cache_key, new_generator

    gen = new_generator(Settings(preset="tiny", device="cpu"), digits)
    assert cache_key(digits.fingerprint(), gen.config(), 0) == "685f57a164858885"
    gen = new_generator(Settings(preset="tiny", generator_steps=30, device="cpu"), digits)
    assert cache_key(digits.fingerprint(), gen.config(), 0) == "5c0fe74a78332854"


def test_one_encoder_config_from_the_env_config():
    from tailmix.envs.config import RatioEnvConfig
    from tailmix.envs.features import EncoderConfig, encoder_config

    cfg = RatioEnvConfig(encoder="crossfit_joint", encoder_folds=3, encoder_epochs=4, source_seed=9)
    assert encoder_config(cfg) == EncoderConfig(kind="crossfit_joint", folds=3, epochs=4, seed=9)


def test_env_kwargs_without_a_bank(digits, tmp_path):
    from tailmix.pipeline import Settings, env_kwargs

    kw = env_kwargs(Settings(source="gaussian", cache_dir=str(tmp_path), quick=True, seed=3), digits)
    assert kw["source"] == "gaussian" and kw["source_seed"] == 3 and kw["encoder_folds"] == 3
    assert kw["cache_dir"] == str(tmp_path / "encoders")
    with pytest.raises(ValueError, match="unknown --source 'nope'"):
        env_kwargs(Settings(source="nope"), digits)


def test_feature_mode_losses_are_one_list():
    """The env config, the CLI and the benchmarks take the feature-mode losses from the batched head."""
    from tailmix.classifiers.batched_head import HEAD_LOSSES
    from tailmix.classifiers.losses import LOSSES
    from tailmix.envs.config import RatioEnvConfig

    for loss in LOSSES:
        if loss in HEAD_LOSSES:
            RatioEnvConfig(loss=loss)
        else:
            with pytest.raises(ValueError, match="need mode='pixel'; feature mode supports " + ", ".join(HEAD_LOSSES)):
                RatioEnvConfig(loss=loss)


def test_one_default_cache_folder_for_the_cli_and_the_envs(monkeypatch, tmp_path):
    """The CLI's --cache-dir defaults to envs.cache.default_cache_dir() (read when the config is made), so its
    encoders land where envs made from Python look for them; --cache-dir still overrides."""
    from tailmix.envs.cache import default_cache_dir, encoder_cache_dir
    from tailmix.pipeline import Settings, env_kwargs
    from tailmix.train_agents import parse_args
    from tests.conftest import make_tiny_dataset

    monkeypatch.setenv("TAILMIX_CACHE_DIR", str(tmp_path / "mine"))
    assert Settings().cache_dir == str(default_cache_dir()) == str(tmp_path / "mine")
    for argv in (["generate"], [], ["train"]):
        assert parse_args(argv)[1].cache_dir == str(tmp_path / "mine")
    assert parse_args(["generate", "--cache-dir", "elsewhere"])[1].cache_dir == "elsewhere"
    kw = env_kwargs(Settings(source="augment"), make_tiny_dataset())
    assert kw["cache_dir"] == encoder_cache_dir(None) == str(tmp_path / "mine" / "encoders")
