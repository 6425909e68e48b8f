"""tailmix command line: fill a synthetic bank, train sampler policies, evaluate and benchmark them.

    python train_agents.py                 # the main job on the embedded digits-LT dataset (a few minutes on 2 CPUs)
    python train_agents.py --quick         # a smoke version (~1 min)
    python train_agents.py generate --help
    python train_agents.py train --algo sac --timesteps 20000
    python train_agents.py train --run-dir runs/sac --resume        # continue an interrupted run
    python train_agents.py evaluate --policy runs/<run>/model.zip
    python train_agents.py benchmark --learned runs/<run>/model.zip
    python train_agents.py --dataset retinamnist                    # or a .npz path, or an image folder
    python train_agents.py --dataset my_images/ --budget-minutes 20 # sizes fitted to 20 minutes (default 10)

Every command writes into a run folder (``--run-dir``, default ``runs/<command>-<time>``) that it refuses
to overwrite unless ``--overwrite`` (or ``--resume`` for ``train`` and the main job) is given; ``--overwrite``
only ever deletes a folder tailmix provably made (its ``.tailmix_run`` marker matches its ``run.json``), and never
the working directory or a folder above it. Trained generators, filters, encoders and
banks are cached under ``--cache-dir`` by a hash of their config and the dataset, and reused by later runs.

A saved model is evaluated in the env it was trained in: ``evaluate`` and ``benchmark`` take the env settings
(dataset, mode, generator, ...) from the ``run.json`` beside the model, unless flags override them; ``--resume``
takes every setting from the run folder's ``run.json``.

Mistakes (an unknown algorithm, a missing file, a run or cache folder that cannot be written, ...) end with a
one-line ``error: ...`` and exit status 2, checked before any training where they can be; set
``TAILMIX_DEBUG=1`` to see the traceback instead.

This module parses arguments, handles run folders and dispatches; the work (data, generator, filter, bank,
encoder, env settings, with their caches) is done by ``tailmix.pipeline``, which the benchmarks call too.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tailmix.budget import DEFAULT_MINUTES as DEFAULT_BUDGET_MINUTES
from tailmix.pipeline import (GENERATORS, SOURCES, Settings, ensure_bank, generator_kinds, load_data, num_sources,
                              one_kind, phase, prepared_env_kwargs, versions, writable_folder_problem)

#: Settings that shape the env (and the bank behind it). A saved model is evaluated with the values it was trained
#: with unless flags override them; a resumed run may not change them.
ENV_FIELDS = ("dataset", "mode", "max_steps", "max_ratio", "reward", "loss", "source", "generator", "preset",
              "generator_steps", "per_class", "filter", "filter_epochs", "tau", "seed", "quick", "image_size", "channels",
              "guidance_scale", "unlabeled", "pretrain_steps", "filter_tries", "encoder_epochs")
#: Where things live: inherited like ENV_FIELDS, but may change (a moved data or cache folder).
PLACE_FIELDS = ("data_root", "cache_dir", "device")
#: What a resumed training run may not change besides ENV_FIELDS (the checkpoint was made with them).
MODEL_FIELDS = ("algo", "wrapper", "n_envs")


# -- configs: one dataclass per command; the attribute docstrings are the --help text ----------
@dataclass
class Common(Settings):
    """Settings every command shares: the pipeline's (``tailmix.pipeline.Settings``) and the run folder's."""

    run_dir: str | None = None
    """Output folder (default: runs/<command>-<time>)."""
    overwrite: bool = False
    """Replace an existing run folder (only one tailmix made: its .tailmix_run marker matches its run.json)."""
    threads: int = 1
    """Torch CPU threads for generator, filter and agent training (the env pins its own). Results depend on it;
    more than 1 only pays on idle machines with spare cores (2 threads on a busy 2-core box ran 10-60x slower)."""


@dataclass
class GenerateConfig(Common):
    """Fill the synthetic bank (train the generator if needed) and print its quality report."""


@dataclass
class TrainConfig(Common):
    """Train an SB3 sampler policy on the env."""

    algo: str = "ppo"
    """SB3 algorithm: ppo, sac, a2c, td3."""
    wrapper: str = "shared"
    """'shared' (one policy for every class agent) or 'central' (one agent sets every ratio)."""
    timesteps: int = 20000
    """Total SB3 timesteps (with 'shared', each class agent's step counts)."""
    n_envs: int = 1
    """Env copies, each with its own seed."""
    checkpoint_every: int = 5000
    """Save a checkpoint every this many timesteps."""
    resume: bool = False
    """Continue from the latest checkpoint in --run-dir (its settings are read from the run.json there)."""
    backend: str = "sb3"
    """'sb3' (Stable-Baselines3 in this process) or 'rllib' (Ray RLlib PPO, one shared policy, several env runners; needs the ray extra; train command only)."""
    env_runners: int = 2
    """--backend rllib: Ray actors stepping env copies, one CPU each."""


@dataclass
class EvaluateConfig(Common):
    """Evaluate one policy (a saved SB3 model.zip or a baseline spec) on the test split over seeds."""

    policy: str = "none"
    """A saved model (path to model.zip; its algo and wrapper are read from agent.json beside it, or give
    ALGO:path) or a baseline: none, constant:R, fill, inverse[:B], random[:S]."""
    seeds: int = 5
    """Number of evaluation seeds (episodes with a fresh classifier each)."""


@dataclass
class BenchmarkConfig(Common):
    """Every baseline plus learned policies, mean and std over seeds: CSV, markdown and PNG."""

    seeds: int = 5
    """Number of evaluation seeds."""
    learned: list[str] = field(default_factory=list)
    """Saved models (model.zip paths) to include."""
    baselines: list[str] = field(default_factory=lambda: ["none", "constant:0.5", "constant:1", "constant:2",
                                                          "fill", "inverse", "random"])
    """Baseline specs to include."""


@dataclass
class MainConfig(TrainConfig):
    """The main job: fill the bank, train a PPO sampler, benchmark it against every baseline."""

    seeds: int = 5
    """Number of benchmark seeds."""
    budget_minutes: float | str | None = DEFAULT_BUDGET_MINUTES
    """Minutes the main job may take on this machine: before the generator trains, a few steps of each phase are
    measured and generator steps, bank size, encoder epochs and agent timesteps are shrunk (never grown past their
    defaults) to fit; sizes given as flags are kept. 0 or none: no budget (the default sizes)."""


COMMANDS = {"generate": GenerateConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
            "benchmark": BenchmarkConfig}


def _field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field) of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass))
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = str(b.value.value)
    return docs


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    # Defaults are SUPPRESSed: a flag the user did not give is absent from the namespace, so we know which
    # settings were chosen (they override inherited ones) and `--quick train` keeps the top-level --quick.
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{docs.get(f.name, '')} (default: {_default(f)})"
        kw = dict(default=argparse.SUPPRESS, help=help_)
        if f.name == "generator":  # one or several kinds; kept as one space-separated string (run.json, caches)
            parser.add_argument(flag, nargs="+", metavar="KIND", **kw)
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif str(f.type).startswith("list"):
            parser.add_argument(flag, nargs="*", metavar=f.name.upper().rstrip("S"), **kw)
        else:
            typ = {"int": int, "float": float, "int | None": int, "str | None": str}.get(str(f.type), str)
            parser.add_argument(flag, type=typ, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train_agents", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser, MainConfig)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, cls in COMMANDS.items():
        p = sub.add_parser(name, help=cls.__doc__, description=cls.__doc__)
        _add_arguments(p, cls)
    return parser


def parse_args(argv=None) -> tuple[str, Common, frozenset[str]]:
    """``(command, config, names of the fields given on the command line)``."""
    ns = vars(build_parser().parse_args(argv))
    if isinstance(ns.get("generator"), list):
        ns["generator"] = " ".join(ns["generator"])
    command = ns.pop("command", None) or "main"
    cls = COMMANDS.get(command, MainConfig)
    names = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(set(ns) - names)
    if stray:
        flags = ", ".join("--" + s.replace("_", "-") for s in stray)
        raise ValueError(f"{flags} do(es) not apply to `{command}`; see `python train_agents.py {command} --help`")
    return command, cls(**ns), frozenset(ns)


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


# -- checking a config before anything is written -----------------------------------------------
#: Seeds must stay below this: numpy seeds its global generator with 32-bit values, and SB3 seeds env copies with
#: ``seed + index``.
MAX_SEED = 2**31

def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _choice(cfg, name: str, choices) -> None:
    value = getattr(cfg, name)
    _require(value in choices, f"unknown --{name.replace('_', '-')} {value!r}; choose one of {', '.join(choices)}")


def check_config(cfg) -> None:
    """Raise ``ValueError`` (saying how to fix it) for any bad setting, before a run folder or cache is touched."""
    kinds = generator_kinds(cfg)
    _require(bool(kinds), "--generator needs at least one kind, e.g. --generator ddpm augment")
    for kind in kinds:
        _require(kind in GENERATORS, f"unknown --generator {kind!r}; choose one or several of {', '.join(GENERATORS)}")
    _require(len(set(kinds)) == len(kinds), f"--generator lists a kind twice ({cfg.generator}); give each once")
    _require(len(kinds) == 1 or cfg.source == "bank", f"several generators ({cfg.generator}) fill one bank each: "
             "they need --source bank")
    _choice(cfg, "source", SOURCES)
    from tailmix.envs.config import MODES, REWARDS

    _choice(cfg, "mode", MODES)
    _choice(cfg, "reward", REWARDS)
    for name in ("max_steps", "per_class", "filter_epochs", "timesteps", "n_envs", "checkpoint_every", "seeds",
                 "threads"):
        value = getattr(cfg, name, 1)
        _require(isinstance(value, int) and value >= 1, f"--{name.replace('_', '-')} must be >= 1; got {value}")
    _require(cfg.generator_steps is None or cfg.generator_steps >= 1,
             f"--generator-steps must be >= 1; got {cfg.generator_steps}")
    check_budget_fields(cfg)
    _require(0 <= cfg.seed < MAX_SEED, f"--seed must lie in 0..{MAX_SEED - 1} (seeds derived from it, seed + env "
             f"index, must stay in numpy's 32-bit range); got {cfg.seed}")
    _require(math.isfinite(cfg.guidance_scale) and cfg.guidance_scale >= 0,
             f"--guidance-scale must be a number >= 0 (0: no classifier guidance); got {cfg.guidance_scale}")
    _require(not (cfg.guidance_scale or cfg.unlabeled) or "ddpm" in kinds,
             "--guidance-scale and --unlabeled apply to the ddpm generator; add ddpm to --generator")
    _require(0.0 <= cfg.tau <= 1.0, f"--tau is a probability in [0, 1]; got {cfg.tau}")
    _require(math.isfinite(cfg.max_ratio) and cfg.max_ratio > 0,
             f"--max-ratio must be a number > 0; got {cfg.max_ratio}")
    if hasattr(cfg, "algo"):
        from tailmix.agents.sb3 import ALGORITHMS

        _choice(cfg, "algo", ALGORITHMS)
        _choice(cfg, "wrapper", ("shared", "central"))
        _require(not (cfg.resume and cfg.overwrite), "--resume and --overwrite contradict each other; pass one")
        _require(not cfg.resume or cfg.run_dir, "--resume needs --run-dir: the run folder to continue")
        _choice(cfg, "backend", ("sb3", "rllib"))
        if cfg.backend == "rllib":
            _require(type(cfg) is TrainConfig, "--backend rllib is for the train command; the main job uses sb3")
            _require(cfg.algo == "ppo" and cfg.wrapper == "shared" and cfg.n_envs == 1 and not cfg.resume,
                     "--backend rllib trains PPO with one policy shared by the class agents: use --algo ppo "
                     "--wrapper shared, scale with --env-runners (not --n-envs), and no --resume")
    if isinstance(cfg, BenchmarkConfig):
        _require(bool(cfg.baselines or cfg.learned), "nothing to benchmark: pass --baselines and/or --learned")
    from tailmix.classifiers.batched_head import HEAD_LOSSES
    from tailmix.classifiers.losses import LOSSES

    _choice(cfg, "loss", HEAD_LOSSES if cfg.mode == "feature" else LOSSES)
    if any(kind != "augment" for kind in kinds):
        from tailmix.generators.ddpm import PRESETS

        _choice(cfg, "preset", tuple(PRESETS))
    from tailmix.classifiers.device import select_device

    try:
        select_device(cfg.device)  # names the visible devices when this one does not exist
    except ValueError as err:  # the library's advice is spelled for Python (device='cpu'); say it as the flag
        text = str(err).replace("device='cpu' or 'auto'", "--device cpu or --device auto")
        raise ValueError("--device: " + text.replace("pass 'auto'", "pass --device auto")) from None


def check_budget_fields(cfg) -> None:
    """``--budget-minutes`` and the sizes a budget sets (``tailmix.budget``)."""
    from tailmix.budget import parse_minutes

    _require(parse_minutes(cfg.budget_minutes) is None or isinstance(cfg, MainConfig),
             "--budget-minutes sizes the main job (python train_agents.py --budget-minutes M, no subcommand); the "
             "other commands take the sizes themselves (--generator-steps, --per-class, --encoder-epochs, ...)")
    _require(cfg.pretrain_steps is None or cfg.pretrain_steps >= 0,
             f"--pretrain-steps must be >= 0; got {cfg.pretrain_steps}")
    for name in ("filter_tries", "encoder_epochs"):
        value = getattr(cfg, name)
        _require(value is None or value >= 1, f"--{name.replace('_', '-')} must be >= 1; got {value}")


# -- settings inherited from an earlier run -------------------------------------------------------
def _stored_config(folder: Path) -> dict | None:
    """The ``config`` of the ``run.json`` in ``folder``, or ``None`` when it holds none."""
    meta = _read_json(folder / "run.json")
    return None if meta is None else meta.get("config")


def _inherit(cfg, fixed: set[str], stored: dict, names) -> list[str]:
    """Copy ``stored`` values of ``names`` that are not ``fixed`` (given by the user) into ``cfg``, adding them to
    ``fixed``; return the fixed ones whose value differs from the stored one."""
    clashes = []
    for name in names:
        if name not in stored or not hasattr(cfg, name):
            continue
        if name in fixed:
            if stored[name] != getattr(cfg, name):
                clashes.append(name)
        else:
            setattr(cfg, name, stored[name])
            fixed.add(name)
    return clashes


def resolve_config(command: str, cfg, explicit: frozenset[str]):
    """Fill settings the user did not give from an earlier run: the run folder's ``run.json`` for ``--resume``,
    the trained model's ``run.json`` for ``evaluate`` and ``benchmark --learned``.

    Returns:
        ``(cfg, fixed)``: the config and the names of the fields given or inherited (``--quick`` leaves them).
    """
    fixed = set(explicit)
    if getattr(cfg, "resume", False) and cfg.run_dir:
        folder = Path(cfg.run_dir)
        if not folder.is_dir():
            raise ValueError(f"--resume: run folder {folder} does not exist; train without --resume first")
        stored = _stored_config(folder)
        if stored is not None:
            clashes = _inherit(cfg, fixed, stored, ENV_FIELDS + MODEL_FIELDS)
            if clashes:
                shown = ", ".join(f"--{n.replace('_', '-')} (run: {stored[n]!r}, now: {getattr(cfg, n)!r})"
                                  for n in clashes)
                raise ValueError(f"cannot change {shown} when resuming {folder}; drop those flags, or start a new "
                                 "run with another --run-dir")
            _inherit(cfg, fixed, stored, PLACE_FIELDS + ("timesteps", "checkpoint_every"))  # these may change
        return cfg, fixed
    if isinstance(cfg, EvaluateConfig):
        models = [_model_path(cfg.policy)]
    else:
        models = [Path(_split_algo(spec)[1]).expanduser() for spec in getattr(cfg, "learned", [])]
    origin = None
    for path in models:
        if path is None or not path.is_file():
            continue
        stored = _stored_config(path.parent)
        if stored is None:
            continue
        if origin is None:
            origin = path
            _inherit(cfg, fixed, stored, ENV_FIELDS + PLACE_FIELDS)
        else:
            differ = [n for n in ENV_FIELDS if n in stored and n not in explicit and stored[n] != getattr(cfg, n)]
            if differ:
                raise ValueError(f"{path} was trained with other env settings than {origin} ({', '.join(differ)}); "
                                 "benchmark them separately, or pass those flags to evaluate both in one env")
    return cfg, fixed


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


# -- --quick ----------------------------------------------------------------------------------------
#: What ``--quick`` sets, unless the user gave the field (or it was inherited from an earlier run).
QUICK = {"preset": "tiny", "generator_steps": 30, "per_class": 24, "max_steps": 4, "filter_epochs": 10,
         "timesteps": 256, "checkpoint_every": 128, "seeds": 2}


def _quick(cfg, fixed: set[str] | frozenset[str] = frozenset()) -> None:
    """Shrink every budget (``--quick``) in place, leaving the ``fixed`` fields as they are.

    The env's encoder is shrunk too (``tailmix.pipeline.env_kwargs``, keyed on ``cfg.quick``).
    """
    for name, value in QUICK.items():
        if hasattr(cfg, name) and name not in fixed:
            setattr(cfg, name, value)


# -- policies -----------------------------------------------------------------------------------
def _split_algo(spec: str) -> tuple[str | None, str]:
    """``"sac:path/model.zip"`` -> ``("sac", "path/model.zip")``; anything else -> ``(None, spec)``."""
    from tailmix.agents.sb3 import ALGORITHMS

    head, sep, rest = spec.partition(":")
    if sep and head.lower() in ALGORITHMS:
        return head.lower(), rest
    return None, spec


def _model_path(spec: str) -> Path | None:
    """The model file a policy spec names, or ``None`` for a baseline spec."""
    algo, rest = _split_algo(spec)
    path = Path(rest).expanduser()
    if algo is not None or rest.endswith(".zip") or path.exists() or os.sep in rest:
        return path
    return None


def model_info(path: Path) -> dict:
    """``algo`` and ``wrapper`` of a saved model: from ``agent.json`` beside it (written by ``agents.sb3.train``),
    else from the ``run.json`` there (its config); keys it cannot tell are missing."""
    meta = _read_json(path.parent / "agent.json")
    if meta is None:
        meta = _stored_config(path.parent) or {}
    return {k: meta[k] for k in ("algo", "wrapper") if meta.get(k) is not None}


def load_policy(spec: str, *, wrapper: str | None = None):
    """A baseline spec, or a saved SB3 model behind the baseline interface (see :func:`load_model_policy`)."""
    from tailmix.agents.baselines import make_baseline

    if (Path(spec).expanduser() / "rllib_checkpoint.json").is_file():
        from tailmix.agents.rllib import load_rllib_policy

        return load_rllib_policy(Path(spec).expanduser())
    path = _model_path(spec)
    return make_baseline(spec) if path is None else load_model_policy(spec, wrapper=wrapper)


def load_model_policy(spec: str, *, wrapper: str | None = None):
    """A saved SB3 model (``path`` or ``ALGO:path``) as a policy with the baseline interface.

    Its algo comes from the ``ALGO:`` prefix, else ``agent.json`` beside it, else the ``run.json`` there. Its
    wrapper comes from ``wrapper``, else those files, else its observation space (a matrix means ``central``).
    """
    from tailmix.agents.baselines import SB3Policy

    prefix, rest = _split_algo(spec)
    path = Path(rest).expanduser()
    if not path.is_file():
        raise ValueError(f"no saved model at {path}; train one with `python train_agents.py train` (it writes "
                         "<run-dir>/model.zip)")
    info = model_info(path)
    algo = prefix or info.get("algo")
    if algo is None:
        raise ValueError(f"cannot tell which algorithm saved {path} (no agent.json or run.json beside it); "
                         "write the spec as ALGO:path, e.g. ppo:" + str(path))
    from tailmix.agents.sb3 import load_model

    try:
        model = load_model(algo, path)
    except ValueError:
        raise
    except Exception as err:  # a truncated zip, another algo's file, a pickle from an incompatible SB3
        raise ValueError(f"cannot load {path} as a {algo} model ({type(err).__name__}: {err}); is it a model.zip "
                         "saved by SB3 with that algorithm?") from None
    wrapper = wrapper or info.get("wrapper") or ("central" if len(model.observation_space.shape) == 2 else "shared")
    return SB3Policy(model, wrapper=wrapper)


def _check_policy_fits(policy, dataset, label: str, sources: int = 1) -> None:
    """A learned policy's observation shape must match the env of ``dataset`` with ``sources`` synthetic sources
    (checked before any work)."""
    model = getattr(policy, "model", None)
    if model is None:
        return
    c = dataset.num_classes
    width = 6 + 2 * sources + c  # envs.core.observation_columns without pool_obs, plus the one-hot id
    want = (width,) if policy.wrapper == "shared" else (c, width)
    got = tuple(model.observation_space.shape)
    if got != want:
        raise ValueError(f"{label} observes {got}, but {dataset.name!r} ({c} classes) gives {want}: it was trained "
                         "on another dataset; pass the --dataset it was trained on")


def benchmark_specs(cfg) -> list[str]:
    """``--baselines``, plus each per-source variant (``fill@ddpm``, ...) when several generators fill banks."""
    from tailmix.agents.baselines import baselines_for

    kinds = generator_kinds(cfg)
    specs = list(cfg.baselines)
    if len(kinds) > 1 and cfg.source == "bank":
        specs += [s for s in baselines_for(kinds) if "@" in s and s not in specs]
    return specs


def load_policies(specs: list[str], *, learned: list[str] = ()) -> dict:
    """``{label: policy}`` for baseline specs and saved models (labelled ``learned:<run folder>``)."""
    policies = {spec: load_policy(spec) for spec in specs}
    for spec in learned:
        label, k = _learned_label(spec), 2
        while label in policies:
            label, k = f"{_learned_label(spec)}-{k}", k + 1
        policies[label] = load_model_policy(spec)
    return policies


def _learned_label(spec: str) -> str:
    """``learned:<the model's run folder>``: how tables name a saved model."""
    return "learned:" + Path(_split_algo(spec)[1]).expanduser().resolve().parent.name


# -- commands ---------------------------------------------------------------------------------
def cmd_generate(cfg: GenerateConfig) -> Path:
    from tailmix.generators.quality import format_quality_report, quality_report, save_sample_grid

    dataset = load_data(cfg)
    run = prepare_run_dir(cfg, "generate")
    kinds = generator_kinds(cfg)
    for kind in kinds[1:]:  # several generators: every bank is filled; the report below is the first one's
        ensure_bank(one_kind(cfg, kind), dataset)
    bank = ensure_bank(one_kind(cfg, kinds[0]), dataset)
    report = quality_report(bank, dataset)
    text = format_quality_report(report, dataset.class_names)
    print(text)
    _atomic_write_text(run / "quality.txt", text + "\n")
    _write_json(run / "quality.json", report)
    save_sample_grid(bank, run / "samples.png", class_names=dataset.class_names)
    from tailmix.generators.memorisation import bank_leakage_report, format_bank_leakage

    leak = bank_leakage_report(bank, dataset, threshold=0.05)  # exact copies of any split, near-copies of train
    leak_text = format_bank_leakage(leak, dataset.class_names)
    print(leak_text)
    _atomic_write_text(run / "leakage.txt", leak_text + "\n")
    _write_json(run / "leakage.json", leak)
    _write_json(run / "bank.json", {"path": str(bank.path), "counts": bank.counts().tolist()})
    return run


def _train_model(cfg, run: Path, kw: dict):
    from tailmix.agents.sb3 import train

    what = "training"
    if cfg.resume:
        from tailmix.agents.sb3 import latest_checkpoint, load_model

        final = (_read_json(run / "agent.json") or {}).get("num_timesteps", -1)
        if (run / "model.zip").is_file() and final >= cfg.timesteps:
            # Training finished before; retraining from an older checkpoint would replace the final model.
            print(f"{run / 'model.zip'} is already trained to {final} >= --timesteps {cfg.timesteps} timesteps; "
                  "nothing left to train (pass a larger --timesteps to train on)")
            return load_model(cfg.algo, run / "model.zip")
        what = f"resuming from timestep {latest_checkpoint(run, cfg.algo)[1]}:"
    print(f"{what} {cfg.algo} ({cfg.wrapper}) to {cfg.timesteps} timesteps; TensorBoard: tensorboard --logdir {run}",
          flush=True)
    with phase(f"train {cfg.algo}"):
        return train(cfg.algo, kw, wrapper=cfg.wrapper, n_envs=cfg.n_envs, total_timesteps=cfg.timesteps,
                     seed=cfg.seed, log_dir=str(run), checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                     progress_bar=True)


def _close(model) -> None:
    """Close a trained model's env (a model loaded from disk has none)."""
    env = model.get_env()
    if env is not None:
        env.close()


def cmd_train(cfg: TrainConfig) -> Path:
    dataset = load_data(cfg)
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "train")
    if cfg.backend == "rllib":
        from tailmix.agents.rllib import train_rllib

        with phase("train rllib ppo"):
            ckpt = train_rllib(kw, log_dir=run, total_timesteps=cfg.timesteps, seed=cfg.seed,
                               num_env_runners=cfg.env_runners, checkpoint_every=cfg.checkpoint_every, verbose=1)
        print(f"checkpoint: {ckpt} (evaluate it with `python train_agents.py evaluate --policy {ckpt}`)")
        return run
    _close(_train_model(cfg, run, kw))
    print(f"model: {run / 'model.zip'} (evaluate it with `python train_agents.py evaluate --policy "
          f"{run / 'model.zip'}`)")
    return run


def cmd_evaluate(cfg: EvaluateConfig) -> Path:
    from tailmix.agents.evaluate import benchmark

    policy = load_policy(cfg.policy)
    dataset = load_data(cfg)
    _check_policy_fits(policy, dataset, cfg.policy, num_sources(cfg))
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "evaluate")
    label = cfg.policy if _model_path(cfg.policy) is None else _learned_label(cfg.policy)
    with phase(f"evaluate {label} x {cfg.seeds} seeds on the test split"):
        benchmark({label: policy}, kw, seeds=list(range(cfg.seeds)), out_dir=run)
    print((run / "results.md").read_text())
    return run


def cmd_benchmark(cfg: BenchmarkConfig, extra: dict | None = None, run: Path | None = None,
                  kw: dict | None = None) -> Path:
    from tailmix.agents.evaluate import benchmark

    policies = load_policies(benchmark_specs(cfg), learned=cfg.learned)
    policies.update(extra or {})
    if run is None:
        dataset = load_data(cfg)
        for label, policy in policies.items():
            _check_policy_fits(policy, dataset, label, num_sources(cfg))
        kw = prepared_env_kwargs(cfg, dataset)
        run = prepare_run_dir(cfg, "benchmark")
    with phase(f"benchmark: {len(policies)} policies x {cfg.seeds} seeds on the test split"):
        benchmark(policies, kw, seeds=list(range(cfg.seeds)), out_dir=run)
    print((run / "results.md").read_text())
    return run


def cmd_main(cfg: MainConfig, fixed: frozenset[str] = frozenset()) -> Path:
    """Bank -> PPO sampler -> benchmark against every baseline, all in one run folder."""
    from tailmix.agents.baselines import SB3Policy
    from tailmix.budget import apply_budget

    dataset = load_data(cfg)
    print(f"dataset: {dataset!r}", flush=True)
    budget = apply_budget(cfg, dataset, fixed=fixed)  # sizes the flags left open, before anything trains
    kw = prepared_env_kwargs(cfg, dataset)
    run = prepare_run_dir(cfg, "main")
    if not cfg.resume:  # a resumed run keeps the record of the budget that sized it
        _update_json(run / "run.json", budget=budget)
    model = _train_model(cfg, run, kw)
    _close(model)
    bench = BenchmarkConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(BenchmarkConfig)
                               if hasattr(cfg, f.name)})
    cmd_benchmark(bench, extra={f"{cfg.algo}-{cfg.wrapper}": SB3Policy(model, wrapper=cfg.wrapper)}, run=run, kw=kw)
    return run


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


def run_command(command: str, cfg, explicit: frozenset[str] = frozenset()) -> Path:
    """Resolve, check and run one command; returns its run folder (errors are ``ValueError``)."""
    cfg, fixed = resolve_config(command, cfg, explicit)
    if cfg.quick:
        _quick(cfg, fixed)
    check_config(cfg)
    check_run_dir(cfg, command)  # first, so a clash costs no work; prepare_run_dir checks again before writing
    check_cache_dir(cfg)
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    phase.timings = []
    try:
        run = {"main": lambda c: cmd_main(c, frozenset(fixed)), "generate": cmd_generate, "train": cmd_train, "evaluate": cmd_evaluate,
               "benchmark": cmd_benchmark}[command](cfg)
    except KeyboardInterrupt:
        if command in ("train", "main") and cfg.run_dir:
            print("\n" + interrupt_hint(cfg, command), file=sys.stderr)
        raise
    total = time.time() - t0
    if phase.timings:
        print("phase timings: " + ", ".join(f"{name} {w:.0f} s" for name, w, _ in phase.timings))
        _write_json(run / "timings.json", {
            "phases": [{"phase": n, "seconds": round(w, 2), "cpu_seconds": round(c, 2)} for n, w, c in phase.timings],
            "total_seconds": round(total, 2), "cpu_seconds": round(time.process_time(), 2)})
    if command == "main":
        _budget_report(run, total)
    print(f"done in {total:.0f} s; outputs in {run}")
    return run


def _update_json(path: Path, **entries) -> None:
    meta = _read_json(path) or {}
    meta.update(entries)
    _write_json(path, meta)


def _budget_report(run: Path, total: float) -> None:
    """Print each phase's estimate beside its actual time, and store both in ``run.json``."""
    from tailmix.budget import actual_report

    meta = _read_json(run / "run.json") or {}
    budget = meta.get("budget")
    if not budget or not budget.get("applied"):
        return
    text, budget = actual_report(budget, phase.timings, total)
    print(text)
    _update_json(run / "run.json", budget=budget)


def main(argv=None) -> Path:
    """Parse ``argv`` and run the command. User mistakes end with ``error: ...`` and exit status 2."""
    try:
        command, cfg, explicit = parse_args(argv)
        return run_command(command, cfg, explicit)
    except ValueError as err:
        if os.environ.get("TAILMIX_DEBUG"):
            raise
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:  # a path the checks could not foresee (a disk that filled up, a folder made read-only)
        if os.environ.get("TAILMIX_DEBUG"):
            raise
        print("error: " + " ".join(os_error_message(err).split()), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def os_error_message(err: OSError) -> str:
    """One line naming the path an OS error is about, what went wrong, and what to do."""
    import errno

    fixes = {errno.EACCES: "make it writable (or readable) by you, or choose another path",
             errno.EPERM: "make it writable (or readable) by you, or choose another path",
             errno.EROFS: "it is on a read-only file system; choose another path",
             errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
             errno.EISDIR: "it is a folder where a file was expected; choose another path",
             errno.ENOSPC: "the disk is full; free space or choose a folder on another disk",
             errno.ENOENT: "it does not exist; check the path"}
    if err.filename is None:  # e.g. a write that found the disk full: the run folder or the cache
        where = "the run folder (--run-dir) or the cache (--cache-dir)"
    else:
        where = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
    return f"{err.strerror or err} on {where}: {fixes.get(err.errno, 'check the path and its permissions')}"


def cli() -> None:
    """Console entry point."""
    main()


if __name__ == "__main__":
    main()
