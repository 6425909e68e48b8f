"""AugmentationGenerator: real images of the class, seeded augmentations, persistence and errors."""
import numpy as np
import pytest
import torch

from tailmix.generators import load_generator
from tailmix.generators.augment import OPS, AugmentationGenerator
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_determinism(channels):
    ds = make_tiny_dataset(channels=channels)
    gen = AugmentationGenerator(ops=OPS).fit(ds)
    a = gen.sample(1, 10, generator=g(0))
    assert a.shape == (10, 8, 8, channels) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, gen.sample(1, 10, generator=g(0)))
    assert not np.array_equal(a, gen.sample(1, 10, generator=g(1)))
    assert gen.sample(0, 0, generator=g(0)).shape == (0, 8, 8, channels)


def test_without_ops_samples_are_real_images_of_the_class():
    ds = make_tiny_dataset()
    gen = AugmentationGenerator(ops=()).fit(ds)
    for c in range(ds.num_classes):
        real = {x.tobytes() for x in ds.train_images[ds.train_labels == c]}
        assert all(x.tobytes() in real for x in gen.sample(c, 12, generator=g(c)))


def test_identity_affine_changes_nothing_and_each_op_changes_something():
    ds = make_tiny_dataset()
    plain = AugmentationGenerator(ops=()).fit(ds).sample(0, 16, generator=g(0))
    ident = AugmentationGenerator(ops=("affine",), degrees=0, translate=0, scale=(1, 1)).fit(ds)
    # Same draws of the source images (the affine draws come after them), identity transform.
    np.testing.assert_array_equal(ident.sample(0, 16, generator=g(0)), plain)
    for op in OPS:
        x = AugmentationGenerator(ops=(op,)).fit(ds).sample(0, 16, generator=g(0))
        assert not np.array_equal(x, plain), op


def test_flip_flips_about_half_of_the_images():
    ds = make_tiny_dataset()
    gen = AugmentationGenerator(ops=("flip",)).fit(ds)
    plain = AugmentationGenerator(ops=()).fit(ds).sample(2, 200, generator=g(0))
    flipped = gen.sample(2, 200, generator=g(0))
    same = np.array([np.array_equal(a, b) for a, b in zip(plain, flipped)])
    mirrored = np.array([np.array_equal(a[:, ::-1], b) for a, b in zip(plain, flipped)])
    assert (same | mirrored).all() and 60 < mirrored.sum() < 140


def test_does_not_touch_the_global_rng():
    ds = make_tiny_dataset()
    gen = AugmentationGenerator(ops=OPS).fit(ds)
    state = torch.get_rng_state()
    gen.sample(0, 5, generator=g(0))
    assert torch.equal(state, torch.get_rng_state())


def test_config_and_save_load_round_trip(tmp_path):
    ds = make_tiny_dataset(channels=3)
    gen = AugmentationGenerator(ops=("jitter", "flip")).fit(ds)
    cfg = gen.config()
    assert cfg["kind"] == "augment" and cfg["ops"] == ["flip", "jitter"]  # canonical order
    assert cfg["fit"]["dataset"] == ds.fingerprint()
    gen.save(tmp_path / "a")
    loaded = load_generator(tmp_path / "a")
    assert isinstance(loaded, AugmentationGenerator) and loaded.config() == cfg
    np.testing.assert_array_equal(loaded.sample(2, 6, generator=g(3)), gen.sample(2, 6, generator=g(3)))


def test_errors():
    ds = make_tiny_dataset()
    with pytest.raises(ValueError, match="choose from"):
        AugmentationGenerator(ops=("mixup",))
    with pytest.raises(ValueError, match="scale"):
        AugmentationGenerator(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="brightness"):
        AugmentationGenerator(brightness=1.5)
    with pytest.raises(ValueError, match="fit"):
        AugmentationGenerator().sample(0, 1, generator=g(0))
    gen = AugmentationGenerator().fit(ds)
    with pytest.raises(ValueError, match="out of range"):
        gen.sample(3, 1, generator=g(0))
    with pytest.raises(ValueError, match="non-negative"):
        gen.sample(0, -2, generator=g(0))
    with pytest.raises(ValueError, match="torch.Generator"):
        gen.sample(0, 1, generator=0)
