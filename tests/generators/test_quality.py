"""Bank quality: the Frechet distance, the per-class report, its table, and the sample grid PNG."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tailmix.generators.filter import ClassifierFilter
from tailmix.generators.pool import GeneratorPool
from tailmix.generators.quality import (format_quality_report, frechet_distance, quality_report, random_projection_features,
                                save_sample_grid)
from tests.generators.fakes import FakeGenerator, code_scorer


@pytest.fixture
def tiny_bank(tiny_dataset, tmp_path):
    pool = GeneratorPool({"fake": FakeGenerator(wrong_rate=0.2)}, devices="cpu").fit(tiny_dataset)
    filt = ClassifierFilter(code_scorer(3), tau=0.5, max_tries=20, name="codes")
    return pool.fill_bank(tiny_dataset, tmp_path / "banks", per_class=[6, 4, 2], filter=filt, shard_size=4,
                          batch_size=4, progress=False)


def test_frechet_distance_basics():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0, 0, 0])
    assert frechet_distance(a, shifted) == pytest.approx(9.0, rel=1e-6)  # pure mean shift: |d|^2
    b = rng.standard_normal((400, 4)) * 2.0
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    # covariance scale: Tr(I + 4I - 2*2I) = 4 (up to sampling noise)
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.25)
    # tiny classes stay finite: one sample, two samples
    assert math.isfinite(frechet_distance(a[:1], b)) and math.isfinite(frechet_distance(a[:2], b[:1]))
    assert math.isnan(frechet_distance(a[:0], b))
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :3])


def test_random_projection_is_fixed():
    f = random_projection_features((8, 8, 1), dim=32, seed=0)
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(f(x), random_projection_features((8, 8, 1), dim=32, seed=0)(x))
    assert f(x).shape == (5, 32)
    with pytest.raises(ValueError, match="expects"):
        f(np.zeros((2, 4, 4, 1), np.uint8))


def test_quality_report_on_a_tiny_bank(tiny_bank, tiny_dataset):
    report = quality_report(tiny_bank, tiny_dataset)
    assert sorted(report) == [0, 1, 2]
    m = tiny_bank.manifest["classes"]
    for c in range(3):
        r = report[c]
        assert r["n"] == tiny_bank.counts()[c] and r["n_real"] == tiny_dataset.train_counts[c]
        assert r["acceptance"] == pytest.approx(m[str(c)]["acceptance"])
        assert r["mean_confidence"] == pytest.approx(float(tiny_bank.confidences(c).mean()), rel=1e-6)
        assert math.isfinite(r["frechet"]) and r["frechet"] > 0
    # a custom feature space is used when given
    mean_only = quality_report(tiny_bank, tiny_dataset,
                               feature_fn=lambda x: x.reshape(len(x), -1).mean(1, keepdims=True))
    assert mean_only[0]["frechet"] != report[0]["frechet"]


def test_frechet_ranks_real_like_samples_above_noise(tiny_dataset):
    """Held-out real images of a class must be closer to its train images than uniform noise is."""
    rng = np.random.default_rng(0)
    x, y = tiny_dataset.split("val")
    real_like = {c: x[y == c] for c in range(3)}
    noise = {c: rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8) for c in range(3)}
    good, bad = quality_report(real_like, tiny_dataset), quality_report(noise, tiny_dataset)
    for c in range(3):
        assert good[c]["frechet"] < bad[c]["frechet"]
        assert math.isnan(good[c]["acceptance"])
    # other classes' real images are farther than the class's own
    swapped = quality_report({0: x[y == 2], 2: x[y == 0]}, tiny_dataset)
    assert swapped[0]["frechet"] > good[0]["frechet"] and math.isnan(swapped[1]["frechet"])


def test_format_quality_report(tiny_bank, tiny_dataset):
    text = format_quality_report(quality_report(tiny_bank, tiny_dataset), tiny_dataset.class_names)
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert "acceptance" in lines[0] and "frechet" in lines[0]
    assert lines[2].startswith("0 c0") and lines[4].startswith("2 c2")
    assert "%" in lines[2]
    unfiltered = format_quality_report({0: {"n": 0, "n_real": 3, "acceptance": math.nan, "mean_confidence": math.nan,
                                            "frechet": math.nan}})
    assert unfiltered.splitlines()[2].split()[-3:] == ["-", "-", "-"]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_sample_grid_png(tiny_bank, tiny_dataset, tmp_path):
    out = save_sample_grid(tiny_bank, tmp_path / "grids" / "bank.png", per_class=4)
    w, h = _png_size(out)
    assert w > 0 and h > 0
    assert not list(out.parent.glob(".*.tmp"))
    x, y = tiny_dataset.split("train")
    rgb = {c: np.repeat(x[y == c], 3, axis=-1) for c in range(3)}
    wide = save_sample_grid(rgb, tmp_path / "rgb.png", per_class=8, class_names=["a", "b", "c"])
    two = save_sample_grid({0: rgb[0], 1: rgb[1]}, tmp_path / "two.png", per_class=8)
    assert _png_size(wide)[1] > _png_size(two)[1]  # one row per class
    assert _png_size(wide)[0] > w  # more columns
    with pytest.raises(ValueError, match="per_class"):
        save_sample_grid(rgb, tmp_path / "bad.png", per_class=0)
