"""Classifier guidance (noise-aware classifier, guided DDIM) and unlabeled pretraining of the DDPM (tiny preset)."""
import json

import numpy as np
import pytest
import torch

from tailmix.generators import load_generator
from tailmix.generators.ddpm import ClassConditionalDDPM, images_fingerprint
from tailmix.generators.guidance import class_probability
from tests.conftest import make_tiny_dataset
from tests.generators.test_ddpm import g, tiny  # the same tiny DDPM and seeded generator

CLF = {"steps": 150, "batch_size": 32, "lr": 5e-3, "width": 8}


@pytest.fixture(scope="module")
def guided():
    """A weak DDPM (few steps, 8 DDIM steps) with a noise-aware classifier trained on top."""
    ds = make_tiny_dataset()
    model = tiny(ds, sample_steps=8, classifier_scale=0.5, classifier=CLF).fit(ds, generator=g(0))
    return ds, model


def test_unguided_config_is_unchanged():
    ds = make_tiny_dataset()
    plain = tiny(ds).hparams()
    assert "classifier_scale" not in plain and "classifier" not in plain  # cache keys of cached DDPMs still hold
    assert tiny(ds, classifier_scale=0.0).config() == tiny(ds).config()
    assert tiny(ds, classifier_scale=2.0).hparams()["classifier_scale"] == 2.0


def test_fit_trains_the_classifier_on_noised_images(guided, monkeypatch):
    ds, model = guided
    assert len(model.guidance_history) == CLF["steps"]
    h = np.asarray(model.guidance_history)
    assert h[-20:].mean() < 0.7 * h[:20].mean()
    x = model._images_to_padded(ds.test_images)
    y = torch.as_tensor(ds.test_labels)
    clf = model.guidance_classifier
    # Nearly clean images are classified; pure noise is not (the classifier sees t and the noise level).
    acc = lambda t: float((clf(x, torch.full((len(x),), t)).argmax(1) == y).float().mean())  # noqa: E731
    with torch.no_grad():
        assert acc(0) > 0.9
        noise = torch.randn(x.shape, generator=g(1))
        p = torch.softmax(clf(noise, torch.full((len(x),), model.num_train_timesteps - 1)), 1)
    assert float(p.max(1).values.mean()) < 0.9
    # Training inputs are noised at many different timesteps.
    seen = []
    original = model.train_scheduler.add_noise

    def spy(x0, noise, t):
        seen.append(t.clone())
        return original(x0, noise, t)

    monkeypatch.setattr(model.train_scheduler, "add_noise", spy)
    twin = tiny(ds, classifier=dict(CLF, steps=3))
    twin.unet.load_state_dict(model.unet.state_dict())
    twin._mark_fitted(ds)
    twin.train_scheduler = model.train_scheduler
    twin.fit_guidance(ds, generator=g(0))
    assert len(seen) == 3 and len(torch.unique(torch.cat(seen))) > 10


def test_guided_sampling_is_seeded(guided):
    _, model = guided
    a = model.sample(2, 5, generator=g(3))
    np.testing.assert_array_equal(a, model.sample(2, 5, generator=g(3)))
    assert not np.array_equal(a, model.sample(2, 5, generator=g(4)))


def test_scale_zero_equals_unguided_sampling_exactly(guided):
    ds, model = guided
    plain = tiny(ds, sample_steps=8)
    plain.unet.load_state_dict(model.unet.state_dict())
    plain._mark_fitted(ds)
    try:
        model.classifier_scale = 0.0
        for c in range(ds.num_classes):
            np.testing.assert_array_equal(model.sample(c, 4, generator=g(c)), plain.sample(c, 4, generator=g(c)))
        model.classifier_scale = 0.5
        assert not np.array_equal(model.sample(2, 4, generator=g(2)), plain.sample(2, 4, generator=g(2)))
    finally:
        model.classifier_scale = 0.5


def test_guidance_moves_samples_toward_the_class(guided):
    ds, model = guided
    clf = model.guidance_classifier
    try:
        for c in range(ds.num_classes):
            probs = []
            for scale in (0.0, 0.25, 0.5):  # much larger scales overshoot on this weak 8-step model
                model.classifier_scale = scale
                x = model._images_to_padded(model.sample(c, 24, generator=g(10 + c)))
                probs.append(float(class_probability(clf, x, 0, c).mean()))
            assert probs[0] < probs[1] < probs[2], (c, probs)
    finally:
        model.classifier_scale = 0.5


def test_guidance_combines_with_classifier_free_guidance(guided):
    ds, model = guided
    twin = tiny(ds, sample_steps=8, classifier_scale=0.5, classifier=CLF, guidance_scale=1.0)
    twin.unet.load_state_dict(model.unet.state_dict())
    twin.guidance_classifier = model.guidance_classifier
    twin._mark_fitted(ds)
    a, b = model.sample(1, 4, generator=g(0)), twin.sample(1, 4, generator=g(0))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_save_load_round_trip(guided, tmp_path):
    ds, model = guided
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["classifier_scale"] == 0.5 and cfg["classifier"]["steps"] == CLF["steps"]
    assert (tmp_path / "m" / "guidance" / "classifier.pt").is_file()
    loaded = load_generator(tmp_path / "m")
    assert isinstance(loaded, ClassConditionalDDPM) and loaded.config() == model.config()
    np.testing.assert_array_equal(loaded.sample(2, 4, generator=g(9)), model.sample(2, 4, generator=g(9)))
    assert loaded.guidance_history == pytest.approx(model.guidance_history)
    (tmp_path / "m" / "guidance" / "classifier.pt").unlink()
    with pytest.raises(FileNotFoundError, match="classifier guidance"):
        load_generator(tmp_path / "m")


def test_guidance_on_a_fitted_ddpm_changes_its_config(guided):
    ds, model = guided
    plain = tiny(ds, sample_steps=8)
    plain.unet.load_state_dict(model.unet.state_dict())
    plain._mark_fitted(ds)
    before = plain.config()
    plain.classifier_scale = 2.0
    plain.fit_guidance(ds, generator=g(0))
    after = plain.config()
    assert after["classifier_scale"] == 2.0 and after["fit"]["state_digest"] != before["fit"]["state_digest"]


def test_guidance_errors_say_how_to_fix(guided):
    ds, model = guided
    with pytest.raises(ValueError, match="classifier_scale"):
        tiny(ds, classifier_scale=-1.0)
    with pytest.raises(ValueError, match="unknown classifier setting"):
        tiny(ds, classifier={"depth": 3})
    with pytest.raises(ValueError, match="loss"):
        tiny(ds, classifier={"loss": "focal"})
    with pytest.raises(ValueError, match="fitted DDPM"):
        tiny(ds).fit_guidance(ds, generator=g(0))
    plain = tiny(ds)
    plain.unet.load_state_dict(model.unet.state_dict())
    plain._mark_fitted(ds)
    plain.classifier_scale = 1.0
    with pytest.raises(ValueError, match="fit_guidance"):
        plain.sample(0, 2, generator=g(0))


# -- unlabeled pretraining --------------------------------------------------------------------------
def _unlabeled(n: int = 12) -> np.ndarray:
    """Images no labeled image looks like (a bright column), so the spy below recognises them."""
    x = np.zeros((n, 8, 8, 1), np.uint8)
    x[:, :, 3:5] = 250
    x[:, 0, 0, 0] = np.arange(n, dtype=np.uint8)
    return x


def test_unlabeled_images_join_the_pretraining_phase_only(monkeypatch):
    ds = make_tiny_dataset()
    model = tiny(ds, pretrain_steps=6, train_steps=4)
    unlabeled = _unlabeled()
    marks = model._images_to_padded(unlabeled)
    seen = []
    original = model.train_scheduler.add_noise

    def spy(x0, noise, t):
        hits = (x0[:, None] == marks[None]).flatten(2).all(2).any(1)  # which rows are unlabeled images
        seen.append((int(hits.sum()), len(x0)))
        return original(x0, noise, t)

    monkeypatch.setattr(model.train_scheduler, "add_noise", spy)
    model.fit(ds, generator=g(0), unlabeled=unlabeled)
    pre, cond = seen[:6], seen[6:]
    assert sum(h for h, _ in pre) > 0 and all(h == 0 for h, _ in cond)
    assert model.config()["fit"]["unlabeled"] == {"count": 12, "digest": images_fingerprint(unlabeled)}


def test_unlabeled_images_change_the_model_and_none_keeps_it():
    ds = make_tiny_dataset()
    plain = tiny(ds).fit(ds, generator=g(0))
    again = tiny(ds).fit(ds, generator=g(0), unlabeled=None)
    assert again.config() == plain.config() and "unlabeled" not in plain.config()["fit"]
    more = tiny(ds).fit(ds, generator=g(0), unlabeled=_unlabeled())
    assert more.config()["fit"]["state_digest"] != plain.config()["fit"]["state_digest"]
    assert not np.array_equal(more.sample(0, 4, generator=g(1)), plain.sample(0, 4, generator=g(1)))
    twin = tiny(ds).fit(ds, generator=g(0), unlabeled=_unlabeled())
    assert twin.config() == more.config()


def test_unlabeled_errors_say_how_to_fix():
    ds = make_tiny_dataset()
    with pytest.raises(ValueError, match="uint8 images shaped"):
        tiny(ds).fit(ds, generator=g(0), unlabeled=np.zeros((3, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="no images"):
        tiny(ds).fit(ds, generator=g(0), unlabeled=np.zeros((0, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="pretrain_steps"):
        tiny(ds, pretrain_steps=0).fit(ds, generator=g(0), unlabeled=_unlabeled())
    from tailmix.generators.sketch import SketchConditionedDDPM

    sketch = SketchConditionedDDPM(ds.image_shape, ds.num_classes, preset="tiny")
    with pytest.raises(ValueError, match="plain DDPM"):
        sketch.fit(ds, generator=g(0), unlabeled=_unlabeled())


def test_guided_epsilon_is_the_formula_and_clipping_never_turns_it_around():
    from tailmix.generators.guidance import guided_epsilon

    gen = g(0)
    x, eps, grad = (torch.randn(4, 1, 8, 8, generator=gen) for _ in range(3))
    for ab in (0.3, 0.9):
        ab = torch.tensor(ab)
        torch.testing.assert_close(guided_epsilon(eps, x, ab, grad, 2.0, None),
                                   eps - (1 - ab).sqrt() * 2.0 * grad)
    # At the first "trailing" DDIM step alpha_bar is ~2e-9: the implied x0 moves with the gradient (clipped),
    # whereas a scheduler clipping the raw corrected x0 would leave only the direction term, against it.
    ab = torch.tensor(2.4e-9)
    x0 = lambda e: (x - (1 - ab).sqrt() * e) / ab.sqrt()  # noqa: E731
    base = x0(guided_epsilon(eps, x, ab, grad, 0.0, 1.0))
    moved = x0(guided_epsilon(eps, x, ab, grad, 0.5, 1.0)) - base
    assert float((moved * grad).sum()) > 0 and float(moved.abs().max()) <= 2.0 + 1e-3
