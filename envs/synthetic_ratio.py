"""``tailmix/SyntheticRatio-v0``: one agent per class sets how much synthetic data its class gets."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

from tailmix.envs.views import RENDER_METADATA, SingleCopyViews, as_action_array, class_infos, render_frame


class SyntheticRatioEnv(SingleCopyViews, ParallelEnv):
    """Synthetic-to-real ratio control for long-tailed image classification.

    ## Description
    A classifier is trained on a long-tailed real training set mixed with synthetic images (diffusion
    samples from an on-disk bank, or classic augmentations). Each class is an agent that chooses how many
    synthetic images its class gets, as a ratio to its real count. Every step trains the classifier for a few
    more epochs on the chosen mix and scores it on the validation split. The agents share one reward, the
    balanced validation accuracy, so they must cooperate: more data for a tail class can cost a head class.
    The test split is never used for rewards.

    ## Observation Space
    Per agent, ``Box(float32, (8 + C,))`` with one source (v0): the class's validation recall, precision and
    F1; its log share of real training images; its current ratio divided by ``max_ratio``; the quality of its
    synthetic pool (filter acceptance rate, 1.0 when unfiltered); the global balanced validation accuracy; the
    progress ``t / max_steps``; and a one-hot class id, so that one shared policy can tell the agents apart.
    ``state()`` concatenates every agent's row, for centralised critics.

    With ``G`` sources and ``pool_obs`` the row is ``Box(float32, (6 + 2G + P + C,))``, ``P = G`` with
    ``pool_obs`` (else 0): recall, precision, F1, log real share, ``G`` ratio columns (one per source,
    ``/ max_ratio``), ``G`` pool-quality columns, balanced accuracy, progress, ``P`` pool-fraction columns
    (``min(1, pool size / (max_ratio * n_real))``, per source), then the one-hot id. ``observation_columns``
    names them (``ratio@<source>`` ... when ``G > 1``); its length is the width. The columns are one table,
    ``envs.observation.COLUMNS`` (name, span, writer, bounds), from which spaces, names and values all come.

    ``class_id_obs=False`` drops the one-hot id: the row is the per-class statistics only (``8`` columns with one
    source and no ``pool_obs``), the same width for any number of classes, so one shared policy fits any dataset.

    ## Action Space
    Per agent, ``Box(-1, 1, (G,), float32)`` (``G = 1``: v0's ``(1,)``), entry ``g`` mapped affinely to the
    class's ratio for source ``g`` in ``[0, max_ratio]``: ``ratio = (a + 1) / 2 * max_ratio``. The ratios of the
    sources add up: a step draws ``round(ratio_g * n_real_c)`` synthetic samples of class ``c`` from source
    ``g``'s pool, for every ``g``, with the env's RNG (``draw="replace"``: with replacement only beyond the pool
    size; ``draw="unique"``: never beyond it, the rest reported as ``shortfall``). Out-of-range values are
    clipped; NaN, inf, wrong shapes and missing or unknown agents raise ``ValueError``.

    ## Rewards
    Shared by all agents by default (``credit="shared"``). ``reward="accuracy"`` (default): balanced
    validation accuracy after the step; ``"delta"``: its improvement over the step; ``"final"``: 0 until the
    last step, then the balanced accuracy. ``synthetic_cost`` subtracts ``cost * n_synthetic / n_real`` (a
    generation budget). ``reward_reference=r`` scores against a head trained at ratio ``r`` instead.

    ``credit="difference"`` (feature mode) gives each agent its own difference reward (Wolpert & Tumer):
    the balanced accuracy minus that of a counterfactual head trained on the same mixes except class ``c`` at
    ratio ``credit_default`` (default 0), from the same initial weights and with the same synthetic draws
    for every other class (common random numbers); the counterfactual heads persist over the episode, like
    the classifier. ``"delta"`` and ``"final"`` apply to that difference, and ``synthetic_cost`` charges
    class ``c`` only for its own samples beyond the default's. A class kept at the default ratio gets exactly
    0. The infos then also carry ``team_reward`` (what ``credit="shared"`` would give every agent) and
    ``counterfactual_balanced_accuracy``; ``balanced_accuracy`` is always the shared one.

    ``val_folds=k >= 2`` makes the reward cross-validated: train and val are pooled and split once, stratified
    by class, into ``k`` folds (fixed by ``source_seed``); each episode draws its held-out fold from its reset
    seed, trains on the other ``k - 1`` folds (``n_real``, the log real share and the synthetic counts are that
    episode's) and is observed and rewarded on the held-out fold (``infos["val_fold"]``). The test split never
    enters. Default ``1``: the fixed val split.

    ## Starting State
    ``reset(seed)`` re-initialises the classifier (a fresh head in feature mode, a fresh CNN in pixel mode)
    from the seed and sets every ratio to ``initial_ratio``; the first observation scores that untrained
    classifier. Two envs reset with the same seed and given the same actions produce identical trajectories.

    ## Episode End
    After ``max_steps`` steps every agent is truncated (there is no termination). The infos of the last step
    carry test metrics under ``"test"`` when the env was made with ``eval_split="test"``.

    ## Arguments
    ``dataset`` (a ``LongTailDataset`` or a spec such as ``"digits"``, a MedMNIST flag, an ``.npz`` path or an
    image folder), ``source`` (an ``envs.sources`` source, a ``generators.bank.SyntheticBank``, ``"augment"``,
    ``"gaussian"`` for feature-space virtual samples, or ``None`` for classic augmentations) or ``sources``
    (a list of ``G >= 1`` such specs, the pool as an action; not both), ``draw`` and ``pool_obs``, and the keyword
    settings of :class:`envs.config.RatioEnvConfig` (``mode``, ``max_steps``, ``max_ratio``, ``reward``,
    ``synthetic_cost``, ``credit``, ``credit_default``, ``eval_split``, ``epochs_per_step``, ``head``, ``loss``,
    ``encoder``, ...).
    ``max_cycles`` is an alias of ``max_steps`` (PettingZoo's convention).

    ## Version History
    * v0: initial release. Later additions that leave the default behaviour unchanged: ``reward_reference``,
      ``credit="difference"`` / ``credit_default`` (per-agent difference rewards; off by default), encoders
      ``crossfit_joint`` and ``crossfit_augment``, ``val_folds`` (cross-validated reward; default 1 = off),
      ``reward_replicas > 1`` in pixel mode (the replicas' CNNs trained as one grouped network, ``envs.pixel_batched``). The feature-step rewrite for speed (fused Adam, bias-augmented
      GEMMs) computes the same quantities; floating-point results differ at rounding level only.
      Pixel mode (not the default) changed before any release: an episode is now one training run (one AdamW
      kept over the episode, cosine learning-rate decay to near 0 by the last step) instead of a new AdamW at
      a constant rate every step, and an epoch is ``n_real`` samples of the mix whatever the action (compute
      matched: a larger mix no longer buys extra gradient steps). Pixel results made before this change are
      not comparable with later ones. ``sources`` (several pools), ``draw`` and ``pool_obs`` were added with
      v1; their v0 defaults (one source, ``draw="replace"``, ``pool_obs=False``) keep v0's spaces and numbers.
      Step infos gained ``shortfall``, ``source_ratios``, ``source_counts`` and ``pool_sizes`` per class.
      Step infos hold numbers and ``(G,)`` arrays only, sliced from ``RatioCore.infos`` (every framework batches
      them): ``class_name`` left them for :attr:`class_names` (and :meth:`per_class_info`). ``class_id_obs``
      (default ``True``, the one-hot id as before; ``False`` drops it) added later, in v0 and v1 alike.
      ``render_mode="rgb_array"`` (ratio and recall bars per class) and ``metadata["render_fps"]`` added.
    * v1 (``tailmix/SyntheticRatio-v1``): the same class with ``envs.config.V1_DEFAULTS``: ``draw="unique"``
      (a filtered pool of one image is served once per step, not hundreds of times) and ``pool_obs=True``
      (per-source pool-size columns in the observation). Accepts ``sources`` like v0.
    """

    metadata = {"name": "tailmix/SyntheticRatio-v0", **RENDER_METADATA, "is_parallelizable": True}

    def __init__(self, dataset=None, source=None, *, sources=None, max_cycles: int | None = None,
                 render_mode: str | None = None, **kwargs) -> None:
        if max_cycles is not None:
            kwargs["max_steps"] = max_cycles
        self._build(dataset, source, render_mode, kwargs, sources=sources)
        c, g = self.core.c, self.core.g
        self.possible_agents = [f"class_{i}" for i in range(c)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_spaces = {a: spaces.Box(self.core.obs_low[i], self.core.obs_high[i], dtype=np.float32)
                            for i, a in enumerate(self.possible_agents)}
        self._act_spaces = {a: spaces.Box(-1.0, 1.0, (g,), np.float32) for a in self.possible_agents}
        self.state_space = spaces.Box(self.core.obs_low.ravel(), self.core.obs_high.ravel(), dtype=np.float32)
        self._last_infos: dict = {}

    # -- spaces ------------------------------------------------------------------------------
    # Built once per env in __init__ (PettingZoo wants the same object on every call); no lru_cache on the
    # methods, whose class-level cache would keep every env ever built alive.
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self._act_spaces[agent]

    # -- API ---------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        self.core.reset([0], [seed])
        self.agents = self.possible_agents[:]
        obs = self._observations()
        infos = self._infos(step=False)
        self._last_infos = infos
        return obs, infos

    def step(self, actions: dict):
        if not self.core.started[0]:
            raise RuntimeError("step() called before reset(); call env.reset(seed=...) first")
        if not self.agents:
            raise RuntimeError("step() called after the episode ended (all agents truncated); call reset()")
        ratios = self._parse_actions(actions)
        out = self.core.step(ratios[None])
        agent_reward = out["agent_reward"][0]
        done = bool(self.core.done[0])
        obs = self._observations()
        infos = self._infos(step=True)
        if done and self.config.eval_split == "test":
            test = self.core.test_report(0)
            for info in infos.values():
                info["test"] = test
        rewards = {a: float(agent_reward[self._index[a]]) for a in self.agents}
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        self._last_infos = infos
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def _parse_actions(self, actions) -> np.ndarray:
        g = self.core.g
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict {{agent: array of shape ({g},)}}; got {type(actions).__name__}")
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise ValueError(f"unknown agent(s) {sorted(map(str, unknown))}; the agents are {self.possible_agents}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing action(s) for {missing}; every live agent must act each step")
        a = np.empty((self.num_classes, g), np.float64)
        for agent in self.possible_agents:
            v = as_action_array(actions[agent], f"action of {agent}")
            if v.shape != (g,) and not (g == 1 and v.shape == ()):
                what = "" if g == 1 else f" (one entry per source: {', '.join(self.core.source_names)})"
                raise ValueError(f"action of {agent} must have shape ({g},){what}; got {v.shape}")
            if not np.isfinite(v).all():
                raise ValueError(f"action of {agent} is {v}; actions must be finite numbers in [-1, 1]")
            a[self._index[agent]] = v.reshape(g)
        return self.core.action_to_ratio(a)

    def _infos(self, step: bool) -> dict:
        """Each agent's slice of the core's infos (numbers and ``(G,)`` arrays; names: :attr:`class_names`)."""
        arrays = self.core.infos(slice(0, 1), step=step)
        return dict(zip(self.possible_agents, class_infos(arrays)[0]))

    def _observations(self) -> dict:
        m = self.core.observation(0)
        return {a: m[i] for i, a in enumerate(self.possible_agents)}

    def state(self) -> np.ndarray:
        return self.core.observation(0).ravel()

    def render(self):
        if self.render_mode == "rgb_array":
            return render_frame(self.core)
        if self.render_mode != "ansi":
            return None
        lines = [f"step {int(self.core.t[0])}/{self.config.max_steps}  balanced val acc "
                 f"{self.core.metrics['balanced_accuracy'][0]:.3f}",
                 f"{'class':>14} {'n_real':>7} {'ratio':>6} {'recall':>7} {'f1':>6}"]
        for i, name in enumerate(self.dataset.class_names):
            lines.append(f"{name[:14]:>14} {int(self.core.copy_counts[0, i]):7d} {self.core.ratios[0, i]:6.2f} "
                         f"{self.core.metrics['recall'][0, i]:7.3f} {self.core.metrics['f1'][0, i]:6.3f}")
        return "\n".join(lines)

    def close(self) -> None:
        pass


def parallel_env(**kwargs) -> SyntheticRatioEnv:
    """The parallel (native) env."""
    return SyntheticRatioEnv(**kwargs)


def parallel_env_v1(**kwargs) -> SyntheticRatioEnv:
    """``tailmix/SyntheticRatio-v1``: the parallel env with ``envs.config.V1_DEFAULTS`` (keywords override them)."""
    from tailmix.envs.config import V1_DEFAULTS

    e = SyntheticRatioEnv(**{**V1_DEFAULTS, **kwargs})
    e.metadata = {**e.metadata, "name": "tailmix/SyntheticRatio-v1"}
    return e


def env_v1(**kwargs):
    """The AEC env of ``tailmix/SyntheticRatio-v1``."""
    return parallel_to_aec(parallel_env_v1(**kwargs))


def raw_env(**kwargs):
    """The AEC env without the order-enforcing wrapper."""
    return parallel_to_aec_wrapper(SyntheticRatioEnv(**kwargs))


def env(**kwargs):
    """The AEC env (``parallel_to_aec``, which adds PettingZoo's order enforcing)."""
    return parallel_to_aec(SyntheticRatioEnv(**kwargs))
