"""What are schedules worth? Fixed ratio schedules over the episode, constant vs cosine learning rate of the head.

    python -m benchmarks.schedules --cache-dir /work/cache

digits-LT with the oracle source (the real digits the long-tail builder left unused, ``envs.oracle``: a perfect
generator, so the question is about timing, not about sample quality). Policies: no synthetic data, fill to the
head count and twice that (``fill x 2``, clipped to the max ratio), and each of them scheduled over the episode
(``agents.schedules``: ``decay`` r -> 0, ``warmup`` 0 -> r, ``early`` r in the first half only, ``late`` r in the
second half only). Each is run in feature mode with the v0 constant learning rate of the head and with
``lr_schedule="cosine"`` at a few peak rates; test and val balanced accuracy, mean ± std over seeds.

With a constant rate, whatever a class gets early is forgotten by the end of the episode (``decay`` and ``early``
lose what ``fill`` gains); a decaying rate makes the episode one training run, as in pixel mode.
Table: ``benchmarks/what-are-schedules-worth/schedules-digits-lt.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.lib import commit, default_cache, experiment_dir, footer, write_text
from tailmix.policies import fixed_policy

OUT = experiment_dir("what-are-schedules-worth")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--settings", nargs="*", default=["constant:0.05", "cosine:0.05", "cosine:0.1", "cosine:0.2"],
                   help="lr_schedule:lr pairs")
    p.add_argument("--cache-dir", default=default_cache())
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import evaluate, make_eval_env, summarize
    from tailmix.agents.schedules import BaselineSchedule
    from tailmix.envs.datasets import load_digits_lt
    from tailmix.envs.oracle import oracle_source

    t0 = time.time()
    ds = load_digits_lt()
    src = oracle_source(ds)
    shapes = [fixed_policy("fill"), fixed_policy("fill x 2")]
    policies = [make_baseline("none")]
    for shape in shapes:
        policies += [shape] + [BaselineSchedule(shape, k) for k in ("decay", "warmup", "early", "late")]
    seeds = list(range(args.seeds))
    settings = [(s.split(":")[0], float(s.split(":")[1])) for s in args.settings]
    cells: dict = {}
    for sched, lr in settings:
        kw = dict(dataset=ds, source=src, max_steps=10, max_ratio=8.0, empty_pool="zero", lr_schedule=sched, lr=lr,
                  cache_dir=str(Path(args.cache_dir) / "encoders"))
        env = make_eval_env(kw)
        for pol in policies:
            s = summarize(evaluate(pol, kw, seeds=seeds, env=env))
            cells[pol.name, sched, lr] = s
            print(f"{sched} lr={lr:g} | {pol.name} | test {s['test_balanced_accuracy_mean']:.3f} | val "
                  f"{s['val_balanced_accuracy_mean']:.3f}", flush=True)
    head = " | ".join(f"{s} lr {lr:g}" for s, lr in settings)
    lines = ["# Schedules on digits-LT with the oracle source: constant vs cosine learning rate of the head", "",
             f"Train counts {ds.train_counts.tolist()}; source: the real digits the long-tail builder left unused "
             "(`envs.oracle.oracle_source`). Feature mode (cross-fitted encoder, linear head), 10 steps per episode, "
             f"max ratio 8. Cells: test balanced accuracy (val in brackets), mean ± std over seeds {seeds}.", "",
             f"| policy | {head} |", "|---|" + "---|" * len(settings)]
    for pol in policies:
        row = [f"{cells[pol.name, s, lr]['test_balanced_accuracy_mean']:.3f} ± "
               f"{cells[pol.name, s, lr]['test_balanced_accuracy_std']:.3f} "
               f"({cells[pol.name, s, lr]['val_balanced_accuracy_mean']:.3f})" for s, lr in settings]
        lines.append(f"| {pol.name} | " + " | ".join(row) + " |")
    lines += ["", f"Wall time {time.time() - t0:.0f} s.", "", *footer("schedules", argv, commit())]
    text = "\n".join(lines)
    print(text)
    write_text(Path(args.out) if args.out else OUT / "schedules-digits-lt.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
