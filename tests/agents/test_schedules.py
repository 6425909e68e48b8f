"""Schedule baselines (decay / warm-up / early / late of a per-class shape) and the CEM over knot schedules."""
from __future__ import annotations

import numpy as np
import pytest

import tailmix.agents.cem as cem
from tailmix.agents.baselines import FillToHead, make_baseline
from tailmix.agents.cem import CEMPolicy, cem_search, val_fitness
from tailmix.agents.evaluate import evaluate, make_eval_env, run_episode
from tailmix.agents.baselines import make_schedule
from tailmix.agents.schedules import SCHEDULE_BASELINES, BaselineSchedule, KnotSchedule, knot_weights
from tests.agents.helpers import tiny_env_kwargs


def _played(policy, kw, seed=0):
    """Ratios the env actually used at each step of one episode (from its infos)."""
    env = make_eval_env(kw)
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    out = []
    while env.agents:
        obs, _, _, _, infos = env.step(policy.act(obs, env))
        out.append([infos[a]["ratio"] for a in env.possible_agents])
    return np.array(out)


def test_decay_and_warmup_move_linearly_between_the_base_ratios_and_zero():
    kw = tiny_env_kwargs(max_steps=5)
    env = make_eval_env(kw)
    fill = FillToHead().ratios(env)
    assert fill.max() > 0
    decay, warm = make_baseline("decay:fill"), make_baseline("warmup:fill")
    assert isinstance(decay, BaselineSchedule) and decay.name == "decay:fill" and warm.name == "warmup:fill"
    frac = np.linspace(0, 1, 5)[:, None]
    assert np.allclose(decay.ratio_schedule(env), (1 - frac) * fill)
    assert np.allclose(warm.ratio_schedule(env), frac * fill)
    # the env plays them step by step (the step is read from the observation's progress column)
    assert np.allclose(_played(decay, kw), (1 - frac) * fill, atol=1e-5)
    assert np.allclose(_played(make_baseline("warmup:constant:2"), kw), np.repeat(frac, 3, 1) * 2, atol=1e-5)
    early, late = make_baseline("early:inverse"), make_baseline("late:inverse")
    inv = make_baseline("inverse").ratios(env)
    first_half = (np.arange(5) < 2)[:, None]  # fractions 0 and .25; from the middle (.5) on: the second half
    assert np.allclose(_played(early, kw), np.where(first_half, inv, 0.0), atol=1e-5)
    assert np.allclose(_played(late, kw) + _played(early, kw), inv, atol=1e-5)


def test_schedule_specs_and_their_errors():
    assert all(isinstance(make_baseline(s), BaselineSchedule) for s in SCHEDULE_BASELINES)
    assert make_baseline("decay:constant:0.5").name == "decay:constant:0.5"
    assert make_schedule("Warmup:Inverse:2").name == "warmup:inverse:2"
    for bad in ("decay:", "decay:random", "warmup:decay:fill", "decay:nonsense", "cosine:fill"):
        with pytest.raises(ValueError):
            make_baseline(bad)


def test_knot_weights_interpolate_linearly():
    assert np.allclose(knot_weights(0.0, 3), [1, 0, 0]) and np.allclose(knot_weights(1.0, 3), [0, 0, 1])
    assert np.allclose(knot_weights(0.75, 3), [0, 0.5, 0.5]) and np.allclose(knot_weights(0.3, 1), [1])


def test_schedule_cem_finds_knots_and_its_policy_plays_what_was_scored():
    kw = tiny_env_kwargs(max_steps=4, synthetic_cost=0.01)
    res = cem_search(kw, generations=2, population=3, seed=0, knots=3, init_mean="decay:fill")
    assert res.mean_action.shape == (3, 3) and res.best_action.shape == (3, 3)
    assert res.history[0]["fitness"].shape == (3,)
    again = cem_search(kw, generations=2, population=3, seed=0, knots=3, init_mean="decay:fill")
    assert np.array_equal(res.mean_action, again.mean_action)
    # the start: decay:fill's actions at fractions 0, 0.5, 1
    venv = cem.make_search_env(1, kw)
    fill = FillToHead().ratios(cem._CountsView(venv.core.train_counts, venv.core.config.max_ratio))
    start = np.stack([venv.core.ratio_to_action(fill * m) for m in (1.0, 0.5, 0.0)])
    assert np.allclose(res.history[0]["mean"].reshape(3, 3), start, atol=1e-6)
    policy = CEMPolicy.from_result(res)
    assert isinstance(policy, KnotSchedule) and policy.name == "cem schedule (mean)"
    plain = dict(kw, synthetic_cost=0.0)  # fitness = balanced val accuracy, what evaluate() reports
    rows = evaluate(policy, plain, seeds=(0, 1))
    fit = val_fitness(res.mean_action[None], plain, seeds=[0, 1])
    # what the search scores is what the policy gets in the single env (same actions bit for bit, same seeds)
    assert np.allclose(fit[0], [r["val_balanced_accuracy"] for r in rows], atol=1e-6)
    played = _played(policy, kw)
    want = np.stack([cem.action_to_ratio(np.clip(res.mean_action.astype(np.float64).T @ knot_weights(f, 3), -1, 1)
                                         .astype(np.float32), res.max_ratio) for f in np.linspace(0, 1, 4)])
    assert np.allclose(played, want, atol=1e-4)


def test_schedule_cem_with_a_static_start_and_bad_knots():
    kw = tiny_env_kwargs(max_steps=2)
    res = cem_search(kw, generations=1, population=2, seed=0, knots=2, init_mean="inverse", init_std=1e-3,
                     min_std=0.0)
    assert np.allclose(res.history[0]["mean"].reshape(2, 3)[0], res.history[0]["mean"].reshape(2, 3)[1])
    for bad in (dict(knots=1), dict(knots=2, init_mean=np.zeros((3, 3))), dict(knots=2.5)):
        with pytest.raises(ValueError):
            cem_search(kw, generations=1, population=2, **bad)
    with pytest.raises(ValueError, match="knots"):
        KnotSchedule(np.zeros(3), 8.0)


def test_schedules_play_on_one_source_of_several():
    """With several sources a schedule reads progress from its moved column and plays on its @source only."""
    from tailmix.agents.baselines import make_baseline
    from tailmix.envs.synthetic_ratio import parallel_env
    from tests.conftest import make_tiny_dataset

    env = parallel_env(dataset=make_tiny_dataset(), sources=["augment", "augment"], encoder="random", pool_size=16,
                       max_steps=4)
    policy = make_baseline("decay:fill@1")
    obs, _ = env.reset(seed=0)
    played = []
    while env.agents:
        obs, *_ = env.step(policy.act(obs, env))
        played.append(env.core.source_ratios[0].copy())
    played = np.stack(played)  # (steps, C, G)
    assert (played[:, :, 0] == 0).all()
    tail = played[:, -1, 1]
    assert tail[0] > tail[1] > tail[2] > tail[3] == 0  # decays to 0 over the episode
