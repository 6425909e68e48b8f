"""Cross-entropy-method (CEM) search over a static per-class ratio vector, scored on the validation split.

A derivative-free learned sampler: it looks for the one action vector ``a`` in ``[-1, 1]^C`` (ratio
``(a + 1) / 2 * max_ratio`` per class, held for the whole episode) that maximises the balanced validation
accuracy at the end of an episode. Each generation samples ``population`` candidates from a diagonal Gaussian,
plays every candidate for ``episodes_per_candidate`` episodes in ONE batched run of
:class:`envs.vector.SyntheticRatioVectorEnv` (``population * episodes_per_candidate`` copies, each with its own
seed), keeps the elite fraction and moves the Gaussian towards it (smoothed, with a floor on its std).

The fitness is the env's reward at the last step with ``reward="accuracy"``: balanced val accuracy (minus the
reference head's when ``reward_reference`` is set, minus ``synthetic_cost`` per sample when that is set). The
search env is built with ``eval_split=None``: the test split is never read here, except by a search asked for
``fitness_split="test"``, whose result is a ceiling (scored on test), never a method.

Noise: all candidates of a generation share the same episode seeds (common random numbers, so candidates are
ranked on the same classifier initialisations), and the seeds change every generation (so the search does not
fit a few lucky initialisations). The val split itself stays fixed: on a small one (RetinaMNIST: 120 images)
the vector found can fit val noise; judge it on the test split with :mod:`agents.evaluate`.

With ``knots=K`` the search is over schedules instead: per-class actions at ``K`` knots over the episode
(fractions ``0, 1/(K-1), ..., 1``), interpolated linearly between them (:mod:`agents.schedules`); the result's
vectors are ``(K, C)`` and :meth:`CEMPolicy.from_result` returns a :class:`agents.schedules.KnotSchedule`. Use it
with ``lr_schedule="cosine"`` in feature mode, where what a class gets early in an episode is not forgotten.

The pool as an action: in an env with ``G >= 2`` sources (``sources=[...]``) the search is over every source's
ratio of every class, the same Gaussian over ``C * G`` numbers: vectors ``(C, G)`` (``(K, C, G)`` with
``knots=K``), entry ``(c, g)`` class ``c``'s action on source ``g``, so CEM can choose a generator per class.
``init_mean`` may then name where a fixed shape starts (``"fill@augment"``, ``"inverse@1"``, the equal mix
``"fill@mix"``; a plain ``"fill"`` is on source 0). With one source every shape and number is as before.

Example::

    from tailmix.agents.cem import cem_search, CEMPolicy
    result = cem_search(env_kwargs, generations=10, population=16, seed=0, init_mean="inverse")
    rows = agents.evaluate.evaluate(CEMPolicy.from_result(result, env_kwargs), env_kwargs)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from tailmix.agents.baselines import Policy, RatioBaseline
from tailmix.agents.policy import action_to_ratio  # noqa: F401 (also part of this module's interface)

#: Seeds of search episodes are drawn below this bound (gymnasium seeds are Python ints).
_SEED_BOUND = 2**31 - 1


@dataclass
class CEMResult:
    """What :func:`cem_search` found.

    Attributes:
        mean_action: The final Gaussian mean, float32 ``(C,)`` in ``[-1, 1]`` (``(K, C)`` knots for a schedule
            search; ``(C, G)`` / ``(K, C, G)`` with ``G >= 2`` sources): the recommended vector (an average over elites, so less biased by lucky evaluations than
            ``best_action``).
        best_action: The single candidate with the highest fitness seen in any generation (optimistically biased:
            it is the maximum of noisy evaluations).
        best_fitness: Its fitness.
        max_ratio: The env's ``max_ratio`` (ratio = ``(action + 1) / 2 * max_ratio``).
        history: One dict per generation: ``generation``, ``mean`` and ``std`` (before the update), ``fitness``
            (per candidate, averaged over its episodes), ``mean_fitness`` (fitness of the current mean, evaluated
            as candidate 0 when ``include_mean``; NaN otherwise), ``elite_fitness`` (mean over elites), ``seeds``.
        num_sources: ``G``, the sources of the env searched (1: vectors without a source axis).
    """

    mean_action: np.ndarray
    best_action: np.ndarray
    best_fitness: float
    max_ratio: float
    history: list[dict] = field(default_factory=list)
    num_sources: int = 1

    @property
    def is_schedule(self) -> bool:
        """Whether the vectors are knot schedules (a leading knot axis)."""
        return np.ndim(self.mean_action) == (1 if self.num_sources == 1 else 2) + 1

    @property
    def mean_ratios(self) -> np.ndarray:
        """The ratios of :attr:`mean_action`."""
        return action_to_ratio(self.mean_action, self.max_ratio)

    @property
    def best_ratios(self) -> np.ndarray:
        """The ratios of :attr:`best_action`."""
        return action_to_ratio(self.best_action, self.max_ratio)


def _split_kwargs(env_kwargs, dataset, source, fitness_split: str = "val") -> tuple[dict, object, object]:
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of SyntheticRatioEnv keyword arguments; got "
                         f"{type(env_kwargs).__name__}")
    kw = dict(env_kwargs)
    dataset = kw.pop("dataset", None) if dataset is None else dataset
    source = kw.pop("source", None) if source is None else source
    kw.pop("dataset", None)
    kw.pop("source", None)
    # The objective is the final balanced val accuracy; the test split is never read during the search.
    kw.update(reward="accuracy", eval_split=None)
    if fitness_split == "test":  # a CEILING search only (see cem_search's fitness_split): never a method's row
        kw.update(eval_split="test")
    elif fitness_split != "val":
        raise ValueError(f"fitness_split={fitness_split!r} is invalid: use 'val' (every method) or 'test' (a ceiling)")
    return kw, dataset, source


def _check_int(name: str, value, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} is invalid: use an integer >= {low}")
    return int(value)


def _check_real(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}={value!r} is invalid: use a number in {bracket}{low:g}, {high:g}]")
    return float(value)


def resolve_init_mean(init_mean, venv) -> np.ndarray:
    """The starting mean as an action vector ``(C,)`` (``(C, G)`` with ``G >= 2`` sources): ``None`` (all ratios at
    ``max_ratio / 2``), an action array, a baseline spec string (``"inverse"``, ``"fill"``, ``"constant:1"``, ...;
    with several sources also ``"fill@augment"``, ``"fill@1"`` or the equal mix ``"fill@mix"``; a plain name is on
    source 0) or a :class:`RatioBaseline`."""
    from tailmix.agents.baselines import make_baseline

    core = venv.core
    c, g = core.c, core.g
    shape = (c,) if g == 1 else (c, g)
    if init_mean is None:
        return np.zeros(shape, np.float64)
    if isinstance(init_mean, str):
        init_mean = make_baseline(init_mean)
    if isinstance(init_mean, RatioBaseline):
        view = _CountsView(core.train_counts, core.config.max_ratio, core.source_names)
        ratios = init_mean.ratios(view)
        if g > 1:
            ratios = _on_sources(ratios, view, init_mean)
        a = core.ratio_to_action(ratios).astype(np.float64)
        if a.shape != shape:
            raise ValueError(f"init_mean={init_mean!r} sets actions of shape {a.shape} but this env's are {shape} "
                             "(classes" + (")" if g == 1 else " x sources)") + "; start from a vector of this env")
        return a
    if isinstance(init_mean, Policy):
        raise ValueError(f"init_mean={init_mean!r} does not set a fixed ratio vector; pass a RatioBaseline "
                         "(none, constant:<r>, fill, inverse), a spec string, or an action array")
    try:
        a = np.asarray(init_mean, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"init_mean must be None, a baseline spec, a RatioBaseline or {c} numbers in [-1, 1]; "
                         f"got {type(init_mean).__name__}") from None
    if a.shape != shape or not np.isfinite(a).all() or (np.abs(a) > 1).any():
        if g == 1:
            raise ValueError(f"init_mean must be {c} finite actions in [-1, 1] (one per class); got shape "
                             f"{a.shape} with values {a.tolist()}. Convert ratios with env.ratio_to_action")
        raise ValueError(f"init_mean must be {shape} finite actions in [-1, 1] (classes x sources: "
                         f"{', '.join(core.source_names)}); got shape {a.shape}. Convert ratios with "
                         "env.ratio_to_action, or start from a spec such as 'fill@mix'")
    return a


def _on_sources(ratios: np.ndarray, view, policy) -> np.ndarray:
    """A fixed policy's ratios as ``(C, G)``: already per source, or its ``(C,)`` on its ``@`` source (or mix)."""
    from tailmix.agents.policy import spread_ratios

    if np.ndim(ratios) == 2:
        if np.shape(ratios)[1] != view.num_sources or policy.source is not None:
            raise ValueError(f"{policy!r} sets {np.shape(ratios)[1]} source(s) per class but the env has "
                             f"{view.num_sources}; start from a vector of this env")
        return ratios
    return spread_ratios(ratios, view, policy.source)


def resolve_init_knots(init_mean, venv, knots: int) -> np.ndarray:
    """The starting ``(K, C)`` knots (``(K, C, G)`` with ``G >= 2`` sources) of a schedule search: a schedule spec
    (``"decay:fill"``, ``"decay:fill@mix"``) or :class:`SchedulePolicy` (its actions at the knots' fractions), a
    ``(K, C)`` / ``(K, C, G)`` array, or any static start of :func:`resolve_init_mean` at every knot."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.schedules import KINDS, SchedulePolicy

    core = venv.core
    g = core.g
    shape = (core.c,) if g == 1 else (core.c, g)
    if isinstance(init_mean, str) and init_mean.strip().lower().partition(":")[0] in KINDS:
        init_mean = make_baseline(init_mean)
    if isinstance(init_mean, SchedulePolicy):
        view = _CountsView(core.train_counts, core.config.max_ratio, core.source_names)
        view.possible_agents = [f"class_{i}" for i in range(core.c)]  # what KnotSchedule checks
        if g == 1:
            return np.stack([core.ratio_to_action(init_mean.ratios_at(view, f)) for f in np.linspace(0, 1, knots)]
                            ).astype(np.float64)
        return np.stack([core.ratio_to_action(_on_sources(init_mean.ratios_at(view, f), view, init_mean))
                         for f in np.linspace(0, 1, knots)]).astype(np.float64)
    if init_mean is not None and not isinstance(init_mean, (str, Policy)):
        a = np.asarray(init_mean, np.float64)
        if a.ndim == len(shape) + 1:
            if a.shape != (knots, *shape) or not np.isfinite(a).all() or (np.abs(a) > 1).any():
                what = "knots x classes" if g == 1 else "knots x classes x sources"
                raise ValueError(f"init_mean must be {(knots, *shape)} finite actions in [-1, 1] ({what}); "
                                 f"got shape {a.shape}")
            return a
    return np.tile(resolve_init_mean(init_mean, venv), (knots,) + (1,) * len(shape))


class _CountsView:
    """What :meth:`RatioBaseline.ratios` and the source placement read, without building a single env."""

    def __init__(self, train_counts, max_ratio, source_names=("source0",)) -> None:
        self.train_counts = np.asarray(train_counts)
        self.max_ratio = float(max_ratio)
        self.source_names = tuple(source_names)
        self.num_sources = len(self.source_names)


def evaluate_actions(venv, actions: np.ndarray, seeds: list[int], fitness_split: str = "val") -> np.ndarray:
    """Final-step val fitness of every action vector under every episode seed, in one batched run.

    Args:
        venv: A :class:`SyntheticRatioVectorEnv` with ``num_envs == len(actions) * len(seeds)``, built with
            ``reward="accuracy"`` (see :func:`make_search_env`).
        actions: ``(N, C)`` actions held fixed for the whole episode, or ``(N, K, C)`` knot schedules
            (:func:`agents.schedules.schedule_actions` gives each step's actions); with ``G >= 2`` sources
            ``(N, C, G)`` or ``(N, K, C, G)``.
        seeds: Episode seeds, shared by all actions (common random numbers).
        fitness_split: ``"val"``: the final rewards. ``"test"``: the final TEST balanced accuracy (the env must be
            built with ``fitness_split="test"``); only for a ceiling that no method may train on.

    Returns:
        ``(N, len(seeds))`` final rewards (or test balanced accuracies).
    """
    from tailmix.agents.schedules import schedule_actions

    actions = np.asarray(actions, np.float32)
    n, e = len(actions), len(seeds)
    assert venv.num_envs == n * e, (venv.num_envs, n, e)
    venv.reset(seed=[int(s) for s in seeds] * n)
    batch = np.repeat(actions, e, axis=0)  # copy i*e + j plays action i with seed j
    reward = None
    max_steps = venv.core.config.max_steps
    action_ndim = 1 if venv.core.g == 1 else 2  # one step's action: (C,) or (C, G)
    for step in range(max_steps):
        if batch.ndim == action_ndim + 2:  # knot schedules
            now = schedule_actions(batch, step, max_steps, action_ndim=action_ndim)
        else:
            now = batch
        _, reward, _, truncated, infos = venv.step(now)
    assert truncated.all()
    if fitness_split == "test":
        reward = infos["test"]["balanced_accuracy"]
    return np.asarray(reward, np.float64).reshape(n, e)


def make_search_env(num_envs: int, env_kwargs: dict, dataset=None, source=None, fitness_split: str = "val"):
    """A batched env for the search: ``env_kwargs`` with ``reward="accuracy"`` and no test split (with
    ``fitness_split="test"``: test metrics at the last step, for a ceiling search only)."""
    from tailmix.envs.vector import SyntheticRatioVectorEnv

    kw, dataset, source = _split_kwargs(env_kwargs, dataset, source, fitness_split)
    return SyntheticRatioVectorEnv(num_envs, dataset, source, **kw)


def val_fitness(actions, env_kwargs: dict, seeds, dataset=None, source=None) -> np.ndarray:
    """Final balanced val accuracy (the search's fitness) of fixed action vectors over ``seeds``.

    Used to compare a found vector with the fixed baselines on the same footing as the search (and on seeds it
    never saw). ``actions``: ``(N, C)`` or ``(N, K, C)`` (a single ``(C,)`` vector too); with ``G >= 2`` sources
    ``(N, C, G)`` or ``(N, K, C, G)`` (a single ``(C, G)`` too). Returns ``(N, len(seeds))``.
    """
    from tailmix.envs.sources import source_specs

    kw = env_kwargs if isinstance(env_kwargs, dict) else {}
    g = len(source_specs(kw.get("source") if source is None else source, kw.get("sources")))
    actions = np.asarray(actions, np.float32)
    actions = np.atleast_2d(actions) if g == 1 else (actions[None] if actions.ndim == 2 else actions)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("val_fitness() got no seeds; pass e.g. seeds=range(100, 110)")
    venv = make_search_env(len(actions) * len(seeds), env_kwargs, dataset, source)
    if g == 1 and actions.shape[-1] != venv.core.c:
        raise ValueError(f"actions have {actions.shape[-1]} entries but the dataset has {venv.core.c} classes")
    if g > 1 and (actions.ndim not in (3, 4) or actions.shape[-2:] != (venv.core.c, g)):
        raise ValueError(f"actions have shape {actions.shape} but this env sets ({venv.core.c}, {g}) per step "
                         "(classes x sources): pass (N, C, G) vectors or (N, K, C, G) knot schedules")
    return evaluate_actions(venv, actions, seeds)


def cem_search(env_kwargs: dict, dataset=None, source=None, *, generations: int = 10, population: int = 16,
               elite_frac: float = 0.25, episodes_per_candidate: int = 1, seed: int = 0, init_mean=None,
               init_std: float = 0.5, min_std: float = 0.1, smoothing: float = 0.7, include_mean: bool = True,
               progress: bool = False, knots: int | None = None, fitness_split: str = "val") -> CEMResult:
    """Search a static per-class action vector (or a schedule) that maximises the final balanced val accuracy.

    With ``G >= 2`` sources in ``env_kwargs`` (``sources=[...]``) every source's ratio of every class is searched:
    vectors ``(C, G)``, or ``(K, C, G)`` with ``knots=K``.

    Args:
        env_kwargs: ``SyntheticRatioEnv`` keyword arguments (feature mode). ``dataset`` and ``source`` may be in
            it; ``reward`` is forced to ``"accuracy"`` and ``eval_split`` to ``None``.
        dataset: Overrides ``env_kwargs["dataset"]``.
        source: Overrides ``env_kwargs["source"]``.
        generations: CEM iterations (>= 1).
        population: Candidates per generation (>= 2), all evaluated in one batched run.
        elite_frac: Fraction of the population kept as elites, in ``(0, 1]`` (at least one elite).
        episodes_per_candidate: Episodes (seeds) per candidate; the fitness is their mean. More lowers val noise
            from the classifier's initialisation and the synthetic draws, not the val split's own sampling noise.
        seed: Seeds the Gaussian sampling and the episode seeds (a run repeats exactly).
        init_mean: Starting mean: ``None`` (ratio ``max_ratio / 2`` everywhere, on every source), an action array
            (``(C,)``; ``(C, G)`` with several sources), a baseline spec (``"inverse"``; with several sources also
            ``"fill@augment"`` or the equal mix ``"fill@mix"``) or a :class:`RatioBaseline`, to search around the
            best fixed policy.
        init_std: Starting std of every action coordinate (action units; the action box has width 2).
        min_std: Floor on the std after each update, so the search keeps exploring (plain CEM shrinks its std
            faster than its mean travels: with 0.05 a mean 0.9 away stalled halfway in 15 generations).
        smoothing: Weight of the elite statistics in each update (1: replace; smaller: move part of the way).
        include_mean: Evaluate the current mean as candidate 0 of every generation (its fitness is logged and
            it can be an elite), so the log shows how good the vector being recommended is.
        progress: Show a tqdm bar over generations.
        knots: ``None`` (default): a static vector. ``K >= 2``: a schedule, per-class actions at ``K`` knots over
            the episode, linearly interpolated (``K * C`` numbers searched; ``K * C * G`` with sources). ``init_mean``
            may then also be a schedule spec (``"decay:fill"``, ``"decay:fill@mix"``) or a ``(K, C)`` (``(K, C, G)``)
            array; a static start is held at every knot.
        fitness_split: ``"val"`` (default; every method): the val reward. ``"test"``: the final TEST balanced
            accuracy, which makes the result a CEILING (how far the action space reaches on test), never a method;
            label its row as such (``benchmarks/leaderboard.py``).

    Returns:
        A :class:`CEMResult` (vectors ``(K, C)`` for a schedule search; ``(C, G)`` / ``(K, C, G)`` with sources).
    """
    generations = _check_int("generations", generations, 1)
    population = _check_int("population", population, 2)
    episodes = _check_int("episodes_per_candidate", episodes_per_candidate, 1)
    seed = _check_int("seed", seed, 0)
    elite_frac = _check_real("elite_frac", elite_frac, 0.0, 1.0, low_open=True)
    init_std = _check_real("init_std", init_std, 0.0, 2.0, low_open=True)
    min_std = _check_real("min_std", min_std, 0.0, 2.0)
    smoothing = _check_real("smoothing", smoothing, 0.0, 1.0, low_open=True)
    if min_std > init_std:
        raise ValueError(f"min_std={min_std:g} is above init_std={init_std:g}; lower min_std or raise init_std")
    if knots is not None:
        knots = _check_int("knots", knots, 2)
    n_elite = max(1, int(round(elite_frac * population)))
    venv = make_search_env(population * episodes, env_kwargs, dataset, source, fitness_split)
    mean = resolve_init_mean(init_mean, venv) if knots is None else resolve_init_knots(init_mean, venv, knots)
    shape = mean.shape  # (C,), (K, C), (C, G) or (K, C, G): the Gaussian is over the flattened vector
    mean = mean.reshape(-1)
    c = len(mean)
    std = np.full(c, init_std)
    rng = np.random.default_rng(seed)
    history: list[dict] = []
    best_action, best_fitness = mean.astype(np.float32).reshape(shape), -math.inf
    from tqdm.auto import trange

    for g in trange(generations, desc="cem", disable=not progress):
        # float32 candidates: exactly the actions a policy will later play in the single env.
        cand = np.clip(mean + std * rng.standard_normal((population, c)), -1.0, 1.0).astype(np.float32)
        if include_mean:
            cand[0] = np.clip(mean, -1.0, 1.0).astype(np.float32)
        ep_seeds = [int(s) for s in rng.integers(0, _SEED_BOUND, episodes)]
        # (the split is passed only when it is not the default, so a scorer with the plain 3-argument signature fits)
        split = {"fitness_split": "test"} if fitness_split == "test" else {}
        fit = evaluate_actions(venv, cand.reshape(population, *shape), ep_seeds, **split).mean(1)
        # Stable sort on -fitness: ties keep candidate order, so a run repeats exactly.
        order = np.argsort(-fit, kind="stable")
        elites = cand[order[:n_elite]].astype(np.float64)
        history.append({"generation": g, "mean": mean.astype(np.float32).copy(), "std": std.copy(),
                        "fitness": fit.copy(), "mean_fitness": float(fit[0]) if include_mean else float("nan"),
                        "elite_fitness": float(fit[order[:n_elite]].mean()), "seeds": ep_seeds})
        if fit[order[0]] > best_fitness:
            best_fitness, best_action = float(fit[order[0]]), cand[order[0]].reshape(shape).copy()
        mean = (1 - smoothing) * mean + smoothing * elites.mean(0)
        std = np.maximum((1 - smoothing) * std + smoothing * elites.std(0), min_std)
    venv.close()
    return CEMResult(mean_action=np.clip(mean, -1, 1).astype(np.float32).reshape(shape), best_action=best_action,
                     best_fitness=best_fitness, max_ratio=float(venv.core.config.max_ratio), history=history,
                     num_sources=venv.core.g)


class CEMPolicy(RatioBaseline):
    """Plays a fixed action vector found by :func:`cem_search` (the same at every step), like a fixed baseline.

    Args:
        action: ``(C,)`` actions in ``[-1, 1]``, or ``(C, G)``: one per class and source (a search over ``G``
            sources; it plays every source's ratio, in an env with the same ``G`` sources).
        max_ratio: The ``max_ratio`` of the env the search ran in (``ratio = (action + 1) / 2 * max_ratio``).
        name: Label for tables.
    """

    def __init__(self, action, max_ratio: float, name: str = "cem") -> None:
        a = np.asarray(action, np.float64)
        if a.ndim not in (1, 2) or not a.size or not np.isfinite(a).all() or (np.abs(a) > 1).any():
            raise ValueError(f"action must be a 1-D vector (or a (classes, sources) array) of finite numbers in "
                             f"[-1, 1]; got {a.tolist()}")
        self.action = a.astype(np.float32)
        self.max_ratio = _check_real("max_ratio", max_ratio, 0.0, math.inf, low_open=True)
        self.name = name

    @classmethod
    def from_result(cls, result: CEMResult, which: str = "mean", name: str | None = None) -> "CEMPolicy":
        """The policy of ``result.mean_action`` (``which="mean"``, recommended) or ``result.best_action``."""
        if which not in ("mean", "best"):
            raise ValueError(f"which={which!r} is invalid: use 'mean' or 'best'")
        action = result.mean_action if which == "mean" else result.best_action
        if result.is_schedule:  # a schedule search: per-class actions at knots over the episode
            from tailmix.agents.schedules import KnotSchedule

            return KnotSchedule(action, result.max_ratio, name=name or f"cem schedule ({which})")
        return cls(action, result.max_ratio, name=name or f"cem ({which})")

    @property
    def num_sources(self) -> int:
        """``G`` of the vector (1 for a ``(C,)`` vector)."""
        return 1 if self.action.ndim == 1 else self.action.shape[1]

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        if len(train_counts) != len(self.action):
            raise ValueError(f"this CEM vector has {len(self.action)} classes but the env has {len(train_counts)}; "
                             "search again on this dataset")
        return action_to_ratio(self.action, self.max_ratio)

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        g = int(getattr(env, "num_sources", 1))
        if self.action.ndim == 2:  # every source's ratio of every class
            if float(env.max_ratio) != self.max_ratio or self.source is not None or self.action.shape[1] != g:
                return super().act(observations, env)  # re-expressed at the env's scale (or a clear error)
            self.raw_ratios(np.asarray(env.train_counts))  # class-count check
            index = {a: i for i, a in enumerate(env.possible_agents)}
            return {a: self.action[index[a]].copy() for a in env.agents}
        if float(env.max_ratio) != self.max_ratio or g > 1 or self.source is not None:
            # another scale, or several sources: the same ratios, re-expressed as actions (on the target source)
            return super().act(observations, env)
        self.raw_ratios(np.asarray(env.train_counts))  # class-count check
        index = {a: i for i, a in enumerate(env.possible_agents)}
        return {a: self.action[index[a]].reshape(1) for a in env.agents}
