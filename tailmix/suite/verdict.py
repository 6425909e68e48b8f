"""A verdict, not only a table: which policy to use on this dataset, picked on the reward, with its test score.

The main job (and ``benchmark``) end with a table of every policy's test and val scores. This reads that table
(``results.csv`` of a run folder) and says what to do:

- the **recommended policy** is the one of best mean reward score (the final val balanced accuracy; never the test
  split) among no synthetic data, the fixed policies and the learned ones (``random`` is not a candidate: it is
  not a ratio you can reuse). No synthetic data is a candidate, so a policy worse than it on the reward is never
  recommended;
- its test balanced accuracy against no synthetic data and against the best fixed policy (also picked on the
  reward), with 95% intervals over the episode seeds (paired: every policy plays the same seeds) and the test
  images (each class's correct count redrawn from its recall, :func:`tailmix.suite.stats.test_bootstrap`);
- one sentence a user can act on, written to ``verdict.md`` with ``verdict.json``, ``recommended_policy.json``
  (the spec ``train_agents.py evaluate --policy`` takes) and ``ratios.png`` (its mean ratio per class).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tailmix.suite import stats

#: Policy labels that are not reusable ratios (never recommended).
NOT_CANDIDATES = ("random",)


def read_results(run: Path) -> dict[str, list[dict]]:
    """``{policy: [row per seed]}`` from ``results.csv`` (numbers parsed; per-class columns kept by name)."""
    path = Path(run) / "results.csv"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run the main job or `benchmark` into {run} first")
    out: dict[str, list[dict]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            parsed = {}
            for k, v in row.items():
                try:
                    parsed[k] = float(v) if k != "policy" else v
                except (TypeError, ValueError):
                    parsed[k] = v
            out.setdefault(row["policy"], []).append(parsed)
    return out


def _kind(label: str, learned: set[str]) -> str:
    if label == "none":
        return "none"
    if label in learned:
        return "learned"
    if label.split(":")[0].split("@")[0] in NOT_CANDIDATES:
        return "other"
    return "fixed"


def verdict(run: Path, test_counts, learned: dict[str, str] | None = None) -> dict:
    """The verdict of a run folder. ``learned``: ``{label: model path}`` of the learned rows (the rest are fixed
    policy specs, ``none`` is no synthetic data); ``test_counts``: images per class in the test split."""
    rows = read_results(run)
    learned = dict(learned or {})
    if "none" not in rows:
        raise ValueError("the results hold no `none` row (no synthetic data); the verdict compares against it")
    counts = np.asarray(test_counts, np.int64)
    names = [k.removeprefix("test_recall_") for k in next(iter(rows.values()))[0] if k.startswith("test_recall_")]

    def scores(label, key):
        return np.array([[r[key] for r in sorted(rows[label], key=lambda r: r["seed"])]])

    def boot(label, seed):
        rec = np.array([[r[f"test_recall_{n}"] for n in names] for r in sorted(rows[label], key=lambda r: r["seed"])])
        return stats.test_bootstrap(rec, counts, reps=1000, seed=seed).reshape(-1, 1, len(rec))

    val = {k: float(scores(k, "val_balanced_accuracy").mean()) for k in rows}
    kinds = {k: _kind(k, set(learned)) for k in rows}
    candidates = [k for k in rows if kinds[k] in ("none", "fixed", "learned")]
    # ties go to no synthetic data (nothing to generate), then to fixed policies (nothing to train)
    order = {"none": 0, "fixed": 1, "learned": 2}
    rec = max(candidates, key=lambda k: (round(val[k], 12), -order[kinds[k]]))
    fixed = [k for k in rows if kinds[k] == "fixed"]
    best_fixed = max(fixed, key=lambda k: val[k]) if fixed else None

    def compare(a, b, seed):
        d, lo, hi = stats.paired_interval(scores(a, "test_balanced_accuracy"), scores(b, "test_balanced_accuracy"),
                                          boot(a, seed), boot(b, seed + 1))
        return [d, lo, hi]

    out = {"recommended": rec, "kind": kinds[rec], "val": val[rec],
           "test": float(scores(rec, "test_balanced_accuracy").mean()), "none_val": val["none"],
           "none_test": float(scores("none", "test_balanced_accuracy").mean()), "best_fixed": best_fixed,
           "seeds": len(rows[rec]), "test_images": int(counts.sum())}
    out["vs_none"] = compare(rec, "none", 10) if rec != "none" else [0.0, 0.0, 0.0]
    if best_fixed is not None:
        out["best_fixed_val"] = val[best_fixed]
        out["best_fixed_test"] = float(scores(best_fixed, "test_balanced_accuracy").mean())
        out["vs_best_fixed"] = compare(rec, best_fixed, 20) if rec != best_fixed else [0.0, 0.0, 0.0]
    out["ratios"] = {n: float(np.mean([r.get(f"ratio_{n}", np.nan) for r in rows[rec]]))
                     for n in names if isinstance(rows[rec][0].get(f"ratio_{n}"), float)}
    out["policy"] = learned.get(rec, rec)
    out["sentence"] = sentence(out)
    return out


def _iv(d) -> str:
    return f"{100 * d[0]:+.1f} points [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"


def sentence(v: dict) -> str:
    """The one sentence a user acts on."""
    if v["recommended"] == "none":
        best = (f" (the best fixed policy, `{v['best_fixed']}`, scores {100 * v['best_fixed_val']:.1f} on the reward "
                f"against {100 * v['none_val']:.1f})") if v.get("best_fixed") else ""
        return ("Synthetic data does not help on this dataset at this budget: no policy beats using none on the "
                f"reward{best}. Use no synthetic data.")
    what = "a learned sampler" if v["kind"] == "learned" else "a fixed ratio"
    text = (f"Synthetic data helps on the reward at this budget: use {what}, `{v['recommended']}` (reward "
            f"{100 * v['val']:.1f} vs {100 * v['none_val']:.1f} without synthetic data). On the test split it scores "
            f"{100 * v['test']:.1f}, {_iv(v['vs_none'])} against no synthetic data")
    if v.get("best_fixed") and v["best_fixed"] != v["recommended"]:
        text += f" and {_iv(v['vs_best_fixed'])} against the best fixed policy `{v['best_fixed']}`"
    text += "."
    d, lo, _ = v["vs_none"]
    if lo > 0:
        text += " The gain holds on the test split."
    elif d > 0:
        text += (f" The test interval includes 0: over {v['seeds']} seeds and {v['test_images']} test images the "
                 "gain is within the noise.")
    else:
        text += (" On the test split it does not beat no synthetic data: the reward's pick did not carry over, so "
                 "treat the benefit of synthetic data as unproven on this dataset.")
    return text


def write_verdict(run: Path, v: dict) -> list[Path]:
    """``verdict.md``, ``verdict.json``, ``recommended_policy.json`` and ``ratios.png`` in ``run``."""
    from tailmix.io.atomic import atomic_write_bytes, atomic_write_text

    run = Path(run)
    atomic_write_text(run / "verdict.json", json.dumps(v, indent=1) + "\n")
    atomic_write_text(run / "recommended_policy.json", json.dumps(
        {"policy": v["policy"], "label": v["recommended"], "mean_ratios_per_class": v["ratios"],
         "use": f"python train_agents.py evaluate --policy {v['policy']} --run-dir <new folder>"}, indent=1) + "\n")
    lines = ["# Verdict", "", v["sentence"], "",
             "| policy | picked on | reward (val) | test |", "|---|---|---|---|",
             f"| **{v['recommended']}** (recommended) | reward | {100 * v['val']:.1f} | {100 * v['test']:.1f} |",
             f"| none (no synthetic data) | | {100 * v['none_val']:.1f} | {100 * v['none_test']:.1f} |"]
    if v.get("best_fixed"):
        lines.append(f"| {v['best_fixed']} (best fixed) | reward | {100 * v['best_fixed_val']:.1f} | "
                     f"{100 * v['best_fixed_test']:.1f} |")
    lines += ["", f"Intervals: 95% bootstrap over the {v['seeds']} episode seeds (paired) and the "
              f"{v['test_images']} test images. The pick reads the reward only, never the test split."]
    atomic_write_text(run / "verdict.md", "\n".join(lines) + "\n")
    written = [run / "verdict.md", run / "verdict.json", run / "recommended_policy.json"]
    if v["ratios"]:
        atomic_write_bytes(run / "ratios.png", lambda fh: _plot(v, fh))
        written.append(run / "ratios.png")
    return written


def _plot(v: dict, fh) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, ratios = list(v["ratios"]), list(v["ratios"].values())
    fig = Figure(figsize=(max(4, 0.5 * len(names) + 2), 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), ratios)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean synthetic ratio")
    ax.set_title(f"recommended: {v['recommended']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(fh, format="png")
