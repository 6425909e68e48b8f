"""Policies with one interface, shared by fixed-ratio baselines and learned SB3 models.

Interface::

    policy.name                                  # a short label for tables
    policy.reset(seed)                           # before each episode
    policy.act(observations, env) -> actions     # {agent: np.ndarray (1,)} for every live agent of ``env``

``observations`` are the PettingZoo env's per-agent observations and ``env`` is the
``envs.synthetic_ratio.SyntheticRatioEnv`` (or anything with ``agents``, ``possible_agents``, ``train_counts``,
``max_ratio`` and ``ratio_to_action``).

Several sources (``G > 1``, the env's ``sources=``): each agent's action has ``G`` entries, one ratio per
source. A baseline spec may name the source its ratios go to with ``@``: ``fill@augment``, ``inverse@ddpm``,
``constant:0.5@augment`` or ``random@1`` (by the source's name, ``env.source_names``, or its index); every
other source gets ratio 0. A plain name (``fill``) puts its ratios on source 0. The equal mix ``@mix``
(``fill@mix``, ``inverse@mix``, ``constant:1@mix``, ``decay:fill@mix``) splits the shape's ratio equally over every
source: class ``c``'s ratio ``r_c`` becomes ``r_c / G`` on each of the ``G`` sources (the same number of synthetic
images in total, drawn from every generator alike; with one source it is the plain shape). ``mix`` is reserved: a
source named ``mix`` is targeted by its index. :func:`baselines_for` lists the per-source and equal-mix variants a
benchmark runs.

Baselines choose a ratio per class from the real train counts and map it to an action with
``env.ratio_to_action``. Ratios above ``env.max_ratio`` cannot be expressed by an action, so they are CLIPPED
to ``max_ratio`` (and below 0 to 0): e.g. filling a class of 5 images to a head of 100 wants ratio 19, and
gets ``max_ratio`` (8 by default). ``ratios(env)`` returns the clipped ratios a baseline asks for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tailmix.agents.policy import EQUAL_MIX, Policy, RatioBaseline, _source_index

@dataclass(frozen=True)
class BaselineEntry:
    """One registered baseline kind (see :func:`register_baseline`)."""

    name: str
    """The spec's kind: what a spec starts with (``fill``, ``constant``)."""
    factory: Callable[..., Policy]
    """Builds the policy: called with no argument, or with the spec's converted argument."""
    arg: str | None
    """Metavar of the spec's argument (``ratio`` in ``constant:<ratio>``); ``None``: the kind takes none."""
    arg_required: bool
    """Whether a spec must give the argument (``constant:0.5``) or may leave it out (``inverse``)."""
    convert: Callable[[str], object]
    """Parses the argument's text (``float``, ``int``)."""
    specs: tuple[str, ...]
    """The specs of this kind every benchmark runs (in :func:`baseline_specs`)."""
    per_source: tuple[str, ...]
    """Those of :attr:`specs` that get a per-source variant and an equal mix with several sources."""

    @property
    def usage(self) -> str:
        """How a spec of this kind is written: ``fill``, ``constant:<ratio>``, ``inverse[:<budget>]``."""
        if self.arg is None:
            return self.name
        return f"{self.name}:<{self.arg}>" if self.arg_required else f"{self.name}[:<{self.arg}>]"

    def build(self, arg: str = "") -> Policy:
        """The policy for the spec ``<name>[:<arg>]`` (``ValueError`` for an argument it does not take)."""
        if self.arg is None and arg:
            raise ValueError(f"{self.name} takes no argument")
        if not arg:
            if self.arg_required:
                raise ValueError(f"{self.name} needs an argument: {self.usage}")
            return self.factory()
        return self.factory(self.convert(arg))


#: Every baseline kind by name, in registration order (the order of :func:`baseline_specs`).
_REGISTRY: dict[str, BaselineEntry] = {}


def register_baseline(name: str, *, arg: str | None = None, required: bool = False, convert=float,
                      specs: tuple[str, ...] | None = None, per_source: bool | tuple[str, ...] = False):
    """Register a baseline kind: a class decorator (or call it with the factory), the one edit a new fixed
    baseline needs. The CLI (``--policy``, ``--baselines``), :func:`make_baseline`, :func:`baseline_specs` and the
    benchmarks' lists all read this registry.

    Args:
        name: The spec's kind (lower case, no ``:`` or ``@``).
        arg: Metavar of an argument (``constant:<ratio>``); ``None`` (default): the kind takes none.
        required: The argument must be given (``constant``) rather than optional (``inverse[:<budget>]``).
        convert: Parses the argument's text (default ``float``).
        specs: The specs every benchmark runs (default: ``(name,)``, or none when the argument is required).
        per_source: ``True`` (all of ``specs``) or the specs that get per-source variants and equal mixes.

    Example::

        @register_baseline("half-fill", per_source=True)
        class HalfFill(RatioBaseline):
            name = "half-fill"

            def raw_ratios(self, train_counts):
                return 0.5 * (train_counts.max() / np.maximum(train_counts, 1) - 1)
    """
    if not name or name != name.strip().lower() or any(ch in name for ch in ":@ "):
        raise ValueError(f"a baseline name is one lower-case word without ':', '@' or spaces; got {name!r}")
    from tailmix.agents.schedules import KINDS

    if name in KINDS:
        raise ValueError(f"{name!r} names a schedule kind ({', '.join(KINDS)}); pick another baseline name")
    if specs is None:
        specs = () if (arg is not None and required) else (name,)
    specs = tuple(specs)
    per = specs if per_source is True else tuple(per_source or ())

    def decorate(factory):
        _REGISTRY[name] = BaselineEntry(name, factory, arg, bool(required), convert, specs, per)
        return factory

    return decorate


def unregister_baseline(name: str) -> None:
    """Remove a registered baseline kind (a no-op for an unknown name)."""
    _REGISTRY.pop(name, None)


def baseline_names() -> tuple[str, ...]:
    """The registered baseline kinds (``none``, ``constant``, ``fill``, ...)."""
    return tuple(_REGISTRY)


def iter_baselines():
    """The registered :class:`BaselineEntry` objects, in registration order."""
    return iter(tuple(_REGISTRY.values()))


def baseline_specs(*, fixed: bool = False) -> tuple[str, ...]:
    """The baseline specs every benchmark runs (``none``, ``constant:0.5``, ..., ``random``), from the registry.

    ``fixed=True`` keeps the fixed per-class shapes that add synthetic images (:class:`RatioBaseline` kinds but
    ``none``): ``constant:0.5``, ..., ``fill``, ``inverse``.
    """
    out = []
    for entry in _REGISTRY.values():
        if fixed and (entry.name == "none" or not (isinstance(entry.factory, type)
                                                     and issubclass(entry.factory, RatioBaseline))):
            continue
        out.extend(entry.specs)
    return tuple(out)


def per_source_specs() -> tuple[str, ...]:
    """The specs that get a per-source variant (``<spec>@<source>``) and an equal mix (``<spec>@mix``)."""
    return tuple(spec for entry in _REGISTRY.values() for spec in entry.per_source)


def baseline_usage() -> str:
    """How baseline specs are written, for help texts and errors: ``none, constant:<ratio>, fill, ...``."""
    return ", ".join(entry.usage for entry in _REGISTRY.values())


def baselines_for(source_names=("source0",), *, schedules: bool = False) -> tuple[str, ...]:
    """The baseline specs a benchmark runs for an env with these sources: :func:`baseline_specs`, and with
    ``G > 1`` sources also :func:`per_source_specs` on each source (``fill@augment``, ...; plain names use source 0) and as equal
    mixes over all of them (``fill@mix``, ...). ``schedules=True`` adds the schedules
    (:data:`agents.schedules.SCHEDULE_BASELINES`, ``decay:fill``, ...) and, with ``G > 1``, each of them per source
    and as an equal mix (``decay:fill@augment``, ``decay:fill@mix``)."""
    names = tuple(source_names)
    shapes = baseline_specs()
    if schedules:
        from tailmix.agents.schedules import SCHEDULE_BASELINES

        shapes = shapes + SCHEDULE_BASELINES
    if len(names) <= 1:
        return shapes
    targets = names + (EQUAL_MIX,)
    out = shapes + tuple(f"{spec}@{name}" for name in targets for spec in per_source_specs())
    if schedules:
        out += tuple(f"{spec}@{name}" for name in targets for spec in SCHEDULE_BASELINES)
    return out


@register_baseline("none")
class NoSynthetic(RatioBaseline):
    """Real data only: ratio 0 for every class."""

    name = "none"

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        return np.zeros_like(train_counts, np.float64)


@register_baseline("constant", arg="ratio", required=True, specs=("constant:0.5", "constant:1", "constant:2"),
                   per_source=("constant:1",))
class ConstantRatio(RatioBaseline):
    """The same ratio ``r`` for every class (``r`` synthetic images per real one).

    Args:
        ratio: A finite number >= 0 (clipped to the env's ``max_ratio``).
    """

    def __init__(self, ratio: float) -> None:
        ratio = float(ratio)
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError(f"constant ratio must be a finite number >= 0; got {ratio}")
        self.ratio = ratio
        self.name = f"constant:{ratio:g}"

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        return np.full(len(train_counts), self.ratio, np.float64)


@register_baseline("fill", per_source=True)
class FillToHead(RatioBaseline):
    """Fill every class up to the head class's count (SYNAuG): ``ratio_c = n_max / n_c - 1``."""

    name = "fill"

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        counts = np.maximum(train_counts, 1.0)  # an empty class asks for the most synthesis, not a division by 0
        return counts.max() / counts - 1.0


@register_baseline("inverse", arg="budget", per_source=True)
class InverseFrequency(RatioBaseline):
    """Ratios inversely proportional to the class frequency: ``ratio_c = budget * N / (C * n_c)``.

    ``N`` is the real train size and ``C`` the number of classes. Equivalently, every class gets the same
    number of synthetic images, ``budget * N / C`` (``budget`` times the mean real class size), so the total
    synthetic count is ``budget * N`` before clipping. Unlike :class:`FillToHead`, head classes get some too.

    Args:
        budget: Synthetic images per real image over the whole dataset (default 1.0).
    """

    def __init__(self, budget: float = 1.0) -> None:
        budget = float(budget)
        if not (math.isfinite(budget) and budget >= 0):
            raise ValueError(f"inverse-frequency budget must be a finite number >= 0; got {budget}")
        self.budget = budget
        self.name = "inverse" if budget == 1.0 else f"inverse:{budget:g}"

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        counts = np.maximum(train_counts, 1.0)
        return self.budget * counts.sum() / (len(counts) * counts)


@register_baseline("random", arg="seed", convert=int)
class RandomRatio(Policy):
    """Uniform random actions (ratios uniform in ``[0, max_ratio]``), drawn afresh every step, seeded.

    Args:
        seed: Seed used until :meth:`reset` gives another one (each episode's seed, in evaluation).
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        g = int(getattr(env, "num_sources", 1))
        if self.source is None:  # every source random (one source: v0's draws, value for value)
            draws = self.rng.uniform(-1.0, 1.0, size=(len(env.possible_agents), g)).astype(np.float32)
        else:  # random on the named source, ratio 0 (action -1) on the others
            draws = np.full((len(env.possible_agents), g), -1.0, np.float32)
            draws[:, _source_index(self.source, env)] = self.rng.uniform(-1.0, 1.0, size=len(env.possible_agents))
        return {a: draws[i] for i, a in enumerate(env.possible_agents) if a in env.agents}


class SB3Policy(Policy):
    """A trained Stable-Baselines3 model behind the baseline interface.

    Args:
        model: An SB3 model trained with ``agents.sb3.train`` (or loaded with ``PPO.load`` etc.).
        wrapper: How it was trained: ``"shared"`` (one observation row per agent, action ``(1,)``) or
            ``"central"`` (the ``(C, width)`` observation matrix, action ``(C,)``).
        deterministic: Use the policy's mean action (default). With ``False`` actions are sampled from
            torch's global RNG, which :meth:`reset` seeds.
        name: Label for tables (default ``"<algo>-<wrapper>"``).
    """

    def __init__(self, model, wrapper: str = "shared", deterministic: bool = True, name: str | None = None) -> None:
        from tailmix.agents.wrappers import WRAPPERS

        if wrapper not in WRAPPERS:
            raise ValueError(f"wrapper={wrapper!r} is not known; choose one of {WRAPPERS} (the one it was trained with)")
        self.model = model
        self.wrapper = wrapper
        self.deterministic = deterministic
        self.name = name or f"{type(model).__name__.lower()}-{wrapper}"

    def reset(self, seed: int | None = None) -> None:
        if not self.deterministic and seed is not None:
            import torch

            torch.manual_seed(seed)

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        agents = list(env.possible_agents)
        obs = np.stack([np.asarray(observations[a], np.float32) for a in agents])
        expected = self.model.observation_space.shape
        if self.wrapper == "shared":
            if expected != obs.shape[1:]:
                raise ValueError(f"the model expects observations {expected} but agents observe {obs.shape[1:]}; "
                                 "was it trained with wrapper='central' or on another dataset?")
            live = [i for i, a in enumerate(agents) if a in env.agents]
            actions, _ = self.model.predict(obs[live], deterministic=self.deterministic)
            actions = np.asarray(actions, np.float32).reshape(len(live), -1)
            return {agents[i]: actions[j] for j, i in enumerate(live)}
        if expected != obs.shape:
            raise ValueError(f"the model expects observations {expected} but the env's matrix is {obs.shape}; "
                             "was it trained with wrapper='shared' or on another dataset?")
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        action = np.asarray(action, np.float32).reshape(len(agents), -1)  # (C,) or (C, G)
        return {a: action[i] for i, a in enumerate(agents) if a in env.agents}


def make_baseline(spec: str) -> Policy:
    """A baseline from its spec: a registered kind (:func:`register_baseline`; built in: ``none``,
    ``constant:<r>``, ``fill``, ``inverse[:<budget>]``, ``random[:<seed>]``), or a schedule over the episode of one of the first four (``decay:fill``, ``warmup:constant:2``: see
    :mod:`agents.schedules`), each optionally followed by ``@<source>`` (a source name or index: its ratios go to
    that source only) or ``@mix`` (the equal mix: ratio ``r / G`` on each of the ``G`` sources; not ``random``)."""
    if not isinstance(spec, str):
        raise ValueError(f"baseline spec must be a string like 'constant:0.5'; got {type(spec).__name__}")
    base, at, target = spec.strip().partition("@")
    if at:
        target = target.strip()
        if not target:
            raise ValueError(f"bad baseline spec {spec!r}: name a source after '@' (e.g. fill@augment or fill@1), or "
                             "use @mix for the equal mix (fill@mix)")
        policy = make_baseline(base)
        from tailmix.agents.schedules import SchedulePolicy

        if target == EQUAL_MIX and not isinstance(policy, (RatioBaseline, SchedulePolicy)):
            raise ValueError(f"bad baseline spec {spec!r}: @{EQUAL_MIX} splits a fixed shape's ratio equally over the "
                             f"sources; {base.strip()!r} has none (plain 'random' already draws every source)")
        policy.source = int(target) if target.isdigit() else target
        policy.name = f"{policy.name}@{target}"
        return policy
    kind, _, arg = spec.strip().lower().partition(":")
    from tailmix.agents.schedules import KINDS

    if kind in KINDS:
        return make_schedule(spec)
    entry = _REGISTRY.get(kind)
    if entry is None:
        raise ValueError(f"unknown baseline spec {spec!r}; use one of {_choices()}")
    try:
        return entry.build(arg)
    except ValueError as err:
        raise ValueError(f"bad baseline spec {spec!r}: {err}; use one of {_choices()}") from None


def _choices() -> str:
    return (f"{baseline_usage()}, or a schedule decay|warmup|early|late:<shape> (e.g. decay:fill), each with an "
            "optional @<source> (a source's name or index) or @mix (the shape's ratio split equally over every "
            "source, e.g. fill@mix)")


def make_schedule(spec: str):
    """A :class:`agents.schedules.BaselineSchedule` from ``<kind>:<base spec>`` (``decay:fill``,
    ``warmup:constant:2``, ...): the base shape is parsed here, so the schedules module needs no baseline parser."""
    from tailmix.agents.schedules import KINDS, BaselineSchedule

    kind, _, base = spec.strip().lower().partition(":")
    if kind not in KINDS or not base:
        raise ValueError(f"bad schedule spec {spec!r}; use <kind>:<baseline> with kind in {KINDS}, e.g. decay:fill")
    policy = make_baseline(base)
    if not isinstance(policy, RatioBaseline):
        raise ValueError(f"bad schedule spec {spec!r}: {base!r} is not a fixed per-class shape; use none, "
                         "constant:<r>, fill or inverse[:<budget>]")
    return BaselineSchedule(policy, kind)


#: The built-in baselines every benchmark runs (specs for :func:`make_baseline`); :func:`baseline_specs` also
#: lists kinds registered later.
BASELINES = baseline_specs()
#: The built-in baselines that get a per-source variant and an equal mix (:func:`per_source_specs`).
PER_SOURCE = per_source_specs()
