"""RL libraries behind one protocol (``tailmix.agents.backends``): a backend is one class plus one registry line,
and ``--backend``, ``train``, ``evaluate --policy`` and ``benchmark --learned`` reach it through the registry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailmix.agents import backends
from tailmix.agents.backends import Backend, backend_for, backend_names, get_backend, register_backend
from tailmix.agents.baselines import RandomRatio

TINY = ["--quick", "--source", "augment", "--max-steps", "2"]


class RandomBackend(Backend):
    """A toy RL library: "training" picks a seed, its checkpoint is a folder holding random_policy.json."""

    name = "random-policy"
    help = "uniform random actions, seeded (a test's toy backend)"

    def check(self, cfg) -> None:
        if cfg.wrapper != "shared":
            raise ValueError("--backend random-policy has no central policy; use --wrapper shared")

    def train(self, cfg, env_kwargs, run_dir):
        folder = Path(run_dir) / "checkpoint"
        folder.mkdir()
        backends.write_json_atomic(folder / "random_policy.json", {"seed": cfg.seed, "steps": cfg.timesteps})
        return folder

    def is_checkpoint(self, path):
        return (Path(path) / "random_policy.json").is_file()

    def load_policy(self, path, info=None):
        return RandomRatio(json.loads((Path(path) / "random_policy.json").read_text())["seed"])


@pytest.fixture
def toy_backend():
    register_backend(RandomBackend())  # the one registry line
    yield
    backends.unregister_backend("random-policy")


def test_sb3_and_rllib_are_registered_with_their_checkpoint_markers(tmp_path):
    assert backend_names()[:2] == ("sb3", "rllib")
    (tmp_path / "model.zip").write_bytes(b"")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "rllib_checkpoint.json").write_text("{}")
    assert backend_for(tmp_path / "model.zip").name == "sb3"
    assert backend_for(tmp_path / "ckpt").name == "rllib"
    assert backend_for(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="choose one of sb3, rllib"):
        get_backend("jax")


def test_the_adapters_share_one_json_writer_and_one_tag_helper():
    from tailmix.agents import callbacks, rllib, sb3

    for module in (sb3, rllib, callbacks):
        assert not hasattr(module, "_write_json_atomic") and not hasattr(module, "_tag")
    assert backends.scalar_tag("0 no DR") == "0_no_DR"


def test_a_registered_backend_trains_and_evaluates_through_the_cli(toy_backend, tmp_path, capsys):
    from tailmix import train_agents

    help_text = train_agents.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "random-policy" in " ".join(help_text.split())
    cache, run = str(tmp_path / "cache"), tmp_path / "train"
    train_agents.main(["train", "--backend", "random-policy", *TINY, "--seed", "7", "--cache-dir", cache,
                       "--run-dir", str(run)])
    saved = run / "checkpoint"
    assert json.loads((saved / "random_policy.json").read_text())["seed"] == 7
    assert f"random-policy policy: {saved}" in capsys.readouterr().out
    out = tmp_path / "eval"
    train_agents.main(["evaluate", "--policy", str(saved), *TINY, "--seeds", "1", "--cache-dir", cache,
                       "--run-dir", str(out)])
    assert "learned:train" in (out / "results.md").read_text()


def test_a_backend_refuses_settings_before_any_work(toy_backend, tmp_path, capsys):
    from tailmix import train_agents

    with pytest.raises(SystemExit):
        train_agents.main(["train", "--backend", "random-policy", "--wrapper", "central", *TINY, "--run-dir",
                           str(tmp_path / "r")])
    assert "use --wrapper shared" in capsys.readouterr().err and not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):  # the main job trains and benchmarks: only backends that say they can
        train_agents.main(["--backend", "random-policy", *TINY, "--run-dir", str(tmp_path / "m")])
    assert "is for the train command" in capsys.readouterr().err
