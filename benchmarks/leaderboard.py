"""The leaderboard: one table per task, every method against the best fixed policy and a test-scored ceiling.

    python -m benchmarks.leaderboard --tasks known-answer digits --seeds 5 --cache-dir /work/cache
    python -m benchmarks.leaderboard --quick --tasks known-answer --out /tmp/lb     # tiny budgets (a smoke run)

Rows of each task (every row is scored on the TEST split by ``agents.evaluate`` over the same episode seeds, so
differences between rows are paired by seed):

- **no synthetic**: cross-entropy, and the best long-tail loss of the feature head (picked on val);
- **best fixed static** (none, constant 0.5-8, fill, inverse, fill x 0.25 / 0.5) and **best fixed schedule**
  (``agents.schedules.SCHEDULE_BASELINES``), each picked on the final VAL balanced accuracy;
- **CEM** (``agents.cem.cem_search``) on the val reward: a static vector and a schedule (``--cem-knots`` knots),
  started from the best fixed static / schedule row (on val);
- **learned SB3 rows** (``--learned``, specs ``algo:wrapper:variant[:timesteps][@seed]`` of
  :func:`tailmix.policies.parse_training_spec`; ``@seed`` is the training seed, default 0, so ``@0 @1 @2`` are three rows): PPO / SAC, shared or centralised, ``difference`` credit, ``ref0`` or ``plain``
  reward; trained on the val reward, cached under ``--cache-dir`` (the known-answer task reuses
  ``known-answer-agents/``, the others use ``leaderboard-agents/<task>-...``); a spec whose model is not cached is
  trained only with ``--train``, else the row is listed as skipped;
- **CEILING**: the best policy CEM finds when its fitness is the TEST balanced accuracy (``cem_search(...,
  fitness_split="test")``), static and schedule, each continuing from the end of its val search; the better of the two
  on test is the ceiling. It is NOT a method: it read the test split, and it only says how far the action space
  reaches (a lower bound on the true ceiling: the search has a small budget).

Headroom share of a learned row = (learned - best fixed) / (ceiling - best fixed), with the best fixed row the
better on VAL of the best static and the best schedule. Paired differences: per-seed test difference from that
row, mean and a 95% bootstrap interval over seeds (resampling seeds; with 3-5 seeds the interval is rough).

Tasks: ``known-answer`` (digits-LT, oracle source, corruption {4: 9, 6: 5}; ``envs.oracle.known_answer_kwargs``;
its oracle policy is shown as a reference), ``digits`` (the DDPM bank of ``benchmarks/results.py``, plus a
*perfect generator* reference row: fill from the oracle source, the real digits the long-tail builder left out),
``retinamnist`` and ``breastmnist`` (DDPM bank, ``--generator-steps 300``; need ``TAILMIX_DATA_DIR``).
Tables go to ``<out>/leaderboard-<task>.md`` with each row's provenance, the command and the commit.

Options that add to a table (defaults off, so the older tables reproduce from their commands):

- ``--val-folds K``: the env's ``val_folds=K`` (reward on K cross-validated folds of train + val): every row, the
  fixed-row pick and CEM's fitness use it; SB3 models get their own folders; table ``leaderboard-<task>-foldsK.md``.
- ``--fresh-seeds N``: the best fixed, learned and ceiling rows played again on episode seeds 1000..1000+N-1, with
  the picks kept (the de-biased ceiling: no pick or search saw those seeds; the test images are the same).
- ``--loss-rows``: every fixed row, CEM (static, schedule) and the ceiling again with the head trained under the
  best long-tail loss (picked on val among the no-synthetic rows); ``none`` under it is no synthetic + the loss,
  so its best fixed row is the bar for a learned sampler combined with the loss.
- ``--name-suffix=S``: the table goes to ``leaderboard-<task>[-foldsK]S.md`` (a variant, e.g. a larger CEM budget
  ``--cem-generations/--cem-population/--cem-episodes``, written beside the existing table, not over it).
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import (NO_SYN_LOSSES, build_env_kwargs, commit, default_cache, experiment_dir, footer,
                            parse_train_env_kwargs, static_specs, train_env_tags, write_text)
from tailmix.policies import ScaledBaseline, fixed_policy, parse_training_spec, training_env_kwargs

OUT = experiment_dir("how-much-headroom-do-learned-samplers-capture")
TASKS = ("known-answer", "digits", "retinamnist", "breastmnist")
LEARNED = {"known-answer": ("ppo:shared:difference:100000", "ppo:central:ref0:20000", "sac:shared:difference:30000",
                            "sac:central:ref0:4000"),
           **{task: ("ppo:shared:difference:20000", "ppo:central:ref0:20000", "sac:shared:difference:20000",
                     "sac:central:ref0:20000") for task in ("digits", "retinamnist", "breastmnist")}}


def bootstrap_ci(diffs, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired per-seed differences (resampling seeds)."""
    d = np.asarray(diffs, np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def task_kwargs(task: str, args) -> dict:
    """Env keyword arguments of a task (feature mode; the bank tasks as ``benchmarks/results.py`` builds them)."""
    if task == "known-answer":
        from tailmix.envs.oracle import known_answer_kwargs

        return known_answer_kwargs(cache_dir=str(Path(args.cache_dir) / "encoders"))
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    steps = args.generator_steps if args.generator_steps is not None else (None if task == "digits" else 300)
    ns = argparse.Namespace(preset="small", generator_steps=steps, per_class=128, cache_dir=args.cache_dir,
                            max_steps=10, max_ratio=8.0, replicas=1, reference=None)
    return build_env_kwargs(task, ns)[1]


def sb3_policy(task: str, spec: str, kw: dict, args):
    """The SB3 row ``spec`` from the cache (or trained with ``--train``); ``(policy, note)``, policy None if skipped."""
    from tailmix.agents.baselines import SB3Policy
    from tailmix.agents.sb3 import load_model, train

    row = parse_training_spec(spec)
    if row.algo == "cem":
        raise ValueError(f"learned row {spec!r} is invalid: the CEM rows are built in; --learned takes SB3 rows "
                         "algo:wrapper:variant[:timesteps][@seed], e.g. ppo:shared:difference:20000")
    algo, wrapper, variant = row.algo, row.wrapper, row.variant
    timesteps = row.timesteps or args.timesteps
    seed = row.seed or 0
    # an option that changes the env (val_folds) names its own folder, so a fixed-split model is never reused
    folds = getattr(args, "val_folds", 1)
    env_kwargs = parse_train_env_kwargs(getattr(args, "train_env_kwargs", None))  # the training env's only
    name = "-".join([f"{algo}-{wrapper}-{variant}-{timesteps}", *([f"folds{folds}"] if folds > 1 else []),
                     *train_env_tags(env_kwargs), f"seed{seed}"])
    run_dir = (Path(args.cache_dir) / "known-answer-agents" / name if task == "known-answer" else
               Path(args.cache_dir) / "leaderboard-agents" / f"{task}-{name}")
    if (run_dir / "model.zip").exists():
        how = ("" if task == "known-answer" else f" (trained by this script's `--train`: seed {seed}, the spec's "
               "timesteps, the val reward" + "".join(f", training env {k}={v:g}" for k, v in env_kwargs.items())
               + ")")
        return SB3Policy(load_model(algo, run_dir / "model.zip"), wrapper=wrapper, name=spec), f"model `{run_dir}`{how}"
    if not args.train:
        return None, f"skipped: no model cached at `{run_dir}` (rerun with --train)"
    t = time.time()
    model = train(algo, dict(training_env_kwargs(kw, variant), **env_kwargs), wrapper=wrapper, total_timesteps=timesteps,
                  seed=seed, log_dir=str(run_dir))
    model.get_env().close()
    return SB3Policy(model, wrapper=wrapper, name=spec), f"trained here ({time.time() - t:.0f} s), `{run_dir}`"


def cem_policy(kw: dict, args, knots, init, fitness_split: str = "val"):
    """CEM from ``init`` on the val reward (``fitness_split="test"``: the ceiling search, with the ceiling budget).

    Returns the policy of the final mean and that mean (where a ceiling search continues)."""
    from tailmix.agents.cem import CEMPolicy, cem_search

    pre = "ceiling_" if fitness_split == "test" else "cem_"
    res = cem_search(kw, generations=getattr(args, pre + "generations"), population=getattr(args, pre + "population"),
                     episodes_per_candidate=getattr(args, pre + "episodes"), seed=args.cem_seed, init_mean=init,
                     knots=knots, fitness_split=fitness_split)
    return CEMPolicy.from_result(res), res.mean_action


def run_task(task: str, args, seeds: list[int]) -> tuple[list[str], dict]:
    """Every row of ``task``; returns the markdown lines and the summary numbers."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import evaluate, make_eval_env
    from tailmix.agents.schedules import SCHEDULE_BASELINES

    t0 = time.time()
    kw = task_kwargs(task, args)
    if getattr(args, "val_folds", 1) > 1:  # the cross-validated reward: every row, fixed pick and CEM fitness use it
        kw = dict(kw, val_folds=args.val_folds)
    env = make_eval_env(kw)
    rows: dict = {}  # label -> (group, per-seed rows, provenance)
    played: dict = {}  # label -> (policy, env kwargs or None): what --fresh-seeds re-scores

    envs = {}  # id(env kwargs) -> its eval env, built once (the loss rows play ~30 policies in one)

    def run(label, group, policy, how, env_kw=None):
        t = time.time()
        if env_kw is not None and id(env_kw) not in envs:
            envs[id(env_kw)] = make_eval_env(env_kw)
        per = evaluate(policy, env_kw or kw, seeds=seeds, env=env if env_kw is None else envs[id(env_kw)])
        rows[label] = (group, per, how)
        played[label] = (policy, env_kw)
        print(f"[{task}] {label}: test {np.mean([r['test_balanced_accuracy'] for r in per]):.4f} "
              f"val {np.mean([r['val_balanced_accuracy'] for r in per]):.4f} ({time.time() - t:.0f} s)", flush=True)

    none = make_baseline("none")
    run("no synthetic, ce", "nosyn", none, "`make_baseline('none')`, loss ce", dict(kw, loss="ce"))
    for loss in NO_SYN_LOSSES:
        run(f"no synthetic, {loss}", "nosyn-lt", none, f"`make_baseline('none')`, loss {loss}", dict(kw, loss=loss))
    static = {s: fixed_policy(s) for s in static_specs()}
    for label, pol in static.items():
        run(label, "static", pol, f"fixed `{label}`")
    if not args.no_schedules:
        for spec in SCHEDULE_BASELINES:
            run(spec, "schedule", make_baseline(spec), f"fixed schedule `{spec}`")
    # The val searches start from the best fixed row of their kind on VAL; each ceiling search continues from
    # where its val search ended, so it starts at least as high as the CEM row and only adds what test can tell.
    val = {k: np.mean([r["val_balanced_accuracy"] for r in per]) for k, (_, per, _) in rows.items()}
    init_static = max(static, key=lambda k: val[k])
    init_sched = None if args.no_schedules else max(SCHEDULE_BASELINES, key=lambda k: val[k])
    cem = f"CEM {args.cem_generations} gen x {args.cem_population} cand x {args.cem_episodes} ep, seed {args.cem_seed}"
    ceil = (f"CEM {args.ceiling_generations} gen x {args.ceiling_population} cand x {args.ceiling_episodes} ep, "
            f"seed {args.cem_seed}")
    pol, end_static = cem_policy(kw, args, None, static[init_static])
    run("CEM static (val)", "learned", pol, cem + f", from `{init_static}`, fitness = final val bal. acc.")
    if not args.no_schedules:
        pol, end_sched = cem_policy(kw, args, args.cem_knots, init_sched)
        run("CEM schedule (val)", "learned", pol,
            cem + f", {args.cem_knots} knots, from `{init_sched}`, fitness = final val bal. acc.")
    skipped = []
    for spec in (args.learned if args.learned is not None else LEARNED[task]):
        pol, how = sb3_policy(task, spec, kw, args)
        if pol is None:
            skipped.append((spec, how))
            print(f"[{task}] {spec}: {how}", flush=True)
            continue
        run(spec, "learned", pol, how)
    run("CEILING: CEM static scored on TEST", "ceiling", cem_policy(kw, args, None, end_static, "test")[0],
        ceil + ", from the end of `CEM static (val)`, fitness = final TEST bal. acc. (a ceiling, not a method)")
    if not args.no_schedules:
        run("CEILING: CEM schedule scored on TEST", "ceiling",
            cem_policy(kw, args, args.cem_knots, end_sched, "test")[0],
            ceil + f", {args.cem_knots} knots, from the end of `CEM schedule (val)`, fitness = final TEST bal. acc. "
            "(a ceiling, not a method)")
    lt_loss = None
    if getattr(args, "loss_rows", False):
        lt_loss = _loss_rows(kw, args, rows, run, static)
    if task == "known-answer":
        from tailmix.envs.oracle import oracle_policy_ratios

        ratios = oracle_policy_ratios(kw["dataset"].train_counts, sorted(kw["source"].corruption), kw["max_ratio"])
        run("reference: oracle policy (the known answer)", "reference",
            ScaledBaseline("oracle policy", ratios=ratios), "fill the clean classes, 0 for the corrupted ones")
    if task == "digits":
        from tailmix.envs.oracle import oracle_source

        run("reference: perfect generator, fill", "reference", make_baseline("fill"),
            "fill, source = the real digits left out of digits-LT (`envs.oracle.oracle_source`)",
            dict(kw, source=oracle_source(kw["dataset"])))
    lines, summary = table(task, rows, skipped)
    fresh = list(range(1000, 1000 + getattr(args, "fresh_seeds", 0)))
    if fresh:
        lines += _fresh_lines(rows, played, summary, fresh, kw, "")
    if lt_loss is not None:
        lt_rows = {k: (LT_GROUPS.get(g, g), per, how) for k, (g, per, how) in rows.items()
                   if g in LT_GROUPS or g in ("nosyn", "nosyn-lt")}
        lt_lines, lt_summary = table(task, lt_rows)
        summary["loss_rows"] = lt_summary
        lt_summary["loss"] = lt_loss
        lines += ["", f"### With the best long-tail loss inside the env: `loss={lt_loss}` (picked on val)", "",
                  f"Every fixed row again with the head trained under `{lt_loss}` (`none` is no synthetic + that "
                  "loss), CEM on the val reward and the test-scored ceiling under it. The best fixed row is picked "
                  "on val among these rows, so a learned row here must beat no synthetic + the loss too.", ""]
        lines += lt_lines
        if fresh:
            lines += _fresh_lines(lt_rows, played, lt_summary, fresh, kw, f" (loss {lt_loss})")
    summary["seconds"] = time.time() - t0
    return lines, summary


#: groups of the rows under the best long-tail loss -> the groups ``table`` reads
LT_GROUPS = {"static-lt": "static", "schedule-lt": "schedule", "learned-lt": "learned", "ceiling-lt": "ceiling"}


def _loss_rows(kw: dict, args, rows: dict, run, static: dict) -> str:
    """Fixed rows, CEM (val) and the ceiling again under the best long-tail loss (picked on val); its name."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.schedules import SCHEDULE_BASELINES

    val = {k: np.mean([r["val_balanced_accuracy"] for r in per]) for k, (_, per, _) in rows.items()}
    best = max((k for k, (g, _, _) in rows.items() if g == "nosyn-lt"), key=lambda k: val[k])
    loss = best.rsplit(", ", 1)[1]
    kw_lt = dict(kw, loss=loss)
    tag = f" [loss {loss}]"
    for label, pol in static.items():
        run(label + tag, "static-lt", pol, f"fixed `{label}`, loss {loss}", kw_lt)
    scheds = [] if args.no_schedules else list(SCHEDULE_BASELINES)
    for spec in scheds:
        run(spec + tag, "schedule-lt", make_baseline(spec), f"fixed schedule `{spec}`, loss {loss}", kw_lt)
    val = {k: np.mean([r["val_balanced_accuracy"] for r in per]) for k, (_, per, _) in rows.items()}
    init_static = max(static, key=lambda k: val[k + tag])
    cem = f"CEM {args.cem_generations} gen x {args.cem_population} cand x {args.cem_episodes} ep, seed {args.cem_seed}"
    ceil = (f"CEM {args.ceiling_generations} gen x {args.ceiling_population} cand x {args.ceiling_episodes} ep, "
            f"seed {args.cem_seed}")
    pol, end_static = cem_policy(kw_lt, args, None, static[init_static])
    run("CEM static (val)" + tag, "learned-lt", pol,
        cem + f", loss {loss}, from `{init_static}`, fitness = final val bal. acc.", kw_lt)
    ends = [(None, end_static, "static")]
    if scheds:
        init_sched = max(scheds, key=lambda k: val[k + tag])
        pol, end_sched = cem_policy(kw_lt, args, args.cem_knots, make_baseline(init_sched))
        run("CEM schedule (val)" + tag, "learned-lt", pol, cem + f", {args.cem_knots} knots, loss {loss}, from "
            f"`{init_sched}`, fitness = final val bal. acc.", kw_lt)
        ends.append((args.cem_knots, end_sched, "schedule"))
    for knots, end, kind in ends:
        run(f"CEILING: CEM {kind} scored on TEST" + tag, "ceiling-lt", cem_policy(kw_lt, args, knots, end, "test")[0],
            ceil + f", loss {loss}, from the end of `CEM {kind} (val)`, fitness = final TEST bal. acc. (a ceiling, "
            "not a method)", kw_lt)
    return loss


def _fresh_lines(rows: dict, played: dict, summary: dict, fresh: list[int], kw: dict, what: str) -> list[str]:
    """The best fixed, learned and ceiling rows re-scored on fresh episode seeds (the de-biased ceiling).

    The ceiling is the better on test of two searches scored on the table's seeds: re-scored on seeds that picked
    nothing, its advantage over the best fixed row loses that selection bias (the test images stay the same)."""
    from tailmix.agents.evaluate import evaluate

    keep = [k for k, (g, _, _) in rows.items() if g in ("nosyn", "learned", "ceiling")]
    keep += [summary["best_fixed"]]
    again = {}
    for k in keep:
        policy, env_kw = played[k]
        again[k] = (rows[k][0], evaluate(policy, env_kw or kw, seeds=fresh), rows[k][2])
    lines, s = table("fresh", again, best_fixed=summary["best_fixed"], ceiling=summary["ceiling"])
    summary["fresh"] = s
    return ["", f"#### Re-scored on fresh episode seeds {fresh[0]}-{fresh[-1]}{what}: the de-biased ceiling", "",
            f"The best fixed row ({summary['best_fixed']}, picked on val above), every learned row and the ceilings, "
            "played again on episode seeds that no pick or search saw; the ceiling row is the one picked above "
            f"(table seeds: ceiling {summary['ceiling_test']:.3f}, headroom "
            f"{100 * (summary['ceiling_test'] - summary['best_fixed_test']):.1f} points; fresh seeds: "
            f"{s['ceiling_test']:.3f}, {100 * (s['ceiling_test'] - s['best_fixed_test']):.1f} points).", ""] + lines


def table(task: str, rows: dict, skipped=(), best_fixed: str | None = None,
          ceiling: str | None = None) -> tuple[list[str], dict]:
    """The leaderboard lines from ``{label: (group, per-seed rows, provenance)}``.

    ``best_fixed`` / ``ceiling``: labels to use instead of picking them (a re-scoring keeps the original picks)."""
    test = {k: np.array([r["test_balanced_accuracy"] for r in per]) for k, (_, per, _) in rows.items()}
    val = {k: float(np.mean([r["val_balanced_accuracy"] for r in per])) for k, (_, per, _) in rows.items()}
    group = {k: g for k, (g, _, _) in rows.items()}

    def best(groups):
        cands = [k for k in rows if group[k] in groups]
        return max(cands, key=lambda k: val[k]) if cands else None

    best_lt = best(("nosyn-lt",))
    best_static, best_sched = best(("static",)), best(("schedule",))
    best_fixed = best_fixed or best(("static", "schedule"))
    ceilings = [k for k in rows if group[k] == "ceiling"]
    ceiling = ceiling or max(ceilings, key=lambda k: test[k].mean())
    base, top = test[best_fixed].mean(), test[ceiling].mean()
    shown = list(dict.fromkeys(k for k in ("no synthetic, ce", best_lt, best_static, best_sched, best_fixed)
                               if k in rows))
    shown += [k for k in rows if group[k] in ("learned", "ceiling", "reference")]
    tags = {"no synthetic, ce": "no synthetic", best_lt: "no synthetic, best long-tail loss (val)",
            best_static: "best fixed static (val)", best_sched: "best fixed schedule (val)"}
    lines = ["| row | what | test bal. acc. | val bal. acc. | vs best fixed (paired, 95% boot. CI) | "
             "share of headroom | mean ratio |", "|---|---|---|---|---|---|---|"]
    share = {}
    for k in [s for s in shown if s is not None]:
        t = test[k]
        diff = t - test[best_fixed]
        lo, hi = bootstrap_ci(diff)
        vs = "(the reference)" if k == best_fixed else f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"
        sh = ""
        if group[k] == "learned":
            share[k] = (t.mean() - base) / (top - base) if top > base else float("nan")
            sh = "n/a" if np.isnan(share[k]) else f"{100 * share[k]:.0f}%"
        what = tags.get(k, {"learned": "learned (val reward)", "ceiling": "**CEILING (scored on test; not a "
                            "method)**", "reference": "reference (not a method)"}.get(group[k], group[k]))
        label = f"**{k}**" if k in (best_fixed, ceiling) else k
        mean_ratio = np.mean([r["mean_ratio"] for r in rows[k][1]])
        lines.append(f"| {label} | {what} | {t.mean():.3f} ± {t.std(ddof=1) if len(t) > 1 else 0:.3f} | "
                     f"{val[k]:.3f} | {vs} | {sh} | {mean_ratio:.2f} |")
    for spec, how in skipped:
        lines.append(f"| {spec} | learned (val reward) | {how} | | | | |")
    lines += ["", f"Best fixed (picked on val among static and schedule rows): **{best_fixed}** "
              f"{base:.3f}; ceiling: **{ceiling}** {top:.3f}; headroom {100 * (top - base):.1f} points."]
    lo_c, _ = bootstrap_ci(test[ceiling] - test[best_fixed])
    if top > base and not lo_c > 0:
        lines.append("The ceiling's paired interval against the best fixed row includes 0: the headroom is not "
                     "distinguishable from seed noise here, so the shares are noise too.")
    if top <= base:
        lines.append("The ceiling does not beat the best fixed row on these seeds: no headroom measured, shares n/a.")
    above = [k for k in rows if group[k] in ("learned", "reference") and test[k].mean() > top]
    if above:
        lines.append("Rows above the ceiling on test: " + ", ".join(f"`{k}`" for k in above) + ". The CEM ceiling "
                     "is a lower bound on the true one (a small search budget, noisy fitness), so a share above 100% "
                     "means the ceiling is loose, not that the row beat a bound.")
    lines += ["", "Provenance of each row:", ""]
    lines += [f"- `{k}`: {rows[k][2]}" for k in shown if k is not None]
    lines += ["", "Every fixed row measured (test / val):", "",
              ", ".join(f"{k} {test[k].mean():.3f} / {val[k]:.3f}" for k in rows
                        if group[k] in ("nosyn", "nosyn-lt", "static", "schedule"))]
    summary = {"best_fixed": best_fixed, "best_fixed_test": float(base), "ceiling": ceiling, "ceiling_test": float(top),
               "share": share, "test": {k: float(v.mean()) for k, v in test.items()}}
    return lines, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["known-answer", "digits"], choices=TASKS)
    p.add_argument("--seeds", type=int, default=5, help="episode seeds 0..N-1 (test scores)")
    p.add_argument("--learned", nargs="*", default=None,
                   help="SB3 rows algo:wrapper:variant[:timesteps][@seed] (default: per task, see LEARNED; @seed: "
                        "the training seed, default 0)")
    p.add_argument("--timesteps", type=int, default=20_000, help="SB3 timesteps when a spec gives none")
    p.add_argument("--train", action="store_true", help="train SB3 rows whose model is not cached (else skip them)")
    p.add_argument("--train-env-kwargs", nargs="*", default=None,
                   help="env settings key=value for the SB3 TRAINING env only (e.g. reward_replicas=4: a less noisy "
                        "reward); every row is scored in the task's env; they name the model folder")
    p.add_argument("--cem-generations", type=int, default=5)
    p.add_argument("--cem-population", type=int, default=8)
    p.add_argument("--cem-episodes", type=int, default=3)
    p.add_argument("--cem-knots", type=int, default=3)
    p.add_argument("--cem-seed", type=int, default=0)
    p.add_argument("--ceiling-generations", type=int, default=None, help="ceiling CEM (default: --cem-generations)")
    p.add_argument("--ceiling-population", type=int, default=None, help="default: --cem-population")
    p.add_argument("--ceiling-episodes", type=int, default=None, help="default: --cem-episodes")
    p.add_argument("--generator-steps", type=int, default=None, help="DDPM steps (default: digits preset, MedMNIST 300)")
    p.add_argument("--no-schedules", action="store_true", help="leave out schedule rows (fixed, CEM and ceiling)")
    p.add_argument("--val-folds", type=int, default=1,
                   help="the env's val_folds: k >= 2 pools train + val into k folds for the reward, the fixed row "
                        "pick and CEM's fitness (tables go to leaderboard-<task>-folds<k>.md)")
    p.add_argument("--fresh-seeds", type=int, default=0,
                   help="re-score the best fixed, learned and ceiling rows on N fresh episode seeds (1000..)")
    p.add_argument("--loss-rows", action="store_true",
                   help="every fixed row, CEM and the ceiling again under the best long-tail loss (picked on val)")
    p.add_argument("--cache-dir", default=default_cache())
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run, not a result")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/how-much-headroom-do-learned-samplers-capture)")
    p.add_argument("--name-suffix", default="",
                   help="appended to the table's file name: --name-suffix=-cem-large writes "
                        "leaderboard-<task>-cem-large.md (a variant run beside an existing table, not over it)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.cem_generations, args.cem_population, args.cem_episodes = 2, 1, 4, 1
    for name in ("generations", "population", "episodes"):
        if getattr(args, "ceiling_" + name) is None:
            setattr(args, "ceiling_" + name, getattr(args, "cem_" + name))
    parse_train_env_kwargs(args.train_env_kwargs)  # a bad setting fails before any table is computed
    if args.val_folds < 1:
        raise ValueError(f"--val-folds {args.val_folds} is invalid: use 1 (the fixed val split) or k >= 2")
    if args.fresh_seeds < 0:
        raise ValueError(f"--fresh-seeds {args.fresh_seeds} is invalid: use 0 (none) or a count such as 5")
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} is invalid: use at least 1 (3-5 for an interval)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]*", args.name_suffix):
        raise ValueError(f"--name-suffix {args.name_suffix!r} is invalid: use letters, digits, '-', '_' or '.' "
                         "(it becomes part of a file name), e.g. --name-suffix=-cem-large")
    import torch

    torch.set_num_threads(1)
    commit_text = commit()  # at the start: the code that ran
    seeds = list(range(args.seeds))
    out = Path(args.out) if args.out else OUT
    results = {}
    for task in args.tasks:
        lines, summary = run_task(task, args, seeds)
        results[task] = summary
        head = [f"# Leaderboard: {task}", "",
                f"Test balanced accuracy at the end of the episode, mean ± std over episode seeds {seeds}; val = final "
                "balanced val accuracy, mean over the same seeds. Best rows are picked on val. Learned rows train on "
                "the val reward only. The CEILING row's CEM read the TEST split (its fitness) and is no method; "
                "share of headroom = (learned - best fixed) / (ceiling - best fixed).", ""]
        if args.val_folds > 1:
            head[-1:-1] = [f"Reward on cross-validated folds (`val_folds={args.val_folds}`): train + val are pooled "
                           f"into {args.val_folds} stratified folds; each episode trains on {args.val_folds - 1} of "
                           "them and is rewarded on the held-out one, so the val column, the fixed-row pick and "
                           "CEM's fitness read held-out folds (each ~1/k of train + val) instead of the fixed val "
                           f"split, and every row's head trains on {args.val_folds - 1}/{args.val_folds} of train + val "
                           "(not on the train split alone), so the numbers differ from the fixed-split table. Test is "
                           "the same split.", ""]
        tail = ["", f"Time: {summary['seconds']:.0f} s.", "",
                *footer("leaderboard", argv, commit_text)]
        text = "\n".join(head + lines + tail)
        print(text, flush=True)
        if not args.quick or args.out:
            suffix = (f"-folds{args.val_folds}" if args.val_folds > 1 else "") + args.name_suffix
            write_text(out / f"leaderboard-{task}{suffix}.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
