"""The experiments' one runner and the helpers their scripts share.

Each experiment is a folder ``benchmarks/<the question it answers>/`` holding ``config.toml`` and its result
files; ``config.toml`` names the question and, for every result file, the command that wrote it and the commit
of the code that ran (data, not prose)::

    python -m benchmarks list                                  # the experiments and their result files
    python -m benchmarks run can-learned-samplers-find-a-known-answer --file known-answer.md --cache-dir DIR
    python -m benchmarks index                                 # docs/experiments.md from every config.toml
    python -m benchmarks.known_answer --quick                  # one script by hand (tiny budgets)

Scripts import nothing from each other, only this module (``tests/test_benchmarks_layout.py`` checks it);
provenance (commit, versions) and record writing are the suite runner's (:mod:`tailmix.suite.runner`).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import tomllib
from pathlib import Path

import numpy as np

from tailmix.classifiers.batched_head import HEAD_LOSSES
from tailmix.suite.runner import commit, versions  # noqa: F401  one provenance for the suite and the experiments

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
INDEX = REPO / "docs" / "experiments.md"
ARCHIVE = BENCHMARKS / "archive"


# -- provenance and output ---------------------------------------------------------------------------------------------
def command(script: str, argv=None) -> str:
    """How a result file names the command that wrote it: ``python -m benchmarks.<script> <args>``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", "-m", f"benchmarks.{script}", *map(shlex.quote, map(str, args))])


def footer(script: str, argv, commit_text: str) -> list[str]:
    """The lines every markdown result ends with: the command, the commit (taken when the run started) and the
    versions."""
    return [f"Command: `{command(script, argv)}`", "", f"Commit: {commit_text}", "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), ""]


def write_text(path, text: str) -> Path:
    """Write a result file atomically (its folder created), as the suite writes its records."""
    from tailmix.io.atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def default_cache() -> str:
    """Every script's default ``--cache-dir``: the CLI's (:func:`envs.cache.default_cache_dir`), so a benchmark
    finds the generators, banks and encoders a CLI run cached."""
    from tailmix.envs.cache import default_cache_dir

    return str(default_cache_dir())


def experiment_dir(name: str) -> Path:
    """The folder of experiment ``name`` (a script's default output folder)."""
    return BENCHMARKS / name


# -- experiments as data -----------------------------------------------------------------------------------------------
def experiments() -> dict[str, dict]:
    """``{folder name: its config.toml}`` of every experiment, sorted by name."""
    out = {}
    for cfg in sorted(BENCHMARKS.glob("*/config.toml")):
        with open(cfg, "rb") as f:
            out[cfg.parent.name] = tomllib.load(f)
    return out


def get_experiment(name: str) -> dict:
    name = Path(name).name  # a folder path works too
    exps = experiments()
    if name not in exps:
        raise ValueError(f"no experiment {name!r}; use one of: {', '.join(exps)} (python -m benchmarks list)")
    return exps[name]


def result_commands(entry: dict) -> list[str]:
    """The command(s) of one result entry (``command`` or ``commands``)."""
    cmds = entry.get("commands", [entry["command"]] if "command" in entry else [])
    return [cmds] if isinstance(cmds, str) else list(cmds)


def parse_command(text: str) -> tuple[dict, str, list[str]]:
    """``VAR=value python -m benchmarks.<script> args`` -> ``({VAR: value}, script, args)``."""
    words = shlex.split(text)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[:2] != ["python", "-m"] or len(words) < 3 or not words[2].startswith("benchmarks."):
        raise ValueError(f"cannot run {text!r}: the runner runs commands of the form python -m benchmarks.<script> "
                         "...; run it by hand")
    return env, words[2].split(".", 1)[1], words[3:]


def run(name: str, files=None, *, dry_run: bool = False, cache_dir: str | None = None, log=print) -> int:
    """Run the commands of experiment ``name`` (only those writing ``files``, when given), in this process.

    A result written ``by hand`` (assembled from the printed output, see its ``note``) is run as well; its file is
    not rewritten. ``dry_run`` prints the commands only; ``cache_dir`` replaces the ``--cache-dir`` they name (the
    recorded runs used the machine's own folder)."""
    import importlib

    exp = get_experiment(name)
    entries = exp.get("result", [])
    if files:
        known = {e["file"] for e in entries}
        missing = [f for f in files if f not in known]
        if missing:
            raise ValueError(f"experiment {name!r} has no result file {missing[0]!r}; use one of: {', '.join(known)}")
        entries = [e for e in entries if e["file"] in files]
    done = set()
    for entry in entries:
        for text in result_commands(entry):
            if text in done:
                continue
            done.add(text)
            env, script, args = parse_command(text)
            if cache_dir is not None and "--cache-dir" in args[:-1]:
                args[args.index("--cache-dir") + 1] = str(cache_dir)
                text = command(script, args)
            log(f"[{name}] {entry['file']}: {text}")
            if dry_run:
                continue
            for key, value in env.items():
                if value == "..." and key not in os.environ:
                    raise ValueError(f"{entry['file']}'s command needs {key}; set it (e.g. export "
                                     f"{key}=/path/to/medmnist) and run again")
                if value != "...":
                    os.environ[key] = value
            importlib.import_module(f"benchmarks.{script}").main(args)
    return 0


def index_text() -> str:
    """``docs/experiments.md``: every experiment, and every result file with its command and commit."""
    lines = ["# Experiments", "",
             "<!-- generated by `python -m benchmarks index` from benchmarks/*/config.toml: do not edit by hand -->",
             "", "Each experiment is a folder `benchmarks/<question>/` with a `config.toml` (the question, and per "
             "result file the command that wrote it and the commit of the code that ran) and its result files. "
             "`python -m benchmarks run <folder> [--file F] [--cache-dir DIR] [--dry-run]` reruns an experiment's "
             "commands in order; `python -m benchmarks index` writes this page. Commands are given as they are run today; the commit is the one the result file "
             "records, or, where it records none, the commit that added the file (marked *added*).", ""]
    for name, exp in experiments().items():
        lines += [f"## {exp['question']}", "", f"Folder `benchmarks/{name}/`."
                  + (f" Discussed in [{exp['page']}]({exp['page']})." if exp.get("page") else ""), ""]
        if exp.get("about"):
            lines += [exp["about"], ""]
        lines += ["| result file | command | commit |", "|---|---|---|"]
        for entry in exp.get("result", []):
            cmds = "<br>".join(f"`{c}`" for c in result_commands(entry)) or "(none)"
            if entry.get("written") == "by hand":
                cmds += "<br>(assembled by hand from the printed output)"
            if entry.get("note"):
                cmds += f"<br>{entry['note']}"
            when = entry.get("commit", "unknown")
            if entry.get("commit_from") == "added":
                when += " (added)"
            lines.append(f"| `benchmarks/{name}/{entry['file']}` | {cmds} | {when} |")
        lines.append("")
    archived = sorted(p for p in ARCHIVE.glob("*") if p.is_file() and p.name != "README.md") if ARCHIVE.is_dir() else []
    if archived:
        lines += ["## Archive", "", "Result files that nothing names and no command reproduces "
                  "(`benchmarks/archive/README.md` says why each is kept):", ""]
        lines += [f"- `benchmarks/archive/{p.name}`" for p in archived] + [""]
    return "\n".join(lines)


def unlisted_files() -> list[str]:
    """Files in an experiment folder that its ``config.toml`` does not list (there should be none)."""
    out = []
    for name, exp in experiments().items():
        listed = {e["file"] for e in exp.get("result", [])} | {"config.toml"}
        out += [f"{name}/{p.name}" for p in sorted((BENCHMARKS / name).iterdir()) if p.name not in listed]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the experiments and their result files")
    r = sub.add_parser("run", help="run an experiment's commands (each writes its result file)")
    r.add_argument("experiment", help="an experiment's folder name (python -m benchmarks list)")
    r.add_argument("--file", nargs="*", default=None, help="only the commands of these result files")
    r.add_argument("--dry-run", action="store_true", help="print the commands only")
    r.add_argument("--cache-dir", default=None, help="replaces the --cache-dir the recorded commands name")
    i = sub.add_parser("index", help=f"write {INDEX.relative_to(REPO)} from every config.toml")
    i.add_argument("--check", action="store_true", help="exit 1 if the committed index differs")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, exp in experiments().items():
            print(f"{name}: {exp['question']}")
            for entry in exp.get("result", []):
                print(f"    {entry['file']}")
        return 0
    if args.cmd == "run":
        try:
            return run(args.experiment, args.file, dry_run=args.dry_run, cache_dir=args.cache_dir)
        except ValueError as err:
            p.error(str(err))
    text = index_text()
    if args.check:
        same = INDEX.is_file() and INDEX.read_text() == text
        print(f"{INDEX.relative_to(REPO)} is {'up to date' if same else 'stale: run python -m benchmarks index'}")
        return 0 if same else 1
    write_text(INDEX, text)
    print(f"wrote {INDEX.relative_to(REPO)}")
    return 0


# -- shared by the scripts ---------------------------------------------------------------------------------------------
# -- the generator benchmarks (generator_speed, filter_quality, guidance) ----------------------------------------------
def add_generator_arguments(p: argparse.ArgumentParser, *, pinned: str = "pinned: results change with them",
                            cache_help: str = "cache of trained generators and filters") -> None:
    """The arguments every generator benchmark shares (dataset, preset, filter threshold, seed, device, threads,
    cache), with one meaning and one default across scripts."""
    p.add_argument("--dataset", default="digits",
                   help="what envs.datasets.load_dataset takes: 'digits' (embedded), a MedMNIST flag looked up in "
                        "--data-root, an .npz path or an image folder")
    p.add_argument("--data-root", default=None, help="folder of MedMNIST .npz files (default $TAILMIX_DATA_DIR)")
    p.add_argument("--preset", default="small", help="DDPM preset: tiny, small or base")
    p.add_argument("--tau", type=float, default=0.5, help="filter confidence threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator, the filter and the sampling noise")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda:0', ...")
    p.add_argument("--threads", type=int, default=1, help=f"torch CPU threads ({pinned})")
    p.add_argument("--cache-dir", default=default_cache(), help=cache_help)


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, names) -> None:
    """``p.error`` for the first of ``names`` (attribute names) below 1, and for a --tau outside [0, 1]."""
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if not 0.0 <= args.tau <= 1.0:
        p.error(f"--tau is a probability in [0, 1]; got {args.tau}")


def package_versions() -> str:
    """``python 3.11.7, torch 2.14.1, diffusers 0.42.1, numpy 2.4.6``: the generator benchmarks' one line."""
    from importlib import metadata

    parts = [f"python {platform.python_version()}"]
    for pkg in ("torch", "diffusers", "numpy"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} missing")
    return ", ".join(parts)


def device_description(device) -> str:
    import os

    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} " \
           "torch threads)"


def cli_config(args):
    """The pipeline settings whose generator and filter caches this run shares with the CLI."""
    from tailmix.pipeline import Settings

    return Settings(dataset=args.dataset, data_root=args.data_root, seed=args.seed, preset=args.preset,
                    generator_steps=args.train_steps, tau=args.tau, device=args.device, cache_dir=args.cache_dir)


def tail_classes(counts: np.ndarray, classes: list[int]) -> list[int]:
    """The rarer half (rounded up) of ``classes`` by train count."""
    order = sorted(classes, key=lambda c: (counts[c], -c))
    return order[:math.ceil(len(order) / 2)]


def class_label(c: int, class_names) -> str:
    """The class's name, prefixed by its id unless the name already starts with it ("3", "3 severe NPDR")."""
    name = str(class_names[c])
    return name if name == str(c) or name.startswith(f"{c} ") else f"{c} {name}"


# -- the bank tasks of the fixed-vs-learned tables (results, headroom, leaderboard, perfect_generator) -----------------
#: The feature head's long-tail losses (every head loss but cross-entropy).
NO_SYN_LOSSES = tuple(loss for loss in HEAD_LOSSES if loss != "ce")


def build_env_kwargs(name: str, args) -> tuple[object, dict]:
    """The dataset and env keyword arguments of the committed tables (cross-entropy head).

    ``args`` needs ``preset``, ``generator_steps``, ``per_class``, ``cache_dir``, ``max_steps``, ``max_ratio``,
    ``replicas`` and ``reference``; ``reward`` when it has one (else ``"accuracy"``). Shared with
    ``benchmarks/headroom.py`` so both build the same dataset, bank, encoder and reward reference.
    """
    from tailmix import pipeline

    spec = name if name == "digits" else str(Path(os.environ["TAILMIX_DATA_DIR"]) / f"{name}.npz")
    cfg = pipeline.Settings(dataset=spec, seed=0, preset=args.preset, generator_steps=args.generator_steps,
                            per_class=args.per_class, cache_dir=args.cache_dir, max_steps=args.max_steps,
                            max_ratio=args.max_ratio, reward=getattr(args, "reward", "accuracy"))
    dataset = pipeline.load_data(cfg)
    kw = pipeline.env_kwargs(cfg, dataset, progress=False)
    kw.update(reward_replicas=args.replicas, reward_reference=args.reference)
    return dataset, kw


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Bank, cache and output options shared with ``benchmarks/headroom.py`` (``build_env_kwargs`` reads them)."""
    parser.add_argument("--preset", default="small")
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=128)
    parser.add_argument("--cache-dir", default=default_cache(), help="cache of generators, banks and encoders")
    parser.add_argument("--full", action="store_true", help="the settings of the committed tables")
    parser.add_argument("--out", default=None, help="folder for the markdown tables (default: the experiment's folder)")


# -- rank agreement (fidelity, schedule_fidelity) ----------------------------------------------------------------------
def rho(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant ranking has no rank correlation
        return float("nan")
    return float(spearmanr(a, b).statistic)


def bootstrap_rho(pixel: np.ndarray, feature: np.ndarray, *, n_boot: int = 2000, seed: int = 0
                  ) -> tuple[float, float]:
    """95% percentile interval of Spearman(pixel means, feature means), seeds resampled with replacement.

    Args:
        pixel: ``(policies, seeds)`` pixel scores.
        feature: ``(policies, seeds)`` feature scores. Pixel and feature seeds are independent runs, so
            each is resampled on its own; a resampled seed keeps all its policies (they share its randomness).
    """
    rng = np.random.default_rng(seed)
    rhos = np.empty(n_boot)
    for b in range(n_boot):
        ip = rng.integers(0, pixel.shape[1], pixel.shape[1])
        jf = rng.integers(0, feature.shape[1], feature.shape[1])
        rhos[b] = rho(pixel[:, ip].mean(1), feature[:, jf].mean(1))
    lo, hi = np.nanpercentile(rhos, [2.5, 97.5])
    return float(lo), float(hi)


# -- learned rows (known_answer, leaderboard) --------------------------------------------------------------------------
def fixed_specs() -> tuple[str, ...]:
    """The fixed shapes every table plays, from the baseline registry (``baseline_specs(fixed=True)``: constant:0.5,
    constant:1, constant:2, fill, inverse, and any kind registered with ``register_baseline`` since)."""
    from tailmix.agents.baselines import baseline_specs

    return baseline_specs(fixed=True)


def static_specs() -> tuple[str, ...]:
    """The static rows of the known-answer table and the leaderboard (:func:`tailmix.policies.fixed_policy` specs):
    no synthetic data, the registry's fixed shapes with the larger constants 4 and 8 after its constants, and fill
    scaled by 0.25 and 0.5."""
    fixed = fixed_specs()
    constants = [s for s in fixed if s.startswith("constant:")]
    return ("none", *constants, *(s for s in ("constant:4", "constant:8") if s not in constants),
            *(s for s in fixed if s not in constants), "fill x 0.25", "fill x 0.5")


def parse_algo_kwargs(items, option: str = "--algo-kwargs") -> dict:
    """``["learning_rate=1e-3", "n_steps=64"]`` -> ``{"learning_rate": 0.001, "n_steps": 64}`` (SB3 overrides)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} item {item!r} is invalid: use key=value, e.g. learning_rate=1e-3")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"{option} {item!r}: the value must be a number (e.g. ent_coef=0.01)") from None
    return out


def parse_train_env_kwargs(items) -> dict:
    """``["reward_replicas=4"]`` -> ``{"reward_replicas": 4}``: env settings for the TRAINING env only.

    The evaluation env keeps the task's settings, so a learned row stays comparable with the fixed rows.
    """
    import dataclasses

    from tailmix.envs.config import RatioEnvConfig

    out = parse_algo_kwargs(items, option="--train-env-kwargs")
    known = {f.name for f in dataclasses.fields(RatioEnvConfig)}
    for key in out:
        if key not in known:
            raise ValueError(f"--train-env-kwargs {key!r} is not an env setting; use one of RatioEnvConfig's fields "
                             "(e.g. reward_replicas=4)")
    return out


def train_env_tags(env_kwargs: dict) -> list[str]:
    """The model-folder tags of training-env settings (``{"reward_replicas": 4}`` -> ``["env-reward_replicas4"]``),
    shared by the known-answer table and the leaderboard so both find the same cached model."""
    return [f"env-{k}{v:g}" for k, v in sorted(env_kwargs.items())]
