"""Equal-mix fixed policies (``<shape>@mix``): a shape's ratio split equally over every source, static and scheduled."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.agents.baselines import BASELINES, PER_SOURCE, baselines_for, make_baseline
from tailmix.agents.evaluate import evaluate, make_eval_env
from tailmix.agents.schedules import SCHEDULE_BASELINES
from tests.agents.helpers import played_source_ratios, tiny_env_kwargs, two_source_env_kwargs


_played = played_source_ratios


@pytest.mark.parametrize("shape", ["fill", "inverse", "constant:1", "constant:0.5"])
def test_a_static_mix_splits_the_ratio_equally_over_the_sources(shape):
    kw = two_source_env_kwargs(max_steps=2)
    env = make_eval_env(kw)
    whole = make_baseline(shape).ratios(env)  # what the plain shape puts on source 0
    mix = make_baseline(f"{shape}@mix")
    assert mix.name == f"{shape}@mix"
    played = _played(mix, kw)
    np.testing.assert_allclose(played, np.broadcast_to((whole / 2)[None, :, None], played.shape), atol=1e-5)
    np.testing.assert_allclose(played.sum(2), np.broadcast_to(whole, played.shape[:2]), atol=1e-5)
    assert evaluate(mix, kw, seeds=(0,))[0]["policy"] == f"{shape}@mix"


def test_a_scheduled_mix_splits_every_step():
    kw = two_source_env_kwargs(max_steps=5)
    env = make_eval_env(kw)
    fill = make_baseline("fill").ratios(env)
    played = _played(make_baseline("decay:fill@mix"), kw)
    frac = np.linspace(0, 1, 5)[:, None]
    for g in range(2):
        np.testing.assert_allclose(played[:, :, g], (1 - frac) * fill / 2, atol=1e-5)
    assert make_baseline("warmup:constant:2@mix").name == "warmup:constant:2@mix"


def test_with_one_source_a_mix_is_the_plain_shape():
    kw = tiny_env_kwargs()
    env = make_eval_env(kw)
    obs, _ = env.reset(seed=0)
    for shape in ("fill", "inverse", "decay:fill"):
        plain, mix = make_baseline(shape).act(obs, env), make_baseline(f"{shape}@mix").act(obs, env)
        assert all(np.array_equal(plain[a], mix[a]) and mix[a].shape == (1,) for a in env.agents)


def test_baselines_for_lists_the_mixes_with_several_sources():
    names = ("clean+corrupt", "clean")
    specs = baselines_for(names)
    assert specs[:len(BASELINES)] == BASELINES
    assert {f"{s}@mix" for s in PER_SOURCE} <= set(specs) and "fill@clean" in specs
    assert not any("@" in s for s in baselines_for(("augment",)))
    with_schedules = baselines_for(names, schedules=True)
    assert set(SCHEDULE_BASELINES) <= set(with_schedules) and "decay:fill@mix" in with_schedules
    assert "decay:fill@clean" in with_schedules and set(specs) <= set(with_schedules)
    assert baselines_for(("augment",), schedules=True) == BASELINES + SCHEDULE_BASELINES
    for spec in with_schedules:  # every listed spec parses and plays
        make_baseline(spec)


def test_mix_errors_say_how_to_fix_them():
    with pytest.raises(ValueError, match="already draws every source"):
        make_baseline("random@mix")
    with pytest.raises(ValueError, match="@mix"):
        make_baseline("fill@")
    with pytest.raises(ValueError, match="@mix"):
        make_baseline("sinusoidal@mix")
    # a source named "mix" is reachable by its index only; the equal mix says so
    from tailmix.envs.sources import ArraySource

    kw = two_source_env_kwargs()
    clean = kw["sources"][1]
    renamed = ArraySource({c: clean.pool(c) for c in range(3)}, 3, name="mix")
    env = make_eval_env(dict(kw, sources=[kw["sources"][0], renamed]))
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="fill@1"):
        make_baseline("fill@mix").act(obs, env)
    assert make_baseline("fill@1").act(obs, env)  # the index still targets it
