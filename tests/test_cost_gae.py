"""
Cost advantages against closed-form values (the pattern of SB3's ``tests/test_gae.py``): a hand-made
environment with known rewards and costs, a policy whose value and cost-value heads return known
constants, and the rollout loop of :class:`OnPolicyCostAlgorithm` (through SafeAdapter) filling the
:class:`CostRolloutBuffer`. Both episode ends are covered: termination (no bootstrap) and time-limit
truncation (reward and cost bootstrapped with gamma V(s_T) and gamma Vc(s_T)).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from hand_made_envs import EpisodeClockEnv
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta import SafeAdapter
from sb3_safemeta.common.gae import compute_gae

EPISODE_LENGTH = 5
REWARD = 1.0
COSTS = (0.5, 2.0)  # two cost channels, per step
VALUE = 0.7
COST_VALUES = (0.3, -1.1)


class ConstantEnv(EpisodeClockEnv):
    """Reward 1 and costs (0.5, 2) every step; the episode ends after 5 steps, terminated or truncated."""

    def __init__(self, truncate: bool = False, report_cost: bool = True, n_costs: int = 2):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,))
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,))
        self.truncate, self.report_cost, self.n_costs = truncate, report_cost, n_costs

    def step(self, action):
        self.t += 1
        end = self.t >= EPISODE_LENGTH
        info = {"cost": np.asarray(COSTS[: self.n_costs])} if self.report_cost else {}
        return np.zeros(1, dtype=np.float32), REWARD, end and not self.truncate, end and self.truncate, info


def constant_critics(model: SafeAdapter) -> None:
    """V(s) = 0.7 and Vc(s) = (0.3, -1.1) for every s: zero weights, constant biases."""
    with th.no_grad():
        model.policy.value_net.weight.zero_()
        model.policy.value_net.bias.fill_(VALUE)
        model.policy.cost_value_net.weight.zero_()
        model.policy.cost_value_net.bias.copy_(th.as_tensor(COST_VALUES))


def closed_form(signal: float, value: float, gamma: float, gae_lambda: float, truncated: bool) -> np.ndarray:
    """
    GAE of one episode of constant per-step signal r and constant value V: delta_t = r + gamma V - V
    except the last step, where delta = r + gamma V - V on truncation (bootstrap) and r - V on termination.
    A_t = sum_k (gamma lambda)^k delta_{t+k}.
    """
    deltas = np.full(EPISODE_LENGTH, signal + gamma * value - value)
    if not truncated:
        deltas[-1] = signal - value
    advantages = np.zeros(EPISODE_LENGTH)
    running = 0.0
    for t in reversed(range(EPISODE_LENGTH)):
        running = deltas[t] + gamma * gae_lambda * running
        advantages[t] = running
    return advantages


@pytest.mark.parametrize("truncated", [False, True])
@pytest.mark.parametrize("gae_lambda,cost_gae_lambda", [(0.95, 0.9), (1.0, 0.0)])
def test_cost_gae_matches_closed_form(truncated, gae_lambda, cost_gae_lambda):
    gamma = 0.9
    env = make_vec_env(ConstantEnv, n_envs=2, env_kwargs=dict(truncate=truncated))
    model = SafeAdapter(
        "MlpPolicy", env, cost_limit=[10.0, 10.0], n_steps=3 * EPISODE_LENGTH, gamma=gamma,
        gae_lambda=gae_lambda, cost_gae_lambda=cost_gae_lambda, seed=0,
    )  # fmt: skip
    constant_critics(model)
    model._setup_learn(total_timesteps=1)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    buffer = model.rollout_buffer

    # every rollout step lies in a complete episode: 3 episodes of 5 steps per env
    expected = np.tile(closed_form(REWARD, VALUE, gamma, gae_lambda, truncated), 3)
    for env_index in range(2):
        np.testing.assert_allclose(buffer.advantages[:, env_index], expected, rtol=1e-5)
        np.testing.assert_allclose(buffer.returns[:, env_index], expected + VALUE, rtol=1e-5)
        for channel in range(2):
            expected_cost = np.tile(closed_form(COSTS[channel], COST_VALUES[channel], gamma, cost_gae_lambda, truncated), 3)
            np.testing.assert_allclose(buffer.cost_advantages[:, env_index, channel], expected_cost, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                buffer.cost_returns[:, env_index, channel], expected_cost + COST_VALUES[channel], rtol=1e-5, atol=1e-6
            )
    # episode accounting is undiscounted and never includes the bootstrap
    assert model.rollout_episode_lengths == [EPISODE_LENGTH] * 6
    np.testing.assert_allclose(model.rollout_episode_returns, [EPISODE_LENGTH * REWARD] * 6)
    np.testing.assert_allclose(model.rollout_episode_costs, [np.asarray(COSTS) * EPISODE_LENGTH] * 6)


def test_cost_gae_bootstraps_an_unfinished_episode():
    """A rollout that cuts an episode bootstraps with the cost value of the last observation."""
    gamma, lam = 0.9, 0.8
    env = make_vec_env(ConstantEnv, n_envs=1)
    model = SafeAdapter("MlpPolicy", env, cost_limit=[10.0, 10.0], n_steps=3, gamma=gamma, gae_lambda=lam, seed=0)
    constant_critics(model)
    model._setup_learn(total_timesteps=1)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    delta = COSTS[1] + gamma * COST_VALUES[1] - COST_VALUES[1]
    expected = [delta * (1 + gamma * lam + (gamma * lam) ** 2), delta * (1 + gamma * lam), delta]
    np.testing.assert_allclose(model.rollout_buffer.cost_advantages[:, 0, 1], expected, rtol=1e-5)
    assert model.rollout_episode_costs == []


def test_compute_gae_is_the_same_function_for_every_channel():
    """k channels at once equal k single-channel calls (the reward path and the cost path share it)."""
    rng = np.random.default_rng(0)
    n_steps, n_envs, k = 7, 3, 2
    signal, values = rng.normal(size=(n_steps, n_envs, k)), rng.normal(size=(n_steps, n_envs, k))
    starts = (rng.random((n_steps, n_envs)) < 0.3).astype(float)
    last_values, dones = rng.normal(size=(n_envs, k)), np.array([1.0, 0.0, 0.0])
    together, _ = compute_gae(signal, values, starts, last_values, dones, 0.97, 0.9)
    for channel in range(k):
        alone, _ = compute_gae(signal[..., channel], values[..., channel], starts, last_values[:, channel], dones, 0.97, 0.9)
        np.testing.assert_allclose(together[..., channel], alone)


def test_missing_cost_is_an_error():
    env = make_vec_env(ConstantEnv, n_envs=1, env_kwargs=dict(report_cost=False))
    model = SafeAdapter("MlpPolicy", env, cost_limit=[10.0, 10.0], n_steps=4)
    with pytest.raises(KeyError, match=r"info\['cost'\]"):
        model.learn(4)


def test_cost_of_wrong_length_is_an_error():
    env = make_vec_env(ConstantEnv, n_envs=1, env_kwargs=dict(n_costs=1))
    model = SafeAdapter("MlpPolicy", env, cost_limit=[10.0, 10.0], n_costs=2, n_steps=4)
    with pytest.raises(ValueError, match="expected n_costs=2"):
        model.learn(4)
