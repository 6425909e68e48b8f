"""The evaluation protocol and the benchmark tables."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from tailmix.agents.baselines import BASELINES, ConstantRatio, FillToHead, NoSynthetic, make_baseline
from tailmix.agents.evaluate import METRICS, benchmark, evaluate, make_eval_env, run_episode, summarize
from tests.agents.fake_env import FakeRatioEnv
from tests.agents.helpers import tiny_env_kwargs


def test_run_episode_on_the_fake_env_reports_final_test_metrics():
    env = FakeRatioEnv(max_steps=3, eval_split="test", target=2.0, noise=0.0)
    row = run_episode(env, ConstantRatio(2.0), seed=0)
    assert row["steps"] == 3 and row["seed"] == 0
    assert row["test_balanced_accuracy"] == pytest.approx(1.0)  # ratio at the fake's optimum
    assert row["test_macro_f1"] == pytest.approx(0.9)
    np.testing.assert_allclose(row["ratios"], [2.0] * 3, atol=1e-5)
    assert row["mean_ratio"] == pytest.approx(2.0, abs=1e-5)
    assert row["return"] == pytest.approx(3.0)
    worse = run_episode(env, FillToHead(), seed=0)
    assert worse["test_balanced_accuracy"] < 1.0
    assert worse["test_tail_recall"] == pytest.approx(worse["test_recall"][2])  # class 2 has the fewest images


def test_run_episode_needs_the_test_split():
    with pytest.raises(ValueError, match="eval_split"):
        run_episode(FakeRatioEnv(eval_split=None), NoSynthetic(), seed=0)
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    with pytest.raises(ValueError, match="eval_split"):
        run_episode(SyntheticRatioEnv(**tiny_env_kwargs()), NoSynthetic(), seed=0)


def test_run_episode_real_env_fresh_classifier_per_seed():
    env = make_eval_env(tiny_env_kwargs())
    a = run_episode(env, make_baseline("fill"), seed=0)
    run_episode(env, make_baseline("random"), seed=5)  # whatever ran before must not leak into the next episode
    b = run_episode(env, make_baseline("fill"), seed=0)
    assert a == b
    assert a["steps"] == 3 and len(a["ratios"]) == 3 and len(a["test_recall"]) == 3
    for m in METRICS:
        assert math.isfinite(a[m]), m
    np.testing.assert_allclose(a["ratios"], [0, 24 / 10 - 1, 5], atol=1e-5)  # counts 24/10/4: fill -> 0, 1.4, 5


def test_summarize_mean_and_sample_std():
    rows = [{"policy": "p", **{m: v for m in METRICS}} for v in (0.2, 0.4, 0.6)]
    rows[0]["test_few_shot"] = float("nan")  # an empty group is ignored
    s = summarize(rows)
    assert s["policy"] == "p" and s["n"] == 3
    assert s["test_balanced_accuracy_mean"] == pytest.approx(0.4)
    assert s["test_balanced_accuracy_std"] == pytest.approx(0.2)
    assert s["test_few_shot_mean"] == pytest.approx(0.5)
    assert summarize(rows[:1])["test_macro_f1_std"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_evaluate_rows_per_seed():
    rows = evaluate(make_baseline("constant:1"), tiny_env_kwargs(), seeds=(0, 1))
    assert [r["seed"] for r in rows] == [0, 1] and {r["policy"] for r in rows} == {"constant:1"}


def test_benchmark_tables_list_every_policy_and_repeat_exactly(tmp_path):
    policies = {spec: make_baseline(spec) for spec in BASELINES}
    outputs = []
    for run in ("a", "b"):
        rows = benchmark(policies, tiny_env_kwargs(), seeds=(0, 1), out_dir=tmp_path / run, progress=False)
        assert len(rows) == len(policies) * 2
        files = {name: (tmp_path / run / name) for name in ("results.csv", "results.md", "results.png")}
        assert all(p.exists() and p.stat().st_size > 0 for p in files.values())
        assert not list((tmp_path / run).glob(".tmp*"))  # atomic writes leave no temp files
        outputs.append((files["results.csv"].read_text(), files["results.md"].read_text()))
    assert outputs[0] == outputs[1]  # same seeds -> identical tables
    md = outputs[0][1].splitlines()
    table = [line for line in md if line.startswith("| ") and not line.startswith("| policy")]
    assert [line.split("|")[1].strip() for line in table] == list(BASELINES)
    for line in table:
        for cell in line.split("|")[2:-1]:
            mean, std = (float(x) for x in cell.split("±"))
            assert math.isfinite(mean) and math.isfinite(std)
    with open(tmp_path / "a" / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 14 and {"ratio_c0", "test_recall_c2", "test_balanced_accuracy"} <= set(csv_rows[0])
    # the policies do differ: no synthetic vs filling the tail
    by = {r["policy"]: r for r in csv_rows if r["seed"] == "0"}
    assert float(by["none"]["mean_ratio"]) == 0.0 and float(by["fill"]["ratio_c2"]) == pytest.approx(5.0)


def test_benchmark_errors():
    with pytest.raises(ValueError, match="policies"):
        benchmark({}, tiny_env_kwargs(), seeds=(0,))
    with pytest.raises(ValueError, match="seeds"):
        benchmark({"none": NoSynthetic()}, tiny_env_kwargs(), seeds=())
