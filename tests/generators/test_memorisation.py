"""Memorisation and leakage of a bank: the near-copy filter (alone, composed, in the pool) and the bank report."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from tailmix.generators.augment import AugmentationGenerator
from tailmix.generators.filter import ClassifierFilter, NoFilter
from tailmix.generators.memorisation import (NearCopyFilter, NearCopyFilterResult, bank_leakage_report,
                                     format_bank_leakage)
from tailmix.generators.pool import GeneratorPool
from tests.generators.fakes import FakeGenerator, code_scorer


def noise_images(rng: np.random.Generator, n: int, shape=(8, 8, 1)) -> np.ndarray:
    """Uniform noise: far (RMS ~0.3+) from the tiny dataset's bar images."""
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def nudged(images: np.ndarray, by: int = 3) -> np.ndarray:
    """Every pixel moved ``by`` grey levels (RMS ~by/255: a near-copy at threshold 0.05)."""
    x = images.astype(np.int16)
    return np.where(x + by <= 255, x + by, x - by).astype(np.uint8)


def augment_bank(dataset, root, *, noise_std: float, filter=None, per_class: int = 6, seed: int = 0):
    gen = AugmentationGenerator(ops=("noise",), noise_std=noise_std).fit(dataset)
    return GeneratorPool({"aug": gen}, devices="cpu").fill_bank(dataset, root, per_class=per_class, filter=filter,
                                                                seed=seed, progress=False)


# -- the filter on its own ------------------------------------------------------------------------------
def test_select_rejects_copies_and_nudged_copies_and_counts_per_class(tiny_dataset):
    x, y = tiny_dataset.split("train")
    rng = np.random.default_rng(0)
    filt = NearCopyFilter(x, y, threshold=0.05)
    real0, real2 = x[y == 0], x[y == 2]
    cand0 = np.concatenate([real0[:3], nudged(real0[3:5]), noise_images(rng, 4)])
    keep, conf = filt.select(cand0, 0)
    assert keep.tolist() == [False] * 5 + [True] * 4
    assert conf.dtype == np.float32 and np.isnan(conf).all()  # no inner filter: no confidence
    cand2 = np.concatenate([noise_images(rng, 2), real2[:1]])
    assert filt.select(cand2, 2)[0].tolist() == [True, True, False]
    assert filt.near_copy_counts == {0: 5, 2: 1}
    assert filt.screened_counts == {0: 9, 2: 3}
    # the nearest reference is the copied real image itself (indices into the real set)
    idx, dist = filt.nearest(real2[:2], 2)
    assert idx.tolist() == np.flatnonzero(y == 2)[:2].tolist() and dist.tolist() == [0.0, 0.0]
    filt.reset_counts()
    assert filt.near_copy_counts == {} and filt.screened_counts == {}


def test_same_class_only_decides_which_real_images_count(tiny_dataset):
    x, y = tiny_dataset.split("train")
    copies_of_class1 = x[y == 1][:3]
    assert NearCopyFilter(x, y).select(copies_of_class1, 0)[0].all()  # not compared with class 1
    assert not NearCopyFilter(x, y, same_class_only=False).select(copies_of_class1, 0)[0].any()
    # a class without real images has nothing to copy
    no2 = y != 2
    assert NearCopyFilter(x[no2], y[no2]).select(x[y == 2][:2], 2)[0].all()


def copy_sampler(real: np.ndarray, copy_rate: float, rng_shape=(8, 8, 1)):
    """Candidates: with probability ``copy_rate`` an exact copy of a real image, else uniform noise."""

    def sample(n, generator):
        u = torch.rand(n, generator=generator).numpy()
        pick = torch.randint(0, len(real), (n,), generator=generator).numpy()
        noise = torch.randint(0, 256, (n, *rng_shape), generator=generator, dtype=torch.int64).numpy()
        return np.where((u < copy_rate)[:, None, None, None], real[pick], noise).astype(np.uint8)

    return sample


def test_fill_rejects_near_copies_and_reports_them(tiny_dataset):
    x, y = tiny_dataset.split("train")
    filt = NearCopyFilter(x, y, threshold=0.05, max_tries=20)
    res = filt.fill(copy_sampler(x[y == 1], 0.5), 1, 30, generator=torch.Generator().manual_seed(3), batch_size=16)
    assert isinstance(res, NearCopyFilterResult)
    assert len(res.images) == 30 and res.quota_met
    assert res.near_copies > 0 and res.near_copies + res.accepted == res.candidates_tried
    assert filt.near_copy_counts == {1: res.near_copies}
    assert filt.screened_counts == {1: res.candidates_tried}
    assert (filt.nearest(res.images, 1)[1] >= 0.05).all()  # nothing kept is a near-copy
    assert np.isnan(res.confidences).all() and len(res.confidences) == 30
    again = NearCopyFilter(x, y, threshold=0.05, max_tries=20).fill(
        copy_sampler(x[y == 1], 0.5), 1, 30, generator=torch.Generator().manual_seed(3), batch_size=16)
    np.testing.assert_array_equal(again.images, res.images)  # seeded
    # only copies: the try limit stops the fill with nothing kept
    stuck = NearCopyFilter(x, y, max_tries=3).fill(copy_sampler(x[y == 1], 1.0), 1, 5,
                                                   generator=torch.Generator().manual_seed(0), batch_size=8)
    assert len(stuck.images) == 0 and stuck.tries == 3 and stuck.near_copies == stuck.candidates_tried
    assert not stuck.quota_met and stuck.images.shape[1:] == (8, 8, 1)


# -- composed with a classifier filter -----------------------------------------------------------------------
def fake_sampler(class_id: int, wrong_rate: float = 0.3):
    gen = FakeGenerator(wrong_rate=wrong_rate)
    gen.image_shape, gen.num_classes, gen.fitted = (4, 4, 1), 3, True
    return lambda n, generator: gen.sample(class_id, n, generator=generator)


def test_inner_classifier_filter_keeps_its_confidence_semantics():
    rng = np.random.default_rng(1)
    unrelated = rng.integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
    labels = np.arange(12) % 3
    inner = ClassifierFilter(code_scorer(3), tau=0.5, max_tries=7, name="codes")
    composed = NearCopyFilter(unrelated, labels, threshold=0.05, inner=inner)
    assert composed.max_tries == 7  # the inner filter's try limit
    # no near-copy among the candidates: exactly the inner filter's own fill
    a = composed.fill(fake_sampler(2), 2, 25, generator=torch.Generator().manual_seed(5), batch_size=8)
    b = inner.fill(fake_sampler(2), 2, 25, generator=torch.Generator().manual_seed(5), batch_size=8)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.confidences, b.confidences)
    assert (a.candidates_tried, a.accepted, a.tries, a.near_copies) == (b.candidates_tried, b.accepted, b.tries, 0)
    # the real set now holds the first batch the sampler produces: those candidates become near-copies
    first = fake_sampler(2)(8, torch.Generator().manual_seed(5))
    composed = NearCopyFilter(first, np.full(8, 2), threshold=0.05, inner=inner)
    keep, conf = composed.select(first, 2)
    inner_keep, inner_conf = inner.select(first, 2)
    assert inner_keep.any() and not keep.any() and np.isnan(conf).all()
    fresh = fake_sampler(2)(40, torch.Generator().manual_seed(9))
    keep, conf = composed.select(fresh, 2)
    inner_keep, inner_conf = inner.select(fresh, 2)
    np.testing.assert_array_equal(keep, inner_keep)  # no near-copies here: the inner decision stands
    np.testing.assert_array_equal(conf, inner_conf)
    c = composed.fill(fake_sampler(2), 2, 25, generator=torch.Generator().manual_seed(5), batch_size=8)
    assert c.near_copies == 8 and len(c.images) > 0  # the first batch (8 candidates) is the real set
    probs = code_scorer(3)(c.images)
    assert (probs.argmax(1) == 2).all() and (c.confidences >= 0.5).all()
    np.testing.assert_allclose(c.confidences, probs[:, 2], rtol=1e-6)
    assert c.accepted + c.near_copies <= c.candidates_tried


def test_no_filter_inner_is_the_same_as_none(tiny_dataset):
    x, y = tiny_dataset.split("train")
    assert NearCopyFilter(x, y, inner=NoFilter()).config() == NearCopyFilter(x, y).config()
    assert NearCopyFilter(x, y).config()["inner"] is None


# -- in the pool -----------------------------------------------------------------------------------------
def test_pool_fill_rejects_identity_like_augmentations(tiny_dataset, tmp_path):
    filt = NearCopyFilter.from_dataset(tiny_dataset, threshold=0.05, max_tries=2)
    bank = augment_bank(tiny_dataset, tmp_path, noise_std=0.01, filter=filt, per_class=4)
    manifest = bank.manifest
    tried = {c: manifest["classes"][str(c)]["tried"] for c in range(3)}
    assert bank.counts().tolist() == [0, 0, 0]  # every sample was ~0.01 from a real image
    assert all(t > 0 for t in tried.values())
    assert filt.near_copy_counts == tried == filt.screened_counts
    assert manifest["filter_config"] == filt.config()
    # a threshold below the noise keeps everything
    loose = NearCopyFilter.from_dataset(tiny_dataset, threshold=0.002)
    kept = augment_bank(tiny_dataset, tmp_path, noise_std=0.01, filter=loose, per_class=4)
    assert kept.counts().tolist() == [4, 4, 4] and loose.near_copy_counts == {0: 0, 1: 0, 2: 0}
    assert kept.key != bank.key
    # a near-copy filter alone gives no confidences: the manifest records null, and stays strict JSON
    for path in tmp_path.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path.name} holds {c}"))
    assert np.isnan(kept.confidences(0)).all() and kept.manifest["classes"]["0"]["mean_confidence"] is None


def test_filtered_bank_passes_the_report_at_the_same_threshold(tiny_dataset, tmp_path):
    t = 0.045  # about the RMS of noise_std 0.05: some samples fall below, some above
    filt = NearCopyFilter.from_dataset(tiny_dataset, threshold=t, max_tries=20)
    filtered = augment_bank(tiny_dataset, tmp_path, noise_std=0.05, filter=filt, per_class=8)
    plain = augment_bank(tiny_dataset, tmp_path, noise_std=0.05, per_class=8)
    assert filtered.counts().tolist() == [8, 8, 8]
    assert all(v > 0 for v in filt.near_copy_counts.values())
    rep_f = bank_leakage_report(filtered, tiny_dataset, threshold=t)
    rep_p = bank_leakage_report(plain, tiny_dataset, threshold=t)
    assert [r["near"]["count"] for r in rep_f["classes"]] == [0, 0, 0]
    assert all(r["near"]["min_distance"] >= t for r in rep_f["classes"])
    assert rep_p["totals"]["near"] > 0 and not rep_p["clean"]
    for r in rep_p["classes"]:  # the report and the filter agree on what a near-copy is
        keep, _ = filt.select(plain.images(r["class_id"]), r["class_id"])
        assert r["near"]["count"] == int((~keep).sum())
        assert r["near"]["fraction"] == pytest.approx(r["near"]["count"] / 8)


def test_bank_key_changes_with_the_near_copy_filter(tiny_dataset, tmp_path):
    gen = FakeGenerator().fit(tiny_dataset)
    pool = GeneratorPool({"fake": gen}, devices="cpu")
    inner = ClassifierFilter(code_scorer(3), tau=0.0, max_tries=3, name="codes")
    x, y = tiny_dataset.split("train")

    def key(filt):
        return pool.fill_bank(tiny_dataset, tmp_path, per_class=2, filter=filt, progress=False).key

    keys = [key(None), key(inner), key(NearCopyFilter(x, y, inner=inner)),
            key(NearCopyFilter(x, y, threshold=0.06, inner=inner)),
            key(NearCopyFilter(x, y, inner=inner, same_class_only=False)), key(NearCopyFilter(x, y))]
    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1
    keys.append(key(NearCopyFilter(changed, y, inner=inner)))
    assert len(set(keys)) == len(keys)
    assert key(NearCopyFilter(x.copy(), y.copy(), inner=inner)) == keys[2]  # same inputs, same bank


def even_scorer(images: np.ndarray) -> np.ndarray:
    """A picklable scorer (module level): every class equally likely."""
    return np.full((len(images), 3), 1.0 / 3.0)


def test_survives_pickling_for_ray_workers(tiny_dataset):
    x, y = tiny_dataset.split("train")
    filt = NearCopyFilter(x, y, inner=ClassifierFilter(even_scorer, tau=0.3, name="even"))
    filt.select(x[:2], int(y[0]))
    copy = pickle.loads(pickle.dumps(filt))
    assert copy.config() == filt.config() and copy.near_copy_counts == filt.near_copy_counts == {0: 2}
    copy.select(x[:1], int(y[0]))  # its lock was rebuilt
    assert copy.near_copy_counts == {0: 3}
    # the Ray pool moves a GPU reference through `filt.scorer`: it must reach the inner filter's
    assert copy.scorer is even_scorer and NearCopyFilter(x, y).scorer is None


def test_the_real_set_is_a_private_copy(tiny_dataset):
    x, y = tiny_dataset.split("train")
    x = x.copy()
    filt = NearCopyFilter(x, y)
    before = filt.config()
    x[:] = 0  # the caller changing its array must not change what the filter (and its bank key) means
    assert filt.config() == before
    assert filt.select(tiny_dataset.train_images[:1], int(y[0]))[0].tolist() == [False]


# -- the report ------------------------------------------------------------------------------------------
class PlantedGenerator(FakeGenerator):
    """Returns fixed images per class in order (cycling); ignores the seed."""

    kind = "planted"

    def __init__(self, planted: dict[int, np.ndarray]) -> None:
        super().__init__()
        self.planted = planted

    def sample(self, class_id, n, *, generator):
        pool = self.planted[int(class_id)]
        return pool[np.arange(n) % len(pool)]

    def config(self):
        return {**super().config(), "planted": {str(c): int(v.sum()) for c, v in self.planted.items()}}


def test_exact_copies_planted_in_a_bank_are_reported_for_their_split_and_class(tiny_dataset, tmp_path):
    ds = tiny_dataset
    rng = np.random.default_rng(7)
    tr_x, tr_y = ds.split("train")
    va_x, va_y = ds.split("val")
    te_x, te_y = ds.split("test")
    val0 = np.flatnonzero(va_y == 0)[:2]
    test1 = np.flatnonzero(te_y == 1)[:1]
    train0 = np.flatnonzero(tr_y == 0)[:1]
    train2 = np.flatnonzero(tr_y == 2)[:1]
    planted = {0: np.concatenate([noise_images(rng, 2), va_x[val0], te_x[test1], tr_x[train0], noise_images(rng, 2)]),
               1: noise_images(rng, 8),
               2: np.concatenate([tr_x[train2], noise_images(rng, 7)])}
    gen = PlantedGenerator(planted).fit(ds)
    bank = GeneratorPool({"p": gen}, devices="cpu").fill_bank(ds, tmp_path, per_class=8, progress=False)
    rep = bank_leakage_report(bank, ds, threshold=0.05)
    c0, c1, c2 = rep["classes"]
    assert c0["exact"]["val"] == {"copies": 2, "fraction": 0.25, "other_class": 0,
                                  "examples": [[2, int(val0[0])], [3, int(val0[1])]]}
    assert c0["exact"]["test"]["copies"] == 1 and c0["exact"]["test"]["other_class"] == 1  # a class-1 test image
    assert c0["exact"]["test"]["examples"] == [[4, int(test1[0])]]
    assert c0["exact"]["train"]["copies"] == 1 and c0["exact"]["train"]["examples"] == [[5, int(train0[0])]]
    assert c0["near"]["count"] == 1 and c0["near"]["min_distance"] == 0.0  # the train copy; val/test are far
    assert c0["near"]["examples"] == [[5, int(train0[0]), 0.0]]
    assert all(c1["exact"][s]["copies"] == 0 for s in ("train", "val", "test")) and c1["near"]["count"] == 0
    assert c2["exact"]["train"]["copies"] == 1 and c2["exact"]["val"]["copies"] == 0
    assert c2["near"]["count"] == 1 and c2["near"]["examples"][0][:2] == [0, int(train2[0])]
    assert rep["totals"] == {"n": 24, "exact": {"train": 2, "val": 2, "test": 1}, "near": 2}
    assert rep["clean"] is False and rep["dataset_matches_bank"] is True and rep["bank"] == bank.key
    text = format_bank_leakage(rep, ds.class_names)
    assert "2 exact copies of train, 2 of val, 1 of test" in text and "2 (25%)" in text
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep


def test_a_clean_bank_reports_zeros(tiny_dataset, tmp_path):
    bank = augment_bank(tiny_dataset, tmp_path, noise_std=0.3, per_class=6)
    rep = bank_leakage_report(bank, tiny_dataset)
    assert rep["clean"] is True
    assert rep["totals"] == {"n": 18, "exact": {"train": 0, "val": 0, "test": 0}, "near": 0}
    for r in rep["classes"]:
        assert r["n"] == 6 and r["near"]["fraction"] == 0.0 and r["near"]["examples"] == []
        assert r["near"]["min_distance"] >= 0.05 and r["n_real_train"] == tiny_dataset.train_counts[r["class_id"]]
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep
    text = format_bank_leakage(rep, ["alpha", "beta", "gamma"])
    assert "verdict: clean" in text and "gamma" in text and "c0" not in text


def test_report_handles_empty_classes_and_mismatched_banks(tiny_dataset, tmp_path):
    from tests.conftest import make_tiny_dataset

    filt = NearCopyFilter.from_dataset(tiny_dataset, threshold=0.05, max_tries=1)
    empty = augment_bank(tiny_dataset, tmp_path, noise_std=0.0, filter=filt, per_class=3)  # exact copies only
    rep = bank_leakage_report(empty, tiny_dataset)
    assert all(r["n"] == 0 and r["near"]["min_distance"] is None and r["near"]["fraction"] is None
               and r["exact"]["train"]["fraction"] is None for r in rep["classes"])
    assert rep["clean"] is True and " - " not in format_bank_leakage(rep).split("\n")[0]
    json.dumps(rep, allow_nan=False)
    with pytest.raises(ValueError, match="classes"):
        bank_leakage_report(empty, make_tiny_dataset(num_classes=2, counts=(5, 5)))
    other = make_tiny_dataset(seed=1)
    assert bank_leakage_report(empty, other)["dataset_matches_bank"] is False
    assert "another dataset" in format_bank_leakage(bank_leakage_report(empty, other))


# -- bad arguments -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0, 0.0, -0.1, 1.5, math.nan, math.inf, True, "0.05", None])
def test_bad_threshold_raises(tiny_dataset, tmp_path, threshold):
    x, y = tiny_dataset.split("train")
    with pytest.raises(ValueError, match="threshold"):
        NearCopyFilter(x, y, threshold=threshold)
    bank = augment_bank(tiny_dataset, tmp_path, noise_std=0.3, per_class=1)
    with pytest.raises(ValueError, match="threshold"):
        bank_leakage_report(bank, tiny_dataset, threshold=threshold)


def test_other_bad_arguments_raise(tiny_dataset):
    x, y = tiny_dataset.split("train")
    with pytest.raises(ValueError, match="pixel units"):
        NearCopyFilter(x, y, threshold=13)  # grey levels, not [0, 1] units
    with pytest.raises(ValueError, match="uint8"):
        NearCopyFilter(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="uint8"):
        NearCopyFilter(x[:0], y[:0])
    with pytest.raises(ValueError, match="real_labels"):
        NearCopyFilter(x, y[:-1])
    with pytest.raises(ValueError, match="real_labels"):
        NearCopyFilter(x, -np.ones_like(y))
    with pytest.raises(ValueError, match="inner"):
        NearCopyFilter(x, y, inner=lambda images: images)
    with pytest.raises(ValueError, match="max_tries"):
        NearCopyFilter(x, y, max_tries=0)
    with pytest.raises(ValueError, match="same_class_only"):
        NearCopyFilter(x, y, same_class_only=1)
    filt = NearCopyFilter(x, y)
    with pytest.raises(ValueError, match="shaped"):
        filt.select(np.zeros((2, 4, 4, 1), np.uint8), 0)
    with pytest.raises(ValueError, match="class_id"):
        filt.select(x[:1], -1)
    with pytest.raises(ValueError, match="quota"):
        filt.fill(copy_sampler(x, 0.0), 0, -1, generator=torch.Generator())
