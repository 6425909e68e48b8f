"""The known-answer task: can the learned samplers find a per-class answer that no fixed ratio expresses?

    python -m benchmarks.known_answer --cache-dir /work/cache                 # the committed table
    python -m benchmarks.known_answer --quick                                 # tiny budgets (a smoke run)

The task (:func:`envs.oracle.known_answer_kwargs`): digits-LT whose synthetic source is the oracle source (the
real digits the long-tail builder left unused: a perfect generator) with two classes corrupted (their pools
hold images of another digit). The right policy is known: fill every clean class to the head count and give the
corrupted classes nothing (the *oracle policy*). Every fixed policy, static (none, constant 0.5-8, fill,
inverse, fill x 0.25 / 0.5) and scheduled over the episode (``agents.schedules``), is scored beside it on the
test split; the *gap* is oracle policy minus the best fixed row (the best on test: the strictest bar).

Learned rows are trained on the VAL reward only (the env's reward; the test split is read only by
``agents.evaluate``) and each row reports its share of the gap: ``(learned - best fixed) / (oracle - best
fixed)``. The goal (issue "Headroom"): PPO with parameter sharing and PPO centralised each capture >= 70%.

Learned rows are specs ``algo:wrapper:variant[:timesteps]`` (:func:`tailmix.policies.parse_training_spec`; ``--learned``; default ``--timesteps``): ``ppo:shared:difference`` (difference
credit), ``ppo:central:ref0`` (reward relative to a reference head at ratio 0), ``sac:...``, ``...:plain`` (the
shared balanced val accuracy), and ``cem:static`` / ``cem:schedule`` (the cross-entropy search of
``agents.cem`` on the val reward, a static vector or per-class knots over the episode). With ``--train-seeds``
each SB3 row trains one model per seed (model ``k`` trained with seed ``k`` and scored on episode seed ``k``);
by default one model (seed 0) is scored on every episode seed, as ``benchmarks/results.py`` does. With
``--model-seeds N`` each SB3 row trains N models (seeds 0..N-1), each scored on every episode seed; adding
``--select-on-val K`` reports, per group of K consecutive seeds, the model picked on mean VAL balanced accuracy
with its test score (model selection on a held-out split, as RL papers pick among seeds; never on test).
``--train-env-kwargs`` changes env settings of the SB3 training env only (e.g. ``reward_replicas=4``: a
less noisy reward); every row is still scored in the task's own env.

The table goes to ``benchmarks/can-learned-samplers-find-a-known-answer/known-answer.md`` with the command, the commit and the versions. The
functions (``fixed_policies``, ``learned_policy``, ``gap_table``) are meant to be reused by a leaderboard.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.lib import (commit, default_cache, experiment_dir, footer, parse_algo_kwargs, parse_train_env_kwargs,
                            static_specs, train_env_tags, write_text)
from tailmix.policies import ScaledBaseline, fixed_policy, parse_training_spec, training_env_kwargs

OUT = experiment_dir("can-learned-samplers-find-a-known-answer")
LEARNED = ("ppo:shared:difference", "ppo:central:ref0", "sac:shared:difference", "sac:central:ref0",
           "cem:static", "cem:schedule")


def fixed_policies(kw: dict) -> dict:
    """``{label: policy}``: every fixed static and schedule policy of the table, and the oracle policy last."""
    from tailmix.agents.schedules import SCHEDULE_BASELINES
    from tailmix.envs.oracle import oracle_policy_ratios

    out = {s: fixed_policy(s) for s in static_specs()}
    out.update({s: fixed_policy(s) for s in SCHEDULE_BASELINES})
    corrupted = sorted(kw["source"].corruption)
    ratios = oracle_policy_ratios(kw["dataset"].train_counts, corrupted, kw["max_ratio"])
    out["oracle policy"] = ScaledBaseline("oracle policy", ratios=ratios)
    return out


def learned_policy(spec: str, kw: dict, args, seed: int = 0):
    """Train (or load from ``--cache-dir``) the learned row ``spec`` on the val reward; return its policy."""
    from tailmix.agents.baselines import SB3Policy

    row = parse_training_spec(spec)
    if row.algo == "cem":
        from tailmix.agents.cem import CEMPolicy, cem_search

        knots = args.cem_knots if row.wrapper == "schedule" else None
        res = cem_search(training_env_kwargs(kw, "ref0" if args.cem_ref0 else "plain"),
                         generations=args.cem_generations, population=args.cem_population,
                         episodes_per_candidate=args.cem_episodes, seed=seed,
                         init_mean="fill", knots=knots)
        return CEMPolicy.from_result(res, name=spec)
    from tailmix.agents.sb3 import load_model, train

    algo, wrapper, variant = row.algo, row.wrapper, row.variant
    timesteps = row.timesteps or args.timesteps
    from tailmix.envs.oracle import KNOWN_ANSWER_CORRUPTION

    # settings other than the documented task's name their own model folder, so a cached model is never reused
    tags = [] if kw["source"].corruption == KNOWN_ANSWER_CORRUPTION else [
        "c" + "-".join(f"{k}to{v}" for k, v in sorted(kw["source"].corruption.items()))]
    tags += [f"{name}-{kw[name]}" for name, default in (("lr_schedule", "constant"), ("encoder", "crossfit"))
             if kw.get(name, default) != default]
    algo_kwargs = parse_algo_kwargs(getattr(args, "algo_kwargs", None))
    tags += [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(algo_kwargs.items())]
    env_kwargs = parse_train_env_kwargs(getattr(args, "train_env_kwargs", None))
    tags += train_env_tags(env_kwargs)
    run_dir = (Path(args.cache_dir) / "known-answer-agents" /
               "-".join([f"{algo}-{wrapper}-{variant}-{timesteps}", *tags, f"seed{seed}"]))
    if (run_dir / "model.zip").exists() and not args.retrain:
        model = load_model(algo, run_dir / "model.zip")
    else:
        model = train(algo, dict(training_env_kwargs(kw, variant), **env_kwargs), wrapper=wrapper,
                      total_timesteps=timesteps, seed=seed,
                      log_dir=str(run_dir), algo_kwargs=algo_kwargs or None)
        model.get_env().close()
    return SB3Policy(model, wrapper=wrapper, name=spec)


def model_seed_lines(rows: dict, goal: dict, specs: list[str], model_seeds: int) -> list[str]:
    """Per model seed and mean share of each PPO spec trained with ``--model-seeds`` (rows ``spec [model k]``)."""
    lines = []
    for spec in specs:
        keys = [f"{spec} [model {m}]" for m in range(model_seeds)]
        if not all(k in goal["share"] for k in keys):
            continue
        shares = np.array([goal["share"][k] for k in keys])
        vals = [np.mean([r["val_balanced_accuracy"] for r in rows[k][1]]) for k in keys]
        every = "met on every model seed" if shares.min() >= 0.7 else "not met on every model seed"
        lines.append(f"- `{spec}` over {model_seeds} training seeds: shares "
                     + ", ".join(f"{100 * x:.0f}%" for x in shares) + f"; mean {100 * shares.mean():.0f}%, "
                     f"min {100 * shares.min():.0f}% (goal >= 70%: **{every}**; mean val bal. acc. "
                     f"{np.mean(vals):.3f}, the number settings are chosen on).")
    return lines


def mean_val(rows: dict, key: str) -> float:
    """Mean VAL balanced accuracy of row ``key`` over its episode seeds (the number models are picked on)."""
    return float(np.mean([r["val_balanced_accuracy"] for r in rows[key][1]]))


def pick_on_val(rows: dict, keys: list[str]) -> str:
    """The row among ``keys`` with the highest mean val balanced accuracy; the test split is never read.

    Model selection on a held-out split, as RL papers pick among training seeds or checkpoints; ties go to the
    first key (the lowest training seed), so the pick is deterministic.
    """
    return max(keys, key=lambda k: mean_val(rows, k))


def check_select_on_val(model_seeds: int, k: int) -> None:
    """Raise ``ValueError`` unless ``model_seeds`` training seeds split into groups of ``k``."""
    if k < 1 or model_seeds < k or model_seeds % k:
        raise ValueError(f"--select-on-val {k} needs K >= 1 and --model-seeds a multiple of K (got --model-seeds "
                         f"{model_seeds}); e.g. --model-seeds {3 * max(k, 1)} --select-on-val {max(k, 1)}")


def select_on_val_rows(rows: dict, spec: str, model_seeds: int, k: int) -> dict:
    """``{label: picked row key}``: one val pick per group of ``k`` consecutive training seeds of ``spec``.

    Labels read ``spec [best of k on val, seeds a-b]``; the caller adds each as a row holding the picked model's
    per-episode rows (its test score is that model's, nothing is re-run).
    """
    check_select_on_val(model_seeds, k)
    out = {}
    for start in range(0, model_seeds, k):
        keys = [f"{spec} [model {m}]" for m in range(start, start + k)]
        out[f"{spec} [best of {k} on val, seeds {start}-{start + k - 1}]"] = pick_on_val(rows, keys)
    return out


def select_on_val_lines(rows: dict, goal: dict, picks: dict, spec: str, k: int) -> list[str]:
    """One line per SB3 row: each group's val pick and its share, judged over every group."""
    mine = {label: key for label, key in picks.items() if label.startswith(f"{spec} [best of")}
    if not mine or not all(label in goal["share"] for label in mine):
        return []
    parts, shares = [], []
    for label, key in mine.items():
        seeds = label.rsplit("seeds ", 1)[1].rstrip("]")
        start, end = (int(x) for x in seeds.split("-"))
        group = [goal["share"][f"{spec} [model {m}]"] for m in range(start, end + 1)]
        shares.append(goal["share"][label])
        parts.append(f"seeds {seeds}: picks {key.rsplit('[', 1)[1].rstrip(']')} (val {mean_val(rows, key):.3f}), "
                     f"share {100 * goal['share'][label]:.0f}% (group mean {100 * np.mean(group):.0f}%)")
    every = "met in every group" if min(shares) >= 0.7 else "not met in every group"
    return [f"- `{spec}` best of {k} on val, per group of {k} training seeds: " + "; ".join(parts)
            + f". Goal (>= 70%) for this protocol: **{every}** (min {100 * min(shares):.0f}%)."]


def gap_table(rows: dict, seeds: list[int], corrupted: list[int]) -> tuple[list[str], dict]:
    """Markdown lines of the table and the numbers behind the goal.

    ``rows`` maps a label to ``(kind, per-seed rows of agents.evaluate)``, ``kind`` in ``fixed``, ``schedule``,
    ``oracle``, ``learned``.
    """
    from tailmix.agents.evaluate import summarize

    summ = {label: summarize(r) for label, (_, r) in rows.items()}
    kinds = {label: kind for label, (kind, _) in rows.items()}
    fixed = [k for k in rows if kinds[k] in ("fixed", "schedule")]
    best_fixed = max(fixed, key=lambda k: summ[k]["test_balanced_accuracy_mean"])
    best_val = max(fixed, key=lambda k: summ[k]["val_balanced_accuracy_mean"])
    oracle = summ["oracle policy"]["test_balanced_accuracy_mean"]
    base = summ[best_fixed]["test_balanced_accuracy_mean"]
    gap = oracle - base
    goal = {"best_fixed": best_fixed, "best_fixed_test": base, "best_fixed_by_val": best_val, "oracle": oracle,
            "gap": gap, "share": {}}
    lines = ["| policy | kind | test bal. acc. | val bal. acc. | share of the gap | mean ratio | ratio of the "
             "corrupted classes |", "|---|---|---|---|---|---|---|"]
    for label, s in summ.items():
        per_class = np.mean([r["ratios"] for r in rows[label][1]], 0)
        share = ""
        if kinds[label] == "learned":
            goal["share"][label] = (s["test_balanced_accuracy_mean"] - base) / gap if gap > 0 else float("nan")
            share = f"{100 * goal['share'][label]:.0f}%"
        bold = "**" if label in (best_fixed, "oracle policy") else ""
        lines.append(f"| {bold}{label}{bold} | {kinds[label]} | {s['test_balanced_accuracy_mean']:.3f} ± "
                     f"{s['test_balanced_accuracy_std']:.3f} | {s['val_balanced_accuracy_mean']:.3f} ± "
                     f"{s['val_balanced_accuracy_std']:.3f} | {share} | {s['mean_ratio_mean']:.2f} | "
                     + " / ".join(f"{per_class[c]:.2f}" for c in corrupted) + " |")
    return lines, goal


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="episode seeds 0..N-1 (test scores)")
    p.add_argument("--learned", nargs="*", default=list(LEARNED), help="learned rows, algo:wrapper:variant")
    p.add_argument("--timesteps", type=int, default=30_000, help="SB3 timesteps per model")
    p.add_argument("--train-seeds", action="store_true", help="one model per seed (default: one model, seed 0)")
    p.add_argument("--retrain", action="store_true", help="ignore models cached in --cache-dir")
    p.add_argument("--model-seeds", type=int, default=0,
                   help="train this many models per SB3 row (seeds 0..K-1), each scored on every episode seed")
    p.add_argument("--select-on-val", type=int, default=0, metavar="K",
                   help="in each group of K training seeds of --model-seeds (default K models), add a row with the "
                        "model of highest mean val balanced accuracy (picked on val, never on test)")
    p.add_argument("--algo-kwargs", nargs="*", default=None,
                   help="SB3 overrides key=value (learning_rate, n_steps, ent_coef, ...); they name the model folder")
    p.add_argument("--train-env-kwargs", nargs="*", default=None,
                   help="env settings key=value for the SB3 training env only (e.g. reward_replicas=4); the "
                        "evaluation env keeps the task's; they name the model folder")
    p.add_argument("--cem-generations", type=int, default=12)
    p.add_argument("--cem-population", type=int, default=24)
    p.add_argument("--cem-episodes", type=int, default=4)
    p.add_argument("--cem-knots", type=int, default=3)
    p.add_argument("--cem-ref0", action="store_true", help="CEM fitness relative to a reference head at ratio 0")
    p.add_argument("--lr-schedule", default="constant", help="the env's lr_schedule (feature mode)")
    p.add_argument("--encoder", default="crossfit", help="the env's feature encoder ('random': fast smoke runs)")
    p.add_argument("--no-schedules", action="store_true", help="leave out the fixed schedule rows")
    p.add_argument("--corruption", default=None, help="another mapping, e.g. 5:3,7:1 (default: the documented task)")
    p.add_argument("--cache-dir", default=default_cache())
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run, not a result")
    p.add_argument("--out", default=None, help="output file (default benchmarks/can-learned-samplers-find-a-known-answer/known-answer.md)")
    args = p.parse_args(argv)
    parse_train_env_kwargs(args.train_env_kwargs)  # a bad setting fails before any training
    if args.select_on_val:
        args.model_seeds = args.model_seeds or args.select_on_val
        check_select_on_val(args.model_seeds, args.select_on_val)  # before any training
    if args.quick:
        args.seeds, args.timesteps = 2, 256
        args.cem_generations, args.cem_population, args.cem_episodes = 1, 4, 1
    import torch

    torch.set_num_threads(1)
    from tailmix.agents.evaluate import evaluate, make_eval_env
    from tailmix.envs.oracle import known_answer_kwargs

    t0 = time.time()
    commit_text = commit()  # at the start: the code that ran, whatever is committed while it runs
    corruption = None if not args.corruption else {int(a): int(b) for a, b in
                                                   (pair.split(":") for pair in args.corruption.split(","))}
    kw = known_answer_kwargs(cache_dir=str(Path(args.cache_dir) / "encoders"), lr_schedule=args.lr_schedule,
                             encoder=args.encoder, corruption=corruption)
    corrupted = sorted(kw["source"].corruption)
    seeds = list(range(args.seeds))
    env = make_eval_env(kw)
    rows: dict = {}
    for label, policy in fixed_policies(kw).items():
        if args.no_schedules and label.split(":")[0] in ("decay", "warmup", "early", "late"):
            continue
        kind = ("oracle" if label == "oracle policy" else
                "schedule" if label.split(":")[0] in ("decay", "warmup", "early", "late") else "fixed")
        rows[label] = (kind, evaluate(policy, kw, seeds=seeds, env=env))
        print(f"{label}: {np.mean([r['test_balanced_accuracy'] for r in rows[label][1]]):.4f}", flush=True)
    timings, picks = {}, {}
    for spec in args.learned:
        t = time.time()
        if args.model_seeds and not spec.startswith("cem"):
            # one row per training seed, each model scored on every episode seed (its share is a 5-episode mean)
            for m in range(args.model_seeds):
                per = evaluate(learned_policy(spec, kw, args, seed=m), kw, seeds=seeds, env=env)
                rows[f"{spec} [model {m}]"] = ("learned", per)
                print(f"{spec} [model {m}]: {np.mean([r['test_balanced_accuracy'] for r in per]):.4f} "
                      f"val {np.mean([r['val_balanced_accuracy'] for r in per]):.4f}", flush=True)
            if args.select_on_val:
                for label, key in select_on_val_rows(rows, spec, args.model_seeds, args.select_on_val).items():
                    picks[label] = key
                    rows[label] = ("learned", rows[key][1])  # the picked model's own episodes: nothing re-run
                    print(f"{label}: {key}", flush=True)
            timings[spec] = time.time() - t
            continue
        if args.train_seeds and not spec.startswith("cem"):
            per = [evaluate(learned_policy(spec, kw, args, seed=s), kw, seeds=[s], env=env)[0] for s in seeds]
        else:
            per = evaluate(learned_policy(spec, kw, args), kw, seeds=seeds, env=env)
        rows[spec] = ("learned", per)
        timings[spec] = time.time() - t
        print(f"{spec}: {np.mean([r['test_balanced_accuracy'] for r in per]):.4f} ({timings[spec]:.0f} s)", flush=True)
    table, goal = gap_table(rows, seeds, corrupted)
    ds = kw["dataset"]
    mapping = ", ".join(f"class {a} served images of {b}" for a, b in sorted(kw["source"].corruption.items()))
    train_note = (f"{args.model_seeds} models per SB3 row (training seeds 0..{args.model_seeds - 1}, rows "
                  "`[model k]`), each scored on every episode seed" if args.model_seeds else
                  "one model per seed (model k trained with seed k, scored on episode seed k)" if args.train_seeds
                  else "one model per row (seed 0), scored on every episode seed")
    if args.select_on_val:
        k = args.select_on_val
        train_note += (f"; rows `[best of {k} on val, seeds a-b]`: in each group of {k} consecutive training seeds, "
                       "the model with the highest mean val balanced accuracy over the episode seeds, reported with "
                       "that model's test score (picked on val, never on test)")
    if args.algo_kwargs:
        train_note += "; SB3 overrides " + ", ".join(args.algo_kwargs)
    if args.train_env_kwargs:
        train_note += ("; the SB3 training env sets " + ", ".join(args.train_env_kwargs)
                       + " (the evaluation env keeps the task's settings)")
    lines = ["# The known-answer task: digits-LT, oracle source, two corrupted classes", "",
             f"Train counts {ds.train_counts.tolist()}, val {len(ds.val_labels)}, test {len(ds.test_labels)}. Source: "
             f"the {sum(len(kw['source'].source.pool(c)) for c in range(ds.num_classes))} real digits the long-tail "
             f"builder left unused (`envs.oracle.oracle_source`), with {mapping} (`CorruptedSource`). Feature mode "
             f"(encoder `{args.encoder}`, linear head, lr_schedule `{args.lr_schedule}`), {kw['max_steps']} steps per "
             f"episode, max ratio {kw['max_ratio']:g}. The oracle policy fills every clean class to the head count "
             "(clipped to the max ratio) and gives the corrupted classes 0.", "",
             f"Test balanced accuracy and val balanced accuracy at the end of the episode, mean ± std over episode "
             f"seeds {seeds}. Learned rows are trained on the val reward only; {train_note}. SB3 rows: "
             f"`algo:wrapper:variant[:timesteps]` (default {args.timesteps} timesteps); `difference` = difference credit (`credit='difference'`), `ref0` = "
             f"reward minus a reference head at ratio 0. CEM: {args.cem_generations} generations x "
             f"{args.cem_population} candidates x {args.cem_episodes} episodes, started from fill, fitness = final "
             f"balanced val accuracy{' minus a reference head at ratio 0' if args.cem_ref0 else ''}; the schedule "
             f"search has {args.cem_knots} knots per class. Share of the gap = (learned - best fixed) / (oracle "
             "policy - best fixed), with the best fixed row (static or schedule) picked on test, the strictest bar.",
             "", *table, "",
             f"Best fixed policy (on test): {goal['best_fixed']} {goal['best_fixed_test']:.3f}; on val: "
             f"{goal['best_fixed_by_val']}. Oracle policy {goal['oracle']:.3f}: a gap of "
             f"{100 * goal['gap']:.1f} points.", ""]
    for spec in goal["share"]:
        if spec.startswith("ppo:"):
            met = "met" if goal["share"][spec] >= 0.7 else "not met"
            lines.append(f"- Goal (>= 70% of the gap) for `{spec}`: {100 * goal['share'][spec]:.0f}%, **{met}**.")
    if args.model_seeds:
        lines += model_seed_lines(rows, goal, [s for s in args.learned if not s.startswith("cem")], args.model_seeds)
    for spec in args.learned if args.select_on_val else ():
        lines += select_on_val_lines(rows, goal, picks, spec, args.select_on_val)
    lines += ["", "Time per learned row (training, or loading a model cached in --cache-dir, and evaluation): "
              + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {time.time() - t0:.0f} s.", "",
              *footer("known_answer", argv, commit_text)]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out) if args.out else OUT / "known-answer.md"
    if not args.quick or args.out:
        write_text(out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
