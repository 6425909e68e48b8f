"""Policies by spec: baselines (``none``, ``constant:R``, ...) and saved models (``model.zip``, ``ALGO:path``, an
RLlib checkpoint) behind one interface, with the checks that a saved model fits the env it is run in.
"""
from __future__ import annotations

import os
from pathlib import Path

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
    """A baseline spec, or a saved SB3 model behind the baseline interface (see :func:`load_model_policy`)."""
    from tailmix.agents.baselines import make_baseline

    if (Path(spec).expanduser() / "rllib_checkpoint.json").is_file():
        from tailmix.agents.rllib import load_rllib_policy

        return load_rllib_policy(Path(spec).expanduser())
    path = _model_path(spec)
    return make_baseline(spec) if path is None else load_model_policy(spec, wrapper=wrapper)


def load_model_policy(spec: str, *, wrapper: str | None = None):
    """A saved SB3 model (``path`` or ``ALGO:path``) as a policy with the baseline interface.

    Its algo comes from the ``ALGO:`` prefix, else ``agent.json`` beside it, else the ``run.json`` there. Its
    wrapper comes from ``wrapper``, else those files, else its observation space (a matrix means ``central``).
    """
    from tailmix.agents.baselines import SB3Policy

    prefix, rest = _split_algo(spec)
    path = Path(rest).expanduser()
    if not path.is_file():
        raise ValueError(f"no saved model at {path}; train one with `python train_agents.py train` (it writes "
                         "<run-dir>/model.zip)")
    info = model_info(path)
    algo = prefix or info.get("algo")
    if algo is None:
        raise ValueError(f"cannot tell which algorithm saved {path} (no agent.json or run.json beside it); "
                         "write the spec as ALGO:path, e.g. ppo:" + str(path))
    from tailmix.agents.sb3 import load_model

    try:
        model = load_model(algo, path)
    except ValueError:
        raise
    except Exception as err:  # a truncated zip, another algo's file, a pickle from an incompatible SB3
        raise ValueError(f"cannot load {path} as a {algo} model ({type(err).__name__}: {err}); is it a model.zip "
                         "saved by SB3 with that algorithm?") from None
    wrapper = wrapper or info.get("wrapper") or ("central" if len(model.observation_space.shape) == 2 else "shared")
    return SB3Policy(model, wrapper=wrapper)


def _check_policy_fits(policy, dataset, label: str, sources: int = 1) -> None:
    """A learned policy's observation shape must match the env of ``dataset`` with ``sources`` synthetic sources
    (checked before any work)."""
    model = getattr(policy, "model", None)
    if model is None:
        return
    c = dataset.num_classes
    width = 6 + 2 * sources + c  # envs.core.observation_columns without pool_obs, plus the one-hot id
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
