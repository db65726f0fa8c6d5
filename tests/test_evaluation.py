"""evaluate_policy_cost against episodes whose returns and costs are known in closed form."""

import gymnasium as gym
import numpy as np
import pytest
from hand_made_envs import EpisodeClockEnv
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_safemeta.common.evaluation import evaluate_policy_cost


class CountingEnv(EpisodeClockEnv):
    """Episode of ``length`` steps; step t (1-based) pays reward t and costs (1, t) if the action is 1, else (0, 0)."""

    def __init__(self, length: int = 3, report_cost: bool = True):
        self.observation_space = gym.spaces.Box(0, 10, (1,))
        self.action_space = gym.spaces.Discrete(2)
        self.length, self.report_cost = length, report_cost

    def step(self, action):
        self.t += 1
        info = {"cost": [float(action), float(action) * self.t]} if self.report_cost else {}
        return np.full(1, self.t, dtype=np.float32), float(self.t), False, self.t >= self.length, info


class Always:
    def __init__(self, action: int):
        self.action = action

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.full(len(observation), self.action), None


@pytest.mark.parametrize("length", [3, 4])
def test_returns_and_costs_are_the_closed_form_sums(length):
    env = make_vec_env(CountingEnv, n_envs=3, env_kwargs=dict(length=length))
    returns, costs = evaluate_policy_cost(Always(1), env, n_eval_episodes=7, n_costs=2)
    triangle = length * (length + 1) / 2
    assert costs.shape == (7, 2) and returns.shape == (7,)
    np.testing.assert_array_equal(returns, np.full(7, triangle))
    np.testing.assert_array_equal(costs, np.tile([length, triangle], (7, 1)))
    # the same episodes as SB3's evaluate_policy
    sb3_returns, _ = evaluate_policy(Always(1), env, n_eval_episodes=7, return_episode_rewards=True)
    np.testing.assert_array_equal(returns, sb3_returns)
    _, no_costs = evaluate_policy_cost(Always(0), env, n_eval_episodes=4, n_costs=2)
    np.testing.assert_array_equal(no_costs, np.zeros((4, 2)))


def test_missing_cost_is_a_clear_error():
    env = make_vec_env(CountingEnv, n_envs=1, env_kwargs=dict(report_cost=False))
    with pytest.raises(ValueError, match=r"info\['cost'\]"):
        evaluate_policy_cost(Always(1), env, n_eval_episodes=1)
