"""envs.rewards: reward shaping, synthetic cost, difference credit and the bootstrap, on hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.envs.heads import HeadLayout
from tailmix.envs.rewards import (bootstrap_std, class_scores, counterfactual_mixes, rank_within, relative_score,
                                  shape_reward, step_rewards)

LAST = np.array([False, True])


def test_shape_reward_options():
    score, prev = np.array([0.6, 0.8]), np.array([0.5, 0.9])
    assert shape_reward("accuracy", score, prev, LAST).tolist() == [0.6, 0.8]
    assert shape_reward("delta", score, prev, LAST) == pytest.approx([0.1, -0.1])
    assert shape_reward("final", score, prev, LAST).tolist() == [0.0, 0.8]
    per_class = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert shape_reward("final", per_class, per_class, LAST).tolist() == [[0.0, 0.0], [0.3, 0.4]]


def test_relative_and_class_scores():
    bal = np.array([0.7, 0.5])
    assert relative_score(bal, None).tolist() == [0.7, 0.5] and relative_score(bal, None) is not bal
    assert relative_score(bal, np.array([0.6, 0.6])) == pytest.approx([0.1, -0.1])
    assert np.allclose(class_scores(bal, np.array([[0.7, 0.6], [0.5, 0.4]])), [[0.0, 0.1], [0.0, 0.1]])


def test_shared_credit_gives_every_agent_the_team_reward_minus_the_cost():
    n_syn = np.array([[10, 0, 30], [0, 0, 0]])
    real = np.array([[50, 30, 20], [100, 0, 0]])
    team, agents = step_rewards("accuracy", 0.5, LAST, np.array([0.6, 0.8]), np.zeros(2), n_syn, real)
    assert team == pytest.approx([0.6 - 0.5 * 40 / 100, 0.8])
    assert agents.shape == (2, 3) and (agents == team[:, None]).all()


def test_difference_credit_charges_each_agent_its_own_samples_beyond_the_default():
    n_syn = np.array([[10, 4]])
    real = np.array([[20, 20]])
    score = np.array([[0.05, -0.02]])
    team, agents = step_rewards("accuracy", 0.4, np.array([True]), np.array([0.7]), np.zeros(1), n_syn, real,
                                class_score=score, prev_class_score=np.zeros((1, 2)),
                                default_counts=np.array([[2, 4]]))
    assert team == pytest.approx([0.7 - 0.4 * 14 / 40])
    assert np.allclose(agents, [[0.05 - 0.01 * 8, -0.02]])  # class 1 sits at its default: no cost


def test_rank_within():
    assert rank_within(np.array([2, 0, 2, 1, 0, 2]), 3).tolist() == [0, 0, 1, 0, 1, 2]


def test_counterfactual_mixes_are_prefixes_of_one_draw():
    lay = HeadLayout(copies=1, classes=2, counterfactual=True)  # heads: replica 0, cf(class 0), cf(class 1)
    real = np.array([100, 101])
    syn = np.array([10, 20, 11, 21, 12, 22])  # drawn rows, classes 0 1 0 1 0 1
    labels = np.array([0, 1, 0, 1, 0, 1])
    mixes = counterfactual_mixes(lay, [np.concatenate([real, syn])], [2], [labels], counts=np.array([[3, 1]]),
                                 default=np.array([[1, 2]]))
    assert mixes[0].tolist() == [100, 101, 10, 20, 11, 12]  # own counts: 3 of class 0, 1 of class 1
    assert mixes[1].tolist() == [100, 101, 10, 20]  # class 0 at its default (1), class 1 as the replica
    assert mixes[2].tolist() == [100, 101, 10, 20, 11, 21, 12]  # class 1 at its default (2)


def test_bootstrap_std_is_zero_for_perfect_heads_and_positive_for_noisy_ones():
    lay = HeadLayout(copies=2, classes=2, replicas=2, reference=True)  # H = 3: the reference is not scored
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    noisy = np.array([0, 1, 1, 0, 0, 0, 1, 1])
    pred = np.stack([y, y, 1 - y, noisy, noisy, y])
    std = bootstrap_std(lay, y, pred, None, [np.random.default_rng(0), np.random.default_rng(1)], 50)
    assert std[0] == 0.0 and std[1] > 0.0
    assert np.isnan(bootstrap_std(lay, y, pred, None, [None, None], 50)).all()
    mask = np.zeros((6, 8), bool)
    mask[3:, :4] = True  # copy 1 scored on rows 0..3 only, where the noisy head is half right per class
    assert bootstrap_std(lay, y, pred, mask, [None, np.random.default_rng(1)], 50)[1] > 0.0
