"""Policies by spec: baselines (``none``, ``constant:R``, ...) and saved models (``model.zip``, ``ALGO:path``, an
RLlib checkpoint) behind one interface, with the checks that a saved model fits the env it is run in.

The one policy-spec grammar (the CLI, the suite and the benchmarks read specs through this module):

- a baseline spec of :func:`agents.baselines.make_baseline` (``fill``, ``constant:0.5``, ``decay:fill@mix``);
- a scaled fixed shape ``<shape> x <factor>`` (``fill x 0.5``: fill's ratios halved; :func:`fixed_policy`);
- a saved model: ``path/model.zip``, ``ALGO:path`` or an RLlib checkpoint folder (:func:`load_policy`);
- a row to train, ``ALGO:WRAPPER:VARIANT[:TIMESTEPS][@SEED]`` (``ppo:shared:difference:20000@1``) or
  ``cem:static`` / ``cem:schedule`` (:func:`parse_training_spec`; the benchmarks train it on the val reward).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailmix.agents.policy import RatioBaseline
from tailmix.runs import _read_json, _stored_config


# -- policies -----------------------------------------------------------------------------------
def _split_algo(spec: str) -> tuple[str | None, str]:
    """``"sac:path/model.zip"`` -> ``("sac", "path/model.zip")``; anything else -> ``(None, spec)``."""
    from tailmix.agents.sb3 import ALGORITHMS

    head, sep, rest = spec.partition(":")
    if sep and head.lower() in ALGORITHMS:
        return head.lower(), rest
    return None, spec


def _model_path(spec: str) -> Path | None:
    """The model file a policy spec names, or ``None`` for a baseline spec."""
    algo, rest = _split_algo(spec)
    path = Path(rest).expanduser()
    if algo is not None or rest.endswith(".zip") or path.exists() or os.sep in rest:
        return path
    return None


def model_info(path: Path) -> dict:
    """``algo`` and ``wrapper`` of a saved model: from ``agent.json`` beside it (written by ``agents.sb3.train``),
    else from the ``run.json`` there (its config); keys it cannot tell are missing."""
    meta = _read_json(path.parent / "agent.json")
    if meta is None:
        meta = _stored_config(path.parent) or {}
    return {k: meta[k] for k in ("algo", "wrapper") if meta.get(k) is not None}


def load_policy(spec: str, *, wrapper: str | None = None):
    """A baseline spec, or a saved policy (a path, or ``ALGO:path`` for an SB3 model) loaded by the backend whose
    checkpoint marker it carries (``tailmix.agents.backends``). What the run folder records about it (``algo``,
    ``wrapper``: :func:`model_info`) goes to the backend; ``ALGO:`` and ``wrapper`` override it."""
    from tailmix.agents.backends import backend_for

    if is_ratio_policy_file(spec):  # a CEM search's result the main job saved (agents/<method>/policy.json)
        return load_ratio_policy(spec)
    path = _model_path(spec)
    if path is None:
        return fixed_policy(spec)  # a baseline spec or a scaled shape (fill x 0.5)
    backend = backend_for(path)
    if backend is None:
        raise ValueError(f"no saved model at {path}; train one with `python train_agents.py train` (it writes "
                         "<run-dir>/model.zip)")
    info = model_info(path)
    prefix = _split_algo(spec)[0]
    if prefix:
        info["algo"] = prefix
    if wrapper:
        info["wrapper"] = wrapper
    return backend.load_policy(path, info)


def load_model_policy(spec: str, *, wrapper: str | None = None):
    """A saved policy (``path`` or ``ALGO:path``), never a baseline spec (see :func:`load_policy`)."""
    if _model_path(spec) is None:
        raise ValueError(f"no saved model at {spec}; train one with `python train_agents.py train` (it writes "
                         "<run-dir>/model.zip)")
    return load_policy(spec, wrapper=wrapper)


def _check_policy_fits(policy, dataset, label: str, sources: int = 1) -> None:
    """A learned policy's observation shape must match the env of ``dataset`` with ``sources`` synthetic sources
    (checked before any work)."""
    model = getattr(policy, "model", None)
    if model is None:
        return
    from tailmix.envs.observation import observation_width

    c = dataset.num_classes
    width = observation_width(c, sources)  # the CLI's env: the default config's columns (envs.observation.COLUMNS)
    want = (width,) if policy.wrapper == "shared" else (c, width)
    got = tuple(model.observation_space.shape)
    if got != want:
        raise ValueError(f"{label} observes {got}, but {dataset.name!r} ({c} classes) gives {want}: it was trained "
                         "on another dataset; pass the --dataset it was trained on")


def benchmark_specs(cfg) -> list[str]:
    """``--baselines``, plus each per-source variant (``fill@ddpm``, ...) and equal mix (``fill@mix``, ...) when
    several generators fill banks."""
    from tailmix.agents.baselines import baselines_for

    kinds = cfg.generator_kinds
    specs = list(cfg.baselines)
    if len(kinds) > 1 and cfg.source == "bank":
        specs += [s for s in baselines_for(kinds) if "@" in s and s not in specs]
    return specs


def load_policies(specs: list[str], *, learned: list[str] = ()) -> dict:
    """``{label: policy}`` for baseline specs and saved models (labelled ``learned:<run folder>``)."""
    policies = {spec: load_policy(spec) for spec in specs}
    for spec in learned:
        label, k = _learned_label(spec), 2
        while label in policies:
            label, k = f"{_learned_label(spec)}-{k}", k + 1
        policies[label] = load_model_policy(spec)
    return policies


def _learned_label(spec: str) -> str:
    """``learned:<the model's run folder>``: how tables name a saved model."""
    return "learned:" + Path(_split_algo(spec)[1]).expanduser().resolve().parent.name


# -- fixed shapes and rows to train --------------------------------------------------------------------------------
#: The separator of a scaled fixed shape: ``fill x 0.5``.
SCALE = " x "


class ScaledBaseline(RatioBaseline):
    """A fixed per-class ratio policy named ``name``: ``base``'s ratios times ``factor`` (``fill x 0.5``), or the
    given ratio vector ``ratios`` (a hand-written policy such as the known-answer task's oracle policy)."""

    def __init__(self, name: str, ratios=None, base: RatioBaseline | None = None, factor: float = 1.0) -> None:
        self.name, self._ratios, self.base, self.factor = name, ratios, base, float(factor)

    def raw_ratios(self, train_counts: np.ndarray) -> np.ndarray:
        if self._ratios is not None:
            return np.asarray(self._ratios, np.float64)
        return self.base.raw_ratios(train_counts) * self.factor


def fixed_policy(spec: str):
    """A fixed policy from its spec: a baseline spec, or ``<shape> x <factor>`` (``fill x 0.25``), the shape a
    fixed per-class one (``fill``, ``constant:2``, ``inverse``)."""
    from tailmix.agents.baselines import make_baseline

    if not isinstance(spec, str) or SCALE not in spec:
        return make_baseline(spec)
    shape, _, factor = spec.partition(SCALE)
    base = make_baseline(shape.strip())
    try:
        value = float(factor)
    except ValueError:
        value = None
    if value is None or not isinstance(base, RatioBaseline) or value < 0:
        raise ValueError(f"bad fixed policy {spec!r}: use <shape> x <factor> with a fixed per-class shape and a "
                         "factor >= 0, e.g. 'fill x 0.5'")
    return ScaledBaseline(f"{shape.strip()}{SCALE}{value:g}", base=base, factor=value)


@dataclass(frozen=True)
class TrainingSpec:
    """A row to train: ``ALGO:WRAPPER:VARIANT[:TIMESTEPS][@SEED]`` or ``cem:static`` / ``cem:schedule``."""

    algo: str
    wrapper: str  # shared/central; for cem: static/schedule
    variant: str = ""  # difference (credit), ref0 (reward minus a reference head at ratio 0), plain
    timesteps: int | None = None  # None: the benchmark's default
    seed: int | None = None  # the training seed; None: the benchmark's default (0)


#: The reward variants of a row to train: the env settings each adds to the training env.
VARIANTS = {"difference": {"credit": "difference"}, "ref0": {"reward_reference": 0.0}, "plain": {}}


def parse_training_spec(spec: str) -> TrainingSpec:
    """``"ppo:central:ref0:20000@1"`` -> ``TrainingSpec("ppo", "central", "ref0", 20000, 1)``; ``"cem:static"``."""
    body, at, seed_text = str(spec).strip().partition("@")
    parts = body.split(":")
    usage = ("use algo:wrapper:variant[:timesteps][@seed], e.g. ppo:shared:difference:20000 or "
             "ppo:central:ref0:20000@1 (algo ppo/sac, wrapper shared/central, variant " + "/".join(VARIANTS)
             + ", seed the training seed, default 0), or cem:static / cem:schedule")
    if parts[0] == "cem":
        if len(parts) != 2 or parts[1] not in ("static", "schedule") or at:
            raise ValueError(f"row to train {spec!r} is invalid: {usage}")
        return TrainingSpec("cem", parts[1])
    if (len(parts) not in (3, 4) or parts[0] not in ("ppo", "sac") or parts[1] not in ("shared", "central")
            or parts[2] not in VARIANTS or (len(parts) == 4 and not parts[3].isdigit())
            or (at and not seed_text.isdigit())):
        raise ValueError(f"row to train {spec!r} is invalid: {usage}")
    return TrainingSpec(parts[0], parts[1], parts[2], int(parts[3]) if len(parts) == 4 else None,
                        int(seed_text) if at else None)


def training_env_kwargs(kw: dict, variant: str) -> dict:
    """The env keyword arguments ``kw`` with a reward variant's settings (:data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    return dict(kw, **VARIANTS[variant])


def is_ratio_policy_file(spec: str) -> bool:
    p = Path(str(spec)).expanduser()
    return p.suffix == ".json" and p.is_file()


def load_ratio_policy(path):
    """A policy saved by :func:`save_ratio_policy` (a static vector or a knot schedule)."""
    try:
        meta = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the policy file {path} ({err}); pass a policy.json the main job wrote") from None
    if not isinstance(meta, dict) or meta.get("kind") != "ratio-policy":
        raise ValueError(f"{path} is not a policy file the main job wrote (no \"kind\": \"ratio-policy\")")
    if meta.get("knots"):
        from tailmix.agents.schedules import KnotSchedule

        return KnotSchedule(meta["action"], meta["max_ratio"], name=meta.get("name", "schedule"))
    from tailmix.agents.cem import CEMPolicy

    return CEMPolicy(meta["action"], meta["max_ratio"], name=meta.get("name", "cem"))
