"""Does the reference filter keep the tail? Per-class acceptance of real and generated images per calibration.

    python -m benchmarks.filter_quality                     # digits-LT, ~30 s (+1 min if the generator is not cached)
    python -m benchmarks.filter_quality --dataset $TAILMIX_DATA_DIR/retinamnist.npz --n 64

A reference classifier is trained on the real train split with each calibration of
``generators.filter.CALIBRATIONS`` ("none" is plain cross-entropy). For every class it reports how many of

(a) the held-out REAL val images of that class the filter keeps (assigned to the class with confidence >=
    ``--tau``): the filter's recall at ``tau``. A real tail image is a perfect sample, so a filter that
    rejects those filters the tail away, whatever the generator does;
(b) ``--n`` samples per class of the DDPM (``tailmix.pipeline.fitted_generator``, shared with the CLI's and
    generator_speed.py's cache) that it keeps,

and the per-class Frechet distance (``generators.quality``, random-projection features) of the samples to
the real train images, next to that of the real val images (what real data of that size scores).
The tail half is the rarer half of the classes by train count.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import (add_generator_arguments, class_label, cli_config, command, device_description,
                            package_versions, require_positive, tail_classes)


def parse_args(argv=None) -> argparse.Namespace:
    from tailmix.generators.filter import CALIBRATIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generator_arguments(p)
    p.add_argument("--calibrations", nargs="+", default=["none"] + [c for c in CALIBRATIONS if c != "none"],
                   choices=CALIBRATIONS, help="reference calibrations to compare")
    p.add_argument("--filter-epochs", type=int, default=30, help="training epochs of each reference classifier")
    p.add_argument("--train-steps", type=int, default=300,
                   help="DDPM conditional training steps (after the preset's unconditional pretraining)")
    p.add_argument("--n", type=int, default=32, help="generated images per class (the model's DDIM sampler)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    require_positive(p, args, ("filter_epochs", "train_steps", "n", "threads"))
    args.calibrations = list(dict.fromkeys(args.calibrations))
    return args


def calibrated_filter(dataset, calibration: str, *, tau: float, epochs: int, seed: int, device, cache_dir: str):
    """A reference filter trained with ``calibration`` (cached under ``cache_dir/filters``)."""
    import torch

    from tailmix.generators.filter import ClassifierFilter
    from tailmix.pipeline import cache_key

    augment = min(dataset.image_shape[:2]) >= 16  # as the CLI's filter: random shifts of 8x8 digits destroy them
    key = cache_key(dataset.fingerprint(), tau, seed, augment, calibration, epochs, str(device))
    path = Path(cache_dir) / "filters" / f"{calibration}-{key}"
    if path.exists():
        try:
            return ClassifierFilter.load(path, device=device)
        except (ValueError, OSError) as err:
            print(f"cached filter at {path} is unreadable ({err}); retraining")
    flt = ClassifierFilter.train_reference(dataset, tau=tau, calibration=calibration, epochs=epochs, augment=augment,
                                           device=device, generator=torch.Generator().manual_seed(seed))
    flt.save(path)
    return flt


def acceptance(flt, images_by_class: dict[int, np.ndarray]) -> dict[int, float]:
    """Fraction of each class's images that ``flt`` keeps for that class (NaN: no images)."""
    out = {}
    for c, images in images_by_class.items():
        out[c] = float(flt.select(images, c)[0].mean()) if len(images) else float("nan")
    return out


def _pct(v: float) -> str:
    return "-" if np.isnan(v) else f"{v:.0%}"


def format_tables(res: dict, dataset) -> str:
    cals, classes = res["calibrations"], list(range(dataset.num_classes))
    counts, n_val = dataset.train_counts, dataset.counts("val")
    tail = res["tail_classes"]
    head = [c for c in classes if c not in tail]

    def mean(d, cs):
        return float(np.nanmean([d[c] for c in cs]))

    out = [f"Summary (filter acceptance at tau {res['tau']}; head = {head}, tail = {tail}):", "",
           "| calibration | real val: class mean | real val: head half | real val: tail half | real val: worst class "
           "| generated: class mean | generated: head half | generated: tail half |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cal in cals:
        r, g = res["real"][cal], res["generated"][cal]
        worst = min(classes, key=lambda c: r[c])
        out.append(f"| {cal} | {mean(r, classes):.1%} | {mean(r, head):.1%} | {mean(r, tail):.1%} | "
                   f"{r[worst]:.0%} ({class_label(worst, dataset.class_names)}) | {mean(g, classes):.1%} | "
                   f"{mean(g, head):.1%} | {mean(g, tail):.1%} |")
    out += ["", "(a) Held-out real val images kept per class (the filter's recall at tau):", "",
            "| class | train | val | " + " | ".join(cals) + " |", "|---|---:|---:|" + "---:|" * len(cals)]
    for c in classes:
        out.append(f"| {class_label(c, dataset.class_names)}{' (tail)' if c in tail else ''} | {counts[c]} | "
                   f"{n_val[c]} | " + " | ".join(_pct(res["real"][cal][c]) for cal in cals) + " |")
    out += ["", f"(b) Generated images kept per class ({res['n']} per class), and Frechet distance to the real train "
                "images (random-projection features; real val images as the yardstick):", "",
            "| class | train | " + " | ".join(cals) + " | Frechet generated | Frechet real val |",
            "|---|---:|" + "---:|" * (len(cals) + 2)]
    for c in classes:
        out.append(f"| {class_label(c, dataset.class_names)}{' (tail)' if c in tail else ''} | {counts[c]} | "
                   + " | ".join(_pct(res["generated"][cal][c]) for cal in cals)
                   + f" | {res['frechet_generated'][c]:.2f} | {res['frechet_real_val'][c]:.2f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    """Train the filters, score real val and generated images, print the tables and return the numbers."""
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from tailmix import pipeline
    from tailmix.classifiers.device import select_device
    from tailmix.envs.datasets import load_dataset
    from tailmix.generators.pool import derive_seed
    from tailmix.generators.quality import quality_report

    progress = sys.stderr.isatty()
    dataset = load_dataset(args.dataset, root=args.data_root)
    device = select_device(args.device)
    classes = list(range(dataset.num_classes))
    print(f"command: {command('filter_quality', argv)}")
    print(f"versions: {package_versions()}")
    print(f"device: {device_description(device)}")
    print(f"dataset: {dataset.name}, {dataset.image_shape}, train counts {dataset.train_counts.tolist()}, "
          f"val counts {dataset.counts('val').tolist()}")

    t0 = time.perf_counter()
    filters = {cal: calibrated_filter(dataset, cal, tau=args.tau, epochs=args.filter_epochs, seed=args.seed,
                                      device=device, cache_dir=args.cache_dir) for cal in args.calibrations}
    t1 = time.perf_counter()
    gen = pipeline.fitted_generator(cli_config(args), dataset, progress=progress)
    t2 = time.perf_counter()
    generated = {}
    with torch.no_grad():
        for c in classes:
            g = torch.Generator().manual_seed(derive_seed(args.seed, "filter_quality", c))
            generated[c] = gen.sample(c, args.n, generator=g)
    t3 = time.perf_counter()
    print(f"filters: {len(filters)} x {args.filter_epochs} epochs ({t1 - t0:.0f} s); generator: ddpm preset "
          f"{args.preset}, {gen.pretrain_steps} + {gen.train_steps} steps ({t2 - t1:.0f} s); {args.n} samples per "
          f"class, {gen.sampler} {gen.sample_steps} steps, guidance {gen.guidance_scale} ({t3 - t2:.0f} s)\n")

    val_images, val_labels = dataset.split("val")
    real = {c: val_images[val_labels == c] for c in classes}
    fd_gen = quality_report(generated, dataset, seed=args.seed)
    fd_val = quality_report(real, dataset, seed=args.seed)
    res = {"dataset": dataset.name, "tau": args.tau, "n": args.n, "calibrations": args.calibrations,
           "tail_classes": tail_classes(dataset.train_counts, classes),
           "real": {cal: acceptance(f, real) for cal, f in filters.items()},
           "generated": {cal: acceptance(f, generated) for cal, f in filters.items()},
           "frechet_generated": {c: fd_gen[c]["frechet"] for c in classes},
           "frechet_real_val": {c: fd_val[c]["frechet"] for c in classes}}
    print(format_tables(res, dataset))
    if args.json:
        given = sys.argv[1:] if argv is None else list(argv)
        Path(args.json).write_text(json.dumps({"argv": given, **res}, indent=2))
    return res


if __name__ == "__main__":
    main()
