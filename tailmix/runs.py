"""Run folders: where a command writes, the marker that proves tailmix made one, and the JSON files in it.

Every command writes into a run folder (``--run-dir``) that it refuses to overwrite unless ``--overwrite`` (only a
folder whose ``.tailmix_run`` marker matches its ``run.json``) or ``--resume``. The CLI (``tailmix.train_agents``)
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
        from tailmix.agents.sb3 import latest_checkpoint

        if latest_checkpoint(path, cfg.algo) is None:
            raise ValueError(f"--resume: {path / 'checkpoints'} holds no {cfg.algo} checkpoint to continue from (the "
                             "run stopped before its first one; they are saved every --checkpoint-every timesteps). "
                             "Start it over: the same command without --resume but with --overwrite")
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


def prepare_run_dir(cfg, command: str) -> Path:
    """Create the run folder (once every check passed) and write ``run.json``.

    It is checked again (:func:`check_run_dir`): another process may have made it since the first check.
    ``--overwrite`` empties the folder first; ``--resume`` keeps it and appends this invocation to the history.
    """
    path = check_run_dir(cfg, command)
    resume = getattr(cfg, "resume", False)
    meta = _read_json(path / "run.json") if resume else None
    if not resume and cfg.overwrite and path.is_dir() and any(path.iterdir()):
        check_deletable(path)  # checked again right before deleting: never a folder tailmix did not make
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    call = {"argv": sys.argv[1:], "time": time.strftime("%Y-%m-%d %H:%M:%S"), "resume": bool(resume)}
    meta = meta or {"command": command, "history": []}
    if not (resume and is_tailmix_run(path)):  # a new run, or one made before markers existed: mark it now
        meta["run_id"] = os.urandom(16).hex()
        _write_json(path / RUN_MARKER, {"run_id": meta["run_id"], "digest": _marker_digest(meta["run_id"]),
                                        "note": "written by tailmix; train_agents --overwrite may delete this folder"})
    meta.update(config=dataclasses.asdict(cfg), versions=versions())
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
