"""The commands' settings: one dataclass per command (the attribute docstrings are the CLI's ``--help`` text),
checked before any work (:func:`check_config`), filled from an earlier run (:func:`resolve_config`) and shrunk by
``--quick`` (:func:`_quick`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tailmix.budget import DEFAULT_MINUTES as DEFAULT_BUDGET_MINUTES
from tailmix.pipeline import SOURCES, Settings
from tailmix.policies import _model_path, _split_algo
from tailmix.runs import QUICK_SETTINGS, _stored_config


#: Settings that shape the env (and the bank behind it). A saved model is evaluated with the values it was trained
#: with unless flags override them; a resumed run may not change them.
ENV_FIELDS = ("dataset", "mode", "max_steps", "max_ratio", "reward", "loss", "source", "generator", "preset",
              "generator_steps", "per_class", "filter", "filter_epochs", "tau", "seed", "quick", "image_size", "channels",
              "guidance_scale", "unlabeled", "draw", "val_folds", "lr_schedule", "pretrain_steps", "filter_tries",
              "encoder_epochs", "pretrained", "precision")
#: Where things live: inherited like ENV_FIELDS, but may change (a moved data or cache folder).
PLACE_FIELDS = ("data_root", "cache_dir", "device", "devices")
#: What a resumed training run may not change besides ENV_FIELDS (the checkpoint was made with them).
MODEL_FIELDS = ("algo", "wrapper", "n_envs", "methods")


def _baseline_specs() -> tuple[str, ...]:
    from tailmix.agents.baselines import baseline_specs

    return baseline_specs()


# -- configs: one dataclass per command; the attribute docstrings are the --help text ----------
@dataclass
class Common(Settings):
    """Settings every command shares: the pipeline's (``tailmix.pipeline.Settings``) and the run folder's."""

    run_dir: str | None = None
    """Output folder (default: runs/<command>-<time>)."""
    overwrite: bool = False
    """Replace an existing run folder (only one tailmix made: its .tailmix_run marker matches its run.json). Only
    the files tailmix wrote are replaced, once the new run has a result; your own files in the folder stay."""
    threads: int = 1
    """Torch CPU threads for generator, filter and agent training (the env pins its own). Results depend on it;
    more than 1 only pays on idle machines with spare cores (2 threads on a busy 2-core box ran 10-60x slower)."""


@dataclass
class GenerateConfig(Common):
    """Fill the synthetic bank (train the generator if needed) and print its quality report."""


@dataclass
class TrainConfig(Common):
    """Train a sampler policy on the env with an RL library (--backend: Stable-Baselines3 by default)."""

    algo: str = "ppo"
    """SB3 algorithm: ppo, sac, a2c, td3 (another --backend may take others; rllib: ppo)."""
    wrapper: str = "shared"
    """'shared' (one policy for every class agent) or 'central' (one agent sets every ratio)."""
    timesteps: int = 20000
    """Total SB3 timesteps (with 'shared', each class agent's step counts)."""
    n_envs: int = 1
    """Env copies, each with its own seed."""
    checkpoint_every: int = 5000
    """Save a checkpoint every this many timesteps."""
    resume: bool = False
    """Continue from the latest checkpoint in --run-dir (its settings are read from the run.json there)."""
    backend: str = "sb3"
    """The RL library that trains the policy (a registered backend, tailmix.agents.backends)."""
    env_runners: int = 2
    """--backend rllib: Ray actors stepping env copies, one CPU each."""


@dataclass
class EvaluateConfig(Common):
    """Evaluate one policy (a saved SB3 model.zip or a baseline spec) on the test split over seeds."""

    policy: str = "none"
    """A saved model (path to model.zip; its algo and wrapper are read from agent.json beside it, or give
    ALGO:path) or a baseline spec."""
    seeds: int = 5
    """Number of evaluation seeds (episodes with a fresh classifier each)."""


@dataclass
class BenchmarkConfig(Common):
    """Every baseline plus learned policies, mean and std over seeds: CSV, markdown and PNG."""

    seeds: int = 5
    """Number of evaluation seeds."""
    learned: list[str] = field(default_factory=list)
    """Saved models (model.zip paths) to include."""
    baselines: list[str] = field(default_factory=lambda: list(_baseline_specs()))
    """Baseline specs to include (default: every registered baseline's, agents.baselines.baseline_specs)."""


@dataclass
class MainConfig(TrainConfig):
    """The main job: fill a bank per generator kind, pick the loss and the fixed policy on the reward, train the
    learned samplers (CEM schedule, PPO central, PPO shared), score every policy on test, and say which to use."""

    generator: str = "ddpm augment"
    """Generators of the banks, one env source each (the pool as the action): ddpm, lora, sketch, augment."""
    draw: str = "unique"
    """How an env step draws from a pool: 'unique' (never one image twice in a step) or 'replace' (env v0)."""
    val_folds: int = 0
    """Env reward split: 0 (decided from the data: 5 folds of train + val pooled when the val split follows the
    train class distribution, else the fixed val split), 1 (the fixed val split) or k >= 2 folds."""
    loss: str = "auto"
    """Classifier loss inside the env: 'auto' (the best of ce and the long-tail losses on the reward with no
    synthetic data) or one of them (ce, logit_adjustment, balanced_softmax, class_balanced)."""
    methods: list[str] = field(default_factory=lambda: ["cem-schedule", "ppo-central", "ppo-shared"])
    """Learned samplers: cem-schedule, cem-static and SB3 <algo>-<wrapper> (ppo-central, ppo-shared, sac-central,
    ...). Given --algo or --wrapper without this, only that one is trained."""
    seeds: int = 5
    """Number of benchmark seeds."""
    budget_minutes: float | str | None = DEFAULT_BUDGET_MINUTES
    """Minutes the main job may take on this machine: before the generator trains, a few steps of each phase are
    measured and generator steps, bank size, encoder epochs and agent timesteps are shrunk (never grown past their
    defaults) to fit; sizes given as flags are kept. 0 or none: no budget (the default sizes)."""


# -- checking a config before anything is written -----------------------------------------------
#: Seeds must stay below this: numpy seeds its global generator with 32-bit values, and SB3 seeds env copies with
#: ``seed + index``.
MAX_SEED = 2**31
#: Largest ``--guidance-scale``: classifier guidance helps at about 0.01 to 10 (docs/results/guidance.md); on the
#: tiny DDPM, half the pixels of a sample are 0 or 255 at 100 (against 20% unguided), all of them at 1e4.
MAX_GUIDANCE_SCALE = 100.0

def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _choice(cfg, name: str, choices) -> None:
    value = getattr(cfg, name)
    _require(value in choices, f"unknown --{name.replace('_', '-')} {value!r}; choose one of {', '.join(choices)}")


def check_config(cfg) -> None:
    """Raise ``ValueError`` (saying how to fix it) for any bad setting, before a run folder or cache is touched."""
    from tailmix.generators.base import generator_class, kinds_with

    kinds = cfg.generator_kinds
    _require(bool(kinds), "--generator needs at least one kind, e.g. --generator ddpm augment")
    bank_kinds = kinds_with(space="images")  # the registered kinds whose samples are images can fill a bank
    for kind in kinds:
        _require(kind in bank_kinds, f"unknown --generator {kind!r}; choose one or several of {', '.join(bank_kinds)}")
    classes = [generator_class(kind) for kind in kinds]
    _require(len(set(kinds)) == len(kinds), f"--generator lists a kind twice ({cfg.generator}); give each once")
    _require(len(kinds) == 1 or cfg.source == "bank", f"several generators ({cfg.generator}) fill one bank each: "
             "they need --source bank")
    _choice(cfg, "source", SOURCES)
    from tailmix.envs.config import DRAWS, LR_SCHEDULES, MODES, REWARDS

    _choice(cfg, "mode", MODES)
    _choice(cfg, "reward", REWARDS)
    _choice(cfg, "draw", DRAWS)
    _choice(cfg, "lr_schedule", LR_SCHEDULES)
    for name in ("max_steps", "per_class", "filter_epochs", "timesteps", "n_envs", "checkpoint_every", "seeds",
                 "threads", "val_folds"):
        value = getattr(cfg, name, 1)
        if name == "val_folds" and value == 0 and isinstance(cfg, MainConfig):
            continue  # the main job decides it from the data
        _require(isinstance(value, int) and value >= 1, f"--{name.replace('_', '-')} must be >= 1; got {value}")
    _require(cfg.generator_steps is None or cfg.generator_steps >= 1,
             f"--generator-steps must be >= 1; got {cfg.generator_steps}")
    check_budget_fields(cfg)
    _require(0 <= cfg.seed < MAX_SEED, f"--seed must lie in 0..{MAX_SEED - 1} (seeds derived from it, seed + env "
             f"index, must stay in numpy's 32-bit range); got {cfg.seed}")
    _require(math.isfinite(cfg.guidance_scale) and 0 <= cfg.guidance_scale <= MAX_GUIDANCE_SCALE,
             f"--guidance-scale must be a number in [0, {MAX_GUIDANCE_SCALE:g}] (0: no classifier guidance; it helps at "
             f"0.01 to 10, and far above that samples saturate to black and white); got {cfg.guidance_scale}")
    _require(not cfg.guidance_scale or any(cls.guided for cls in classes),
             f"--guidance-scale applies to the {' and '.join(kinds_with(guided=True))} generator; add "
             f"{' or '.join(kinds_with(guided=True))} to --generator")
    if cfg.unlabeled and cfg.source == "bank":  # every kind must use them: none ignores the flag silently
        refused = [f"{kind} ({cls.unlabeled_refusal})" for kind, cls in zip(kinds, classes) if not cls.takes_unlabeled]
        able = " and ".join(kinds_with(takes_unlabeled=True))
        _require(not refused, f"--unlabeled joins a generator's unconditional pretraining, which --generator "
                 f"{'; '.join(refused)} cannot use; drop --unlabeled, or keep only {able} in --generator")
    for cls in classes:  # settings only some kinds take (--pretrained): checked by them, required by default
        cls.check_settings(**{name: getattr(cfg, name) for name in cls.takes_settings})
    for name in {n for kind in kinds_with(space="images") for n in generator_class(kind).takes_settings}:
        _require(getattr(cfg, name, None) is None or any(name in cls.takes_settings for cls in classes),
                 f"--{name.replace('_', '-')} is a setting of --generator "
                 f"{' or '.join(k for k in kinds_with(space='images') if name in generator_class(k).takes_settings)}"
                 "; add that kind to --generator, or drop the flag")
    _require(0.0 <= cfg.tau <= 1.0, f"--tau is a probability in [0, 1]; got {cfg.tau}")
    _require(math.isfinite(cfg.max_ratio) and cfg.max_ratio > 0,
             f"--max-ratio must be a number > 0; got {cfg.max_ratio}")
    if hasattr(cfg, "algo"):
        from tailmix.agents.backends import backend_names, get_backend

        _choice(cfg, "wrapper", ("shared", "central"))
        _require(not (cfg.resume and cfg.overwrite), "--resume and --overwrite contradict each other; pass one")
        _require(not cfg.resume or cfg.run_dir, "--resume needs --run-dir: the run folder to continue")
        _choice(cfg, "backend", backend_names())
        backend = get_backend(cfg.backend)
        _require(backend.main_job or type(cfg) is TrainConfig,
                 f"--backend {cfg.backend} is for the train command; the main job uses one of "
                 f"{', '.join(n for n in backend_names() if get_backend(n).main_job)}")
        backend.check(cfg)
    if isinstance(cfg, BenchmarkConfig):
        _require(bool(cfg.baselines or cfg.learned), "nothing to benchmark: pass --baselines and/or --learned")
    from tailmix.agents.baselines import make_baseline

    for spec in getattr(cfg, "baselines", ()):
        make_baseline(spec)  # an unknown or malformed spec names the registered ones, before any work
    if isinstance(cfg, EvaluateConfig) and _model_path(cfg.policy) is None:
        make_baseline(cfg.policy)
    from tailmix.classifiers.batched_head import HEAD_LOSSES
    from tailmix.classifiers.losses import LOSSES

    if not (cfg.loss == "auto" and isinstance(cfg, MainConfig)):  # the main job picks it on the reward
        _choice(cfg, "loss", HEAD_LOSSES if cfg.mode == "feature" else LOSSES)
    if isinstance(cfg, MainConfig):
        from tailmix.mainjob import main_methods

        main_methods(cfg)  # an unknown --methods entry fails here, before any work
    for cls in classes:
        if cls.trains:  # the kinds built without a model take no preset
            _choice(cfg, "preset", cls.presets)
    from tailmix.classifiers.device import select_device

    try:
        select_device(cfg.device)  # names the visible devices when this one does not exist
    except ValueError as err:  # the library's advice is spelled for Python (device='cpu'); say it as the flag
        text = str(err).replace("device='cpu' or 'auto'", "--device cpu or --device auto")
        raise ValueError("--device: " + text.replace("pass 'auto'", "pass --device auto")) from None
    from tailmix.classifiers.device import PRECISIONS

    _choice(cfg, "precision", PRECISIONS)
    cfg.generator_devices  # noqa: B018 (--devices: each named device exists)
    from tailmix.preflight import check_settings

    check_settings(cfg)  # paths, --unlabeled and the memory an --image-size needs, before any work


def check_budget_fields(cfg) -> None:
    """``--budget-minutes`` and the sizes a budget sets (``tailmix.budget``)."""
    from tailmix.budget import parse_minutes

    _require(parse_minutes(cfg.budget_minutes) is None or isinstance(cfg, MainConfig),
             "--budget-minutes sizes the main job (python train_agents.py --budget-minutes M, no subcommand); the "
             "other commands take the sizes themselves (--generator-steps, --per-class, --encoder-epochs, ...)")
    _require(cfg.pretrain_steps is None or cfg.pretrain_steps >= 0,
             f"--pretrain-steps must be >= 0; got {cfg.pretrain_steps}")
    for name in ("filter_tries", "encoder_epochs"):
        value = getattr(cfg, name)
        _require(value is None or value >= 1, f"--{name.replace('_', '-')} must be >= 1; got {value}")


def _inherit(cfg, fixed: set[str], stored: dict, names) -> list[str]:
    """Copy ``stored`` values of ``names`` that are not ``fixed`` (given by the user) into ``cfg``, adding them to
    ``fixed``; return the fixed ones whose value differs from the stored one."""
    clashes = []
    for name in names:
        if name not in stored or not hasattr(cfg, name):
            continue
        if name in fixed:
            if stored[name] != getattr(cfg, name):
                clashes.append(name)
        else:
            setattr(cfg, name, stored[name])
            fixed.add(name)
    return clashes


def resolve_config(command: str, cfg, explicit: frozenset[str]):
    """Fill settings the user did not give from an earlier run: the run folder's ``run.json`` for ``--resume``,
    the trained model's ``run.json`` for ``evaluate`` and ``benchmark --learned``.

    Returns:
        ``(cfg, fixed)``: the config and the names of the fields given or inherited (``--quick`` leaves them).
    """
    fixed = set(explicit)
    if getattr(cfg, "resume", False) and cfg.run_dir:
        folder = Path(cfg.run_dir)
        if not folder.is_dir():
            raise ValueError(f"--resume: run folder {folder} does not exist; train without --resume first")
        stored = _stored_config(folder)
        if stored is not None:
            clashes = _inherit(cfg, fixed, stored, ENV_FIELDS + MODEL_FIELDS)
            if clashes:
                shown = ", ".join(f"--{n.replace('_', '-')} (run: {stored[n]!r}, now: {getattr(cfg, n)!r})"
                                  for n in clashes)
                raise ValueError(f"cannot change {shown} when resuming {folder}; drop those flags, or start a new "
                                 "run with another --run-dir")
            _inherit(cfg, fixed, stored, PLACE_FIELDS + ("timesteps", "checkpoint_every"))  # these may change
        return cfg, fixed
    if isinstance(cfg, EvaluateConfig):
        models = [_model_path(cfg.policy)]
    else:
        models = [Path(_split_algo(spec)[1]).expanduser() for spec in getattr(cfg, "learned", [])]
    origin = None
    for path in models:
        if path is None or not path.is_file():
            continue
        stored = _stored_config(path.parent)
        if stored is None:
            continue
        if origin is None:
            origin = path
            _inherit(cfg, fixed, stored, ENV_FIELDS + PLACE_FIELDS)
        else:
            differ = [n for n in ENV_FIELDS if n in stored and n not in explicit and stored[n] != getattr(cfg, n)]
            if differ:
                raise ValueError(f"{path} was trained with other env settings than {origin} ({', '.join(differ)}); "
                                 "benchmark them separately, or pass those flags to evaluate both in one env")
    return cfg, fixed


# -- --quick ----------------------------------------------------------------------------------------
#: What ``--quick`` sets, unless the user gave the field (or it was inherited from an earlier run).
QUICK = QUICK_SETTINGS  # --quick's budgets (defined in tailmix.runs, which rebuilds commands from them)


def _quick(cfg, fixed: set[str] | frozenset[str] = frozenset()) -> None:
    """Shrink every budget (``--quick``) in place, leaving the ``fixed`` fields as they are.

    The env's encoder is shrunk too (``tailmix.pipeline.env_kwargs``, keyed on ``cfg.quick``).
    """
    for name, value in QUICK.items():
        if hasattr(cfg, name) and name not in fixed:
            setattr(cfg, name, value)


def main_defaults(cfg, fixed=frozenset()) -> None:
    """The main job's pool default (``--generator ddpm augment``) applies to bank sources: with another
    ``--source`` and no ``--generator`` given, the one generator kind of the other commands is used."""
    if isinstance(cfg, MainConfig) and cfg.source != "bank" and "generator" not in fixed:
        cfg.generator = Settings.generator
