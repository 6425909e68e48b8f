"""The protocol's runner: one run of one method on one task -> one JSON record; records -> reference scores.

    python -m tailmix.suite run --task KnownAnswer --method fixed
    python -m tailmix.suite run --task KnownAnswer --method cem-static --seeds 0 1 2 3 4
    python -m tailmix.suite run --task KnownAnswer --method ceiling
    python -m tailmix.suite report            # reference_scores.json + docs/results/suite/*.md + the README table

Methods: ``fixed`` (no-synthetic rows, the task loss, the whole fixed family; one record per task), every
learned method of :data:`tailmix.suite.protocol.LEARNED` (one record per method seed), ``ceiling`` (needs the
``fixed`` record and ``cem-static``/``cem-schedule`` seed 0). ``docs/protocol.md`` defines them. Records go to
``<runs>/<task id with '/' as '-'>/<method>[-seed<k>].json`` (default ``docs/results/suite/runs``), written
atomically; a run whose record exists is skipped (``--overwrite`` redoes it), so an interrupted batch resumes.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from tailmix.suite import protocol as P
from tailmix.suite.tasks import Task, get_task, task_env_kwargs

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "docs" / "results" / "suite" / "runs"


# -- provenance ------------------------------------------------------------------------------------------------
def commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes), or ``unknown`` outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    from importlib import metadata

    import gymnasium
    import torch

    try:
        own = metadata.version("tailmix")
    except metadata.PackageNotFoundError:  # a checkout run without installing
        own = "unknown"
    return {"tailmix": own, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "gymnasium": gymnasium.__version__}


def record_path(task: Task, method: str, seed: int | None, runs: Path = RUNS) -> Path:
    name = method if seed is None else f"{method}-seed{seed}"
    return Path(runs) / task.id.replace("/", "-") / f"{name}.json"


def write_record(path: Path, record: dict) -> None:
    from tailmix.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(path: Path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


# -- policies --------------------------------------------------------------------------------------------------
def source_names(kw: dict) -> list[str]:
    from tailmix.envs.sources import make_source, source_specs

    specs = source_specs(kw.get("source"), kw.get("sources"))
    return [getattr(make_source(s, kw["dataset"], index=i) if isinstance(s, str) or s is None else s, "name",
                    f"source{i}") for i, s in enumerate(specs)]


def fixed_members(names: list[str]) -> list[str]:
    """Every fixed-family spec for an env with these sources (one source: the plain shapes)."""
    shapes = list(P.STATIC_SHAPES) + list(P.SCHEDULES)
    if len(names) <= 1:
        return shapes
    out = []
    for shape in shapes:
        if shape == "none":
            out.append(shape)
            continue
        out += [f"{shape}@{n}" for n in names] + [f"{shape}@mix"]
    return out


# -- playing ---------------------------------------------------------------------------------------------------
class Player:
    """Plays policies on the evaluation seeds, one eval env per loss (built once)."""

    def __init__(self, kw: dict, seeds=None) -> None:
        self.kw, self.seeds, self._envs = kw, list(P.EVAL_SEEDS if seeds is None else seeds), {}

    def env_kwargs(self, loss: str | None = None) -> dict:
        return dict(self.kw) if loss is None else dict(self.kw, loss=loss)

    def play(self, policy, loss: str | None = None) -> list[dict]:
        from tailmix.agents.evaluate import evaluate, make_eval_env

        key = loss or self.kw.get("loss", "ce")
        if key not in self._envs:
            self._envs[key] = make_eval_env(self.env_kwargs(key))
        rows = evaluate(policy, self.env_kwargs(key), seeds=self.seeds, env=self._envs[key])
        return [{"seed": r["seed"], "reward": r["val_balanced_accuracy"], "test": r["test_balanced_accuracy"],
                 "recall": r["test_recall"], "ratios": r["ratios"]} for r in rows]


def mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _base_record(task: Task, method: str, seed, t0: float) -> dict:
    return {"task": task.id, "task_version": task.version, "task_fingerprint": task.fingerprint(),
            "protocol": P.PROTOCOL_VERSION, "method": method, "seed": seed, "wall_s": round(time.time() - t0, 1),
            "commit": commit(), "versions": versions(), "eval_seeds": list(P.EVAL_SEEDS)}


def no_synthetic_rows(player: Player, name: str, log=print) -> tuple[dict, str]:
    """No synthetic data under cross-entropy and every long-tail loss, and the task loss: the best of them on the
    reward (``ce`` on a tie)."""
    from tailmix.agents.baselines import make_baseline

    nosyn = {}
    for loss in ("ce", *P.LT_LOSSES):
        nosyn[loss] = player.play(make_baseline("none"), loss)
        log(f"[{name}] no synthetic, {loss}: reward {mean(nosyn[loss], 'reward'):.4f}")
    return nosyn, max(nosyn, key=lambda k: (mean(nosyn[k], "reward"), k == "ce"))


def run_fixed(task: Task, kw: dict, log=print) -> dict:
    """No-synthetic rows under every loss, the task loss, and every fixed-family member under ce and it."""
    from tailmix.agents.baselines import make_baseline

    t0 = time.time()
    player = Player(kw)
    nosyn, task_loss = no_synthetic_rows(player, task.name, log)
    members = []
    names = source_names(kw)
    for loss in dict.fromkeys(("ce", task_loss)):
        for spec in fixed_members(names):
            rows = player.play(make_baseline(spec), loss)  # <shape>[@<source>|@mix]
            members.append({"spec": spec, "loss": loss, "episodes": rows})
        log(f"[{task.name}] fixed family under {loss}: {len(fixed_members(names))} members")
    best = max(members, key=lambda m: mean(m["episodes"], "reward"))
    rec = _base_record(task, "fixed", None, t0)
    ds = kw["dataset"]
    rec.update(test_counts=np.bincount(np.asarray(ds.test_labels), minlength=ds.num_classes).tolist(),
               class_names=list(ds.class_names), train_counts=np.asarray(ds.train_counts).tolist())
    rec.update(sources=names, task_loss=task_loss, no_synthetic=nosyn,
               members=members, best={"spec": best["spec"], "loss": best["loss"]})
    return rec


def recorded_best(fixed: dict) -> dict:
    """The member the ``fixed`` record picked as best fixed (its spec, loss and episodes)."""
    return next(m for m in fixed["members"] if m["spec"] == fixed["best"]["spec"] and m["loss"] == fixed["best"]["loss"])


def best_member(fixed: dict, kind: str | None = None) -> dict:
    """The fixed member of best reward score (``kind``: ``"static"`` or ``"schedule"`` only)."""
    def is_schedule(spec):
        return spec.partition("@")[0] in P.SCHEDULES

    pool = [m for m in fixed["members"] if kind is None or (kind == "schedule") == is_schedule(m["spec"])]
    return max(pool, key=lambda m: mean(m["episodes"], "reward"))


def _cem(kw: dict, *, seed: int, knots, init, budget: dict, fitness_split: str = "val"):
    from tailmix.agents.cem import CEMPolicy, cem_search

    res = cem_search(kw, generations=budget["generations"], population=budget["population"],
                     episodes_per_candidate=budget["episodes"], seed=seed, init_mean=init, knots=knots,
                     fitness_split=fitness_split)
    return CEMPolicy.from_result(res), res


def run_cem(task: Task, kw: dict, fixed: dict, method: str, seed: int, log=print) -> dict:
    t0 = time.time()
    kind = "schedule" if method == "cem-schedule" else "static"
    start = best_member(fixed, kind)
    kw_loss = dict(kw, loss=fixed["task_loss"])
    knots = P.CEM["knots"] if kind == "schedule" else None
    # CEM starts from the fixed member's spec (cem_search resolves @source and @mix)
    policy, res = _cem(kw_loss, seed=seed, knots=knots, init=start["spec"], budget=P.CEM)
    rows = Player(kw).play(policy, fixed["task_loss"])
    log(f"[{task.name}] {method} seed {seed}: reward {mean(rows, 'reward'):.4f} test {mean(rows, 'test'):.4f}")
    rec = _base_record(task, method, seed, t0)
    rec.update(loss=fixed["task_loss"], start=start["spec"], budget=P.CEM, episodes=rows,
               policy={"kind": "cem", "knots": knots, "action": np.asarray(res.mean_action).tolist(),
                       "max_ratio": res.max_ratio})
    return rec


def _sb3_model(method: str, run_dir: Path, train_kw, timesteps: int, seed: int):
    """The SB3 model of ``method`` in ``run_dir``: loaded when trained before (a resumed batch), else trained there
    on the env settings ``train_kw()`` returns (called only then: building a task's env can take minutes)."""
    from tailmix.agents.sb3 import load_model, train

    spec = P.SB3_METHODS[method]
    if (run_dir / "model.zip").is_file():
        return load_model(spec["algo"], run_dir / "model.zip")
    model = train(spec["algo"], train_kw(), wrapper=spec["wrapper"], total_timesteps=timesteps, seed=seed,
                  log_dir=str(run_dir))
    model.get_env().close()
    return model


def run_sb3(task: Task, kw: dict, fixed: dict, method: str, seed: int, model_dir: Path, log=print) -> dict:
    from tailmix.agents.baselines import SB3Policy

    t0 = time.time()
    spec = P.SB3_METHODS[method]
    steps = spec["timesteps"]["digits" if task.dataset["kind"] == "digits-lt" else "medmnist"]
    kw_loss = dict(kw, loss=fixed["task_loss"])
    run_dir = Path(model_dir) / task.id.replace("/", "-") / f"{method}-seed{seed}"
    model = _sb3_model(method, run_dir, lambda: dict(kw_loss, **P.train_env(method, len(task.sources))), steps, seed)
    rows = Player(kw).play(SB3Policy(model, wrapper=spec["wrapper"], name=method), fixed["task_loss"])
    log(f"[{task.name}] {method} seed {seed}: reward {mean(rows, 'reward'):.4f} test {mean(rows, 'test'):.4f}")
    rec = _base_record(task, method, seed, t0)
    rec.update(loss=fixed["task_loss"], timesteps=steps, train_env=P.train_env(method, len(task.sources)),
               episodes=rows,
               policy={"kind": "sb3", "algo": spec["algo"], "wrapper": spec["wrapper"], "model": str(run_dir)})
    return rec


def run_ceiling(task: Task, kw: dict, fixed: dict, cem_records: dict, log=print) -> dict:
    """CEM on the test fitness, static and schedule, from where seed 0's val searches ended."""
    t0 = time.time()
    kw_loss = dict(kw, loss=fixed["task_loss"])
    found = []
    for method, knots in (("cem-static", None), ("cem-schedule", P.CEM["knots"])):
        start = np.asarray(cem_records[method]["policy"]["action"], np.float32)
        policy, res = _cem(kw_loss, seed=0, knots=knots, init=start, budget=P.CEILING, fitness_split="test")
        rows = Player(kw).play(policy, fixed["task_loss"])
        found.append({"from": method, "episodes": rows, "action": np.asarray(res.mean_action).tolist(),
                      "knots": knots})
        log(f"[{task.name}] ceiling from {method}: test {mean(rows, 'test'):.4f}")
    best = max(found, key=lambda f: mean(f["episodes"], "test"))  # the ceiling reads test: that is what it is
    rec = _base_record(task, "ceiling", None, t0)
    rec.update(loss=fixed["task_loss"], budget=P.CEILING, searches=found, episodes=best["episodes"],
               policy={"kind": "cem", "knots": best["knots"], "action": best["action"]})
    return rec


def transfer_name() -> str:
    return f"transfer-{P.TRANSFER['method']}-from-{P.TRANSFER['source']}"


def run_transfer(seed: int, *, runs: Path = RUNS, cache_dir=None, data_dir=None, model_dir=None,
                 overwrite: bool = False, log=print) -> Path:
    """The transfer track (``docs/protocol.md``): train on the source task without the class id, score zero-shot
    on the target task; the record goes to the target's folder."""
    from tailmix.agents.baselines import SB3Policy

    t0 = time.time()
    src, dst = get_task(P.TRANSFER["source"]), get_task(P.TRANSFER["target"])
    method = P.TRANSFER["method"]
    path = record_path(dst, transfer_name(), seed, runs)
    if path.is_file() and not overwrite:
        return path
    fixed_src = read_record(record_path(src, "fixed", None, runs))
    fixed_dst = read_record(record_path(dst, "fixed", None, runs))
    if fixed_src is None or fixed_dst is None:
        raise ValueError(f"run --method fixed on {src.name} and {dst.name} first (the task losses come from them)")
    spec = P.SB3_METHODS[method]
    run_dir = Path(model_dir or Path(cache_dir or ".") / "suite-agents") / src.id.replace("/", "-") / \
        f"{method}-noclassid-seed{seed}"
    model = _sb3_model(method, run_dir, lambda: dict(
        task_env_kwargs(src, cache_dir=cache_dir, data_dir=data_dir, class_id_obs=False),
        loss=fixed_src["task_loss"], **P.train_env(method, len(src.sources))), P.TRANSFER["timesteps"], seed)
    kw_dst = task_env_kwargs(dst, cache_dir=cache_dir, data_dir=data_dir, class_id_obs=False)
    rows = Player(kw_dst).play(SB3Policy(model, wrapper=spec["wrapper"], name=transfer_name()), fixed_dst["task_loss"])
    log(f"[{dst.name}] {transfer_name()} seed {seed}: reward {mean(rows, 'reward'):.4f} test {mean(rows, 'test'):.4f}")
    rec = _base_record(dst, transfer_name(), seed, t0)
    rec.update(loss=fixed_dst["task_loss"], trained_on=src.id, trained_loss=fixed_src["task_loss"],
               timesteps=P.TRANSFER["timesteps"], train_env={**P.train_env(method, len(src.sources)),
                                                             "class_id_obs": False}, episodes=rows,
               policy={"kind": "sb3", "algo": spec["algo"], "wrapper": spec["wrapper"], "model": str(run_dir)})
    write_record(path, rec)
    return path


def policy_from_record(rec: dict, max_ratio: float):
    """The policy a learned (or ceiling) record played: a CEM vector or knot schedule, or an SB3 model."""
    pol = rec["policy"]
    if pol["kind"] == "sb3":
        from tailmix.agents.baselines import SB3Policy
        from tailmix.agents.sb3 import load_model

        return SB3Policy(load_model(pol["algo"], Path(pol["model"]) / "model.zip"), wrapper=pol["wrapper"],
                         name=rec["method"])
    if pol.get("knots"):
        from tailmix.agents.schedules import KnotSchedule

        return KnotSchedule(pol["action"], pol.get("max_ratio", max_ratio), name=rec["method"])
    from tailmix.agents.cem import CEMPolicy

    return CEMPolicy(pol["action"], pol.get("max_ratio", max_ratio), name=rec["method"])


def replay_rows(task: Task, fixed: dict, runs: Path) -> list[tuple[str, int | None, str, object]]:
    """``(row, seed, loss, policy-or-record)`` of every reference row, in table order, for the pixel replay."""
    from tailmix.agents.baselines import make_baseline

    out = [("no synthetic", None, fixed["task_loss"], make_baseline("none")),
           ("best fixed", None, fixed["best"]["loss"], make_baseline(fixed["best"]["spec"]))]
    for method in P.LEARNED:
        for seed in P.METHOD_SEEDS:
            rec = read_record(record_path(task, method, seed, runs))
            if rec is not None and rec.get("task_fingerprint") == task.fingerprint():
                out.append((method, seed, rec["loss"], rec))
    rec = read_record(record_path(task, "ceiling", None, runs))
    if rec is not None and rec.get("task_fingerprint") == task.fingerprint():
        out.append(("ceiling", None, rec["loss"], rec))
    return out


def run_pixel_replay(task: Task, kw: dict, fixed: dict, runs: Path, log=print) -> dict:
    """Every reference row's policy played again in pixel mode (a CNN trained on the mix) on the pixel seeds.
    Rows already in the record are kept (an interrupted or later replay only adds the missing ones)."""
    t0 = time.time()
    path = record_path(task, "pixel-replay", None, runs)
    old = read_record(path)
    done = {(r["row"], r["seed"]): r for r in (old or {}).get("rows", [])
            if old.get("task_fingerprint") == task.fingerprint()}
    player = Player(dict(kw, mode="pixel"), P.PIXEL_SEEDS)
    rows = []

    def snapshot() -> dict:
        rec = _base_record(task, "pixel-replay", None, t0)
        rec.update(pixel_seeds=list(P.PIXEL_SEEDS), rows=rows)
        return rec

    for row, seed, loss, what in replay_rows(task, fixed, runs):
        if (row, seed) in done:
            rows.append(done[(row, seed)])
            continue
        policy = policy_from_record(what, kw["max_ratio"]) if isinstance(what, dict) else what
        episodes = player.play(policy, loss)
        rows.append({"row": row, "seed": seed, "loss": loss, "episodes": episodes})
        log(f"[{task.name}] pixel replay {row}{'' if seed is None else f' seed {seed}'}: "
            f"test {mean(episodes, 'test'):.4f}")
        write_record(path, snapshot())  # after every row: nothing lost on interruption
    return snapshot()


def fidelity_policies(task: Task, fixed: dict, runs: Path) -> list[tuple[str, str, object]]:
    """``(name, loss, policy-or-record)`` of the fidelity gate (amendment 2), fixed by the records before the gate:
    no synthetic under cross-entropy and the task loss, best fixed, fixed members at evenly spaced reward ranks,
    seed 0 of every learned method with a record, and the ceiling."""
    from tailmix.agents.baselines import make_baseline

    out = [(f"no synthetic ({loss})", loss, make_baseline("none")) for loss in dict.fromkeys(("ce", fixed["task_loss"]))]
    best = fixed["best"]
    out.append(("best fixed", best["loss"], make_baseline(best["spec"])))
    ranked = sorted(fixed["members"], key=lambda m: mean(m["episodes"], "reward"))
    k = P.FIDELITY["fixed_members"]
    picks = sorted({int(round(i * (len(ranked) - 1) / (k - 1))) for i in range(k)})
    for i in picks:
        m = ranked[i]
        name = f"{m['spec']} ({m['loss']})"
        if m["spec"] == best["spec"] and m["loss"] == best["loss"] or any(n == name for n, _, _ in out):
            continue
        out.append((name, m["loss"], make_baseline(m["spec"])))
    for method in P.LEARNED:
        rec = read_record(record_path(task, method, 0, runs))
        if rec is not None and rec.get("task_fingerprint") == task.fingerprint():
            out.append((f"{method} seed 0", rec["loss"], rec))
    rec = read_record(record_path(task, "ceiling", None, runs))
    if rec is not None and rec.get("task_fingerprint") == task.fingerprint():
        out.append(("ceiling", rec["loss"], rec))
    return out


def run_fidelity(task: Task, kw: dict, fixed: dict, runs: Path, log=print) -> dict:
    """The fidelity gate (amendment 2): every gate policy on the 20 fidelity seeds in feature mode and in pixel
    mode. Policies already in the record are kept (an interrupted or later gate only adds the missing ones)."""
    t0 = time.time()
    path = record_path(task, "fidelity", None, runs)
    old = read_record(path)
    done = {r["policy"]: r for r in (old or {}).get("rows", []) if old.get("task_fingerprint") == task.fingerprint()}
    seeds = list(P.FIDELITY["seeds"])
    feature, pixel = Player(kw, seeds), Player(dict(kw, mode="pixel"), seeds)
    rows, plan = [], fidelity_policies(task, fixed, runs)

    def snapshot() -> dict:
        rec = _base_record(task, "fidelity", None, t0)
        rec.update(seeds=seeds, planned=[name for name, _, _ in plan], rows=rows)
        return rec

    for name, loss, what in plan:
        if name in done:
            rows.append(done[name])
            continue
        policy = policy_from_record(what, kw["max_ratio"]) if isinstance(what, dict) else what
        fast, slow = feature.play(policy, loss), pixel.play(policy, loss)
        rows.append({"policy": name, "loss": loss, "feature": fast, "pixel": slow})
        log(f"[{task.name}] fidelity {name}: fast reward {mean(fast, 'reward'):.4f} "
            f"pixel test {mean(slow, 'test'):.4f}")
        write_record(path, snapshot())  # after every policy: nothing lost on interruption
    return snapshot()


def run_oracle(task: Task, kw: dict, fixed: dict, log=print) -> dict:
    """The hand-written oracle policy of a known-answer task (fill the clean classes, nothing for the corrupted
    ones), under cross-entropy and the task loss: a reference row, named for what it is (not a bound)."""
    from tailmix.agents.cem import CEMPolicy
    from tailmix.envs.oracle import oracle_policy_ratios

    t0 = time.time()
    source = kw.get("source")
    if not hasattr(source, "corruption"):
        raise ValueError(f"{task.name} has no corrupted oracle source, so no hand-written oracle policy")
    ratios = oracle_policy_ratios(kw["dataset"].train_counts, sorted(source.corruption), kw["max_ratio"])
    action = (np.clip(ratios, 0, kw["max_ratio"]) / kw["max_ratio"] * 2 - 1).astype(np.float32)
    player = Player(kw)
    rows = {loss: player.play(CEMPolicy(action, kw["max_ratio"], name="oracle policy"), loss)
            for loss in dict.fromkeys(("ce", fixed["task_loss"]))}
    for loss, eps in rows.items():
        log(f"[{task.name}] oracle policy, {loss}: reward {mean(eps, 'reward'):.4f} test {mean(eps, 'test'):.4f}")
    rec = _base_record(task, "oracle", None, t0)
    rec.update(ratios=ratios.tolist(), rows=rows)
    return rec


def run(task_name: str, method: str, seeds=(None,), *, runs: Path = RUNS, cache_dir=None, data_dir=None,
        model_dir: Path | None = None, overwrite: bool = False, log=print) -> list[Path]:
    """Run ``method`` on ``task`` for each seed (skipping runs whose record exists); the record paths."""
    task = get_task(task_name)
    if method not in ("fixed", "ceiling", "pixel-replay", "fidelity", "oracle", *P.LEARNED):
        raise ValueError(f"unknown method {method!r}; use fixed, ceiling, pixel-replay, fidelity or one of "
                         f"{', '.join(P.LEARNED)}")
    if method in P.LEARNED and seeds == (None,):
        seeds = P.METHOD_SEEDS
    if method in ("fixed", "ceiling", "pixel-replay", "fidelity", "oracle"):
        seeds = (None,)
    # the replay and the gate add the rows they lack every time they run; the others skip a run whose record exists
    resumable = method in ("pixel-replay", "fidelity")
    if overwrite and resumable:
        record_path(task, method, None, runs).unlink(missing_ok=True)
    todo = [s for s in seeds if overwrite or resumable
            or not record_path(task, method, s, runs).is_file()]
    paths = [record_path(task, method, s, runs) for s in seeds]
    if not todo:
        return paths
    fixed = read_record(record_path(task, "fixed", None, runs))
    if method != "fixed" and fixed is None:
        raise ValueError(f"run --method fixed on {task.name} first: {method} starts from its best fixed member and "
                         "the task loss")
    kw = task_env_kwargs(task, cache_dir=cache_dir, data_dir=data_dir)
    for seed in todo:
        if method == "fixed":
            rec = run_fixed(task, kw, log)
        elif method == "ceiling":
            cem = {m: read_record(record_path(task, m, 0, runs)) for m in ("cem-static", "cem-schedule")}
            missing = [m for m, r in cem.items() if r is None]
            if missing:
                raise ValueError(f"the ceiling continues from seed 0 of {', '.join(missing)}: run those first")
            rec = run_ceiling(task, kw, fixed, cem, log)
        elif method == "oracle":
            rec = run_oracle(task, kw, fixed, log)
        elif method == "pixel-replay":
            rec = run_pixel_replay(task, kw, fixed, runs, log)
        elif method == "fidelity":
            rec = run_fidelity(task, kw, fixed, runs, log)
        elif method.startswith("cem-"):
            rec = run_cem(task, kw, fixed, method, int(seed), log)
        else:
            rec = run_sb3(task, kw, fixed, method, int(seed), model_dir or Path(cache_dir or ".") / "suite-agents",
                          log)
        write_record(record_path(task, method, seed, runs), rec)
    return paths
