"""Leakage checks: exact copies across and within splits, synthetic copies, near copies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tailmix.envs.datasets import from_arrays, load_digits_lt, load_medmnist
from tailmix.io.leakage import format_leakage_report, leakage_report, near_copies, nearest_real, pixel_hashes


def _distinct_images(n: int, seed: int, size: int = 6, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _planted_dataset():
    """Train 12 / val 6 / test 6 distinct images, then plant: val[1] = train[4] (same label), test[2] = train[7]
    (other label), test[5] = val[3], and train[10] = train[0] (other label)."""
    tr, va, te = _distinct_images(12, 0), _distinct_images(6, 1), _distinct_images(6, 2)
    ytr, yva, yte = np.arange(12) % 2, np.arange(6) % 2, np.arange(6) % 2
    va[1] = tr[4]
    yva[1] = ytr[4]
    te[2] = tr[7]
    yte[2] = 1 - ytr[7]
    te[5] = va[3]
    yte[5] = yva[3]
    tr[10] = tr[0]
    ytr[10] = 1
    return from_arrays(tr, ytr, va, yva, te, yte, name="planted")


def test_pixel_hashes_equal_iff_pixels_equal():
    x = _distinct_images(5, 0)
    x[3] = x[1]
    h = pixel_hashes(x)
    assert h.dtype == np.uint64 and h.shape == (5,)
    assert h[3] == h[1] and len(set(h.tolist())) == 4
    y = x.copy()
    y[0, 0, 0, 0] ^= 1  # one grey level in one pixel
    assert pixel_hashes(y)[0] != h[0]
    # The same bytes in another shape are another image.
    assert pixel_hashes(x.reshape(5, 36, 1, 1))[0] != h[0]
    np.testing.assert_array_equal(pixel_hashes(x), h)  # deterministic


def test_report_finds_every_planted_copy():
    r = leakage_report(_planted_dataset())
    assert r["across"]["train/val"]["pairs"] == 1 and r["across"]["train/val"]["examples"] == [(4, 1)]
    assert r["across"]["train/val"]["label_mismatches"] == 0
    assert r["across"]["train/test"]["examples"] == [(7, 2)]
    assert r["across"]["train/test"]["label_mismatches"] == 1
    assert r["across"]["val/test"]["examples"] == [(3, 5)]
    assert r["within"]["train"] == {"groups": 1, "extra_copies": 1, "label_conflicts": 1, "examples": [(0, 10)]}
    assert r["within"]["val"]["groups"] == 0 and r["within"]["test"]["groups"] == 0
    assert r["synthetic"] is None and r["clean"] is False
    json.dumps(r)  # JSON-friendly: can be saved next to a benchmark
    text = format_leakage_report(r)
    assert "train/test: 1 identical pair(s)" in text and "1 with different labels" in text
    assert "train: 1 duplicate image(s)" in text and "copies found" in text


def test_clean_dataset_reports_clean():
    ds = from_arrays(_distinct_images(8, 0), np.arange(8) % 2, _distinct_images(4, 1), np.arange(4) % 2,
                     _distinct_images(4, 2), np.arange(4) % 2)
    r = leakage_report(ds, synthetic={0: _distinct_images(3, 9), 1: _distinct_images(0, 9)})
    assert r["clean"] is True
    assert r["synthetic"][0]["train"]["copies"] == 0 and r["synthetic"][1]["n"] == 0
    assert "verdict: clean" in format_leakage_report(r)


def test_synthetic_exact_copies_per_class():
    ds = _planted_dataset()
    syn0 = np.concatenate([ds.train_images[[2, 1]], _distinct_images(3, 7), ds.test_images[[0]]])
    syn1 = np.concatenate([_distinct_images(2, 8), _distinct_images(2, 8)[:1]])  # one internal duplicate
    r = leakage_report(ds, synthetic={0: syn0, 1: syn1})
    e0 = r["synthetic"][0]
    assert e0["n"] == 6 and e0["duplicates"] == 0
    assert e0["train"]["copies"] == 2 and e0["train"]["examples"] == [(0, 2), (1, 1)]
    assert e0["train"]["other_class"] == 1  # train[1] has label 1, copied into class 0's pool
    assert e0["test"]["copies"] == 1 and e0["val"]["copies"] == 0
    assert r["synthetic"][1]["duplicates"] == 1
    assert "synthetic class 0: 6 image(s)" in format_leakage_report(r)
    with pytest.raises(ValueError, match="dataset's are"):
        leakage_report(ds, synthetic={0: _distinct_images(2, 0, size=5)})


def test_digits_lt_has_no_leakage():
    r = leakage_report(load_digits_lt())
    assert r["clean"] is True, format_leakage_report(r)


def test_near_copies_finds_a_planted_copy():
    real = _distinct_images(300, 0, size=8, channels=3)
    syn = _distinct_images(10, 1, size=8, channels=3)
    syn[3] = real[123]
    noisy = real[45].astype(int) + np.random.default_rng(2).integers(-3, 4, real[45].shape)
    syn[7] = np.clip(noisy, 0, 255).astype(np.uint8)  # a near copy: a few grey levels off
    mask, dist = near_copies(syn, real, threshold=0.05, chunk_size=64)
    assert mask.tolist() == [i in (3, 7) for i in range(10)]
    assert dist[3] == 0.0 and 0 < dist[7] < 0.02
    assert np.all(dist[~mask] > 0.2)  # random images are far from each other (~0.41 RMS)
    idx, d2 = nearest_real(syn, real, chunk_size=7)  # chunking does not change the answer
    assert idx[3] == 123 and idx[7] == 45
    np.testing.assert_allclose(d2, dist)


def test_near_copies_matches_brute_force():
    real = _distinct_images(50, 3, size=4)
    syn = _distinct_images(20, 4, size=4)
    diff = (syn[:, None].astype(float) - real[None].astype(float)) / 255.0
    brute = np.sqrt((diff ** 2).reshape(20, 50, -1).mean(-1))
    idx, dist = nearest_real(syn, real, chunk_size=16)
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(idx, brute.argmin(1))
    with pytest.raises(ValueError, match="one shape"):
        near_copies(syn, _distinct_images(5, 0, size=5))


@pytest.mark.realdata
def test_real_breastmnist_leakage(data_dir):
    ds = load_medmnist(data_dir / "breastmnist.npz")
    r = leakage_report(ds)
    # BreastMNIST ships one image twice: train 115 (malignant) is pixel-identical to test 76 (normal, benign).
    assert r["across"]["train/test"]["pairs"] == 1
    assert r["across"]["train/test"]["examples"] == [(115, 76)]
    assert r["across"]["train/test"]["label_mismatches"] == 1
    assert (ds.train_labels[115], ds.test_labels[76]) == (0, 1)
    assert r["across"]["train/val"]["pairs"] == 0 and r["across"]["val/test"]["pairs"] == 0
    assert all(w["groups"] == 0 for w in r["within"].values())
    assert r["clean"] is False
    assert "train/test: 1 identical pair(s)" in format_leakage_report(r)


@pytest.mark.realdata
def test_real_retinamnist_leakage_is_clean(data_dir):
    r = leakage_report(load_medmnist(data_dir / "retinamnist.npz"))
    assert r["clean"] is True, format_leakage_report(r)
