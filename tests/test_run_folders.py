"""Run folders under stress (issue 26): --resume on changed data, checkpoints that do not load, --overwrite that
keeps the user's files and gives the old run back when the new one fails before its first result, and advice that
names the exact command.

The commands run in this process (``train_agents.main``) with the pipeline's work replaced by stand-ins
(``prepared_env_kwargs``, ``benchmark``): what is tested happens before and after that work.
"""
from __future__ import annotations

import json
import shlex
import zipfile
from pathlib import Path

import pytest

from tests.test_train_agents import assert_main_error, run_main, snapshot, write_npz

#: Settings of a quick run on the npz dataset (the work itself is stubbed out below).
QUICK = ["--quick", "--source", "augment", "--max-steps", "2"]


@pytest.fixture
def stub_work(monkeypatch):
    """No bank, encoder or training: ``prepared_env_kwargs`` returns ``{}`` and ``benchmark`` writes a results
    table (or calls ``stub_work.fail`` first: an exception then ends the command after its run folder exists)."""
    from tailmix import commands
    from tailmix.agents import evaluate

    class Stub:
        fail = None
        table = "| none | new |\n"

    def benchmark(policies, kw, seeds, out_dir):
        (Path(out_dir) / "tb").mkdir(exist_ok=True)  # a first file that is no result, then the failure
        (Path(out_dir) / "tb" / "events").write_text("logs")
        if Stub.fail is not None:
            raise Stub.fail
        (Path(out_dir) / "results.md").write_text(Stub.table)

    monkeypatch.setattr(commands, "prepared_env_kwargs", lambda cfg, dataset: {})
    monkeypatch.setattr(evaluate, "benchmark", benchmark)
    return Stub


@pytest.fixture
def npz(tmp_path) -> Path:
    return write_npz(tmp_path / "toy.npz")


def evaluate_argv(npz: Path, run: Path, *extra) -> list:
    return ["evaluate", "--policy", "none", "--dataset", npz, *QUICK, "--seeds", "1", "--run-dir", run,
            "--cache-dir", run.parent / "cache", *extra]


def made_run(stub_work, npz: Path, run: Path, capsys) -> Path:
    """An evaluate run that tailmix made (stubbed work), then the user's own notes and data put inside it."""
    stub_work.table = "| none | first |\n"
    code, err = run_main_ok(evaluate_argv(npz, run), capsys)
    (run / "notes.txt").write_text("precious")
    (run / "mydata").mkdir()
    (run / "mydata" / "table.csv").write_text("1,2\n")
    return run


def run_main_ok(argv, capsys):
    from tailmix import train_agents

    capsys.readouterr()
    train_agents.main([str(a) for a in argv])
    return 0, capsys.readouterr().err


def train_run(npz: Path, run: Path, *flags) -> Path:
    """A train run folder as ``train`` leaves it before its first checkpoint (run.json with the dataset's
    fingerprint, marker), made without any training."""
    from tailmix import runs, train_agents

    command, cfg, explicit = train_agents.parse_args(["train", "--dataset", str(npz), *QUICK, *flags, "--run-dir",
                                                      str(run), "--cache-dir", str(run.parent / "cache")])
    cfg, fixed = train_agents.resolve_config(command, cfg, explicit)
    train_agents._quick(cfg, fixed)  # as the CLI does before the run folder is made
    runs.prepare_run_dir(cfg, "train", train_agents.load_data(cfg))
    return run


def fake_checkpoint(run: Path, steps: int, *, broken: bool = False) -> Path:
    """A file shaped like an SB3 checkpoint (``data`` and ``policy.pth`` in a zip); ``broken``: cut in half."""
    path = run / "checkpoints" / f"ppo_{steps}_steps.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", "{}")
        zf.writestr("policy.pth", b"\0" * 256)
    if broken:
        path.write_bytes(path.read_bytes()[:100])
    return path


# -- item 2: --resume on changed data ----------------------------------------------------------------
def test_resume_refuses_a_changed_dataset_before_any_work(npz, tmp_path, monkeypatch, capsys):
    import numpy as np

    from tailmix import commands

    run = train_run(npz, tmp_path / "run")
    fingerprint = json.loads((run / "run.json").read_text())["dataset_fingerprint"]
    fake_checkpoint(run, 32)

    def work(cfg, dataset):
        raise AssertionError("the work started")

    monkeypatch.setattr(commands, "prepared_env_kwargs", work)
    # unchanged data passes the check and reaches the work
    with pytest.raises(AssertionError, match="the work started"):
        run_main(["train", "--resume", "--run-dir", run], capsys)
    with np.load(npz) as z:  # one image changed, as when a file in a class folder is replaced
        arrays = dict(z)
    arrays["train_images"][0, 0, 0] = 255 - arrays["train_images"][0, 0, 0]
    np.savez(npz, **arrays)
    before = snapshot(run)
    from tailmix import train_agents

    _, cfg, _ = train_agents.parse_args(["train", "--dataset", str(npz)])
    now = train_agents.load_data(cfg).fingerprint()
    assert_main_error(["train", "--resume", "--run-dir", run], capsys, "--resume", "dataset", "changed",
                      fingerprint[:16], now[:16], "another --run-dir")
    assert snapshot(run) == before


def test_resume_refuses_a_class_added(npz, tmp_path, monkeypatch, capsys):
    import numpy as np

    from tailmix import commands

    run = train_run(npz, tmp_path / "run")
    fake_checkpoint(run, 32)
    monkeypatch.setattr(commands, "prepared_env_kwargs", lambda cfg, dataset: pytest.fail("the work started"))
    with np.load(npz) as z:
        arrays = dict(z)
    for split in ("train", "val", "test"):  # a fourth class in every split
        n = 8 if split == "train" else 4
        arrays[f"{split}_images"] = np.concatenate([arrays[f"{split}_images"], arrays[f"{split}_images"][:n]])
        arrays[f"{split}_labels"] = np.concatenate([arrays[f"{split}_labels"], np.full((n, 1), 3)])
    np.savez(npz, **arrays)
    assert_main_error(["train", "--resume", "--run-dir", run], capsys, "dataset", "changed")


# -- item 5: a checkpoint that does not load ---------------------------------------------------------
def test_resume_with_only_broken_checkpoints_is_refused_with_the_exact_command(npz, tmp_path, monkeypatch, capsys):
    from tailmix import commands

    run = train_run(npz, tmp_path / "run")
    fake_checkpoint(run, 32, broken=True)
    monkeypatch.setattr(commands, "prepared_env_kwargs", lambda cfg, dataset: pytest.fail("the work started"))
    assert_main_error(["train", "--resume", "--run-dir", run], capsys, "no ppo checkpoint that loads",
                      "truncated or corrupted", "--overwrite")


def test_usable_checkpoint_skips_a_truncated_latest_one(tmp_path):
    from tailmix.agents.sb3 import checkpoint_problem, usable_checkpoint

    good = fake_checkpoint(tmp_path, 32)
    bad = fake_checkpoint(tmp_path, 64, broken=True)
    assert checkpoint_problem(good) is None and checkpoint_problem(bad)
    lines = []
    assert usable_checkpoint(tmp_path, "ppo", report=lines.append) == (good, 32)
    assert len(lines) == 1 and bad.name in lines[0] and "previous good one" in lines[0] and good.name in lines[0]
    bad.write_bytes(b"")
    (tmp_path / "checkpoints" / "ppo_32_steps.zip").write_bytes(b"PK\x03\x04 not really")
    assert usable_checkpoint(tmp_path, "ppo") is None


# -- item 12: the no-checkpoint advice is the exact command -------------------------------------------
def test_no_checkpoint_advice_is_the_exact_command_with_the_runs_settings(npz, tmp_path, capsys):
    from tailmix import train_agents

    run = train_run(npz, tmp_path / "run", "--timesteps", "300", "--mode", "pixel", "--no-filter")
    code, err = run_main(["train", "--resume", "--run-dir", run], capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert "no ppo checkpoint that loads" in line and "the same command" not in line
    argv = shlex.split(line.split("run.json): ", 1)[1])
    assert argv[:2] == ["python", "train_agents.py"] and "--resume" not in argv and "--overwrite" in argv
    command, cfg, explicit = train_agents.parse_args(argv[2:])
    cfg, fixed = train_agents.resolve_config(command, cfg, explicit)
    if cfg.quick:
        train_agents._quick(cfg, fixed)
    stored = json.loads((run / "run.json").read_text())["config"]
    assert command == "train" and cfg.run_dir == str(run) and cfg.overwrite
    for name, value in stored.items():
        if name not in ("run_dir", "resume", "overwrite"):
            assert getattr(cfg, name) == value, name
    assert stored["dataset"] == str(npz) and stored["timesteps"] == 300 and stored["mode"] == "pixel"


# -- item 6: --overwrite deletes only what tailmix wrote ------------------------------------------------
def test_overwrite_keeps_the_users_files(stub_work, npz, tmp_path, capsys):
    from tailmix import runs

    run = made_run(stub_work, npz, tmp_path / "run", capsys)
    marker = json.loads((run / runs.RUN_MARKER).read_text())
    assert "results.md" in marker["written"] and "notes.txt" not in marker["written"]
    stub_work.table = "| none | second |\n"
    run_main_ok(evaluate_argv(npz, run, "--overwrite"), capsys)
    assert (run / "results.md").read_text() == "| none | second |\n"
    assert (run / "notes.txt").read_text() == "precious" and (run / "mydata" / "table.csv").read_text() == "1,2\n"
    assert runs.is_tailmix_run(run) and not (run / runs.REPLACED).exists()
    assert json.loads((run / "run.json").read_text())["run_id"] != marker["run_id"]


def test_overwrite_of_a_run_made_before_manifests_keeps_unknown_files(stub_work, npz, tmp_path, capsys):
    from tests.test_cli_adversarial import real_run

    run = real_run(tmp_path / "run")  # marker without a manifest: tailmix's files are known by name
    (run / "notes.txt").write_text("precious")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ppo_8_steps.zip").write_bytes(b"old")
    run_main_ok(evaluate_argv(npz, run, "--overwrite"), capsys)
    assert (run / "notes.txt").read_text() == "precious"
    assert not (run / "checkpoints").exists() and (run / "results.md").read_text() == "| none | new |\n"


# -- item 7: the old run is replaced only once the new one has a result ----------------------------------
@pytest.mark.parametrize("failure", [ValueError("late failure"), KeyboardInterrupt(), RuntimeError("crash")])
def test_a_failed_overwrite_leaves_the_old_run_as_it_was(failure, stub_work, npz, tmp_path, capsys):
    from tailmix import train_agents

    run = made_run(stub_work, npz, tmp_path / "run", capsys)
    before = snapshot(run)
    stub_work.fail = failure
    with pytest.raises((SystemExit, RuntimeError)):
        train_agents.main([str(a) for a in evaluate_argv(npz, run, "--overwrite")])
    assert snapshot(run) == before
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [".tailmix_run", "mydata", "notes.txt", "results.md", "run.json", "tb", "timings.json"])
    if isinstance(failure, ValueError):
        assert "back in place" in capsys.readouterr().err


def test_an_overwrite_killed_midway_is_undone_by_the_next_command(stub_work, npz, tmp_path, capsys):
    from tailmix import runs, train_agents

    run = made_run(stub_work, npz, tmp_path / "run", capsys)
    before = snapshot(run)
    # a first --overwrite gets as far as its run folder, then the process is killed (no cleanup runs)
    command, cfg, explicit = train_agents.parse_args([str(a) for a in evaluate_argv(npz, run, "--overwrite")])
    cfg, _ = train_agents.resolve_config(command, cfg, explicit)
    runs.prepare_run_dir(cfg, "evaluate")
    runs._replacing.clear()
    assert (run / runs.REPLACED).is_dir() and not (run / "results.md").exists()
    # the next --overwrite fails too: the folder is back as it was before the first one
    stub_work.fail = ValueError("late failure")
    code, _ = run_main(evaluate_argv(npz, run, "--overwrite"), capsys)
    assert code == 2 and snapshot(run) == before
    # and one that succeeds replaces the old run, keeping the user's files
    stub_work.fail, stub_work.table = None, "| none | second |\n"
    run_main_ok(evaluate_argv(npz, run, "--overwrite"), capsys)
    assert (run / "results.md").read_text() == "| none | second |\n"
    assert (run / "notes.txt").exists() and not (run / runs.REPLACED).exists()
