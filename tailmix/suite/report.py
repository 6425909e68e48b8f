"""From run records to reference scores: ``reference_scores.json``, one markdown table per task, the README table.

Every record under the runs folder counts (a run of the protocol that is not reported does not exist): a task's
table lists each learned method's every seed, and a method without records is listed as ``not run``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tailmix.suite import protocol as P
from tailmix.suite import stats
from tailmix.suite.reference import PATH as REFERENCE_PATH
from tailmix.suite.runner import REPO, RUNS, commit, mean, read_record, record_path, versions
from tailmix.suite.tasks import TASKS, Task

DOCS = REPO / "docs" / "results" / "suite"
README = REPO / "README.md"
MARK = ("<!-- suite-table:start -->", "<!-- suite-table:end -->")


def _matrix(records: list[dict], key: str = "test") -> np.ndarray:
    """``(S, E)`` scores of ``records`` (one row per seed), columns in evaluation-seed order."""
    return np.array([[ep[key] for ep in sorted(r["episodes"], key=lambda e: e["seed"])] for r in records])


def _boot(records: list[dict], counts, seed: int) -> np.ndarray:
    """``(B, S, E)`` test scores on resampled test images."""
    recalls = np.array([[ep["recall"] for ep in sorted(r["episodes"], key=lambda e: e["seed"])] for r in records])
    s, e, c = recalls.shape
    return stats.test_bootstrap(recalls.reshape(s * e, c), counts, reps=P.BOOT_REPS // 2, seed=seed).reshape(-1, s, e)


def _current(task: Task, rec: dict | None) -> dict | None:
    """``rec`` if it was made with the task's current recipe and this protocol, else ``None`` (stale)."""
    if rec is None or rec.get("task_fingerprint") != task.fingerprint() or rec.get("protocol") != P.PROTOCOL_VERSION:
        return None
    return rec


def task_summary(task: Task, runs: Path = RUNS) -> dict | None:
    """The task's reference entry from its records (``None`` when it has no ``fixed`` record). Records made
    with another recipe (fingerprint) or protocol version are not mixed in; they are counted as ``stale``."""
    folder = Path(runs, task.id.replace("/", "-"))
    stale = sorted(p.name for p in folder.glob("*.json") if _current(task, read_record(p)) is None)
    fixed = _current(task, read_record(record_path(task, "fixed", None, runs)))
    if fixed is None:
        return None
    counts = fixed["test_counts"]
    best = next(m for m in fixed["members"] if m["spec"] == fixed["best"]["spec"] and m["loss"] == fixed["best"]["loss"])
    best_rec = {"episodes": best["episodes"]}
    f_test, f_boot = _matrix([best_rec]), _boot([best_rec], counts, 1)
    nosyn_ce = {"episodes": fixed["no_synthetic"]["ce"]}
    rows: dict = {
        "no_synthetic": {"score": mean(fixed["no_synthetic"]["ce"], "test"),
                         "reward": mean(fixed["no_synthetic"]["ce"], "reward"), "loss": "ce"},
        "no_synthetic_task_loss": {"score": mean(fixed["no_synthetic"][fixed["task_loss"]], "test"),
                                   "reward": mean(fixed["no_synthetic"][fixed["task_loss"]], "reward"),
                                   "loss": fixed["task_loss"]},
        "best_fixed": {"spec": best["spec"], "loss": best["loss"], "score": mean(best["episodes"], "test"),
                       "reward": mean(best["episodes"], "reward")},
    }
    d, lo, hi = stats.paired_interval(f_test, _matrix([nosyn_ce]), f_boot, _boot([nosyn_ce], counts, 2),
                                      reps=P.BOOT_REPS)
    rows["best_fixed"]["vs_no_synthetic"] = [d, lo, hi]
    pending = []
    for k, method in enumerate(P.LEARNED):
        recs = [r for s in P.METHOD_SEEDS if (r := _current(task, read_record(record_path(task, method, s, runs))))]
        if not recs:
            pending.append(method)
            continue
        m_test = _matrix(recs)
        d, lo, hi = stats.paired_interval(m_test, f_test, _boot(recs, counts, 10 + k), f_boot, reps=P.BOOT_REPS)
        pick = max(recs, key=lambda r: mean(r["episodes"], "reward"))
        rows[method] = {
            "seeds": [r["seed"] for r in recs], "seed_scores": [mean(r["episodes"], "test") for r in recs],
            "seed_rewards": [mean(r["episodes"], "reward") for r in recs], "score": float(m_test.mean()),
            "reward": float(_matrix(recs, "reward").mean()), "vs_best_fixed": [d, lo, hi],
            "iqm": stats.iqm(m_test), "p_improvement": stats.probability_of_improvement(m_test, f_test),
            "best_on_reward": {"seed": pick["seed"], "score": mean(pick["episodes"], "test")},
            "complete": len(recs) == len(P.METHOD_SEEDS)}
    ceiling = _current(task, read_record(record_path(task, "ceiling", None, runs)))
    if ceiling is not None:
        rows["ceiling"] = {"score": mean(ceiling["episodes"], "test"), "from": max(
            ceiling["searches"], key=lambda f: mean(f["episodes"], "test"))["from"]}
        head = rows["ceiling"]["score"] - rows["best_fixed"]["score"]
        for method in P.LEARNED:
            if method in rows and head > 0:
                rows[method]["normalized"] = 100.0 * (rows[method]["score"] - rows["best_fixed"]["score"]) / head
                seeds = np.asarray(rows[method]["seed_scores"])
                rows[method]["normalized_seeds"] = (100.0 * (seeds - rows["best_fixed"]["score"]) / head).tolist()
    else:
        pending.append("ceiling")
    replay = _current(task, read_record(record_path(task, "pixel-replay", None, runs)))
    if replay is not None:
        _add_pixel(rows, replay, counts)
    else:
        pending.append("pixel-replay")
    return {"id": task.id, "central_id": task.central_id, "version": task.version,
            "fingerprint": task.fingerprint(), "task_loss": fixed["task_loss"], "sources": fixed["sources"],
            "fixed_family_size": len(fixed["members"]), "rows": rows, "pending": pending, "stale": stale,
            "commits": sorted({fixed["commit"]} | {read_record(p)["commit"] for p in
                                                   Path(runs, task.id.replace("/", "-")).glob("*.json")})}


def _add_pixel(rows: dict, replay: dict, counts) -> None:
    """Each row's pixel-mode replay score and, for learned rows, its difference to best fixed in pixel mode."""
    by_row: dict = {}
    for r in replay["rows"]:
        by_row.setdefault(r["row"], []).append(r)
    names = {"no synthetic": "no_synthetic_task_loss", "best fixed": "best_fixed", "ceiling": "ceiling"}
    base = by_row.get("best fixed")
    for name, recs in by_row.items():
        key = names.get(name, name)
        if key not in rows:
            continue
        m = _matrix(recs)
        entry = {"score": float(m.mean()), "seeds": [r["seed"] for r in recs]}
        if base is not None and key not in ("best_fixed",):
            d, lo, hi = stats.paired_interval(m, _matrix(base), _boot(recs, counts, 40), _boot(base, counts, 41),
                                              reps=P.BOOT_REPS)
            entry["vs_best_fixed"] = [d, lo, hi]
        rows[key]["pixel"] = entry


def _pixel(row: dict) -> str:
    px = row.get("pixel")
    if px is None:
        return "not replayed"
    if "vs_best_fixed" in px:
        d, lo, hi = px["vs_best_fixed"]
        return f"{100 * px['score']:.1f} ({_pct(100 * d)} [{_pct(100 * lo)}, {_pct(100 * hi)}])"
    return f"{100 * px['score']:.1f}"


def _pct(x: float) -> str:
    return f"{x:+.1f}"


def task_markdown(task: Task, entry: dict) -> str:
    rows = entry["rows"]
    ceiling = rows.get("ceiling", {}).get("score")
    lines = [f"# {task.id} (`{task.central_id}`)", "", task.summary + ".", "", task.card, "",
             f"Protocol {P.PROTOCOL_VERSION} (`docs/protocol.md`); task fingerprint `{entry['fingerprint']}`; sources "
             f"{', '.join(f'`{s}`' for s in entry['sources'])}; task loss `{entry['task_loss']}` (picked on the "
             f"reward); {entry['fixed_family_size']} fixed-family members. Test balanced accuracy x 100, mean over "
             f"{len(P.EVAL_SEEDS)} evaluation episodes (and over method seeds); intervals are 95% bootstrap over "
             "method seeds, episodes and test images. Commits of the runs: "
             + ", ".join(f"`{c}`" for c in entry["commits"]) + ".", "",
             *([f"Stale records (another recipe or protocol; not used): {', '.join(entry['stale'])}.", ""]
               if entry.get("stale") else []),
             "| row | reward | test | vs best fixed [95% interval] | normalized | IQM | P(> best fixed) | seeds | "
             "pixel replay (vs best fixed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    bf = rows["best_fixed"]
    lines.append(f"| no synthetic (ce) | {100 * rows['no_synthetic']['reward']:.1f} | "
                 f"{100 * rows['no_synthetic']['score']:.1f} | | | | | | |")
    lines.append(f"| no synthetic ({entry['task_loss']}) | {100 * rows['no_synthetic_task_loss']['reward']:.1f} | "
                 f"{100 * rows['no_synthetic_task_loss']['score']:.1f} | | | | | | "
                 f"{_pixel(rows['no_synthetic_task_loss'])} |")
    d, lo, hi = bf["vs_no_synthetic"]
    lines.append(f"| **best fixed**: `{bf['spec']}`, {bf['loss']} | {100 * bf['reward']:.1f} | {100 * bf['score']:.1f} "
                 f"| 0 (vs no synthetic {_pct(100 * d)} [{_pct(100 * lo)}, {_pct(100 * hi)}]) | 0 | | | | {_pixel(bf)} |")
    for method in P.LEARNED:
        if method not in rows:
            lines.append(f"| {method} | not run | | | | | | | |")
            continue
        r = rows[method]
        d, lo, hi = r["vs_best_fixed"]
        norm = f"{r['normalized']:.0f}" if "normalized" in r else ""
        per = ", ".join(f"{100 * s:.1f}" for s in r["seed_scores"])
        lines.append(f"| {method} ({len(r['seeds'])} seeds) | {100 * r['reward']:.1f} | {100 * r['score']:.1f} | "
                     f"{_pct(100 * d)} [{_pct(100 * lo)}, {_pct(100 * hi)}] | {norm} | {100 * r['iqm']:.1f} | "
                     f"{r['p_improvement']:.2f} | {per} | {_pixel(r)} |")
        lines.append(f"| {method}, best of {len(r['seeds'])} on reward (seed {r['best_on_reward']['seed']}) | | "
                     f"{100 * r['best_on_reward']['score']:.1f} | | | | | | |")
    lines.append(f"| CEILING (test-scored CEM; not a method) | | {100 * ceiling:.1f} | | 100 | | | | "
                 f"{_pixel(rows['ceiling'])} |" if ceiling is not None else "| CEILING | not run | | | | | | | |")
    lines += ["", "Reproduce: `python -m tailmix.suite run --task " + task.name + " --method <method>` for each "
              "method, then `python -m tailmix.suite report`."]
    return "\n".join(lines) + "\n"


def summary_table(entries: dict) -> str:
    lines = ["| task | best fixed | best learned | normalized | ceiling |", "|---|---|---|---|---|"]
    for task in TASKS.values():
        e = entries.get(task.id)
        if e is None:
            lines.append(f"| `{task.id}` | not run | | | |")
            continue
        rows = e["rows"]
        learned = [(m, rows[m]) for m in P.LEARNED if m in rows]
        bf = rows["best_fixed"]
        best = max(learned, key=lambda x: x[1]["reward"]) if learned else None  # picked on the reward
        ceil = f"{100 * rows['ceiling']['score']:.1f}" if "ceiling" in rows else "not run"
        if best is None:
            lines.append(f"| [`{task.id}`](docs/results/suite/{task.name}.md) | {100 * bf['score']:.1f} | not run "
                         f"| | {ceil} |")
            continue
        m, r = best
        d, lo, hi = r["vs_best_fixed"]
        norm = f"{r['normalized']:.0f}" if "normalized" in r else ""
        lines.append(f"| [`{task.id}`](docs/results/suite/{task.name}.md) | {100 * bf['score']:.1f} | {m}: "
                     f"{100 * r['score']:.1f} ({_pct(100 * d)} [{_pct(100 * lo)}, {_pct(100 * hi)}]) | {norm} | "
                     f"{ceil} |")
    return "\n".join(lines) + "\n"


def write_all(runs: Path = RUNS) -> list[Path]:
    """Write the reference JSON, one page per task, the summary page and the README table; their paths."""
    from tailmix.io.atomic import atomic_write_text

    entries, written = {}, []
    DOCS.mkdir(parents=True, exist_ok=True)
    for task in TASKS.values():
        entry = task_summary(task, runs)
        if entry is None:
            continue
        entries[task.id] = entry
        path = DOCS / f"{task.name}.md"
        atomic_write_text(path, task_markdown(task, entry))
        written.append(path)
    data = {"protocol": P.PROTOCOL_VERSION, "generated_by": "python -m tailmix.suite report",
            "commit": commit(), "versions": versions(), "tasks": entries}
    atomic_write_text(REFERENCE_PATH, json.dumps(data, indent=1, sort_keys=True) + "\n")
    written.append(REFERENCE_PATH)
    table = summary_table(entries)
    atomic_write_text(DOCS / "index.md", "# Suite reference scores\n\nBest learned = the learned method of best "
                      "reward score (never test); its test score and interval against best fixed. Normalized: 0 = "
                      "best fixed, 100 = ceiling. Built by `python -m tailmix.suite report`.\n\n"
                      + table.replace("docs/results/suite/", ""))
    written.append(DOCS / "index.md")
    if README.is_file():
        text = README.read_text()
        if MARK[0] in text and MARK[1] in text:
            new = re.sub(re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]), MARK[0] + "\n" + table + MARK[1], text,
                         flags=re.S)
            if new != text:
                atomic_write_text(README, new)
                written.append(README)
    return written
