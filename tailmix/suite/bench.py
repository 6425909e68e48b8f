"""Score your own policy on a suite task under the protocol: ``tailmix bench --task T --policy P``.

``P`` is ``module:attr`` (a :class:`tailmix.agents.baselines.Policy`, a class or factory returning one, or a function
``act(observations, env) -> actions``), a fixed-family spec (``fill@augment``, ``decay:inverse``), or an SB3 zip
(``model.zip``, with ``--algo`` and ``--wrapper``). The policy is played on the protocol's evaluation episodes
in the task's env under ``--loss`` (default: the task loss of the reference rows) and compared with the reference
best fixed row on the same episodes: raw score, interval, normalized score. ``--out`` writes the row as JSON.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np


class FunctionPolicy:
    """A plain ``act(observations, env)`` function as a policy."""

    def __init__(self, fn, name: str) -> None:
        self.fn, self.name = fn, name

    def reset(self, seed=None) -> None:
        pass

    def act(self, observations, env):
        return self.fn(observations, env)


def load_policy(spec: str, *, algo: str = "ppo", wrapper: str = "central"):
    """A policy from ``module:attr``, a fixed-family spec, or an SB3 ``.zip``."""
    if spec.endswith(".zip"):
        from tailmix.agents.baselines import SB3Policy
        from tailmix.agents.sb3 import load_model

        if not Path(spec).is_file():
            raise ValueError(f"--policy {spec}: no such file")
        return SB3Policy(load_model(algo, spec), wrapper=wrapper, name=Path(spec).stem)
    from tailmix.agents.schedules import KINDS

    module, colon, attr = spec.partition(":")
    shape_kinds = ("none", "constant", "fill", "inverse", "random", *KINDS)  # a fixed spec, not module:attr
    if colon and module and attr and module.strip().lower() not in shape_kinds:
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"--policy {spec}: {err}") from None
        if isinstance(obj, type):
            obj = obj()
        if hasattr(obj, "act") and hasattr(obj, "reset"):
            obj.name = getattr(obj, "name", attr)
            return obj
        if callable(obj):
            return FunctionPolicy(obj, attr)
        raise ValueError(f"--policy {spec}: {attr} is neither a policy (reset/act) nor a function act(obs, env)")
    from tailmix.agents.baselines import make_baseline

    return make_baseline(spec)


def score(task_name: str, policy, *, loss: str | None = None, cache_dir=None, data_dir=None) -> dict:
    """Play ``policy`` on the protocol's evaluation episodes and compare it with the reference best fixed row."""
    from tailmix.suite import protocol as P
    from tailmix.suite import stats
    from tailmix.suite.reference import normalized_score, reference_scores
    from tailmix.suite.runner import Player, mean
    from tailmix.suite.tasks import get_task, task_env_kwargs

    task = get_task(task_name)
    try:
        ref = reference_scores(task.id)
    except ValueError:
        ref = None
    loss = loss or (ref["task_loss"] if ref else "ce")
    kw = task_env_kwargs(task, cache_dir=cache_dir, data_dir=data_dir)
    rows = Player(kw).play(policy, loss)
    out = {"task": task.id, "task_fingerprint": task.fingerprint(), "protocol": P.PROTOCOL_VERSION,
           "policy": getattr(policy, "name", type(policy).__name__), "loss": loss, "episodes": rows,
           "reward": mean(rows, "reward"), "score": mean(rows, "test")}
    test = np.array([[r["test"] for r in rows]])
    out["interval"] = list(stats.bootstrap_interval(test.ravel()))
    if ref is not None and ref["fingerprint"] != task.fingerprint():
        out["warning"] = "the reference rows were made with another version of this task's recipe"
    if ref is not None:
        try:
            out["normalized"] = normalized_score(task.id, out["score"])
        except ValueError as err:
            out["normalized_note"] = str(err)
        out["best_fixed"] = ref["rows"]["best_fixed"]
    return out


def add_arguments(p) -> None:
    p.add_argument("--task", required=True, help="a suite task (name or id; `python -m tailmix.suite list`)")
    p.add_argument("--policy", required=True, help="module:attr, a fixed spec (fill@augment), or an SB3 model.zip")
    p.add_argument("--algo", default="ppo", help="SB3 algorithm of a .zip policy")
    p.add_argument("--wrapper", default="central", choices=("central", "shared"), help="how a .zip was trained")
    p.add_argument("--loss", default=None, help="head loss (default: the reference rows' task loss)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=None, help="write the row as JSON here")


def main(args) -> int:
    policy = load_policy(args.policy, algo=args.algo, wrapper=args.wrapper)
    row = score(args.task, policy, loss=args.loss, cache_dir=args.cache_dir, data_dir=args.data_dir)
    lo, hi = row["interval"]
    line = (f"{row['task']} {row['policy']} (loss {row['loss']}): test balanced accuracy {100 * row['score']:.1f} "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] over {len(row['episodes'])} episodes; reward {100 * row['reward']:.1f}")
    if "best_fixed" in row:
        line += f"; best fixed {100 * row['best_fixed']['score']:.1f}"
    if "normalized" in row:
        line += f"; normalized {row['normalized']:.0f}"
    print(line)
    if "warning" in row:
        print("warning: " + row["warning"])
    if args.out is not None:
        from tailmix.io.atomic import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(row, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0
