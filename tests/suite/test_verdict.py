"""The main job's verdict: picked on the reward (never test), compared on test with intervals, one sentence."""
import csv
import json

import pytest

from tailmix.suite.verdict import verdict, write_verdict

CLASSES = ("a", "b")


def write_results(run, table):
    """``table``: {policy: (val per seed, test per seed, recall per class)}."""
    run.mkdir(parents=True, exist_ok=True)
    with (run / "results.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["policy", "seed", "test_balanced_accuracy", "val_balanced_accuracy",
                    *[f"ratio_{c}" for c in CLASSES], *[f"test_recall_{c}" for c in CLASSES]])
        for policy, (vals, tests, recall, ratios) in table.items():
            for seed, (v, t) in enumerate(zip(vals, tests)):
                w.writerow([policy, seed, t, v, *ratios, *recall])


def test_no_synthetic_is_recommended_when_nothing_beats_it_on_the_reward(tmp_path):
    write_results(tmp_path, {
        "none": ([0.80, 0.80, 0.80], [0.70, 0.70, 0.70], [0.7, 0.7], [0, 0]),
        "fill": ([0.79, 0.78, 0.79], [0.90, 0.90, 0.90], [0.9, 0.9], [3, 0]),  # better on TEST only
        "random": ([0.99, 0.99, 0.99], [0.99, 0.99, 0.99], [1, 1], [1, 1]),  # never a candidate
    })
    v = verdict(tmp_path, [10, 10])
    assert v["recommended"] == "none" and v["best_fixed"] == "fill"
    assert v["sentence"].startswith("Synthetic data does not help") and "Use no synthetic data" in v["sentence"]


def test_the_pick_reads_the_reward_and_the_interval_covers_test_images(tmp_path):
    write_results(tmp_path, {
        "none": ([0.70] * 4, [0.60] * 4, [0.6, 0.6], [0, 0]),
        "fill": ([0.75] * 4, [0.62] * 4, [0.62, 0.62], [2, 0]),
        "ppo-shared": ([0.80] * 4, [0.61] * 4, [0.61, 0.61], [1, 4]),
    })
    v = verdict(tmp_path, [5, 5], learned={"ppo-shared": "ppo:run/model.zip"})
    assert v["recommended"] == "ppo-shared" and v["kind"] == "learned" and v["policy"] == "ppo:run/model.zip"
    d, lo, hi = v["vs_none"]
    assert d == pytest.approx(0.01) and lo < 0 < hi  # 10 test images: a point is within the noise
    assert "within the noise" in v["sentence"] and "`fill`" in v["sentence"]
    assert v["ratios"] == {"a": 1.0, "b": 4.0}
    written = write_verdict(tmp_path, v)
    assert {p.name for p in written} == {"verdict.md", "verdict.json", "recommended_policy.json", "ratios.png"}
    assert json.loads((tmp_path / "recommended_policy.json").read_text())["policy"] == "ppo:run/model.zip"
    # with many test images the same gain is resolved
    v = verdict(tmp_path, [5000, 5000], learned={"ppo-shared": "ppo:run/model.zip"})
    assert v["vs_none"][1] > 0 and "holds on the test split" in v["sentence"]


def test_a_reward_pick_that_loses_on_test_is_called_unproven(tmp_path):
    write_results(tmp_path, {"none": ([0.70] * 3, [0.70] * 3, [0.7, 0.7], [0, 0]),
                             "fill": ([0.75] * 3, [0.60] * 3, [0.6, 0.6], [2, 0])})
    v = verdict(tmp_path, [50, 50])
    assert v["recommended"] == "fill" and v["vs_none"][0] < 0 and "unproven" in v["sentence"]


def test_ties_go_to_no_synthetic_data_and_a_missing_none_row_is_refused(tmp_path):
    write_results(tmp_path, {"none": ([0.7] * 2, [0.6] * 2, [0.6, 0.6], [0, 0]),
                             "fill": ([0.7] * 2, [0.9] * 2, [0.9, 0.9], [2, 0])})
    assert verdict(tmp_path, [10, 10])["recommended"] == "none"
    write_results(tmp_path / "x", {"fill": ([0.7] * 2, [0.9] * 2, [0.9, 0.9], [2, 0])})
    with pytest.raises(ValueError, match="none"):
        verdict(tmp_path / "x", [10, 10])
    with pytest.raises(ValueError, match="results.csv"):
        verdict(tmp_path / "missing", [10, 10])
