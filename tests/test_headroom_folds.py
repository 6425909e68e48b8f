"""benchmarks/headroom.py --val-folds: one search per value, val gain beside test gain, the -folds file."""
from __future__ import annotations

import benchmarks.headroom as headroom
import tailmix.agents.evaluate
from tests.agents.helpers import tiny_env_kwargs


def test_val_folds_runs_each_value_tests_on_the_fixed_split_and_names_the_file(monkeypatch, tmp_path):
    def build(name, args):
        kw = tiny_env_kwargs(max_ratio=args.max_ratio)
        kw.update(reward_replicas=args.replicas, reward_reference=args.reference)
        return kw["dataset"], kw

    seen = []
    real_evaluate = tailmix.agents.evaluate.evaluate

    def evaluate(policy, env_kwargs, **kw):
        seen.append((policy.name, env_kwargs.get("val_folds", 1)))
        return real_evaluate(policy, env_kwargs, **kw)

    monkeypatch.setattr(headroom, "build_env_kwargs", build)
    monkeypatch.setattr(tailmix.agents.evaluate, "evaluate", evaluate)
    headroom.main(["--datasets", "digits", "--val-folds", "1", "3", "--generations", "1", "--population", "2",
                   "--episodes", "1", "--seeds", "1", "--val-seeds", "2", "--losses", "ce", "--inits", "inverse",
                   "--out", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["headroom-digits-lt-folds.md"]
    assert {vf for _, vf in seen} == {1}  # every test row is scored in the fixed-split env
    # fixed rows are scored once and reused; the CEM row once per val_folds value
    assert sum(name == "inverse" for name, _ in seen) == 1 and sum(name.startswith("cem") for name, _ in seen) == 2
    text = (tmp_path / "headroom-digits-lt-folds.md").read_text()
    assert "| 1 | ce | CEM from inverse | inverse |" in text and "| 3 | ce | CEM from inverse | inverse |" in text
    assert "## val_folds = 1" in text and "## val_folds = 3" in text and "val_folds=3: an episode holding out" in text
