"""Does feature mode rank fixed policies the way pixel mode does?

    python -m benchmarks.fidelity --seeds 10 --pixel-json pixel-digits.json          # digits-LT
    python -m benchmarks.fidelity --dataset $TAILMIX_DATA_DIR/retinamnist.npz --generator-steps 300 \
        --seeds 10 --pixel-json pixel-retina.json

The env's feature mode trains a head on frozen features so that RL is cheap; it is only useful if it rewards
the same actions as training a CNN on the pixels. This script evaluates fixed policies
(ratio 0, 0.5, 1, 2, fill every class to the head count with unfiltered and with classifier-filtered
diffusion samples) by test balanced accuracy, in pixel mode and in feature mode with each encoder
(``envs.features.ENCODERS``), over seeds, and prints:

- the Spearman rank correlation of each encoder's policy means with pixel mode's,
- a bootstrap 95% interval of that rho (seeds resampled with replacement, pixel and feature independently),
- pixel mode's own split-half rank reliability: Spearman between the policy means of two disjoint halves of
  the pixel seeds, averaged over random splits. Pixel mode is noisy; with few seeds it does not agree with
  itself, and no feature mode can agree with it better than it agrees with itself. Each encoder's rho with
  the same pixel halves is printed beside it, so the two are compared at the same number of pixel seeds.

Pixel mode dominates the cost (seconds per step against milliseconds), so ``--pixel-json`` keeps its per-seed
results on disk, written after every episode: a rerun with more seeds or other encoders reuses them, and an
interrupted run resumes. The file records the settings it was made with and is refused when they differ.
The banks come from the same cached generator as ``train_agents.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import bootstrap_rho, command, default_cache
from benchmarks.lib import rho as rank_rho

POLICIES = ("ratio 0", "ratio 0.5", "ratio 1", "ratio 2", "fill", "fill, filtered")
# How pixel mode trains (envs.engine.PixelEngine); pixel files made by an earlier pixel mode are refused.
PIXEL_TRAINING = "one AdamW per episode, cosine decay, epochs of n_real mix samples"


def _policy(name: str):
    from tailmix.agents.baselines import ConstantRatio, FillToHead, NoSynthetic

    if name == "ratio 0":
        return NoSynthetic()
    if name.startswith("ratio"):
        return ConstantRatio(float(name.split()[1]))
    return FillToHead()


def banks(args, dataset):
    """(unfiltered, filtered) sources from the CLI's cached generator, filter and bank.

    With ``--source augment``: one source, classic augmentations of the real train images (flips, shifts;
    ``envs.sources.augmentation_source``), a stand-in for a generator whose samples are as real as can be.
    """
    from tailmix import pipeline
    from tailmix.envs.sources import BankSource, augmentation_source

    if getattr(args, "source", "ddpm") == "augment":
        return (augmentation_source(dataset, per_class=args.per_class, seed=0),)

    cfg = pipeline.Settings(dataset=args.dataset, seed=0, preset=args.preset, generator_steps=args.generator_steps,
                            per_class=args.per_class, cache_dir=args.cache_dir, filter=False)
    raw = BankSource(pipeline.ensure_bank(cfg, dataset, progress=False))
    cfg.filter = True
    filtered = BankSource(pipeline.ensure_bank(cfg, dataset, progress=False))
    return raw, filtered


def _env_kwargs(dataset, args, variant: str) -> dict:
    base = dict(dataset=dataset, max_steps=args.max_steps, max_ratio=args.max_ratio, eval_split="test",
                empty_pool="zero", draw=getattr(args, "draw", "replace"),
                cache_dir=str(Path(args.cache_dir) / "encoders"))
    if variant == "pixel":
        base.update(mode="pixel", epochs_per_step=args.pixel_epochs)
    else:
        base.update(mode="feature", encoder=variant, head=getattr(args, "head", "linear"))
    return base


def _run(envs: dict, kwargs: dict, sources, name: str, seed: int) -> dict:
    """The episode record (``agents.evaluate``) of policy ``name`` from ``seed``; one env per source, reused."""
    from tailmix.agents.evaluate import evaluate, make_eval_env

    which = 1 if name == "fill, filtered" else 0
    if which not in envs:
        envs[which] = make_eval_env(dict(kwargs, source=sources[which]))  # the env hands its source to the encoder
    return evaluate(_policy(name), {}, seeds=[seed], env=envs[which])[0]


def _episode(envs: dict, kwargs: dict, sources, name: str, seed: int) -> float:
    """Test balanced accuracy of policy ``name`` from ``seed``."""
    return float(_run(envs, kwargs, sources, name, seed)["test_balanced_accuracy"])


def _episodes_batched(envs: dict, kwargs: dict, sources, name: str, seeds: list[int]) -> list[float]:
    """Test balanced accuracy of policy ``name`` from each of ``seeds``, all seeds in one pixel-mode vector env.

    The copies' CNNs train as one grouped network (``envs.pixel_batched``); on the CPU every score is the one
    :func:`_episode` gives for its seed (bit-identical), so the two fill the same ``--pixel-json``. The policies
    here are fixed ratios, so every step's action is the policy's ratios, as ``policy.act`` gives them.
    """
    from types import SimpleNamespace

    from gymnasium.vector import AutoresetMode

    from tailmix.envs.vector import SyntheticRatioVectorEnv

    which = 1 if name == "fill, filtered" else 0
    key = ("vector", which, len(seeds))
    if key not in envs:
        kw = {k: v for k, v in kwargs.items() if k != "dataset"}
        envs[key] = SyntheticRatioVectorEnv(len(seeds), dataset=kwargs["dataset"], source=sources[which],
                                            autoreset_mode=AutoresetMode.DISABLED, **{**kw, "eval_split": "test"})
    venv = envs[key]
    venv.reset(seed=list(seeds))
    policy = _policy(name)
    ratios = policy.ratios(SimpleNamespace(train_counts=venv.core.train_counts, max_ratio=venv.config.max_ratio))
    actions = np.tile(np.asarray(venv.core.ratio_to_action(ratios), np.float32), (len(seeds), 1))
    for _ in range(venv.config.max_steps):
        *_, infos = venv.step(actions)
    return [float(x) for x in infos["test"]["balanced_accuracy"]]  # sync-shaped infos: a masked dict of arrays


def pool_report(dataset, sources, args) -> dict[str, list[dict]]:
    """Per source and class: pool size, and how the default encoder's fold models classify the pool, printed.

    A fill policy repeats a small pool many times, and a frozen encoder places synthetic images where its
    fold models see them; both shape what feature mode makes of a bank. The fold models' class probabilities
    are averaged over folds (the encoder's features are their standardised log-probabilities).
    """
    import torch

    from tailmix.classifiers.training import predict_logits
    from tailmix.envs.config import RatioEnvConfig
    from tailmix.envs.features import encoder_config, fit_encoder

    enc = fit_encoder(dataset, encoder_config(RatioEnvConfig()), cache_dir=str(Path(args.cache_dir) / "encoders"))
    c = dataset.num_classes
    names = ["unfiltered", "filtered"] if len(sources) == 2 else ["augment"]
    pools = {name: [src.pool(k) for k in range(c)] for name, src in zip(names, sources)}
    pools["real val"] = [dataset.val_images[dataset.val_labels == k] for k in range(c)]
    print("\n### Synthetic pools as the crossfit fold models see them (share of each pool per predicted class)\n")
    print("| pool | class | images | " + " | ".join(f"read as {k}" for k in range(c)) + " |")
    print("|---|---|---|" + "---|" * c)
    out: dict = {}
    for name, per_class in pools.items():
        for k, imgs in enumerate(per_class):
            share = np.zeros(c)
            if len(imgs):
                prob = np.mean([torch.softmax(torch.from_numpy(predict_logits(m, imgs)), 1).numpy()
                                for m in enc.models], 0)
                share = np.bincount(prob.argmax(1), minlength=c) / len(imgs)
            out.setdefault(name, []).append({"images": len(imgs), "read_as": share.tolist()})
            print(f"| {name} | {k} | {len(imgs)} | " + " | ".join(f"{v:.2f}" for v in share) + " |")
    return out


def per_class_recall(dataset, sources, variants, seeds, args) -> dict[str, dict[str, list[float]]]:
    """Mean test recall per class of every policy, in pixel mode and each encoder in ``variants``, printed.

    Where the modes disagree on a policy, this shows which classes carry the disagreement. Recomputed (the
    pixel file keeps balanced accuracies only), so use a few seeds.
    """
    out: dict = {}
    print(f"\n### Test recall per class, mean over seeds {seeds[0]}-{seeds[-1]} "
          f"(train counts {', '.join(map(str, dataset.train_counts))})\n")
    print("| mode | policy | balanced accuracy | " + " | ".join(dataset.class_names) + " |")
    print("|---|---|---|" + "---|" * dataset.num_classes)
    for variant in ["pixel", *variants]:
        envs: dict = {}
        kwargs = _env_kwargs(dataset, args, variant)
        for name in args.policies:
            runs = [_run(envs, kwargs, sources, name, s) for s in seeds]
            recall = np.mean([np.asarray(r["test_recall"], float) for r in runs], 0)
            bal = float(np.mean([r["test_balanced_accuracy"] for r in runs]))
            out.setdefault(variant, {})[name] = recall.tolist()
            print(f"| {variant} | {name} | {bal:.3f} | " + " | ".join(f"{v:.3f}" for v in recall) + " |", flush=True)
    return out


def pixel_settings(dataset, sources, args) -> dict:
    """What the pixel results depend on; a saved file made with other settings is refused."""
    return {"dataset": dataset.fingerprint(), "banks": [s.fingerprint() for s in sources],
            "max_steps": args.max_steps, "max_ratio": args.max_ratio, "pixel_epochs": args.pixel_epochs,
            "threads": 1, "pixel_training": PIXEL_TRAINING, "draw": getattr(args, "draw", "replace")}


def load_pixel(path: Path | None, settings: dict) -> dict[str, dict[str, float]]:
    """Saved per-seed pixel scores ``{policy: {seed: score}}`` (empty when there is no file)."""
    if path is None or not path.exists():
        return {p: {} for p in POLICIES}
    blob = json.loads(path.read_text())
    # Files written before --draw existed were all made with draw="replace" (the env's v0 default).
    blob["settings"] = {"draw": "replace", **blob.get("settings", {})}
    if blob["settings"]["draw"] != settings["draw"]:
        raise ValueError(f"{path} holds pixel results made with draw={blob['settings']['draw']!r} and this run uses "
                         f"draw={settings['draw']!r}; the draws serve different images, so one file holds one "
                         "draw: pass another --pixel-json path (or the matching --draw)")
    if blob["settings"] != settings:
        diff = sorted(k for k in set(settings) | set(blob.get("settings", {}))
                      if settings.get(k) != blob.get("settings", {}).get(k))
        raise ValueError(f"{path} holds pixel results made with other settings ({', '.join(diff)} differ); "
                         "pass another --pixel-json path or delete the file to recompute")
    return {p: dict(blob["scores"].get(p, {})) for p in POLICIES}


def score_pixel(dataset, sources, seeds, args, path: Path | None) -> dict[str, list[float]]:
    """Pixel-mode scores, reusing and extending ``path``; seeds outermost so an interruption keeps whole seeds."""
    from tailmix.io.atomic import atomic_write_text, file_lock

    policies = getattr(args, "policies", POLICIES)
    settings = pixel_settings(dataset, sources, args)
    saved = load_pixel(path, settings)
    envs: dict = {}
    kwargs = _env_kwargs(dataset, args, "pixel")
    batch = max(1, int(getattr(args, "pixel_batch", 1)))
    for start in range(0, len(seeds), batch):  # seeds outermost (in chunks of --pixel-batch)
        chunk = seeds[start:start + batch]
        for name in policies:
            todo = [seed for seed in chunk if str(seed) not in saved[name]]
            if not todo:
                continue
            t = time.time()
            if batch == 1:
                scores = [_episode(envs, kwargs, sources, name, todo[0])]
            else:
                scores = _episodes_batched(envs, kwargs, sources, name, todo)
            for seed, score in zip(todo, scores):
                print(f"  pixel seed {seed} {name}: {score:.3f} ({(time.time() - t) / len(todo):.0f} s per seed)",
                      flush=True)
            if path is None:
                saved[name].update({str(seed): score for seed, score in zip(todo, scores)})
                continue
            # Other processes may be filling other seeds of the same file: merge, then write.
            with file_lock(path.with_name(path.name + ".lock"), what="writing this pixel file"):
                saved = load_pixel(path, settings)
                saved[name].update({str(seed): score for seed, score in zip(todo, scores)})
                atomic_write_text(path, json.dumps({"settings": settings, "scores": saved}, indent=1))
    return {p: [saved[p][str(s)] for s in seeds] for p in policies}


def score_feature(dataset, sources, variant: str, seeds, args) -> dict[str, list[float]]:
    """Feature-mode scores of every policy with encoder ``variant``."""
    envs: dict = {}
    kwargs = _env_kwargs(dataset, args, variant)
    policies = getattr(args, "policies", POLICIES)
    return {name: [_episode(envs, kwargs, sources, name, s) for s in seeds] for name in policies}


def bootstrap_delta(pixel: np.ndarray, feature: np.ndarray, baseline: np.ndarray, *, n_boot: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """95% interval of rho(pixel, feature) - rho(pixel, baseline), both against the same pixel resample.

    The two encoders ran on the same seeds, so their seeds are resampled together (paired); pixel's on its own.
    """
    rng = np.random.default_rng(seed)
    d = np.empty(n_boot)
    for b in range(n_boot):
        ip = rng.integers(0, pixel.shape[1], pixel.shape[1])
        jf = rng.integers(0, feature.shape[1], feature.shape[1])
        p = pixel[:, ip].mean(1)
        d[b] = rank_rho(p, feature[:, jf].mean(1)) - rank_rho(p, baseline[:, jf].mean(1))
    lo, hi = np.nanpercentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def resolved_pairs(pixel: np.ndarray, features: dict[str, np.ndarray]) -> tuple[list, dict[str, int]]:
    """Policy pairs whose pixel difference is resolved, and on how many each encoder agrees in sign.

    A pair is resolved when the 95% t interval of its per-seed pixel difference (paired: a seed's policies
    share its randomness) excludes 0. Spearman over 6 policies counts every swap alike, including swaps of
    policies pixel mode itself cannot tell apart; this counts only the orderings pixel mode is sure of.
    """
    from scipy.stats import t as student_t

    n = pixel.shape[1]
    pairs, agree = [], {k: 0 for k in features}
    if n < 2:
        return pairs, agree
    q = float(student_t.ppf(0.975, n - 1))
    for i in range(len(pixel)):
        for j in range(i + 1, len(pixel)):
            d = pixel[i] - pixel[j]
            if abs(d.mean()) > q * d.std(ddof=1) / np.sqrt(n):
                pairs.append((i, j, float(d.mean())))
                for k, f in features.items():
                    agree[k] += int(np.sign(f[i].mean() - f[j].mean()) == np.sign(d.mean()))
    return pairs, agree


def split_half(pixel: np.ndarray, features: dict[str, np.ndarray], *, n_splits: int = 500, seed: int = 0
               ) -> dict[str, float]:
    """Mean over random half-splits of the pixel seeds of rho(half A, half B) and of rho(feature, half A).

    ``"pixel"`` is pixel mode's split-half rank reliability: how well a pixel run with half the seeds ranks
    the policies like another one. Each encoder's value is its rho with the same halves A, so the two compare
    at the same number of pixel seeds.
    """
    rng = np.random.default_rng(seed)
    n = pixel.shape[1]
    if n < 2:
        return {}
    half = n // 2
    out = {k: [] for k in ["pixel", *features]}
    for _ in range(n_splits):
        perm = rng.permutation(n)
        a, b = pixel[:, perm[:half]].mean(1), pixel[:, perm[half:2 * half]].mean(1)
        out["pixel"].append(rank_rho(a, b))
        for k, f in features.items():
            out[k].append(rank_rho(a, f.mean(1)))
    return {k: float(np.nanmean(v)) for k, v in out.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are first-seed ... first-seed + seeds - 1; with --pixel-only, processes given "
                             "disjoint seed ranges can fill one --pixel-json together")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="feature encoders to compare (default: every envs.features.ENCODERS name)")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--max-ratio", type=float, default=20.0, help="large enough for fill-to-head")
    parser.add_argument("--pixel-epochs", type=int, default=1)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=128)
    parser.add_argument("--cache-dir", default=default_cache())
    parser.add_argument("--source", choices=("ddpm", "augment"), default="ddpm",
                        help="synthetic images: the cached DDPM bank (and its filtered version), or augmentations "
                             "of the real train images (no filtered policy)")
    parser.add_argument("--pixel-json", default=None,
                        help="per-seed pixel results: reused when present, extended and saved after each episode")
    parser.add_argument("--pixel-only", action="store_true", help="compute/extend --pixel-json and stop")
    parser.add_argument("--pixel-batch", type=int, default=1,
                        help="pixel seeds trained together in one batched vector env (envs.pixel_batched); the "
                             "scores are bit-identical to one seed at a time on the CPU, faster on a GPU")
    parser.add_argument("--head", choices=("linear", "mlp"), default="linear", help="feature mode's head")
    parser.add_argument("--draw", choices=("replace", "unique"), default="replace",
                        help="how both modes draw from a pool (envs.config.RatioEnvConfig.draw): 'replace' (v0, "
                             "the default here: beyond the pool's size with replacement, so a fill can repeat a "
                             "one-image pool hundreds of times) or 'unique' (v1: never an image twice in a step, a "
                             "request beyond the pool is capped)")
    parser.add_argument("--recall-seeds", type=int, default=0,
                        help="also print test recall per class for each policy and mode over this many seeds "
                             "(recomputed; where do the modes disagree?)")
    parser.add_argument("--pools", action="store_true",
                        help="also print each synthetic pool's size per class and how the crossfit fold models "
                             "classify it")
    parser.add_argument("--json", default=None, help="write every per-seed score and statistic here")
    args = parser.parse_args(argv)
    args.policies = POLICIES if args.source == "ddpm" else POLICIES[:-1]

    import torch

    from tailmix import pipeline
    from tailmix.envs.features import ENCODERS

    variants = list(ENCODERS) if args.variants is None else args.variants
    for v in variants:
        if v not in ENCODERS:
            raise SystemExit(f"--variants: unknown encoder {v!r}; choose from {ENCODERS}")
    if args.seeds < 1 or args.first_seed < 0 or args.recall_seeds < 0 or args.pixel_batch < 1:
        raise SystemExit("--seeds and --pixel-batch must be >= 1, --first-seed and --recall-seeds >= 0")
    torch.set_num_threads(1)
    t0 = time.time()
    dataset = pipeline.load_data(pipeline.Settings(dataset=args.dataset))
    sources = banks(args, dataset)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results = {}
    t = time.time()
    results["pixel"] = score_pixel(dataset, sources, seeds, args, Path(args.pixel_json) if args.pixel_json else None)
    print(f"[pixel] {time.time() - t:.0f} s", flush=True)
    if args.pixel_only:
        return {"scores": results}
    for variant in variants:
        t = time.time()
        results[variant] = score_feature(dataset, sources, variant, seeds, args)
        print(f"[{variant}] {time.time() - t:.0f} s", flush=True)
    arr = {v: np.array([results[v][p] for p in args.policies]) for v in results}  # (policies, seeds)
    means = {v: a.mean(1) for v, a in arr.items()}
    print(f"\n## {dataset.name}: test balanced accuracy, mean ± std over {len(seeds)} seeds "
          f"(max_steps={args.max_steps}, bank per class {args.per_class}, draw {args.draw}, "
          f"{'generator ' + args.preset if args.source == 'ddpm' else 'source augment'})\n")
    print("| policy | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for i, p in enumerate(args.policies):
        cells = [f"{means[v][i]:.3f} ± {arr[v][i].std(ddof=1) if len(seeds) > 1 else 0:.3f}" for v in results]
        print(f"| {p} | " + " | ".join(cells) + " |")
    rho = {v: rank_rho(means["pixel"], means[v]) for v in variants}
    ci = {v: bootstrap_rho(arr["pixel"], arr[v]) for v in variants}
    halves = split_half(arr["pixel"], {v: arr[v] for v in variants})
    base = "crossfit" if "crossfit" in variants else None
    delta = {v: bootstrap_delta(arr["pixel"], arr[v], arr[base]) for v in variants if base and v != base}
    pairs, agree = resolved_pairs(arr["pixel"], {v: arr[v] for v in variants})
    h = len(seeds) // 2
    print(f"\n| feature encoder | Spearman rho with pixel mode ({len(seeds)} seeds) | bootstrap 95% interval "
          f"| rho minus crossfit's, 95% interval | mean rho with a {h}-seed pixel half "
          f"| agrees on resolved pixel pairs |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        dv = f"[{delta[v][0]:+.2f}, {delta[v][1]:+.2f}]" if v in delta else ""
        print(f"| {v} | {rho[v]:+.2f} | [{ci[v][0]:+.2f}, {ci[v][1]:+.2f}] | {dv} | {halves.get(v, float('nan')):+.2f} "
              f"| {agree[v]} of {len(pairs)} |")
    ceiling = {}
    if "pixel" in halves:
        r = halves["pixel"]
        brown = 2 * r / (1 + r) if r > -1 else float("nan")
        ceiling = {"split_half": r, "spearman_brown_full": brown,
                   "ceiling_half": float(np.sqrt(max(r, 0.0))), "ceiling_full": float(np.sqrt(max(brown, 0.0)))}
        print(f"| *pixel vs pixel*: rho between the means of two disjoint {h}-seed halves (mean over 500 splits) "
              f"| | | | {r:+.2f} |")
        print(f"\nPixel mode's split-half rank reliability: {r:+.2f} ({h} seeds per half); Spearman-Brown estimate "
              f"for the {len(seeds)}-seed mean: {brown:+.2f}. Even a feature mode that ranked policies exactly by "
              f"pixel mode's true (infinite-seed) means would, in expectation, reach only about sqrt(reliability): "
              f"{ceiling['ceiling_half']:.2f} against a {h}-seed half and {ceiling['ceiling_full']:.2f} against the "
              f"{len(seeds)}-seed mean (classical test theory; approximate for ranks of {len(args.policies)} "
              "policies). That is the ceiling; a feature encoder can beat pixel-vs-pixel because its own means are "
              "less noisy.")
    if pairs:
        print("\nResolved pixel pairs (95% t interval of the paired per-seed difference excludes 0): "
              + "; ".join(f"{args.policies[i]} {'>' if d > 0 else '<'} {args.policies[j]} ({d:+.3f})"
                          for i, j, d in pairs) + ".")
    out = {"dataset": dataset.name, "source": args.source, "draw": args.draw, "policies": args.policies, "seeds": seeds,
           "scores": results, "spearman": rho,
           "spearman_ci95": ci, "delta_vs_crossfit_ci95": delta, "split_half": halves, "ceiling": ceiling,
           "resolved_pairs": [[args.policies[i], args.policies[j], d] for i, j, d in pairs], "pairs_agreed": agree}
    if args.recall_seeds > 0:
        out["recall"] = per_class_recall(dataset, sources, variants, seeds[:args.recall_seeds], args)
    if args.pools:
        out["pools"] = pool_report(dataset, sources, args)
    print(f"\ntotal {time.time() - t0:.0f} s; command: {command('fidelity', argv)}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
