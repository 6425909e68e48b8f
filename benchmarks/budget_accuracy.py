"""How close the main job's time estimate came to its actual time, per phase, for finished main-job run folders.

    python train_agents.py --cache-dir /tmp/c --run-dir /tmp/runs/digits                  # on an empty cache
    python benchmarks/budget_accuracy.py /tmp/runs/digits [more run folders]

Reads each ``run.json``'s ``budget`` record (``tailmix.budget``: the estimate printed before the work, the bank's
estimate made again just before the fill, the actual wall seconds of each phase) and prints a markdown table with
the error of each estimate against the actual time (positive: the estimate was high). Phases under 5 s actual are
marked: their relative error says little.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(run: Path) -> list[dict]:
    meta = json.loads((Path(run) / "run.json").read_text())
    b = meta.get("budget") or {}
    if not b.get("applied") or "actual_seconds" not in b:
        raise SystemExit(f"{run}: no applied budget with actual times in run.json (run the main job there)")
    est, before, actual = b["estimate_seconds"], b.get("estimate_before_seconds", {}), b["actual_seconds"]
    out = []
    for phase in list(est) + ["total"]:
        e = b["estimate_total_seconds"] if phase == "total" else est[phase]
        a = b["actual_total_seconds"] if phase == "total" else actual.get(phase, 0.0)
        out.append({"phase": phase, "estimate": e, "before": before.get(phase), "actual": a})
    return out


def error(e: float, a: float) -> str:
    return "n/a" if a <= 0 else f"{100 * (e - a) / a:+.0f}%"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    a = p.parse_args(argv)
    for run in a.runs:
        print(f"\n{run}:\n")
        print("| phase | estimate at the start (s) | estimate just before it (s) | actual (s) | error |")
        print("|---|---|---|---|---|")
        for r in rows(run):
            last = r["before"] if r["before"] is not None else r["estimate"]
            small = " (under 5 s)" if r["actual"] < 5 else ""
            before = "" if r["before"] is None else f"{r['before']:.0f}"
            print(f"| {r['phase']} | {r['estimate']:.0f} | {before} | {r['actual']:.0f} | "
                  f"{error(last, r['actual'])}{small} |")


if __name__ == "__main__":
    main()
