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
only ever replaces a folder tailmix provably made (its ``.tailmix_run`` marker matches its ``run.json``), never
the working directory or a folder above it, and in it only the files tailmix wrote (your own files stay); the old
run is put back if the new one fails before its first result. Trained generators, filters, encoders and
banks are cached under ``--cache-dir`` by a hash of their config and the dataset, and reused by later runs.

A saved model is evaluated in the env it was trained in: ``evaluate`` and ``benchmark`` take the env settings
(dataset, mode, generator, ...) from the ``run.json`` beside the model, unless flags override them; ``--resume``
takes every setting from the run folder's ``run.json``.

Mistakes (an unknown algorithm, a missing file, a run or cache folder that cannot be written, ...) end with a
one-line ``error: ...`` and exit status 2, checked before any training where they can be; set
``TAILMIX_DEBUG=1`` to see the traceback instead.

This module parses arguments and dispatches. The application layer beside it does the rest: the commands'
settings and their checks (``tailmix.configs``), run folders (``tailmix.runs``), policies by spec
(``tailmix.policies``), the command bodies (``tailmix.commands``), and the work itself (data, generator, filter,
bank, encoder, env settings, with their caches) in ``tailmix.pipeline``, which the benchmarks call too.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import sys
import time
from pathlib import Path

from tailmix.agents.backends import backend_names, get_backend
from tailmix.agents.baselines import baseline_usage
# The application layer: each name lives in one module; import it from there (tailmix.configs, tailmix.runs, ...).
from tailmix.commands import budget_report, cmd_benchmark, cmd_evaluate, cmd_generate, cmd_main, cmd_train
from tailmix.configs import (BenchmarkConfig, Common, EvaluateConfig, GenerateConfig, MainConfig, TrainConfig, _quick,
                             check_config, main_defaults, resolve_config)
from tailmix.pipeline import load_data, phase
from tailmix.policies import _learned_label
from tailmix.runs import _read_json, _write_json, check_cache_dir, check_run_dir, finish_run_dir, interrupt_hint

#: Fields that take baseline specs: their help lists the registered baselines.
BASELINE_FIELDS = ("policy", "baselines")

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
        if f.name in BASELINE_FIELDS:  # the registered baselines (agents.baselines.register_baseline)
            help_ += f"; baselines: {baseline_usage()}"
        if f.name == "backend":  # the registered RL libraries (agents.backends)
            help_ += "; " + "; ".join(f"{name}: {get_backend(name).help}" for name in backend_names())
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


def run_command(command: str, cfg, explicit: frozenset[str] = frozenset()) -> Path:
    """Resolve, check and run one command; returns its run folder (errors are ``ValueError``)."""
    cfg, fixed = resolve_config(command, cfg, explicit)
    if cfg.quick:
        _quick(cfg, fixed)
    if command == "main":
        main_defaults(cfg, fixed)
    check_config(cfg)
    check_run_dir(cfg, command)  # first, so a clash costs no work; prepare_run_dir checks again before writing
    check_cache_dir(cfg)
    from tailmix.preflight import claim_run_dir

    claim = claim_run_dir(cfg.run_dir)  # a run folder another process is writing: refused before any work
    try:
        check_run_dir(cfg, command)  # again, claimed now: a run that finished in between made the folder
    except ValueError:
        claim.release()
        raise
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    phase.timings = []
    try:
        run = {"main": lambda c: cmd_main(c, frozenset(fixed)), "generate": cmd_generate, "train": cmd_train, "evaluate": cmd_evaluate,
               "benchmark": cmd_benchmark}[command](cfg)
    except BaseException as err:
        finish_run_dir(cfg, ok=False)  # an --overwrite that failed before its first result puts the old run back
        if isinstance(err, KeyboardInterrupt) and command in ("train", "main") and cfg.run_dir:
            print("\n" + interrupt_hint(cfg, command), file=sys.stderr)
        raise
    finally:
        claim.release()
    total = time.time() - t0
    if phase.timings:
        print("phase timings: " + ", ".join(f"{name} {w:.0f} s" for name, w, _ in phase.timings))
        _write_json(run / "timings.json", {
            "phases": [{"phase": n, "seconds": round(w, 2), "cpu_seconds": round(c, 2)} for n, w, c in phase.timings],
            "total_seconds": round(total, 2), "cpu_seconds": round(time.process_time(), 2)})
    if command == "main":
        budget_report(run, total)
    if command in ("main", "benchmark"):
        print_verdict(cfg, command, run)
    finish_run_dir(cfg, ok=True)  # the run it replaced (--overwrite) goes only now
    print(f"done in {total:.0f} s; outputs in {run}")
    return run


def print_verdict(cfg, command: str, run: Path) -> None:
    """Pick the policy to use on the reward, compare it on test, say it in one sentence, write its files."""
    import numpy as np

    from tailmix.suite.verdict import verdict, write_verdict

    if command == "main":  # the learned methods' labels and policy files, as the main job recorded them
        learned = (_read_json(run / "run.json") or {}).get("learned") or {}
    else:
        learned = {_learned_label(spec): spec for spec in getattr(cfg, "learned", [])}
    try:
        counts = (_read_json(run / "run.json") or {}).get("test_counts")  # stored with the run: no second load
        if counts is None:  # a run folder written before test_counts were stored
            dataset = load_data(cfg)
            counts = np.bincount(np.asarray(dataset.test_labels), minlength=dataset.num_classes)
        v = verdict(run, np.asarray(counts), learned)
    except ValueError as err:  # the results are written; a verdict that cannot be made loses nothing
        print(f"verdict: not made ({err})")
        return
    write_verdict(run, v)
    print("verdict: " + v["sentence"] + f" (verdict.md, recommended_policy.json in {run})")


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


#: Subcommands served by the benchmark suite (``tailmix bench`` = ``python -m tailmix.suite bench``).
SUITE_COMMANDS = ("bench", "suite")


def suite_main(argv: list[str]) -> int:
    """``tailmix bench ...`` and ``tailmix suite <run|report|list> ...``: the suite's own parser, one-line errors."""
    from tailmix.suite.__main__ import main as suite

    args = list(argv[1:]) if argv[0] == "suite" else list(argv)
    try:
        if args and args[0] == "demo":
            from tailmix.suite.demo import main as demo

            return demo(args[1:])
        return suite(args)
    except (ValueError, FileNotFoundError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        raise SystemExit(2) from None


def cli() -> None:
    """Console entry point."""
    if len(sys.argv) > 1 and sys.argv[1] in SUITE_COMMANDS:
        raise SystemExit(suite_main(sys.argv[1:]))
    if any(a == "--task" or a.startswith("--task=") for a in sys.argv[1:]):  # a suite task's demo (main job)
        raise SystemExit(suite_main(["demo", *sys.argv[1:]]))
    main()


if __name__ == "__main__":
    cli()
