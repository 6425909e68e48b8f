"""The command-line demo of a suite task: static family, CEM, the ceiling, a headroom share, files written."""
import json
import sys

import pytest

from tailmix import train_agents


@pytest.mark.slow
def test_the_task_demo_from_the_command_line(tiny, monkeypatch, capsys):
    run = tiny["tmp"] / "demo"
    monkeypatch.setattr(sys, "argv", ["train_agents.py", "--task", "TinyPoolTest", "--seeds", "2", "--cache-dir",
                                      tiny["cache"], "--run-dir", str(run)])
    with pytest.raises(SystemExit) as done:
        train_agents.cli()
    assert done.value.code == 0
    out = json.loads((run / "demo.json").read_text())
    assert out["task"] == "tailmix/TinyPoolTest-v0" and out["seeds"] == [1000, 1001]
    rows = list(out["rows"])
    assert rows[0] == "no synthetic (ce)" and rows[-1].startswith("CEILING")
    assert [r for r in rows if r.startswith("best fixed (static shapes)")] and "headroom" in out["sentence"]
    assert "| learned: cem-static (seed 0) |" in capsys.readouterr().out


def test_the_demo_refuses_rl_methods_and_bad_seeds(tiny):
    from tailmix.suite.demo import run_demo

    with pytest.raises(ValueError, match="hours on a CPU"):
        run_demo("TinyPoolTest", method="ppo-central")
    with pytest.raises(ValueError, match="--seeds"):
        run_demo("TinyPoolTest", seeds=9)
