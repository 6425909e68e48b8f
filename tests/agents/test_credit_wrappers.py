"""Parameter sharing under difference credit: each class slot gets its own reward, episodes count the team return."""
from __future__ import annotations

import numpy as np
import pytest

from tailmix.agents.wrappers import make_shared_vec_env, make_vec_env
from tests.agents.helpers import tiny_env_kwargs
from tests.conftest import make_tiny_dataset


def harmful_kwargs(**over) -> dict:
    """Class 2's pool holds class-0 images (mislabeled synthesis), so its difference reward is non-zero."""
    from tailmix.envs.sources import ArraySource

    ds = make_tiny_dataset(num_classes=3, counts=(20, 10, 6), n_val=8, seed=2)
    pools = {c: ds.train_images[ds.train_labels == c] for c in range(3)}
    pools[2] = ds.train_images[ds.train_labels == 0]
    return tiny_env_kwargs(dataset=ds, source=ArraySource(pools, 3), credit="difference", encoder="random", **over)


def test_shared_slots_get_per_class_difference_rewards_and_the_team_return():
    venv = make_shared_vec_env(harmful_kwargs(), n_envs=2, seed=0)
    venv.reset()
    actions = np.array([[-1], [-1], [1]] * 2, np.float32)  # only class 2 synthesises, in both copies
    team = np.zeros(2)
    episodes = []
    blamed = 0
    for _ in range(3):
        _, rew, _, infos = venv.step(actions)
        assert rew.shape == (6,)
        assert np.all(rew[[0, 1, 3, 4]] == 0.0)  # at the default ratio: exactly no credit
        for k in range(2):
            assert rew[3 * k + 2] == pytest.approx(infos[3 * k + 2]["balanced_accuracy"]
                                                   - infos[3 * k + 2]["counterfactual_balanced_accuracy"], abs=1e-6)
            team[k] += infos[3 * k]["team_reward"]
        episodes += [i["episode"] for i in infos if "episode" in i]
        blamed += int(np.sum(rew[[2, 5]] != 0.0))
    assert blamed > 0
    assert len(episodes) == 2  # once per copy, holding the team return (not the mean of the class rewards)
    assert [e["r"] for e in episodes] == pytest.approx(list(team))


def test_central_wrapper_refuses_difference_credit():
    with pytest.raises(ValueError, match="single agent"):
        make_vec_env("central", harmful_kwargs(), n_envs=1, seed=0)


def test_ppo_trains_on_difference_rewards():
    from tailmix.agents.sb3 import train

    model = train("ppo", harmful_kwargs(), wrapper="shared", total_timesteps=36, seed=0, n_envs=1,
                  algo_kwargs={"n_steps": 6, "batch_size": 18, "n_epochs": 1})
    assert model.num_timesteps >= 36
    model.get_env().close()
