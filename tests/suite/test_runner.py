"""The protocol's runner end to end on a tiny task: records, resume, the ceiling's order, report, bench."""
import json

import numpy as np
import pytest

from tailmix.suite import protocol as P
from tailmix.suite import report, runner

@pytest.mark.slow
def test_the_protocol_end_to_end(tiny, monkeypatch):
    runs, cache = tiny["runs"], tiny["cache"]
    with pytest.raises(ValueError, match="--method fixed"):
        runner.run("TinyPoolTest", "cem-static", runs=runs, cache_dir=cache)
    [fixed_path] = runner.run("TinyPoolTest", "fixed", runs=runs, cache_dir=cache)
    fixed = json.loads(fixed_path.read_text())
    specs = {m["spec"] for m in fixed["members"]}
    assert {"fill@oracle", "fill@augment", "fill@mix", "decay:fill@mix", "none"} <= specs
    assert {m["loss"] for m in fixed["members"]} <= {"ce", fixed["task_loss"]}
    assert fixed["task"] == "tailmix/TinyPoolTest-v0" and fixed["protocol"] == P.PROTOCOL_VERSION
    assert all(len(m["episodes"]) == 2 for m in fixed["members"])
    best = runner.best_member(fixed)
    assert runner.mean(best["episodes"], "reward") == max(runner.mean(m["episodes"], "reward")
                                                          for m in fixed["members"])  # picked on the reward
    with pytest.raises(ValueError, match="seed 0"):
        runner.run("TinyPoolTest", "ceiling", runs=runs, cache_dir=cache)
    paths = runner.run("TinyPoolTest", "cem-static", runs=runs, cache_dir=cache)
    assert [p.name for p in paths] == ["cem-static-seed0.json", "cem-static-seed1.json"]
    rec = json.loads(paths[0].read_text())
    assert np.asarray(rec["policy"]["action"]).shape == (10, 2)  # the whole pool action: (C, G)
    mtime = paths[0].stat().st_mtime_ns
    runner.run("TinyPoolTest", "cem-static", runs=runs, cache_dir=cache)  # done runs are skipped (resume)
    assert paths[0].stat().st_mtime_ns == mtime
    runner.run("TinyPoolTest", "cem-schedule", (0,), runs=runs, cache_dir=cache)
    runner.run("TinyPoolTest", "ceiling", runs=runs, cache_dir=cache)
    [replay_path] = runner.run("TinyPoolTest", "pixel-replay", runs=runs, cache_dir=cache)
    replay = json.loads(replay_path.read_text())
    assert [(r["row"], r["seed"]) for r in replay["rows"]] == [
        ("no synthetic", None), ("best fixed", None), ("cem-static", 0), ("cem-static", 1), ("cem-schedule", 0),
        ("ceiling", None)]
    assert all(len(r["episodes"]) == 1 for r in replay["rows"])
    runner.run("TinyPoolTest", "cem-schedule", (1,), runs=runs, cache_dir=cache)
    runner.run("TinyPoolTest", "pixel-replay", runs=runs, cache_dir=cache)  # adds only the new row
    again = json.loads(replay_path.read_text())
    assert again["rows"][:5] == replay["rows"][:5] and ("cem-schedule", 1) in [(r["row"], r["seed"])
                                                                               for r in again["rows"]]
    [gate_path] = runner.run("TinyPoolTest", "fidelity", runs=runs, cache_dir=cache)
    gate_rec = json.loads(gate_path.read_text())
    names = [r["policy"] for r in gate_rec["rows"]]
    head = [f"no synthetic ({loss})" for loss in dict.fromkeys(("ce", fixed["task_loss"]))] + ["best fixed"]
    assert names[:len(head)] == head
    assert names[-3:] == ["cem-static seed 0", "cem-schedule seed 0", "ceiling"]
    assert all(len(r["feature"]) == 3 and len(r["pixel"]) == 3 for r in gate_rec["rows"])  # the gate's seeds
    mtime = gate_path.stat().st_mtime_ns
    runner.run("TinyPoolTest", "fidelity", runs=runs, cache_dir=cache)  # nothing missing: the rows are kept
    assert json.loads(gate_path.read_text())["rows"] == gate_rec["rows"] and gate_path.stat().st_mtime_ns >= mtime
    path = runner.run_transfer(0, runs=runs, cache_dir=cache)
    rec = json.loads(path.read_text())
    assert rec["train_env"]["class_id_obs"] is False and rec["trained_on"] == "tailmix/TinyPoolTest-v0"
    assert len(rec["episodes"]) == 2
    written = report.write_all(runs)
    ref = json.loads(report.REFERENCE_PATH.read_text())
    entry = ref["tasks"]["tailmix/TinyPoolTest-v0"]
    assert entry["pending"] == ["ppo-central"]
    gate = entry["gate"]
    assert gate["seeds"] == 3 and len(gate["policies"]) == len(names) and isinstance(gate["passed"], bool)
    assert 0 <= gate["agreeing_pairs"] <= gate["resolved_pairs"] <= gate["pairs"]
    assert entry["rows"]["cem-static"]["seeds"] == [0, 1] and entry["rows"]["cem-schedule"]["complete"]
    rho = entry["fidelity"]["spearman_reward_vs_pixel_test"]
    assert entry["fidelity"]["points"] == 7 and (np.isnan(rho) or -1 <= rho <= 1)  # nan: a constant side
    assert "pixel" in entry["rows"]["cem-static"] and "vs_best_fixed" in entry["rows"]["cem-static"]["pixel"]
    d, lo, hi = entry["rows"]["cem-static"]["vs_best_fixed"]
    assert lo <= d <= hi
    page = (report.DOCS / "TinyPoolTest.md").read_text()
    assert "ppo-central | not run" in page and "CEILING" in page and "zero-shot (1 seeds)" in page
    assert "## Fidelity gate" in page and "| cem-static seed 0 |" in page
    text = report.README.read_text()
    assert "old" not in text and "TinyPoolTest" in text and text.startswith("intro") and text.endswith("end\n")
    assert report.README in written
    # a user's policy through bench, compared with the reference rows just written
    from tailmix.suite import bench, reference

    monkeypatch.setattr(reference, "PATH", report.REFERENCE_PATH)
    reference._load.cache_clear()
    monkeypatch.setattr(reference, "_load", lambda path=str(report.REFERENCE_PATH): json.loads(
        report.REFERENCE_PATH.read_text()))
    row = bench.score("TinyPoolTest", bench.load_policy("fill@mix"), cache_dir=cache)
    assert row["loss"] == entry["task_loss"] and len(row["episodes"]) == 2 and "best_fixed" in row
    if "normalized" in row:
        bf, ceil = entry["rows"]["best_fixed"]["score"], entry["rows"]["ceiling"]["score"]
        assert row["normalized"] == pytest.approx(100 * (row["score"] - bf) / (ceil - bf))


def test_bench_loads_functions_policies_and_specs(tmp_path, monkeypatch):
    from tailmix.suite import bench

    mod = tmp_path / "my_policy_mod.py"
    mod.write_text("import numpy as np\n"
                   "def act(observations, env):\n"
                   "    return {a: np.zeros(env.action_space(a).shape, np.float32) for a in env.agents}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pol = bench.load_policy("my_policy_mod:act")
    assert pol.name == "act" and callable(pol.act)
    assert bench.load_policy("decay:fill@mix").name.endswith("@mix")
    with pytest.raises(ValueError, match="no such file"):
        bench.load_policy(str(tmp_path / "missing.zip"))
    with pytest.raises(ValueError, match="my_policy_mod"):
        bench.load_policy("my_policy_mod:nope")
