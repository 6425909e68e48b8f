"""``python -m tailmix.suite``: run the protocol, build the reference scores, score your own policy.

    python -m tailmix.suite list
    python -m tailmix.suite run --task KnownAnswer --method fixed
    python -m tailmix.suite run --task KnownAnswer --method cem-static --seeds 0 1 2 3 4
    python -m tailmix.suite report
    python -m tailmix.suite bench --task KnownAnswer --policy my_module:act      (also: tailmix bench ...)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from tailmix.suite import protocol as P
    from tailmix.suite import runner

    parser = argparse.ArgumentParser(prog="python -m tailmix.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered tasks and their ids")
    p = sub.add_parser("run", help="run one method of the protocol on one task (one record per seed)")
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True, choices=("fixed", "ceiling", "pixel-replay", "fidelity", "oracle", *P.LEARNED))
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="method seeds (default: the protocol's)")
    p.add_argument("--runs", type=Path, default=runner.RUNS, help="where the run records go")
    p.add_argument("--cache-dir", default=None, help="generators, banks, encoders (default: the user cache)")
    p.add_argument("--data-dir", default=None, help="folder of the MedMNIST files (default: $TAILMIX_DATA_DIR)")
    p.add_argument("--overwrite", action="store_true", help="redo runs whose record exists")
    t = sub.add_parser("transfer", help="the transfer track: train on one task without the class id, score on another")
    t.add_argument("--seeds", type=int, nargs="*", default=None)
    t.add_argument("--runs", type=Path, default=runner.RUNS)
    t.add_argument("--cache-dir", default=None)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--overwrite", action="store_true")
    r = sub.add_parser("report", help="reference_scores.json and the tables, from every run record")
    r.add_argument("--runs", type=Path, default=runner.RUNS)
    from tailmix.suite import bench

    bench.add_arguments(sub.add_parser("bench", help="score your own policy under the protocol"))
    args = parser.parse_args(argv)
    if args.command == "list":
        from tailmix.suite.tasks import TASKS

        for t in TASKS.values():
            print(f"{t.id:32s} {t.central_id:38s} {t.summary}")
        return 0
    if args.command == "run":
        seeds = tuple(args.seeds) if args.seeds else (None,)
        for path in runner.run(args.task, args.method, seeds, runs=args.runs, cache_dir=args.cache_dir,
                               data_dir=args.data_dir, overwrite=args.overwrite):
            print(path)
        return 0
    if args.command == "transfer":
        for seed in (args.seeds if args.seeds else P.TRANSFER["seeds"]):
            print(runner.run_transfer(seed, runs=args.runs, cache_dir=args.cache_dir, data_dir=args.data_dir,
                                      overwrite=args.overwrite))
        return 0
    if args.command == "report":
        from tailmix.suite import report

        for path in report.write_all(args.runs):
            print(path)
        return 0
    return bench.main(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
