"""The README's "Using tailmix from other RL libraries" snippets, run as written with tiny env settings added.

Each ``python`` block of that section runs in a fresh namespace (so every block must carry its own imports, as a
reader copying one would need). The only edits are the :data:`EDITS` below: each must match the section at least
once, so that a README change that drops one fails here instead of silently running the full-size settings.
Blocks that import torchrl or ray are skipped where those are not installed (.ci/run runs them: the torchrl extra
after the base suite, ``-k rllib`` in the Ray venv).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import gymnasium
import pytest

from tailmix.envs import CENTRAL_ID

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using tailmix from other RL libraries"
#: A random encoder (no fit), a small pool, 3-step episodes.
TINY = dict(encoder="random", pool_size=16, max_steps=3)
PPO_TINY = dict(n_steps=32, batch_size=32, n_epochs=1, seed=0)
EDITS = [
    ('{"dataset": "digits"}', '{"dataset": "digits", **TINY}'),
    ('dataset="digits"', 'dataset="digits", **TINY'),
    ('PPO("MlpPolicy", ', 'PPO("MlpPolicy", **PPO_TINY, env='),
    (".learn(2_000)", ".learn(64)"),
    # the spawn-started SB3 workers: the README passes no env_kwargs there (the default env)
    ('vec_env_kwargs={"start_method": "spawn"})', 'vec_env_kwargs={"start_method": "spawn"}, env_kwargs=TINY)'),
    # RLlib: SB3-sized batches, one epoch, sampling in the driver
    ("config.build_algo()", "config.training(train_batch_size_per_learner=30, minibatch_size=30, num_epochs=1)"
                            ".env_runners(num_env_runners=0).build_algo()"),
]


def _blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def _name(code: str) -> str:
    for needle, name in (("torchrl", "torchrl"), ("ray.rllib", "rllib"), ("AsyncVectorEnv", "gymnasium_async"),
                         ("make_vec(", "gymnasium_make_vec"), ("tailmix_vec_env", "sb3_tailmix_vec_env"),
                         ("stable_baselines3", "sb3")):
        if needle in code:
            return name
    raise AssertionError(f"a README block this test does not know; name it in _name():\n{code}")


BLOCKS = _blocks()
SLOW = {"sb3", "gymnasium_async", "rllib"}  # spawn-started workers, or Ray


def test_the_section_has_every_snippet_and_every_edit_applies():
    assert sorted(_name(b) for b in BLOCKS) == sorted(["sb3", "sb3_tailmix_vec_env", "gymnasium_make_vec",
                                                       "gymnasium_async", "torchrl", "rllib"])
    section = "\n".join(BLOCKS)
    for old, _ in EDITS:
        assert old in section, f"the README snippets no longer contain {old!r}; update EDITS"


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024**2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.parametrize("code", [pytest.param(b, id=_name(b), marks=[pytest.mark.slow] if _name(b) in SLOW else [])
                                  for b in BLOCKS])
def test_readme_snippet_runs(code, monkeypatch, request):
    name = _name(code)
    if name == "torchrl":
        pytest.importorskip("torchrl", reason='torchrl is not installed (pip install -e ".[torchrl]")')
    if name == "rllib":
        pytest.importorskip("ray.rllib", reason='the ray extra is not installed (pip install -e ".[ray]")')
        request.getfixturevalue("local_ray")
    # SB3's one-liner passes only the id: the registered spec carries the tiny settings (in this process)
    spec = gymnasium.spec(CENTRAL_ID)
    monkeypatch.setitem(gymnasium.registry, CENTRAL_ID, dataclasses.replace(spec, kwargs={**spec.kwargs, **TINY}))
    for old, new in EDITS:
        code = code.replace(old, new)
    namespace = {"TINY": TINY, "PPO_TINY": PPO_TINY, "__name__": "readme_snippet"}
    try:
        exec(compile(code, f"README.md ({name} snippet)", "exec"), namespace)
        if "model" in namespace:
            assert namespace["model"].num_timesteps >= 64
        if "rollout" in namespace:
            assert namespace["rollout"].batch_size[-1] == 10
        if "result" in namespace:
            assert namespace["result"]["training_iteration"] == 1
    finally:
        for key in ("venv", "env"):
            if hasattr(namespace.get(key), "close"):
                namespace[key].close()
        if "algo" in namespace:
            namespace["algo"].stop()
