"""A time budget for the main job: measure a few steps of each expensive phase, estimate every phase, and size
generator training, the bank, the encoder and agent training so the whole job fits ``--budget-minutes``.

Two halves:

- pure arithmetic (:class:`Costs`, :class:`Shape`, :class:`Sizes`, :func:`estimate`, :func:`plan`): given seconds
  per step and a budget, the sizes and the estimate of each phase (tested without any training);
- :func:`measure_costs` (a few real steps of each phase on this machine: throwaway models, the caller's random
  streams left as they were) and :func:`apply_budget`, the hook the CLI's main job calls: it prints the estimate,
  writes the chosen sizes into the config's existing fields (so they enter the cache keys and ``run.json``), and
  returns a record for ``run.json``.

A budget only ever shrinks sizes below their defaults (no budget, ``0`` or ``none``, is the behaviour without
one), and a size the user gave on the command line is kept as given.

    from tailmix import budget
    record = budget.apply_budget(settings, dataset, minutes=10)   # settings now holds the sized fields
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, replace

#: The main job's default budget in minutes (CPU and GPU alike: on a GPU the defaults usually fit, so it changes
#: nothing there but costs the few seconds of measuring).
DEFAULT_MINUTES = 10.0
#: The largest ``--budget-minutes`` (a week): a budget only shrinks sizes, so a larger one changes nothing (and one
#: near the float maximum would overflow when turned into seconds).
MAX_MINUTES = 7 * 24 * 60
#: Share of the budget kept back for what the estimate misses (loading, env builds, the machine's load moving).
MARGIN = 0.15
#: Seconds allowed for what no size controls and no probe measures: dataset loading, env builds (the main job's
#: digits-LT runs of issue 27 spent 2-8 s there besides the probes).
OTHER_SECONDS = 5.0
#: Largest share of the remaining budget the filter, encoder and agent training may take before they are shrunk.
ENV_SHARE = 0.3
#: Largest share of what is left after them that the bank may take (the generator gets the rest).
BANK_SHARE = 0.35
#: Images asked of the generator per batch when the bank is filled (``GeneratorPool.fill_bank``'s default).
FILL_BATCH = 64
#: The smallest sizes a budget chooses; below them a warning says the budget is too small.
FLOORS = {"generator_steps": 100, "pretrain_steps": 20, "per_class": 16, "filter_tries": 2, "filter_epochs": 10,
          "encoder_epochs": 5, "timesteps": 2000}
#: The sizes a budget may set (fields of the CLI's config), in the order they are printed.
SIZE_FIELDS = ("generator_steps", "pretrain_steps", "per_class", "filter_tries", "filter_epochs", "encoder_epochs",
               "timesteps")
#: The phases that support the bank's use (each with the size that scales it): shrunk together when they take more
#: than ENV_SHARE of the budget.
SUPPORT = {"filter_epochs": "reference filter", "encoder_epochs": "encoder", "timesteps": "agent"}


def parse_minutes(value) -> float | None:
    """``--budget-minutes`` as minutes, or ``None`` for no budget (``None``, ``0``, ``'none'``, ``'off'``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "0", "")):
        return None
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--budget-minutes must be a number of minutes, or 0 / none for no budget; got {value!r}") \
            from None
    if not math.isfinite(minutes) or not 0 <= minutes <= MAX_MINUTES:
        raise ValueError(f"--budget-minutes must be a number of minutes in [0, {MAX_MINUTES}] (a week; 0 or none: no "
                         f"budget, the default sizes); got {value!r}")
    return None if minutes == 0 else minutes


@dataclass(frozen=True)
class Costs:
    """Seconds per unit of work, measured on this machine (:func:`measure_costs`)."""

    generator_step: float
    """One generator training step (one batch)."""
    sample_image: float
    """One bank candidate (sampling it; scoring it with the filter is cheap beside that)."""
    encoder_image_epoch: float
    """One image through one training epoch of the encoder's (and the filter's) small CNN."""
    agent_timestep: float
    """One agent timestep of the shared wrapper (its share of an env step and of the PPO update), in the training
    env the main job gives it (reward replicas, credit)."""
    probe_seconds: float = 0.0
    """What measuring these took (spent from the budget)."""
    central_timestep: float = 0.0
    """One timestep of the central wrapper (a whole env step and its PPO update)."""
    cem_generation: float = 0.0
    """One generation of the CEM search (its population's episodes, batched)."""
    eval_episode: float = 0.0
    """One evaluation episode of a fixed policy (the loss pick, the fixed family and the benchmark)."""
    eval_env: float = 0.0
    """Building one evaluation env (one per loss tried, one for the fixed family, one for the benchmark)."""


@dataclass(frozen=True)
class Shape:
    """What the job's cost depends on besides the sizes."""

    num_classes: int
    n_train: int
    encoder_folds: int = 5
    shared_methods: int = 1
    """SB3 methods of the shared wrapper (``timesteps`` each)."""
    central_methods: int = 0
    """SB3 methods of the central wrapper (``timesteps / num_classes`` each: as many env steps)."""
    cem_generations: int = 0
    """CEM generations in all (generations x CEM methods)."""
    eval_episodes: int = 0
    """Evaluation episodes in all (losses, fixed family and learned methods, x seeds)."""
    eval_envs: int = 0
    """Evaluation envs built (one per loss tried, the fixed family's, the benchmark's)."""
    generator_kinds: int = 1
    """Generators that train (augment has no model)."""


@dataclass(frozen=True)
class Sizes:
    """The sizes a budget chooses (``None``: the phase does not run, e.g. no filter, no agent)."""

    generator_steps: int
    """Conditional DDPM training steps."""
    pretrain_steps: int
    """Unconditional pretraining steps before them (scaled with them, at the preset's ratio)."""
    per_class: int
    filter_tries: int
    filter_epochs: int
    encoder_epochs: int
    timesteps: int


def bank_candidates(per_class: int, filter_tries: int | None, num_classes: int, batch: int = FILL_BATCH) -> int:
    """The most candidates a filtered fill can generate (``generators.filter.fill_loop``: its first batch asks for
    at most the quota, later ones for at most ``batch`` each, ``filter_tries`` batches in all); without a filter
    (``None``) exactly the quota. Per shard of up to 256 images, as the pool fills them."""
    shards = math.ceil(per_class / 256)
    if filter_tries is None:
        return num_classes * per_class
    per_shard = min(batch, min(per_class, 256)) + (filter_tries - 1) * batch
    return num_classes * shards * per_shard


def estimate(costs: Costs, sizes: Sizes, shape: Shape, *, filtered: bool = True) -> dict[str, float]:
    """Seconds of each phase (the bank at its worst case: every filter try used)."""
    c = costs
    out = {"generator": (sizes.pretrain_steps + sizes.generator_steps) * c.generator_step * shape.generator_kinds}
    if filtered:
        out["reference filter"] = sizes.filter_epochs * shape.n_train * c.encoder_image_epoch
    out["synthetic bank"] = bank_candidates(sizes.per_class, sizes.filter_tries if filtered else None,
                                            shape.num_classes) * c.sample_image * shape.generator_kinds
    folds = max(shape.encoder_folds, 1)
    fold_images = shape.n_train * (folds - 1) / folds if folds > 1 else shape.n_train
    out["encoder"] = folds * sizes.encoder_epochs * fold_images * c.encoder_image_epoch
    out["agent"] = sizes.timesteps * c.agent_timestep * shape.shared_methods + \
        central_steps(sizes.timesteps, shape.num_classes) * c.central_timestep * shape.central_methods
    if shape.cem_generations:
        out["search"] = shape.cem_generations * c.cem_generation
    if shape.eval_episodes:
        out["evaluation"] = shape.eval_episodes * c.eval_episode + shape.eval_envs * c.eval_env
    out["other"] = OTHER_SECONDS + c.probe_seconds
    if filtered and shape.generator_kinds:  # bank_estimate_before's samples, at a small batch (1-2x per image)
        out["other"] += 1.5 * shape.num_classes * ACCEPTANCE_SAMPLES * c.sample_image
    return out


def central_steps(timesteps: int, num_classes: int) -> int:
    """Timesteps of a central method given the shared wrapper's (``tailmix.mainjob.sb3_timesteps``)."""
    return max(int(timesteps) // max(num_classes, 1), 128)


def plan(costs: Costs, shape: Shape, budget_seconds: float, defaults: Sizes, *, fixed=frozenset(),
         filtered: bool = True) -> tuple[Sizes, list[str]]:
    """The sizes that fit ``budget_seconds``, each at most its default, and warnings.

    Order: what the user fixed stays; filter epochs, encoder epochs and agent timesteps keep their defaults unless
    the three take more than :data:`ENV_SHARE` of the budget (then they shrink by one factor); the bank may take
    up to :data:`BANK_SHARE` of the rest (fewer filter tries first, then fewer images per class); the generator
    gets what is left. A size that would fall
    below its :data:`FLOORS` entry is set to the floor with a warning that the budget is too small.

    Raises:
        ValueError: a budget that is not a positive number of seconds.
    """
    if not (isinstance(budget_seconds, (int, float)) and math.isfinite(budget_seconds) and budget_seconds > 0):
        raise ValueError(f"the budget must be a positive number of seconds; got {budget_seconds!r}")
    warnings: list[str] = []
    sizes = defaults
    if sum(estimate(costs, sizes, shape, filtered=filtered).values()) <= budget_seconds * (1 - MARGIN):
        return sizes, warnings  # the defaults fit: nothing changes
    floor = {k: min(v, getattr(defaults, k)) for k, v in FLOORS.items()}  # a default below its floor stays

    def est(s: Sizes) -> dict[str, float]:
        return estimate(costs, s, shape, filtered=filtered)

    e = est(sizes)
    # the CEM search and the evaluation episodes have no size a budget sets: they come off the top
    avail = max(budget_seconds * (1 - MARGIN) - e["other"] - e.get("search", 0.0) - e.get("evaluation", 0.0), 0.0)
    support = {k: p for k, p in SUPPORT.items() if p in e}
    support_cost = sum(e[p] for p in support.values())
    if support_cost > ENV_SHARE * avail:  # shrink the support phases not fixed by one factor
        free = [k for k in support if k not in fixed]
        fixed_cost = sum(e[p] for k, p in support.items() if k in fixed)
        free_cost = support_cost - fixed_cost
        if free and free_cost > 0:
            f = max(ENV_SHARE * avail - fixed_cost, 0.0) / free_cost
            sizes = replace(sizes, **{k: max(floor[k], int(getattr(sizes, k) * f)) for k in free})
        e = est(sizes)
    rest = avail - sum(e[p] for p in support.values())
    # bank: fewer filter tries (keeping room for some rejection), then fewer images per class
    if "per_class" not in fixed or "filter_tries" not in fixed:
        cap = BANK_SHARE * max(rest, 0.0)
        while est(sizes)["synthetic bank"] > cap:
            min_tries = max(floor["filter_tries"], math.ceil(sizes.per_class / FILL_BATCH) + 1)
            if filtered and "filter_tries" not in fixed and sizes.filter_tries > min_tries:
                sizes = replace(sizes, filter_tries=sizes.filter_tries - 1)
            elif "per_class" not in fixed and sizes.per_class > floor["per_class"]:
                sizes = replace(sizes, per_class=max(floor["per_class"], sizes.per_class // 2))
            else:
                break
    rest -= est(sizes)["synthetic bank"]
    if "generator_steps" not in fixed:
        affordable = rest / costs.generator_step if costs.generator_step > 0 else math.inf
        if "pretrain_steps" in fixed:
            steps = affordable - sizes.pretrain_steps
        else:  # pretraining shrinks with the conditional steps, at the defaults' ratio
            steps = affordable / (1 + defaults.pretrain_steps / max(defaults.generator_steps, 1))
        steps = max(floor["generator_steps"], min(defaults.generator_steps, int(steps)))
        sizes = replace(sizes, generator_steps=steps)
        if "pretrain_steps" not in fixed and steps < defaults.generator_steps:
            pre = round(defaults.pretrain_steps * steps / max(defaults.generator_steps, 1))
            sizes = replace(sizes, pretrain_steps=max(floor["pretrain_steps"], pre))
    total = sum(est(sizes).values())
    if total > budget_seconds:
        warnings.append(f"warning: the budget of {budget_seconds / 60:.3g} min is too small for this dataset on this "
                        f"machine: even at the sizes below the estimate is {total / 60:.1f} min (floors: "
                        + ", ".join(f"{k} {v}" for k, v in floor.items())
                        + "). Raise --budget-minutes, or pass --budget-minutes none for the default sizes")
    return sizes, warnings


def format_estimate(est: dict[str, float], *, actual: dict[str, float] | None = None, title: str = "estimate",
                    before: dict[str, float] | None = None) -> str:
    """Plain-text table of the phase estimates (and actual seconds, when known; ``before``: a phase's estimate made
    again just before it, shown in brackets)."""
    lines = [f"{title}:" if actual is None else "time per phase (estimate -> actual):"]
    for name, sec in est.items():
        got = "" if actual is None else f" -> {actual[name]:6.0f} s" if name in actual else " ->      - "
        if actual is not None and before and name in before:
            got += f"  (estimate just before it: {before[name]:.0f} s)"
        lines.append(f"  {name:<17}{sec:6.0f} s{got}")
    total = sum(est.values())
    got = "" if actual is None else f" -> {sum(actual.values()):6.0f} s"
    lines.append(f"  {'total':<17}{total:6.0f} s{got}  ({total / 60:.1f} min estimated)")
    return "\n".join(lines)


# -- measuring on this machine -----------------------------------------------------------------------
@contextlib.contextmanager
def _rng_kept():
    """Leave Python's, NumPy's and torch's global random streams as they were (the probes must not shift the
    job's draws)."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def _timed(fn, repeats: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure_costs(cfg, dataset, *, generator_steps: int = 2, sample_images: int = FILL_BATCH,
                  encoder_images: int = 256) -> Costs:
    """A few real steps of each phase on throwaway models: generator training steps and sampling on a fresh
    network of the configured generator (same size, same device; its kind's ``Generator.probe_costs``: sampling at
    the bank's batch size), one epoch of the encoder's CNN, and the main job's agent work on the dataset with a
    one-epoch encoder and feature pools of the bank's size: two PPO rollouts per wrapper in its training env, CEM
    generations, evaluation episodes. The caller's random streams are left as they were."""
    import torch

    from tailmix.pipeline import new_generator, one_kind

    t_start = time.perf_counter()
    with _rng_kept():
        g = torch.Generator().manual_seed(cfg.seed + 7919)
        gen = new_generator(one_kind(cfg, trained_kind(cfg)), dataset)
        gen_step, sample = gen.probe_costs(dataset, generator=g, train_steps=generator_steps,
                                           sample_images=sample_images)

        from tailmix.classifiers.device import fixed_threads
        from tailmix.envs.features import EncoderConfig, _train_cnn

        m = min(encoder_images, len(dataset.train_labels))

        def fit_cnn(epochs: int) -> float:
            return _timed(lambda: _train_cnn(dataset.train_images[:m], dataset.train_labels[:m], dataset.num_classes,
                                             EncoderConfig(epochs=epochs), cfg.seed))

        with fixed_threads(1):
            fit_cnn(1)  # warm-up: the first fit costs seconds more than a later one (it made the difference negative)
            one, three = fit_cnn(1), fit_cnn(3)
        enc = max(three - one, 0.2 * one) / (2 * m)  # the difference drops the model's setup, paid once per fold
        agent = _agent_costs(cfg, dataset)
    return Costs(generator_step=gen_step, sample_image=sample, encoder_image_epoch=enc,
                 probe_seconds=time.perf_counter() - t_start, **agent)


def probe_env_kwargs(cfg, dataset) -> dict:
    """The main job's env settings with a one-epoch encoder and, per source, Gaussian feature pools of the bank's
    size (``--per-class``): its agent work at the cost it will have, before any bank or encoder exists."""
    from tailmix.envs.sources import GaussianSource
    from tailmix.pipeline import env_kwargs, num_sources

    kw = env_kwargs(replace(_resolved(cfg, dataset), source="gaussian"), dataset, progress=False)
    # the env's own encoder kind at one epoch over two folds: a random encoder's 128 features made every episode
    # several times dearer than the trained encoder's (as many features as classes)
    kw.update(encoder_epochs=1, encoder_folds=2, cache_dir=None)
    kw.pop("source", None)
    kw["sources"] = [GaussianSource(dataset.num_classes, cfg.per_class, seed=i) for i in range(num_sources(cfg))]
    return kw


def trained_kind(cfg) -> str:
    """The one generator kind of ``cfg`` that trains a model (the budget sizes it; ``augment`` has none)."""
    from tailmix.generators.base import GENERATOR_KINDS

    kinds = str(cfg.generator).split()
    return next((k for k in kinds if k not in GENERATOR_KINDS or GENERATOR_KINDS[k].trains), kinds[0])


def _resolved(cfg, dataset):
    """``cfg`` with the main job's data-decided settings filled (``--val-folds 0``, ``--loss auto``) as it will
    fill them: the folds from the data; the loss, picked later on the reward, costs as cross-entropy does."""
    folds = getattr(cfg, "val_folds", 1)
    if not folds:
        from tailmix.mainjob import decide_val_folds

        folds = decide_val_folds(dataset)[0]
    return replace(cfg, val_folds=folds, loss="ce" if cfg.loss == "auto" else cfg.loss)


def _agent_costs(cfg, dataset) -> dict:
    """Seconds per shared and central PPO timestep (each in the training env its method gets), per CEM generation
    and per evaluation episode, measured on :func:`probe_env_kwargs`'s env."""
    from tailmix import mainjob
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import make_eval_env, run_episode
    from tailmix.agents.sb3 import train as train_agent
    from tailmix.pipeline import num_sources

    import tempfile

    kw = probe_env_kwargs(cfg, dataset)
    g = num_sources(cfg)
    scratch = tempfile.TemporaryDirectory(prefix="tailmix-probe-")
    kw["cache_dir"] = scratch.name  # the probe's one-epoch encoder is fitted once, not at every env build
    methods = _methods(cfg)
    out = {"agent_timestep": 0.0, "central_timestep": 0.0, "cem_generation": 0.0, "eval_episode": 0.0}
    for method in methods:
        kind, wrapper = mainjob.parse_method(method)
        if kind == "cem" or out[f"{wrapper}_timestep" if wrapper == "central" else "agent_timestep"]:
            continue
        env = dict(kw, **mainjob.train_env(method, g))
        # agents.sb3's PPO rollout at full size: 128 env steps (x C class agents with the shared wrapper)
        rollout = 128 * (dataset.num_classes if wrapper == "shared" else 1)

        def ppo(total: int) -> None:
            train_agent(kind, env, wrapper=wrapper, total_timesteps=total, seed=cfg.seed).get_env().close()

        one = _timed(lambda: ppo(rollout))
        three = _timed(lambda: ppo(3 * rollout))
        # the difference drops the env and model builds; over two rollouts, as a policy's ratios (and with them an
        # env step's cost) move from one rollout to the next
        per = max(three - one, 0.1 * one) / (2 * rollout)
        out["central_timestep" if wrapper == "central" else "agent_timestep"] = per
    if any(m in mainjob.CEM_METHODS for m in methods):
        from tailmix.agents.cem import cem_search
        from tailmix.suite.protocol import CEM

        def cem(gens: int) -> None:
            cem_search(kw, generations=gens, population=CEM["population"], episodes_per_candidate=CEM["episodes"],
                       seed=cfg.seed, knots=CEM["knots"])

        one = _timed(lambda: cem(1))
        two = _timed(lambda: cem(2))
        out["cem_generation"] = max(two - one, 0.1 * one)
    t0 = time.perf_counter()
    env = make_eval_env(kw)
    out["eval_env"] = time.perf_counter() - t0
    mix = "@mix" if g > 1 else ""
    run_episode(env, make_baseline(f"fill{mix}"), 0)  # warm-up
    # the fixed family's ratios run from none to the largest: an episode's cost grows with the synthetic images
    policies = [make_baseline(spec) for spec in ("none", f"fill{mix}", f"inverse{mix}", f"constant:4{mix}")]
    out["eval_episode"] = _timed(lambda: [run_episode(env, p, 1) for p in policies]) / len(policies)
    env.close()
    scratch.cleanup()
    return out


def _methods(cfg) -> list[str]:
    """The learned methods the job trains (the main job's ``methods``; ``--algo``-``--wrapper`` elsewhere)."""
    if hasattr(cfg, "methods"):
        return list(cfg.methods)
    return [f"{getattr(cfg, 'algo', 'ppo')}-{getattr(cfg, 'wrapper', 'shared')}"]


def main_shape(cfg, dataset, base: Shape) -> Shape:
    """``base`` with the main job's learned methods and evaluation episodes counted."""
    from tailmix import mainjob
    from tailmix.pipeline import generator_kinds, num_sources
    from tailmix.suite.protocol import CEM, LT_LOSSES

    methods = _methods(cfg)
    wrappers = [mainjob.parse_method(m) for m in methods]
    names = [f"s{i}" for i in range(num_sources(cfg))]
    losses = 1 + len(LT_LOSSES) if cfg.loss == "auto" else 0
    episodes = (losses + len(mainjob.fixed_family(names)) + len(methods)) * cfg.seeds
    return replace(base, eval_envs=losses + 2,
                   shared_methods=sum(k != "cem" and w == "shared" for k, w in wrappers),
                   central_methods=sum(k != "cem" and w == "central" for k, w in wrappers),
                   cem_generations=CEM["generations"] * sum(k == "cem" for k, _ in wrappers),
                   eval_episodes=episodes,
                   generator_kinds=sum(_trains(k) for k in generator_kinds(cfg)))


def _trains(kind: str) -> bool:
    from tailmix.generators.base import GENERATOR_KINDS

    return kind not in GENERATOR_KINDS or bool(GENERATOR_KINDS[kind].trains)


def _default_sizes(cfg, dataset) -> tuple[Sizes, Shape]:
    from tailmix.pipeline import env_spec, new_generator, one_kind

    # the budgeted kind's steps: the settings', else its preset's
    gen = new_generator(one_kind(cfg, trained_kind(cfg)), dataset)
    env = env_spec(replace(_resolved(cfg, dataset), source="gaussian"), dataset, progress=False).config  # typed
    sizes = Sizes(generator_steps=gen.train_steps, pretrain_steps=gen.pretrain_steps, per_class=cfg.per_class,
                  filter_tries=getattr(cfg, "filter_tries", None) or 10, filter_epochs=cfg.filter_epochs,
                  encoder_epochs=env.encoder_epochs,
                  timesteps=getattr(cfg, "timesteps", 0))
    shape = Shape(num_classes=dataset.num_classes, n_train=len(dataset.train_labels), encoder_folds=env.encoder_folds)
    if hasattr(cfg, "methods"):
        shape = main_shape(cfg, dataset, shape)
    return sizes, shape


def applies(cfg) -> str | None:
    """Why the budget does not apply to ``cfg`` (``None``: it does)."""
    if cfg.quick:
        return "--quick sets its own sizes"
    if getattr(cfg, "resume", False):
        return "a resumed run keeps its sizes"
    from tailmix.generators.base import GENERATOR_KINDS, kinds_with

    kinds = str(cfg.generator).split()
    trained = [k for k in kinds if k not in GENERATOR_KINDS or GENERATOR_KINDS[k].trains]
    # one budgeted kind that trains, beside kinds built without a model (augment: the main job's pool)
    budgeted = len(trained) == 1 and trained[0] in GENERATOR_KINDS and GENERATOR_KINDS[trained[0]].budgeted
    if not budgeted or cfg.source != "bank" or cfg.mode != "feature" or cfg.guidance_scale:
        return ("it sizes the bank of one unguided generator with a cost model "
                f"({', '.join(kinds_with(budgeted=True))}; beside kinds without a model) "
                "in feature mode (this run: --generator "
                f"{cfg.generator}, --source {cfg.source}, --mode {cfg.mode}"
                + (", --guidance-scale" if cfg.guidance_scale else "") + "); sizes stay as given")
    if getattr(cfg, "n_envs", 1) != 1 or (not hasattr(cfg, "methods") and getattr(cfg, "algo", "ppo") != "ppo"):
        return "agent timings are measured for PPO with one env copy; sizes stay as given"
    return None


def apply_budget(cfg, dataset, *, minutes=None, fixed=frozenset(), costs: Costs | None = None) -> dict:
    """Measure, estimate, and write the sizes that fit ``minutes`` (default ``cfg.budget_minutes``) into ``cfg``.

    Fields in ``fixed`` (given on the command line) keep their values. Without a budget only the estimate is
    printed. Returns the record stored in ``run.json`` (``budget_minutes``, ``costs``, ``sizes``, ``estimate``).
    """
    minutes = parse_minutes(getattr(cfg, "budget_minutes", None) if minutes is None else minutes)
    why = applies(cfg)
    if why is not None:
        print(f"time budget: not applied ({why})", flush=True)
        return {"budget_minutes": minutes, "applied": False, "reason": why}
    from tailmix.pipeline import phase

    if costs is None:
        with phase("time budget: measuring a few steps of each phase"):
            costs = measure_costs(cfg, dataset)
    defaults, shape = _default_sizes(cfg, dataset)
    filtered = bool(cfg.filter)
    warnings: list[str] = []
    sizes = defaults
    if minutes is not None:
        sizes, warnings = plan(costs, shape, minutes * 60, defaults, fixed=frozenset(fixed), filtered=filtered)
    changed = {k: getattr(sizes, k) for k in SIZE_FIELDS if getattr(sizes, k) != getattr(defaults, k)}
    for name, value in changed.items():
        setattr(cfg, name, value)  # existing config fields: they enter the cache keys and run.json
    est = estimate(costs, sizes, shape, filtered=filtered)
    if not filtered:
        changed.pop("filter_tries", None)
        changed.pop("filter_epochs", None)
    head = ("no budget" if minutes is None else f"budget {minutes:g} min") + f" (measured: generator step " \
        f"{costs.generator_step:.2f} s, bank image {costs.sample_image:.3f} s, encoder image-epoch " \
        f"{costs.encoder_image_epoch * 1e3:.2f} ms, agent timestep {costs.agent_timestep * 1e3:.2f} ms)"

    def note(k: str) -> str:
        return "" if k in changed else " (given)" if k in fixed else " (default)"

    shown = ", ".join(f"{k} {getattr(sizes, k)}{note(k)}" for k in SIZE_FIELDS
                      if filtered or not k.startswith("filter"))
    print(f"time budget: {head}\nsizes: {shown}\n" + format_estimate(est, title="estimate on this machine"),
          flush=True)
    for line in warnings:
        print(line, flush=True)
    return {"budget_minutes": minutes, "applied": True, "costs": asdict(costs), "sizes": asdict(sizes),
            "changed": changed, "estimate_seconds": {k: round(v, 1) for k, v in est.items()},
            "estimate_total_seconds": round(sum(est.values()), 1), "warnings": warnings}


#: Samples per class the bank's acceptance probe draws from the trained generator (:func:`bank_estimate_before`).
ACCEPTANCE_SAMPLES = 8


def expected_candidates(per_class: int, tries: int, acceptance: float, batch: int = FILL_BATCH) -> float:
    """Candidates a filtered fill of one class asks for when the filter keeps a share ``acceptance`` of them
    (``generators.filter.fill_loop``'s batch sizes, with the expected count kept at each try)."""
    need, tried, accepted, n_tries = float(per_class), 0.0, 0.0, 0
    while accepted < per_class - 1e-9 and n_tries < tries:
        rate = accepted / tried if tried else 1.0
        n = min(batch, math.ceil((per_class - accepted) / max(rate, 0.05)))
        tried += n
        accepted += acceptance * n
        n_tries += 1
    return tried


def bank_estimate_before(cfg, dataset, record: dict, *, samples: int = ACCEPTANCE_SAMPLES) -> dict:
    """The bank's estimate again, just before the fill: the generator and the filter are trained (in their own
    phases, cached, so the fill finds them), ``samples`` images per class are drawn and screened, and the fill is
    costed at that acceptance (the first estimate assumed every filter try used). Returns ``record`` with
    ``estimate_before_seconds`` and ``acceptance`` added."""
    import numpy as np
    import torch

    from tailmix.pipeline import fitted_generator, one_kind, phase, reference_filter

    if not record.get("applied") or not cfg.filter:
        return record
    kind = trained_kind(cfg)
    kcfg = one_kind(cfg, kind)
    with phase(f"generator {kind} ({cfg.preset})"):
        gen = fitted_generator(kcfg, dataset)
    with phase("reference filter"):
        flt = reference_filter(kcfg, dataset)
    tries = int(getattr(cfg, "filter_tries", None) or flt.max_tries)
    with phase("bank acceptance probe"), _rng_kept():
        g = torch.Generator().manual_seed(cfg.seed + 104729)
        acc = [float(flt.select(gen.sample(c, samples, generator=g), c)[0].mean()) for c in range(dataset.num_classes)]
    cost = record["costs"]["sample_image"]
    est = sum(expected_candidates(cfg.per_class, tries, a) for a in acc) * cost
    print(f"synthetic bank: {est:.0f} s estimated before the fill (the filter kept {np.mean(acc):.0%} of "
          f"{samples} samples per class: " + ", ".join(f"{a:.0%}" for a in acc) + "; first estimate, every try "
          f"used: {record['estimate_seconds'].get('synthetic bank', 0):.0f} s)", flush=True)
    return {**record, "acceptance": [round(a, 3) for a in acc],
            "estimate_before_seconds": {"synthetic bank": round(est, 1)}}


#: Which timed phase (``tailmix.pipeline.phase`` names, by prefix) each estimate line covers.
PHASE_PREFIXES = {"generator": "generator", "reference filter": "reference filter", "synthetic bank": "synthetic bank",
                  "encoder": "encoder", "agent": "train ", "search": "search ", "evaluation": ("evaluate", "benchmark")}


def actual_seconds(timings) -> dict[str, float]:
    """Wall seconds per estimate line from ``phase.timings`` (``(name, wall, cpu)``); the rest is ``other``."""
    out: dict[str, float] = {}
    for name, wall, _ in timings:
        key = next((k for k, p in PHASE_PREFIXES.items() if name.startswith(p)), "other")
        out[key] = out.get(key, 0.0) + wall
    return out


def actual_report(record: dict, timings, total: float) -> tuple[str, dict]:
    """The estimate beside the actual wall seconds of each phase (``phase.timings``; ``other`` is the rest of
    ``total``), as text and as ``record`` with ``actual_seconds`` and ``actual_total_seconds`` added."""
    actual = actual_seconds(timings)
    actual["other"] = max(total - sum(v for k, v in actual.items() if k != "other"), 0.0)
    est = record.get("estimate_seconds", {})
    record = {**record, "actual_seconds": {k: round(v, 1) for k, v in actual.items()},
              "actual_total_seconds": round(total, 1)}
    text = format_estimate(est, actual=actual, before=record.get("estimate_before_seconds"))
    if record.get("budget_minutes"):
        met = "met" if total <= record["budget_minutes"] * 60 else "NOT met"
        text += f"\n  budget {record['budget_minutes']:g} min: {met} ({total / 60:.1f} min)"
    return text, record
