"""The main job's protocol: what ``python train_agents.py`` runs between the bank and the verdict.

The strongest protocol the benchmark suite found (``docs/protocol.md``, ``tailmix.suite.protocol``), sized to the
time budget:

- the reward: the fold reward (``val_folds=5``) where the val split follows the train class distribution, else the
  fixed val split (:func:`decide_val_folds`, decided from the data and printed);
- the loss: the best of cross-entropy and the long-tail losses on the reward with no synthetic data
  (:func:`pick_loss`; the suite's task loss);
- the fixed family (static shapes and schedules, per source and mixed) under that loss; its best member on the
  reward is where the CEM search starts;
- the learned methods (:data:`METHODS`): a CEM schedule over the whole pool action, PPO central with a ratio-0
  reference reward, PPO shared with the credit it needs (difference credit for one source; the ratio-0 reference and
  4 reward replicas for several, the suite's amendment 1).

Every pick reads the reward (val, or the held-out fold), never the test split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: The learned methods the main job trains by default (the suite's strongest; ``--methods`` picks others).
METHODS = ("cem-schedule", "ppo-central", "ppo-shared")
#: Methods the main job knows: CEM searches and SB3 ``<algo>-<wrapper>``.
CEM_METHODS = ("cem-schedule", "cem-static")
#: Total variation distance between the train and val class distributions below which the val split "follows" the
#: train distribution, so pooling train and val into folds keeps the reward's class mix (a stratified fold has the
#: pooled mix). A balanced val split beside a long-tailed train split is far above it.
FOLLOWS_TV = 0.1
#: Folds of the fold reward (the MedMNIST suite tasks use 5).
FOLDS = 5
#: Where learned methods other than the run's own ``--algo``/``--wrapper`` model keep their files in the run folder.
AGENTS = "agents"


def class_distribution_gap(dataset) -> float:
    """Total variation distance between the train and val class distributions of ``dataset``."""
    c = dataset.num_classes
    train = np.bincount(np.asarray(dataset.train_labels), minlength=c).astype(float)
    val = np.bincount(np.asarray(dataset.val_labels), minlength=c).astype(float)
    return float(0.5 * np.abs(train / train.sum() - val / max(val.sum(), 1.0)).sum())


def decide_val_folds(dataset) -> tuple[int, str]:
    """``(val_folds, the sentence saying why)``: :data:`FOLDS` when the val split follows the train class
    distribution (total variation below :data:`FOLLOWS_TV`), else 1 (the fixed val split)."""
    gap = class_distribution_gap(dataset)
    pooled = np.bincount(np.concatenate([dataset.train_labels, dataset.val_labels]).astype(np.int64),
                         minlength=dataset.num_classes)
    if gap < FOLLOWS_TV and pooled.min() < FOLDS:
        return 1, (f"reward: the fixed val split (val follows the train class distribution, total variation {gap:.2f}, "
                   f"but a class has {int(pooled.min())} images in train + val, fewer than {FOLDS} folds)")
    if gap < FOLLOWS_TV:
        return FOLDS, (f"reward: {FOLDS}-fold (val follows the train class distribution, total variation {gap:.2f} < "
                       f"{FOLLOWS_TV}: train and val are pooled into {FOLDS} stratified folds, a larger and less noisy "
                       "reward with the same class mix); --val-folds 1 keeps the fixed val split")
    return 1, (f"reward: the fixed val split (its class distribution differs from train's, total variation {gap:.2f} "
               f">= {FOLLOWS_TV}: pooling would change what the reward measures); --val-folds {FOLDS} pools them")


def parse_method(method: str) -> tuple[str, str | None]:
    """``"cem-schedule"`` -> ``("cem", "schedule")``, ``"ppo-central"`` -> ``("ppo", "central")``; ``ValueError``
    naming the choices otherwise."""
    from tailmix.agents.sb3 import ALGORITHMS

    if method in CEM_METHODS:
        return "cem", method.split("-")[1]
    algo, _, wrapper = method.partition("-")
    if algo in ALGORITHMS and wrapper in ("shared", "central"):
        return algo, wrapper
    raise ValueError(f"unknown --methods entry {method!r}; choose from {', '.join(CEM_METHODS)} or <algo>-<wrapper> "
                     f"with algo in {', '.join(ALGORITHMS)} and wrapper shared or central (e.g. ppo-central)")


def train_env(method: str, num_sources: int) -> dict:
    """The training-env settings of an SB3 method (``tailmix.suite.protocol.SB3_METHODS``, amendment 1 for a
    pool): the credit a shared policy needs, the ratio-0 reference reward for a central one."""
    from tailmix.suite.protocol import SB3_METHODS

    if method in SB3_METHODS:
        spec = SB3_METHODS[method]
        return dict(spec["env_pool"] if num_sources > 1 and "env_pool" in spec else spec["env"])
    _, wrapper = parse_method(method)
    if wrapper == "central":
        return {"reward_reference": 0.0}
    return {"reward_reference": 0.0, "reward_replicas": 4} if num_sources > 1 else \
        {"credit": "difference", "reward_replicas": 4}


def sb3_timesteps(method: str, timesteps: int, num_classes: int) -> int:
    """SB3 timesteps of ``method``: ``timesteps`` counts class-agent steps (the shared wrapper's), so a central
    method gets as many env steps (``timesteps / C``)."""
    _, wrapper = parse_method(method)
    return int(timesteps) if wrapper == "shared" else max(int(timesteps) // max(num_classes, 1), 128)


def pick_loss(kw: dict, seeds, losses=None, log=print) -> tuple[str, dict[str, float]]:
    """The loss of best mean reward with no synthetic data (cross-entropy on a tie), and every loss's reward."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.agents.evaluate import evaluate, make_eval_env
    from tailmix.suite.protocol import LT_LOSSES

    losses = ("ce", *LT_LOSSES) if losses is None else tuple(losses)
    reward = {}
    for loss in losses:
        k = dict(kw, loss=loss)
        rows = evaluate(make_baseline("none"), k, seeds=list(seeds), env=make_eval_env(k))
        reward[loss] = float(np.mean([r["val_balanced_accuracy"] for r in rows]))
    best = max(losses, key=lambda k: (round(reward[k], 12), k == "ce"))
    log("loss: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in reward.items())
        + f" (reward with no synthetic data): using {best}")
    return best, reward


def fixed_family(source_names: list[str]) -> list[str]:
    """The suite's fixed family for these sources (static shapes and schedules; per source and mixed)."""
    from tailmix.suite.runner import fixed_members

    return fixed_members(source_names)


def best_on_reward(rows: list[dict], labels, *, schedule: bool | None = None) -> str:
    """The label of best mean val score among ``labels`` (``schedule``: only schedules / only static shapes)."""
    from tailmix.suite.protocol import SCHEDULES

    def is_schedule(label):
        return label.partition("@")[0] in SCHEDULES

    pool = [k for k in labels if schedule is None or is_schedule(k) == schedule]
    val = {k: np.mean([r["val_balanced_accuracy"] for r in rows if r["policy"] == k]) for k in pool}
    return max(pool, key=lambda k: val[k])


def save_ratio_policy(path: Path, action, max_ratio: float, knots: int | None, name: str) -> Path:
    """A CEM result as a policy file ``load_ratio_policy`` (and ``evaluate --policy``) reads."""
    from tailmix.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"kind": "ratio-policy", "name": name, "knots": knots,
                                        "max_ratio": float(max_ratio),
                                        "action": np.asarray(action, np.float64).tolist()}, indent=1) + "\n")
    return path


def run_cem(kw: dict, method: str, *, init: str, seed: int, folder: Path, budget: dict | None = None):
    """CEM over the whole pool action from the fixed member ``init``; saved to ``folder/policy.json``.
    Returns ``(policy, spec)`` (the spec is the file's path)."""
    from tailmix.agents.cem import CEMPolicy, cem_search
    from tailmix.suite.protocol import CEM

    b = dict(CEM, **(budget or {}))
    knots = b["knots"] if method == "cem-schedule" else None
    res = cem_search(kw, generations=b["generations"], population=b["population"],
                     episodes_per_candidate=b["episodes"], seed=seed, init_mean=init, knots=knots)
    path = save_ratio_policy(Path(folder) / "policy.json", res.mean_action, res.max_ratio, knots, method)
    policy = CEMPolicy.from_result(res, name=method)
    return policy, str(path)


def main_methods(cfg, fixed=frozenset()) -> list[str]:
    """The learned methods of the main job: ``--methods``, or only ``--algo``-``--wrapper`` when those are given
    without it (the one-learner main job of earlier versions)."""
    if "methods" not in fixed and ({"algo", "wrapper"} & set(fixed)):
        return [f"{cfg.algo}-{cfg.wrapper}"]
    methods = list(dict.fromkeys(cfg.methods))
    for m in methods:
        parse_method(m)
    return methods
