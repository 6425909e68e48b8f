"""The CLI (train_agents.py) run as a subprocess with tiny settings: every command, resume, own datasets, bad input.

One cache folder is shared by the whole session, so the tiny DDPM and its bank are made once (by the ``trained``
fixture) and reused by every later command, as a user's second run would.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Tiny settings on top of --quick: a 4-step DDPM, 8 unfiltered samples per class, 2-step episodes.
TINY = ["--quick", "--generator-steps", "4", "--per-class", "8", "--no-filter", "--max-steps", "2"]
#: Tiny settings for datasets of one's own: classic augmentations as the source (no generator to train).
TINY_AUGMENT = ["--quick", "--source", "augment", "--max-steps", "2", "--seeds", "1"]


def run_cli(*args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train_agents.py *args`` from the repo root; fails the test (showing the output) on a bad exit."""
    env = {k: v for k, v in os.environ.items() if k != "TAILMIX_DEBUG"}
    proc = subprocess.run([sys.executable, "train_agents.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        pytest.fail(f"train_agents.py {' '.join(map(str, args))} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def assert_user_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Non-zero exit, a one-line ``error: ...`` on stderr naming ``words``, and no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def read_results(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_results(run: Path, policies: list[str], seeds: int) -> None:
    """results.csv/md/png exist; every policy has ``seeds`` rows of finite scores and a markdown line."""
    rows = read_results(run)
    assert sorted({r["policy"] for r in rows}) == sorted(policies)
    for p in policies:
        mine = [r for r in rows if r["policy"] == p]
        assert len(mine) == seeds, (p, len(mine))
        for r in mine:
            for key in ("test_balanced_accuracy", "test_macro_f1", "val_balanced_accuracy", "mean_ratio"):
                assert math.isfinite(float(r[key])), (p, key, r[key])
            assert 0.0 <= float(r["test_balanced_accuracy"]) <= 1.0
    md = (run / "results.md").read_text()
    for p in policies:
        assert f"| {p} |" in md, p
    assert (run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_only_run_outputs(run: Path) -> None:
    """Everything a command wrote in ``run`` is named in ``tailmix.runs.RUN_OUTPUTS`` (and so in the run's manifest):
    ``--overwrite`` removes those names only, so a file tailmix wrote under another name would outlive it."""
    from tailmix.runs import RUN_OUTPUTS

    written = json.loads((run / ".tailmix_run").read_text())["written"]
    assert {p.name for p in run.iterdir()} <= set(RUN_OUTPUTS) & set(written)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: content and mtime (to prove a refused command touched nothing)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-cache")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache_dir) -> Path:
    """A tiny PPO run (trains the tiny DDPM and fills its bank into the shared cache on the way)."""
    run = tmp_path_factory.mktemp("cli-runs") / "train"
    proc = run_cli("train", *TINY, "--timesteps", "64", "--checkpoint-every", "32", "--cache-dir", cache_dir,
                   "--run-dir", run)
    assert f"outputs in {run}" in proc.stdout
    return run


# -- --help --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, docs", [
    (None, ["Number of benchmark seeds", "SB3 algorithm: ppo, sac, a2c, td3", "Synthetic candidates kept per class"]),
    ("generate", ["Generator of the bank", "Filter confidence threshold"]),
    ("train", ["Save a checkpoint every this many timesteps", "Continue from the latest checkpoint"]),
    ("evaluate", ["A saved model (path to model.zip", "Number of evaluation seeds"]),
    ("benchmark", ["Saved models (model.zip paths) to include", "Baseline specs to include"]),
])
def test_help_shows_the_field_docs(command, docs):
    proc = run_cli(*([command] if command else []), "--help")
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for doc in docs:
        assert doc in text, doc
    assert "--dataset" in text and "(default: digits)" in text
    if command in ("generate", "evaluate", "benchmark"):
        assert "--algo" not in text  # each command lists only its own fields


# -- the commands ------------------------------------------------------------------------------
def test_train_writes_model_checkpoints_and_tensorboard_scalars(trained):
    from stable_baselines3 import PPO
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = json.loads((trained / "agent.json").read_text())
    assert agent["algo"] == "ppo" and agent["wrapper"] == "shared" and agent["num_timesteps"] >= 64
    PPO.load(trained / "model.zip", device="cpu")  # SB3's own load
    assert sorted(p.name for p in (trained / "checkpoints").glob("ppo_*_steps.zip"))
    events = list((trained / "tb").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "tailmix/reward" in tags and "tailmix/balanced_accuracy" in tags
    assert any(t.startswith("tailmix/ratio/") for t in tags) and any(t.startswith("tailmix/recall/") for t in tags)
    run = json.loads((trained / "run.json").read_text())
    assert run["command"] == "train" and run["config"]["timesteps"] == 64 and len(run["history"]) == 1
    assert_only_run_outputs(trained)


def test_train_resume_continues_with_the_runs_own_settings(trained, cache_dir, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(trained, run)
    before = json.loads((run / "agent.json").read_text())["num_timesteps"]
    # No settings repeated: --resume reads them from the run.json (a changed --dataset would be refused).
    proc = run_cli("train", "--run-dir", run, "--resume", "--timesteps", "128", "--cache-dir", cache_dir)
    assert "resuming from timestep" in proc.stdout
    after = json.loads((run / "agent.json").read_text())["num_timesteps"]
    assert before < 128 <= after
    steps = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("ppo_*_steps.zip"))
    assert steps[-1] > before
    meta = json.loads((run / "run.json").read_text())
    assert [h["resume"] for h in meta["history"]] == [False, True]
    assert meta["config"]["generator_steps"] == 4 and meta["config"]["filter"] is False  # inherited, not defaults


def test_evaluate_a_saved_model_in_the_env_it_was_trained_in(trained, cache_dir, tmp_path):
    run = tmp_path / "eval-model"
    # Env settings (tiny DDPM bank, 2-step episodes, quick encoder) come from the model's run.json.
    proc = run_cli("evaluate", "--policy", trained / "model.zip", "--seeds", "2", "--cache-dir", cache_dir,
                   "--run-dir", run)
    assert_results(run, ["learned:train"], seeds=2)
    assert "[generator ddpm (tiny)]" in proc.stdout and "[synthetic bank] done" in proc.stdout
    assert json.loads((run / "run.json").read_text())["config"]["max_steps"] == 2
    assert all(int(r["steps"]) == 2 for r in read_results(run))


def test_evaluate_a_baseline(cache_dir, tmp_path):
    run = tmp_path / "eval-fill"
    run_cli("evaluate", "--policy", "fill", *TINY_AUGMENT, "--seeds", "2", "--cache-dir", cache_dir, "--run-dir", run)
    assert_results(run, ["fill"], seeds=2)
    rows = read_results(run)
    ratios = [float(v) for k, v in rows[0].items() if k.startswith("ratio_")]
    assert ratios[0] == 0.0 and ratios[-1] > 0.0  # head class gets nothing, the tail the most


@pytest.mark.slow
def test_benchmark_lists_every_baseline_and_the_learned_model(trained, cache_dir, tmp_path):
    run = tmp_path / "bench"
    run_cli("benchmark", "--learned", trained / "model.zip", "--seeds", "2", "--cache-dir", cache_dir,
            "--run-dir", run)
    baselines = ["none", "constant:0.5", "constant:1", "constant:2", "fill", "inverse", "random"]
    assert_results(run, baselines + ["learned:train"], seeds=2)


@pytest.mark.slow
def test_several_generators_fill_a_bank_each_and_benchmark_per_source_baselines(cache_dir, tmp_path):
    run = tmp_path / "bench"
    run_cli("benchmark", *TINY, "--generator", "ddpm", "augment", "--baselines", "fill", "--seeds", "1",
            "--run-dir", run, "--cache-dir", cache_dir)
    assert_results(run, ["fill", "constant:1@ddpm", "fill@ddpm", "inverse@ddpm", "constant:1@augment",
                         "fill@augment", "inverse@augment", "constant:1@mix", "fill@mix", "inverse@mix"], 1)
    assert json.loads((run / "run.json").read_text())["config"]["generator"] == "ddpm augment"


def test_generate_prints_the_quality_report(trained, cache_dir, tmp_path):
    run = tmp_path / "gen"
    proc = run_cli("generate", *TINY, "--cache-dir", cache_dir, "--run-dir", run)  # the bank `trained` filled
    assert "synthetic" in proc.stdout and "frechet" in proc.stdout
    report = json.loads((run / "quality.json").read_text())
    assert sorted(map(int, report)) == list(range(10)) and all(r["n"] == 8 for r in report.values())
    assert (run / "quality.txt").read_text().strip() in proc.stdout
    assert (run / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert_only_run_outputs(run)


@pytest.mark.slow
def test_generate_with_the_reference_filter(cache_dir, tmp_path):
    run = tmp_path / "gen-filtered"
    # Classic augmentations of real images mostly pass the filter: acceptance is reported per class.
    proc = run_cli("generate", "--quick", "--generator", "augment", "--filter", "--filter-epochs", "5",
                   "--per-class", "8", "--cache-dir", cache_dir, "--run-dir", run)
    assert "[reference filter] done" in proc.stdout and "acceptance" in proc.stdout
    report = json.loads((run / "quality.json").read_text())
    assert sum(r["n"] for r in report.values()) > 0
    assert all(0.0 <= r["acceptance"] <= 1.0 for r in report.values())


@pytest.fixture(scope="session")
def main_run(tmp_path_factory, cache_dir, trained) -> Path:
    run = tmp_path_factory.mktemp("cli-main") / "main"
    proc = run_cli(*TINY, "--timesteps", "64", "--checkpoint-every", "32", "--cache-dir", cache_dir, "--run-dir", run)
    assert proc.stdout.rstrip().endswith(f"outputs in {run}")  # the run folder is named at the end
    assert "phase timings:" in proc.stdout
    return run


def test_main_job_quick(main_run):
    from tailmix.mainjob import fixed_family

    # the pool of the two kinds built (ddpm, augment), its fixed family, and the three learned methods
    family = fixed_family(["ddpm", "augment"])
    assert "late:inverse@augment" in family and "fill@mix" in family
    assert_results(main_run, family + ["cem-schedule", "ppo-central", "ppo-shared"], seeds=2)
    assert (main_run / "model.zip").is_file() and list((main_run / "tb").rglob("events.out.tfevents.*"))
    assert (main_run / "agents" / "ppo-central" / "model.zip").is_file()
    meta = json.loads((main_run / "run.json").read_text())
    assert meta["config"]["draw"] == "unique" and meta["config"]["generator"] == "ddpm augment"
    assert meta["val_folds"] == 1  # digits-LT: a balanced val split beside a long-tailed train split
    assert meta["loss"] in ("ce", "logit_adjustment", "balanced_softmax", "class_balanced")
    assert set(meta["learned"]) == {"cem-schedule", "ppo-central", "ppo-shared"}
    timings = json.loads((main_run / "timings.json").read_text())
    assert {p["phase"] for p in timings["phases"]} >= {"synthetic bank", "encoder", "train ppo-shared",
                                                     "train ppo-central"}
    assert_only_run_outputs(main_run)


def test_main_job_cem_policy_file_is_evaluated_from_the_cli(main_run, cache_dir, tmp_path):
    policy = json.loads((main_run / "run.json").read_text())["learned"]["cem-schedule"]
    assert policy.endswith("policy.json")
    run = tmp_path / "eval-cem"
    run_cli("evaluate", *TINY, "--generator", "ddpm", "augment", "--draw", "unique", "--policy", policy,
            "--seeds", "1", "--cache-dir", cache_dir, "--run-dir", run)
    assert "| learned:cem-schedule |" in (run / "results.md").read_text()


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_the_same_table(main_run, tmp_path):
    # The second run starts from an empty cache: generator, bank, encoder and agent are all made afresh.
    run = tmp_path / "again"
    run_cli(*TINY, "--timesteps", "64", "--checkpoint-every", "32", "--cache-dir", tmp_path / "fresh-cache",
            "--run-dir", run)
    assert (run / "results.md").read_bytes() == (main_run / "results.md").read_bytes()
    assert (run / "results.csv").read_bytes() == (main_run / "results.csv").read_bytes()


# -- datasets of one's own ---------------------------------------------------------------------------
def _bars(rng, n: int, c: int, size: int = 8) -> np.ndarray:
    """``n`` noisy images of class ``c``: a bright bar at a class-specific row."""
    x = rng.normal(30, 20, (n, size, size))
    x[:, 2 * c: 2 * c + 2, :] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


def write_npz(path: Path) -> Path:
    """A 3-class, 8x8 grey, long-tailed dataset in the MedMNIST .npz format (labels shaped (N, 1))."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, counts in (("train", (30, 12, 5)), ("val", (6, 6, 6)), ("test", (6, 6, 6))):
        arrays[f"{split}_images"] = np.concatenate([_bars(rng, n, c) for c, n in enumerate(counts)])
        arrays[f"{split}_labels"] = np.concatenate([np.full((n, 1), c) for c, n in enumerate(counts)])
    np.savez(path, **arrays)
    return path


def test_dataset_from_a_medmnist_format_npz(cache_dir, tmp_path):
    path = write_npz(tmp_path / "toymnist.npz")
    run = tmp_path / "npz-run"
    run_cli("evaluate", "--policy", "inverse", "--dataset", path, *TINY_AUGMENT, "--cache-dir", cache_dir,
            "--run-dir", run)
    assert_results(run, ["inverse"], seeds=1)
    assert [k for k in read_results(run)[0] if k.startswith("ratio_")] == ["ratio_class_0", "ratio_class_1",
                                                                         "ratio_class_2"]
    # --overwrite replaces an earlier run (and only that).
    first = (run / "results.csv").read_text()
    run_cli("evaluate", "--policy", "none", "--dataset", path, *TINY_AUGMENT, "--cache-dir", cache_dir,
            "--run-dir", run, "--overwrite")
    assert read_results(run)[0]["policy"] == "none" and (run / "results.csv").read_text() != first


def test_dataset_from_an_image_folder(cache_dir, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "my_images"
    for c, (name, n) in enumerate((("cat", 24), ("dog", 12), ("owl", 8))):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(_bars(rng, n, c)):
            Image.fromarray(img, mode="L").save(root / name / f"{i:03d}.png")
    run = tmp_path / "folder-run"
    run_cli("evaluate", "--policy", "constant:1", "--dataset", root, *TINY_AUGMENT, "--cache-dir", cache_dir,
            "--run-dir", run)
    assert_results(run, ["constant:1"], seeds=1)
    assert "test_recall_owl" in read_results(run)[0]


# -- bad input -------------------------------------------------------------------------------------
# Most cases call main(argv) in this process (the same code a subprocess runs, minus 4 s of imports each); the
# subprocess tests below check that a real process exits non-zero with one line and no traceback.
def run_main(argv, capsys) -> tuple[int, str]:
    """``train_agents.main(argv)`` in-process: ``(exit status, stderr)``."""
    from tailmix import train_agents

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        train_agents.main([str(a) for a in argv])
    return exc.value.code, capsys.readouterr().err


def assert_main_error(argv, capsys, *words: str) -> None:
    code, err = run_main(argv, capsys)
    proc = subprocess.CompletedProcess(argv, code, "", err)
    assert_user_error(proc, *words)


def test_bad_input_in_a_real_process(tmp_path, earlier_run):
    proc = run_cli("train", "--algo", "dqn", "--run-dir", tmp_path / "run", check=False)
    assert_user_error(proc, "--algo", "'dqn'", "ppo, sac, a2c, td3")
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    before = snapshot(earlier_run)
    proc = run_cli("--run-dir", earlier_run, check=False)
    assert_user_error(proc, str(earlier_run), "--overwrite", "--resume")
    assert snapshot(earlier_run) == before


@pytest.mark.parametrize("args, words", [
    (["train", "--algo", "dqn"], ["--algo", "'dqn'", "ppo"]),
    (["evaluate", "--policy", "fill", "--dataset", "no_such_data"], ["no_such_data", "digits"]),
    (["generate", "--generator", "gan"], ["--generator", "'gan'", "ddpm"]),
    (["generate", "--generator", "ddpm", "ddpm"], ["--generator", "twice"]),
    (["--generator", "ddpm", "augment", "--source", "augment"], ["--source bank"]),
    (["--source", "internet"], ["--source", "'internet'", "bank"]),
    (["benchmark", "--baselines", "none", "sometimes"], ["'sometimes'", "constant:<ratio>"]),
    (["evaluate", "--policy", "constant:-1"], ["constant:-1", ">= 0"]),
    (["evaluate", "--policy", "nowhere/model.zip"], ["no saved model", "nowhere/model.zip"]),
    (["benchmark", "--learned", "nowhere/model.zip"], ["no saved model", "nowhere/model.zip"]),
    (["benchmark", "--baselines"], ["nothing to benchmark"]),
    (["--algo", "sac", "generate"], ["--algo", "generate"]),
    (["--mode", "feature", "--loss", "focal"], ["--loss", "'focal'"]),
    (["train", "--timesteps", "0"], ["--timesteps", ">= 1"]),
    (["train", "--wrapper", "supersuit"], ["--wrapper", "shared"]),
    (["generate", "--preset", "huge"], ["--preset", "'huge'", "tiny"]),
    (["evaluate", "--threads", "0"], ["--threads", ">= 1"]),
    (["--max-ratio", "inf"], ["--max-ratio", "inf"]),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(args, words, tmp_path, capsys):
    run = tmp_path / "run"
    assert_main_error([*args, "--run-dir", run, "--cache-dir", tmp_path / "cache"], capsys, *words)
    assert not run.exists() and not (tmp_path / "cache").exists()


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    """A run folder holding earlier results."""
    run = tmp_path / "earlier"
    run.mkdir()
    (run / "run.json").write_text('{"command": "benchmark", "config": {}}')
    (run / "results.md").write_text("| policy | earlier results |\n")
    (run / "checkpoints").mkdir()
    return run


@pytest.mark.parametrize("args", [["evaluate", "--policy", "fill"], ["benchmark"], ["generate"], ["train"], []])
def test_an_existing_run_folder_is_refused_and_left_untouched(args, earlier_run, tmp_path, capsys):
    before = snapshot(earlier_run)
    words = [str(earlier_run), "--overwrite"] + (["--resume"] if args in (["train"], []) else [])
    assert_main_error([*args, "--run-dir", earlier_run, "--cache-dir", tmp_path / "cache"], capsys, *words)
    assert snapshot(earlier_run) == before and not (tmp_path / "cache").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "my_thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    before = snapshot(folder)
    assert_main_error(["evaluate", "--policy", "fill", "--run-dir", folder, "--overwrite"], capsys, "no run.json")
    assert snapshot(folder) == before


def test_resume_without_a_checkpoint_is_refused(earlier_run, tmp_path, capsys):
    before = snapshot(earlier_run)
    assert_main_error(["train", "--resume", "--run-dir", earlier_run], capsys, "no ppo checkpoint", "without --resume")
    assert snapshot(earlier_run) == before
    assert_main_error(["train", "--resume", "--run-dir", tmp_path / "never_made"], capsys, "does not exist")
    assert not (tmp_path / "never_made").exists()
    assert_main_error(["train", "--resume"], capsys, "--resume needs --run-dir")
    assert_main_error(["train", "--resume", "--overwrite", "--run-dir", earlier_run], capsys, "contradict")


def test_resume_refuses_to_change_the_env(trained, capsys):
    before = snapshot(trained)
    assert_main_error(["train", "--resume", "--run-dir", trained, "--dataset", "breastmnist"], capsys,
                      "cannot change --dataset", "'digits'")
    assert snapshot(trained) == before


def test_a_model_from_another_dataset_is_refused(trained, tmp_path, capsys):
    path = write_npz(tmp_path / "toymnist.npz")
    assert_main_error(["evaluate", "--policy", trained / "model.zip", "--dataset", path, "--run-dir",
                       tmp_path / "run", "--cache-dir", tmp_path / "cache"], capsys,
                      "trained on another dataset", "3 classes")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_quick_leaves_the_flags_you_give():
    from tailmix import train_agents

    command, cfg, explicit = train_agents.parse_args(["--quick", "train", "--timesteps", "1000", "--preset", "small"])
    cfg, fixed = train_agents.resolve_config(command, cfg, explicit)
    train_agents._quick(cfg, fixed)
    assert (command, cfg.timesteps, cfg.preset, cfg.max_steps, cfg.generator_steps) == ("train", 1000, "small", 4, 30)


def test_load_policy_reads_agent_json_then_run_json_then_the_spec(trained, tmp_path):
    from tailmix import policies

    folder = tmp_path / "copied"
    folder.mkdir()
    shutil.copy(trained / "model.zip", folder / "model.zip")
    shutil.copy(trained / "agent.json", folder / "agent.json")
    policy = policies.load_policy(str(folder / "model.zip"))
    assert type(policy.model).__name__ == "PPO" and policy.wrapper == "shared"
    # agent.json wins over run.json (which could be a hand-edited or foreign file)
    (folder / "run.json").write_text(json.dumps({"config": {"algo": "sac", "wrapper": "central"}}))
    assert policies.model_info(folder / "model.zip") == {"algo": "ppo", "wrapper": "shared"}
    (folder / "agent.json").unlink()
    assert policies.model_info(folder / "model.zip") == {"algo": "sac", "wrapper": "central"}
    (folder / "run.json").unlink()
    with pytest.raises(ValueError, match="ALGO:path"):
        policies.load_policy(str(folder / "model.zip"))
    policy = policies.load_policy(f"ppo:{folder / 'model.zip'}")  # the wrapper follows from the spaces
    assert type(policy.model).__name__ == "PPO" and policy.wrapper == "shared"
    with pytest.raises(ValueError, match="cannot load .* as a sac model"):
        policies.load_policy(f"sac:{folder / 'model.zip'}")


def test_bank_warnings_name_empty_and_tiny_pools(tiny_dataset):
    from tailmix import pipeline

    names = tiny_dataset.class_names
    assert pipeline.bank_warnings([128, 64, 13], tiny_dataset, 128) == []
    empty, tiny = pipeline.bank_warnings([128, 0, 1], tiny_dataset, 128)
    assert "no sample" in empty and names[1] in empty and names[2] not in empty
    assert f"{names[2]}: 1" in tiny and names[0] not in tiny and "repeat" in tiny


def _grey_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c, (name, n) in enumerate((("cat", 24), ("dog", 12), ("owl", 8))):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(_bars(rng, n, c)):
            Image.fromarray(img, mode="L").save(root / name / f"{i:03d}.png")
    return root


def test_image_folder_size_and_channels_from_the_cli(tmp_path):
    """--image-size / --channels reach the loader, run.json and (through the pixels) every cache key."""
    from tailmix import train_agents

    root = _grey_folder(tmp_path / "my_images")
    _, default, _ = train_agents.parse_args(["evaluate", "--dataset", str(root)])
    _, small, _ = train_agents.parse_args(["evaluate", "--dataset", str(root), "--image-size", "12", "--channels", "1"])
    a, b = train_agents.load_data(default), train_agents.load_data(small)
    assert a.image_shape == (28, 28, 3) and b.image_shape == (12, 12, 1)  # the default is today's: 28 px, RGB
    assert a.fingerprint() != b.fingerprint()  # the key of banks, generators, filters and encoders
    run = tmp_path / "run"
    run_cli("evaluate", "--policy", "none", "--dataset", root, *TINY_AUGMENT, "--cache-dir", tmp_path / "cache",
            "--run-dir", run, "--image-size", 12, "--channels", 1)
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["image_size"] == 12 and config["channels"] == 1
    assert_results(run, ["none"], seeds=1)


@pytest.mark.parametrize("argv,words", [
    (["--dataset", "digits", "--image-size", "16"], ("--image-size", "image folders")),
    (["--channels", "2"], ("--channels", "1", "3")),
    (["--image-size", "0"], ("--image-size", ">= 1")),
])
def test_image_folder_options_refuse_bad_values(argv, words, capsys, tmp_path):
    root = _grey_folder(tmp_path / "imgs")
    argv = ["evaluate", "--policy", "none", "--run-dir", tmp_path / "run", *argv]
    if "--dataset" not in argv:
        argv += ["--dataset", root]
    assert_main_error(argv, capsys, *words)
    assert not (tmp_path / "run").exists()


def test_main_job_resume_keeps_every_learned_method(cache_dir, tmp_path):
    """--resume continues the run's PPO shared model and keeps its other methods (their models are loaded, not
    trained again); the resumed run's --methods come from its run.json like its env settings."""
    run = tmp_path / "main-resume"
    run_cli(*TINY, "--timesteps", "64", "--checkpoint-every", "32", "--cache-dir", cache_dir, "--run-dir", run)
    central = run / "agents" / "ppo-central" / "model.zip"
    before = central.stat().st_mtime_ns
    proc = run_cli("--run-dir", run, "--resume", "--timesteps", "128")
    assert "train ppo-central" not in proc.stdout and "train ppo-shared" in proc.stdout
    assert {r["policy"] for r in read_results(run)} >= {"cem-schedule", "ppo-central", "ppo-shared"}
    assert central.stat().st_mtime_ns == before
