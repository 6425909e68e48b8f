"""Quality against a perfect generator: what share of the oracle pool's gain does each synthetic pool earn?

    python -m benchmarks.perfect_generator --cache-dir /work/cache          # digits-LT, 5 seeds, the README table
                                                                            # (about 2 h on 2 cores uncached)
    python -m benchmarks.perfect_generator --pools none oracle bank bank:tau=0.9 --seeds 2   # a subset

digits-LT in feature mode (the env settings of ``benchmarks/results.py``: 10 steps per episode, max ratio 8,
cross-entropy head, the cross-fitted encoder), the fill-to-head policy (``fill``: every class topped up to the head
class's count) scored on the TEST split over ``--seeds`` episode seeds, once per synthetic pool:

- ``none``: no synthetic data (the floor);
- ``oracle``: the real digits the long-tail builder left out of every split (``envs.oracle.oracle_source``): a
  perfect generator, the ceiling;
- ``bank[:key=value,...]``: the CLI's DDPM bank (``tailmix.pipeline``: ``small`` preset, 128 kept images per
  class, logit-adjusted reference filter at tau 0.5) with overrides: ``steps`` (conditional training steps; the
  default 1000), ``filter`` (0: keep every sample), ``tau`` (filter threshold), ``guidance`` (classifier-guidance
  scale, ``generators/guidance.py``; 0: off), ``cfg`` (classifier-free guidance scale at sampling; the default 2)
  ``ddim`` (DDIM sampling steps; the default 20) and ``nearcopy`` (also reject candidates whose nearest real train
  image of the class is closer than this RMS pixel distance, ``generators.memorisation.NearCopyFilter``). These
  three change only how the trained model's bank is filled: here, with the pipeline's filter and seed
  (``GeneratorPool.fill_bank``, cached under its own key). ``ema`` trains the DDPM with an exponential moving
  average of its weights at this decay (``ClassConditionalDDPM(ema_decay=...)``; the CLI has no flag for it) and
  fills the bank from the averaged weights, the generator cached under its own key beside the CLI's; ``gseed``
  trains the generator from this seed instead of the pipeline's 0 (filter, bank and env seeds stay 0). Two keys
  mix two generators in one bank of the same size: half of each class's images come from the pool as written,
  half from its twin trained with ``steps=mix`` (``mix``) or ``gseed=mixseed`` (``mixseed``), for variety; the
  training time is then the sum of both. ``gseeds=N`` repeats the pool with generators trained from seeds
  0..N-1 (one generator's training time is what the row reports) and scores the N x ``--seeds`` episodes
  together: one trained generator is a single draw, and the share moves from seed to seed.

Share of the oracle's gain = (pool - none) / (oracle - none), on the test means; the same on the val split (the
env's reward split, what a user can select on) beside it. Nothing here is tuned on test: the table reports every
pool asked for; a pool picked for its test row would be a ceiling, so pick on the val columns.

Frechet distance: ``generators.quality.quality_report`` (a seeded random projection of the pixels to 32 dimensions,
pool vs the class's real train images), averaged over classes. Acceptance: the filter's keep rate of the bank's
candidates, class mean. Generator training time: seconds per training step measured in this run (a few steps of
a fresh model of the same size; the trained models themselves come from ``--cache-dir`` when cached) times the
model's unconditional + conditional steps, plus the noise-aware classifier's steps for guided rows: an estimate
for this machine, since cached models were trained in other sessions. RetinaMNIST has no oracle pool (it uses
every image it has), so the share is defined on digits-LT only.
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.lib import command, default_cache

POOLS = ("none", "oracle", "bank", "bank:filter=0", "bank:tau=0.9", "bank:nearcopy=0.1", "bank:guidance=0.5",
         "bank:ddim=50", "bank:cfg=1", "bank:cfg=0.5", "bank:cfg=0.25", "bank:steps=100", "bank:steps=300",
         "bank:steps=3000", "bank:steps=100,cfg=1", "bank:steps=300,cfg=1", "bank:steps=300,cfg=0.5",
         # an EMA of the weights (decays >= 0.99 coincide below ~890 steps: the warm-up caps them), snapshots
         # mixed in one bank, another generator seed, and the same recipes over 3 generator seeds
         "bank:ema=0.999", "bank:steps=50,ema=0.999", "bank:steps=100,ema=0.999", "bank:steps=150,ema=0.999",
         "bank:steps=200,ema=0.999", "bank:steps=300,ema=0.999", "bank:steps=500,ema=0.999",
         "bank:steps=100,ema=0.999,cfg=1", "bank:steps=100,ema=0.999,cfg=3", "bank:steps=300,ema=0.999,cfg=1",
         "bank:steps=100,cfg=0.5", "bank:steps=100,ema=0.999,mix=300", "bank:steps=100,ema=0.999,mixseed=1",
         "bank:steps=300,ema=0.999,mixseed=1", "bank:steps=100,ema=0.999,gseed=1", "bank:steps=300,ema=0.999,gseed=1",
         "bank:gseeds=3", "bank:cfg=0.5,gseeds=3", "bank:steps=100,gseeds=3", "bank:steps=300,gseeds=3",
         "bank:steps=100,ema=0.999,gseeds=3", "bank:steps=200,ema=0.999,gseeds=3", "bank:steps=300,ema=0.999,gseeds=3",
         "bank:steps=100,ema=0.999,cfg=1,gseeds=3")
BANK_KEYS = {"steps": int, "filter": int, "tau": float, "guidance": float, "cfg": float, "ddim": int,
             "nearcopy": float, "ema": float, "gseed": int, "mix": int, "mixseed": int,
             "gseeds": int}


def parse_pool(spec: str) -> dict:
    """``bank:tau=0.9,steps=300`` -> ``{"kind": "bank", "tau": 0.9, "steps": 300}`` (ValueError on a bad spec)."""
    kind, _, rest = spec.partition(":")
    if kind in ("none", "oracle") and not rest:
        return {"kind": kind}
    if kind != "bank":
        raise ValueError(f"unknown pool {spec!r}; use none, oracle or bank[:key=value,...] with keys "
                         f"{', '.join(BANK_KEYS)}")
    out: dict = {"kind": "bank"}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if key not in BANK_KEYS or not eq:
            raise ValueError(f"pool {spec!r}: {item!r} is not key=value with a key in {', '.join(BANK_KEYS)}")
        try:
            out[key] = BANK_KEYS[key](value)
        except ValueError:
            raise ValueError(f"pool {spec!r}: {key} needs a {BANK_KEYS[key].__name__}; got {value!r}") from None
    if {"mix", "mixseed"} <= set(out):
        raise ValueError(f"pool {spec!r}: use one of mix and mixseed")
    if out.get("gseeds", 1) < 1 or ("gseeds" in out and {"gseed", "mixseed"} & set(out)):
        raise ValueError(f"pool {spec!r}: gseeds must be >= 1 and goes without gseed and mixseed")
    return out


def settings(pool: dict, args):
    """The pipeline settings of a bank pool (the CLI's defaults plus the pool's overrides)."""
    from tailmix import pipeline

    return pipeline.Settings(dataset="digits", seed=0, preset=args.preset, generator_steps=pool.get("steps"),
                             per_class=args.per_class, cache_dir=args.cache_dir,
                             filter=bool(pool.get("filter", 1)), tau=pool.get("tau", 0.5),
                             guidance_scale=pool.get("guidance", 0.0))


def seconds_per_step(dataset, preset: str, steps: int = 8) -> float:
    """Training seconds per DDPM step on this machine: (fit of 2 + steps) - (fit of 2), over steps."""
    import torch

    from tailmix.generators.ddpm import ClassConditionalDDPM

    def fit(n: int) -> float:
        gen = ClassConditionalDDPM(dataset.image_shape, dataset.num_classes, preset=preset, train_steps=n,
                                   pretrain_steps=0)
        t0 = time.perf_counter()
        gen.fit(dataset, generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    fit(2)  # warm-up
    return max(0.0, fit(2 + steps) - fit(2)) / steps


def frechet_mean(source, dataset) -> float:
    from tailmix.generators.quality import quality_report

    report = quality_report(source, dataset)
    values = [r["frechet"] for r in report.values() if math.isfinite(r["frechet"])]
    return float(np.mean(values)) if values else math.nan


def own_generator(cfg, dataset, decay: float | None = None, seed: int | None = None):
    """``pipeline.fitted_generator`` for a DDPM with ``ema_decay=decay`` and/or training seed ``seed`` (default
    ``cfg.seed``): trained once, cached by its config and seed like the pipeline's generators."""
    import torch

    from tailmix import pipeline

    if cfg.generator != "ddpm" or cfg.guidance_scale:
        raise ValueError("ema and gseed apply to the unguided ddpm generator; drop guidance= from the pool")
    seed = cfg.seed if seed is None else int(seed)
    gen = pipeline.new_generator(cfg, dataset)
    gen.ema_decay = None if decay is None else float(decay)
    path = Path(cfg.cache_dir) / "generators" / f"ddpm-{pipeline.cache_key(dataset.fingerprint(), gen.config(), seed)}"
    cached = pipeline._cached_generator(path, gen.device)
    if cached is not None:
        return cached
    gen.fit(dataset, generator=torch.Generator().manual_seed(seed))
    pipeline._save_folder(path, gen.save)
    return gen


def pool_bank(pool: dict, args, dataset):
    """``(generator, bank)`` of a bank pool without ``mix`` keys (the CLI's own bank when nothing changes it)."""
    from tailmix import pipeline

    cfg = settings(pool, args)
    if {"ema", "gseed"} & set(pool):
        gen = own_generator(cfg, dataset, pool.get("ema"), pool.get("gseed"))
    else:
        gen = pipeline.fitted_generator(cfg, dataset, progress=False)
    if {"cfg", "ddim", "nearcopy", "ema", "gseed"} & set(pool):
        return gen, sampled_bank(gen, cfg, dataset, pool)
    return gen, pipeline.ensure_bank(cfg, dataset, progress=False)


def mixed_source(banks: list, per_class: int):
    """One source holding the first half of each class's images from ``banks[0]``, the rest from ``banks[1]``."""
    from tailmix.envs.sources import ArraySource, BankSource

    a, b = (BankSource(bank) for bank in banks)
    half = per_class // 2
    n = a.num_classes
    pools = {c: np.concatenate([a.pool(c)[:half], b.pool(c)[:per_class - min(half, len(a.pool(c)))]])
             for c in range(n)}
    return ArraySource(pools, n, {c: (a.quality(c) + b.quality(c)) / 2 for c in range(n)}, name="ddpm-mix")


def sampled_bank(gen, cfg, dataset, pool: dict):
    """The pipeline's bank, filled at the pool's ``cfg`` / ``ddim`` sampling settings and ``nearcopy`` filter."""
    from tailmix import pipeline
    from tailmix.generators.pool import GeneratorPool

    gen.guidance_scale = float(pool.get("cfg", gen.guidance_scale))
    gen.sample_steps = int(pool.get("ddim", gen.sample_steps))
    flt = pipeline.reference_filter(cfg, dataset, progress=False) if cfg.filter else None
    if "nearcopy" in pool:
        from tailmix.generators.memorisation import NearCopyFilter

        flt = NearCopyFilter.from_dataset(dataset, threshold=pool["nearcopy"], inner=flt)
    return GeneratorPool({cfg.generator: gen}, devices=cfg.device).fill_bank(
        dataset, Path(cfg.cache_dir) / "banks", per_class=cfg.per_class, filter=flt, seed=cfg.seed, progress=False)


def bank_kwargs(pool: dict, spec: str, args, dataset) -> tuple[dict, dict]:
    """The env keywords of one bank pool (one generator seed) and its Frechet, acceptance and training steps."""
    from tailmix import pipeline
    from tailmix.envs.sources import BankSource

    cfg = settings(pool, args)
    own = bool({"ema", "gseed", "mix", "mixseed"} & set(pool))
    # a pool with its own generator(s) needs the env keywords without the CLI's bank
    kw = pipeline.env_kwargs(replace(cfg, source="gaussian") if own else cfg, dataset, progress=False)
    kw.update(reward_replicas=1, reward_reference=None)
    first = {k: v for k, v in pool.items() if k not in ("mix", "mixseed")}
    parts = [first] + [dict(first, **{key: pool[mix]}) for mix, key in (("mix", "steps"), ("mixseed", "gseed"))
                       if mix in pool]
    made = [pool_bank(part, args, dataset) for part in parts]
    banks = [bank for _, bank in made]
    if len(banks) == 2:
        kw["source"] = mixed_source(banks, args.per_class)
    elif own or {"cfg", "ddim", "nearcopy"} & set(pool):
        kw["source"] = BankSource(banks[0])
    source = kw["source"]
    info = {"frechet": frechet_mean({c: source.pool(c) for c in range(dataset.num_classes)}, dataset),
            "acceptance": float(np.mean([np.nanmean(bank.acceptance) for bank in banks]))
            if all(bank.filtered for bank in banks) else math.nan, "steps": 0}
    labels = []
    for gen, _ in made:
        info["steps"] += gen.pretrain_steps + gen.train_steps
        extra = int(gen.classifier_settings["steps"]) if gen.classifier_scale else 0
        labels.append(f"{gen.pretrain_steps} + {gen.train_steps}" + (f" + {extra} classifier" if extra else ""))
    info["train_steps"] = labels[0] if len(labels) == 1 else " and ".join(f"({lab})" for lab in labels)
    return kw, info


def run_pool(spec: str, dataset, base_kw: dict, args, seeds: list[int], per_step: float) -> dict:
    """Score fill-to-head (or no synthetic data for ``none``) with one pool; returns the table row."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import evaluate, summarize
    from tailmix.envs.oracle import oracle_source

    pool = parse_pool(spec)
    row = {"pool": spec, "frechet": math.nan, "acceptance": math.nan, "train_s": math.nan, "train_steps": ""}
    t0 = time.time()
    if pool["kind"] == "none":
        kw, policy = base_kw, make_baseline("none")
    elif pool["kind"] == "oracle":
        source = oracle_source(dataset)
        kw, policy = dict(base_kw, source=source), make_baseline("fill")
        row["frechet"] = frechet_mean({c: source.pool(c) for c in range(dataset.num_classes)}, dataset)
    else:
        policy = make_baseline("fill")
        results, infos = [], []
        for gseed in range(pool.get("gseeds", 1)):
            one = {k: v for k, v in pool.items() if k != "gseeds"}
            if "gseeds" in pool:
                one["gseed"] = gseed
            kw, info = bank_kwargs(one, spec, args, dataset)
            results += evaluate(policy, kw, seeds=seeds)
            infos.append(info)
        row.update(frechet=float(np.mean([i["frechet"] for i in infos])),
                   acceptance=float(np.mean([i["acceptance"] for i in infos])), train_steps=infos[0]["train_steps"],
                   train_s=per_step * infos[0]["steps"])  # the classifier's steps are far cheaper; not counted
        summ = summarize(results)
    if pool["kind"] != "bank":
        summ = summarize(evaluate(policy, kw, seeds=seeds))
    row.update(mean=summ["test_balanced_accuracy_mean"], std=summ["test_balanced_accuracy_std"],
               val=summ["val_balanced_accuracy_mean"], seconds=time.time() - t0)
    print(f"  {spec}: {row['mean']:.3f} ± {row['std']:.3f} ({row['seconds']:.0f} s)", flush=True)
    return row


def format_table(rows: list[dict]) -> str:
    by = {r["pool"]: r for r in rows}
    lo, hi = by["none"]["mean"], by["oracle"]["mean"]

    def num(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    vlo, vhi = by["none"]["val"], by["oracle"]["val"]
    out = ["| pool | fill-to-head test balanced accuracy | share of the oracle's gain | val balanced accuracy | "
           "share on val | Frechet (class mean) | filter acceptance | generator training steps | "
           "est. training time (min) |",
           "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        ends = r["pool"] in ("none", "oracle")
        share = "-" if ends else f"{(r['mean'] - lo) / (hi - lo):.0%}"
        vshare = "-" if ends else f"{(r['val'] - vlo) / (vhi - vlo):.0%}"
        label = {"none": "none (no synthetic data)", "oracle": "oracle (left-out real images)"}.get(r["pool"],
                                                                                                    r["pool"])
        out.append(f"| {label} | {r['mean']:.3f} ± {r['std']:.3f} | {share} | {r['val']:.3f} | {vshare} | "
                   f"{num(r['frechet'], '.2f')} | {num(r['acceptance'], '.1%')} | {r['train_steps'] or '-'} | "
                   f"{num(r['train_s'] / 60, '.1f')} |")
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pools", nargs="+", default=list(POOLS), help="pools to score (see the module docstring)")
    p.add_argument("--seeds", type=int, default=5, help="episode seeds 0..n-1")
    p.add_argument("--preset", default="small")
    p.add_argument("--per-class", type=int, default=128)
    p.add_argument("--cache-dir", default=default_cache())
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--max-ratio", type=float, default=8.0)
    args = p.parse_args(argv)
    try:
        for spec in args.pools:
            parse_pool(spec)
    except ValueError as err:
        p.error(str(err))
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1; got {args.seeds}")
    for need in ("none", "oracle"):
        if need not in args.pools:
            p.error(f"--pools must include {need!r}: the share of the oracle's gain is measured between them")
    import torch

    torch.set_num_threads(1)
    from benchmarks.lib import build_env_kwargs

    t0 = time.time()
    ns = argparse.Namespace(preset=args.preset, generator_steps=None, per_class=args.per_class,
                            cache_dir=args.cache_dir, max_steps=args.max_steps, max_ratio=args.max_ratio,
                            replicas=1, reference=None)
    dataset, base_kw = build_env_kwargs("digits", ns)
    per_step = seconds_per_step(dataset, args.preset)
    print(f"command: {command('perfect_generator', argv)}")
    print(f"dataset: {dataset.name}, train counts {dataset.train_counts.tolist()}; python {platform.python_version()}, "
          f"torch {torch.__version__}, 1 thread; DDPM training {per_step:.2f} s/step measured now", flush=True)
    seeds = list(range(args.seeds))
    rows = [run_pool(spec, dataset, base_kw, args, seeds, per_step) for spec in args.pools]
    print(f"\nfill-to-head, feature mode, test split, {args.seeds} seeds; wall time {time.time() - t0:.0f} s\n")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
