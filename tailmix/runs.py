"""Run folders: where a command writes, the marker that proves tailmix made one, and the JSON files in it.

Every command writes into a run folder (``--run-dir``) that it refuses to overwrite unless ``--overwrite`` (only a
folder whose ``.tailmix_run`` marker matches its ``run.json``, and in it only what the marker's manifest lists) or
``--resume`` (only with a checkpoint that loads, on the same dataset). The CLI (``tailmix.train_agents``)
checks the folder before any work (:func:`check_run_dir`) and the commands (``tailmix.commands``) create it
(:func:`prepare_run_dir`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from tailmix.pipeline import versions, writable_folder_problem


# -- small helpers ----------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file in the same folder, then ``os.replace``: never a half-written file."""
    from tailmix.io.atomic import atomic_write_text

    atomic_write_text(path, text)


def _write_json(path: Path, obj) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} ({err}); fix or delete it") from None


# -- settings inherited from an earlier run -------------------------------------------------------

def _update_json(path: Path, **entries) -> None:
    """Merge ``entries`` into the JSON object at ``path`` (written atomically)."""
    meta = _read_json(path) or {}
    meta.update(entries)
    _write_json(path, meta)

def _stored_config(folder: Path) -> dict | None:
    """The ``config`` of the ``run.json`` in ``folder``, or ``None`` when it holds none."""
    meta = _read_json(folder / "run.json")
    return None if meta is None else meta.get("config")


# -- run folders ------------------------------------------------------------------------------------
def _run_path(cfg, command: str) -> Path:
    if cfg.run_dir:
        return Path(cfg.run_dir)
    base = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


#: What ``--quick`` sets (``tailmix.configs.QUICK``); here, below the configs, so :func:`rerun_command` can read it.
QUICK_SETTINGS = {"preset": "tiny", "generator_steps": 30, "per_class": 24, "max_steps": 4, "filter_epochs": 10,
                  "timesteps": 256, "checkpoint_every": 128, "seeds": 2}


def rerun_command(cfg, command: str, *, extra: tuple[str, ...] = ("--overwrite",)) -> str:
    """The exact command line that runs ``cfg`` again (every setting that differs from what the flags given would
    default to, ``--run-dir`` included) plus ``extra``: advice a user can paste, unlike "the same command", which
    after ``--resume`` (settings read from run.json) would start a run with the default settings."""
    import shlex

    base = type(cfg)()
    if cfg.quick:
        for name, value in QUICK_SETTINGS.items():  # --quick sets these; naming them again adds nothing
            if hasattr(base, name):
                setattr(base, name, value)
    argv = [] if command == "main" else [command]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("run_dir", "resume", "overwrite") or value == getattr(base, f.name):
            continue
        if value is None and f.name != "budget_minutes":  # only --budget-minutes spells None (none); the rest
            continue                                       # are None by default, unless --quick set them
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif f.name == "generator":
            argv += [flag, *str(value).split()]
        else:
            argv += [flag, "none" if value is None else str(value)]
    argv += ["--run-dir", str(cfg.run_dir), *extra]
    return "python train_agents.py " + shlex.join(argv)


def check_run_dir(cfg, command: str) -> Path:
    """The run folder this command will write, refusing (before anything is written) one that would clobber
    earlier results: an existing non-empty folder needs ``--overwrite`` (and must be a tailmix run) or
    ``--resume`` (and must hold a checkpoint)."""
    path = _run_path(cfg, command)
    resume = getattr(cfg, "resume", False)
    can_resume = command in ("train", "main")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--run-dir {path} is a file; choose a folder")
    if resume:
        from tailmix.agents.sb3 import latest_checkpoint, usable_checkpoint

        if usable_checkpoint(path, cfg.algo) is None:
            why = ("the run stopped before its first one; they are saved every --checkpoint-every timesteps"
                   if latest_checkpoint(path, cfg.algo) is None else "every one there is truncated or corrupted")
            if (path / REPLACED).is_dir():  # an --overwrite killed before its first result: the old run is there
                why += (f"; the run that an interrupted --overwrite was replacing is kept in {path / REPLACED}: move "
                        "its files back to resume that one")
            raise ValueError(f"--resume: {path / 'checkpoints'} holds no {cfg.algo} checkpoint that loads ({why}). "
                             "Start the run over (without --resume, with the settings of its run.json): "
                             f"{rerun_command(cfg, command)}")
        return path
    if path.exists() and any(path.iterdir()):
        if not cfg.overwrite:
            hint = ""
            if can_resume:
                from tailmix.agents.sb3 import latest_checkpoint

                algo = getattr(cfg, "algo", "ppo")
                hint = (" or --resume to continue it" if latest_checkpoint(path, algo) is not None else
                        f" (--resume needs a {algo} checkpoint; it holds none, so only --overwrite applies)")
            raise ValueError(f"run folder {path} exists; pass --overwrite to replace it" + hint
                             + ", or choose another --run-dir")
        check_deletable(path)
    problem, _ = writable_folder_problem(path)
    if problem:
        raise ValueError(f"cannot write the run folder --run-dir {path}: {problem}; choose a folder you can write to")
    cfg.run_dir = str(path)  # recorded in run.json, and named in the resume hint after an interrupt
    return path


#: The marker file of a run folder: tailmix writes it when it creates the folder, and ``--overwrite`` deletes only
#: a folder whose marker checks out against its ``run.json``.
RUN_MARKER = ".tailmix_run"


def _marker_digest(run_id: str) -> str:
    return hashlib.sha256(f"tailmix run folder {run_id}".encode()).hexdigest()


def is_tailmix_run(path: Path) -> bool:
    """Whether tailmix made ``path``: its marker holds a run id and that id's digest, and its ``run.json`` the same
    id (a hand-made ``run.json``, even a copied one without the marker, does not count)."""
    try:
        marker = json.loads((path / RUN_MARKER).read_text())
        meta = json.loads((path / "run.json").read_text())
        run_id = marker["run_id"]
        return (isinstance(run_id, str) and marker.get("digest") == _marker_digest(run_id)
                and isinstance(meta, dict) and meta.get("run_id") == run_id)
    except (OSError, ValueError, TypeError, KeyError):
        return False


def check_deletable(path: Path) -> None:
    """Refuse (``ValueError``) to let ``--overwrite`` delete ``path`` unless tailmix provably made it; never the
    working directory, a folder above it, the home folder, or a symbolic link."""
    real, cwd = path.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents or real == Path.home().resolve():
        raise ValueError(f"--overwrite never deletes the working directory, a folder above it or the home folder "
                         f"(--run-dir {path} is {real}); choose a new folder below it, e.g. --run-dir runs/mine")
    if path.is_symlink():
        raise ValueError(f"--overwrite refuses to delete {path}: it is a symbolic link (to {real}); remove it yourself "
                         "or choose another --run-dir")
    if not is_tailmix_run(path):
        raise ValueError(f"--overwrite refuses to delete {path}: it holds no run.json with a matching {RUN_MARKER} "
                         "marker, so tailmix cannot prove it made this folder (a folder of yours, or a run of a "
                         "tailmix older than this check). Remove it yourself or choose another --run-dir")


#: What tailmix may write at the top of a run folder, whatever the command or backend. A run's marker lists the
#: ones it claims (its manifest): ``--overwrite`` removes those and keeps everything else (a user's notes or data).
#: Folders here (``checkpoints``, ``tb``, ...) are tailmix's as a whole.
RUN_OUTPUTS = (RUN_MARKER, "run.json", "timings.json", "quality.txt", "quality.json", "samples.png", "leakage.txt",
               "leakage.json", "bank.json", "results.csv", "results.md", "results.png", "model.zip", "agent.json",
               "checkpoints", "checkpoint", "tb", "agents", "verdict.md", "verdict.json", "recommended_policy.json",
               "ratios.png")
#: Where ``--overwrite`` keeps the run it replaces (inside the run folder) until the new run has its first result.
REPLACED = ".tailmix_replaced"


def written_by_tailmix(path: Path) -> list[str]:
    """The top-level names in ``path`` that tailmix wrote: those its marker's manifest lists (all of
    :data:`RUN_OUTPUTS` for a run made before manifests), and temp files a killed writer left."""
    try:
        names = json.loads((path / RUN_MARKER).read_text()).get("written")
    except (OSError, ValueError, AttributeError):
        names = None
    if not isinstance(names, list):
        names = RUN_OUTPUTS
    claimed = {n for n in names if isinstance(n, str) and n in RUN_OUTPUTS}  # never a path of the user's choosing
    temps = tuple(f".{n}." for n in claimed)
    out = []
    for entry in path.iterdir() if path.is_dir() else ():
        name = entry.name
        if name in claimed or (name.startswith(temps) and name.endswith(".tmp")) or (
                name.startswith(".tmp-model-") and name.endswith(".zip")):
            out.append(name)
    return sorted(out)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _move_aside(path: Path) -> None:
    """Move what the run in ``path`` wrote into ``path / REPLACED`` (the marker and run.json last, so the folder
    stays a provable tailmix run at every moment); a user's own files stay where they are."""
    aside = path / REPLACED
    aside.mkdir()
    names = written_by_tailmix(path)
    for name in sorted(names, key=lambda n: n in (RUN_MARKER, "run.json")):
        os.rename(path / name, aside / name)
    _replacing.add(path.resolve())


#: Run folders whose earlier run this process moved aside (:func:`finish_run_dir` settles them).
_replacing: set[Path] = set()


def has_result(path: Path) -> bool:
    """Whether the run in ``path`` produced something worth keeping: a checkpoint, a model or a results table."""
    ckpts = path / "checkpoints"
    return (any((path / n).exists() for n in ("model.zip", "checkpoint", "results.csv", "quality.json"))
            or (ckpts.is_dir() and any(ckpts.iterdir())))


def _restore_replaced(path: Path) -> bool:
    """Remove what the (failed) new run in ``path`` wrote and put the replaced run back; whether all of it went back."""
    aside = path / REPLACED
    for name in written_by_tailmix(path):
        _remove(path / name)
    for entry in sorted(aside.iterdir(), key=lambda p: p.name in (RUN_MARKER, "run.json"), reverse=True):
        if not (path / entry.name).exists():  # the run.json and marker first: a tailmix run at every moment
            os.rename(entry, path / entry.name)
    try:
        aside.rmdir()
    except OSError:
        return False
    return True


def _settle_replaced(path: Path, *, ok: bool) -> None:
    """End an ``--overwrite``: drop the replaced run when the new one succeeded or has a result (a checkpoint to
    resume, a model, a table), else restore it."""
    aside = path / REPLACED
    if not aside.is_dir():
        return
    if ok or has_result(path):
        shutil.rmtree(aside)
    elif _restore_replaced(path):
        print(f"the new run in {path} ended before its first result; the run it was to replace is back in place",
              file=sys.stderr, flush=True)
    else:
        print(f"the new run in {path} ended before its first result; the run it was to replace is in {aside} (some "
              "of its files would have replaced newer ones)", file=sys.stderr, flush=True)


def finish_run_dir(cfg, *, ok: bool) -> None:
    """Called when a command ends (``ok``: it succeeded): an ``--overwrite`` this process started is settled
    (:func:`_settle_replaced`). Does nothing for a run folder it did not replace."""
    run = getattr(cfg, "run_dir", None)
    if not run or Path(run).resolve() not in _replacing:
        return
    _replacing.discard(Path(run).resolve())
    _settle_replaced(Path(run), ok=ok)


def check_dataset_unchanged(cfg, dataset) -> None:
    """``--resume`` on a dataset other than the run's: refuse (one line, before any work), naming both fingerprints.

    Continuing PPO on changed data would mix two experiments without a word; with a class added or removed the
    observation space no longer matches the checkpoint's, which SB3 reports only after the bank and encoder.
    """
    if not getattr(cfg, "resume", False) or not cfg.run_dir:
        return
    stored = (_read_json(Path(cfg.run_dir) / "run.json") or {}).get("dataset_fingerprint")
    now = dataset.fingerprint()
    if stored is None:
        print(f"warning: {Path(cfg.run_dir) / 'run.json'} holds no dataset fingerprint (a run of an older tailmix), "
              "so --resume cannot check that the dataset is unchanged", flush=True)
    elif stored != now:
        raise ValueError(f"--resume: the dataset {cfg.dataset} changed since {cfg.run_dir} was started (its "
                         f"fingerprint was {stored[:16]}, it is now {now[:16]}: images, labels or class folders "
                         "differ); restore that data to continue this run, or train on the new data in a new run "
                         "(another --run-dir, or this one with --overwrite instead of --resume)")


def prepare_run_dir(cfg, command: str, dataset=None) -> Path:
    """Create the run folder (once every check passed) and write ``run.json``.

    It is checked again (:func:`check_run_dir`): another process may have made it since the first check.
    ``--overwrite`` moves what the earlier run wrote (its manifest) into ``REPLACED`` and keeps the user's own files;
    :func:`finish_run_dir` drops the earlier run once the new one succeeds (or has a checkpoint), and puts it back if
    the new one fails before that. ``--resume`` keeps the folder and appends this invocation to the history.
    ``dataset``, when given, has its fingerprint stored (``--resume`` refuses another dataset), and its test split's
    class sizes (``test_counts``, for the verdict).
    """
    path = check_run_dir(cfg, command)
    resume = getattr(cfg, "resume", False)
    if (path / REPLACED).is_dir() and path.resolve() not in _replacing:  # an --overwrite that was killed
        _settle_replaced(path, ok=False)
    meta = _read_json(path / "run.json") if resume else None
    if not resume and cfg.overwrite and path.is_dir() and any(path.iterdir()):
        check_deletable(path)  # checked again right before moving it aside: never a folder tailmix did not make
        _move_aside(path)
    path.mkdir(parents=True, exist_ok=True)
    call = {"argv": sys.argv[1:], "time": time.strftime("%Y-%m-%d %H:%M:%S"), "resume": bool(resume)}
    meta = meta or {"command": command, "history": []}
    if not (resume and is_tailmix_run(path)):  # a new run, or one made before markers existed: mark it now
        meta["run_id"] = os.urandom(16).hex()
    # The manifest: what this run may write, less what the user already keeps under those names.
    mine = set(written_by_tailmix(path)) if resume else set()
    written = sorted(n for n in RUN_OUTPUTS if n in mine or not (path / n).exists() or n == RUN_MARKER)
    _write_json(path / RUN_MARKER, {"run_id": meta["run_id"], "digest": _marker_digest(meta["run_id"]),
                                    "written": written,
                                    "note": "written by tailmix; train_agents --overwrite replaces the files listed "
                                            "in 'written' and keeps the rest"})
    meta.update(config=dataclasses.asdict(cfg), versions=versions())
    if dataset is not None:
        import numpy as np

        meta["dataset_fingerprint"] = dataset.fingerprint()
        # the test split's class sizes: the verdict's intervals resample them, without loading the dataset again
        meta["test_counts"] = np.bincount(np.asarray(dataset.test_labels), minlength=dataset.num_classes).tolist()
    meta.setdefault("history", []).append(call)
    _write_json(path / "run.json", meta)
    return path


def check_cache_dir(cfg) -> None:
    """Refuse a ``--cache-dir`` that is (or is below) a file before any work. A read-only cache is allowed: what
    it holds is read, and a missing entry is refused before it is trained (``tailmix.pipeline``)."""
    problem, permission = writable_folder_problem(cfg.cache_dir)
    if problem and not permission:
        raise ValueError(f"--cache-dir {cfg.cache_dir}: {problem}; choose a folder (it is made if missing)")


def interrupt_hint(cfg, command: str) -> str:
    """What to do after Ctrl-C: resume from a checkpoint when there is one, else start over (never a loop)."""
    from tailmix.agents.sb3 import latest_checkpoint

    run = Path(cfg.run_dir)
    again = "train " if command == "train" else ""
    if latest_checkpoint(run, cfg.algo) is not None:
        return f"interrupted; continue with: python train_agents.py {again}--run-dir {run} --resume"
    if not run.is_dir() or not any(run.iterdir()):
        return (f"interrupted before anything was written to {run}; run the same command again (generators, banks "
                "and encoders cached so far are reused)")
    return (f"interrupted before the first checkpoint (one every --checkpoint-every {cfg.checkpoint_every} "
            f"timesteps), so {run} holds nothing to resume; start over with the same command plus --overwrite")
