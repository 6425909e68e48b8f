"""Does feature mode rank schedule policies as pixel mode does? digits-LT, oracle source.

    python -m benchmarks.schedule_fidelity --pixel-seeds 6 --feature-seeds 20 --cache-dir /work/cache

Policies: no synthetic data, fill to the head count, and fill scheduled over the episode (``agents.schedules``:
decay, warm-up, first half only, second half only), with the oracle source (real left-out digits,
``envs.oracle``) so that the question is the timing, not the generator. Pixel mode (a CNN, one AdamW per
episode with a cosine decay) is the reference; feature mode is scored with the v0 constant learning rate of the
head and with ``lr_schedule="cosine"`` (peak ``--cosine-lr``). Prints and writes the Spearman correlation of the
policy means with pixel mode's, with a bootstrap 95% interval over seeds (``benchmarks/fidelity.py``'s
machinery), to ``benchmarks/does-feature-mode-rank-like-pixel-mode/fidelity-schedules-digits-lt.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import bootstrap_rho, commit, default_cache, experiment_dir, footer, rho, write_text

OUT = experiment_dir("does-feature-mode-rank-like-pixel-mode")
POLICIES = ("none", "fill", "decay:fill", "warmup:fill", "early:fill", "late:fill")


def scores(kw: dict, seeds: list[int]) -> np.ndarray:
    """``(policies, seeds)`` test balanced accuracy."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import evaluate, make_eval_env

    env = make_eval_env(kw)
    return np.array([[r["test_balanced_accuracy"] for r in evaluate(make_baseline(p), kw, seeds=seeds, env=env)]
                     for p in POLICIES])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixel-seeds", type=int, default=6)
    p.add_argument("--feature-seeds", type=int, default=20)
    p.add_argument("--cosine-lr", type=float, default=0.2)
    p.add_argument("--cache-dir", default=default_cache())
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from tailmix.envs.datasets import load_digits_lt
    from tailmix.envs.oracle import oracle_source

    t0 = time.time()
    ds = load_digits_lt()
    base = dict(dataset=ds, source=oracle_source(ds), max_steps=10, max_ratio=8.0, empty_pool="zero")
    pixel = scores(dict(base, mode="pixel"), list(range(args.pixel_seeds)))
    print("pixel", np.round(pixel.mean(1), 3), flush=True)
    enc = str(Path(args.cache_dir) / "encoders")
    variants = {"feature, constant lr (v0)": dict(base, cache_dir=enc),
                f"feature, cosine lr {args.cosine_lr:g}": dict(base, cache_dir=enc, lr_schedule="cosine",
                                                                 lr=args.cosine_lr)}
    feats = {}
    for name, kw in variants.items():
        feats[name] = scores(kw, list(range(args.feature_seeds)))
        print(name, np.round(feats[name].mean(1), 3), flush=True)
    cols = ["pixel"] + list(feats)
    lines = ["# Schedules: does feature mode rank them as pixel mode does? (digits-LT, oracle source)", "",
             f"Test balanced accuracy, mean ± std over seeds (pixel: {args.pixel_seeds}, feature: "
             f"{args.feature_seeds}); 10 steps per episode, max ratio 8; source: the real digits the long-tail "
             "builder left unused. Pixel mode: small CNN, one AdamW per episode with cosine decay (its default).", "",
             "| policy | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    allm = [pixel] + list(feats.values())
    for i, pol in enumerate(POLICIES):
        lines.append(f"| {pol} | " + " | ".join(f"{m[i].mean():.3f} ± {m[i].std(ddof=1):.3f}" for m in allm) + " |")
    lines += ["", "| feature variant | Spearman rho with pixel | bootstrap 95% interval |", "|---|---|---|"]
    for name, f in feats.items():
        lo, hi = bootstrap_rho(pixel, f)
        lines.append(f"| {name} | {rho(pixel.mean(1), f.mean(1)):+.2f} | [{lo:+.2f}, {hi:+.2f}] |")
    lines += ["", f"Wall time {time.time() - t0:.0f} s.", "", *footer("schedule_fidelity", argv, commit())]
    text = "\n".join(lines)
    print(text)
    write_text(Path(args.out) if args.out else OUT / "fidelity-schedules-digits-lt.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
