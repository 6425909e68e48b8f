"""Does feature mode rank fixed policies the way pixel mode does?

    python benchmarks/fidelity.py                                   # digits-LT, 3 seeds
    python benchmarks/fidelity.py --dataset $TAILMIX_DATA_DIR/retinamnist.npz --generator-steps 400

The env's feature mode trains a head on frozen features so that RL is cheap; it is only useful if it rewards
the same actions as training a CNN on the pixels. This script evaluates the fixed policies of FINDINGS.md
(ratio 0, 0.5, 1, 2, fill every class to the head count with unfiltered and with classifier-filtered
diffusion samples) by test balanced accuracy, in pixel mode and in feature mode with each encoder
(``crossfit``: out-of-fold, the default; ``random``: untrained CNN; ``supervised``: trained on the same real
images, the flawed design), over seeds, and prints the Spearman rank correlation of each feature variant with
pixel mode. The banks come from the same cached generator as ``train_agents.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLICIES = ("ratio 0", "ratio 0.5", "ratio 1", "ratio 2", "fill", "fill, filtered")


def _policy(name: str):
    from agents.baselines import ConstantRatio, FillToHead, NoSynthetic

    if name == "ratio 0":
        return NoSynthetic()
    if name.startswith("ratio"):
        return ConstantRatio(float(name.split()[1]))
    return FillToHead()


def banks(args, dataset):
    """(unfiltered, filtered) sources from the CLI's cached generator, filter and bank."""
    import train_agents as ta
    from envs.sources import BankSource

    cfg = ta.GenerateConfig(dataset=args.dataset, seed=0, preset=args.preset, generator_steps=args.generator_steps,
                            per_class=args.per_class, cache_dir=args.cache_dir, filter=False)
    raw = BankSource(ta.ensure_bank(cfg, dataset, progress=False))
    cfg.filter = True
    filtered = BankSource(ta.ensure_bank(cfg, dataset, progress=False))
    return raw, filtered


def score(dataset, sources, variant: str, seeds, args) -> dict[str, list[float]]:
    """Test balanced accuracy of every policy in one env variant ('pixel' or an encoder name)."""
    from agents.evaluate import evaluate

    base = dict(dataset=dataset, max_steps=args.max_steps, max_ratio=args.max_ratio, eval_split="test",
                empty_pool="zero", cache_dir=str(Path(args.cache_dir) / "encoders"))
    if variant == "pixel":
        base.update(mode="pixel", epochs_per_step=args.pixel_epochs)
    else:
        base.update(mode="feature", encoder=variant)
    out = {}
    for name in POLICIES:
        kw = dict(base, source=sources[1] if name == "fill, filtered" else sources[0])
        rows = evaluate(_policy(name), kw, seeds=seeds)
        out[name] = [float(r["test_balanced_accuracy"]) for r in rows]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=["crossfit", "crossfit_aligned", "random", "supervised"])
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--max-ratio", type=float, default=20.0, help="large enough for fill-to-head")
    parser.add_argument("--pixel-epochs", type=int, default=1)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=128)
    parser.add_argument("--cache-dir", default=".tailmix_cache")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    import train_agents as ta

    torch.set_num_threads(1)
    t0 = time.time()
    dataset = ta.load_data(ta.Common(dataset=args.dataset))
    sources = banks(args, dataset)
    seeds = list(range(args.seeds))
    results = {}
    for variant in ["pixel", *args.variants]:
        t = time.time()
        results[variant] = score(dataset, sources, variant, seeds, args)
        print(f"[{variant}] {time.time() - t:.0f} s", flush=True)
    means = {v: np.array([np.mean(results[v][p]) for p in POLICIES]) for v in results}
    print(f"\n## {dataset.name}: test balanced accuracy, mean ± std over {len(seeds)} seeds "
          f"(max_steps={args.max_steps}, bank per class {args.per_class}, generator {args.preset})\n")
    print("| policy | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for i, p in enumerate(POLICIES):
        cells = [f"{means[v][i]:.3f} ± {np.std(results[v][p], ddof=1) if len(seeds) > 1 else 0:.3f}" for v in results]
        print(f"| {p} | " + " | ".join(cells) + " |")
    rho = {v: float(spearmanr(means["pixel"], means[v]).statistic) for v in args.variants}
    print("\n| feature encoder | Spearman rho with pixel mode |\n|---|---|")
    for v, r in rho.items():
        print(f"| {v} | {r:+.2f} |")
    print(f"\ntotal {time.time() - t0:.0f} s; command: python benchmarks/fidelity.py {' '.join(argv or sys.argv[1:])}")
    out = {"dataset": dataset.name, "policies": POLICIES, "scores": results, "spearman": rho}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
