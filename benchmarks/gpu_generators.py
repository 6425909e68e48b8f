"""The GPU path end to end: the ddpm and pretrained kinds fitted and sampled on ``--device``, and again on the CPU,
with the images per second of fitting and of sampling and their ratio to the CPU's in one table.

    python -m benchmarks.gpu_generators --device cuda:0 --pipeline /models/my-sd-pipeline   # your own pipeline
    python -m benchmarks.gpu_generators --device cuda:0 --tiny        # tiny random models: a smoke test of the path
    python -m benchmarks.gpu_generators --device cpu --tiny           # no GPU (what the tests run)

Each kind is built as the CLI builds it (``tailmix.pipeline.new_generator``: ``--preset`` tiny with ``--tiny``,
else small; ``--fit-steps`` optimisation steps, for the pretrained kind per class), on the embedded digits-LT
dataset unless ``--dataset`` says otherwise. Without ``--pipeline`` the pretrained kind uses a tiny random pipeline
(``generators.pretrained.write_tiny_pipeline``, Stable Diffusion layout) written to a temporary folder.

Fit images/s: images the optimiser saw (steps x batch) over the wall time of ``fit`` (loading the pipeline and
encoding the class images included). Sample images/s: ``--samples`` images of class 0 over the wall time of
``sample``, after an untimed warm-up call. CUDA is synchronised before each clock read. The CPU rows run with
``--threads`` torch threads; the ratio column is the device's images/s over the CPU's (1.0 on the CPU row).
"""
from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.lib import command, device_description, package_versions

KINDS = ("ddpm", "pretrained")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_generators", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="device to measure (auto: cuda:0 when there is one, else cpu)")
    p.add_argument("--tiny", action="store_true", help="tiny models and budgets (a smoke test of the path)")
    p.add_argument("--pipeline", default=None, help="a local diffusers pipeline folder for the pretrained kind "
                   "(default: a tiny random one)")
    p.add_argument("--dataset", default="digits", help="dataset (as the CLI's --dataset)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--fit-steps", type=int, default=None, help="optimisation steps (per class for pretrained; "
                   "default 4 with --tiny, else 50)")
    p.add_argument("--samples", type=int, default=None, help="images sampled (default 8 with --tiny, else 64)")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (as the CLI's --precision)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU baseline rows (no ratio then)")
    args = p.parse_args(argv)
    args.fit_steps = args.fit_steps or (4 if args.tiny else 50)
    args.samples = args.samples or (8 if args.tiny else 64)
    if args.fit_steps < 1 or args.samples < 1 or args.threads < 1:
        p.error("--fit-steps, --samples and --threads must be >= 1")
    return args


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_seen(gen, dataset) -> int:
    """Images the optimiser saw during ``fit`` (steps x batch, each batch capped by the images there were)."""
    if gen.kind == "pretrained":
        counts = dataset.train_counts
        return sum(len(h) * min(gen.batch_size, int(counts[c])) for c, h in gen.loss_history.items())
    return len(gen.loss_history) * min(gen.batch_size, len(dataset.train_labels))


def measure(kind: str, device, dataset, args, pipeline: str) -> dict:
    """Fit and sample one kind on ``device``: its row of the table."""
    import torch

    from tailmix.pipeline import Settings, new_generator

    cfg = Settings(dataset=args.dataset, generator=kind, preset="tiny" if args.tiny else "small",
                   generator_steps=args.fit_steps, pretrain_steps=0 if kind == "ddpm" else None, device=str(device),
                   precision=args.precision, pretrained=pipeline if kind == "pretrained" else None)
    gen = new_generator(cfg, dataset)
    _sync(device)
    t0 = time.perf_counter()
    gen.fit(dataset, generator=torch.Generator().manual_seed(0))
    _sync(device)
    fit_s = time.perf_counter() - t0
    gen.sample(0, 2, generator=torch.Generator().manual_seed(1))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    gen.sample(0, args.samples, generator=torch.Generator().manual_seed(2))
    _sync(device)
    sample_s = time.perf_counter() - t0
    return {"kind": kind, "device": str(device), "fit_images_per_s": _images_seen(gen, dataset) / fit_s,
            "sample_images_per_s": args.samples / sample_s, "fit_s": fit_s, "sample_s": sample_s}


def table(rows: list[dict]) -> str:
    """The markdown table: one row per kind and device, with the ratio to the same kind's CPU row."""
    cpu = {r["kind"]: r for r in rows if r["device"] == "cpu"}
    lines = ["| kind | device | fit img/s | sample img/s | fit vs CPU | sample vs CPU |", "|---|---|---|---|---|---|"]
    for r in rows:
        base = cpu.get(r["kind"])
        ratio = (lambda k: f"{r[k] / base[k]:.2f}x") if base else (lambda k: "n/a")
        lines.append(f"| {r['kind']} | {r['device']} | {r['fit_images_per_s']:.1f} | {r['sample_images_per_s']:.1f} "
                     f"| {ratio('fit_images_per_s')} | {ratio('sample_images_per_s')} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    """Measure every kind on the device, then on the CPU; print the table and return its rows."""
    args = parse_args(argv)
    import torch

    from tailmix.classifiers.device import select_device
    from tailmix.envs.datasets import load_dataset

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    dataset = load_dataset(args.dataset, root=args.data_root)
    print(f"command: {command('gpu_generators', argv)}")
    print(f"versions: {package_versions()}")
    print(f"device: {device_description(device)}")
    devices = [device] + ([] if args.no_cpu or device.type == "cpu" else [torch.device("cpu")])
    rows = []
    with tempfile.TemporaryDirectory(prefix="tailmix-gpu-bench-") as tmp:
        pipeline = args.pipeline
        if pipeline is None and "pretrained" in args.kinds:
            from tailmix.generators.pretrained import write_tiny_pipeline

            pipeline = str(write_tiny_pipeline(f"{tmp}/pipeline", "latent"))
        for dev in devices:
            for kind in args.kinds:
                rows.append(measure(kind, dev, dataset, args, pipeline))
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
