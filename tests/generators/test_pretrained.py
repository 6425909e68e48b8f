"""The pretrained kind: a local diffusers pipeline (tiny, random weights, written here) with a LoRA adapter per class."""
import shutil
import sys

import numpy as np
import pytest
import torch

from tailmix.generators import load_generator, make_generator
from tailmix.classifiers.device import precision_dtype
from tailmix.generators.pretrained import (PretrainedPipeline, pipeline_fingerprint, read_pipeline,
                                           write_tiny_pipeline)
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {layout: write_tiny_pipeline(root / layout, layout) for layout in ("latent", "pixel")}


@pytest.fixture(scope="module")
def fitted(pipelines):
    ds = make_tiny_dataset()
    gens = {"prompt": PretrainedPipeline(pipelines["latent"], preset="tiny", classes=[2], steps_per_class=3,
                                         guidance_scale=2.0).fit(ds, generator=g(0)),
            "token": PretrainedPipeline(pipelines["latent"], preset="tiny", conditioning="token").fit(ds, generator=g(0)),
            "pixel": PretrainedPipeline(pipelines["pixel"], preset="tiny").fit(ds, generator=g(0))}
    return ds, gens


def test_the_tiny_pipelines_are_tiny_and_read_as_their_layouts(pipelines):
    gen = PretrainedPipeline(pipelines["latent"], preset="tiny")
    parts = gen._components()
    n = sum(p.numel() for name in ("unet", "vae", "text_encoder") for p in parts[name].parameters())
    assert n < 30_000 and gen.resolution == 16 and gen.pipeline_channels == 3
    assert read_pipeline(pipelines["pixel"])[1] == "pixel" and read_pipeline(pipelines["latent"])[1] == "latent"


@pytest.mark.parametrize("name", ["prompt", "token", "pixel"])
def test_fit_then_sample_at_the_dataset_size_same_seed_same_images(fitted, name):
    ds, gens = fitted
    gen = gens[name]
    images = gen.sample(2, 3, generator=g(1))
    assert images.shape == (3, *ds.image_shape) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, gen.sample(2, 3, generator=g(1)))
    assert not np.array_equal(images, gen.sample(2, 3, generator=g(2)))
    assert gen.config()["fit"]["adapted_classes"] == ([2] if name == "prompt" else [0, 1, 2])


def test_training_moves_only_the_adapters_and_tokens(pipelines, fitted):
    _, gens = fitted
    fresh = PretrainedPipeline(pipelines["latent"], conditioning="token")._components()["unet"].state_dict()
    model = gens["token"].model
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero
    for name, p in model.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), fresh[key]), name
    assert gens["token"].tokens.shape == (3, 1, 8)


def test_save_load_round_trip_gives_the_same_images(fitted, tmp_path):
    ds, gens = fitted
    for name, gen in gens.items():
        gen.save(tmp_path / name)
        back = load_generator(tmp_path / name)
        assert isinstance(back, PretrainedPipeline) and back.config() == gen.config()
        for c in range(ds.num_classes):  # class 0 of "prompt" has no adapter: the pipeline with its prompt
            np.testing.assert_array_equal(back.sample(c, 2, generator=g(5)), gen.sample(c, 2, generator=g(5)))


def test_the_cache_follows_the_pipelines_fingerprint_not_its_path(pipelines, fitted, tmp_path):
    ds, gens = fitted
    copy = shutil.copytree(pipelines["pixel"], tmp_path / "elsewhere")
    assert pipeline_fingerprint(copy) == pipeline_fingerprint(pipelines["pixel"])
    fresh = make_generator("pretrained", ds, pipeline=copy, preset="tiny")
    assert fresh.config()["pipeline_fingerprint"] == gens["pixel"].config()["pipeline_fingerprint"]
    gens["pixel"].save(tmp_path / "saved")
    config = tmp_path / "saved" / "config.json"
    config.write_text(config.read_text().replace(str(pipelines["pixel"]), str(copy)))
    (copy / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler", "num_train_timesteps": 50}')
    assert pipeline_fingerprint(copy) != pipeline_fingerprint(pipelines["pixel"])
    with pytest.raises(ValueError, match="changed since"):
        load_generator(tmp_path / "saved")


def test_bank_fill_from_the_pool(fitted, tmp_path):
    from tailmix.generators.pool import GeneratorPool

    ds, gens = fitted
    bank = GeneratorPool({"pretrained": gens["token"]}, devices="cpu").fill_bank(ds, tmp_path, per_class=4, seed=0)
    assert list(bank.counts()) == [4, 4, 4] and bank.images(1).shape == (4, *ds.image_shape)


def test_rgb_datasets_and_grey_pipelines_convert_channels(pipelines):
    ds = make_tiny_dataset(channels=3, size=12)
    gen = PretrainedPipeline(pipelines["pixel"], preset="tiny", steps_per_class=1).fit(ds, generator=g(0))
    assert gen.sample(0, 2, generator=g(1)).shape == (2, 12, 12, 3)


@pytest.mark.parametrize("make, words", [
    (lambda root: root / "missing", ["--pretrained", "no such folder", "never downloads"]),
    (lambda root: root, ["--pretrained", "model_index.json"]),
    (lambda root: None, ["--pretrained PATH"]),
])
def test_a_missing_or_foreign_folder_is_a_one_line_error(tmp_path, make, words):
    with pytest.raises(ValueError) as err:
        PretrainedPipeline(make(tmp_path))
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


def test_an_incomplete_pipeline_names_what_it_lacks(pipelines, tmp_path):
    folder = shutil.copytree(pipelines["latent"], tmp_path / "p")
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(ValueError, match="lacks text_encoder.*conditioning='token'"):
        PretrainedPipeline(folder)
    PretrainedPipeline(folder, conditioning="token")  # learned tokens need no text encoder


def test_missing_transformers_is_one_line_naming_the_extra(pipelines, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    gen = PretrainedPipeline(pipelines["latent"])
    with pytest.raises(ImportError, match=r"tailmix\[pipelines\]") as err:
        gen._components()
    assert "\n" not in str(err.value)


def test_unlabeled_images_are_refused_in_one_line(pipelines):
    ds = make_tiny_dataset()
    gen = PretrainedPipeline(pipelines["pixel"], preset="tiny")
    with pytest.raises(ValueError, match="pretrained already") as err:
        gen.fit(ds, generator=g(0), unlabeled=ds.train_images)
    assert "\n" not in str(err.value) and PretrainedPipeline.unlabeled_refusal


def test_precision_is_full_on_the_cpu_and_checked():
    assert precision_dtype(torch.device("cpu"), "bf16") is None and precision_dtype("cpu", "auto") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_dtype("cpu", "fp8")


def test_weights_that_do_not_load_are_a_one_line_error(pipelines, tmp_path):
    folder = shutil.copytree(pipelines["pixel"], tmp_path / "p")
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="--pretrained .*do not load") as err:
        PretrainedPipeline(folder)._components()
    assert "\n" not in str(err.value)
