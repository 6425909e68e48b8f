"""Write a stand-in for a user's small image folder: ~780 RetinaMNIST images (28 px RGB) in 3 long-tailed classes.

    python -m benchmarks.make_folder /tmp/folder780            # reads $TAILMIX_DATA_DIR/retinamnist.npz
    python train_agents.py --dataset /tmp/folder780/           # the main job, as a new user would run it

Grades 0, 2 and 4 of every RetinaMNIST split are pooled and subsampled (seeded, so the folder is the same on every
machine) to 560 / 160 / 60 images, written as PNGs in one sub-folder per class (``grade0/``, ``grade2/``,
``grade4/``); the folder loader carves val and test off it with its own seeded stratified split, as it would for a
user's folder. The time-budget measurements of the README were taken on this folder.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

#: RetinaMNIST grade -> images kept (a long tail, 780 in all).
COUNTS = {0: 560, 2: 160, 4: 60}


def make_folder(out: str | Path, npz: str | Path, *, counts: dict[int, int] | None = None, seed: int = 0) -> Path:
    """Write the folder ``out`` (which must not exist or be empty) from the RetinaMNIST archive ``npz``."""
    from PIL import Image

    counts = COUNTS if counts is None else counts
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; pass a new folder")
    with np.load(npz) as d:
        images = np.concatenate([d[f"{s}_images"] for s in ("train", "val", "test")])
        labels = np.concatenate([d[f"{s}_labels"].reshape(-1) for s in ("train", "val", "test")])
    rng = np.random.default_rng(seed)
    for grade, n in counts.items():
        rows = np.flatnonzero(labels == grade)
        if len(rows) < n:
            raise ValueError(f"grade {grade} has {len(rows)} images; asked for {n}")
        keep = np.sort(rng.choice(rows, size=n, replace=False))
        folder = out / f"grade{grade}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(keep):
            Image.fromarray(images[row]).save(folder / f"{i:04d}.png")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder to write (outside the repository)")
    p.add_argument("--npz", default=None, help="retinamnist.npz (default: $TAILMIX_DATA_DIR/retinamnist.npz)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    npz = args.npz or os.path.join(os.environ.get("TAILMIX_DATA_DIR", os.path.expanduser("~/.medmnist")),
                                   "retinamnist.npz")
    if not Path(npz).is_file():
        raise SystemExit(f"error: {npz} not found; pass --npz or set TAILMIX_DATA_DIR to the folder holding it")
    out = make_folder(args.out, npz, seed=args.seed)
    print(f"wrote {sum(COUNTS.values())} images ({', '.join(f'grade {g}: {n}' for g, n in COUNTS.items())}) to {out}")


if __name__ == "__main__":
    main()
