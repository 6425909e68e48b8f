"""Settings refused before any work (issue 26): each case runs the CLI in this process and must end in one
``error: ...`` line within seconds, with no cache or run folder made, where before the fix it failed (or ran out
of memory) after the generator, bank and encoder.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_agents import write_npz


def refused(capsys, tmp_path: Path, *argv) -> str:
    """Run ``train_agents`` in-process; assert a one-line error, quickly, and nothing written; return the line."""
    from tailmix.train_agents import main

    cache, run = tmp_path / "cache", tmp_path / "run"
    argv = [str(a) for a in argv]
    if "--run-dir" not in argv:
        argv += ["--run-dir", str(run)]
    t0 = time.time()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--cache-dir", str(cache)])
    assert exc.value.code == 2
    assert time.time() - t0 < 30  # refused before any training
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not cache.exists() and not run.exists()
    return lines[0]


def _folder_of_images(root: Path, names=(b"a", b"b")) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(os.fsdecode(folder) + f"/{i}.png")
    return root


# -- 11: every flag against the dataset, in train, --quick and unbudgeted runs -------------------------
@pytest.mark.parametrize("argv", [["train", "--quick"], ["--quick"], ["--budget-minutes", "none"],
                                  ["train", "--source", "augment"]])
def test_val_folds_beyond_the_rarest_class_is_refused_before_work(argv, capsys, tmp_path):
    data = write_npz(tmp_path / "toy.npz")  # rarest class: 5 train + 6 val images
    line = refused(capsys, tmp_path, *argv, "--dataset", data, "--val-folds", 12)
    assert "--val-folds 12" in line and "has 11" in line and "--val-folds <= 11" in line


def test_unlabeled_is_checked_before_work(capsys, tmp_path):
    line = refused(capsys, tmp_path, "train", "--source", "augment", "--unlabeled", tmp_path)
    assert "--unlabeled" in line and "--source augment" in line
    line = refused(capsys, tmp_path, "generate", "--unlabeled", tmp_path / "nowhere")
    assert "is not a folder" in line
    (tmp_path / "empty").mkdir()
    line = refused(capsys, tmp_path, "generate", "--unlabeled", tmp_path / "empty")
    assert "holds no image files" in line
    line = refused(capsys, tmp_path, "generate", "--unlabeled", _folder_of_images(tmp_path / "u"),
                   "--pretrain-steps", 0)
    assert "--pretrain-steps" in line


# -- 4: --guidance-scale is bounded --------------------------------------------------------------------
def test_huge_guidance_scale_is_refused(capsys, tmp_path):
    from tailmix.configs import MAX_GUIDANCE_SCALE

    line = refused(capsys, tmp_path, "generate", "--guidance-scale", "1e30")
    assert "--guidance-scale" in line and f"{MAX_GUIDANCE_SCALE:g}" in line and "saturate" in line


# -- 9: a run folder whose name is not UTF-8 -----------------------------------------------------------
def test_non_utf8_run_dir_is_refused_before_work(capsys, tmp_path):
    run = os.fsdecode(os.fsencode(tmp_path) + b"/r\xe9un")
    line = refused(capsys, tmp_path, "train", "--quick", "--source", "augment", "--run-dir", run)
    assert "--run-dir" in line and "UTF-8" in line and "\\xe9" in line
    assert not os.path.exists(run)


# -- 10: memory estimated before work ------------------------------------------------------------------
def test_huge_image_size_is_refused_with_the_memory_it_needs(capsys, tmp_path):
    root = _folder_of_images(tmp_path / "imgs")
    line = refused(capsys, tmp_path, "evaluate", "--dataset", root, "--image-size", 100000)
    assert "--image-size 100000" in line and "GB of memory" in line and "available" in line


def test_huge_n_envs_is_refused_with_the_memory_it_needs(capsys, tmp_path):
    line = refused(capsys, tmp_path, "train", "--source", "augment", "--n-envs", 100000)
    assert "--n-envs 100000" in line and "GB of memory" in line


def test_memory_estimates_scale_and_allow_the_defaults():
    from tailmix.configs import TrainConfig
    from tailmix.preflight import available_memory, image_size_memory, n_envs_memory

    cfg = TrainConfig(n_envs=1)
    assert n_envs_memory(cfg, 10) < 5e6  # about 1.5 MB measured for one digits-LT copy at PPO's full rollout
    long = TrainConfig(n_envs=100, timesteps=10**6)  # the full rollout of 128 steps per slot, as for one copy
    assert n_envs_memory(long, 10) == pytest.approx(100 * n_envs_memory(cfg, 10))
    small = image_size_memory(TrainConfig(image_size=28), 1000)
    assert small < 1e9 and image_size_memory(TrainConfig(image_size=56), 1000) > 3 * small
    assert available_memory() is None or available_memory() > 0


def test_non_utf8_class_folder_names_are_written_safely(tmp_path):
    """Before issue 26 a Latin-1 class folder ran the whole pipeline, then failed writing results.csv."""
    from tests.test_cli_adversarial import cli
    from tests.test_train_agents import TINY_AUGMENT, read_results

    from tailmix.envs.datasets import load_image_folder

    root = _folder_of_images(tmp_path / "imgs", names=(b"caf\xe9", b"tea"))
    assert list(load_image_folder(root, image_size=8).class_names) == ["caf\\xe9", "tea"]
    run = tmp_path / "run"
    proc = cli("evaluate", "--policy", "none", *TINY_AUGMENT, "--dataset", root, "--image-size", 8, "--cache-dir",
               tmp_path / "cache", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ratio_caf\\xe9" in read_results(run)[0]


# -- 13: one process per run folder --------------------------------------------------------------------
def test_a_run_folder_another_process_writes_is_refused_before_work(capsys, tmp_path):
    """Before issue 26 a second run into the same new --run-dir did its pre-PPO work, then failed."""
    from tailmix.preflight import claim_run_dir
    from tailmix.train_agents import main
    from tests.test_train_agents import TINY_AUGMENT

    run = tmp_path / "run"
    other = claim_run_dir(run)  # what the first process holds while it works (flock: per open file, so it binds here)
    try:
        line = refused(capsys, tmp_path, "evaluate", "--policy", "none", *TINY_AUGMENT)
        assert "being written by another tailmix process" in line and f"pid {os.getpid()}" in line
    finally:
        other.release()
    main(["evaluate", "--policy", "none", *TINY_AUGMENT, "--run-dir", str(run), "--cache-dir", str(tmp_path / "c")])
    assert (run / "results.csv").is_file()
    claim_run_dir(run).release()  # the finished run released its claim


# -- 4: saturated samples are named, and a strong guidance is blamed, not --tau --------------------------
def test_saturated_bank_images_warn_and_name_the_guidance_scale(tiny_dataset):
    from tailmix.pipeline import bank_warnings, saturation_warning

    rng = np.random.default_rng(0)
    shape = tiny_dataset.image_shape
    grey = [rng.integers(1, 255, (4, *shape), dtype=np.uint8) for _ in range(3)]
    assert saturation_warning(grey, tiny_dataset, guidance_scale=50) is None
    black_white = [*grey[:2], (rng.integers(0, 2, (4, *shape)) * 255).astype(np.uint8)]
    line = saturation_warning(black_white, tiny_dataset, guidance_scale=50)
    assert line.startswith("warning:") and "saturated" in line and "c2: 100%" in line
    assert "--guidance-scale (now 50" in line
    assert "--generator-steps" in saturation_warning(black_white, tiny_dataset)
    empty = bank_warnings(np.array([4, 4, 0]), tiny_dataset, 4, guidance_scale=50)[0]
    assert "--guidance-scale (now 50)" in empty and "--tau" in empty
    assert "--guidance-scale" not in bank_warnings(np.array([4, 4, 0]), tiny_dataset, 4)[0]


def test_a_max_ratio_beyond_the_dataset_is_refused_before_work(capsys, tmp_path):
    line = refused(capsys, tmp_path, "evaluate", "--source", "augment", "--max-ratio", "1e8")  # digits: 100 real
    assert "--max-ratio 1e+08" in line and "use --max-ratio < 2.15e+07" in line
    line = refused(capsys, tmp_path, "evaluate", "--source", "augment", "--max-ratio", "1e7", "--mode", "pixel")
    assert "--max-ratio 1e+07" in line and "GB of memory" in line
