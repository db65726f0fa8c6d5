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
