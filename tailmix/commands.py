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


def _train_policy(cfg, run: Path, kw: dict) -> Path:
    """Train with ``cfg``'s backend (``tailmix.agents.backends``) into ``run``; the saved policy's path."""
    from tailmix.agents.backends import get_backend

    backend = get_backend(cfg.backend)
    with phase(f"train {backend.label(cfg)}"):
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
    """Bank -> PPO sampler -> benchmark against every baseline, all in one run folder."""
    from tailmix.budget import apply_budget

    dataset = load_data(cfg)
    print(f"dataset: {dataset!r}", flush=True)
    check_dataset_unchanged(cfg, dataset)
    budget = apply_budget(cfg, dataset, fixed=fixed)  # sizes the flags left open, before anything trains
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "main", dataset)
    if not cfg.resume:  # a resumed run keeps the record of the budget that sized it
        _update_json(run / "run.json", budget=budget)
    saved = _train_policy(cfg, run, kw)
    bench = BenchmarkConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(BenchmarkConfig)
                               if hasattr(cfg, f.name)})
    cmd_benchmark(bench, extra={f"{cfg.algo}-{cfg.wrapper}": load_policy(str(saved), wrapper=cfg.wrapper)}, run=run,
                  kw=kw)
    return run


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
