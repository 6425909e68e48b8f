"""Adversarial CLI suite: bad input a careful user or an adversarial tester tries, each case run as a real process.

Every refused case must end with one ``error: ...`` line naming what is wrong and how to fix it, exit non-zero,
print no traceback, and leave the files around it exactly as they were. The library-level cases (image modes,
concurrent cache writers, file modes) run in this process. Cases of issue 18 are marked with their number.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_agents import TINY, TINY_AUGMENT, assert_user_error, snapshot, write_npz

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train_agents.py *args`` run from ``cwd`` (the repo's copy of tailmix, whatever the folder)."""
    env = {k: v for k, v in os.environ.items() if k != "TAILMIX_DEBUG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(ROOT / "train_agents.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def fake_run(folder: Path) -> Path:
    """A folder of the user's own with a ``run.json`` tailmix did not write (``{}``), notes and data."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    (folder / "notes.txt").write_text("precious")
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("1,2\n")
    return folder


def real_run(folder: Path) -> Path:
    """A run folder as tailmix writes it (marker and run.json agree), without checkpoints."""
    from tailmix import runs

    folder.mkdir(parents=True)
    run_id = "0123456789abcdef"
    (folder / "run.json").write_text(json.dumps({"command": "train", "run_id": run_id, "config": {}}))
    (folder / runs.RUN_MARKER).write_text(json.dumps({"run_id": run_id, "digest": runs._marker_digest(run_id)}))
    (folder / "results.md").write_text("| earlier |\n")
    return folder


def immutable(path: Path, on: bool) -> bool:
    """``chattr [+-]i -R``: read-only even for root (tests run as root here, where chmod does not bind)."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def _npz(path: Path, **override) -> Path:
    """:func:`write_npz`'s dataset with some arrays replaced."""
    write_npz(path)
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def _broken_checkpoint(run: Path) -> Path:
    """``run`` with a checkpoint cut short, as SB3's in-place save left one on a full disk (issue 26)."""
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ppo_64_steps.zip").write_bytes(b"PK\x03\x04" + bytes(60))
    return run


def _case_file(t: Path) -> Path:
    (t / "a_file").write_text("not a folder")
    return t / "a_file"


# Each case: tmp_path -> (argv, words the error line must hold, words it must not hold, cwd or None). The folder
# tmp_path / "guard" (when a case makes it) must be untouched, and tmp_path / "run" must not appear.
CASES = {
    # 1: --overwrite never deletes what tailmix did not provably write
    "1-overwrite-a-run-json-written-by-hand": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir", fake_run(t / "guard"), "--overwrite"],
        ["refuses to delete", "guard", ".tailmix_run"], [], None),
    "1-overwrite-the-working-directory": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir", ".", "--overwrite"],
        ["never deletes the working directory"], [], fake_run(t / "guard")),
    "1-overwrite-a-folder-above-the-working-directory": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir", "..", "--overwrite"],
        ["never deletes the working directory"], [], (real_run(t / "guard") / "sub").mkdir() or t / "guard" / "sub"),
    "1-overwrite-a-link-to-a-run": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir",
         (t / "link").symlink_to(real_run(t / "guard")) or t / "link", "--overwrite"],
        ["symbolic link"], [], None),
    # 3: paths checked before any work, one line naming the path
    "3-run-dir-below-a-file": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir", _case_file(t) / "run"], ["--run-dir", "a_file", "is a file"],
        ["Traceback"], None),
    "3-run-dir-is-a-file": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir", _case_file(t)], ["--run-dir", "a_file", "file"], [], None),
    "3-cache-dir-below-a-file": lambda t: (
        ["evaluate", "--policy", "none", "--cache-dir", _case_file(t) / "cache", "--run-dir", t / "run"],
        ["--cache-dir", "a_file", "is a file"], [], None),
    # 4: a resume with nothing to resume says how to start over
    "4-resume-without-a-checkpoint-says-overwrite": lambda t: (
        ["train", "--resume", "--run-dir", real_run(t / "guard")], ["no ppo checkpoint", "--overwrite"], [], None),
    "26-resume-from-a-truncated-checkpoint": lambda t: (
        ["train", "--resume", "--run-dir", _broken_checkpoint(real_run(t / "guard"))],
        ["no ppo checkpoint that loads", "truncated or corrupted", "python train_agents.py train ", "/guard --overwrite",
         "--overwrite"], ["AssertionError"], None),
    "4-plain-run-on-a-run-without-checkpoint": lambda t: (
        ["train", "--run-dir", real_run(t / "guard")], ["only --overwrite applies"], ["or --resume to continue"],
        None),
    # 5: label gaps and labels absent from train, at load time
    "5-label-gap": lambda t: (
        ["evaluate", "--policy", "none", "--dataset",
         _npz(t / "gap.npz", train_labels=np.where(np.load(write_npz(t / "g0.npz"))["train_labels"] == 2, 99,
                                                   np.load(t / "g0.npz")["train_labels"])),
         "--run-dir", t / "run"],
        ["label 2 occurs in val and test but not in train", "labels 3..98 occur in no split", "99 in train"], [],
        None),
    "5-class-only-in-val": lambda t: (
        ["evaluate", "--policy", "none", "--dataset",
         _npz(t / "val.npz", val_labels=np.full((18, 1), 3)), "--run-dir", t / "run"],
        ["label 3 occurs in val", "not in train"], [], None),
    # 7: messages that say what is true
    "7-random-bytes-npz": lambda t: (
        ["evaluate", "--policy", "none", "--dataset",
         (t / "junk.npz").write_bytes(np.random.default_rng(0).bytes(4096)) and t / "junk.npz", "--run-dir", t / "run"],
        ["not an .npz archive", "numpy.savez"], ["allow_pickle"], None),
    "7-pickled-npz": lambda t: (
        ["evaluate", "--policy", "none", "--dataset",
         _npz(t / "pickled.npz", train_labels=np.array([object()] * 47)), "--run-dir", t / "run"],
        ["object (pickled) arrays"], ["allow_pickle=True"], None),
    "7-nan-images": lambda t: (
        ["evaluate", "--policy", "none", "--dataset",
         _npz(t / "nan.npz", train_images=np.full((47, 8, 8), np.nan, np.float32)), "--run-dir", t / "run"],
        ["NaN"], ["must lie in [0, 1]"], None),
    "7-huge-seed": lambda t: (["evaluate", "--policy", "none", "--seed", 2**70, "--run-dir", t / "run"],
                              ["--seed", "0..2147483647"], [], None),
    "7-empty-dataset": lambda t: (["evaluate", "--policy", "none", "--dataset", "", "--run-dir", t / "run"],
                                  ["empty", "./"], [], None),
    "7-device-spelled-as-the-flag": lambda t: (
        ["evaluate", "--policy", "none", "--device", "cuda:9", "--run-dir", t / "run"], ["--device"],
        ["device='cpu'"], None),
    # cases that passed before issue 18 (kept so they do not regress)
    "unknown-algorithm": lambda t: (["train", "--algo", "dqn", "--run-dir", t / "run"], ["--algo", "'dqn'"], [], None),
    "unknown-dataset": lambda t: (["evaluate", "--policy", "none", "--dataset", "nope", "--run-dir", t / "run"],
                                  ["nope", "digits"], [], None),
    "infinite-max-ratio": lambda t: (["--max-ratio", "inf", "--run-dir", t / "run"], ["--max-ratio"], [], None),
    "existing-folder-without-overwrite": lambda t: (
        ["evaluate", "--policy", "none", "--run-dir", fake_run(t / "guard")], ["exists", "--overwrite"], [], None),
    "missing-model": lambda t: (["evaluate", "--policy", t / "nowhere" / "model.zip", "--run-dir", t / "run"],
                                ["no saved model"], [], None),
    "resume-a-missing-folder": lambda t: (["train", "--resume", "--run-dir", t / "run"], ["does not exist"], [],
                                          None),
}


#: Cases that passed before issue 18 (tests/test_train_agents.py checks them in-process too): slow-marked here.
EARLIER = {"unknown-algorithm", "unknown-dataset", "infinite-max-ratio", "existing-folder-without-overwrite",
           "missing-model", "resume-a-missing-folder"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in EARLIER else c
                                  for c in sorted(CASES)])
def test_refused_with_one_line_and_nothing_touched(case, tmp_path):
    argv, words, never, cwd = CASES[case](tmp_path)
    guard = tmp_path / "guard"
    before = snapshot(guard) if guard.exists() else None
    cache = tmp_path / "cache"
    if "--cache-dir" not in map(str, argv):
        argv = [*argv, "--cache-dir", cache]
    t0 = time.time()
    proc = cli(*argv, cwd=cwd or ROOT)
    assert_user_error(proc, *words)
    for word in never:
        assert word not in proc.stderr, (word, proc.stderr)
    assert time.time() - t0 < 60  # refused before any training
    if before is not None:
        assert snapshot(guard) == before
    assert not (tmp_path / "run").exists() and not cache.exists()


# -- 1: --overwrite replaces a real run, and only that ------------------------------------------------
def test_overwrite_replaces_a_run_tailmix_made_and_marks_new_runs(tmp_path):
    from tailmix import runs

    run = real_run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ppo_8_steps.zip").write_text("from the earlier run")
    (run / "notes.txt").write_text("the user's own (issue 26: --overwrite keeps what tailmix did not write)")
    proc = cli("evaluate", "--policy", "none", *TINY_AUGMENT, "--cache-dir", tmp_path / "cache", "--run-dir", run,
               "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "checkpoints").exists() and runs.is_tailmix_run(run)
    assert (run / "notes.txt").exists() and "earlier" not in (run / "results.md").read_text()
    # a copied run.json without its marker, or a marker that does not match, is not proof
    (run / runs.RUN_MARKER).write_text(json.dumps({"run_id": "x", "digest": "y"}))
    assert not runs.is_tailmix_run(run)


def test_overwrite_of_an_empty_working_directory_does_not_crash(tmp_path):
    """Before issue 18, ``--run-dir . --overwrite`` ended in ``OSError: [Errno 22] Invalid argument: '.'``."""
    work = tmp_path / "empty"
    work.mkdir()
    proc = cli("evaluate", "--policy", "none", *TINY_AUGMENT, "--cache-dir", tmp_path / "cache", "--run-dir", ".",
               "--overwrite", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "results.md").is_file()


# -- 2: images of more than 8 bits are scaled, not clipped -----------------------------------------------
def _image_folder(root: Path, make) -> Path:
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            make(c, i).save(root / f"class{c}" / f"{i}.{'tif' if make(c, i).mode in ('F', 'CMYK', 'I') else 'png'}")
    return root


RAMP = np.tile(np.arange(16, dtype=np.float64), (16, 1))  # a left-to-right ramp


@pytest.mark.parametrize("mode, pixels", [
    ("I;16", (RAMP * 273).astype(np.uint16)),          # 12-bit data in 16-bit PNGs (0..4095)
    ("I", (RAMP * 1000 - 3000).astype(np.int32)),       # 32-bit integers, negative ones too
    ("F", (RAMP / 15 * 1e4).astype(np.float32)),       # 32-bit floats, far above 255
])
def test_wide_images_are_scaled_per_image_to_8_bit(mode, pixels, tmp_path):
    from PIL import Image

    from tailmix.envs.datasets import load_image_folder

    root = _image_folder(tmp_path / "imgs", lambda c, i: Image.fromarray(pixels))
    assert Image.fromarray(pixels).mode == mode
    ds = load_image_folder(root, image_size=16, grey=True)
    x = ds.train_images[0, ..., 0].astype(int)
    assert x.min() == 0 and x.max() == 255  # min-max per image, not clipped at 255
    assert (x == 255).mean() < 0.1  # before issue 18 a 12-bit ramp became ~94% white
    assert np.all(np.diff(x[8]) >= 0)  # the ramp survives


def test_palette_cmyk_and_nan_images(tmp_path):
    from PIL import Image

    from tailmix.envs.datasets import load_image_folder

    def palette(c, i):
        im = Image.new("P", (8, 8))
        im.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
        im.putdata([1] * 64)
        return im

    ds = load_image_folder(_image_folder(tmp_path / "p", palette), image_size=8)
    assert ds.train_images[0, 0, 0].tolist() == [200, 10, 30]  # the palette colour, not the index
    ds = load_image_folder(_image_folder(tmp_path / "c", lambda c, i: Image.new("CMYK", (8, 8), (255, 0, 0, 0))),
                           image_size=8)
    assert ds.train_images[0, 0, 0].tolist() == [0, 255, 255]  # cyan
    nan = np.full((8, 8), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_image_folder(_image_folder(tmp_path / "n", lambda c, i: Image.fromarray(nan, mode="F")), image_size=8)


# -- 3: a read-only cache that holds everything is usable ------------------------------------------------
@pytest.mark.slow
def test_read_only_filled_cache_is_read(tmp_path):
    cache = tmp_path / "cache"
    args = ["evaluate", "--policy", "fill", *TINY, "--seeds", "1", "--cache-dir", cache]
    first = cli(*args, "--run-dir", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    if not immutable(cache, True):
        pytest.skip("chattr is unavailable: cannot make a folder read-only for root")
    try:
        before = snapshot(cache)
        again = cli(*args, "--run-dir", tmp_path / "again")
        assert again.returncode == 0, again.stderr[-3000:]
        assert snapshot(cache) == before
        assert (tmp_path / "first" / "results.csv").read_text() == (tmp_path / "again" / "results.csv").read_text()
        # a read-only cache that lacks what is asked: refused before any training, naming the cache
        proc = cli("generate", *TINY, "--seed", "5", "--cache-dir", cache, "--run-dir", tmp_path / "run")
        assert_user_error(proc, "--cache-dir", str(cache))
    finally:
        immutable(cache, False)


def test_read_only_empty_cache_is_refused_before_training(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    if not immutable(cache, True):
        pytest.skip("chattr is unavailable: cannot make a folder read-only for root")
    try:
        t0 = time.time()
        proc = cli("generate", *TINY, "--cache-dir", cache, "--run-dir", tmp_path / "run")
        assert_user_error(proc, "--cache-dir", str(cache), "writable")
        assert "[generator ddpm (tiny)] done" not in proc.stdout and time.time() - t0 < 60
    finally:
        immutable(cache, False)


def test_read_only_run_dir_parent_is_refused_before_any_work(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    if not immutable(parent, True):
        pytest.skip("chattr is unavailable: cannot make a folder read-only for root")
    try:
        proc = cli("evaluate", "--policy", "none", "--run-dir", parent / "run", "--cache-dir", tmp_path / "cache")
        assert_user_error(proc, "--run-dir", str(parent), "not writable")
        assert not (tmp_path / "cache").exists()
    finally:
        immutable(parent, False)


def test_os_errors_become_one_line_naming_the_path():
    import errno

    from tailmix.train_agents import os_error_message

    line = os_error_message(PermissionError(errno.EACCES, "Permission denied", "/data/cache/x"))
    assert "/data/cache/x" in line and "writable" in line
    line = os_error_message(OSError(errno.ENOSPC, "No space left on device", "/runs/a/model.zip"))
    assert "/runs/a/model.zip" in line and "disk is full" in line


# -- 4: an interrupt before the first checkpoint says to start over, and that works ---------------------
@pytest.mark.slow
def test_interrupt_before_the_first_checkpoint_says_start_over(tmp_path):
    run = tmp_path / "run"
    common = ["train", "--quick", "--source", "augment", "--max-steps", "2", "--cache-dir", tmp_path / "cache",
              "--run-dir", run]
    args = [*common, "--timesteps", "100000", "--checkpoint-every", "100000"]
    env = {k: v for k, v in os.environ.items() if k != "TAILMIX_DEBUG"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_agents.py"), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until PPO runs (the run folder exists, no checkpoint yet)
        if line.startswith("[train ppo] ..."):
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--overwrite" in err and "--resume" not in err and "nothing to resume" in err, err
    again = cli(*common, "--timesteps", "64", "--checkpoint-every", "32", "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]


def test_interrupt_hint_without_a_run_folder(tmp_path):
    from tailmix.train_agents import TrainConfig, interrupt_hint

    cfg = TrainConfig(run_dir=str(tmp_path / "never"))
    assert "run the same command again" in interrupt_hint(cfg, "train")
    real_run(tmp_path / "early")
    text = interrupt_hint(TrainConfig(run_dir=str(tmp_path / "early")), "train")
    assert "--overwrite" in text and "--resume" not in text


# -- 8: concurrent savers of one cached folder ------------------------------------------------------------
def _saver(path: str, rounds: int, errors) -> None:
    from tailmix.pipeline import _save_folder  # what the generator and filter caches call

    def save(folder: Path) -> None:
        for name in ("a.bin", "b.bin", "config.json"):
            (folder / name).write_bytes(os.urandom(2048))

    for _ in range(rounds):
        try:
            _save_folder(Path(path), save)
        except Exception as err:  # noqa: BLE001 - counted, reported by the test
            errors.append(f"{type(err).__name__}: {err}")


def _reader(path: str, rounds: int, errors) -> None:
    for _ in range(rounds):
        folder = Path(path)
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            continue  # not saved yet: fine, never half of one
        if names != ["a.bin", "b.bin", "config.json"]:
            errors.append(f"reader saw {names}")


def test_save_folder_with_concurrent_writers_and_a_reader(tmp_path):
    path = str(tmp_path / "entry")
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        errors = manager.list()
        procs = [ctx.Process(target=_saver, args=(path, 60, errors)) for _ in range(3)]
        procs.append(ctx.Process(target=_reader, args=(path, 2000, errors)))
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        errors = list(errors)
    assert not errors, errors[:5]
    assert sorted(os.listdir(path)) == ["a.bin", "b.bin", "config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary folder left behind


def test_save_folder_first_writer_wins_and_stale_temporaries_go(tmp_path):
    from tailmix.io import atomic

    path = tmp_path / "entry"
    assert atomic.save_folder(path, lambda f: (f / "x").write_text("first"))
    assert not atomic.save_folder(path, lambda f: (f / "x").write_text("second"))
    assert (path / "x").read_text() == "first"
    stale = tmp_path / ".entry.dead.saving"
    stale.mkdir()
    old = time.time() - atomic.STALE_AFTER_S - 10
    os.utime(stale, (old, old))
    fresh = tmp_path / ".entry.alive.saving"
    fresh.mkdir()  # a writer still at work: kept
    atomic.save_folder(path, lambda f: (f / "x").write_text("third"), replace=True)
    assert (path / "x").read_text() == "third" and not stale.exists() and fresh.exists()


# -- 9: cache files honour the umask -----------------------------------------------------------------------
def test_cache_files_honour_the_umask(tmp_path):
    from tailmix.io.atomic import atomic_write_text, save_folder

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.json", "{}")
        save_folder(tmp_path / "entry", lambda f: atomic_write_text(f / "g.json", "{}"))
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "f.json") == 0o644 and mode(tmp_path / "entry" / "g.json") == 0o644
    assert mode(tmp_path / "entry") == 0o755
    assert mode(tmp_path / "private.json") == 0o600


# -- 6: very many classes ------------------------------------------------------------------------------------
def test_many_classes_warn_with_an_estimate_and_a_limit_refuses():
    from tailmix.pipeline import MAX_CLASSES, WARN_CLASSES, class_count_check

    assert class_count_check(WARN_CLASSES) is None
    warning = class_count_check(WARN_CLASSES + 1)
    assert warning.startswith("warning:") and "s per env step" in warning
    with pytest.raises(ValueError, match=f"at most {MAX_CLASSES}"):
        class_count_check(MAX_CLASSES + 1)


def test_corrupt_manifest_warning_does_not_ask_to_refill(tiny_dataset, tmp_path):
    from tests.generators.test_bank import fill

    bank = fill(tiny_dataset, tmp_path)
    (bank.path / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning) as caught:
        fill(tiny_dataset, tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert "filling it anew" in text and "run fill_bank again" not in text
