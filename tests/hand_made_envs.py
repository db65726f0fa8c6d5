"""Base of the hand-made environments of the tests, whose returns and costs are known in closed form."""

import gymnasium as gym
import numpy as np


class EpisodeClockEnv(gym.Env):
    """Counts the steps of the current episode in ``self.t``; ``reset`` returns the observation 0 of shape (1,)."""

    t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}


class RareHazardEnv(gym.Env):
    """
    One-step episodes with a rare hazard whose probability is known in closed form. Observation 0 of shape
    (1,); action a in [-10, 10]; reward a; cost 1 if a > ``threshold`` (else 0), so the episode cost of a
    Gaussian policy N(mu, sigma) is P(a > threshold) = 1 - Phi((threshold - mu) / sigma) exactly (the clip at
    10 is 7 sigma away from every policy the tests use).
    """

    threshold = 2.5
    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-10.0, 10.0, (1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action).ravel()[0], -10.0, 10.0))
        return np.zeros(1, dtype=np.float32), a, True, False, {"cost": float(a > self.threshold)}
