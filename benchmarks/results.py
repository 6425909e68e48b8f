"""Fixed vs learned synthetic-ratio policies on real long-tailed data: the table users judge tailmix by.

    python -m benchmarks.results                      # small settings (CI-sized): digits-LT, + MedMNIST if available
    python -m benchmarks.results --full               # the settings of the committed tables
    python -m benchmarks.results --datasets retinamnist --timesteps 50000

For each dataset (digits-LT; RetinaMNIST and BreastMNIST from ``$TAILMIX_DATA_DIR``) the synthetic bank is
filled by the cached class-conditional DDPM with the long-tail-calibrated filter (as ``train_agents.py``
does), then every policy runs full episodes with a fresh classifier per seed and is scored on the test split
(never used for rewards):

- no synthetic data with plain cross-entropy, and with each long-tail loss the feature head supports
  (logit adjustment, balanced softmax, class-balanced; LDAM-DRW needs pixel mode and is left out here);
- every fixed-ratio baseline (constant 0.5 / 1 / 2, fill to the head count, inverse frequency);
- PPO and SAC samplers (parameter sharing across class agents, or ``--wrapper central``), trained on the val reward with seed 0 and
  evaluated over the same seeds as the baselines;
- with ``--algos ... cem``: a cross-entropy-method search (:mod:`agents.cem`) on the val reward, a derivative-free
  policy-search learner that learns one static per-class ratio vector, played like a fixed baseline on test.

``--loss`` sets the env's head loss for every row that trains with synthetic data (fixed ratios and learned agents,
which are trained under it too), so fixed and learned are compared like with like; the no-synthetic rows always show
cross-entropy and each long-tail loss.

Tables (mean ± std over seeds of test balanced accuracy, macro-F1 and tail-class recall) are written to
``benchmarks/do-learned-samplers-beat-fixed-ratios/<dataset>.md`` with the command, seeds and versions.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.lib import (NO_SYN_LOSSES, add_common_arguments, build_env_kwargs, commit, experiment_dir, fixed_specs,
                            footer, write_text)
from tailmix.classifiers.batched_head import HEAD_LOSSES  # the feature-mode losses

OUT = experiment_dir("do-learned-samplers-beat-fixed-ratios")
#: File-name tags of the head losses (``--loss``): ``digits-lt-la.md`` etc.; cross-entropy keeps the plain names.
LOSS_TAGS = {"ce": "", "logit_adjustment": "-la", "balanced_softmax": "-bs", "class_balanced": "-cb"}


def run_dataset(name: str, args) -> str:
    from tailmix.agents.baselines import SB3Policy, make_baseline
    from tailmix.agents.evaluate import evaluate, summarize
    from tailmix.agents.sb3 import train

    t0 = time.time()
    dataset, base_kw = build_env_kwargs(name, args)
    # Every row that trains on synthetic data (fixed ratios, learned agents) uses the head loss under test.
    kw = dict(base_kw, loss=args.loss)
    seeds = list(range(args.seeds))
    rows: list[tuple[str, dict]] = []

    def add(label, policy, env_kw):
        rows.append((label, summarize(evaluate(policy, env_kw, seeds=seeds))))
        print(f"  {label}: {rows[-1][1]['test_balanced_accuracy_mean']:.3f}", flush=True)

    print(f"## {dataset!r}", flush=True)
    add("no synthetic, cross-entropy", make_baseline("none"), dict(kw, loss="ce"))
    for loss in NO_SYN_LOSSES:
        add(f"no synthetic, {loss.replace('_', ' ')}", make_baseline("none"), dict(kw, loss=loss))
    for spec in fixed_specs():
        add(spec, make_baseline(spec), kw)
    # Difference credit changes only what the agents are trained on; evaluation reads the actual classifier's test
    # metrics, which the counterfactual heads do not touch, so policies are evaluated without them (C times cheaper).
    train_kw = kw if args.credit == "shared" else dict(kw, credit=args.credit, credit_default=args.credit_default,
                                                       reward_reference=None)
    credit_tag = "" if args.credit == "shared" else f"-{args.credit}{args.credit_default:g}"
    loss_tag = "" if args.loss == "ce" else f"-{args.loss}"
    cem_notes: list[str] = []
    for algo in args.algos:
        if algo == "cem":
            add("learned: CEM (val)", _cem_policy(kw, args, cem_notes), kw)
            continue
        run_dir = (Path(args.cache_dir) / "results-agents" /
                   f"{dataset.name}-{algo}-{args.wrapper}-{args.timesteps}-{args.reward}-{args.reference}-{args.replicas}"
                   f"{credit_tag}{loss_tag}")
        t = time.time()
        model = train(algo, train_kw, wrapper=args.wrapper, total_timesteps=args.timesteps, seed=0,
                      log_dir=str(run_dir))
        print(f"  trained {algo} in {time.time() - t:.0f} s", flush=True)
        add(f"learned: {algo.upper()} ({args.wrapper})", SB3Policy(model, wrapper=args.wrapper), kw)
    return _table(dataset, rows, seeds, args, time.time() - t0, cem_notes)


def _cem_policy(kw: dict, args, notes: list[str]):
    """CEM on the val reward (``kw``'s head loss and reward reference; the search never reads test) -> its policy.

    One search per ``--cem-init``; with several, the final means are scored on held-out episode seeds (val split
    only, seeds the searches never drew) and the best one is played. Credit does not apply: the fitness is the
    final (reference-relative) balanced val accuracy of the whole vector.
    """
    import numpy as np

    from tailmix.agents.cem import CEMPolicy, cem_search, val_fitness

    found = []
    for init in args.cem_init:
        t = time.time()
        res = cem_search(kw, generations=args.cem_generations, population=args.cem_population,
                         episodes_per_candidate=args.cem_episodes, seed=args.cem_seed,
                         init_mean=None if init == "middle" else init, progress=False)
        secs = time.time() - t
        h0, h1 = res.history[0]["mean_fitness"], res.history[-1]["mean_fitness"]
        print(f"  searched CEM from {init} in {secs:.0f} s: val fitness of the mean {h0:+.4f} -> {h1:+.4f}",
              flush=True)
        found.append((init, res, f"`{np.round(res.mean_ratios, 2).tolist()}` (search {secs:.0f} s; val fitness of "
                                 f"the mean on the search's episode seeds {h0:+.4f} at generation 0 -> {h1:+.4f} "
                                 f"at the last"))
    pick = 0
    if len(found) > 1:
        seeds = list(range(args.cem_val_seed0, args.cem_val_seed0 + args.cem_val_seeds))
        fit = val_fitness(np.stack([res.mean_action for _, res, _ in found]), kw, seeds)
        pick = int(np.argmax(fit.mean(1)))
        found = [(init, res, text + f"; held-out val fitness {fit[i].mean():+.4f} ± "
                  f"{fit[i].std(ddof=1) / np.sqrt(len(seeds)):.4f} over episode seeds {seeds[0]}...{seeds[-1]}")
                 for i, (init, res, text) in enumerate(found)]
    for i, (init, _, text) in enumerate(found):
        played = " **played**" if len(found) > 1 and i == pick else ""
        notes.append(f"CEM from `{init}`{played}, final mean (class order as in the train counts): {text}).")
    return CEMPolicy.from_result(found[pick][1], name="cem")


def _table(dataset, rows, seeds, args, seconds: float, notes: list[str] = ()) -> str:
    best_fixed = max((r for label, r in rows if label in fixed_specs()),
                     key=lambda r: r["test_balanced_accuracy_mean"])
    no_syn = max(((label, r) for label, r in rows if label.startswith("no synthetic")),
                 key=lambda lr: lr[1]["test_balanced_accuracy_mean"])
    sb3 = [a for a in args.algos if a != "cem"]
    learned = []
    if sb3:
        learned.append(f"{', '.join(a.upper() for a in sb3)}: {args.timesteps} timesteps, seed 0")
    if "cem" in args.algos:
        minus = "" if args.reference is None else " minus the reference head's"
        pick = "" if len(args.cem_init) == 1 else (
            f" (the search whose final mean has the best val fitness on held-out episode seeds "
            f"{args.cem_val_seed0}...{args.cem_val_seed0 + args.cem_val_seeds - 1} is played)")
        learned.append(
            f"CEM (`agents.cem.cem_search`, a derivative-free policy search that learns a static per-class ratio "
            f"vector, the same at every step): {args.cem_generations} generations x {args.cem_population} candidates "
            f"x {args.cem_episodes} episode(s), seed {args.cem_seed}, started from {', '.join(args.cem_init)}"
            f"{pick}; fitness = final balanced val accuracy{minus} (val split only); the final CEM mean is played"
            f"{'' if args.credit == 'shared' else '; CEM does not use the difference rewards'}")
    lines = [f"# {dataset.name}: fixed vs learned synthetic ratios", "",
             f"Train counts {dataset.train_counts.tolist()}, val {len(dataset.val_labels)}, test "
             f"{len(dataset.test_labels)}. Test split, final classifier of each episode; mean ± std over seeds "
             f"{seeds}. Feature mode (cross-fitted encoder), {args.max_steps} steps per episode, max ratio "
             f"{args.max_ratio}, head loss `{args.loss}` for every row with synthetic data (fixed and learned), "
             f"reward `{args.reward}`"
             f"{'' if args.reference is None else f' relative to a reference head at ratio {args.reference:g}'}, "
             f"{args.replicas} reward replica(s), `{args.wrapper}` agents"
             f"{'' if args.credit == 'shared' else f' trained on difference rewards (counterfactual: the class at ratio {args.credit_default:g}; no reference head)'}"
             f". Bank: DDPM "
             f"`{args.preset}` preset, filtered, {args.per_class} per class. Learned agents: "
             f"{'; '.join(learned) or 'none'}.", "",
             "| policy | test bal. acc. | macro-F1 | tail recall | mean ratio |", "|---|---|---|---|---|"]
    for label, r in rows:
        def pm(m):
            return f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"
        lines.append(f"| {label} | {pm('test_balanced_accuracy')} | {pm('test_macro_f1')} | "
                     f"{pm('test_tail_recall')} | {r['mean_ratio_mean']:.2f} |")
    lines += [""] + [n + "\n" for n in notes]
    lines += [f"Best fixed ratio: {best_fixed['test_balanced_accuracy_mean']:.3f}. Best no-synthetic row: "
              f"{no_syn[0]} {no_syn[1]['test_balanced_accuracy_mean']:.3f}. "
              f"Wall time {seconds:.0f} s on this machine.", "",
              *footer("results", getattr(args, "argv", None), getattr(args, "commit", None) or commit())]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=None,
                        help="digits, retinamnist, breastmnist (MedMNIST ones need TAILMIX_DATA_DIR)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--algos", nargs="*", default=["ppo", "sac"],
                        help="learned samplers: SB3 algorithms (agents.sb3.ALGORITHMS), and cem (a static per-class "
                             "ratio vector searched on the val reward)")
    parser.add_argument("--timesteps", type=int, default=5000)
    parser.add_argument("--wrapper", default="shared", help="shared (parameter sharing) or central")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--max-ratio", type=float, default=8.0)
    parser.add_argument("--reward", default="accuracy")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--reference", type=float, default=None,
                        help="reward relative to a reference head trained at this ratio (e.g. 0)")
    parser.add_argument("--credit", default="shared", choices=("shared", "difference"),
                        help="how learned agents are credited: the shared reward, or per-class difference rewards "
                             "(drops --reference for training; baselines are unaffected)")
    parser.add_argument("--credit-default", type=float, default=0.0,
                        help="ratio of a class in its counterfactual (--credit difference)")
    parser.add_argument("--loss", default="ce", choices=HEAD_LOSSES,
                        help="env head loss for every row with synthetic data (fixed ratios and learned agents)")
    parser.add_argument("--cem-generations", type=int, default=4)
    parser.add_argument("--cem-population", type=int, default=8)
    parser.add_argument("--cem-episodes", type=int, default=2, help="episodes (seeds) per CEM candidate")
    parser.add_argument("--cem-init", nargs="+", default=["inverse"],
                        help="CEM starting mean(s): baseline specs (inverse, fill, constant:1) or 'middle' (every ratio "
                             "at max_ratio / 2); with several, one search each, and the final mean with the best val "
                             "fitness on held-out episode seeds is played")
    parser.add_argument("--cem-val-seeds", type=int, default=32,
                        help="held-out episode seeds that pick among several --cem-init searches")
    parser.add_argument("--cem-val-seed0", type=int, default=1000)
    parser.add_argument("--cem-seed", type=int, default=0)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.full:
        args.timesteps = max(args.timesteps, 30000)
        args.cem_generations = max(args.cem_generations, 16)
        args.cem_population = max(args.cem_population, 24)
        args.cem_episodes = max(args.cem_episodes, 6)
    import torch

    torch.set_num_threads(1)
    names = args.datasets or (["digits"] + (["retinamnist", "breastmnist"] if os.environ.get("TAILMIX_DATA_DIR")
                                            else []))
    args.argv, args.commit = argv, commit()  # the command and the code that ran, taken at the start
    out = Path(args.out) if args.out else OUT
    for name in names:
        text = run_dataset(name, args)
        suffix = ("" if args.wrapper == "shared" else f"-{args.wrapper}") + LOSS_TAGS[args.loss] + \
            ("" if args.credit == "shared" else "-credit")
        path = out / f"{'digits-lt' if name == 'digits' else name}{suffix}.md"
        write_text(path, text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
