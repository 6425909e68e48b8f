"""The suite protocol's numbers as data (``docs/protocol.md`` says what they mean and why).

Changing anything here is a new protocol version: bump :data:`PROTOCOL_VERSION`, say so in
``docs/protocol.md``, and run the reference rows again.
"""
from __future__ import annotations

PROTOCOL_VERSION = 1

#: Evaluation episode seeds: every policy is scored on these (rows are paired by episode).
EVAL_SEEDS = (1000, 1001, 1002, 1003, 1004)
#: Pixel-mode replay seeds.
PIXEL_SEEDS = (1000, 1001, 1002)
#: Method seeds of every learned method (independent searches / trainings).
METHOD_SEEDS = (0, 1, 2, 3, 4)

#: The long-tail losses of the feature head; the task loss is the best no-synthetic row on the reward.
LT_LOSSES = ("logit_adjustment", "balanced_softmax", "class_balanced")
#: Static shapes of the fixed family (``agents.baselines.make_baseline`` specs).
STATIC_SHAPES = ("none", "constant:0.5", "constant:1", "constant:2", "constant:4", "constant:8", "fill",
                 "inverse", "inverse:0.5", "inverse:2")
#: Schedules of the fixed family.
SCHEDULES = tuple(f"{kind}:{base}" for kind in ("decay", "warmup", "early", "late")
                  for base in ("constant:1", "fill", "inverse"))

#: CEM budgets (generations, population, episodes per candidate) and the schedule's knots.
CEM = {"generations": 10, "population": 16, "episodes": 2, "knots": 3}
#: The ceiling search's budget (test fitness, continuing from seed 0's val search).
CEILING = {"generations": 10, "population": 16, "episodes": 2}

#: SB3 methods: algorithm, wrapper, training-env settings, timesteps on digits tasks / on MedMNIST tasks.
SB3_METHODS = {
    "ppo-central": {"algo": "ppo", "wrapper": "central", "env": {"reward_reference": 0.0},
                    "timesteps": {"digits": 80_000, "medmnist": 20_000}},
    "ppo-shared": {"algo": "ppo", "wrapper": "shared", "env": {"credit": "difference", "reward_replicas": 4},
                   # amendment 1: difference credit does not support several sources; pool tasks use this instead
                   "env_pool": {"reward_reference": 0.0, "reward_replicas": 4},
                   "timesteps": {"digits": 100_000, "medmnist": 20_000}},
    "sac-central": {"algo": "sac", "wrapper": "central", "env": {"reward_reference": 0.0},
                    "timesteps": {"digits": 20_000, "medmnist": 20_000}},
}


def train_env(method: str, num_sources: int) -> dict:
    """The training-env settings of an SB3 method on a task with ``num_sources`` sources (amendment 1)."""
    spec = SB3_METHODS[method]
    return dict(spec["env_pool"] if num_sources > 1 and "env_pool" in spec else spec["env"])


#: Every learned method, in table order.
LEARNED = ("cem-static", "cem-schedule", *SB3_METHODS)

#: The transfer track: PPO shared without the class id, trained on ``source``, scored zero-shot on ``target``.
TRANSFER = {"source": "RetinaMNISTLTPool", "target": "BreastMNISTLTPool", "method": "ppo-shared",
            "seeds": (0, 1, 2), "timesteps": 20_000}

#: The fidelity gate (amendment 2): fresh episode seeds, fixed-family members at evenly spaced reward ranks, the
#: Spearman threshold, the level of the paired interval that resolves a pair.
FIDELITY = {"seeds": tuple(range(2000, 2020)), "fixed_members": 8, "threshold": 0.8, "level": 0.95}

#: Bootstrap resamples and level of every interval.
BOOT_REPS = 2000
LEVEL = 0.95
