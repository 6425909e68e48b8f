"""Env steps per second: one env, K sequential envs, and the batched env, against a bare-training floor.

    python -m benchmarks.env_speed                      # digits-LT (+ RetinaMNIST when TAILMIX_DATA_DIR is set)
    python -m benchmarks.env_speed --ks 1 4 16 64 --pixel-steps 5

Everything is measured in this one run, so the ratios compare like with like:

- ``floor``: the bare cost of the training a feature step must do: ``epochs_per_step`` full-batch epochs of
  a plain ``nn.Linear`` + ``torch.optim.Adam`` (autograd) on tensors of the step's size, nothing else.
- ``single``: one ``SyntheticRatioEnv`` (sampling the mix, training, val metrics, observations, infos).
- ``sequential K``: K such envs stepped one after the other; ``batched K``: ``SyntheticRatioVectorEnv(K)``.
- pixel mode: one env (a CNN epoch of n_real mix samples per step); batching does not apply.
- ``v1, G = 3``: one ``tailmix/SyntheticRatio-v1`` env (``draw="unique"``, ``pool_obs=True``) over three
  sources (three pools of the real train images), each at ratio 1/3, so the mix is as large as the v0 row's;
  and the same with ``val_folds=5`` (the cross-validated reward: train + val pooled, each episode on 4 folds).

Peak memory is the process's max resident set size after each configuration, run in a fresh subprocess.
Torch runs on one thread (as the env pins it) so numbers repeat; ``--batched-threads 1 2`` also times the
batched env on two threads. Rates are given by the wall clock and per CPU second of the process: on a
shared machine the second is what a step costs on a core of its own.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np


def _dataset(name: str):
    from tailmix.envs.datasets import load_digits_lt, load_medmnist

    if name == "digits-lt":
        return load_digits_lt()
    return load_medmnist(Path(os.environ["TAILMIX_DATA_DIR"]) / f"{name}.npz")


def _source(ds, name=None):
    """Real train images as the synthetic pool: the speed of a step does not depend on where pixels came from."""
    from tailmix.envs.sources import ArraySource

    return ArraySource({c: ds.train_images[ds.train_labels == c] for c in range(ds.num_classes)}, ds.num_classes,
                       name=name)


ENV_KW = dict(encoder="crossfit", encoder_epochs=10, max_steps=10_000, max_ratio=2.0)
ACTION = 0.0  # ratio 1: every class doubles, a mid-sized mix


def _time(fn, steps: int) -> tuple[float, float]:
    """Seconds per call of ``fn``: wall clock and this process's CPU time.

    On a shared machine the wall clock also counts time spent waiting for a core; the CPU time is what the
    step costs on a core of its own (torch runs on one thread here, so the two agree on an idle machine).
    """
    fn()  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def _floor(n_rows: int, dim: int, c: int, epochs: int, steps: int) -> float:
    import torch

    x = torch.randn(n_rows, dim)
    y = torch.randint(0, c, (n_rows,))
    head = torch.nn.Linear(dim, c)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)

    def step():
        for _ in range(epochs):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(head(x), y).backward()
            opt.step()

    return _time(step, steps)


def _run(job: dict, out: mp.Queue) -> None:
    import torch

    torch.set_num_threads(job.get("threads", 1))
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
    from tailmix.envs.vector import SyntheticRatioVectorEnv

    ds = _dataset(job["dataset"])
    src = _source(ds)
    steps = job["steps"]
    res = dict(job)
    if job["kind"] == "pixel":
        env = SyntheticRatioEnv(dataset=ds, source=src, mode="pixel", **ENV_KW)
        env.reset(seed=0)
        act = {a: np.array([ACTION], np.float32) for a in env.possible_agents}
        res["sec_per_step"], res["cpu_per_step"] = _time(lambda: env.step(act), steps)
    elif job["kind"] == "single_and_floor":
        env = SyntheticRatioEnv(dataset=ds, source=src, **ENV_KW)
        env.reset(seed=0)
        act = {a: np.array([ACTION], np.float32) for a in env.possible_agents}
        res["sec_per_step"], res["cpu_per_step"] = _time(lambda: env.step(act), steps)
        eng = env.core.engine
        n_rows = int(len(eng.real_idx) * (1 + env.action_to_ratio(ACTION)))
        res["rows"], res["dim"] = n_rows, int(eng.table.shape[1])
        res["floor_sec"], res["floor_cpu"] = _floor(n_rows, res["dim"], ds.num_classes, env.config.epochs, steps)
    elif job["kind"] == "v1_sources":
        from tailmix.envs.synthetic_ratio import parallel_env_v1

        g = job["g"]
        env = parallel_env_v1(dataset=ds, sources=[_source(ds, f"pool{i}") for i in range(g)],
                              val_folds=job.get("val_folds", 1), **ENV_KW)
        env.reset(seed=0)
        per = env.ratio_to_action(env.action_to_ratio(ACTION) / g)  # the same total ratio as the v0 row
        act = {a: np.full(g, per, np.float32) for a in env.possible_agents}
        res["sec_per_step"], res["cpu_per_step"] = _time(lambda: env.step(act), steps)
    elif job["kind"] == "sequential":
        envs = [SyntheticRatioEnv(dataset=ds, source=src, **ENV_KW) for _ in range(job["k"])]
        for i, e in enumerate(envs):
            e.reset(seed=i)
        act = {a: np.array([ACTION], np.float32) for a in envs[0].possible_agents}
        res["sec_per_step"], res["cpu_per_step"] = _time(lambda: [e.step(act) for e in envs], steps)
    else:
        venv = SyntheticRatioVectorEnv(job["k"], dataset=ds, source=src, num_threads=job.get("threads", 1), **ENV_KW)
        venv.reset(seed=0)
        acts = np.full((job["k"], ds.num_classes), ACTION, np.float32)
        res["sec_per_step"], res["cpu_per_step"] = _time(lambda: venv.step(acts), steps)
    k = job.get("k", 1)
    res["env_steps_per_s"] = k / res["sec_per_step"]
    res["env_steps_per_cpu_s"] = k / res["cpu_per_step"] if res["cpu_per_step"] > 0 else float("nan")
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(res)


def run_job(job: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run, args=(job, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", type=int, nargs="*", default=[1, 4, 16, 64])
    parser.add_argument("--steps", type=int, default=200, help="timed feature steps per configuration")
    parser.add_argument("--pixel-steps", type=int, default=5)
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--batched-threads", type=int, nargs="*", default=[1],
                        help="torch threads of the batched env (the sequential envs always use 1)")
    args = parser.parse_args(argv)
    datasets = args.datasets or (["digits-lt"] + (["retinamnist"] if os.environ.get("TAILMIX_DATA_DIR") else []))
    rows = []
    for name in datasets:
        base = run_job({"dataset": name, "kind": "single_and_floor", "steps": args.steps})
        rows.append(base)
        print(f"\n## {name}: {base['rows']} rows x {base['dim']} features per step, peak RSS {base['peak_rss_mb']:.0f} MB")
        print(f"One env: {base['env_steps_per_s']:.0f} steps/s by the wall clock, {base['env_steps_per_cpu_s']:.0f} "
              f"per CPU second; floor {base['floor_sec'] * 1e3:.3f} ms wall / {base['floor_cpu'] * 1e3:.3f} ms CPU; "
              f"step/floor = {base['sec_per_step'] / base['floor_sec']:.2f} wall, "
              f"{base['cpu_per_step'] / base['floor_cpu']:.2f} CPU\n")
        v1 = run_job({"dataset": name, "kind": "v1_sources", "g": 3, "steps": args.steps})
        v1f = run_job({"dataset": name, "kind": "v1_sources", "g": 3, "val_folds": 5, "steps": args.steps})
        rows += [v1, v1f]
        print("| env | sources G | draw | val_folds | steps/s (wall / CPU) | peak RSS MB |\n|---|---|---|---|---|---|")
        print(f"| v0 | 1 | replace | 1 | {base['env_steps_per_s']:.0f} / {base['env_steps_per_cpu_s']:.0f} | "
              f"{base['peak_rss_mb']:.0f} |")
        for row, k in ((v1, 1), (v1f, 5)):
            print(f"| v1 | 3 | unique | {k} | {row['env_steps_per_s']:.0f} / {row['env_steps_per_cpu_s']:.0f} | "
                  f"{row['peak_rss_mb']:.0f} |")
        print()
        print("| mode | K | threads (batched) | sequential steps/s (wall / CPU) | batched steps/s (wall / CPU) | "
              "batched / sequential (wall / CPU) | peak RSS MB (seq / batched) |")
        print("|---|---|---|---|---|---|---|")
        for k in args.ks:
            steps = max(5, args.steps // k)
            seq = run_job({"dataset": name, "kind": "sequential", "k": k, "steps": steps})
            rows.append(seq)
            for threads in args.batched_threads:
                bat = run_job({"dataset": name, "kind": "batched", "k": k, "steps": steps, "threads": threads})
                rows.append(bat)
                print(f"| feature | {k} | {threads} | {seq['env_steps_per_s']:.0f} / {seq['env_steps_per_cpu_s']:.0f} | "
                      f"{bat['env_steps_per_s']:.0f} / {bat['env_steps_per_cpu_s']:.0f} | "
                      f"{bat['env_steps_per_s'] / seq['env_steps_per_s']:.1f}x / "
                      f"{bat['env_steps_per_cpu_s'] / seq['env_steps_per_cpu_s']:.1f}x | "
                      f"{seq['peak_rss_mb']:.0f} / {bat['peak_rss_mb']:.0f} |")
        pix = run_job({"dataset": name, "kind": "pixel", "steps": args.pixel_steps})
        rows.append(pix)
        print(f"| pixel | 1 | n/a | {pix['env_steps_per_s']:.2f} / {pix['env_steps_per_cpu_s']:.2f} | n/a | n/a | "
              f"{pix['peak_rss_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
