"""tailmix command line: fill a synthetic bank, train sampler policies, evaluate and benchmark them.

    python train_agents.py                 # the main job on the embedded digits-LT dataset (~10 min on 2 CPUs)
    python train_agents.py --quick         # a smoke version (~1 min)
    python train_agents.py generate --help
    python train_agents.py train --algo sac --timesteps 20000
    python train_agents.py evaluate --policy runs/<run>/model.zip
    python train_agents.py benchmark --learned runs/<run>/model.zip

Every command writes into a run folder (``--run-dir``, default ``runs/<command>-<time>``) that it refuses
to overwrite unless ``--overwrite`` (or ``--resume`` for ``train``) is given. Trained generators and banks
are cached under ``--cache-dir`` by a hash of their config and the dataset, and reused by later runs.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GENERATORS = ("ddpm", "lora", "sketch", "augment")
SOURCES = ("bank", "augment", "gaussian")


# -- configs: one dataclass per command; the attribute docstrings are the --help text ----------
@dataclass
class Common:
    dataset: str = "digits"
    """'digits' (embedded, no download), a MedMNIST flag looked up in --data-root, an .npz path, or an image folder."""
    data_root: str | None = None
    """Folder holding MedMNIST .npz files (default: $TAILMIX_DATA_DIR, then ~/.medmnist)."""
    run_dir: str | None = None
    """Output folder (default: runs/<command>-<time>)."""
    overwrite: bool = False
    """Replace an existing run folder."""
    seed: int = 0
    """Master seed (generators, bank, training)."""
    mode: str = "feature"
    """Env classifier mode: 'feature' (head on frozen encoder features) or 'pixel' (CNN on pixels)."""
    max_steps: int = 10
    """Env steps (classifier training rounds) per episode."""
    max_ratio: float = 8.0
    """Largest synthetic-to-real ratio an action can ask for."""
    reward: str = "accuracy"
    """Env reward: 'accuracy', 'delta' or 'final'."""
    loss: str = "ce"
    """Classifier training loss inside the env (ce, logit_adjustment, balanced_softmax, class_balanced)."""
    source: str = "bank"
    """Synthetic source: 'bank' (diffusion bank, filled on demand), 'augment' (classic), 'gaussian' (features)."""
    generator: str = "ddpm"
    """Generator of the bank: ddpm, lora (DDPM + per-class LoRA for tail classes), sketch, augment."""
    preset: str = "small"
    """DDPM size preset: tiny (tests), small (CPU default), base (GPU)."""
    generator_steps: int | None = None
    """DDPM training steps (default: the preset's)."""
    per_class: int = 128
    """Synthetic candidates kept per class in the bank."""
    filter: bool = True
    """Keep only samples a long-tail-calibrated reference classifier assigns to their class."""
    tau: float = 0.5
    """Filter confidence threshold."""
    device: str = "auto"
    """Generator device ('auto', 'cpu', 'cuda:0', ...). The env's classifier runs on the CPU."""
    cache_dir: str = ".tailmix_cache"
    """Cache of trained generators, banks and encoders (reused across runs)."""
    quick: bool = False
    """Tiny settings everywhere: a smoke test of the whole pipeline in about a minute."""


@dataclass
class GenerateConfig(Common):
    """Fill the synthetic bank (train the generator if needed) and print its quality report."""


@dataclass
class TrainConfig(Common):
    """Train an SB3 sampler policy on the env."""

    algo: str = "ppo"
    """SB3 algorithm: ppo, sac, a2c, td3."""
    wrapper: str = "shared"
    """'shared' (one policy for every class agent) or 'central' (one agent sets every ratio)."""
    timesteps: int = 20000
    """Total SB3 timesteps (with 'shared', each class agent's step counts)."""
    n_envs: int = 1
    """Env copies, each with its own seed."""
    checkpoint_every: int = 5000
    """Save a checkpoint every this many timesteps."""
    resume: bool = False
    """Continue from the latest checkpoint in --run-dir."""


@dataclass
class EvaluateConfig(Common):
    """Evaluate one policy (a saved SB3 model.zip or a baseline spec) on the test split over seeds."""

    policy: str = "none"
    """A saved model (path to model.zip; its algo and wrapper are read from run.json beside it) or a baseline: none, constant:R, fill, inverse, random."""
    seeds: int = 5
    """Number of evaluation seeds (episodes with a fresh classifier each)."""


@dataclass
class BenchmarkConfig(Common):
    """Every baseline plus learned policies, mean and std over seeds: CSV, markdown and PNG."""

    seeds: int = 5
    """Number of evaluation seeds."""
    learned: list[str] = field(default_factory=list)
    """Saved models (model.zip paths) to include."""
    baselines: list[str] = field(default_factory=lambda: ["none", "constant:0.5", "constant:1", "constant:2",
                                                          "fill", "inverse", "random"])
    """Baseline specs to include."""


@dataclass
class MainConfig(TrainConfig):
    """The main job: fill the bank, train a PPO sampler, benchmark it against every baseline."""

    seeds: int = 5
    """Number of benchmark seeds."""


COMMANDS = {"generate": GenerateConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
            "benchmark": BenchmarkConfig}


def _field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field) of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass))
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = str(b.value.value)
    return docs


def _add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{docs.get(f.name, '')} (default: {default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif str(f.type).startswith("list"):
            parser.add_argument(flag, nargs="*", default=default, help=help_)
        else:
            typ = {"int": int, "float": float, "int | None": int, "str | None": str}.get(str(f.type), str)
            parser.add_argument(flag, type=typ, default=default, help=help_)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train_agents", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_arguments(parser, MainConfig)
    sub = parser.add_subparsers(dest="command")
    for name, cls in COMMANDS.items():
        p = sub.add_parser(name, help=cls.__doc__, description=cls.__doc__)
        _add_arguments(p, cls)
    return parser


def parse_args(argv=None):
    ns = build_parser().parse_args(argv)
    command = ns.command or "main"
    cls = COMMANDS.get(command, MainConfig)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
    return command, cls(**values)


# -- shared steps -----------------------------------------------------------------------------
def _quick(cfg) -> None:
    """Shrink every budget (``--quick``) in place."""
    cfg.preset = "tiny"
    cfg.generator_steps = cfg.generator_steps or 30
    cfg.per_class = min(cfg.per_class, 24)
    cfg.max_steps = min(cfg.max_steps, 4)
    if hasattr(cfg, "timesteps"):
        cfg.timesteps = min(cfg.timesteps, 256)
        cfg.checkpoint_every = min(cfg.checkpoint_every, 128)
    if hasattr(cfg, "seeds"):
        cfg.seeds = min(cfg.seeds, 2)


def prepare_run_dir(cfg, command: str, *, allow_existing: bool = False) -> Path:
    """The run folder: created fresh; an existing one is refused unless --overwrite (or resume)."""
    path = Path(cfg.run_dir or f"runs/{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.exists() and any(path.iterdir()):
        if cfg.overwrite:
            shutil.rmtree(path)
        elif not allow_existing:
            raise SystemExit(f"error: run folder {path} exists; pass --overwrite to replace it"
                             + (" or --resume to continue it" if command in ("train", "main") else "")
                             + ", or choose another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "run.json", {"command": command, "config": dataclasses.asdict(cfg),
                                    "argv": sys.argv[1:], "versions": _versions()})
    return path


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "diffusers", "peft", "gymnasium", "pettingzoo", "stable-baselines3", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def load_data(cfg):
    from envs.datasets import load_dataset

    try:
        return load_dataset(cfg.dataset, root=cfg.data_root)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def _generator_for(cfg, dataset):
    from classifiers.device import select_device

    device = select_device(cfg.device)
    if cfg.generator not in GENERATORS:
        raise SystemExit(f"error: unknown --generator {cfg.generator!r}; choose one of {GENERATORS}")
    if cfg.generator == "augment":
        from generators.augment import AugmentationGenerator

        return AugmentationGenerator()
    kw = dict(preset=cfg.preset, device=device)
    if cfg.generator_steps:
        kw["train_steps"] = cfg.generator_steps
    if cfg.generator == "sketch":
        from generators.sketch import SketchConditionedDDPM

        return SketchConditionedDDPM(dataset.image_shape, dataset.num_classes, **kw)
    from generators.ddpm import ClassConditionalDDPM

    base = ClassConditionalDDPM(dataset.image_shape, dataset.num_classes, **kw)
    if cfg.generator == "lora":
        from generators.lora import LoRAClassAdapters

        return LoRAClassAdapters(base)
    return base


def fitted_generator(cfg, dataset, *, progress: bool = True):
    """Train the configured generator, or load it from the cache when this exact one was trained before."""
    import torch

    from generators.base import load_generator

    gen = _generator_for(cfg, dataset)
    key = _cache_key(dataset.fingerprint(), gen.config(), cfg.seed)
    path = Path(cfg.cache_dir) / "generators" / f"{cfg.generator}-{key}"
    if (path / "config.json").exists():
        try:
            return load_generator(path, device=gen.device)
        except Exception as err:  # a broken cache entry is retrained, never trusted
            print(f"cached generator at {path} is unreadable ({err}); retraining")
            shutil.rmtree(path, ignore_errors=True)
    gen.fit(dataset, generator=torch.Generator().manual_seed(cfg.seed), progress=progress)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    gen.save(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return gen


class phase:
    """Prints how long a phase of a command took (users of a 10-minute job want to know where it goes)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self):
        self.t0 = time.time()
        print(f"[{self.name}] ...", flush=True)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            print(f"[{self.name}] done in {time.time() - self.t0:.1f} s", flush=True)


def _cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def reference_filter(cfg, dataset):
    """The long-tail-calibrated reference filter (trained once per dataset, tau and seed, then cached)."""
    import torch

    from generators.filter import ClassifierFilter

    augment = min(dataset.image_shape[:2]) >= 16  # random shifts of 8x8 digits destroy them
    path = Path(cfg.cache_dir) / "filters" / _cache_key(dataset.fingerprint(), cfg.tau, cfg.seed, augment)
    if path.exists():
        try:
            return ClassifierFilter.load(path)
        except (ValueError, OSError) as err:
            print(f"cached filter at {path} is unreadable ({err}); retraining")
            shutil.rmtree(path, ignore_errors=True)
    flt = ClassifierFilter.train_reference(dataset, tau=cfg.tau, augment=augment,
                                           generator=torch.Generator().manual_seed(cfg.seed))
    flt.save(path)
    return flt


def ensure_bank(cfg, dataset, *, progress: bool = True):
    """The synthetic bank for this dataset and generator config (filled on demand, cached, resumable)."""
    from generators.pool import GeneratorPool

    with phase(f"generator {cfg.generator} ({cfg.preset})"):
        gen = fitted_generator(cfg, dataset, progress=progress)
    flt = None
    if cfg.filter:
        with phase("reference filter"):
            flt = reference_filter(cfg, dataset)
    with phase("synthetic bank"):
        pool = GeneratorPool({cfg.generator: gen}, devices=cfg.device)
        bank = pool.fill_bank(dataset, Path(cfg.cache_dir) / "banks", per_class=cfg.per_class, filter=flt,
                              seed=cfg.seed, progress=progress)
    counts = bank.counts()
    if (counts == 0).any():
        empty = [dataset.class_names[c] for c in range(dataset.num_classes) if counts[c] == 0]
        print(f"warning: the filter kept no sample of class(es) {empty}; their ratios will be served nothing "
              "(lower --tau or train the generator longer)")
    return bank


def env_kwargs(cfg, dataset, *, progress: bool = True) -> dict:
    """Keyword arguments of the env for this config (the bank is filled first when the source needs it)."""
    if cfg.source not in SOURCES:
        raise SystemExit(f"error: unknown --source {cfg.source!r}; choose one of {SOURCES}")
    source = None
    if cfg.source == "bank":
        from envs.sources import BankSource

        source = BankSource(ensure_bank(cfg, dataset, progress=progress))
    elif cfg.source == "gaussian":
        source = "gaussian"
    kw = dict(dataset=dataset, source=source, mode=cfg.mode, max_steps=cfg.max_steps, max_ratio=cfg.max_ratio,
              reward=cfg.reward, loss=cfg.loss, cache_dir=str(Path(cfg.cache_dir) / "encoders"),
              source_seed=cfg.seed, empty_pool="zero")
    if cfg.quick:
        kw.update(encoder_epochs=5, encoder_folds=3)
    return kw


# -- commands ---------------------------------------------------------------------------------
def cmd_generate(cfg: GenerateConfig) -> Path:
    from generators.quality import format_quality_report, quality_report, save_sample_grid

    run = prepare_run_dir(cfg, "generate")
    dataset = load_data(cfg)
    bank = ensure_bank(cfg, dataset)
    report = quality_report(bank, dataset)
    text = format_quality_report(report, dataset.class_names)
    print(text)
    (run / "quality.txt").write_text(text)
    _write_json(run / "quality.json", report)
    save_sample_grid(bank, run / "samples.png", class_names=dataset.class_names)
    _write_json(run / "bank.json", {"path": str(bank.path) if hasattr(bank, "path") else None})
    return run


def _train(cfg: TrainConfig, run: Path, dataset):
    from agents.sb3 import ALGORITHMS

    if cfg.algo not in ALGORITHMS:
        raise SystemExit(f"error: unknown --algo {cfg.algo!r}; choose one of {ALGORITHMS}")
    kw = env_kwargs(cfg, dataset)
    with phase(f"train {cfg.algo}"):
        return _train_model(cfg, run, kw), kw


def _train_model(cfg, run, kw):
    from agents.sb3 import train

    print(f"training {cfg.algo} ({cfg.wrapper}) for {cfg.timesteps} timesteps; TensorBoard: tensorboard --logdir {run}")
    return train(cfg.algo, kw, wrapper=cfg.wrapper, n_envs=cfg.n_envs, total_timesteps=cfg.timesteps,
                 seed=cfg.seed, log_dir=str(run), checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                 progress_bar=True)


def cmd_train(cfg: TrainConfig) -> Path:
    if cfg.resume and not (cfg.run_dir and Path(cfg.run_dir).exists()):
        raise SystemExit("error: --resume needs --run-dir pointing to an existing run folder")
    run = prepare_run_dir(cfg, "train", allow_existing=cfg.resume)
    _train(cfg, run, load_data(cfg))
    print(f"model: {run / 'model.zip'}")
    return run


def load_policy(spec: str, *, wrapper: str | None = None):
    """A baseline spec, or a saved SB3 model (its algo and wrapper read from run.json beside it)."""
    from agents.baselines import SB3Policy, make_baseline

    path = Path(spec)
    if spec.endswith(".zip") or path.exists():
        if not path.exists():
            raise SystemExit(f"error: no saved model at {path}; train one with `train_agents.py train`")
        meta = json.loads((path.parent / "run.json").read_text()) if (path.parent / "run.json").exists() else {}
        conf = meta.get("config", {})
        algo = conf.get("algo", "ppo")
        from agents.sb3 import load_model

        model = load_model(algo, path)
        return SB3Policy(model, wrapper=wrapper or conf.get("wrapper", "shared"))
    try:
        return make_baseline(spec)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def cmd_evaluate(cfg: EvaluateConfig) -> Path:
    from agents.evaluate import benchmark

    policy = load_policy(cfg.policy)
    run = prepare_run_dir(cfg, "evaluate")
    dataset = load_data(cfg)
    rows = benchmark({cfg.policy: policy}, env_kwargs(cfg, dataset), seeds=list(range(cfg.seeds)), out_dir=run)
    print((run / "results.md").read_text())
    return run if rows is not None else run


def cmd_benchmark(cfg: BenchmarkConfig, extra: dict | None = None, run: Path | None = None,
                  kw: dict | None = None) -> Path:
    from agents.evaluate import benchmark

    policies = {spec: load_policy(spec) for spec in cfg.baselines}
    for spec in cfg.learned:
        policies[f"learned:{Path(spec).parent.name}"] = load_policy(spec)
    policies.update(extra or {})
    run = run or prepare_run_dir(cfg, "benchmark")
    kw = kw or env_kwargs(cfg, load_data(cfg))
    with phase(f"benchmark: {len(policies)} policies x {cfg.seeds} seeds on the test split"):
        benchmark(policies, kw, seeds=list(range(cfg.seeds)), out_dir=run)
    print((run / "results.md").read_text())
    return run


def cmd_main(cfg: MainConfig) -> Path:
    """Bank -> PPO sampler -> benchmark against every baseline, all in one run folder."""
    from agents.baselines import SB3Policy

    run = prepare_run_dir(cfg, "main", allow_existing=cfg.resume)
    dataset = load_data(cfg)
    print(f"dataset: {dataset!r}")
    model, kw = _train(cfg, run, dataset)
    bench = BenchmarkConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(BenchmarkConfig)
                               if hasattr(cfg, f.name)})
    cmd_benchmark(bench, extra={f"{cfg.algo}-{cfg.wrapper}": SB3Policy(model, wrapper=cfg.wrapper)}, run=run, kw=kw)
    return run


def main(argv=None) -> Path:
    command, cfg = parse_args(argv)
    if cfg.quick:
        _quick(cfg)
    t0 = time.time()
    run = {"main": cmd_main, "generate": cmd_generate, "train": cmd_train, "evaluate": cmd_evaluate,
           "benchmark": cmd_benchmark}[command](cfg)
    print(f"done in {time.time() - t0:.0f} s; outputs in {run}")
    return run


def cli() -> None:
    """Console entry point."""
    main()


if __name__ == "__main__":
    main()
