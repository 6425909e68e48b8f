"""The main job's protocol (tailmix.mainjob): the reward decided from the data, the methods and their training envs,
the CEM policy file, and the flags that pick them."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tailmix import mainjob


def _dataset(train, val):
    labels = lambda counts: np.concatenate([np.full(n, c) for c, n in enumerate(counts)])  # noqa: E731
    return SimpleNamespace(num_classes=len(train), train_labels=labels(train), val_labels=labels(val))


def test_the_fold_reward_where_val_follows_the_train_distribution():
    # a folder split by the loader: val carved off stratified, so it has train's long tail
    folds, why = mainjob.decide_val_folds(_dataset((400, 120, 40), (80, 24, 8)))
    assert folds == mainjob.FOLDS and "follows" in why
    # digits-LT: a long-tailed train split beside a balanced val split
    folds, why = mainjob.decide_val_folds(_dataset((100, 50, 10), (30, 30, 30)))
    assert folds == 1 and "differs" in why
    # follows, but a class too rare for 5 folds
    folds, why = mainjob.decide_val_folds(_dataset((100, 20, 3), (20, 4, 0)))
    assert folds == 1 and "fewer than" in why


def test_the_real_digits_val_split_keeps_the_fixed_reward():
    from tailmix.envs.datasets import load_dataset

    assert mainjob.decide_val_folds(load_dataset("digits"))[0] == 1


def test_methods_and_the_credit_each_needs():
    assert mainjob.parse_method("cem-schedule") == ("cem", "schedule")
    assert mainjob.parse_method("ppo-central") == ("ppo", "central")
    assert mainjob.parse_method("sac-central") == ("sac", "central")
    with pytest.raises(ValueError, match="unknown --methods entry 'ppo-both'"):
        mainjob.parse_method("ppo-both")
    # the suite's protocol: a ratio-0 reference for central, difference credit for one source, amendment 1 for a pool
    assert mainjob.train_env("ppo-central", 2) == {"reward_reference": 0.0}
    assert mainjob.train_env("ppo-shared", 1) == {"credit": "difference", "reward_replicas": 4}
    assert mainjob.train_env("ppo-shared", 2) == {"reward_reference": 0.0, "reward_replicas": 4}
    assert mainjob.train_env("a2c-shared", 2) == {"reward_reference": 0.0, "reward_replicas": 4}
    # a central method gets as many env steps as a shared one
    assert mainjob.sb3_timesteps("ppo-shared", 20000, 10) == 20000
    assert mainjob.sb3_timesteps("ppo-central", 20000, 10) == 2000


@pytest.mark.parametrize("knots", [None, 3])
def test_a_cem_result_is_saved_and_loaded_as_a_policy(tmp_path, knots):
    from tailmix.policies import load_policy

    rng = np.random.default_rng(0)
    shape = (4, 2) if knots is None else (knots, 4, 2)
    action = rng.uniform(-1, 1, shape)
    path = mainjob.save_ratio_policy(tmp_path / "agents" / "cem" / "policy.json", action, 8.0, knots, "cem-x")
    policy = load_policy(str(path))
    assert policy.name == "cem-x"
    assert json.loads(path.read_text())["kind"] == "ratio-policy"
    bad = tmp_path / "other.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a policy file"):
        load_policy(str(bad))


def test_algo_and_wrapper_alone_keep_the_one_learner_main_job():
    from tailmix.mainjob import main_methods
    from tailmix.configs import MainConfig

    assert main_methods(MainConfig()) == ["cem-schedule", "ppo-central", "ppo-shared"]
    assert main_methods(MainConfig(algo="sac", wrapper="central"), frozenset({"algo", "wrapper"})) == ["sac-central"]
    cfg = MainConfig(methods=["ppo-central"], algo="sac")
    assert main_methods(cfg, frozenset({"algo", "methods"})) == ["ppo-central"]


def test_a_bad_method_is_a_one_line_error_before_any_work(capsys):
    from tailmix import train_agents

    with pytest.raises(SystemExit) as exc:
        train_agents.main(["--methods", "cem-schedule", "dqn-shared", "--run-dir", "/nonexistent/never"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown --methods entry 'dqn-shared'" in err[0]
