"""What a time budget costs in bank quality: compare the banks of finished main-job runs.

    python -m benchmarks.make_folder /tmp/folder780
    python train_agents.py --dataset /tmp/folder780/ --cache-dir /tmp/c10 --run-dir /tmp/b10   # 10 min
    python train_agents.py --dataset /tmp/folder780/ --cache-dir /tmp/c30 --run-dir /tmp/b30 --budget-minutes 30
    python -m benchmarks.budget_quality /tmp/b10 /tmp/b30

Each run's bank is rebuilt from its ``run.json`` settings (a cache hit: nothing trains) and scored with the
quality report of ``train_agents.py generate`` (filter acceptance, Frechet distance to the real train images in a
fixed random projection). A Frechet distance estimated from fewer samples is larger, so it is also given on the
same number of images per class for every run (the smallest bank's), beside the run's phase times.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np


def bank_of(run: Path):
    from tailmix.pipeline import Settings, ensure_bank, load_data

    meta = json.loads((run / "run.json").read_text())
    names = {f.name for f in dataclasses.fields(Settings)}
    cfg = Settings(**{k: v for k, v in meta["config"].items() if k in names})
    dataset = load_data(cfg)
    return meta, dataset, ensure_bank(cfg, dataset)


def summary(report: dict) -> dict:
    acc = [r["acceptance"] for r in report.values()]
    fd = [r["frechet"] for r in report.values()]
    return {"acceptance": float(np.nanmean(acc)), "acceptance_per_class": acc, "frechet": float(np.nanmean(fd)),
            "frechet_per_class": fd}


def main(argv=None) -> list[dict]:
    from tailmix.generators.quality import quality_report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="main-job run folders (with run.json)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as the CLI: more threads on a busy 2-core machine run many times slower
    loaded = [(Path(r), *bank_of(Path(r))) for r in args.runs]
    common = min(int(min(bank.counts())) for _, _, _, bank in loaded)
    rows = []
    for run, meta, dataset, bank in loaded:
        b = meta.get("budget", {})
        full = summary(quality_report(bank, dataset))
        same = summary(quality_report(bank, dataset, max_samples=common)) if common > 1 else None
        rows.append({"run": str(run), "budget_minutes": b.get("budget_minutes"), "sizes": b.get("sizes"),
                     "actual_seconds": b.get("actual_seconds"), "actual_total_seconds": b.get("actual_total_seconds"),
                     "bank_counts": bank.counts().tolist(), "full": full, "common_n": common, "same_n": same})
    for r in rows:
        s = r["sizes"] or {}
        print(f"{r['run']}: budget {r['budget_minutes']} min, total {r['actual_total_seconds']} s, sizes {s}")
        print(f"  bank per class {r['bank_counts']}; acceptance class mean {r['full']['acceptance']:.1%} "
              f"(per class {', '.join(f'{a:.1%}' for a in r['full']['acceptance_per_class'])})")
        print(f"  Frechet class mean {r['full']['frechet']:.2f} on the whole bank"
              + (f", {r['same_n']['frechet']:.2f} on {common} images per class" if r["same_n"] else "")
              + f" (per class {', '.join(f'{f:.2f}' for f in r['full']['frechet_per_class'])})")
    return rows


if __name__ == "__main__":
    main()
