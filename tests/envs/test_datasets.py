"""Dataset loaders: digits-lt, MedMNIST .npz files, image folders, arrays and the load_dataset dispatcher."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tailmix.envs.datasets import (DATASETS, MEDMNIST_FLAGS, LongTailDataset, from_arrays, load_dataset, load_digits_lt,
                           load_image_folder, load_medmnist)
from tailmix.envs.longtail import long_tail_counts


# -- helpers ---------------------------------------------------------------------------------------
def _write_npz(path: Path, *, n=(12, 4, 6), num_classes=3, grey=True, size=6, drop=(), labels_cols=1,
               label_shift=None, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        shape = (m, size, size) if grey else (m, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        y = (np.arange(m) % num_classes).astype(np.uint8)
        arrays[f"{split}_labels"] = np.repeat(y[:, None], labels_cols, axis=1)
    if label_shift is not None:
        split, extra = label_shift
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:extra]
    for key in drop:
        del arrays[key]
    np.savez(path, **arrays)
    return path


def _write_png(path: Path, value: int, size=(10, 7), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value, 255 - value, value // 2) if mode == "RGB" else value
    Image.new(mode, size, colour).save(path)


def _class_tree(root: Path, counts: dict[str, int], mode="RGB") -> None:
    for k, (cname, n) in enumerate(counts.items()):
        for i in range(n):
            _write_png(root / cname / f"img_{i:03d}.png", value=(40 * k + 3 * i) % 256, mode=mode)


def _check(ds: LongTailDataset) -> None:
    for split in ("train", "val", "test"):
        x, y = ds.split(split)
        assert x.dtype == np.uint8 and x.ndim == 4
        assert y.dtype == np.int64


# -- digits-lt ---------------------------------------------------------------------------------------
def test_digits_lt_counts_and_disjoint_balanced_splits():
    ds = load_digits_lt()
    _check(ds)
    assert ds.name == "digits-lt"
    assert ds.class_names == tuple(str(i) for i in range(10))
    assert ds.image_shape == (8, 8, 1)
    assert ds.train_counts.tolist() == [100, 71, 51, 36, 26, 18, 13, 9, 6, 5]
    assert ds.counts("val").tolist() == [30] * 10
    assert ds.counts("test").tolist() == [40] * 10
    assert ds.meta["long_tail"]["counts"] == ds.train_counts.tolist()
    # Pixel values follow round(v * 255 / 16): all 17 levels, nothing else.
    levels = np.unique(np.concatenate([ds.train_images.ravel(), ds.val_images.ravel()]))
    assert set(levels.tolist()) <= {int(round(v * 255 / 16)) for v in range(17)}
    assert levels.max() == 255
    # Splits are disjoint: no digits image appears twice in the source (checked in test_leakage), so pixel
    # equality identifies an image.
    keys = {s: {bytes(x) for x in ds.split(s)[0]} for s in ("train", "val", "test")}
    assert sum(len(k) for k in keys.values()) == len(ds.train_labels) + len(ds.val_labels) + len(ds.test_labels)
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])


def test_digits_lt_seed_and_options():
    a, b, c = load_digits_lt(seed=1), load_digits_lt(seed=1), load_digits_lt(seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    small = load_digits_lt(imbalance_ratio=10, n_max=50, val_per_class=5, test_per_class=10)
    assert small.train_counts.tolist() == long_tail_counts(50, 10, 10).tolist()
    assert small.counts("val").tolist() == [5] * 10 and small.counts("test").tolist() == [10] * 10
    with pytest.raises(ValueError, match="class 0 .* needs 150"):
        load_digits_lt(n_max=150)  # 174..183 images per digit minus 70 held out


# -- MedMNIST .npz -------------------------------------------------------------------------------------
def test_medmnist_npz_good_grey(tmp_path):
    path = _write_npz(tmp_path / "breastmnist.npz", num_classes=2)
    ds = load_medmnist(path)
    _check(ds)
    assert ds.image_shape == (6, 6, 1)
    assert ds.class_names == ("malignant", "normal, benign")
    assert ds.meta == {"source": str(path), "flag": "breastmnist"}
    assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (12, 4, 6)
    raw = np.load(path)
    np.testing.assert_array_equal(ds.train_images[..., 0], raw["train_images"])
    np.testing.assert_array_equal(ds.test_labels, raw["test_labels"][:, 0])


def test_medmnist_rgb_unknown_name_gets_generic_classes(tmp_path):
    ds = load_medmnist(_write_npz(tmp_path / "mine.npz", grey=False, num_classes=3))
    assert ds.image_shape == (6, 6, 3)
    assert ds.class_names == ("class_0", "class_1", "class_2")


def test_medmnist_flag_looked_up_in_root_and_env(tmp_path, monkeypatch):
    _write_npz(tmp_path / "retinamnist.npz", grey=False, num_classes=5, n=(15, 5, 5))
    ds = load_medmnist("retinamnist", root=tmp_path)
    assert ds.name == "retinamnist" and ds.class_names[0] == "0 no DR" and ds.num_classes == 5
    monkeypatch.setenv("TAILMIX_DATA_DIR", str(tmp_path))
    assert load_dataset("retinamnist").fingerprint() == ds.fingerprint()
    assert load_dataset("RetinaMNIST").fingerprint() == ds.fingerprint()


def test_medmnist_wrong_keys(tmp_path):
    path = _write_npz(tmp_path / "x.npz", drop=("val_labels", "test_images"))
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['val_labels', 'test_images'\]"):
        load_medmnist(path)


def test_medmnist_mismatched_counts(tmp_path):
    path = _write_npz(tmp_path / "x.npz", label_shift=("val", 3))
    with pytest.raises(ValueError, match="val_images has 4 images but val_labels has 3"):
        load_medmnist(path)


def test_medmnist_multilabel_refused(tmp_path):
    path = _write_npz(tmp_path / "chestmnist.npz", labels_cols=14)
    with pytest.raises(ValueError, match="multi-label"):
        load_medmnist(path)


def test_medmnist_missing_file_message(tmp_path):
    with pytest.raises(ValueError) as err:
        load_medmnist("dermamnist", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "dermamnist.npz") in msg and "download=True" in msg
    with pytest.raises(ValueError, match="not found"):
        load_medmnist(tmp_path / "nothing.npz")
    with pytest.raises(ValueError, match="unknown MedMNIST flag 'notaflag'"):
        load_medmnist("notaflag", root=tmp_path)
    with pytest.raises(ValueError, match="multi-label"):
        load_medmnist("chestmnist", root=tmp_path)


def test_medmnist_download_without_package_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_medmnist(name, *args, **kwargs):
        if name == "medmnist":
            raise ImportError("No module named 'medmnist'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_medmnist)
    with pytest.raises(ValueError, match=r'pip install "tailmix\[medmnist\]"'):
        load_medmnist("pathmnist", root=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_medmnist_download_failure_leaves_no_file(tmp_path, monkeypatch):
    import sys
    import types

    class Broken:
        def __init__(self, split, root, download):
            Path(root, "pathmnist.npz").write_bytes(b"half a file")  # what an interrupted download leaves
            raise ConnectionError("no network")

    fake = types.SimpleNamespace(INFO={"pathmnist": {"python_class": "PathMNIST"}}, PathMNIST=Broken)
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    with pytest.raises(ValueError, match=r"could not download pathmnist\.npz .*ConnectionError") as err:
        load_medmnist("pathmnist", root=tmp_path / "data", download=True)
    assert str(tmp_path / "data") in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []  # neither the half file nor the temporary folder remains


def test_medmnist_download_success_moves_the_file_into_place(tmp_path, monkeypatch):
    import sys
    import types

    class Works:
        def __init__(self, split, root, download):
            _write_npz(Path(root) / "pathmnist.npz", num_classes=9, n=(18, 9, 9), grey=False)

    fake = types.SimpleNamespace(INFO={"pathmnist": {"python_class": "PathMNIST"}}, PathMNIST=Works)
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    ds = load_medmnist("pathmnist", root=tmp_path, download=True)
    assert ds.class_names[0] == "adipose" and ds.num_classes == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pathmnist.npz"]


# -- image folders ---------------------------------------------------------------------------------------
def test_image_folder_class_folders_stratified_split(tmp_path):
    _class_tree(tmp_path / "imgs", {"cat": 20, "ant": 10, "bee": 7})
    (tmp_path / "imgs" / "ant" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    ds = load_image_folder(tmp_path / "imgs", image_size=5, seed=0)
    _check(ds)
    assert ds.class_names == ("ant", "bee", "cat")
    assert ds.image_shape == (5, 5, 3)
    total = ds.train_counts + ds.counts("val") + ds.counts("test")
    assert total.tolist() == [10, 7, 20]
    assert ds.counts("val").tolist() == [2, 1, 3] and ds.counts("test").tolist() == [2, 1, 3]
    assert ds.meta["layout"] == "class-folders"
    again = load_image_folder(tmp_path / "imgs", image_size=5, seed=0)
    other = load_image_folder(tmp_path / "imgs", image_size=5, seed=1)
    assert again.fingerprint() == ds.fingerprint() != other.fingerprint()


def test_image_folder_grey_values_survive_resize(tmp_path):
    _class_tree(tmp_path, {"a": 4, "b": 4}, mode="L")
    ds = load_image_folder(tmp_path, image_size=3, grey=True, val_fraction=0.25, test_fraction=0.25)
    assert ds.image_shape == (3, 3, 1)
    x, y = np.concatenate([ds.train_images, ds.val_images, ds.test_images]), np.concatenate(
        [ds.train_labels, ds.val_labels, ds.test_labels])
    # A flat image stays flat under bilinear resizing: each image is one of the grey values written.
    written = {0: {3 * i for i in range(4)}, 1: {40 + 3 * i for i in range(4)}}
    for img, label in zip(x, y):
        assert np.all(img == img.flat[0]) and int(img.flat[0]) in written[int(label)]


def test_image_folder_split_folders(tmp_path):
    _class_tree(tmp_path / "train", {"a": 6, "b": 3})
    _class_tree(tmp_path / "val", {"a": 2, "b": 2})
    _class_tree(tmp_path / "test", {"a": 1, "b": 3})
    ds = load_image_folder(tmp_path, image_size=4)
    assert ds.meta["layout"] == "split-folders"
    assert ds.train_counts.tolist() == [6, 3]
    assert ds.counts("val").tolist() == [2, 2] and ds.counts("test").tolist() == [1, 3]


def test_image_folder_split_folders_without_test_carves_it_from_train(tmp_path):
    _class_tree(tmp_path / "train", {"a": 10, "b": 10})
    _class_tree(tmp_path / "val", {"a": 2, "b": 2})
    ds = load_image_folder(tmp_path, image_size=4, test_fraction=0.2)
    assert ds.counts("val").tolist() == [2, 2]
    assert ds.counts("test").tolist() == [2, 2] and ds.train_counts.tolist() == [8, 8]


def test_image_folder_non_image_file(tmp_path):
    _class_tree(tmp_path, {"a": 4, "b": 4})
    (tmp_path / "b" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"non-image entry in class folder .*notes\.txt.*move the others out"):
        load_image_folder(tmp_path)


def test_image_folder_one_class(tmp_path):
    _class_tree(tmp_path, {"only": 5})
    with pytest.raises(ValueError, match="at least 2"):
        load_image_folder(tmp_path)


def test_image_folder_empty_class(tmp_path):
    _class_tree(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*c holds no images"):
        load_image_folder(tmp_path)


def test_image_folder_corrupt_image_and_missing_root(tmp_path):
    _class_tree(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="image folder not found"):
        load_image_folder(tmp_path / "nope")


# -- arrays -------------------------------------------------------------------------------------------------
def test_from_arrays_grey_rgb_float():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [20, 20, 20])
    grey = from_arrays(rng.integers(0, 256, (60, 5, 5), dtype=np.uint8), y)
    assert grey.image_shape == (5, 5, 1)
    assert len(grey.train_labels) + len(grey.val_labels) + len(grey.test_labels) == 60
    assert grey.counts("val").tolist() == [3, 3, 3] and grey.counts("test").tolist() == [3, 3, 3]
    assert grey.class_names == ("class_0", "class_1", "class_2")
    rgb = from_arrays(rng.integers(0, 256, (60, 5, 5, 3), dtype=np.uint8), y, class_names=["x", "y", "z"])
    assert rgb.image_shape == (5, 5, 3) and rgb.class_names == ("x", "y", "z")
    f = np.array([0.0, 0.5, 1.0, 1 / 255])
    xf = np.broadcast_to(f[:, None, None], (4, 2, 2)).copy()
    ds = from_arrays(xf, [0, 1, 0, 1], xf, [0, 1, 0, 1], xf, [0, 1, 0, 1])
    assert ds.train_images[:, 0, 0, 0].tolist() == [0, 128, 255, 1]
    assert ds.train_labels.dtype == np.int64


def test_from_arrays_split_is_seeded_and_disjoint():
    x = np.arange(60, dtype=np.uint8).reshape(60, 1, 1)
    y = np.repeat([0, 1], 30)
    a, b = from_arrays(x, y, seed=4), from_arrays(x, y, seed=4)
    assert a.fingerprint() == b.fingerprint() != from_arrays(x, y, seed=5).fingerprint()
    ids = [set(a.split(s)[0].ravel().tolist()) for s in ("train", "val", "test")]
    assert sum(map(len, ids)) == 60 and len(set.union(*ids)) == 60


@pytest.mark.parametrize("args,match", [
    ((np.zeros((4, 3), np.uint8), [0, 1, 0, 1]), r"\(N, H, W\) or \(N, H, W, C\)"),
    ((np.zeros((4, 3, 5, 5), np.uint8), [0, 1, 0, 1]), "channels-first"),
    ((np.zeros((4, 2, 2)), [0, 1, 0]), "4 images but train_labels has 3"),
    ((np.zeros((4, 2, 2)), [0.0, 1.5, 0.0, 1.0]), "integer class ids"),
    ((np.zeros((4, 2, 2)), ["a", "b", "a", "b"]), "integer class ids"),
    ((np.full((4, 2, 2), 2.0), [0, 1, 0, 1]), r"floats .* must lie in\s+\[0, 1\]"),
    ((np.zeros((4, 2, 2)), [0, -1, 0, 1]), ">= 0"),
    ((np.zeros((4, 2, 2)), [0, 1, 0, 1]), "only 2 image"),  # too few to split off val and test
])
def test_from_arrays_errors(args, match):
    with pytest.raises(ValueError, match=match):
        from_arrays(*args)


def test_from_arrays_images_without_labels_and_short_class_names():
    x = np.zeros((6, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="given together"):
        from_arrays(x, [0, 1] * 3, val_images=x)
    with pytest.raises(ValueError, match="class_names"):
        from_arrays(x, [0, 1, 2] * 2, x, [0, 1, 2] * 2, x, [0, 1, 2] * 2, class_names=["a", "b"])


# -- load_dataset ---------------------------------------------------------------------------------------------
def test_load_dataset_dispatch(tmp_path):
    assert set(DATASETS) == {"digits", "digits-lt"}
    assert "retinamnist" in MEDMNIST_FLAGS and "chestmnist" not in MEDMNIST_FLAGS
    assert load_dataset("digits").train_counts.tolist() == [100, 71, 51, 36, 26, 18, 13, 9, 6, 5]
    assert load_dataset("digits-lt", n_max=20, imbalance_ratio=4).train_counts[0] == 20
    npz = _write_npz(tmp_path / "x.npz")
    assert load_dataset(str(npz)).meta["source"] == str(npz)
    _class_tree(tmp_path / "folder", {"a": 5, "b": 5})
    assert load_dataset(tmp_path / "folder", image_size=4).meta["layout"] == "class-folders"
    with pytest.raises(ValueError, match="embedded dataset .*digits.*MedMNIST flag"):
        load_dataset("cifar10")


# -- the real MedMNIST files ------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_retinamnist(data_dir):
    ds = load_medmnist(data_dir / "retinamnist.npz")
    assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (1080, 120, 400)
    assert ds.train_counts.tolist() == [486, 128, 206, 194, 66]
    assert ds.image_shape == (28, 28, 3) and ds.num_classes == 5
    assert load_dataset("retinamnist", root=data_dir).fingerprint() == ds.fingerprint()


@pytest.mark.realdata
def test_real_breastmnist(data_dir):
    ds = load_medmnist("breastmnist", root=data_dir)
    assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (546, 78, 156)
    assert ds.train_counts.tolist() == [147, 399]
    assert ds.image_shape == (28, 28, 1)
    assert ds.class_names == ("malignant", "normal, benign")
