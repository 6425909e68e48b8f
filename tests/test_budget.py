"""The main job's time budget (tailmix.budget): the sizing arithmetic, the measuring probe, and the CLI hook."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from tailmix import budget
from tailmix.budget import Costs, Shape, Sizes

#: Per-step costs of the order measured on a 2-core CPU for a 28 px RGB folder of ~800 images.
COSTS = Costs(generator_step=1.0, sample_image=0.2, encoder_image_epoch=0.002, agent_timestep=0.003)
SHAPE = Shape(num_classes=3, n_train=546, encoder_folds=5)
DEFAULTS = Sizes(generator_steps=1000, pretrain_steps=200, per_class=128, filter_tries=10, filter_epochs=30,
                 encoder_epochs=30, timesteps=20000)


def total(sizes: Sizes, costs: Costs = COSTS) -> float:
    return sum(budget.estimate(costs, sizes, SHAPE).values())


def test_estimate_adds_up_each_phase():
    est = budget.estimate(COSTS, DEFAULTS, SHAPE)
    assert est["generator"] == pytest.approx(1200 * 1.0)
    assert est["reference filter"] == pytest.approx(30 * 546 * 0.002)
    assert est["synthetic bank"] == pytest.approx(3 * (64 + 9 * 64) * 0.2)  # every filter try used
    assert est["encoder"] == pytest.approx(5 * 30 * 546 * 4 / 5 * 0.002)
    assert est["agent"] == pytest.approx(20000 * 0.003)
    unfiltered = budget.estimate(COSTS, DEFAULTS, SHAPE, filtered=False)
    assert "reference filter" not in unfiltered and unfiltered["synthetic bank"] == pytest.approx(3 * 128 * 0.2)


def test_bank_candidates_bound_the_filtered_fill():
    assert budget.bank_candidates(16, 2, 3) == 3 * (16 + 64)
    assert budget.bank_candidates(128, None, 3) == 3 * 128
    assert budget.bank_candidates(300, 3, 2) == 2 * 2 * (64 + 2 * 64)  # two shards of up to 256 per class


def test_defaults_that_fit_are_kept_as_they_are():
    sizes, warnings = budget.plan(COSTS, SHAPE, 3 * total(DEFAULTS), DEFAULTS)
    assert sizes == DEFAULTS and warnings == []


def test_a_budget_shrinks_sizes_to_fit_and_never_grows_them():
    for minutes in (10, 15, 30):
        sizes, warnings = budget.plan(COSTS, SHAPE, minutes * 60, DEFAULTS)
        assert warnings == []
        assert total(sizes) <= minutes * 60
        for name in budget.SIZE_FIELDS:
            assert getattr(sizes, name) <= getattr(DEFAULTS, name)
        assert sizes.generator_steps < DEFAULTS.generator_steps
        # pretraining shrinks with the conditional steps, at the defaults' 1:5 ratio
        assert sizes.pretrain_steps == round(200 * sizes.generator_steps / 1000)
    small, _ = budget.plan(COSTS, SHAPE, 600, DEFAULTS)
    large, _ = budget.plan(COSTS, SHAPE, 1800, DEFAULTS)
    assert small.generator_steps < large.generator_steps and small.per_class <= large.per_class


def test_explicit_sizes_win():
    fixed = frozenset({"generator_steps", "per_class", "timesteps"})
    sizes, _ = budget.plan(COSTS, SHAPE, 600, DEFAULTS, fixed=fixed)
    assert (sizes.generator_steps, sizes.per_class, sizes.timesteps) == (1000, 128, 20000)
    given = replace(DEFAULTS, generator_steps=50)
    sizes, _ = budget.plan(COSTS, SHAPE, 600, given, fixed=frozenset({"generator_steps"}))
    assert sizes.generator_steps == 50


def test_a_budget_too_small_gives_the_floors_and_a_warning():
    sizes, warnings = budget.plan(COSTS, SHAPE, 60, DEFAULTS)
    for name, floor in budget.FLOORS.items():
        assert getattr(sizes, name) == floor, name
    assert len(warnings) == 1 and "too small" in warnings[0] and "--budget-minutes" in warnings[0]


@pytest.mark.parametrize("bad", [0, -5, math.nan, math.inf, "10"])
def test_a_budget_must_be_positive_seconds(bad):
    with pytest.raises(ValueError, match="budget"):
        budget.plan(COSTS, SHAPE, bad, DEFAULTS)


def test_parse_minutes():
    for off in (None, 0, "0", "none", "None", "off"):
        assert budget.parse_minutes(off) is None
    assert budget.parse_minutes("12.5") == 12.5 and budget.parse_minutes(3) == 3.0
    for bad in ("ten", "-1", "nan"):
        with pytest.raises(ValueError, match="--budget-minutes"):
            budget.parse_minutes(bad)


def test_apply_budget_writes_the_sizes_into_the_config(tiny_rgb_dataset, capsys):
    from tailmix.train_agents import MainConfig

    cfg = MainConfig(dataset="tiny", per_class=128, generator_steps=None)
    record = budget.apply_budget(cfg, tiny_rgb_dataset, minutes=1, costs=COSTS, fixed={"timesteps"})
    out = capsys.readouterr().out
    assert "estimate on this machine" in out and "total" in out and "sizes:" in out
    assert record["applied"] and record["budget_minutes"] == 1
    assert cfg.per_class == record["sizes"]["per_class"] < 128
    assert cfg.timesteps == 20000  # given on the command line: kept
    assert set(record["estimate_seconds"]) >= {"generator", "synthetic bank", "encoder", "agent"}
    # no budget: the estimate is printed, nothing changes
    cfg = MainConfig(dataset="tiny")
    record = budget.apply_budget(cfg, tiny_rgb_dataset, minutes="none", costs=COSTS)
    assert record["changed"] == {} and cfg == MainConfig(dataset="tiny")


def test_the_budget_stays_off_where_it_does_not_apply(tiny_rgb_dataset):
    from tailmix.train_agents import MainConfig

    for cfg in (MainConfig(quick=True), MainConfig(generator="augment"), MainConfig(mode="pixel"),
                MainConfig(resume=True)):
        before = replace(cfg)
        record = budget.apply_budget(cfg, tiny_rgb_dataset, costs=COSTS)
        assert not record["applied"] and record["reason"] and cfg == before


@pytest.mark.slow
def test_measure_costs_times_real_steps_and_keeps_the_random_streams(tiny_rgb_dataset):
    import random

    import numpy as np
    import torch

    from tailmix.pipeline import Settings

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    costs = budget.measure_costs(Settings(dataset="tiny", preset="tiny"), tiny_rgb_dataset, sample_images=4,
                                 encoder_images=16)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    for name in ("generator_step", "sample_image", "encoder_image_epoch", "agent_timestep", "probe_seconds"):
        assert 0 < getattr(costs, name) < 60, name


def test_main_job_prints_the_estimate_and_stores_it_in_run_json(tmp_path, monkeypatch, capsys):
    """A tiny main job (digits, tiny DDPM, no filter) under a budget its measured costs cannot meet at the defaults:
    the encoder epochs it chooses reach run.json's config and the encoder, the estimate and the actual time of
    each phase are printed and stored."""
    from tailmix import train_agents

    slow_encoder = Costs(generator_step=0.01, sample_image=0.001, encoder_image_epoch=0.01, agent_timestep=0.001)
    monkeypatch.setattr(budget, "measure_costs", lambda cfg, dataset: slow_encoder)
    run = tmp_path / "run"
    train_agents.main(["--preset", "tiny", "--generator-steps", "4", "--per-class", "8", "--no-filter",
                       "--max-steps", "2", "--seeds", "1", "--timesteps", "64", "--checkpoint-every", "32",
                       "--budget-minutes", "2", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)])
    out = capsys.readouterr().out
    assert "estimate on this machine:" in out and "time per phase (estimate -> actual):" in out
    meta = json.loads((run / "run.json").read_text())
    b = meta["budget"]
    assert b["applied"] and b["budget_minutes"] == 2
    assert b["changed"] == {"encoder_epochs": meta["config"]["encoder_epochs"]}
    assert meta["config"]["encoder_epochs"] < 30 and meta["config"]["generator_steps"] == 4  # given: kept
    assert set(b["actual_seconds"]) >= {"generator", "synthetic bank", "encoder", "agent", "other"}
    assert b["actual_total_seconds"] > 0 and b["estimate_total_seconds"] > 0


def test_a_bad_budget_is_a_one_line_error(capsys):
    from tailmix import train_agents

    with pytest.raises(SystemExit) as err:
        train_agents.main(["--budget-minutes", "soon", "--run-dir", "/nonexistent/never"])
    assert err.value.code == 2 and "--budget-minutes" in capsys.readouterr().err


def test_the_budget_belongs_to_the_main_job(capsys):
    from tailmix import train_agents

    with pytest.raises(SystemExit):
        train_agents.main(["generate", "--budget-minutes", "5", "--run-dir", "/nonexistent/never"])
    assert "sizes the main job" in capsys.readouterr().err


def test_huge_and_tiny_budgets_are_refused_early_or_shown_as_given():
    """Issue 26 item 13: 1e308 minutes failed after measuring ("inf" seconds); 0.05 min was shown as "0.1 min"."""
    for bad in ("1e308", str(budget.MAX_MINUTES + 1), "inf"):
        with pytest.raises(ValueError, match=r"--budget-minutes must be a number of minutes in \[0, 10080\]"):
            budget.parse_minutes(bad)
    assert budget.parse_minutes(str(budget.MAX_MINUTES)) == budget.MAX_MINUTES
    _, warnings = budget.plan(COSTS, SHAPE, 0.05 * 60, DEFAULTS)
    assert "the budget of 0.05 min is too small" in warnings[0]


def test_the_bank_is_costed_at_the_filters_acceptance():
    # every candidate kept: the quota, in batches of at most 64
    assert budget.expected_candidates(64, 2, 1.0) == 64
    assert budget.expected_candidates(128, 10, 1.0) == 128
    # none kept: every try used, as the first (worst-case) estimate assumes
    assert budget.expected_candidates(16, 2, 0.0) == budget.bank_candidates(16, 2, 1)
    assert budget.expected_candidates(128, 10, 0.0) == budget.bank_candidates(128, 10, 1)
    # a tail class of the stand-in folder (about 1% kept): both tries of 16 + 64
    assert budget.expected_candidates(16, 2, 0.01) == 80
    assert budget.expected_candidates(64, 10, 0.5) == 128  # half of 64 kept, then 64 asked for the other 32


def test_the_main_jobs_search_and_evaluation_are_estimated():
    """The learned methods and the evaluation episodes of the main job enter the estimate (issue 27 item 4: the
    agent phase was estimated at 6 s for 27 s when only one PPO run was counted)."""
    from tailmix.configs import MainConfig

    cfg = MainConfig(seeds=5)
    shape = budget.main_shape(cfg, SimpleDataset(), SHAPE)
    assert (shape.shared_methods, shape.central_methods, shape.cem_generations) == (1, 1, 10)
    assert shape.eval_episodes == (4 + 64 + 3) * 5  # the loss pick, the fixed family of two sources, 3 methods
    costs = replace(COSTS, central_timestep=0.01, cem_generation=0.5, eval_episode=0.05)
    est = budget.estimate(costs, DEFAULTS, shape)
    assert est["agent"] == pytest.approx(20000 * 0.003 + 20000 // 3 * 0.01)
    assert est["search"] == pytest.approx(10 * 0.5) and est["evaluation"] == pytest.approx(355 * 0.05)
    # a search and evaluation with no size to shrink come off the top: the sizes shrink more than without them
    lean, _ = budget.plan(COSTS, SHAPE, 600, DEFAULTS)
    full, _ = budget.plan(costs, shape, 600, DEFAULTS)
    assert full.generator_steps <= lean.generator_steps


class SimpleDataset:
    num_classes = 3
