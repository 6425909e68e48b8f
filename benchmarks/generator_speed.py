"""DDIM with k steps vs the full DDPM sampler of the same trained model: images per second and filter acceptance.

    python -m benchmarks.generator_speed                   # digits-LT, small preset, ~3 min on 2 CPU cores
    python -m benchmarks.generator_speed --dataset retinamnist --data-root $TAILMIX_DATA_DIR \\
        --train-steps 1000 --n 16 --threads 2

One class-conditional DDPM is trained (or loaded from ``--cache-dir``: ``tailmix.pipeline.fitted_generator``,
the CLI's cache) and then sampled, in this one run, with DDIM at each ``--ks`` step count and with the
ancestral DDPM sampler over all ``--timesteps`` steps. Every sampler draws ``--n`` images of every class
from the same seeds, in one batch per class, so the speed ratios compare like with like. Only the
``sample`` calls are timed (not training, filter training or scoring); one untimed call warms up first.

Acceptance is what the bank's filter would keep: the CLI's long-tail-calibrated (logit-adjusted) reference
classifier (``tailmix.pipeline.reference_filter``) assigns the image to its class with confidence >= ``--tau``.
The table reports its mean over classes (each class weighs the same), over the tail half of the classes
(the rarer half by train count), and the difference to the DDPM sampler in percentage points.

Roofline: every row also reports the sampling FLOPs per image (the FLOPs of one denoising step per image, counted
by ``torch.utils.flop_counter.FlopCounterMode`` over one untimed 2-step ``sample`` call: the UNet forward with both
halves of classifier-free guidance and the guidance classifier when there is one; times the row's steps), the
achieved FLOP/s (FLOPs per image x images per second)
and its share of the machine's peak, measured in the same run with the same thread count as the best of
``--matmul-repeats`` float32 ``torch.matmul`` of two ``--matmul-size`` square matrices (timed before and after the
sampling; the faster is the peak). The ``bank fill`` row times what ``GeneratorPool.fill_bank`` does for one shard
of every class (``pool.make_shard``: the model's own sampler and step count, the CLI's quota ``--bank-quota`` and
batch size ``--bank-batch``, filtering included); its images/s counts candidates generated, kept or not.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import (add_generator_arguments, class_label, cli_config, command, device_description,
                            package_versions, require_positive, tail_classes)

DDPM_TIMESTEPS = 1000  # the DDPM default diffusion length; the CLI's generators are trained with it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generator_arguments(p, pinned="pinned so timings repeat")
    p.add_argument("--train-steps", type=int, default=300,
                   help="conditional training steps (after the preset's unconditional pretraining)")
    p.add_argument("--timesteps", type=int, default=DDPM_TIMESTEPS,
                   help="diffusion length T of the model; the DDPM sampler takes all T steps. Only the default "
                        "reuses the CLI's generator cache; other values train a model in this run")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50], help="DDIM step counts to compare")
    p.add_argument("--n", type=int, default=4, help="images per class per sampler (one batch per class)")
    p.add_argument("--classes", type=int, nargs="*", default=None, help="class ids to sample (default: all)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--bank-quota", type=int, default=128,
                   help="images kept per class by the bank-fill row (the CLI's --per-class; 0: no bank-fill row)")
    p.add_argument("--bank-batch", type=int, default=64,
                   help="largest batch the bank-fill row asks of the generator (GeneratorPool.fill_bank's)")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matrices of the peak matmul")
    p.add_argument("--matmul-repeats", type=int, default=3, help="timed matmuls per peak measurement (best kept)")
    args = p.parse_args(argv)
    require_positive(p, args, ("train_steps", "timesteps", "n", "threads", "bank_batch", "matmul_size",
                               "matmul_repeats"))
    bad = [k for k in args.ks if not 1 <= k <= args.timesteps]
    if bad:
        p.error(f"--ks must lie in 1..--timesteps ({args.timesteps}); got {bad}")
    if args.bank_quota < 0:
        p.error(f"--bank-quota must be >= 0 (0: no bank-fill row); got {args.bank_quota}")
    return args


def fitted_ddpm(args, dataset, *, progress: bool):
    """The trained DDPM: from the CLI's cache at the default diffusion length, else trained here."""
    import torch

    from tailmix import pipeline
    from tailmix.classifiers.device import select_device
    from tailmix.generators.ddpm import ClassConditionalDDPM

    if args.timesteps == DDPM_TIMESTEPS:
        return pipeline.fitted_generator(cli_config(args), dataset, progress=progress)
    gen = ClassConditionalDDPM(dataset.image_shape, dataset.num_classes, preset=args.preset,
                               train_steps=args.train_steps, num_train_timesteps=args.timesteps,
                               device=select_device(args.device))
    return gen.fit(dataset, generator=torch.Generator().manual_seed(args.seed), progress=progress)


@contextlib.contextmanager
def sampler_settings(gen, sampler: str, steps: int):
    """Switch the model's sampler for one measurement (the trained weights are shared)."""
    old = gen.sampler, gen.sample_steps
    gen.sampler, gen.sample_steps = sampler, steps
    try:
        yield gen
    finally:
        gen.sampler, gen.sample_steps = old


def measure(gen, flt, classes: list[int], n: int, sampler: str, steps: int, seed: int) -> dict:
    """Time ``gen.sample`` for ``n`` images of each class; score them with ``flt``."""
    import torch

    from tailmix.generators.pool import derive_seed

    seconds, accepted = 0.0, {}
    with sampler_settings(gen, sampler, steps), torch.no_grad():
        for c in classes:
            # the same start noise for every sampler: only the sampler differs
            g = torch.Generator().manual_seed(derive_seed(seed, "generator_speed", c))
            t0 = time.perf_counter()
            images = gen.sample(c, n, generator=g)  # numpy out: a GPU run is synchronised here
            seconds += time.perf_counter() - t0
            keep, _ = flt.select(images, c)
            accepted[c] = float(keep.mean())
    return {"sampler": sampler, "steps": steps, "images": n * len(classes), "seconds": seconds,
            "images_per_s": n * len(classes) / seconds, "acceptance": accepted}


def matmul_flops(size: int, repeats: int) -> float:
    """The best FLOP/s of ``repeats`` float32 ``size x size`` matmuls (one untimed warm-up first)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best


def step_flops(gen, class_id: int, n: int = 2) -> float:
    """FLOPs per image of one denoising step: FlopCounterMode (matmuls, convolutions) over a 2-step DDIM call.

    Every step of either sampler runs the same network calls, so a row's FLOPs per image are this times its steps.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with sampler_settings(gen, "ddim", 2), torch.no_grad(), counter:
        gen.sample(class_id, n, generator=torch.Generator().manual_seed(0))
    return counter.get_total_flops() / n / 2


def measure_bank_fill(gen, flt, classes: list[int], quota: int, batch_size: int, seed: int, shape) -> dict:
    """Time one bank shard per class exactly as ``GeneratorPool.fill_bank`` makes it (sampling and filtering)."""
    from tailmix.generators.pool import make_shard

    seconds, tried, accepted = 0.0, 0, {}
    for c in classes:
        t0 = time.perf_counter()
        shard = make_shard(gen, flt, c, 0, quota, name="ddpm", seed=seed, shape=tuple(shape), batch_size=batch_size)
        seconds += time.perf_counter() - t0
        tried += shard.tried
        accepted[c] = shard.accepted / shard.tried if shard.tried else math.nan
    return {"sampler": "bank fill", "steps": gen.sample_steps if gen.sampler == "ddim" else gen.num_train_timesteps,
            "images": tried, "seconds": seconds, "images_per_s": tried / seconds, "acceptance": accepted}


def format_tables(rows: list[dict], classes: list[int], counts: np.ndarray, class_names) -> str:
    ref = next(r for r in rows if r["sampler"] == "ddpm")
    tail = tail_classes(counts, classes)
    out = ["| sampler | steps | images | sampling s | images/s | speed-up vs DDPM | acceptance (class mean) | "
           "tail-half acceptance | acceptance - DDPM (points) | GFLOP/image | GFLOP/s | % of matmul peak |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['sampler']} | {r['steps']} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.2f} | "
                   f"{r['speedup']:.1f}x | {r['acceptance_mean']:.1%} | {r['acceptance_tail']:.1%} | "
                   f"{100 * (r['acceptance_mean'] - ref['acceptance_mean']):+.1f} | {r['flops_per_image'] / 1e9:.2f} | "
                   f"{r['flops_per_s'] / 1e9:.1f} | {r['peak_share']:.0%} |")
    out += ["", "Acceptance per class (the filter's keep rate of each sampler's images):", "",
            "| class | train images | " + " | ".join(f"{r['sampler']}-{r['steps']}" for r in rows) + " |",
            "|---|---:|" + "---:|" * len(rows)]
    for c in classes:
        out.append(f"| {class_label(c, class_names)}{' (tail)' if c in tail else ''} | {counts[c]} | "
                   + " | ".join(f"{r['acceptance'][c]:.0%}" for r in rows) + " |")
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    """Run the comparison, print it, and return one row per sampler (DDIM rows, DDPM, then the bank fill)."""
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from tailmix import pipeline
    from tailmix.classifiers.device import select_device
    from tailmix.envs.datasets import load_dataset

    progress = sys.stderr.isatty()
    dataset = load_dataset(args.dataset, root=args.data_root)
    classes = list(range(dataset.num_classes)) if args.classes is None else args.classes
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad or not classes:
        raise SystemExit(f"error: --classes {bad or classes} are not class ids of {dataset.name} "
                         f"(0..{dataset.num_classes - 1})")
    device = select_device(args.device)
    counts = dataset.train_counts
    print(f"command: {command('generator_speed', argv)}")
    print(f"versions: {package_versions()}")
    print(f"device: {device_description(device)}")
    print(f"dataset: {dataset.name}, {dataset.image_shape}, train counts {counts.tolist()}")

    t0 = time.perf_counter()
    gen = fitted_ddpm(args, dataset, progress=progress)
    flt = pipeline.reference_filter(cli_config(args), dataset)
    print(f"generator: ddpm preset {args.preset}, {gen.num_parameters() / 1e6:.2f}M parameters, "
          f"{gen.pretrain_steps} + {gen.train_steps} training steps, T = {gen.num_train_timesteps}, guidance "
          f"{gen.guidance_scale}; filter: logit-adjusted reference, tau {flt.tau} "
          f"(ready in {time.perf_counter() - t0:.0f} s, not timed)")
    print(f"sampling: {args.n} images x {len(classes)} classes per sampler, one batch per class\n")

    with sampler_settings(gen, "ddim", 2), torch.no_grad():  # warm-up: first-call costs are not sampling speed
        gen.sample(classes[0], 1, generator=torch.Generator().manual_seed(0))
    peak = matmul_flops(args.matmul_size, args.matmul_repeats)
    rows = [measure(gen, flt, classes, args.n, "ddim", k, args.seed) for k in args.ks]
    rows.append(measure(gen, flt, classes, args.n, "ddpm", gen.num_train_timesteps, args.seed))
    if args.bank_quota:
        rows.append(measure_bank_fill(gen, flt, classes, args.bank_quota, args.bank_batch, args.seed,
                                      dataset.image_shape))
    peak = max(peak, matmul_flops(args.matmul_size, args.matmul_repeats))
    ddpm = next(r for r in rows if r["sampler"] == "ddpm")
    tail = tail_classes(counts, classes)
    per_step = step_flops(gen, classes[0])
    for r in rows:
        r["flops_per_image"] = per_step * r["steps"]
        r["flops_per_s"] = r["flops_per_image"] * r["images_per_s"]
        r["peak_share"] = r["flops_per_s"] / peak
        r["speedup"] = r["images_per_s"] / ddpm["images_per_s"]
        r["acceptance_mean"] = float(np.mean([r["acceptance"][c] for c in classes]))
        r["acceptance_tail"] = float(np.mean([r["acceptance"][c] for c in tail]))
    print(f"sampling FLOPs: {per_step / 1e6:.1f} MFLOP per image per denoising step (FlopCounterMode)")
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (float32 {args.matmul_size}x{args.matmul_size} torch.matmul, best of "
          f"{args.matmul_repeats} before and {args.matmul_repeats} after sampling, {torch.get_num_threads()} threads)")
    if args.bank_quota:
        print(f"bank fill: one shard of {args.bank_quota} kept images per class, batches of at most "
              f"{args.bank_batch}, the model's {gen.sampler} sampler ({rows[-1]['steps']} steps), filter included\n")
    print(format_tables(rows, classes, counts, dataset.class_names))
    if args.json:
        given = sys.argv[1:] if argv is None else list(argv)
        Path(args.json).write_text(json.dumps({"argv": given, "matmul_flops_per_s": peak, "rows": rows}, indent=2,
                                              default=str))
    return rows


if __name__ == "__main__":
    main()
