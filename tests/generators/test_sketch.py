"""SketchConditionedDDPM and sobel_edges: shapes, conditioning from real images of the class, persistence."""
import numpy as np
import pytest
import torch

from tailmix.classifiers.data import tensor_to_images
from tailmix.generators import load_generator
from tailmix.generators.sketch import SketchConditionedDDPM, sobel_edges
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(ds, **kw):
    return SketchConditionedDDPM(ds.image_shape, ds.num_classes, preset="tiny", batch_size=16, **kw)


@pytest.fixture(scope="module")
def fitted():
    ds = make_tiny_dataset(size=7)
    return ds, tiny(ds).fit(ds, generator=g(0))


def test_sobel_edges_find_edges_and_lie_in_range():
    img = np.zeros((2, 8, 8, 3), np.uint8)
    img[0, :, 4:] = 255  # a vertical step between columns 3 and 4
    e = sobel_edges(img)
    assert e.shape == (2, 1, 8, 8) and e.dtype == torch.float32
    assert e.min() >= -1 and e.max() <= 1
    assert (e[0, 0, :, 3:5] == 1).all() and (e[0, 0, :, :2] == -1).all()
    assert (e[1] == -1).all()  # a flat image has no edges
    grey = sobel_edges(img[..., :1])
    torch.testing.assert_close(grey, e)
    with pytest.raises(ValueError, match="uint8"):
        sobel_edges(img.astype(np.float32))


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_extra_input_channel(channels):
    ds = make_tiny_dataset(size=7, channels=channels)
    model = tiny(ds).fit(ds, generator=g(0))
    assert model.unet.config.in_channels == channels + 1 and model.unet.config.out_channels == channels
    x = model.sample(1, 3, generator=g(1))
    assert x.shape == (3, 7, 7, channels) and x.dtype == np.uint8


def test_sampling_is_conditioned_on_edges_of_real_images_of_the_class(fitted, monkeypatch):
    ds, model = fitted
    seen = []
    original = model._forward

    def spy(unet, x, t, labels, cond):
        seen.append(cond.clone())
        return original(unet, x, t, labels, cond)

    monkeypatch.setattr(model, "_forward", spy)
    for c in range(ds.num_classes):
        seen.clear()
        model.sample(c, 5, generator=g(c))
        rows = model.last_condition_indices
        assert len(rows) == 5 and (ds.train_labels[rows] == c).all()
        expected = model._pad(sobel_edges(ds.train_images[rows]))
        # With guidance both halves (class and null) see the same edges.
        torch.testing.assert_close(seen[0], torch.cat([expected, expected]))
    a = model.sample(2, 8, generator=g(0)), model.last_condition_indices.copy()
    b = model.sample(2, 8, generator=g(0)), model.last_condition_indices.copy()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_training_pairs_each_image_with_its_own_edges(monkeypatch):
    ds = make_tiny_dataset(size=8)
    model = tiny(ds, train_steps=2, pretrain_steps=1)
    clean, conds = [], []
    add_noise = model.train_scheduler.add_noise
    original = model._forward

    def spy_noise(x0, noise, t):
        clean.append(x0.clone())
        return add_noise(x0, noise, t)

    def spy_forward(unet, x, t, labels, cond):
        conds.append(cond.clone())
        return original(unet, x, t, labels, cond)

    monkeypatch.setattr(model.train_scheduler, "add_noise", spy_noise)
    monkeypatch.setattr(model, "_forward", spy_forward)
    model.fit(ds, generator=g(0))
    assert len(clean) == len(conds) == 3
    for x0, cond in zip(clean, conds):
        torch.testing.assert_close(cond, sobel_edges(tensor_to_images(x0)))


def test_sample_from_given_images(fitted):
    ds, model = fitted
    x = model.sample_from_images(0, ds.val_images[:4], generator=g(0))
    assert x.shape == (4, 7, 7, 1)
    with pytest.raises(ValueError, match="resize"):
        model.sample_from_images(0, np.zeros((2, 9, 9, 1), np.uint8), generator=g(0))


def test_save_load_round_trip(fitted, tmp_path):
    ds, model = fitted
    model.save(tmp_path / "s")
    loaded = load_generator(tmp_path / "s")
    assert isinstance(loaded, SketchConditionedDDPM) and loaded.config() == model.config()
    np.testing.assert_array_equal(loaded.sample(1, 4, generator=g(2)), model.sample(1, 4, generator=g(2)))
    (tmp_path / "s" / "condition_images.npz").unlink()
    with pytest.raises(FileNotFoundError, match="condition_images"):
        load_generator(tmp_path / "s")


def test_errors(fitted):
    ds, model = fitted
    with pytest.raises(ValueError, match="fit"):
        tiny(ds).sample(0, 1, generator=g(0))
    with pytest.raises(ValueError, match="out of range"):
        model.sample(7, 1, generator=g(0))
