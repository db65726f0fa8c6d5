"""
Episode costs where SB3 and rl-zoo3 only know episode rewards.

``EpisodeCostInfo``: the running episode cost in ``info["episode_cost"]``, so that SB3's ``Monitor`` records it.

SB3's ``Monitor(env, info_keywords=("episode_cost",))`` writes, for every finished episode, the value the key has
in the info of the episode's LAST step. ``info["cost"]`` is the cost of one step; this wrapper (inside the
``Monitor``) adds the sum over the episode so far, so ``monitor.csv`` gets the episode cost as a column, next to
SB3's return ``r`` and length ``l``. Channel 0 for ``"episode_cost"``; with several channels also
``"episode_cost_<i>"`` for i >= 1.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

__all__ = ["EPISODE_COST_KEY", "EpisodeCostInfo", "VecEpisodeCostReporter"]

EPISODE_COST_KEY = "episode_cost"


class EpisodeCostInfo(gym.Wrapper):
    """
    Adds the episode's cost so far to every step's info: ``info["episode_cost"]`` (channel 0) and
    ``info["episode_cost_<i>"]`` (channels i >= 1), from ``info["cost"]`` (a float or one value per channel).

    :param env: an environment that reports ``info["cost"]`` at every step
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.episode_cost: np.ndarray = np.zeros(1)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.episode_cost = np.zeros(1)
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        if "cost" not in info:
            raise ValueError("EpisodeCostInfo needs info['cost'] at every step")
        cost = np.atleast_1d(np.asarray(info["cost"], dtype=np.float64))
        if self.episode_cost.shape != cost.shape:  # the first step of an episode tells the number of channels
            self.episode_cost = np.zeros_like(cost)
        self.episode_cost = self.episode_cost + cost
        info = dict(info)
        info[EPISODE_COST_KEY] = float(self.episode_cost[0])
        for channel in range(1, len(self.episode_cost)):
            info[f"{EPISODE_COST_KEY}_{channel}"] = float(self.episode_cost[channel])
        return observation, reward, terminated, truncated, info


class VecEpisodeCostReporter(VecEnvWrapper):
    """
    Prints the cost of every finished episode (``Episode Cost: ...``), summed from ``info["cost"]`` (channel 0), for
    the scripts that print SB3 episode rewards (``rl_zoo3.enjoy`` through the startup hook). Environments without
    ``info["cost"]`` print nothing.

    :param venv: the vectorized environment
    :param verbose: 0: silent (the sums are still kept in ``episode_costs``)
    """

    def __init__(self, venv: VecEnv, verbose: int = 1) -> None:
        super().__init__(venv)
        self.verbose = verbose
        self.running = np.zeros(self.num_envs)
        self.episode_costs: list[float] = []

    def reset(self) -> VecEnvObs:
        self.running = np.zeros(self.num_envs)
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        for index, info in enumerate(infos):
            if "cost" not in info:
                continue
            self.running[index] += float(np.atleast_1d(np.asarray(info["cost"], dtype=np.float64))[0])
            if dones[index]:
                self.episode_costs.append(float(self.running[index]))
                if self.verbose:
                    print(f"Episode Cost: {self.running[index]:.2f}")
                self.running[index] = 0.0
        return observations, rewards, dones, infos
