"""GaussianFeatureGenerator: recovers class statistics, borrows covariance for rare classes, seeds, errors."""
import numpy as np
import pytest
import torch

from tailmix.generators import load_generator
from tailmix.generators.gaussian import GaussianFeatureGenerator
from tests.conftest import make_tiny_dataset


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def synthetic(n=(4000, 4000), seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5]])
    covs = np.array([[[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]],
                     [[0.6, -0.2, 0.1], [-0.2, 1.0, 0.0], [0.1, 0.0, 1.5]]])
    x = np.concatenate([rng.multivariate_normal(means[c], covs[c], n[c]) for c in range(2)])
    y = np.concatenate([np.full(n[c], c, np.int64) for c in range(2)])
    return x.astype(np.float32), y, means, covs


def test_recovers_mean_and_covariance_and_samples_match_them():
    x, y, means, covs = synthetic()
    gen = GaussianFeatureGenerator().fit_features(x, y, 2)
    assert gen.feature_dim == 3
    np.testing.assert_allclose(gen.means, means, atol=0.06)
    np.testing.assert_allclose(gen.covariances, covs, atol=0.12)
    for c in range(2):
        s = gen.sample_features(c, 20000, generator=g(c))
        assert s.shape == (20000, 3) and s.dtype == np.float32
        np.testing.assert_allclose(s.mean(0), gen.means[c], atol=0.05)
        np.testing.assert_allclose(np.cov(s.T), gen.covariances[c], atol=0.08)


def test_without_prior_each_class_keeps_its_own_covariance():
    x, y, _, _ = synthetic(n=(50, 30))
    gen = GaussianFeatureGenerator(prior_samples=0.0, eps=0.0).fit_features(x, y, 2)
    for c in range(2):
        np.testing.assert_allclose(gen.covariances[c], np.cov(x[y == c].T.astype(np.float64)), atol=1e-6)


def test_a_one_sample_class_borrows_the_pooled_covariance():
    x, y, means, covs = synthetic(n=(4000, 4000))
    x = np.concatenate([x, [[10.0, 10.0, 10.0]]]).astype(np.float32)
    y = np.concatenate([y, [2]])
    gen = GaussianFeatureGenerator(eps=1e-3).fit_features(x, y, 3)
    np.testing.assert_allclose(gen.means[2], [10.0, 10.0, 10.0])
    np.testing.assert_allclose(gen.covariances[2], (covs[0] + covs[1]) / 2 + 1e-3 * np.eye(3), atol=0.12)
    s = gen.sample_features(2, 5000, generator=g(0))
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s.mean(0), [10, 10, 10], atol=0.1)
    assert s.std(0).min() > 0.5  # it really varies, unlike copies of the single sample


def test_few_shot_classes_shrink_towards_the_pooled_covariance():
    x, y, _, covs = synthetic(n=(4000, 5))
    x = x.astype(np.float64)
    gen = GaussianFeatureGenerator(prior_samples=10.0, eps=1e-3).fit_features(x, y, 2)
    scatter = [(x[y == c] - x[y == c].mean(0)).T @ (x[y == c] - x[y == c].mean(0)) for c in range(2)]
    pooled = (scatter[0] + scatter[1]) / (len(x) - 2)
    expected = (scatter[1] + 10.0 * pooled) / (5 - 1 + 10.0) + 1e-3 * np.eye(3)
    np.testing.assert_allclose(gen.covariances[1], expected, rtol=1e-6, atol=1e-9)
    # The 5-sample class's covariance is mostly borrowed, so closer to the pooled one than its own estimate.
    own = np.cov(x[y == 1].T)
    assert np.linalg.norm(gen.covariances[1] - covs[0]) < np.linalg.norm(own - covs[0])


def test_all_classes_with_one_sample_and_eigenvalue_floor():
    x = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)
    gen = GaussianFeatureGenerator(eps=1e-2).fit_features(x, np.array([0, 1]), 2)
    s = gen.sample_features(1, 100, generator=g(0))
    assert np.isfinite(s).all() and s.shape == (100, 2)


def test_seeds_reproduce_and_torch_inputs_work():
    x, y, _, _ = synthetic(n=(100, 20))
    gen = GaussianFeatureGenerator().fit_features(torch.from_numpy(x), torch.from_numpy(y), 2)
    a = gen.sample_features(1, 7, generator=g(1))
    np.testing.assert_array_equal(a, gen.sample_features(1, 7, generator=g(1)))
    assert not np.array_equal(a, gen.sample_features(1, 7, generator=g(2)))
    assert gen.sample_features(0, 0, generator=g(0)).shape == (0, 3)


def test_fit_on_a_dataset_with_features_and_save_load(tmp_path):
    ds = make_tiny_dataset()
    feats = np.random.default_rng(0).normal(size=(len(ds.train_labels), 5)).astype(np.float32)
    gen = GaussianFeatureGenerator().fit(ds, features=feats)
    cfg = gen.config()
    assert cfg["kind"] == "gaussian" and cfg["fit"]["dataset"] == ds.fingerprint() and gen.space == "features"
    gen.save(tmp_path / "gauss")
    loaded = load_generator(tmp_path / "gauss")
    assert isinstance(loaded, GaussianFeatureGenerator) and loaded.config() == cfg
    np.testing.assert_array_equal(loaded.sample_features(2, 9, generator=g(4)),
                                  gen.sample_features(2, 9, generator=g(4)))


def test_errors():
    ds = make_tiny_dataset()
    gen = GaussianFeatureGenerator()
    with pytest.raises(ValueError, match="fit_features"):
        gen.sample_features(0, 1, generator=g(0))
    with pytest.raises(ValueError, match="features="):
        gen.fit(ds)
    with pytest.raises(ValueError, match="rows"):
        gen.fit(ds, features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        gen.fit_features(np.full((2, 2), np.nan), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="lie in"):
        gen.fit_features(np.zeros((2, 2)), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="eps"):
        GaussianFeatureGenerator(eps=-1)
    gen.fit_features(np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 0, 1, 1, 1, 0]), 3)
    with pytest.raises(ValueError, match="sample_features"):
        gen.sample(0, 1, generator=g(0))
    with pytest.raises(ValueError, match="no features"):
        gen.sample_features(2, 1, generator=g(0))
    with pytest.raises(ValueError, match="0..2"):
        gen.sample_features(3, 1, generator=g(0))
    with pytest.raises(ValueError, match="non-negative"):
        gen.sample_features(0, -1, generator=g(0))
    with pytest.raises(ValueError, match="torch.Generator"):
        gen.sample_features(0, 1, generator=None)
