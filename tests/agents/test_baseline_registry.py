"""A fixed baseline is one registration (``register_baseline``): the CLI's choices, ``make_baseline``, the benchmark
lists and the main job's default ``--baselines`` all derive from the registry."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.agents import baselines
from tailmix.agents.baselines import (RatioBaseline, baseline_names, baseline_specs, baselines_for, make_baseline,
                                      per_source_specs, register_baseline)


@pytest.fixture
def half_fill():
    """Registers ``half-fill`` (half of ``fill``'s ratios) for one test, then restores the registry."""
    saved = dict(baselines._REGISTRY)

    @register_baseline("half-fill", per_source=True)
    class HalfFill(RatioBaseline):
        name = "half-fill"

        def raw_ratios(self, train_counts):
            counts = np.maximum(train_counts, 1.0)
            return 0.5 * (counts.max() / counts - 1.0)

    yield HalfFill
    baselines._REGISTRY.clear()
    baselines._REGISTRY.update(saved)


def test_the_builtin_registry_gives_the_benchmark_lists():
    assert baseline_names() == ("none", "constant", "fill", "inverse", "random")
    assert baseline_specs() == ("none", "constant:0.5", "constant:1", "constant:2", "fill", "inverse", "random")
    assert baseline_specs(fixed=True) == ("constant:0.5", "constant:1", "constant:2", "fill", "inverse")
    assert per_source_specs() == ("constant:1", "fill", "inverse")


def test_a_registered_baseline_is_in_every_list(half_fill):
    assert isinstance(make_baseline("half-fill"), half_fill)
    assert make_baseline("half-fill@mix").name == "half-fill@mix"
    assert "half-fill" in baseline_names() and baseline_specs()[-1] == "half-fill"
    assert "half-fill" in baseline_specs(fixed=True)
    assert {"half-fill@ddpm", "half-fill@mix"} <= set(baselines_for(("ddpm", "augment")))
    from tailmix.configs import BenchmarkConfig

    assert BenchmarkConfig().baselines[-1] == "half-fill"  # the main job and `benchmark` run it by default
    with pytest.raises(ValueError, match="takes no argument"):
        make_baseline("half-fill:2")


def test_the_cli_lists_and_runs_a_registered_baseline(half_fill, tmp_path, capsys):
    from tailmix import train_agents

    help_text = train_agents.build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
    assert "half-fill" in " ".join(help_text.split())
    run = tmp_path / "run"
    train_agents.main(["evaluate", "--policy", "half-fill", "--quick", "--source", "augment", "--max-steps", "2",
                       "--seeds", "1", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)])
    assert "half-fill" in (run / "results.md").read_text()


def test_an_unknown_spec_names_the_registered_baselines(half_fill, tmp_path, capsys):
    from tailmix import train_agents

    with pytest.raises(SystemExit):
        train_agents.main(["benchmark", "--baselines", "halffill", "--quick", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert err.startswith("error: unknown baseline spec 'halffill'") and "half-fill" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["Fill2", "a:b", "x@y", "decay", ""])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="baseline name|schedule kind"):
        register_baseline(name)
