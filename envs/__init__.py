"""tailmix environments: ``tailmix/SyntheticRatio-v0`` / ``-v1`` (PettingZoo) and their gymnasium views.

Importing this package registers the ids (safely, more than once). The ``-v1`` ids are the same classes with
:data:`V1_DEFAULTS` (``envs.config``) as defaults. The env classes load lazily so that ``import envs`` stays fast.
"""
from __future__ import annotations

from tailmix.envs.config import V1_DEFAULTS

PARALLEL_ID = "tailmix/SyntheticRatio-v0"
CENTRAL_ID = "tailmix/SyntheticRatioCentral-v0"
PARALLEL_V1_ID = "tailmix/SyntheticRatio-v1"
CENTRAL_V1_ID = "tailmix/SyntheticRatioCentral-v1"
#: ``gymnasium.make_vec(CENTRAL_ID, num_envs=K, vectorization_mode="vector_entry_point")`` builds this batched env.
VECTOR_ENTRY_POINT = "tailmix.envs.vector:SyntheticRatioVectorEnv"

__all__ = ["PARALLEL_ID", "CENTRAL_ID", "PARALLEL_V1_ID", "CENTRAL_V1_ID", "V1_DEFAULTS", "SyntheticRatioEnv",
           "SyntheticRatioCentralEnv", "parallel_env", "env", "raw_env", "register_envs"]


def register_envs() -> None:
    """Register the env ids with gymnasium and PettingZoo; a second call is a no-op (HighwayEnv's guard).

    The central ids carry the batched :class:`envs.vector.SyntheticRatioVectorEnv` as their vector entry point.
    """
    import gymnasium

    if CENTRAL_ID not in gymnasium.registry:
        gymnasium.register(id=CENTRAL_ID, entry_point="tailmix.envs.central:SyntheticRatioCentralEnv",
                           vector_entry_point=VECTOR_ENTRY_POINT)
    if CENTRAL_V1_ID not in gymnasium.registry:  # the defaults show in the spec; make(..., key=value) overrides
        gymnasium.register(id=CENTRAL_V1_ID, entry_point="tailmix.envs.central:SyntheticRatioCentralEnv",
                           vector_entry_point=VECTOR_ENTRY_POINT, kwargs=dict(V1_DEFAULTS))
    try:
        import pettingzoo
    except ImportError:  # pragma: no cover - pettingzoo is a hard dependency; keep gymnasium usable anyway
        return
    if hasattr(pettingzoo, "register"):  # PettingZoo >= 1.27 has a registry
        if PARALLEL_ID not in pettingzoo.parallel_registry:
            pettingzoo.register("parallel", PARALLEL_ID, entry_point="tailmix.envs.synthetic_ratio:parallel_env")
        if PARALLEL_ID not in pettingzoo.aec_registry:
            pettingzoo.register("aec", PARALLEL_ID, entry_point="tailmix.envs.synthetic_ratio:env")
        if PARALLEL_V1_ID not in pettingzoo.parallel_registry:
            pettingzoo.register("parallel", PARALLEL_V1_ID, entry_point="tailmix.envs.synthetic_ratio:parallel_env_v1")
        if PARALLEL_V1_ID not in pettingzoo.aec_registry:
            pettingzoo.register("aec", PARALLEL_V1_ID, entry_point="tailmix.envs.synthetic_ratio:env_v1")


def __getattr__(name: str):
    if name in ("SyntheticRatioEnv", "parallel_env", "env", "raw_env"):
        from tailmix.envs import synthetic_ratio

        return getattr(synthetic_ratio, name)
    if name == "SyntheticRatioCentralEnv":
        from tailmix.envs.central import SyntheticRatioCentralEnv

        return SyntheticRatioCentralEnv
    raise AttributeError(f"module 'tailmix.envs' has no attribute {name!r}")


register_envs()
