"""Headroom: can ANY static per-class ratio vector beat the best fixed ratio policy on the test split?

    python -m benchmarks.headroom                       # small settings (a minute): digits-LT (+ RetinaMNIST)
    python -m benchmarks.headroom --full --datasets digits --cache-dir /work/cache
    python -m benchmarks.headroom --full --datasets retinamnist --generator-steps 300 --cache-dir /work/cache

For each dataset and each head loss (``ce`` and ``logit_adjustment`` by default), a cross-entropy-method search
(:mod:`agents.cem`) looks for the ratio vector with the best final balanced VALIDATION accuracy (the env's
reward; the test split is never read by the search), started from the inverse-frequency vector and from the
middle of the action box. Then the found vectors, no synthetic data (with cross-entropy and each long-tail loss),
the constant ratios, fill and inverse frequency are all scored on the TEST split over the same seeds, through
``agents.evaluate.evaluate`` with the same env settings as ``benchmarks/results.py`` (same dataset, bank, encoder
and reward reference), so the fixed rows are re-measured in the same run.

Each table also gives the val fitness of every vector on held-out episode seeds the search never used, so val
gains that do not carry over to test (val overfitting; RetinaMNIST's val split has 120 images) show up.
Tables go to ``benchmarks/can-any-static-ratio-beat-the-best-fixed-policy/headroom-<dataset>.md`` with the command, seeds and versions.

``--val-folds 1 5`` runs the whole search once per value of the env's ``val_folds`` (1: the fixed val split; k >= 2:
the cross-validated reward, each episode rewarded on one of k folds of train + val) and writes
``headroom-<dataset>-folds.md``: a summary of each CEM vector's val gain next to its test gain (relative to its
starting vector and to the fixed ratio with the best val fitness), then the full table of each value. The search
and the val fitness use that ``val_folds``; every test row is scored in the same fixed-split env (val_folds=1:
train on the train split, score on test), so the test column measures the same thing for every value and only the
signal the search optimised differs.

    python -m benchmarks.headroom --datasets digits --val-folds 1 5 --generations 8 --population 16 --episodes 4 \
        --cache-dir /work/cache
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# The dataset and env keyword arguments exactly as benchmarks/results.py builds them (and its loss list).
from benchmarks.lib import (NO_SYN_LOSSES, add_common_arguments, build_env_kwargs, commit, experiment_dir, fixed_specs,
                            footer, write_text)

OUT = experiment_dir("can-any-static-ratio-beat-the-best-fixed-policy")


def run_loss(dataset, kw: dict, loss: str, args, seeds: list[int], test_cache: dict | None = None) -> dict:
    """CEM on the val reward with head loss ``loss``, then every policy on test; returns rows and vectors.

    ``kw["val_folds"]`` (when set) shapes the search and the val fitness only; test rows use the fixed split.
    ``test_cache``: test summaries of the non-searched rows, shared between runs whose test env is the same."""
    import numpy as np

    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.cem import CEMPolicy, cem_search, val_fitness
    from tailmix.agents.evaluate import evaluate, summarize

    kw = dict(kw, loss=loss)
    rows: list[tuple[str, dict, np.ndarray]] = []  # label, test summary, action vector (None: not a vector)
    policies: list[tuple[str, object, str]] = []  # label, policy, loss
    none = make_baseline("none")
    policies.append((f"no synthetic, {loss.replace('_', ' ')}", none, loss))
    if loss == "ce":
        policies += [(f"no synthetic, {l.replace('_', ' ')}", none, l) for l in NO_SYN_LOSSES]
    policies += [(spec, make_baseline(spec), loss) for spec in fixed_specs()]
    if test_cache is not None and "middle" in args.inits:  # --val-folds: the 'middle' start as a row too
        policies.append((_middle(args), make_baseline(_middle(args)), loss))
    searches = {}
    for init in args.inits:
        t = time.time()
        res = cem_search(kw, generations=args.generations, population=args.population,
                         episodes_per_candidate=args.episodes, seed=args.cem_seed,
                         init_mean=None if init == "middle" else init, init_std=args.init_std,
                         min_std=args.min_std, progress=False)
        searches[init] = (res, time.time() - t)
        print(f"  [{loss}] CEM from {init}: {time.time() - t:.0f} s, val fitness of the mean "
              f"{res.history[0]['mean_fitness']:.4f} -> {res.history[-1]['mean_fitness']:.4f}; ratios "
              f"{np.round(res.mean_ratios, 2).tolist()}", flush=True)
        policies.append((f"CEM from {init}", CEMPolicy.from_result(res, name=f"cem-{init}"), loss))

    # Val fitness on episode seeds the search never drew (it draws seeds below 2**31 - 1 from its own RNG; these
    # are chosen apart from the test seeds too), for every vector policy, on the same footing.
    from tailmix.agents.cem import action_to_ratio, make_search_env, resolve_init_mean

    venv1 = make_search_env(1, kw)
    vectors = {}
    for label, policy, l in policies:
        if l != loss:
            continue
        vectors[label] = (policy.action if isinstance(policy, CEMPolicy) else resolve_init_mean(policy, venv1))
    labels = list(vectors)
    val_seeds = list(range(args.val_seed0, args.val_seed0 + args.val_seeds))
    fit = val_fitness(np.stack([vectors[k] for k in labels]), kw, val_seeds)
    val = {k: (float(fit[i].mean()), float(fit[i].std(ddof=1) / np.sqrt(fit.shape[1]))) for i, k in enumerate(labels)}

    test_kw = dict(kw, val_folds=1) if "val_folds" in kw else kw  # test: always the fixed split (see the docstring)
    for label, policy, l in policies:
        key = (label, l)
        if test_cache is not None and not label.startswith("CEM") and key in test_cache:
            s = test_cache[key]
        else:
            s = summarize(evaluate(policy, dict(test_kw, loss=l), seeds=seeds))
            if test_cache is not None and not label.startswith("CEM"):
                test_cache[key] = s
        ratios = action_to_ratio(vectors[label], kw["max_ratio"]) if label in vectors else None
        rows.append((label, s, ratios))
        print(f"  [{loss}] {label}: test {s['test_balanced_accuracy_mean']:.3f} ± {s['test_balanced_accuracy_std']:.3f}"
              + (f", val fitness {val[label][0]:.4f}" if label in val else ""), flush=True)
    return {"loss": loss, "rows": rows, "val": val, "val_seeds": val_seeds, "searches": searches}


def _table(dataset, blocks: list[dict], seeds: list[int], args, seconds: float) -> str:
    import numpy as np

    ref = "none" if args.reference is None else f"a reference head at ratio {args.reference:g}"
    fit_name = "balanced val accuracy" if args.reference is None else f"balanced val accuracy minus {ref}'s"
    lines = [f"# {dataset.name}: headroom of a per-class ratio vector (CEM on the val reward)", "",
             f"Train counts {dataset.train_counts.tolist()}, val {len(dataset.val_labels)}, test "
             f"{len(dataset.test_labels)}. Feature mode (cross-fitted encoder), {args.max_steps} steps per episode, "
             f"max ratio {args.max_ratio:g}, reward relative to {ref}, {args.replicas} reward replica(s). " + (
                 "Synthetic pools: the env's built-in augmentations (256 per class, unfiltered; `--augment-source`); "
                 f"encoder models trained {args.encoder_epochs} epochs."
                 if getattr(args, "augment_source", False) else
                 f"Bank: DDPM `{args.preset}` preset, filtered, {args.per_class} per class (the settings of "
                 "`benchmarks/results.py`)."), "",
             f"CEM (`agents.cem.cem_search`): {args.generations} generations x {args.population} candidates x "
             f"{args.episodes} episode(s) each, elite 25%, init std {args.init_std:g}, min std {args.min_std:g}, "
             f"seed {args.cem_seed}; fitness = final {fit_name} (val split only). Started from: "
             f"{', '.join(args.inits)} ('middle' = every ratio at max_ratio / 2). The vector played is the final "
             "CEM mean.", "",
             f"Test rows: test split, final classifier of each episode, mean ± std over seeds {seeds}. Val fitness: "
             f"mean ± s.e. over {args.val_seeds} held-out episode seeds ({args.val_seed0}..."
             f"{args.val_seed0 + args.val_seeds - 1}), never used by the search.", ""]
    for b in blocks:
        lines += [f"## Head loss: `{b['loss']}`", "",
                  "| policy | test bal. acc. | macro-F1 | tail recall | mean ratio | val fitness |",
                  "|---|---|---|---|---|---|"]
        for label, r, _ in b["rows"]:
            def pm(m):
                return f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"
            v = b["val"].get(label)
            vs = "" if v is None else f"{v[0]:+.4f} ± {v[1]:.4f}"
            lines.append(f"| {label} | {pm('test_balanced_accuracy')} | {pm('test_macro_f1')} | "
                         f"{pm('test_tail_recall')} | {r['mean_ratio_mean']:.2f} | {vs} |")
        test = {label: r["test_balanced_accuracy_mean"] for label, r, _ in b["rows"]}
        fixed = {k: test[k] for k in fixed_specs()}
        best_fixed = max(fixed, key=fixed.get)
        best_fixed_val = max(fixed_specs(), key=lambda k: b["val"][k][0])
        cems = [k for k in test if k.startswith("CEM")]
        val_pick = max(cems, key=lambda k: b["val"][k][0]) if cems else None
        lines += ["", "Found ratio vectors (class order as in the train counts):", ""]
        for label, _, ratios in b["rows"]:
            if label.startswith("CEM") and ratios is not None:
                res, secs = b["searches"][label.removeprefix("CEM from ")]
                lines.append(f"- {label}: `{np.round(ratios, 2).tolist()}` (search {secs:.0f} s; val fitness of "
                             f"the mean, search seeds: {res.history[0]['mean_fitness']:+.4f} at generation 0 -> "
                             f"{res.history[-1]['mean_fitness']:+.4f} at the last)")
        lines += [""]
        if val_pick:
            no_syn = {k: v for k, v in test.items() if k.startswith("no synthetic")}
            best_ns = max(no_syn, key=no_syn.get)
            lines += [f"Best fixed ratio on test: `{best_fixed}` {fixed[best_fixed]:.3f} (best fixed on val: "
                      f"`{best_fixed_val}`). CEM vector picked by held-out val fitness: `{val_pick}`, test "
                      f"{test[val_pick]:.3f} ({100 * (test[val_pick] - fixed[best_fixed]):+.1f} points vs the best "
                      f"fixed on test; {100 * (test[val_pick] - test[best_fixed_val]):+.1f} vs the best fixed on "
                      f"val). Best no-synthetic row: `{best_ns}` {no_syn[best_ns]:.3f} "
                      f"({100 * (test[val_pick] - no_syn[best_ns]):+.1f} points).", ""]
    lines += [f"Wall time {seconds:.0f} s on this machine (2 shared CPU cores, 1 torch thread).", "",
              *footer("headroom", getattr(args, "argv", None), getattr(args, "commit", None) or commit())]
    return "\n".join(lines)


def run_dataset(name: str, args) -> str:
    t0 = time.time()
    dataset, kw = build_env_kwargs(name, args)
    seeds = list(range(args.seeds))
    print(f"## {dataset!r}", flush=True)
    blocks = [run_loss(dataset, kw, loss, args, seeds) for loss in args.losses]
    return _table(dataset, blocks, seeds, args, time.time() - t0)


def _middle(args) -> str:
    """The baseline spec of CEM's 'middle' start (every ratio at max_ratio / 2)."""
    return f"constant:{args.max_ratio / 2:g}"


def _gains(b: dict, args) -> list[tuple]:
    """Per CEM vector of block ``b``: (label, start, val gain, test gain vs start, best fixed by val fitness, val
    gain, test gain vs it). Val gains are held-out-seed val fitness differences; test gains are test differences."""
    test = {label: r["test_balanced_accuracy_mean"] for label, r, _ in b["rows"]}
    val = {k: v[0] for k, v in b["val"].items()}
    fixed = [k for k in fixed_specs() + (_middle(args),) if k in val]
    best = max(fixed, key=val.get)
    out = []
    for label in test:
        if not label.startswith("CEM"):
            continue
        init = label.removeprefix("CEM from ")
        start = _middle(args) if init == "middle" else init
        if start not in val:
            start = None
        out.append((label, start,
                    None if start is None else val[label] - val[start],
                    None if start is None else test[label] - test[start],
                    best, val[label] - val[best], test[label] - test[best]))
    return out


def _augment_env_kwargs(name: str, args) -> tuple[object, dict]:
    """:func:`build_env_kwargs` with the env's built-in augmentation pools instead of the DDPM bank (no generator
    training or bank fill: ``--augment-source``, for a quick run)."""
    from tailmix.pipeline import Settings, load_data

    spec = name if name == "digits" else str(Path(os.environ["TAILMIX_DATA_DIR"]) / f"{name}.npz")
    cfg = Settings(dataset=spec, seed=0, cache_dir=args.cache_dir, max_steps=args.max_steps,
                   max_ratio=args.max_ratio)
    dataset = load_data(cfg)
    kw = dict(dataset=dataset, source=None, mode="feature", max_steps=args.max_steps, max_ratio=args.max_ratio,
              reward="accuracy", loss="ce", cache_dir=str(Path(args.cache_dir) / "encoders"), source_seed=0,
              empty_pool="zero", reward_replicas=args.replicas, reward_reference=args.reference,
              encoder_epochs=args.encoder_epochs)
    return dataset, kw


def run_folds(name: str, args) -> str:
    """The search once per ``--val-folds`` value; a val-gain vs test-gain summary, then each value's tables."""
    t0 = time.time()
    dataset, kw = _augment_env_kwargs(name, args) if args.augment_source else build_env_kwargs(name, args)
    seeds = list(range(args.seeds))
    cache: dict = {}
    runs = []
    for k in args.val_folds:
        print(f"## {dataset!r}, val_folds={k}", flush=True)
        tk = time.time()
        blocks = [run_loss(dataset, dict(kw, val_folds=k), loss, args, seeds, cache) for loss in args.losses]
        runs.append((k, blocks, _table(dataset, blocks, seeds, args, time.time() - tk)))
    pts = lambda x: "" if x is None else f"{100 * x:+.1f}"  # noqa: E731
    lines = [f"# {dataset.name}: does a val-optimal ratio vector transfer to test? (val_folds "
             f"{', '.join(map(str, args.val_folds))})", "",
             "The CEM search of `benchmarks/headroom.py`, run once per value of the env's `val_folds`: 1 = the fixed "
             "val split (the reward scores val); k >= 2 = the cross-validated reward (train + val pooled into k "
             "stratified folds, each episode trains on k - 1 and is rewarded on the held-out fold its seed picks). "
             "The search and the val fitness use that reward; every test number is measured in the same "
             "fixed-split env (trained on the train split, scored on test), so only what the search optimised "
             "differs between the rows.", "",
             f"Val gain: held-out-seed val fitness (mean over {args.val_seeds} episode seeds the search never used; "
             "under val_folds = k these seeds also draw the held-out folds) of the CEM vector minus that of the "
             "reference vector; test gain: test balanced accuracy (mean over seeds "
             f"{seeds}) minus the reference's. References: the vector the search started from, and the fixed ratio "
             "with the best val fitness (chosen on val, never on test). Points of balanced accuracy.", "",
             "| val_folds | head loss | CEM vector | start | val gain vs start | test gain vs start | best fixed "
             "(val) | val gain vs it | test gain vs it |", "|---|---|---|---|---|---|---|---|---|"]
    for k, blocks, _ in runs:
        for b in blocks:
            for label, start, vs, ts, best, vb, tb in _gains(b, args):
                lines.append(f"| {k} | {b['loss']} | {label} | {start or ''} | {pts(vs)} | {pts(ts)} | {best} | "
                             f"{pts(vb)} | {pts(tb)} |")
    from tailmix.envs.folds import CrossValidationFolds

    lines += ["", f"Real train counts of the fixed split: {dataset.train_counts.tolist()}."]
    for k in args.val_folds:
        if k > 1:  # pooling val changes the class balance the env trains on when val is not split like train
            f = CrossValidationFolds(dataset.train_labels, dataset.val_labels, dataset.num_classes, k, kw.get(
                "source_seed", 0))
            lines.append(f"val_folds={k}: an episode holding out fold 0 trains on {f.counts[0].tolist()}; held-out "
                         f"fold sizes {[len(h) for h in f.held_out]}.")
    lines += ["", f"Total wall time {time.time() - t0:.0f} s (2 shared CPU cores, 1 torch thread; includes fitting "
              "the pooled-split encoder when it was not cached).", "",
              *footer("headroom", getattr(args, "argv", None), getattr(args, "commit", None) or commit())]
    for k, _, text in runs:
        body = text.split("\n", 1)[1]  # drop the per-run title, keep its settings and tables
        body = body.split("\nCommand: ", 1)[0]
        lines += [f"## val_folds = {k}", body.replace("\n## Head loss", "\n### Head loss")]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=None,
                        help="digits, retinamnist, breastmnist (MedMNIST ones need TAILMIX_DATA_DIR)")
    parser.add_argument("--seeds", type=int, default=5, help="test seeds 0..n-1")
    parser.add_argument("--losses", nargs="*", default=["ce", "logit_adjustment"], help="head losses to search with")
    parser.add_argument("--inits", nargs="*", default=["inverse", "middle"],
                        help="CEM starting points: baseline specs (inverse, fill, constant:1, ...) or 'middle'")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=2, help="episodes (seeds) per CEM candidate")
    parser.add_argument("--init-std", type=float, default=0.5)
    parser.add_argument("--min-std", type=float, default=0.1)
    parser.add_argument("--cem-seed", type=int, default=0)
    parser.add_argument("--val-seeds", type=int, default=8, help="held-out episode seeds for the val fitness column")
    parser.add_argument("--val-seed0", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--max-ratio", type=float, default=8.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--augment-source", action="store_true",
                        help="synthetic pools from the env's built-in augmentations (no DDPM bank); --val-folds only")
    parser.add_argument("--encoder-epochs", type=int, default=30,
                        help="training epochs of each cross-fitted encoder model (--augment-source only)")
    parser.add_argument("--val-folds", type=int, nargs="+", default=None,
                        help="the env's val_folds for the search and the val fitness (1: fixed val split; k >= 2: "
                             "k cross-validation folds of train + val); given, it writes headroom-<ds>-folds.md "
                             "with each value's val gain beside its test gain")
    parser.add_argument("--reference", type=float, default=0.0,
                        help="reward relative to a reference head at this ratio (the committed results used 0); "
                             "a negative value turns it off")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.reference is not None and args.reference < 0:
        args.reference = None
    if args.full:
        args.generations = max(args.generations, 16)
        args.population = max(args.population, 24)
        args.episodes = max(args.episodes, 6)
        args.val_seeds = max(args.val_seeds, 32)
    import torch

    torch.set_num_threads(1)
    names = args.datasets or (["digits"] + (["retinamnist"] if os.environ.get("TAILMIX_DATA_DIR") else []))
    args.argv, args.commit = argv, commit()  # the command and the code that ran, taken at the start
    out = Path(args.out) if args.out else OUT
    folds = args.val_folds is not None
    if folds and any(k < 1 for k in args.val_folds):
        parser.error("--val-folds takes integers >= 1")
    for name in names:
        text = run_folds(name, args) if folds else run_dataset(name, args)
        path = out / f"headroom-{'digits-lt' if name == 'digits' else name}{'-folds' if folds else ''}.md"
        write_text(path, text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
