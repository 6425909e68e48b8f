"""Dataset loaders: the embedded digits, MedMNIST files (and their download), image folders and arrays.

Every loader returns a :class:`tailmix.io.dataset.LongTailDataset`: uint8 images shaped ``(N, H, W, C)`` (``C``
is 1 for grey, 3 for RGB) and int64 labels shaped ``(N,)`` for the ``train``, ``val`` and ``test`` splits.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from tailmix.io.dataset import SPLITS, LongTailDataset

# ------------------------------------------------------------------------------------------------
# Loaders. Each returns a LongTailDataset; none writes to disk except the optional MedMNIST download.
# ------------------------------------------------------------------------------------------------

#: Names of the datasets embedded in the package (no download): scikit-learn's digits, made long-tailed.
DATASETS = ("digits-lt", "digits")

#: Class names of the 2D single-label MedMNIST flags (from MedMNIST's INFO table; RetinaMNIST's grades spelled
#: out from the DeepDRiD severity scale).
MEDMNIST_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0 no DR", "1 mild NPDR", "2 moderate NPDR", "3 severe NPDR", "4 proliferative DR"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes (myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
                    "Proximal Tubule Segments", "Thick Ascending Limb"),
    "organamnist": ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"),
}
MEDMNIST_CLASS_NAMES["organcmnist"] = MEDMNIST_CLASS_NAMES["organamnist"]
MEDMNIST_CLASS_NAMES["organsmnist"] = MEDMNIST_CLASS_NAMES["organamnist"]

#: Flags ``load_medmnist`` accepts by name (2D, single-label). ChestMNIST is multi-label and is refused.
MEDMNIST_FLAGS = tuple(sorted(MEDMNIST_CLASS_NAMES))
_MEDMNIST_SIZES = (28, 64, 128, 224)
_MEDMNIST_KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


# -- array conversion ---------------------------------------------------------------------------
def _as_uint8_nhwc(images, what: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` uint8 / [0, 1] floats / 0..255 ints -> uint8 ``(N, H, W, C)``."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{what} must be shaped (N, H, W) or (N, H, W, C); got shape {x.shape}")
    if x.shape[-1] not in (1, 3):
        hint = (" It looks channels-first: pass images.transpose(0, 2, 3, 1)." if x.shape[1] in (1, 3) else
                " Convert to grey (1 channel) or RGB (3 channels).")
        raise ValueError(f"{what} must have 1 or 3 channels in the last axis; got shape {x.shape}.{hint}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"{what} hold {bad} NaN or infinite pixel value(s) (of {x.size}); replace or drop those "
                             "images first (e.g. numpy.nan_to_num, then scale to [0, 1])")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError(f"{what} are floats in [{np.nanmin(x):g}, {np.nanmax(x):g}]; float images must lie in "
                             "[0, 1] (divide 0..255 images by 255, or pass them as uint8)")
        return np.round(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        if x.dtype == np.bool_:
            return x.astype(np.uint8) * 255
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{what} are integers in [{x.min()}, {x.max()}]; integer images must lie in 0..255 "
                             "(rescale them, e.g. to uint8)")
        return x.astype(np.uint8)
    raise ValueError(f"{what} have dtype {x.dtype}; pass uint8 images or floats in [0, 1]")


def _as_labels(labels, what: str) -> np.ndarray:
    """Integer labels ``(N,)`` or ``(N, 1)`` -> int64 ``(N,)``."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{what} must be shaped (N,) (one class id per image); got shape {y.shape}")
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        if y.size and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
            raise ValueError(f"{what} must be integer class ids; got non-integer floats (e.g. "
                             f"{y[np.flatnonzero(y != np.round(y))[:3]].tolist()}). Map them to 0..C-1")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must be integer class ids 0..C-1; got dtype {y.dtype}. Map names to ids first")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{what} must be class ids >= 0; found {y.min()}")
    return y


def _stratified_split(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split indices per class: one part per fraction (at least one image each) and the rest first.

    Returns ``[rest, part_0, part_1, ...]``, each sorted. A class too small to give every part an image and
    keep one for ``rest`` raises ValueError.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        sizes = [max(1, int(round(f * len(idx)))) if f > 0 else 0 for f in fractions]
        if len(idx) - sum(sizes) < 1:
            raise ValueError(f"class {c} has only {len(idx)} image(s); a seeded stratified split needs at least "
                             f"{sum(sizes) + 1} (one for train and one per held-out split). Add images, pass the "
                             "held-out splits explicitly, or drop the class")
        start = 0
        for k, n in enumerate(sizes):
            parts[k + 1].append(idx[start:start + n])
            start += n
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def _check_fraction(value: float, what: str) -> float:
    value = float(value)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{what} must lie in [0, 1); got {value}")
    return value


def from_arrays(train_images, train_labels, val_images=None, val_labels=None, test_images=None,
                test_labels=None, *, class_names: Sequence[str] | None = None, name: str = "arrays", seed: int = 0,
                val_fraction: float = 0.15, test_fraction: float = 0.15) -> LongTailDataset:
    """Wrap in-memory arrays as a :class:`LongTailDataset`.

    Args:
        train_images, val_images, test_images: ``(N, H, W)`` or ``(N, H, W, C)`` (C in 1, 3) arrays: uint8, or
            floats in [0, 1] (scaled to 0..255).
        train_labels, val_labels, test_labels: Integer class ids ``(N,)`` (``(N, 1)`` is accepted).
        class_names: One name per class. Default: ``"class_i"`` for ``i < max label + 1``.
        name: Dataset name for logs and cache keys.
        seed: Seed of the stratified split that carves missing val/test splits off train.
        val_fraction: Share of each train class moved to val when ``val_images`` is None (> 0).
        test_fraction: Share of each train class moved to test when ``test_images`` is None (0 leaves test empty).

    Raises:
        ValueError: bad shapes or dtypes, image/label counts that differ, non-integer labels, an images array
            given without its labels (or the reverse), a class too small to split.
    """
    arrays = {"train": (train_images, train_labels), "val": (val_images, val_labels),
              "test": (test_images, test_labels)}
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (x, y) in arrays.items():
        if (x is None) != (y is None):
            raise ValueError(f"{split}_images and {split}_labels must be given together (or both left None)")
        if x is None:
            continue
        x, y = _as_uint8_nhwc(x, f"{split}_images"), _as_labels(y, f"{split}_labels")
        if len(x) != len(y):
            raise ValueError(f"{split}_images has {len(x)} images but {split}_labels has {len(y)} labels; they must "
                             "match one to one")
        data[split] = (x, y)
    missing = [s for s in ("val", "test") if s not in data]
    fractions = {"val": _check_fraction(val_fraction, "val_fraction"),
                 "test": _check_fraction(test_fraction, "test_fraction")}
    if missing:
        if "val" in missing and fractions["val"] == 0:
            raise ValueError("val_fraction must be > 0 when no val split is given: val gives the rewards")
        if sum(fractions[s] for s in missing) >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1 to leave images for train; got "
                             f"{sum(fractions[s] for s in missing)}")
        x, y = data["train"]
        parts = _stratified_split(y, [fractions[s] for s in missing], np.random.default_rng(seed))
        data["train"] = (x[parts[0]], y[parts[0]])
        for s, idx in zip(missing, parts[1:]):
            data[s] = (x[idx], y[idx])
    num_classes = 1 + max((int(y.max()) for _, y in data.values() if len(y)), default=-1)
    if class_names is None:
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    else:
        class_names = tuple(str(n) for n in class_names)
        if len(class_names) < num_classes:
            raise ValueError(f"labels go up to {num_classes - 1} but only {len(class_names)} class_names were given; "
                             "give one name per class id")
    meta = {"source": "arrays", "split_seed": int(seed), "carved_from_train": missing,
            "val_fraction": fractions["val"] if "val" in missing else None,
            "test_fraction": fractions["test"] if "test" in missing else None}
    return LongTailDataset(name, *data["train"], *data["val"], *data["test"], class_names=class_names, meta=meta)


# -- scikit-learn digits, made long-tailed ------------------------------------------------------------
def load_digits_lt(*, imbalance_ratio: float = 20.0, n_max: int = 100, val_per_class: int = 30,
                   test_per_class: int = 40, seed: int = 0) -> LongTailDataset:
    """scikit-learn's 8x8 digits (bundled, no download) with a long-tailed train split.

    Pixels 0..16 become uint8 ``round(v * 255 / 16)``, shaped ``(8, 8, 1)``. ``val_per_class`` and
    ``test_per_class`` images of every class are held out (balanced, seeded); the rest is subsampled with
    :func:`envs.longtail.make_long_tail` (class 0 is the head), by default to 100, 71, 51, ... 5 images.

    Args:
        imbalance_ratio: Head count / tail count of the train split.
        n_max: Train images of class 0.
        val_per_class: Balanced val images per class.
        test_per_class: Balanced test images per class.
        seed: Seed of the held-out draw and of the long-tail subsampling.
    """
    from sklearn.datasets import load_digits

    from tailmix.envs.longtail import make_long_tail

    for value, what in ((val_per_class, "val_per_class"), (test_per_class, "test_per_class")):
        if int(value) != value or value < 0 or (what == "val_per_class" and value < 1):
            raise ValueError(f"{what} must be a non-negative integer (val_per_class >= 1); got {value!r}")
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    # A stream distinct from make_long_tail's (which uses `seed` itself), so the two draws are independent.
    rng = np.random.default_rng([int(seed), 1])
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= val_per_class + test_per_class:
            raise ValueError(f"digit {c} has {len(idx)} images; val_per_class + test_per_class = "
                             f"{val_per_class + test_per_class} leaves none for train. Lower them")
        parts["val"].append(idx[:val_per_class])
        parts["test"].append(idx[val_per_class:val_per_class + test_per_class])
        parts["train"].append(idx[val_per_class + test_per_class:])
    split_idx = {s: np.sort(np.concatenate(p)) for s, p in parts.items()}
    base = LongTailDataset("digits", *(a for s in SPLITS for a in (images[split_idx[s]], labels[split_idx[s]])),
                           class_names=tuple(str(i) for i in range(10)),
                           meta={"source": "sklearn.datasets.load_digits", "val_per_class": int(val_per_class),
                                 "test_per_class": int(test_per_class)})
    return make_long_tail(base, imbalance_ratio, n_max=n_max, seed=seed)  # named "digits-lt"


# -- MedMNIST .npz files ---------------------------------------------------------------------------
def _split_flag(flag: str) -> tuple[str, int]:
    """``"retinamnist_64"`` -> ``("retinamnist", 64)``; ``"retinamnist"`` -> ``("retinamnist", 28)``."""
    base, _, suffix = flag.rpartition("_")
    if base and suffix.isdigit() and int(suffix) in _MEDMNIST_SIZES:
        return base, int(suffix)
    return flag, 28


def _medmnist_root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("TAILMIX_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".medmnist"


def _download_medmnist(flag: str, size: int, path: Path) -> None:
    """Fetch ``path`` with the ``medmnist`` package, into a temporary folder first so no half file is left."""
    try:
        import medmnist
    except ImportError as err:
        raise ValueError(f"downloading {flag!r} needs the medmnist package: pip install \"tailmix[medmnist]\" "
                         f"(or put {path.name} into {path.parent} yourself)") from err
    info = getattr(medmnist, "INFO", {}).get(flag)
    if info is None:
        raise ValueError(f"the medmnist package does not know the flag {flag!r}; known 2D single-label flags: "
                         f"{', '.join(MEDMNIST_FLAGS)}")
    data_class = getattr(medmnist, info["python_class"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{flag}-download-", dir=path.parent))
    try:
        kwargs = {} if size == 28 else {"size": size}
        try:
            data_class(split="train", root=str(tmp), download=True, **kwargs)
        except Exception as err:  # network, checksum, or server errors all leave the user with the same fix
            raise ValueError(f"could not download {path.name} with medmnist ({type(err).__name__}: {err}). Download "
                             f"it by hand from https://zenodo.org/records/10519652 and put it into {path.parent}"
                             ) from err
        got = tmp / path.name
        if not got.is_file():
            raise ValueError(f"medmnist did not produce {path.name}; download it by hand and put it into {path.parent}")
        os.replace(got, path)  # atomic within one folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_medmnist(flag_or_path: str | Path, *, root: str | Path | None = None,
                  download: bool = False) -> LongTailDataset:
    """A 2D single-label MedMNIST dataset from its official ``.npz`` file.

    Args:
        flag_or_path: A path to an ``.npz`` with keys ``train_images``, ``train_labels``, ``val_images``,
            ``val_labels``, ``test_images``, ``test_labels`` (labels ``(N, 1)``), or a flag such as
            ``"retinamnist"`` (``"retinamnist_64"`` for the 64-pixel file), looked up as ``<root>/<flag>.npz``.
        root: Folder of flag files. Default: ``$TAILMIX_DATA_DIR``, else ``~/.medmnist``.
        download: Fetch a missing flag file with the ``medmnist`` package (``pip install "tailmix[medmnist]"``).

    Returns:
        The dataset named after the flag (the file stem for a path), with ``meta["source"]`` (the file) and
        ``meta["flag"]``. Class names come from MedMNIST's table for known flags, else ``"class_i"``.

    Raises:
        ValueError: a missing file (saying where to put it), missing keys, image/label counts that differ,
            multi-label files (e.g. ChestMNIST), an unknown flag.
    """
    text = str(flag_or_path)
    is_path = isinstance(flag_or_path, Path) or text.endswith(".npz") or os.sep in text or "/" in text
    if is_path:
        path = Path(flag_or_path).expanduser()
        flag = path.stem.lower()
    else:
        flag = text.lower()
        path = _medmnist_root(root) / f"{flag}.npz"
    base, size = _split_flag(flag)
    if not path.is_file():
        if not is_path and base not in MEDMNIST_CLASS_NAMES:
            hint = " ChestMNIST is multi-label, which tailmix does not support." if base == "chestmnist" else ""
            raise ValueError(f"unknown MedMNIST flag {flag!r} and no file {path}.{hint} Known 2D single-label flags: "
                             f"{', '.join(MEDMNIST_FLAGS)} (add _64, _128 or _224 for larger images), or pass the "
                             f"path of an .npz file")
        if not download:
            raise ValueError(f"MedMNIST file not found: {path}. Download {path.name} (https://zenodo.org/records/"
                             f"10519652) into {path.parent}, set TAILMIX_DATA_DIR or root= to the folder holding it, "
                             "or pass download=True")
        if is_path and base not in MEDMNIST_CLASS_NAMES:
            raise ValueError(f"file not found: {path}, and {path.stem!r} is not a MedMNIST flag that can be downloaded")
        _download_medmnist(base, size, path)
    import zipfile

    if not zipfile.is_zipfile(path):  # np.load would guess a pickle and suggest allow_pickle=True (unsafe)
        raise ValueError(f"{path} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes); re-download "
                         "it, or save the six arrays with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _MEDMNIST_KEYS if k not in npz.files]
            if missing:
                raise ValueError(f"{path} lacks the key(s) {missing} (has {sorted(npz.files)}); a MedMNIST-format "
                                 f".npz needs {list(_MEDMNIST_KEYS)}")
            arrays = {k: npz[k] for k in _MEDMNIST_KEYS}
    except ValueError as err:
        if "allow_pickle" in str(err):  # object arrays: loading them would run pickled code
            raise ValueError(f"{path} holds object (pickled) arrays, which tailmix does not load (unpickling can run "
                             "code); save plain numeric arrays with numpy.savez") from None
        raise
    except Exception as err:  # zipfile.BadZipFile, OSError, pickled objects
        raise ValueError(f"cannot read {path} as an .npz file ({type(err).__name__}: {err}); re-download it") from err
    for split in SPLITS:
        y = arrays[f"{split}_labels"]
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(f"{path} is multi-label ({split}_labels has {y.shape[1]} columns, e.g. ChestMNIST); "
                             "tailmix needs one class per image. Multi-label datasets are unsupported")
    try:
        labels = [_as_labels(arrays[f"{s}_labels"], f"{s}_labels") for s in SPLITS]
        num_classes = 1 + max(int(y.max()) if len(y) else -1 for y in labels)
        names = MEDMNIST_CLASS_NAMES.get(base)
        if names is None or len(names) < num_classes:
            names = tuple(f"class_{i}" for i in range(max(num_classes, 2)))
        _check_label_ids(labels)
        ds = from_arrays(*(arrays[k] for k in _MEDMNIST_KEYS), class_names=names, name=flag)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return dataclasses.replace(ds, meta={"source": str(path), "flag": flag})


def _check_label_ids(labels: list[np.ndarray]) -> None:
    """Class ids must be 0..C-1 with every class in train (one per split in ``SPLITS`` order): a gap (labels
    0, 1, 99) would make a dataset of 100 classes, a class only in val or test one that cannot be learned."""
    top = max((int(y.max()) for y in labels if len(y)), default=-1)
    train = np.bincount(labels[0], minlength=top + 1)
    absent = [c for c in range(top + 1) if train[c] == 0]
    if not absent:
        return
    held = {c: [s for s, y in zip(SPLITS[1:], labels[1:]) if np.any(y == c)] for c in absent}
    only = [f"label {c} occurs in {' and '.join(held[c])} but not in train" for c in absent if held[c]][:3]
    gaps = [c for c in absent if not held[c]]
    parts = only + ([f"labels {_ranges(gaps)} occur in no split (the ids jump; the largest is {top} in "
                     f"{[s for s, y in zip(SPLITS, labels) if len(y) and int(y.max()) == top][0]})"] if gaps else [])
    raise ValueError("class ids must run 0..C-1 with every class in train: " + "; ".join(parts) + ". Remap the "
                     "labels (numpy.unique(..., return_inverse=True)) and give every class train images")


def _ranges(ids: list[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2..4, 7"`` (at most 5 runs shown)."""
    runs, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            runs.append(str(start) if start == a else f"{start}..{a}")
            start = b
    return ", ".join(runs[:5]) + (" ..." if len(runs) > 5 else "")


# -- a folder of images, one sub-folder per class ----------------------------------------------------
def _image_extensions() -> set[str]:
    from PIL import Image

    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def _printable_name(name: str) -> str:
    """A folder name as text every writer accepts: bytes that are not UTF-8 (a Latin-1 ``caf\\xe9``, which Python
    keeps as surrogate escapes that no UTF-8 file, CSV or TensorBoard tag can hold) shown as ``\\xe9``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _scan_class_folder(folder: Path, extensions: set[str]) -> list[Path]:
    files, bad = [], []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):  # .DS_Store, ._foo, editor droppings
            continue
        (files if p.is_file() and p.suffix.lower() in extensions else bad).append(p)
    if bad:
        shown = ", ".join(str(p) for p in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"found {len(bad)} non-image entr{'y' if len(bad) == 1 else 'ies'} in class folder {folder}: "
                         f"{shown}. A class folder may hold only image files; move the others out")
    if not files:
        raise ValueError(f"class folder {folder} holds no images; add images or remove the folder")
    return files


#: PIL modes of one channel wider than 8 bits (16-bit integers, 32-bit integers, 32-bit floats): PIL's own
#: ``convert("L")`` clips them at 255 (a 12-bit scan becomes almost all white), so :func:`_to_8bit` scales them.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_8bit(im, path: Path):
    """A one-channel image of more than 8 bits, min-max scaled per image to 0..255 (a constant image becomes 0)."""
    from PIL import Image

    x = np.asarray(im).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"image {path} ({im.mode}) holds NaN or infinite pixel values; fix or remove the file")
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    return Image.fromarray(np.round(x).astype(np.uint8), mode="L")


def _read_image(path: Path, image_size: int, grey: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in WIDE_MODES:  # 16-bit / 32-bit images: scaled, not clipped (see WIDE_MODES)
                im = _to_8bit(im, path)
            # Convert before resizing: bilinear resampling of palette images would mix palette indices.
            im = im.convert("L" if grey else "RGB").resize((image_size, image_size), Image.BILINEAR)
            x = np.asarray(im, dtype=np.uint8)
    except ValueError as err:
        if str(err).startswith(f"image {path}"):
            raise
        raise ValueError(f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove the file") from err
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError ... on bad files
        raise ValueError(f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove the file") from err
    return x[..., None] if x.ndim == 2 else x


def _read_split(folder: Path, class_names: list[str], image_size: int, grey: bool,
                extensions: set[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c, cname in enumerate(class_names):
        sub = folder / cname
        if not sub.is_dir():
            continue  # a held-out split may lack a class; train is checked by the caller
        for p in _scan_class_folder(sub, extensions):
            xs.append(_read_image(p, image_size, grey))
            ys.append(c)
    channels = 1 if grey else 3
    x = np.stack(xs) if xs else np.zeros((0, image_size, image_size, channels), np.uint8)
    return x, np.asarray(ys, np.int64)


def load_image_folder(root: str | Path, *, image_size: int = 28, grey: bool = False, seed: int = 0,
                      val_fraction: float = 0.15, test_fraction: float = 0.15) -> LongTailDataset:
    """Images in one sub-folder per class (sorted folder names are the class names).

    Layouts: ``root/<class>/<image>`` (val and test are carved off with a seeded stratified split), or
    ``root/train/<class>/...`` with ``root/val/...`` and/or ``root/test/...`` (a missing one is carved off train).
    Images are converted to L or RGB and resized (PIL, bilinear) to ``image_size`` squared. Hidden files
    (``.DS_Store``) are ignored. Palette, CMYK, 1-bit and alpha images go through PIL's ``convert`` (alpha is
    dropped). One-channel images of more than 8 bits (16-bit ``I;16``, 32-bit ``I`` and float ``F``, common in
    medical imaging) are min-max scaled per image to 0..255 (a constant image becomes 0) instead of being clipped;
    NaN or infinite pixels are refused. A class folder whose name is not UTF-8 (e.g. Latin-1) keeps its undecodable
    bytes as ``\\xNN`` escapes in ``class_names`` (results tables and TensorBoard write UTF-8).

    Args:
        root: The folder.
        image_size: Side of the square images after resizing.
        grey: Convert to one channel (``L``) instead of RGB.
        seed: Seed of the stratified split.
        val_fraction, test_fraction: Shares of each class carved off train when those split folders are absent.

    Raises:
        ValueError: a missing folder, fewer than 2 classes, an empty class folder, non-image files in a class
            folder, unreadable images, held-out classes absent from train.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root}; pass a folder holding one sub-folder per class")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer; got {image_size!r}")
    extensions = _image_extensions()
    split_mode = (root / "train").is_dir() and any((root / s).is_dir() for s in ("val", "test"))
    train_root = root / "train" if split_mode else root
    class_names = [p.name for p in _class_dirs(train_root)]
    if len(class_names) < 2:
        raise ValueError(f"{train_root} has {len(class_names)} class sub-folder(s) ({class_names}); a classifier needs "
                         "at least 2. Put each class's images in its own sub-folder")
    arrays = {}
    for split in SPLITS if split_mode else ("train",):
        folder = root / split if split_mode else root
        if not folder.is_dir():
            continue
        extra = sorted({p.name for p in _class_dirs(folder)} - set(class_names))
        if extra:
            raise ValueError(f"{folder} has class folder(s) {extra} that train/ lacks; every class needs train images")
        if split == "train":  # every class must be present and non-empty in train
            for cname in class_names:
                _scan_class_folder(folder / cname, extensions)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _read_split(folder, class_names, int(image_size), grey,
                                                                            extensions)
    ds = from_arrays(**arrays, class_names=[_printable_name(n) for n in class_names],
                     name=_printable_name(root.name) or "images", seed=seed,
                     val_fraction=val_fraction, test_fraction=test_fraction)
    meta = dict(ds.meta, source=str(root), layout="split-folders" if split_mode else "class-folders",
                image_size=int(image_size), grey=bool(grey))
    return dataclasses.replace(ds, meta=meta)


# -- one entry point for specs -----------------------------------------------------------------------
def load_dataset(spec: str | Path, *, root: str | Path | None = None, **kwargs) -> LongTailDataset:
    """Load a dataset from a spec string.

    Accepted forms: ``"digits"`` or ``"digits-lt"`` (embedded; ``kwargs`` go to :func:`load_digits_lt`), the path
    of a MedMNIST-format ``.npz`` (:func:`load_medmnist`), an image folder (:func:`load_image_folder`), or a
    MedMNIST flag such as ``"retinamnist"`` looked up in ``root`` (:func:`load_medmnist`).
    """
    text = str(spec).strip()
    if not text:  # Path("") is the current folder: never load it as images by accident
        raise ValueError(f"the dataset spec is empty; pass one of {', '.join(DATASETS)}, a MedMNIST flag, an .npz "
                         "path or an image folder (write ./ for the current folder)")
    if text.lower() in DATASETS:
        return load_digits_lt(**kwargs)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".npz":
        return load_medmnist(path, **kwargs)
    if path.is_dir():
        return load_image_folder(path, **kwargs)
    base, _ = _split_flag(text.lower())
    if base in MEDMNIST_CLASS_NAMES or base == "chestmnist":  # chestmnist: let load_medmnist explain the refusal
        return load_medmnist(text.lower(), root=root, **kwargs)
    raise ValueError(
        f"cannot load dataset {text!r}: it is neither an embedded dataset ({', '.join(DATASETS)}), an existing .npz "
        f"file or folder, nor a MedMNIST flag ({', '.join(MEDMNIST_FLAGS)}). Pass one of those, or wrap arrays with "
        "tailmix.envs.datasets.from_arrays")
