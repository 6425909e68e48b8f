"""CEM over the whole pool action (G >= 2 sources): (C, G) / (K, C, G) vectors, starts per source, policies that
play every source's ratio, and a search that learns which of two sources helps."""
from __future__ import annotations

import numpy as np
import pytest

import tailmix.agents.cem as cem
from tailmix.agents.baselines import FillToHead
from tailmix.agents.cem import CEMPolicy, cem_search, val_fitness
from tailmix.agents.evaluate import evaluate, make_eval_env
from tailmix.agents.schedules import KnotSchedule, knot_weights
from tests.agents.helpers import played_source_ratios, tiny_env_kwargs, two_source_env_kwargs

BAD, CLEAN = 0, 1  # two_source_env_kwargs' source order: [clean+corrupt, clean]


_played = played_source_ratios


def test_cem_puts_the_ratio_on_the_clean_source():
    """Only the clean source helps; classes 0 and 1 are corrupted on the other. From ratio 4 on both sources the
    search moves those classes' ratio off the corrupted source and keeps it on the clean one."""
    kw = two_source_env_kwargs()
    res = cem_search(kw, generations=10, population=12, episodes_per_candidate=2, seed=0)
    assert res.mean_action.shape == (3, 2) and res.best_action.shape == (3, 2) and res.num_sources == 2
    assert not res.is_schedule
    r = res.mean_ratios
    assert r[0, BAD] < 1.0, r
    assert (r[:2, CLEAN] > r[:2, BAD] + 1.0).all(), r
    assert res.history[-1]["mean_fitness"] > res.history[0]["mean_fitness"] + 0.2
    # the policy plays every source's ratio, and what it gets on val is what the search scored
    policy = CEMPolicy.from_result(res)
    assert isinstance(policy, CEMPolicy) and policy.num_sources == 2
    np.testing.assert_allclose(_played(policy, kw)[0], r, atol=1e-5)
    rows = evaluate(policy, kw, seeds=(0, 1))
    fit = val_fitness(res.mean_action, kw, seeds=[0, 1])
    assert fit.shape == (1, 2)
    np.testing.assert_allclose(fit[0], [row["val_balanced_accuracy"] for row in rows], atol=1e-6)


def test_starts_per_source_and_equal_mix():
    kw = two_source_env_kwargs()
    venv = cem.make_search_env(1, kw)
    fill = FillToHead().ratios(cem._CountsView(venv.core.train_counts, 8.0))
    assert fill[0] == 0 and fill[2] == 8.0
    to_action = venv.core.ratio_to_action
    np.testing.assert_array_equal(cem.resolve_init_mean(None, venv), np.zeros((3, 2)))
    on = {"fill": BAD, "fill@clean": CLEAN, "fill@0": BAD, "fill@clean+corrupt": BAD}
    for spec, g in on.items():
        want = np.full((3, 2), -1.0)
        want[:, g] = to_action(fill)
        np.testing.assert_allclose(cem.resolve_init_mean(spec, venv), want, err_msg=spec)
    np.testing.assert_allclose(cem.resolve_init_mean("fill@mix", venv), np.stack([to_action(fill / 2)] * 2, 1))
    knots = cem.resolve_init_knots("decay:fill@mix", venv, 3)
    assert knots.shape == (3, 3, 2)
    for k, m in enumerate((1.0, 0.5, 0.0)):
        np.testing.assert_allclose(knots[k], np.stack([to_action(fill * m / 2)] * 2, 1), atol=1e-6)
    static = cem.resolve_init_knots("fill@clean", venv, 2)
    np.testing.assert_array_equal(static, np.stack([cem.resolve_init_mean("fill@clean", venv)] * 2))
    a = np.linspace(-1, 1, 6).reshape(3, 2)
    np.testing.assert_array_equal(cem.resolve_init_mean(a, venv), a)
    np.testing.assert_array_equal(cem.resolve_init_knots(np.stack([a, -a]), venv, 2), np.stack([a, -a]))
    # a found (C, G) vector is a fixed policy too: it starts another search where it ended
    np.testing.assert_allclose(cem.resolve_init_mean(CEMPolicy(a, 8.0), venv), a, atol=1e-6)
    res = cem_search(kw, generations=1, population=2, seed=0, init_mean="fill@mix", init_std=1e-3, min_std=0.0)
    np.testing.assert_allclose(res.history[0]["mean"], cem.resolve_init_mean("fill@mix", venv).ravel(), atol=1e-6)


@pytest.mark.parametrize("bad", [dict(init_mean=np.zeros(3)), dict(init_mean=np.zeros((3, 3))),
                                 dict(init_mean=np.full((3, 2), 1.5)), dict(init_mean="fill@nowhere"),
                                 dict(init_mean=CEMPolicy(np.zeros((3, 3)), 8.0)),
                                 dict(knots=2, init_mean=np.zeros((3, 3, 2))),
                                 dict(knots=2, init_mean=np.zeros((2, 3, 3)))])
def test_bad_starts_over_several_sources_raise_value_errors(bad):
    with pytest.raises(ValueError):
        cem_search(two_source_env_kwargs(), **{"generations": 1, "population": 2, **bad})


def test_schedule_search_over_the_pool_plays_what_was_scored():
    kw = two_source_env_kwargs(max_steps=4)
    res = cem_search(kw, generations=2, population=3, seed=0, knots=3, init_mean="decay:fill@clean")
    assert res.mean_action.shape == (3, 3, 2) and res.best_action.shape == (3, 3, 2) and res.is_schedule
    again = cem_search(kw, generations=2, population=3, seed=0, knots=3, init_mean="decay:fill@clean")
    assert np.array_equal(res.mean_action, again.mean_action)
    policy = CEMPolicy.from_result(res)
    assert isinstance(policy, KnotSchedule) and policy.knots.shape == (3, 3, 2)
    rows = evaluate(policy, kw, seeds=(0, 1))
    fit = val_fitness(res.mean_action[None], kw, seeds=[0, 1])
    np.testing.assert_allclose(fit[0], [r["val_balanced_accuracy"] for r in rows], atol=1e-6)
    want = np.stack([cem.action_to_ratio(np.clip(np.einsum("kcg,k->cg", res.mean_action.astype(np.float64),
                                                           knot_weights(f, 3)), -1, 1).astype(np.float32),
                                         res.max_ratio) for f in np.linspace(0, 1, 4)])
    np.testing.assert_allclose(_played(policy, kw), want, atol=1e-4)
    assert policy.ratio_schedule(make_eval_env(kw)).shape == (4, 3, 2)


def test_pool_policies_re_expressed_at_another_scale_and_refused_with_other_sources():
    kw = two_source_env_kwargs(max_ratio=4.0)
    a = np.array([[-1.0, 0.0], [0.5, -1.0], [0.0, 0.0]])
    np.testing.assert_allclose(_played(CEMPolicy(a, max_ratio=2.0), kw)[0], (a + 1) / 2 * 2.0, atol=1e-5)
    with pytest.raises(ValueError, match="source"):
        evaluate(CEMPolicy(a, max_ratio=4.0), tiny_env_kwargs(), seeds=(0,))  # one source
    with pytest.raises(ValueError, match="source"):
        evaluate(KnotSchedule(np.stack([a, a]), 4.0), tiny_env_kwargs(), seeds=(0,))
    with pytest.raises(ValueError, match="\\(classes, sources\\)"):
        CEMPolicy(np.zeros((2, 2, 2)), 8.0)
    with pytest.raises(ValueError, match="classes x sources"):
        val_fitness(np.zeros((1, 3)), kw, seeds=[0])


def test_a_one_source_vector_plays_on_source_0_of_several():
    """A (C,) vector from a one-source search in a G = 2 env: its ratios on source 0, as a plain baseline's."""
    kw = two_source_env_kwargs()
    played = _played(CEMPolicy(np.array([0.0, 0.5, -1.0]), 8.0), kw)[0]
    np.testing.assert_allclose(played, [[4.0, 0.0], [6.0, 0.0], [0.0, 0.0]], atol=1e-5)
