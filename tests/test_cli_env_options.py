"""The env v1 options on the command line: --draw, --val-folds, --lr-schedule reach the env and run.json."""
from __future__ import annotations

import json

import pytest

from tailmix import runs, train_agents
from tailmix.pipeline import env_kwargs
from tests.conftest import make_tiny_dataset

FLAGS = ["--draw", "unique", "--val-folds", "3", "--lr-schedule", "cosine"]


@pytest.mark.parametrize("command", ["train", "evaluate", "benchmark", None])
def test_flags_parse_into_every_env_command(command):
    _, cfg, explicit = train_agents.parse_args(([command] if command else []) + FLAGS)
    assert (cfg.draw, cfg.val_folds, cfg.lr_schedule) == ("unique", 3, "cosine")
    assert {"draw", "val_folds", "lr_schedule"} <= explicit


def test_env_kwargs_pass_them_and_leave_v0_keywords_alone():
    ds = make_tiny_dataset()
    _, v0, _ = train_agents.parse_args(["train", "--source", "augment"])
    kw0 = env_kwargs(v0, ds)
    assert not {"draw", "val_folds", "lr_schedule"} & set(kw0)  # a v0 run builds the env exactly as before
    _, v1, _ = train_agents.parse_args(["train", "--source", "augment", *FLAGS])
    kw1 = env_kwargs(v1, ds)
    assert (kw1["draw"], kw1["val_folds"], kw1["lr_schedule"]) == ("unique", 3, "cosine")
    assert {k: v for k, v in kw1.items() if k not in ("draw", "val_folds", "lr_schedule")}.keys() == kw0.keys()
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    e = SyntheticRatioEnv(**{**kw1, "encoder": "random", "cache_dir": False, "max_steps": 2})
    assert (e.config.draw, e.config.val_folds, e.config.lr_schedule) == ("unique", 3, "cosine")


@pytest.mark.parametrize("flags,named", [(["--draw", "twice"], "--draw"), (["--val-folds", "0"], "--val-folds"),
                                         (["--lr-schedule", "step"], "--lr-schedule")])
def test_bad_values_are_user_errors_naming_the_flag(flags, named):
    _, cfg, _ = train_agents.parse_args(["train", *flags])
    with pytest.raises(ValueError, match=named):
        train_agents.check_config(cfg)


def test_run_json_stores_them_and_evaluate_inherits_them(tmp_path):
    _, cfg, _ = train_agents.parse_args(["train", "--run-dir", str(tmp_path / "run"), *FLAGS])
    run = runs.prepare_run_dir(cfg, "train")
    stored = json.loads((run / "run.json").read_text())["config"]
    assert (stored["draw"], stored["val_folds"], stored["lr_schedule"]) == ("unique", 3, "cosine")
    (run / "model.zip").write_bytes(b"")  # only its place matters here: settings come from the run.json beside it
    command, ev, explicit = train_agents.parse_args(["evaluate", "--policy", str(run / "model.zip")])
    ev, fixed = train_agents.resolve_config(command, ev, explicit)
    assert (ev.draw, ev.val_folds, ev.lr_schedule) == ("unique", 3, "cosine")
    # a resumed run may not change them
    (run / "checkpoints").mkdir()
    _, res, explicit = train_agents.parse_args(["train", "--run-dir", str(run), "--resume", "--draw", "replace"])
    with pytest.raises(ValueError, match="--draw"):
        train_agents.resolve_config("train", res, explicit)
