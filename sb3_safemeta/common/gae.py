"""
Generalized advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation"), as one pure function shared by the reward and every cost channel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compute_gae"]


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    GAE(gamma, lambda) advantages and lambda-returns, with SB3's conventions:
    ``episode_starts[t]`` is 1 when the observation of step t starts an episode (so step t - 1 ended
    one), ``dones`` (1 where the last step ended an episode) and ``last_values`` describe the state
    after the last step. Time-limit truncation is expected to be folded into ``rewards`` already
    (reward + gamma V(terminal observation)), as the rollout loop does.

    :param rewards: per-step signal, (n_steps, n_envs) or (n_steps, n_envs, k) for k channels
    :param values: value estimates of the same shape
    :param episode_starts: (n_steps, n_envs)
    :param last_values: (n_envs,) or (n_envs, k)
    :param dones: (n_envs,)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (1: Monte-Carlo return minus the value; 0: one-step TD error)
    :return: (advantages, returns = advantages + values), both like ``rewards``
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    channel_axes = (None,) * (rewards.ndim - 2)  # broadcast per-env flags over channels
    episode_starts = np.asarray(episode_starts, dtype=np.float64)[(slice(None), slice(None), *channel_axes)]
    not_done_last = (1.0 - np.asarray(dones, dtype=np.float64))[(slice(None), *channel_axes)]
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    n_steps = rewards.shape[0]
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal, next_values = not_done_last, np.asarray(last_values, dtype=np.float64)
        else:
            next_non_terminal, next_values = 1.0 - episode_starts[step + 1], values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        running = delta + gamma * gae_lambda * next_non_terminal * running
        advantages[step] = running
    return advantages, advantages + values
