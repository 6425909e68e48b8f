"""``python train_agents.py --task KnownAnswer``: a suite task end to end in a few minutes, from the command line.

A small version of the protocol (``docs/protocol.md``) for one task, in one run folder: no synthetic data under
every loss (the task loss is the best on the reward), the static fixed family under cross-entropy and the task
loss, a learned sampler (CEM over the whole pool action; ``--method cem-schedule`` for knots over the episode)
started from the best fixed policy, and the test-scored ceiling. It prints one table and one sentence: how
much of the headroom (best fixed -> ceiling) the learned sampler took. Its numbers are the demo's, on
``--seeds`` evaluation episodes; the reference rows of the suite come from ``python -m tailmix.suite run``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tailmix.suite import protocol as P


def run_demo(task_name: str, *, method: str = "cem-static", seeds: int = 3, cache_dir=None, data_dir=None,
             run_dir: Path | None = None, log=print) -> dict:
    """Run the demo; returns its rows (and writes ``demo.md`` / ``demo.json`` into ``run_dir`` when given)."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.suite.runner import Player, _cem, fixed_members, mean, no_synthetic_rows, source_names
    from tailmix.suite.tasks import get_task, task_env_kwargs

    if method not in ("cem-static", "cem-schedule"):
        raise ValueError(f"--method {method!r}: the demo runs cem-static or cem-schedule (the RL rows take hours on a "
                         "CPU: `python -m tailmix.suite run --method ppo-central`)")
    if not 1 <= int(seeds) <= len(P.EVAL_SEEDS):
        raise ValueError(f"--seeds must be 1..{len(P.EVAL_SEEDS)}")
    t0 = time.time()
    task = get_task(task_name)
    kw = task_env_kwargs(task, cache_dir=cache_dir, data_dir=data_dir)
    player = Player(kw, P.EVAL_SEEDS[:seeds])
    nosyn, task_loss = no_synthetic_rows(player, task.name, log)
    log(f"[{task.name}] task loss {task_loss} (best no-synthetic row on the reward)")

    schedule = method == "cem-schedule"
    members = [m for m in fixed_members(source_names(kw)) if (m.partition("@")[0] in P.SCHEDULES) == schedule
               or m == "none"]
    fixed = [(spec, loss, player.play(make_baseline(spec), loss)) for loss in dict.fromkeys(("ce", task_loss))
             for spec in members]
    best = max(fixed, key=lambda f: mean(f[2], "reward"))
    log(f"[{task.name}] best fixed on the reward: {best[0]} under {best[1]} ({len(fixed)} fixed policies)")
    knots = P.CEM["knots"] if schedule else None
    policy, res = _cem(dict(kw, loss=task_loss), seed=0, knots=knots, init=best[0], budget=P.CEM)
    learned = player.play(policy, task_loss)
    cpolicy, _ = _cem(dict(kw, loss=task_loss), seed=0, knots=knots, init=np.asarray(res.mean_action, np.float32),
                      budget=P.CEILING, fitness_split="test")
    ceiling = player.play(cpolicy, task_loss)
    rows = {"no synthetic (ce)": nosyn["ce"], **({f"no synthetic ({task_loss})": nosyn[task_loss]}
                                                 if task_loss != "ce" else {}),
            f"best fixed ({'schedules' if schedule else 'static shapes'}): {best[0]}, {best[1]}": best[2], f"learned: {method} (seed 0)": learned,
            "CEILING (test-scored search; not a method)": ceiling}
    lo, hi = mean(best[2], "test"), mean(ceiling, "test")
    share = 100 * (mean(learned, "test") - lo) / (hi - lo) if hi > lo else float("nan")
    out = {"task": task.id, "method": method, "seeds": list(P.EVAL_SEEDS[:seeds]), "task_loss": task_loss,
           "rows": {k: {"reward": mean(v, "reward"), "test": mean(v, "test")} for k, v in rows.items()},
           "headroom_share": share, "wall_s": round(time.time() - t0, 1)}
    out["sentence"] = (f"{method} took {share:.0f}% of the headroom (best fixed {100 * lo:.1f} -> ceiling "
                       f"{100 * hi:.1f}, test balanced accuracy over {seeds} episodes)." if hi > lo else
                       f"The test-scored search did not beat the best fixed policy here ({100 * hi:.1f} vs "
                       f"{100 * lo:.1f}): no headroom measured for {method} to take.")
    lines = [f"# {task.id}: demo ({method})", "", "| row | reward | test |", "|---|---|---|"]
    lines += [f"| {k} | {100 * v['reward']:.1f} | {100 * v['test']:.1f} |" for k, v in out["rows"].items()]
    lines += ["", out["sentence"], "", f"{out['wall_s']:.0f} s. The suite's reference rows (5 method seeds, the whole "
              "fixed family, intervals): docs/results/suite/."]
    text = "\n".join(lines) + "\n"
    print(text)
    if run_dir is not None:
        from tailmix.io.atomic import atomic_write_text

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "demo.md", text)
        atomic_write_text(run_dir / "demo.json", json.dumps(out, indent=1) + "\n")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="train_agents.py --task", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="a suite task (`python -m tailmix.suite list`), e.g. KnownAnswer")
    p.add_argument("--method", default="cem-static", choices=("cem-static", "cem-schedule"))
    p.add_argument("--seeds", type=int, default=3, help="evaluation episodes (1-5)")
    p.add_argument("--run-dir", type=Path, default=None, help="write demo.md and demo.json here")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    run_demo(a.task, method=a.method, seeds=a.seeds, cache_dir=a.cache_dir, data_dir=a.data_dir, run_dir=a.run_dir)
    return 0
