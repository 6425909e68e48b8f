"""The commands' bodies (``generate``, ``train``, ``evaluate``, ``benchmark`` and the main job): each loads the
data, prepares the env settings (``tailmix.pipeline``), creates its run folder (``tailmix.runs``) and does its work.
The CLI (``tailmix.train_agents``) resolves and checks the settings first, then calls one of them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from tailmix.configs import BenchmarkConfig, EvaluateConfig, GenerateConfig, MainConfig, TrainConfig
from tailmix.pipeline import (ensure_bank, generator_kinds, load_data, num_sources, one_kind, phase,
                              prepared_env_kwargs)
from tailmix.policies import (_check_policy_fits, _learned_label, _model_path, benchmark_specs, load_policies,
                              load_policy)
from tailmix.runs import (_atomic_write_text, _read_json, _update_json, _write_json, check_dataset_unchanged,
                          prepare_run_dir)


# -- commands ---------------------------------------------------------------------------------
def cmd_generate(cfg: GenerateConfig) -> Path:
    from tailmix.generators.quality import format_quality_report, quality_report, save_sample_grid

    dataset = load_data(cfg)
    run = prepare_run_dir(cfg, "generate", dataset)
    kinds = generator_kinds(cfg)
    for kind in kinds[1:]:  # several generators: every bank is filled; the report below is the first one's
        ensure_bank(one_kind(cfg, kind), dataset)
    bank = ensure_bank(one_kind(cfg, kinds[0]), dataset)
    report = quality_report(bank, dataset)
    text = format_quality_report(report, dataset.class_names)
    print(text)
    _atomic_write_text(run / "quality.txt", text + "\n")
    _write_json(run / "quality.json", report)
    save_sample_grid(bank, run / "samples.png", class_names=dataset.class_names)
    from tailmix.generators.memorisation import bank_leakage_report, format_bank_leakage

    leak = bank_leakage_report(bank, dataset, threshold=0.05)  # exact copies of any split, near-copies of train
    leak_text = format_bank_leakage(leak, dataset.class_names)
    print(leak_text)
    _atomic_write_text(run / "leakage.txt", leak_text + "\n")
    _write_json(run / "leakage.json", leak)
    _write_json(run / "bank.json", {"path": str(bank.path), "counts": bank.counts().tolist()})
    return run


def _train_policy(cfg, run: Path, kw: dict, label: str | None = None) -> Path:
    """Train with ``cfg``'s backend (``tailmix.agents.backends``) into ``run``; the saved policy's path."""
    from tailmix.agents.backends import get_backend

    backend = get_backend(cfg.backend)
    with phase(f"train {label or backend.label(cfg)}"):
        return backend.train(cfg, kw, run)


def cmd_train(cfg: TrainConfig) -> Path:
    dataset = load_data(cfg)
    check_dataset_unchanged(cfg, dataset)
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "train", dataset)
    saved = _train_policy(cfg, run, kw)
    print(f"{cfg.backend} policy: {saved} (evaluate it with `python train_agents.py evaluate --policy {saved}`)")
    return run


def cmd_evaluate(cfg: EvaluateConfig) -> Path:
    from tailmix.agents.evaluate import benchmark

    policy = load_policy(cfg.policy)
    dataset = load_data(cfg)
    _check_policy_fits(policy, dataset, cfg.policy, num_sources(cfg))
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "evaluate", dataset)
    label = cfg.policy if _model_path(cfg.policy) is None else _learned_label(cfg.policy)
    with phase(f"evaluate {label} x {cfg.seeds} seeds on the test split"):
        benchmark({label: policy}, kw, seeds=list(range(cfg.seeds)), out_dir=run)
    print((run / "results.md").read_text())
    return run


def cmd_benchmark(cfg: BenchmarkConfig, extra: dict | None = None, run: Path | None = None,
                  kw: dict | None = None) -> Path:
    from tailmix.agents.evaluate import benchmark

    policies = load_policies(benchmark_specs(cfg), learned=cfg.learned)
    policies.update(extra or {})
    if run is None:
        dataset = load_data(cfg)
        for label, policy in policies.items():
            _check_policy_fits(policy, dataset, label, num_sources(cfg))
        kw = prepared_env_kwargs(cfg, dataset)
        run = prepare_run_dir(cfg, "benchmark", dataset)
    with phase(f"benchmark: {len(policies)} policies x {cfg.seeds} seeds on the test split"):
        benchmark(policies, kw, seeds=list(range(cfg.seeds)), out_dir=run)
    print((run / "results.md").read_text())
    return run


def cmd_main(cfg: MainConfig, fixed: frozenset[str] = frozenset()) -> Path:
    """Bank(s) -> the loss and the fixed family picked on the reward -> the learned methods (CEM schedule, PPO
    central, PPO shared) -> every policy on the test split, all in one run folder (``tailmix.mainjob``)."""
    import numpy as np

    from tailmix import mainjob
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import benchmark, write_results
    from tailmix.budget import apply_budget, bank_estimate_before

    dataset = load_data(cfg)
    print(f"dataset: {dataset!r}", flush=True)
    check_dataset_unchanged(cfg, dataset)
    if not cfg.val_folds:  # 0: decided from the data (a resumed run reads it from its run.json)
        cfg.val_folds, why = mainjob.decide_val_folds(dataset)
        print(why, flush=True)
    methods = cfg.methods = mainjob.main_methods(cfg, fixed)  # recorded in run.json; the budget sizes for them
    budget = apply_budget(cfg, dataset, fixed=fixed)  # sizes the flags left open, before anything trains
    budget = bank_estimate_before(cfg, dataset, budget)  # the fill costed at the filter's measured acceptance
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "main", dataset)
    seeds = list(range(cfg.seeds))
    if cfg.loss == "auto":
        with phase("evaluate: the loss on the reward, no synthetic data"):
            cfg.loss, _ = mainjob.pick_loss(kw, seeds)
    kw["loss"] = cfg.loss
    if not cfg.resume:  # a resumed run keeps the record of the budget that sized it
        _update_json(run / "run.json", budget=budget, loss=cfg.loss, val_folds=cfg.val_folds)
    names = _source_names(kw)
    family = mainjob.fixed_family(names)
    with phase(f"evaluate: fixed family, {len(family)} policies x {cfg.seeds} seeds"):
        rows = benchmark({s: make_baseline(s) for s in family}, kw, seeds=seeds, progress=False)
    policies, learned = {}, {}
    own = f"{cfg.algo}-{cfg.wrapper}"
    for method in methods:
        kind, wrapper = mainjob.parse_method(method)
        folder = run if method == own else run / mainjob.AGENTS / method
        if kind == "cem":
            start = mainjob.best_on_reward(rows, family, schedule=method == "cem-schedule")
            with phase(f"search {method} (CEM from {start})"):
                policies[method], learned[method] = mainjob.run_cem(kw, method, init=start, seed=cfg.seed,
                                                                    folder=folder)
            continue
        mcfg = dataclasses.replace(cfg, algo=kind, wrapper=wrapper,
                                   timesteps=mainjob.sb3_timesteps(method, cfg.timesteps, dataset.num_classes),
                                   resume=cfg.resume and method == own)
        folder.mkdir(parents=True, exist_ok=True)
        if cfg.resume and method != own and (folder / "model.zip").is_file():  # trained before the interruption
            saved = folder / "model.zip"
        else:
            saved = _train_policy(mcfg, folder, dict(kw, **mainjob.train_env(method, len(names))), label=method)
        policies[method] = load_policy(str(saved), wrapper=wrapper)
        policies[method].name = method
        learned[method] = f"{kind}:{folder / 'model.zip'}"
    _update_json(run / "run.json", learned=learned)
    with phase(f"benchmark: {len(policies)} learned policies x {cfg.seeds} seeds on the test split"):
        rows += benchmark(policies, kw, seeds=seeds, progress=False)
        write_results(rows, seeds, run, [str(n) for n in dataset.class_names])
    print(_short_table(rows, family, list(policies)), flush=True)
    return run


def _source_names(kw: dict) -> list[str]:
    from tailmix.suite.runner import source_names

    return source_names(kw)


def _short_table(rows: list[dict], family: list[str], learned: list[str]) -> str:
    """no synthetic data, the fixed family's best on the reward, and each learned method (val / test means)."""
    import numpy as np

    from tailmix import mainjob

    def line(label, what):
        mine = [r for r in rows if r["policy"] == label]
        return (f"  {what + label:<42} reward {100 * np.mean([r['val_balanced_accuracy'] for r in mine]):5.1f}  "
                f"test {100 * np.mean([r['test_balanced_accuracy'] for r in mine]):5.1f}")

    best = mainjob.best_on_reward(rows, [f for f in family if f != "none"])
    out = ["results (full table: results.md):", line("none", "no synthetic: "), line(best, "best fixed: ")]
    out += [line(m, "learned: ") for m in learned]
    return "\n".join(out)


def budget_report(run: Path, total: float) -> None:
    """Print each phase's estimate beside its actual time, and store both in ``run.json`` (main job)."""
    from tailmix.budget import actual_report

    meta = _read_json(run / "run.json") or {}
    budget = meta.get("budget")
    if not budget or not budget.get("applied"):
        return
    text, meta["budget"] = actual_report(budget, phase.timings, total)
    print(text)
    _write_json(run / "run.json", meta)
