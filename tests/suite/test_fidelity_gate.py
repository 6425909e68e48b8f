"""The fidelity gate's verdict (amendment 2) on records whose answer is known, and the warning at make."""
import numpy as np
import pytest

from tailmix.suite import protocol as P
from tailmix.suite import tasks
from tailmix.suite.report import fidelity_gate, gate_line


def _record(fast_means, pixel_means, noise=0.001, seeds=20):
    rng = np.random.default_rng(0)
    rows = []
    for i, (f, p) in enumerate(zip(fast_means, pixel_means)):
        feature = [{"seed": s, "reward": f, "test": 0.0} for s in range(seeds)]
        pixel = [{"seed": s, "reward": p, "test": p + noise * rng.standard_normal()} for s in range(seeds)]
        rows.append({"policy": f"p{i}", "loss": "ce", "feature": feature, "pixel": pixel})
    return {"rows": rows}


def test_a_faithful_reward_passes_and_a_reversed_one_fails():
    up = [0.1, 0.2, 0.3, 0.4, 0.5]
    good = fidelity_gate(_record(up, up))
    assert good["spearman_fast_vs_pixel_test"] == pytest.approx(1.0) and good["passed"]
    assert good["resolved_pairs"] == good["pairs"] == 10 and good["agreeing_pairs"] == 10
    bad = fidelity_gate(_record(up, up[::-1]))
    assert bad["spearman_fast_vs_pixel_test"] == pytest.approx(-1.0) and not bad["passed"]
    assert bad["agreeing_pairs"] == 0 and "**fail**" in gate_line(bad) and "partial" not in gate_line(bad)
    rec = _record(up, up)
    rec["planned"] = [r["policy"] for r in rec["rows"]] + ["not yet run"]
    assert "(partial: 5 of 6 policies)" in gate_line(fidelity_gate(rec))  # an interrupted gate says so


def test_pairs_inside_the_pixel_noise_are_not_resolved():
    # pixel means 0.5 apart by 1e-4 with noise 0.05: no pair resolved; rho from noise alone decides
    gate = fidelity_gate(_record([0.1, 0.2, 0.3, 0.4], [0.5, 0.5001, 0.5002, 0.5003], noise=0.05))
    assert gate["resolved_pairs"] == 0 and gate["seeds"] == 20
    assert gate["passed"] == (gate["spearman_fast_vs_pixel_test"] >= P.FIDELITY["threshold"])


def test_fewer_than_four_policies_is_no_verdict():
    assert fidelity_gate(_record([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])) is None and gate_line(None) == "not run"


def test_make_warns_when_the_shipped_gate_failed(monkeypatch):
    from tailmix.suite import reference

    task = tasks.get_task("KnownAnswer")
    entry = {"fingerprint": task.fingerprint(), "gate": {"passed": False, "spearman_fast_vs_pixel_test": -0.2,
                                                         "seeds": 20}}
    monkeypatch.setattr(reference, "reference_scores", lambda name=None: entry)
    with pytest.warns(tasks.FidelityWarning, match="failed the fidelity gate"):
        tasks.warn_if_unfaithful(task, {})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tasks.warn_if_unfaithful(task, {"mode": "pixel"})  # the pixel-mode env is the reference: no warning
        entry["gate"]["passed"] = True
        tasks.warn_if_unfaithful(task, {})
        entry["fingerprint"] = "another recipe"
        entry["gate"]["passed"] = False
        tasks.warn_if_unfaithful(task, {})  # a gate of another recipe says nothing about this one
