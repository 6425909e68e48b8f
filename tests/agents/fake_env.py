"""A tiny, instant stand-in for ``SyntheticRatioEnv`` that follows the env API (``notes/ENV_API.md``).

The reward peaks when every class's ratio equals ``target`` (plus seeded noise), so wrapper and baseline tests
run in milliseconds and can check exact numbers.
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv


class FakeRatioEnv(ParallelEnv):
    metadata = {"name": "fake_ratio_v0", "render_modes": []}

    def __init__(self, counts=(100, 50, 5), max_steps: int = 3, max_ratio: float = 8.0, eval_split=None,
                 target: float = 2.0, noise: float = 0.01) -> None:
        self.counts = np.asarray(counts, np.int64)
        self.c = len(counts)
        self.max_steps = max_steps
        self._max_ratio = float(max_ratio)
        self.eval_split = eval_split
        self.target = target
        self.noise = noise
        self.possible_agents = [f"class_{i}" for i in range(self.c)]
        self.agents: list[str] = []
        self.render_mode = None
        d = 8 + self.c
        low = np.zeros(d, np.float32)
        low[3] = -10.0
        self._obs_space = spaces.Box(low, np.ones(d, np.float32), dtype=np.float32)
        self._act_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.np_random = None
        self.last_seed = "unset"
        self.resets = 0
        self.t = 0
        self._ratios = np.zeros(self.c)

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    @property
    def ratios(self):
        return self._ratios.copy()

    @property
    def train_counts(self):
        return self.counts.copy()

    @property
    def max_ratio(self):
        return self._max_ratio

    def action_to_ratio(self, a):
        return (np.clip(np.asarray(a, np.float64), -1, 1) + 1) / 2 * self._max_ratio

    def ratio_to_action(self, r):
        r = np.clip(np.asarray(r, np.float64), 0, self._max_ratio)
        return (r / self._max_ratio * 2 - 1).astype(np.float32)

    def _obs(self):
        out = {}
        share = np.log(self.counts / self.counts.sum())
        for i, a in enumerate(self.possible_agents):
            o = np.zeros(8 + self.c, np.float32)
            o[0] = self.recall[i]
            o[3] = share[i]
            o[4] = self._ratios[i] / self._max_ratio
            o[6] = self.recall.mean()
            o[7] = self.t / self.max_steps
            o[8 + i] = 1.0
            out[a] = o
        return out

    def _infos(self):
        return {a: {"class_name": f"c{i}", "ratio": float(self._ratios[i]), "n_real": int(self.counts[i]),
                    "n_synthetic": int(round(self._ratios[i] * self.counts[i])), "recall": float(self.recall[i]),
                    "precision": float(self.recall[i]), "f1": float(self.recall[i]),
                    "balanced_accuracy": float(self.recall.mean()), "macro_f1": float(self.recall.mean()),
                    "step": self.t} for i, a in enumerate(self.possible_agents)}

    def reset(self, seed=None, options=None):
        if seed is not None or self.np_random is None:
            self.np_random, _ = seeding.np_random(seed)
        self.last_seed = seed
        self.resets += 1
        self.t = 0
        self._ratios = np.zeros(self.c)
        self.recall = np.full(self.c, 0.5)
        self.agents = self.possible_agents[:]
        return self._obs(), self._infos()

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("step after the end; call reset()")
        a = np.array([float(np.asarray(actions[ag]).reshape(())) for ag in self.possible_agents])
        if not np.isfinite(a).all():
            raise ValueError("non-finite action")
        self._ratios = self.action_to_ratio(a)
        self.t += 1
        err = (self._ratios - self.target) / self._max_ratio
        self.recall = np.clip(1.0 - err ** 2 + self.np_random.normal(0, self.noise, self.c), 0, 1)
        reward = float(self.recall.mean())
        done = self.t >= self.max_steps
        infos = self._infos()
        if done and self.eval_split == "test":
            test = {"accuracy": reward, "balanced_accuracy": reward, "macro_f1": reward * 0.9,
                    "recall": self.recall.tolist(), "precision": self.recall.tolist(), "f1": self.recall.tolist(),
                    "many_shot": float(self.recall[0]), "medium_shot": float(self.recall[1]),
                    "few_shot": float(self.recall[2:].mean())}
            for info in infos.values():
                info["test"] = test
        rewards = {ag: reward for ag in self.agents}
        terms = {ag: False for ag in self.agents}
        truncs = {ag: done for ag in self.agents}
        obs = self._obs()
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def close(self):
        pass
