"""Does classifier guidance help the filter keep the tail? Guided vs unguided sampling of one trained DDPM.

    python -m benchmarks.guidance --cache-dir /work/cache                   # digits-LT (the CLI's default DDPM)
    python -m benchmarks.guidance --dataset retinamnist --generator-steps 300 --cache-dir /work/cache --n 16

The DDPM is the CLI's (``tailmix.pipeline.fitted_generator``: found in ``--cache-dir`` when a run trained it), and
so is the reference filter (``pipeline.reference_filter``). The noise-aware classifier of classifier guidance is
trained once on top (``pipeline.guided_generator``, cached too); every scale of ``--scales`` then samples ``--n``
images per class from the same start noise (same seeds per class), so the columns differ by the guidance only
(scale 0 is exactly the unguided sampler). Per scale it reports the filter's acceptance per class, the per-class
Frechet distance to the real train images (``generators.quality``, random-projection features) and the sampling
speed. The tail half is the rarer half of the classes by train count. The table is printed and written to
``benchmarks/does-classifier-guidance-help/guidance-<dataset>.md`` (``--out``) with the command.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import (add_generator_arguments, class_label, command, device_description, experiment_dir,
                            package_versions, require_positive, tail_classes)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generator_arguments(p)
    p.add_argument("--generator-steps", type=int, default=None, help="DDPM training steps (default: the preset's)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0],
                   help="classifier-guidance scales to compare (0: unguided)")
    p.add_argument("--classifier-steps", type=int, default=None,
                   help="training steps of the noise-aware classifier (default: the preset's, as the CLI trains it)")
    p.add_argument("--n", type=int, default=32, help="generated images per class and scale")
    p.add_argument("--filter-epochs", type=int, default=30, help="training epochs of the reference filter")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/does-classifier-guidance-help/guidance-<dataset>.md)")
    args = p.parse_args(argv)
    require_positive(p, args, ("n", "threads", "filter_epochs"))
    if any(s < 0 for s in args.scales):
        p.error(f"--scales must be >= 0; got {args.scales}")
    args.scales = sorted(set(args.scales))
    if args.classifier_steps is not None and args.classifier_steps < 1:
        p.error(f"--classifier-steps must be >= 1; got {args.classifier_steps}")
    return args


def format_table(res: dict, dataset) -> str:
    scales, classes, tail = res["scales"], list(range(dataset.num_classes)), res["tail"]
    counts = dataset.train_counts
    head = "| class | train | " + " | ".join(f"kept @ {s:g}" for s in scales) + " | " \
        + " | ".join(f"Frechet @ {s:g}" for s in scales) + " |"
    out = [head, "|---|---:|" + "---:|" * (2 * len(scales))]
    for c in classes:
        out.append(f"| {class_label(c, dataset.class_names)}{' (tail)' if c in tail else ''} | {counts[c]} | "
                   + " | ".join(f"{res['kept'][s][c]}/{res['n']}" for s in scales) + " | "
                   + " | ".join(f"{res['frechet'][s][c]:.2f}" for s in scales) + " |")

    def mean(d, cs):
        return float(np.mean([d[c] for c in cs]))

    for name, cs in (("class mean", classes), ("tail half", tail)):
        out.append(f"| **{name}** | | " + " | ".join(f"{mean(res['acc'][s], cs):.1%}" for s in scales) + " | "
                   + " | ".join(f"{mean(res['frechet'][s], cs):.2f}" for s in scales) + " |")
    out.append("| images/s | | " + " | ".join(f"{res['speed'][s]:.2f}" for s in scales) + " |" + " |" * len(scales))
    return "\n".join(out)


def classifier_recall(gen, dataset, t: int) -> list[float]:
    """Per-class recall of ``gen``'s noise-aware classifier on the val images noised to timestep ``t`` (seeded)."""
    import torch

    images, labels = dataset.split("val")
    x = gen._images_to_padded(images)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x.device)
    tt = torch.full((len(x),), t, dtype=torch.long, device=x.device)
    with torch.no_grad():
        pred = gen.guidance_classifier(gen.train_scheduler.add_noise(x, noise, tt), tt).argmax(1).cpu().numpy()
    return [round(float((pred[labels == c] == c).mean()), 2) for c in range(dataset.num_classes)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from tailmix import pipeline
    from tailmix.classifiers.device import select_device
    from tailmix.generators.pool import derive_seed
    from tailmix.generators.quality import quality_report

    progress = sys.stderr.isatty()
    cfg = pipeline.Settings(dataset=args.dataset, data_root=args.data_root, seed=args.seed, preset=args.preset,
                            generator_steps=args.generator_steps, tau=args.tau, filter_epochs=args.filter_epochs,
                            device=args.device, cache_dir=args.cache_dir)
    dataset = pipeline.load_data(cfg)
    device = select_device(args.device)
    lines = [f"command: `{command('guidance', argv)}`", f"versions: {package_versions()}", f"device: {device_description(device)}",
             f"dataset: {dataset.name}, {dataset.image_shape}, train counts {dataset.train_counts.tolist()}"]
    print("\n".join(lines), flush=True)

    t0 = time.perf_counter()
    flt = pipeline.reference_filter(cfg, dataset, progress=progress)
    guided = [s for s in args.scales if s > 0]
    # The unguided DDPM (trained or cached), plus the noise-aware classifier trained once on top: the classifier
    # does not depend on the scale, so one is shared by all scales.
    if guided and args.classifier_steps is None:
        gen = pipeline.fitted_generator(dataclasses.replace(cfg, guidance_scale=guided[0]), dataset, progress=progress)
    else:
        gen = pipeline.fitted_generator(cfg, dataset, progress=progress)
        if guided:  # the CLI's guided DDPM with other classifier steps, cached beside it the same way
            from tailmix.generators.base import load_generator
            from tailmix.generators.guidance import classifier_settings

            gen.classifier_settings = classifier_settings({"steps": args.classifier_steps}, gen.preset)
            gen.classifier_scale = guided[0]
            path = Path(args.cache_dir) / "generators" / f"ddpm-guided-{pipeline.cache_key(gen.config(), args.seed)}"
            if (path / "config.json").exists():
                gen = load_generator(path, device=gen.device)
            else:
                gen.fit_guidance(dataset, generator=torch.Generator().manual_seed(args.seed), progress=progress)
                pipeline._save_folder(path, gen.save)
    t1 = time.perf_counter()
    lines.append(f"generator: ddpm preset {args.preset}, {gen.pretrain_steps} + {gen.train_steps} steps, "
                 f"{gen.sampler} {gen.sample_steps} steps, classifier-free guidance {gen.guidance_scale}; noise-aware "
                 f"classifier {gen.classifier_settings if guided else '-'}; filter tau {args.tau} "
                 f"({t1 - t0:.0f} s to train or load them)")
    print(lines[-1], flush=True)
    classes = list(range(dataset.num_classes))
    if guided:  # what the gradient can know: the noise-aware classifier's recall on the real val images
        lines.append("noise-aware classifier, recall per class on the real val images at timestep t: "
                     + "; ".join(f"t={t}: {classifier_recall(gen, dataset, t)}" for t in (0, 250, 500)))
        print(lines[-1], flush=True)
    res = {"scales": args.scales, "n": args.n, "tail": tail_classes(dataset.train_counts, classes),
           "kept": {}, "acc": {}, "frechet": {}, "speed": {}}
    for s in args.scales:
        gen.classifier_scale = s
        images, seconds = {}, 0.0
        for c in classes:
            g = torch.Generator().manual_seed(derive_seed(args.seed, "guidance", c))  # same start noise per scale
            start = time.perf_counter()
            images[c] = gen.sample(c, args.n, generator=g)
            seconds += time.perf_counter() - start
        keep = {c: flt.select(images[c], c)[0] for c in classes}
        res["kept"][s] = {c: int(keep[c].sum()) for c in classes}
        res["acc"][s] = {c: float(keep[c].mean()) for c in classes}
        report = quality_report(images, dataset, seed=args.seed)
        res["frechet"][s] = {c: report[c]["frechet"] for c in classes}
        res["speed"][s] = len(classes) * args.n / seconds
        print(f"scale {s:g}: kept {res['kept'][s]}, {res['speed'][s]:.2f} images/s", flush=True)
    table = format_table(res, dataset)
    print("\n" + table)
    out = Path(args.out or experiment_dir("does-classifier-guidance-help") / f"guidance-{dataset.name}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# Classifier guidance on {dataset.name}\n\n" + "\n\n".join(lines) + "\n\n"
            f"Generated images kept by the reference filter per class ({args.n} per class and scale, the same start "
            "noise for every scale; 'kept @ s' at classifier-guidance scale s, 0 = unguided) and the per-class "
            "Frechet distance to the real train images (random-projection features; lower is closer):\n\n"
            + table + "\n")
    out.write_text(text)
    print(f"\nwritten to {out}")
    return res


if __name__ == "__main__":
    main()
