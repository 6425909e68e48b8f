"""The classifier filter: what it keeps, when a fill stops, and the long-tail-calibrated reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tailmix.generators.filter import CALIBRATIONS, ClassifierFilter, FilterResult, NoFilter, ReferenceScorer
from tests.generators.fakes import FakeGenerator, code_scorer


def table_scorer(table: np.ndarray):
    """Scorer returning row ``images[i, 0, 0, 0]`` of a fixed probability table."""
    return lambda images: table[images[:, 0, 0, 0].astype(int)]


def row_images(rows) -> np.ndarray:
    x = np.zeros((len(rows), 4, 4, 1), np.uint8)
    x[:, 0, 0, 0] = rows
    return x


def test_select_keeps_only_confident_correct_samples():
    table = np.array([[0.90, 0.05, 0.05],   # class 0, confident          -> keep for 0
                      [0.45, 0.35, 0.20],   # class 0 argmax, below tau    -> reject
                      [0.40, 0.60, 0.00],   # class 1 argmax               -> reject for 0
                      [0.50, 0.25, 0.25],   # exactly tau                  -> keep
                      [0.30, 0.30, 0.40]])  # class 2
    filt = ClassifierFilter(table_scorer(table), tau=0.5)
    keep, conf = filt.select(row_images([0, 1, 2, 3, 4]), 0)
    assert keep.tolist() == [True, False, False, True, False]
    np.testing.assert_allclose(conf, table[:, 0], rtol=1e-6)
    assert conf.dtype == np.float32
    keep1, _ = filt.select(row_images([0, 1, 2, 3, 4]), 1)
    assert keep1.tolist() == [False, False, True, False, False]
    # a low threshold still demands the argmax
    keep2, _ = ClassifierFilter(table_scorer(table), tau=0.3).select(row_images([2]), 0)
    assert keep2.tolist() == [False]


def test_select_checks_the_scorer_output():
    filt = ClassifierFilter(lambda x: np.ones((len(x) + 1, 3)) / 3)
    with pytest.raises(ValueError, match="shaped"):
        filt.select(row_images([0, 0]), 0)
    filt = ClassifierFilter(lambda x: np.full((len(x), 3), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        filt.select(row_images([0]), 0)
    with pytest.raises(ValueError, match="out of range"):
        ClassifierFilter(code_scorer(3)).select(row_images([0]), 5)


@pytest.mark.parametrize("kwargs, match", [({"tau": 1.5}, "tau"), ({"tau": -0.1}, "tau"),
                                           ({"max_tries": 0}, "max_tries"), ({"name": ""}, "name")])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassifierFilter(code_scorer(3), **kwargs)
    with pytest.raises(ValueError, match="callable"):
        ClassifierFilter("not a scorer")


def fake_sampler(class_id: int, wrong_rate: float, num_classes: int = 3, log: list | None = None):
    gen = FakeGenerator(wrong_rate=wrong_rate)
    gen.image_shape, gen.num_classes, gen.fitted = (4, 4, 1), num_classes, True

    def sample(n, generator):
        if log is not None:
            log.append(n)
        return gen.sample(class_id, n, generator=generator)

    return sample


def test_fill_stops_at_quota_and_records_acceptance():
    # every code says class 0 and conf >= 0.5 passes: acceptance is P(conf >= 0.5) ~ 0.5
    log: list[int] = []
    filt = ClassifierFilter(code_scorer(3), tau=0.5, max_tries=50)
    res = filt.fill(fake_sampler(0, 0.0, log=log), 0, 40, generator=torch.Generator().manual_seed(0), batch_size=16)
    assert isinstance(res, FilterResult)
    assert len(res.images) == 40 and res.quota_met and res.quota == 40
    assert res.images.dtype == np.uint8 and res.images.shape[1:] == (4, 4, 1)
    assert len(res.confidences) == 40 and np.all(res.confidences >= 0.5)
    assert np.all(res.images[:, 0, 0, 0] == 0)
    assert res.candidates_tried == sum(log) and res.tries == len(log)
    assert res.accepted >= 40
    assert res.acceptance_rate == pytest.approx(res.accepted / res.candidates_tried)
    assert 0.3 < res.acceptance_rate < 0.7
    assert max(log) <= 16


def test_fill_stops_at_max_tries_with_fewer_images():
    log: list[int] = []
    filt = ClassifierFilter(code_scorer(3), tau=0.5, max_tries=4)
    # every sample is coded as the next class: nothing passes
    res = filt.fill(fake_sampler(0, 1.0, log=log), 0, 30, generator=torch.Generator().manual_seed(1), batch_size=8)
    assert res.tries == 4 and len(log) == 4
    assert len(res.images) == 0 and res.images.shape[1:] == (4, 4, 1) and not res.quota_met
    assert res.accepted == 0 and res.acceptance_rate == 0.0 and res.candidates_tried == sum(log)


def test_fill_adapts_small_batches_and_is_seeded():
    filt = ClassifierFilter(lambda x: np.tile([1.0, 0.0, 0.0], (len(x), 1)), tau=0.5)
    log: list[int] = []
    res = filt.fill(fake_sampler(0, 0.0, log=log), 0, 10, generator=torch.Generator().manual_seed(2), batch_size=4)
    assert log == [4, 4, 2] and res.tries == 3 and res.candidates_tried == 10 and res.acceptance_rate == 1.0
    filt = ClassifierFilter(code_scorer(3), tau=0.6)
    a = filt.fill(fake_sampler(1, 0.3), 1, 12, generator=torch.Generator().manual_seed(5), batch_size=8)
    b = filt.fill(fake_sampler(1, 0.3), 1, 12, generator=torch.Generator().manual_seed(5), batch_size=8)
    c = filt.fill(fake_sampler(1, 0.3), 1, 12, generator=torch.Generator().manual_seed(6), batch_size=8)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.candidates_tried == b.candidates_tried
    assert not np.array_equal(a.images, c.images)


def test_fill_rejects_bad_arguments_and_bad_batches():
    filt = ClassifierFilter(code_scorer(3))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="quota"):
        filt.fill(fake_sampler(0, 0.0), 0, -1, generator=g)
    with pytest.raises(ValueError, match="batch_size"):
        filt.fill(fake_sampler(0, 0.0), 0, 5, generator=g, batch_size=0)
    with pytest.raises(ValueError, match="torch.Generator"):
        filt.fill(fake_sampler(0, 0.0), 0, 5, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        filt.fill(lambda n, gen: np.zeros((n, 4, 4, 1), np.float32), 0, 5, generator=g)
    with pytest.raises(ValueError, match="must return 3"):
        filt.fill(lambda n, gen: np.zeros((n + 1, 4, 4, 1), np.uint8), 0, 3, generator=g)


def test_no_filter_keeps_everything():
    nf = NoFilter()
    keep, conf = nf.select(row_images([0, 1, 2]), 0)
    assert keep.all() and np.isnan(conf).all()
    log: list[int] = []
    res = nf.fill(fake_sampler(2, 1.0, log=log), 2, 11, generator=torch.Generator().manual_seed(0), batch_size=4)
    assert len(res.images) == 11 and log == [4, 4, 3] and res.tries == 3
    assert res.acceptance_rate == 1.0 and np.isnan(res.confidences).all() and res.quota_met
    assert nf.config() is None
    empty = nf.fill(fake_sampler(2, 0.0), 2, 0, generator=torch.Generator())
    assert len(empty.images) == 0 and math.isnan(empty.acceptance_rate)


def test_config_identifies_the_filter():
    a = ClassifierFilter(code_scorer(3), tau=0.5, name="codes").config()
    assert a == {"kind": "classifier", "name": "codes", "tau": 0.5, "max_tries": 10}
    assert ClassifierFilter(code_scorer(3), tau=0.7, name="codes").config() != a
    with pytest.raises(ValueError, match="custom scorer"):
        ClassifierFilter(code_scorer(3)).save("unused")


# -- the trained reference -------------------------------------------------------------------------
def _balanced_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    pred = probs.argmax(1)
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


def test_train_reference_is_calibrated_seeded_and_saves(tiny_dataset, tmp_path):
    filt = ClassifierFilter.train_reference(tiny_dataset, tau=0.5, epochs=15,
                                            generator=torch.Generator().manual_seed(0))
    assert isinstance(filt.scorer, ReferenceScorer) and filt.name == "reference"
    x, y = tiny_dataset.split("val")
    probs = filt.scorer(x)
    assert probs.shape == (len(x), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert _balanced_accuracy(probs, y) >= 0.8
    # the rarest class (4 train images) is not filtered away: most of its real val images pass
    keep, _ = filt.select(x[y == 2], 2)
    assert keep.mean() >= 0.5
    cfg = filt.config()
    assert cfg["reference"]["calibration"] == "logit_adjustment"
    assert cfg["reference"]["class_counts"] == [24, 10, 4]
    assert cfg["reference"]["dataset"] == tiny_dataset.fingerprint()
    assert len(cfg["reference"]["state_digest"]) == 64
    # same generator seed -> same weights; another seed -> others
    again = ClassifierFilter.train_reference(tiny_dataset, epochs=15, generator=torch.Generator().manual_seed(0))
    assert again.config() == cfg
    other = ClassifierFilter.train_reference(tiny_dataset, epochs=15, generator=torch.Generator().manual_seed(1))
    assert other.config()["reference"]["state_digest"] != cfg["reference"]["state_digest"]
    # save / load round trip keeps the scores and the config (so a bank key stays the same)
    filt.save(tmp_path / "ref")
    loaded = ClassifierFilter.load(tmp_path / "ref")
    assert loaded.config() == cfg
    np.testing.assert_allclose(loaded.scorer(x), probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("calibration", ["balanced_softmax", "class_balanced_sampling", "none"])
def test_train_reference_other_calibrations(tiny_dataset, calibration):
    filt = ClassifierFilter.train_reference(tiny_dataset, calibration=calibration, epochs=8,
                                            generator=torch.Generator().manual_seed(0))
    assert filt.config()["reference"]["calibration"] == calibration
    probs = filt.scorer(tiny_dataset.val_images)
    assert probs.shape == (len(tiny_dataset.val_images), 3) and np.isfinite(probs).all()


def test_train_reference_rejects_bad_calibration_and_corrupt_weights(tiny_dataset, tmp_path):
    assert "logit_adjustment" in CALIBRATIONS
    with pytest.raises(ValueError, match="calibration"):
        ClassifierFilter.train_reference(tiny_dataset, calibration="softmax")
    filt = ClassifierFilter.train_reference(tiny_dataset, epochs=1, generator=torch.Generator().manual_seed(0))
    folder = filt.save(tmp_path / "ref")
    state = torch.load(folder / "reference.pt", weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1.0
    torch.save(state, folder / "reference.pt")
    with pytest.raises(ValueError, match="digest"):
        ClassifierFilter.load(folder)
    with pytest.raises(ValueError, match="filter.json"):
        ClassifierFilter.load(tmp_path / "nowhere")
