"""Batched pixel mode: per-copy step time of K CNNs trained in one grouped call, against today's single pixel env.

    python -m benchmarks.pixel_batched                     # digits-LT (+ RetinaMNIST when TAILMIX_DATA_DIR is set)
    python -m benchmarks.pixel_batched --ks 1 2 4 8 --rounds 3 --steps 3

Everything is measured in this one run on the same data (the real train images as the synthetic pool, every class
at ratio 1, as ``env_speed.py``), one torch thread:

- ``single``: one ``SyntheticRatioEnv`` (PettingZoo parallel API) in pixel mode: today's ``PixelEngine``.
- ``batched K``: a ``SyntheticRatioVectorEnv(K, mode="pixel")``, whose ``BatchedPixelEngine`` trains the K copies'
  CNNs as one grouped network (``classifiers.batched_cnn``); ``K = 1`` runs that engine with one copy. The time
  of one vector step divided by ``K`` is the per-copy step time.

The machine may be shared, so the configurations run interleaved, round after round (single, K = 1, 2, ...; then
again), and each cell is the median over rounds of the seconds per step; CPU seconds of this process are given
beside the wall clock (with one thread, the CPU time is what a step costs on a core of its own).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


ENV_KW = dict(mode="pixel", max_steps=100_000, max_ratio=2.0)
ACTION = 0.0  # ratio 1 for every class


def _dataset(name: str):
    from tailmix.envs.datasets import load_digits_lt, load_medmnist

    if name == "digits-lt":
        return load_digits_lt()
    return load_medmnist(Path(os.environ["TAILMIX_DATA_DIR"]) / f"{name}.npz")


def _source(ds):
    from tailmix.envs.sources import ArraySource

    return ArraySource({c: ds.train_images[ds.train_labels == c] for c in range(ds.num_classes)}, ds.num_classes)


def _single(ds, src, device: str):
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    env = SyntheticRatioEnv(dataset=ds, source=src, device=device, **ENV_KW)
    env.reset(seed=0)
    act = {a: np.array([ACTION], np.float32) for a in env.possible_agents}
    return lambda: env.step(act)


def _batched(ds, src, k: int, device: str):
    from tailmix.envs.pixel_batched import BatchedPixelEngine
    from tailmix.envs.vector import SyntheticRatioVectorEnv

    venv = SyntheticRatioVectorEnv(k, dataset=ds, source=src, device=device, **ENV_KW)
    if k == 1:  # one copy builds the single PixelEngine; time the batched engine with one copy instead
        old = venv.core.engine
        venv.core.engine = BatchedPixelEngine(ds, old.pools, num_copies=1, epochs=old.epochs,
                                              batch_size=old.batch_size, lr=old.lr, device=old.device,
                                              max_steps=ENV_KW["max_steps"])
    venv.reset(seed=list(range(k)))
    acts = np.full((k, ds.num_classes), ACTION, np.float32)
    return lambda: venv.step(acts)


def _time(fn, steps: int, sync) -> tuple[float, float]:
    sync()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    sync()  # a step ends with predictions copied to the host; the sync only guards against queued work
    return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def measure(name: str, ks: list[int], rounds: int, steps: int, device: str = "cpu") -> list[dict]:
    """Median seconds per step of every configuration, run interleaved for ``rounds`` rounds."""
    import torch

    ds = _dataset(name)
    src = _source(ds)
    from tailmix.classifiers.device import select_device

    dev = select_device(device)  # "auto" and a missing GPU resolved (or refused) here
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    configs = {"single": (1, _single(ds, src, str(dev)))}
    for k in ks:
        configs[f"batched {k}"] = (k, _batched(ds, src, k, str(dev)))
    for _, fn in configs.values():
        fn()  # warm-up step
    times: dict[str, list[tuple[float, float]]] = {key: [] for key in configs}
    for r in range(rounds):
        for key, (_, fn) in configs.items():
            times[key].append(_time(fn, steps, sync))
        print(f"  {name}: round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    rows = []
    for key, (k, _) in configs.items():
        wall, cpu = np.median(np.array(times[key]), axis=0)
        rows.append(dict(dataset=name, config=key, k=k, wall_step=float(wall), cpu_step=float(cpu),
                         wall_copy=float(wall) / k, cpu_copy=float(cpu) / k, images=len(ds.train_labels),
                         shape=ds.image_shape))
    base = rows[0]
    for row in rows:
        row["ratio_wall"] = row["wall_copy"] / base["wall_copy"]
        row["ratio_cpu"] = row["cpu_copy"] / base["cpu_copy"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| dataset | configuration | K | s per step (wall / CPU) | s per copy-step (wall / CPU) "
             "| per copy / single (wall / CPU) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} ({r['images']} train, {'x'.join(map(str, r['shape']))}) | {r['config']} | "
                     f"{r['k']} | {r['wall_step']:.3f} / {r['cpu_step']:.3f} | {r['wall_copy']:.3f} / "
                     f"{r['cpu_copy']:.3f} | {r['ratio_wall']:.2f} / {r['ratio_cpu']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=None,
                        help="digits-lt and, with TAILMIX_DATA_DIR set, retinamnist (default)")
    parser.add_argument("--ks", nargs="*", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="env steps per configuration and round")
    parser.add_argument("--device", default="cpu", help="torch device of every env (cpu, cuda, cuda:1, auto)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or not args.ks or min(args.ks) < 1:
        raise SystemExit("--rounds, --steps and every --ks value must be >= 1")
    import torch

    torch.set_num_threads(1)
    names = args.datasets
    if names is None:
        names = ["digits-lt"] + (["retinamnist"] if os.environ.get("TAILMIX_DATA_DIR") else [])
    rows = []
    for name in names:
        rows += measure(name, args.ks, args.rounds, args.steps, args.device)
    print(f"\nPixel-mode step time, single env vs K copies batched (median of {args.rounds} interleaved rounds of "
          f"{args.steps} steps; torch {torch.__version__}, 1 thread, device {args.device})\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
