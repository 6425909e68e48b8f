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
from tailmix.suite.runner import REPO, RUNS, commit, mean, read_record, record_path, recorded_best, versions
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
    best = recorded_best(fixed)
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
    from tailmix.suite.runner import transfer_name

    oracle = _current(task, read_record(record_path(task, "oracle", None, runs)))
    if oracle is not None:
        rows["oracle_policy"] = {loss: {"score": mean(eps, "test"), "reward": mean(eps, "reward")}
                                 for loss, eps in oracle["rows"].items()}

    if task.name == P.TRANSFER["target"]:
        recs = [r for s in P.TRANSFER["seeds"] if (r := _current(task, read_record(record_path(task, transfer_name(),
                                                                                             s, runs))))]
        if recs:
            m_test = _matrix(recs)
            d, lo, hi = stats.paired_interval(m_test, f_test, _boot(recs, counts, 30), f_boot, reps=P.BOOT_REPS)
            rows["transfer"] = {"name": transfer_name(), "trained_on": recs[0]["trained_on"],
                                "seeds": [r["seed"] for r in recs], "seed_scores": [mean(r["episodes"], "test")
                                                                                   for r in recs],
                                "score": float(m_test.mean()), "reward": float(_matrix(recs, "reward").mean()),
                                "vs_best_fixed": [d, lo, hi], "iqm": stats.iqm(m_test),
                                "p_improvement": stats.probability_of_improvement(m_test, f_test)}
        else:
            pending.append(transfer_name())
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
    fidelity = None
    if replay is not None:
        _add_pixel(rows, replay, counts)
        fidelity = _fidelity(task, fixed, replay, runs)
    else:
        pending.append("pixel-replay")
    gate = fidelity_gate(_current(task, read_record(record_path(task, "fidelity", None, runs))))
    if gate is None:
        pending.append("fidelity")
    return {"id": task.id, "central_id": task.central_id, "version": task.version,
            "fingerprint": task.fingerprint(), "task_loss": fixed["task_loss"], "sources": fixed["sources"],
            "fixed_family_size": len(fixed["members"]), "rows": rows, "pending": pending, "stale": stale,
            "fidelity": fidelity, "gate": gate,
            "commits": sorted({fixed["commit"]} | {read_record(p)["commit"] for p in
                                                   Path(runs, task.id.replace("/", "-")).glob("*.json")})}


def _fidelity(task: Task, fixed: dict, replay: dict, runs: Path) -> dict | None:
    """Rank agreement over the replayed policies: the fast (feature-mode) reward against the pixel-mode test score.

    Each replayed policy (a row's policy; every seed of a learned method) is a point: its feature-mode reward score
    on the evaluation episodes against its pixel-mode test score on the pixel seeds. Spearman's rho over the points
    (``None`` with fewer than 4). It is the replay's by-product, on the pixel seeds of the replay only: a weaker
    check than a fidelity gate over many pixel seeds."""
    from scipy.stats import spearmanr

    feature = {("no synthetic", None): fixed["no_synthetic"][fixed["task_loss"]],
               ("best fixed", None): recorded_best(fixed)["episodes"]}
    for r in replay["rows"]:
        if r["row"] not in ("no synthetic", "best fixed"):
            rec = read_record(record_path(task, r["row"], r["seed"], runs))
            if rec is not None:
                feature[(r["row"], r["seed"])] = rec["episodes"]
    pts = [(mean(feature[(r["row"], r["seed"])], "reward"), mean(r["episodes"], "test"))
           for r in replay["rows"] if (r["row"], r["seed"]) in feature]
    if len(pts) < 4:
        return None
    x, y = np.array(pts).T
    rho = float(spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
    return {"spearman_reward_vs_pixel_test": rho, "points": len(pts), "pixel_seeds": len(replay["pixel_seeds"])}


def fidelity_gate(rec: dict | None) -> dict | None:
    """The fidelity gate's verdict from its record (amendment 2 of ``docs/protocol.md``): per policy the mean fast
    reward (feature mode), pixel-mode reward and test score over the fidelity seeds; Spearman's rho of the fast
    reward against the pixel-mode test score and reward; the resolved pairs (paired pixel-mode test difference over
    the seeds with a t interval excluding 0) and the share the fast reward orders the same; pass or fail."""
    from itertools import combinations

    from scipy.stats import spearmanr, t as student_t

    if rec is None or len(rec["rows"]) < 4:
        return None
    names = [r["policy"] for r in rec["rows"]]

    def by_seed(episodes, key):
        return np.array([e[key] for e in sorted(episodes, key=lambda e: e["seed"])])

    fast = np.array([by_seed(r["feature"], "reward").mean() for r in rec["rows"]])
    px_test = np.array([by_seed(r["pixel"], "test") for r in rec["rows"]])
    px_reward = np.array([by_seed(r["pixel"], "reward").mean() for r in rec["rows"]])

    def rho(a, b):
        return float(spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")

    n = px_test.shape[1]
    q = float(student_t.ppf(0.5 + P.FIDELITY["level"] / 2, n - 1))
    resolved = agree = 0
    for i, j in combinations(range(len(names)), 2):
        d = px_test[i] - px_test[j]
        half = q * d.std(ddof=1) / np.sqrt(n)
        if abs(d.mean()) > half:  # the interval excludes 0
            resolved += 1
            agree += int(np.sign(fast[i] - fast[j]) == np.sign(d.mean()))
    r_test = rho(fast, px_test.mean(1))
    passed = bool(r_test >= P.FIDELITY["threshold"] or (resolved > 0 and agree == resolved))
    return {"policies": [{"policy": nm, "loss": r["loss"], "fast_reward": float(f), "pixel_reward": float(pr),
                          "pixel_test": float(pt)}
                         for nm, r, f, pr, pt in zip(names, rec["rows"], fast, px_reward, px_test.mean(1))],
            "seeds": n, "spearman_fast_vs_pixel_test": r_test, "spearman_fast_vs_pixel_reward": rho(fast, px_reward),
            "spearman_pixel_reward_vs_pixel_test": rho(px_reward, px_test.mean(1)),
            "resolved_pairs": resolved, "pairs": len(names) * (len(names) - 1) // 2, "agreeing_pairs": agree,
            "planned": len(rec.get("planned", names)), "passed": passed}


def gate_line(gate: dict | None) -> str:
    """One line for the tables: rho, resolved pairs ordered the same, pass / FAIL."""
    if gate is None:
        return "not run"
    partial = (f" (partial: {len(gate['policies'])} of {gate['planned']} policies)"
               if len(gate["policies"]) < gate.get("planned", 0) else "")
    return (f"{gate['spearman_fast_vs_pixel_test']:+.2f}, {gate['agreeing_pairs']}/{gate['resolved_pairs']} pairs, "
            + ("pass" if gate["passed"] else "**fail**") + partial)


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
    for loss, r in rows.get("oracle_policy", {}).items():
        lines.append(f"| hand-written oracle policy, {loss} (a reference, not a bound) | {100 * r['reward']:.1f} | "
                     f"{100 * r['score']:.1f} | {_pct(100 * (r['score'] - bf['score']))} | | | | | |")
    if "transfer" in rows:
        r = rows["transfer"]
        d, lo, hi = r["vs_best_fixed"]
        per = ", ".join(f"{100 * x:.1f}" for x in r["seed_scores"])
        lines.append(f"| transfer: {P.TRANSFER['method']} trained on `{r['trained_on']}`, zero-shot "
                     f"({len(r['seeds'])} seeds) | {100 * r['reward']:.1f} | {100 * r['score']:.1f} | "
                     f"{_pct(100 * d)} [{_pct(100 * lo)}, {_pct(100 * hi)}] | | {100 * r['iqm']:.1f} | "
                     f"{r['p_improvement']:.2f} | {per} | |")
    lines.append(f"| CEILING (test-scored CEM; not a method) | | {100 * ceiling:.1f} | | 100 | | | | "
                 f"{_pixel(rows['ceiling'])} |" if ceiling is not None else "| CEILING | not run | | | | | | | |")
    lines += ["", "Reproduce: `python -m tailmix.suite run --task " + task.name + " --method <method>` for each "
              "method, then `python -m tailmix.suite report`."]
    gate = entry.get("gate")
    lines += ["", "## Fidelity gate", ""]
    if gate is None:
        lines.append("Not run yet: `python -m tailmix.suite run --task " + task.name + " --method fidelity`.")
    else:
        lines += [f"Amendment 2 of the protocol: each policy on {gate['seeds']} fresh episode seeds in feature mode "
                  "(the fast reward every agent optimises) and in pixel mode (a CNN trained on the same mix). "
                  f"Spearman of the fast reward against the pixel-mode test score "
                  f"**{gate['spearman_fast_vs_pixel_test']:+.2f}**, against the pixel-mode reward "
                  f"{gate['spearman_fast_vs_pixel_reward']:+.2f} (pixel reward against pixel test "
                  f"{gate['spearman_pixel_reward_vs_pixel_test']:+.2f}); pixel mode resolves "
                  f"{gate['resolved_pairs']} of {gate['pairs']} pairs (paired 95% t interval over the seeds "
                  f"excluding 0), the fast reward orders {gate['agreeing_pairs']} of them the same way. "
                  f"Gate (rho >= {P.FIDELITY['threshold']} or every resolved pair ordered the same): "
                  + ("**pass**." if gate["passed"] else "**fail**: read this task's feature-mode rows as the fast "
                     "reward's, not a trained CNN's."), "",
                  *([f"**Partial**: {len(gate['policies'])} of the {gate['planned']} planned policies have run; "
                     "running the method again adds the rest.", ""] if len(gate["policies"]) < gate["planned"] else []),
                  "| policy | loss | fast reward | pixel reward | pixel test |", "|---|---|---|---|---|"]
        for r in gate["policies"]:
            lines.append(f"| {r['policy']} | {r['loss']} | {100 * r['fast_reward']:.1f} | {100 * r['pixel_reward']:.1f}"
                         f" | {100 * r['pixel_test']:.1f} |")
        lines += ["", "Reproduce: `python -m tailmix.suite run --task " + task.name + " --method fidelity`."]
    return "\n".join(lines) + "\n"


def summary_table(entries: dict) -> str:
    lines = ["| task | best fixed | best learned | normalized | ceiling | fidelity gate |", "|---|---|---|---|---|---|"]
    for task in TASKS.values():
        e = entries.get(task.id)
        if e is None:
            lines.append(f"| `{task.id}` | not run | | | | |")
            continue
        rows = e["rows"]
        learned = [(m, rows[m]) for m in P.LEARNED if m in rows]
        bf = rows["best_fixed"]
        best = max(learned, key=lambda x: x[1]["reward"]) if learned else None  # picked on the reward
        ceil = f"{100 * rows['ceiling']['score']:.1f}" if "ceiling" in rows else "not run"
        if best is None:
            lines.append(f"| [`{task.id}`](docs/results/suite/{task.name}.md) | {100 * bf['score']:.1f} | not run "
                         f"| | {ceil} | {gate_line(e.get('gate'))} |")
            continue
        m, r = best
        d, lo, hi = r["vs_best_fixed"]
        norm = f"{r['normalized']:.0f}" if "normalized" in r else ""
        lines.append(f"| [`{task.id}`](docs/results/suite/{task.name}.md) | {100 * bf['score']:.1f} | {m}: "
                     f"{100 * r['score']:.1f} ({_pct(100 * d)} [{_pct(100 * lo)}, {_pct(100 * hi)}]) | {norm} | "
                     f"{ceil} | {gate_line(e.get('gate'))} |")
    return "\n".join(lines) + "\n"


def _reward_name(task: Task) -> str:
    folds = task.env_settings.get("val_folds", 1)
    return f"{folds}-fold cross-validated (train + val)" if folds > 1 else "val split"


def suite_markdown(entries: dict, table: str) -> str:
    """``docs/suite.md``: the tasks, a card per task (what, fidelity, headroom), how to use them."""
    lines = ["# Benchmark suite", "",
             "Registered tasks, a protocol committed before its runs ([protocol](protocol.md)), and reference scores "
             "shipped as data (`tailmix/suite/reference_scores.json`). This page is generated by "
             "`python -m tailmix.suite report` from the run records under `docs/results/suite/runs/`.", "",
             "```python", "import gymnasium, pettingzoo, tailmix", "",
             'env = gymnasium.make("tailmix/KnownAnswerCentral-v0")            # gymnasium: one agent sets every ratio',
             'penv = pettingzoo.make("parallel", "tailmix/KnownAnswer-v0")      # PettingZoo: one agent per class',
             "from tailmix.suite import normalized_score",
             'print(normalized_score("KnownAnswer", 0.946))  # 0 = best fixed (protocol), 100 = ceiling', "```", "",
             "Score your own policy under the protocol (a `module:function(observations, env) -> actions`, a policy "
             "object, a fixed spec or an SB3 zip): `tailmix bench --task KnownAnswer --policy my_module:act --out "
             "row.json`. `make` builds a task's missing assets (generator, bank, encoder) once into the cache "
             "(`cache_dir=`, default the user cache); a MedMNIST task whose file is missing fails in one line "
             "before any work (set `TAILMIX_DATA_DIR`). Every env of a task carries `env.suite_task` (id, version, "
             "recipe fingerprint, overridden settings).", "",
             "## Tasks", "",
             "| PettingZoo id | gymnasium id | sources (G) | reward | data |", "|---|---|---|---|---|"]
    for task in TASKS.values():
        lines.append(f"| [`{task.id}`](results/suite/{task.name}.md) | `{task.central_id}` | "
                     f"{', '.join(task.sources)} ({len(task.sources)}) | {_reward_name(task)} | "
                     f"{task.data_file or 'embedded (scikit-learn digits)'} |")
    lines += ["", "Every task: env v1 draws (`draw=\"unique\"`), the pool observation, 10 steps per episode, "
              "ratio <= 8, feature mode (linear head over a cross-fitted encoder); the pool tasks decay the head's "
              "learning rate over the episode (`lr_schedule=\"cosine\"`), the known-answer task keeps env v0's "
              "settings so its earlier results carry over. For transfer, `class_id_obs=False` drops the one-hot "
              "class id from each agent's observation (per-class statistics only), so one shared policy fits any "
              "number of classes.", "", "## Reference scores", "", table.replace("docs/results/suite/", "results/suite/"),
              "## Task cards", ""]
    for task in TASKS.values():
        e = entries.get(task.id)
        lines += [f"### {task.name}", "", f"{task.summary}. {task.card}", ""]
        if e is None:
            lines += ["- Headroom: not measured (no reference run yet).", "- Fidelity: not measured.", ""]
            continue
        rows = e["rows"]
        bf = rows["best_fixed"]
        head = (f"ceiling {100 * rows['ceiling']['score']:.1f} vs best fixed {100 * bf['score']:.1f} "
                f"({100 * (rows['ceiling']['score'] - bf['score']):+.1f} points)" if "ceiling" in rows
                else "no ceiling run yet")
        lines.append(f"- Headroom: {head}; best fixed `{bf['spec']}` under `{bf['loss']}`, "
                     f"{100 * (bf['score'] - rows['no_synthetic']['score']):+.1f} over no synthetic data (ce).")
        fid, gate = e.get("fidelity"), e.get("gate")
        if gate:
            lines.append(f"- Fidelity gate ({gate['seeds']} pixel seeds, {len(gate['policies'])} policies): Spearman "
                         f"{gate['spearman_fast_vs_pixel_test']:+.2f} between the fast reward and the pixel-mode test "
                         f"score; {gate['agreeing_pairs']} of the {gate['resolved_pairs']} pairs pixel mode resolves "
                         "are ordered the same. " + ("Pass." if gate["passed"] else
                                                     "**Fail: read the feature-mode rows as the fast reward's, not a "
                                                     "CNN's** (`make` warns)."))
        elif fid:
            lines.append(f"- Fidelity (does the fast reward rank policies as a CNN trained on the mix does?): "
                         f"Spearman {fid['spearman_reward_vs_pixel_test']:+.2f} between the feature-mode reward and "
                         f"the pixel-mode test score over the {fid['points']} replayed policies ({fid['pixel_seeds']} "
                         "pixel seeds each; the gate of >= 20 pixel seeds is not run yet). "
                         + ("**Below 0.8: read the feature-mode rows as the fast reward's, not a CNN's.**"
                            if not fid['spearman_reward_vs_pixel_test'] >= 0.8 else "At least 0.8."))
        else:
            lines.append("- Fidelity: not measured (no pixel replay yet); read the feature-mode numbers as the fast "
                         "reward's, not a CNN's.")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_all(runs: Path = RUNS) -> list[Path]:
    """Write the reference JSON, one page per task, the summary page and the README table; their paths."""
    from tailmix.io.atomic import atomic_write_text

    entries, written = {}, []
    DOCS.mkdir(parents=True, exist_ok=True)
    for task in TASKS.values():
        entry = task_summary(task, runs)
        path = DOCS / f"{task.name}.md"
        if entry is None:  # a page all the same (the docs link every task): it says nothing has run
            atomic_write_text(path, f"# {task.id} (`{task.central_id}`)\n\n{task.summary}.\n\n{task.card}\n\n"
                              "No reference run yet: `python -m tailmix.suite run --task " + task.name
                              + " --method fixed`, then the other methods and `python -m tailmix.suite report`.\n")
            written.append(path)
            continue
        entries[task.id] = entry
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
    suite_page = DOCS.parent.parent / "suite.md"
    atomic_write_text(suite_page, suite_markdown(entries, table))
    written.append(suite_page)
    if README.is_file():
        text = README.read_text()
        if MARK[0] in text and MARK[1] in text:
            new = re.sub(re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]), MARK[0] + "\n" + table + MARK[1], text,
                         flags=re.S)
            if new != text:
                atomic_write_text(README, new)
                written.append(README)
    return written
