"""benchmarks/leaderboard.py: the table's picks and shares, the bootstrap, and the test-scored CEM ceiling hook."""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from tailmix.agents import cem
from tailmix.agents.evaluate import evaluate
from tests.agents.helpers import tiny_env_kwargs


def _rows(test, val, ratio=1.0):
    return [{"test_balanced_accuracy": t, "val_balanced_accuracy": v, "mean_ratio": ratio} for t, v in zip(test, val)]


def test_table_picks_on_val_and_shares_against_the_ceiling():
    from benchmarks.leaderboard import table

    rows = {
        "no synthetic, ce": ("nosyn", _rows([0.5, 0.5, 0.5], [0.5] * 3), "n"),
        "no synthetic, logit_adjustment": ("nosyn-lt", _rows([0.6] * 3, [0.6] * 3), "n"),
        # the best on test is NOT the best on val: the table must pick "fill" (val), not "constant:1" (test)
        "constant:1": ("static", _rows([0.9, 0.9, 0.9], [0.6] * 3), "f"),
        "fill": ("static", _rows([0.7, 0.7, 0.7], [0.8] * 3), "f"),
        "decay:fill": ("schedule", _rows([0.65] * 3, [0.7] * 3), "s"),
        "ppo": ("learned", _rows([0.75, 0.75, 0.75], [0.8] * 3), "l"),
        "CEILING: x": ("ceiling", _rows([0.8, 0.8, 0.8], [0.8] * 3), "c"),
    }
    lines, s = table("t", rows)
    assert s["best_fixed"] == "fill" and s["ceiling"] == "CEILING: x"
    assert s["share"]["ppo"] == pytest.approx(0.5)
    text = "\n".join(lines)
    assert "CEILING (scored on test; not a method)" in text
    assert "best fixed schedule (val)" in text and "no synthetic, best long-tail loss (val)" in text
    ppo = next(line for line in lines if line.startswith("| ppo |"))
    assert "+0.050 [+0.050, +0.050]" in ppo and "50%" in ppo


def test_bootstrap_interval_brackets_the_mean_and_needs_two_seeds():
    from benchmarks.leaderboard import bootstrap_ci

    lo, hi = bootstrap_ci([0.01, 0.03, 0.02, 0.05])
    assert lo <= 0.0275 <= hi and lo >= 0.01 and hi <= 0.05
    assert np.isnan(bootstrap_ci([0.1])[0])


def test_test_fitness_is_the_test_score_evaluate_reports():
    """The ceiling's fitness is exactly the final test balanced accuracy of the same action and seed."""
    kw = tiny_env_kwargs(encoder_epochs=10)  # a head that learns (val balanced accuracy 1 on this tiny set)
    ds = kw["dataset"]
    # test labels shifted by one class: a test score far from the val score, so reading the wrong split shows
    kw["dataset"] = dataclasses.replace(ds, test_labels=(ds.test_labels + 1) % ds.num_classes)
    action = np.array([[-1.0, 0.0, 0.5]], np.float32)
    venv = cem.make_search_env(2, kw, fitness_split="test")
    fit = cem.evaluate_actions(venv, action, [0, 1], fitness_split="test")
    rows = evaluate(cem.CEMPolicy(action[0], venv.core.config.max_ratio), kw, seeds=(0, 1))
    assert np.allclose(fit[0], [r["test_balanced_accuracy"] for r in rows], atol=1e-6)
    assert np.allclose(cem.evaluate_actions(venv, action, [0, 1])[0], [r["val_balanced_accuracy"] for r in rows])
    assert fit[0].max() < 0.5 < min(r["val_balanced_accuracy"] for r in rows)
    with pytest.raises(ValueError, match="fitness_split"):
        cem.make_search_env(1, kw, fitness_split="train")


@pytest.mark.slow
def test_run_task_end_to_end_on_a_tiny_dataset(monkeypatch):
    import benchmarks.leaderboard as lb

    monkeypatch.setattr(lb, "task_kwargs", lambda task, args: tiny_env_kwargs())
    args = argparse.Namespace(cem_generations=1, cem_population=2, cem_episodes=1, cem_seed=0, cem_knots=2,
                              ceiling_generations=1, ceiling_population=2, ceiling_episodes=1,
                              no_schedules=False, learned=["ppo:shared:plain:64"], cache_dir="/nonexistent",
                              train=False, timesteps=64)
    lines, s = lb.run_task("tiny", args, [0, 1])
    text = "\n".join(lines)
    assert "CEILING: CEM static scored on TEST" in s["test"] and "CEM schedule (val)" in s["test"]
    assert "skipped: no model cached" in text  # an SB3 row without a cached model and no --train


def test_table_keeps_given_picks_when_re_scoring():
    """A re-scoring on fresh seeds keeps the best fixed row and ceiling picked before, even if others now lead."""
    from benchmarks.leaderboard import table

    rows = {
        "no synthetic, ce": ("nosyn", _rows([0.5] * 3, [0.5] * 3), "n"),
        "fill": ("static", _rows([0.7] * 3, [0.8] * 3), "f"),
        "constant:1": ("static", _rows([0.72] * 3, [0.9] * 3), "f"),  # best on val here, but not the given pick
        "ppo": ("learned", _rows([0.75] * 3, [0.8] * 3), "l"),
        "CEILING: a": ("ceiling", _rows([0.8] * 3, [0.8] * 3), "c"),
        "CEILING: b": ("ceiling", _rows([0.9] * 3, [0.8] * 3), "c"),
    }
    _, s = table("t", rows, best_fixed="fill", ceiling="CEILING: a")
    assert s["best_fixed"] == "fill" and s["ceiling"] == "CEILING: a"
    assert s["share"]["ppo"] == pytest.approx(0.5)
    _, s = table("t", rows)
    assert s["best_fixed"] == "constant:1" and s["ceiling"] == "CEILING: b"


def test_val_folds_names_its_own_model_folder(tmp_path):
    """A fold-reward env is another task: its SB3 row must never load a model trained on the fixed split."""
    from benchmarks.leaderboard import sb3_policy

    args = argparse.Namespace(cache_dir=str(tmp_path), train=False, timesteps=64, val_folds=5)
    pol, how = sb3_policy("retinamnist", "ppo:shared:plain:64", {}, args)
    assert pol is None and "retinamnist-ppo-shared-plain-64-folds5-seed0" in how
    args.val_folds = 1
    assert "retinamnist-ppo-shared-plain-64-seed0" in sb3_policy("retinamnist", "ppo:shared:plain:64", {}, args)[1]


def test_training_seed_suffix_names_its_own_model_folder(tmp_path):
    """``spec@k`` is training seed k: its own model folder, never seed 0's; a malformed spec is refused."""
    from benchmarks.leaderboard import sb3_policy

    args = argparse.Namespace(cache_dir=str(tmp_path), train=False, timesteps=64, val_folds=1)
    how = sb3_policy("retinamnist", "ppo:central:ref0:64@2", {}, args)[1]
    assert "retinamnist-ppo-central-ref0-64-seed2" in how and "seed0" not in how
    for bad in ("ppo:central:ref0:64@", "ppo:central:ref0:64@x", "ppo:central:ref0:abc", "dqn:central:ref0"):
        with pytest.raises(ValueError, match="algo:wrapper:variant"):
            sb3_policy("retinamnist", bad, {}, args)


def test_train_env_kwargs_name_their_own_model_folder(tmp_path):
    """A model trained on another training env (e.g. a 4-head reward) is never loaded for the plain spec, and the
    known-answer task names the folder as benchmarks/known_answer.py does; a non-env key is refused."""
    from benchmarks.leaderboard import sb3_policy

    args = argparse.Namespace(cache_dir=str(tmp_path), train=False, timesteps=64, val_folds=5,
                              train_env_kwargs=["reward_replicas=4"])
    how = sb3_policy("retinamnist", "ppo:central:ref0:64@1", {}, args)[1]
    assert "retinamnist-ppo-central-ref0-64-folds5-env-reward_replicas4-seed1" in how
    args.val_folds = 1
    assert "known-answer-agents/ppo-shared-difference-64-env-reward_replicas4-seed0" in \
        sb3_policy("known-answer", "ppo:shared:difference:64", {}, args)[1]
    args.train_env_kwargs = ["not_a_setting=1"]
    with pytest.raises(ValueError, match="not an env setting"):
        sb3_policy("retinamnist", "ppo:central:ref0:64", {}, args)


@pytest.mark.slow
def test_loss_rows_and_fresh_seeds_end_to_end(monkeypatch):
    import benchmarks.leaderboard as lb

    monkeypatch.setattr(lb, "task_kwargs", lambda task, args: tiny_env_kwargs())
    args = argparse.Namespace(cem_generations=1, cem_population=2, cem_episodes=1, cem_seed=0, cem_knots=2,
                              ceiling_generations=1, ceiling_population=2, ceiling_episodes=1,
                              no_schedules=True, learned=[], cache_dir="/nonexistent", train=False, timesteps=64,
                              loss_rows=True, fresh_seeds=2, val_folds=1)
    lines, s = lb.run_task("tiny", args, [0, 1])
    text = "\n".join(lines)
    lt = s["loss_rows"]
    assert lt["loss"] in ("logit_adjustment", "balanced_softmax", "class_balanced")
    assert lt["best_fixed"].endswith(f"[loss {lt['loss']}]") and lt["ceiling"].endswith(f"[loss {lt['loss']}]")
    assert f"CEM static (val) [loss {lt['loss']}]" in lt["share"]
    # the fresh re-scoring keeps the picks and plays other episodes
    assert s["fresh"]["best_fixed"] == s["best_fixed"] and s["fresh"]["ceiling"] == s["ceiling"]
    assert "fresh episode seeds 1000-1001" in text and lt["fresh"]["ceiling"] == lt["ceiling"]


def test_name_suffix_writes_beside_the_table_not_over_it(monkeypatch, tmp_path):
    """--name-suffix puts a variant run (e.g. a larger CEM budget) in its own file; a bad suffix is refused."""
    import benchmarks.leaderboard as lb

    monkeypatch.setattr(lb, "run_task", lambda task, args, seeds: (["| row |"], {"seconds": 0.0}))
    (tmp_path / "leaderboard-digits.md").write_text("old table")
    assert lb.main(["--tasks", "digits", "--seeds", "1", "--out", str(tmp_path), "--name-suffix=-cem-large"]) == 0
    assert (tmp_path / "leaderboard-digits.md").read_text() == "old table"
    text = (tmp_path / "leaderboard-digits-cem-large.md").read_text()
    assert "--name-suffix=-cem-large" in text
    with pytest.raises(ValueError, match="--name-suffix"):
        lb.main(["--tasks", "digits", "--out", str(tmp_path), "--name-suffix=../x"])
