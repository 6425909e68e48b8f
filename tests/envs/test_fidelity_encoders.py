"""The crossfit_joint encoder (real + synthetic, cross-fitted) and the fidelity benchmark's statistics."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tailmix.envs.features as features
from tailmix.envs.features import EncoderConfig, fit_encoder

CFG = EncoderConfig(kind="crossfit_joint", folds=2, epochs=1, width=8, seed=3)


def _pools(ds, n=6, seed=0):
    rng = np.random.default_rng(seed)
    h, w, ch = ds.image_shape
    return [rng.integers(0, 256, (n, h, w, ch), dtype=np.uint8) for _ in range(ds.num_classes)]


@pytest.fixture(autouse=True)
def _fresh_memory():
    features._MEMORY.clear()
    yield
    features._MEMORY.clear()


@pytest.fixture
def recorded(monkeypatch):
    """Record the digests of the images every fold model trains on, in fold order."""
    seen_by_model: list[set] = []
    original = features._train_cnn

    def spy(images, labels, num_classes, config, seed, **kw):
        seen_by_model.append({features._digest(img) for img in images})
        return original(images, labels, num_classes, config, seed, **kw)

    monkeypatch.setattr(features, "_train_cnn", spy)
    return seen_by_model


def test_real_train_features_come_from_a_model_that_did_not_see_them(tiny_dataset, recorded):
    ds = tiny_dataset
    enc = fit_encoder(ds, CFG, synthetic=_pools(ds))
    assert len(recorded) == CFG.folds == len(enc.models)
    feats = enc.train_features()
    for i, img in enumerate(ds.train_images):
        f = int(enc.fold_of_train[i])
        assert features._digest(img) not in recorded[f]
        # ... and was trained on by every other fold model (otherwise this is not cross-fitting).
        assert all(features._digest(img) in recorded[g] for g in range(CFG.folds) if g != f)
        np.testing.assert_allclose(feats[i], enc.fold_features(f, img[None])[0], rtol=1e-5, atol=1e-5)


def test_synthetic_images_are_trained_on_and_encoded_out_of_fold(tiny_dataset, recorded):
    ds = tiny_dataset
    pools = _pools(ds)
    enc = fit_encoder(ds, CFG, synthetic=pools)
    for k, pool in enumerate(pools):
        out = enc.encode(pool, salt=f"pool{k}")
        for img, row in zip(pool, out):
            d = features._digest(img)
            trained_on = [d in s for s in recorded]
            assert sum(trained_on) == CFG.folds - 1  # the joint encoder trains on synthetic images
            unseen = trained_on.index(False)
            np.testing.assert_allclose(row, enc.fold_features(unseen, img[None])[0], rtol=1e-5, atol=1e-5)


def test_deterministic_with_seed_and_shapes(tiny_dataset):
    ds = tiny_dataset
    pools = _pools(ds)
    a = fit_encoder(ds, CFG, synthetic=pools)
    features._MEMORY.clear()
    b = fit_encoder(ds, CFG, synthetic=pools)
    assert a is not b
    np.testing.assert_array_equal(a.train_features(), b.train_features())
    np.testing.assert_array_equal(a.encode(ds.val_images, salt="val"), b.encode(ds.val_images, salt="val"))
    assert a.train_features().shape == (len(ds.train_labels), ds.num_classes)
    assert a.encode(ds.test_images, salt="t").shape == (len(ds.test_labels), ds.num_classes)
    assert a.encode(ds.test_images[:0]).shape == (0, ds.num_classes)
    assert a.train_features().dtype == np.float32
    features._MEMORY.clear()
    c = fit_encoder(ds, EncoderConfig(**{**CFG.__dict__, "seed": 4}), synthetic=pools)
    assert not np.allclose(a.train_features(), c.train_features())


def test_synthetic_images_change_the_encoder(tiny_dataset):
    ds = tiny_dataset
    a = fit_encoder(ds, CFG, synthetic=_pools(ds, seed=0))
    b = fit_encoder(ds, CFG, synthetic=_pools(ds, seed=1))
    assert a is not b  # a different pool is a different cache entry ...
    assert not np.allclose(a.train_features(), b.train_features())  # ... and a different encoder
    # The real folds are crossfit's own, so the two encoders are comparable.
    plain = fit_encoder(ds, EncoderConfig(**{**CFG.__dict__, "kind": "crossfit"}))
    np.testing.assert_array_equal(a.fold_of_train, plain.fold_of_train)


def test_needs_synthetic_images(tiny_dataset):
    with pytest.raises(ValueError, match="synthetic="):
        fit_encoder(tiny_dataset, CFG)
    with pytest.raises(ValueError, match="synthetic="):
        fit_encoder(tiny_dataset, CFG, synthetic="gaussian")
    with pytest.raises(ValueError, match="one .*pool per class"):
        fit_encoder(tiny_dataset, CFG, synthetic=_pools(tiny_dataset)[:2])


def test_disk_cache_keeps_the_out_of_fold_lookup(tiny_dataset, tmp_path):
    ds = tiny_dataset
    pools = _pools(ds)
    a = fit_encoder(ds, CFG, synthetic=pools, cache_dir=tmp_path)
    features._MEMORY.clear()
    b = fit_encoder(ds, CFG, synthetic=pools, cache_dir=tmp_path)
    assert a is not b and len(list(tmp_path.glob("encoder-*.pt"))) == 1
    np.testing.assert_array_equal(a.encode(pools[1], salt="pool1"), b.encode(pools[1], salt="pool1"))
    assert b.seen == a.seen and len(b.seen) > 0


# -- benchmarks/fidelity.py ---------------------------------------------------------------------------

def _fidelity():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
    spec = importlib.util.spec_from_file_location("tailmix_fidelity", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_split_half_reliability_and_bootstrap():
    fid = _fidelity()
    rng = np.random.default_rng(0)
    truth = np.arange(6, dtype=float)[:, None]
    quiet = truth + 0.01 * rng.standard_normal((6, 10))
    noisy = truth + 10.0 * rng.standard_normal((6, 10))
    assert fid.split_half(quiet, {})["pixel"] == pytest.approx(1.0)
    assert fid.split_half(noisy, {})["pixel"] < 0.8
    halves = fid.split_half(quiet, {"same": quiet, "reversed": -quiet})
    assert halves["same"] == pytest.approx(1.0) and halves["reversed"] == pytest.approx(-1.0)
    lo, hi = fid.bootstrap_rho(quiet, quiet, n_boot=200)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    lo, hi = fid.bootstrap_rho(noisy, quiet, n_boot=200)
    assert hi - lo > 0.3  # noise over seeds shows as a wide interval


def test_pixel_json_is_reused_and_refused_when_settings_differ(tmp_path, monkeypatch):
    fid = _fidelity()
    calls = []
    monkeypatch.setattr(fid, "_episode", lambda envs, kw, src, name, seed: calls.append((name, seed)) or 0.5)
    src = SimpleNamespace(fingerprint=lambda: "bank")
    ds = SimpleNamespace(fingerprint=lambda: "data")
    args = SimpleNamespace(max_steps=2, max_ratio=20.0, pixel_epochs=1, cache_dir=str(tmp_path))
    path = tmp_path / "pixel.json"
    monkeypatch.setattr(fid, "_env_kwargs", lambda *a: {})
    fid.score_pixel(ds, (src, src), [0, 1], args, path)
    assert len(calls) == 2 * len(fid.POLICIES)
    assert set(json.loads(path.read_text())["scores"]["fill"]) == {"0", "1"}
    calls.clear()
    out = fid.score_pixel(ds, (src, src), [0, 1, 2], args, path)  # only seed 2 is new
    assert calls == [(p, 2) for p in fid.POLICIES]
    assert out["ratio 0"] == [0.5, 0.5, 0.5]
    args.max_steps = 3
    with pytest.raises(ValueError, match="max_steps"):
        fid.score_pixel(ds, (src, src), [0], args, path)


def test_pixel_json_merges_seeds_another_process_wrote_meanwhile(tmp_path, monkeypatch):
    """Two processes on disjoint seed ranges (--first-seed) fill one file; neither overwrites the other's seeds."""
    fid = _fidelity()
    src = SimpleNamespace(fingerprint=lambda: "bank")
    ds = SimpleNamespace(fingerprint=lambda: "data")
    args = SimpleNamespace(max_steps=2, max_ratio=20.0, pixel_epochs=1, cache_dir=str(tmp_path))
    path = tmp_path / "pixel.json"
    monkeypatch.setattr(fid, "_env_kwargs", lambda *a: {})
    other = []

    def episode(envs, kw, src_, name, seed):
        if not other:  # while this process computes seed 0, "another process" finishes seed 7
            other.append(True)
            monkeypatch.setattr(fid, "_episode", lambda *a: 0.7)
            fid.score_pixel(ds, (src, src), [7], args, path)
            monkeypatch.setattr(fid, "_episode", episode)
        return 0.5

    monkeypatch.setattr(fid, "_episode", episode)
    fid.score_pixel(ds, (src, src), [0], args, path)
    scores = json.loads(path.read_text())["scores"]
    assert all(scores[p] == {"0": 0.5, "7": 0.7} for p in fid.POLICIES)


def test_resolved_pairs_count_only_orderings_pixel_mode_is_sure_of():
    fid = _fidelity()
    rng = np.random.default_rng(1)
    # Policies 0 and 1 are a tie (same mean, seed noise); 2 is clearly better than both.
    pixel = np.array([0.5, 0.5, 0.6])[:, None] + 0.01 * rng.standard_normal((3, 12))
    good = np.array([[0.1], [0.2], [0.9]])  # orders the tie arbitrarily, gets the resolved pairs right
    bad = np.array([[0.9], [0.8], [0.1]])
    pairs, agree = fid.resolved_pairs(pixel, {"good": good, "bad": bad})
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 2), (1, 2)]
    assert agree == {"good": 2, "bad": 0}


def test_fidelity_builds_feature_envs_with_the_joint_encoder(tiny_dataset):
    from tailmix.envs.sources import ArraySource

    fid = _fidelity()
    ds = tiny_dataset
    source = ArraySource(dict(enumerate(_pools(ds))), ds.num_classes)
    kw = dict(dataset=ds, encoder="crossfit_joint", encoder_folds=2, encoder_epochs=1, max_steps=1)
    envs = {}
    record = fid._run(envs, kw, (source,), "ratio 1", 0)  # the env hands its source to fit_encoder itself
    assert np.isfinite(record["test_balanced_accuracy"])
    env = envs[0]
    assert features.fit_encoder.__name__ == "fit_encoder"  # nothing wraps fit_encoder
    obs, _ = env.reset(seed=0)
    _, rewards, *_ = env.step({a: np.ones(1, np.float32) for a in env.agents})
    assert all(np.isfinite(r) for r in rewards.values())
    key = next(k for k, e in features._MEMORY.items() if e.config.kind == "crossfit_joint")
    assert features._MEMORY[key].seen  # fitted with the source's images


def test_crossfit_augment_is_cross_fitted_deterministic_and_augmented(tiny_dataset, recorded):
    ds = tiny_dataset
    cfg = EncoderConfig(kind="crossfit_augment", folds=2, epochs=2, width=8, seed=3)
    a = fit_encoder(ds, cfg)
    for i, img in enumerate(ds.train_images):
        assert features._digest(img) not in recorded[int(a.fold_of_train[i])]
    features._MEMORY.clear()
    b = fit_encoder(ds, cfg)
    np.testing.assert_array_equal(a.train_features(), b.train_features())
    np.testing.assert_array_equal(a.encode(ds.val_images, salt="val"), b.encode(ds.val_images, salt="val"))
    assert a.train_features().shape == (len(ds.train_labels), ds.num_classes)
    plain = fit_encoder(ds, EncoderConfig(**{**cfg.__dict__, "kind": "crossfit"}))
    np.testing.assert_array_equal(a.fold_of_train, plain.fold_of_train)  # same folds, same init ...
    assert not np.allclose(a.train_features(), plain.train_features())  # ... so the augmentation made the change


@pytest.mark.slow
def test_fidelity_runs_end_to_end_on_augmentations_with_per_class_recall(tmp_path, capsys):
    """The whole script on the embedded digits data with the augmentation source (no generator to train)."""
    fid = _fidelity()
    out = fid.main(["--source", "augment", "--seeds", "2", "--variants", "random", "--max-steps", "2",
                    "--recall-seeds", "1", "--cache-dir", str(tmp_path), "--pixel-json", str(tmp_path / "p.json")])
    assert out["policies"] == fid.POLICIES[:-1] and set(out["scores"]) == {"pixel", "random"}
    assert all(len(v) == 2 for v in out["scores"]["pixel"].values())
    recall = out["recall"]["pixel"]["fill"]
    assert len(recall) == 10 and all(0.0 <= r <= 1.0 for r in recall)
    text = capsys.readouterr().out
    assert "| pixel | ratio 0 |" in text and "Spearman rho" in text


def test_pool_report_counts_each_pool_and_how_the_fold_models_read_it(tiny_dataset, tmp_path, capsys):
    from tailmix.envs.sources import ArraySource

    fid = _fidelity()
    d = tiny_dataset
    pools = {0: d.train_images[d.train_labels == 0][:5], 2: d.train_images[d.train_labels == 2][:1]}
    out = fid.pool_report(d, (ArraySource(pools, 3), ArraySource({0: pools[0]}, 3)),
                          SimpleNamespace(cache_dir=str(tmp_path)))
    assert [r["images"] for r in out["unfiltered"]] == [5, 0, 1]
    assert [r["images"] for r in out["filtered"]] == [5, 0, 0]
    assert [r["images"] for r in out["real val"]] == list(d.counts("val"))
    for rows in out.values():
        for r in rows:
            assert sum(r["read_as"]) == pytest.approx(1.0 if r["images"] else 0.0)
    assert "| unfiltered | 2 | 1 |" in capsys.readouterr().out


def test_pixel_json_records_its_draw_and_refuses_the_other(tmp_path, monkeypatch):
    fid = _fidelity()
    monkeypatch.setattr(fid, "_episode", lambda *a: 0.5)
    monkeypatch.setattr(fid, "_env_kwargs", lambda *a: {})
    src = SimpleNamespace(fingerprint=lambda: "bank")
    ds = SimpleNamespace(fingerprint=lambda: "data")
    args = SimpleNamespace(max_steps=2, max_ratio=20.0, pixel_epochs=1, cache_dir=str(tmp_path), draw="unique")
    path = tmp_path / "pixel.json"
    fid.score_pixel(ds, (src, src), [0], args, path)
    assert json.loads(path.read_text())["settings"]["draw"] == "unique"
    args.draw = "replace"
    with pytest.raises(ValueError, match="draw='unique'.*draw='replace'.*another --pixel-json"):
        fid.score_pixel(ds, (src, src), [0], args, path)
    # A file written before --draw existed was made with draw="replace": it still serves replace, not unique.
    old = tmp_path / "old.json"
    blob = json.loads(path.read_text())
    del blob["settings"]["draw"]
    old.write_text(json.dumps(blob))
    assert fid.score_pixel(ds, (src, src), [0], args, old)["fill"] == [0.5]
    args.draw = "unique"
    with pytest.raises(ValueError, match="draw='replace'"):
        fid.score_pixel(ds, (src, src), [0], args, old)


@pytest.mark.slow
def test_fidelity_draw_reaches_the_pixel_and_the_feature_envs(tmp_path, monkeypatch):
    """--draw unique builds every env (pixel mode and each encoder) with draw="unique"; the pixel file keeps it."""
    import tailmix.agents.evaluate as evaluate

    fid = _fidelity()
    built = []
    original = evaluate.make_eval_env

    def spy(kwargs):
        env = original(kwargs)
        built.append((env.config.mode, env.config.draw))
        return env

    monkeypatch.setattr(evaluate, "make_eval_env", spy)
    pixel = tmp_path / "p.json"
    argv = ["--source", "augment", "--seeds", "1", "--variants", "random", "--max-steps", "1",
            "--cache-dir", str(tmp_path), "--pixel-json", str(pixel)]
    out = fid.main([*argv, "--draw", "unique"])
    assert out["draw"] == "unique" and json.loads(pixel.read_text())["settings"]["draw"] == "unique"
    assert {mode for mode, _ in built} == {"pixel", "feature"}
    assert all(draw == "unique" for _, draw in built)
    with pytest.raises(ValueError, match="draw='unique'"):
        fid.main([*argv, "--draw", "replace"])  # the default; this file was made under unique
