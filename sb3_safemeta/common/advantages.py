"""
Monte-Carlo advantages with a per-task linear feature baseline (Algorithms 3-4 of the paper).

During meta-training every task is seen for one rollout only, so a value network shared across
tasks is a poor baseline (values differ between tasks) and a per-task network is too costly to fit:
the paper's Algorithms 3-4 use Monte-Carlo estimates of Q instead. We subtract a baseline fitted per
task and per channel by ridge regression on features of the observation and the time step (the
"linear feature baseline" of Duan et al. 2016, used by MAML and ProMP) to reduce variance; the
baseline depends on the state only, so it adds no bias to any E_{a~pi_phi}[ratio * A] term to
first order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["episode_time_steps", "linear_baseline_advantages"]


def episode_time_steps(episode_starts: np.ndarray, first_step: np.ndarray | None = None) -> np.ndarray:
    """
    :param episode_starts: (n_steps, n_envs), 1 where an episode starts at that step
    :param first_step: (n_envs,) time step of the first row (episodes running over from a previous rollout)
    :return: the time step t within its episode of every sample, (n_steps, n_envs)
    """
    n_steps, n_envs = episode_starts.shape
    time_steps = np.zeros((n_steps, n_envs), dtype=np.float64)
    current = np.zeros(n_envs) if first_step is None else np.asarray(first_step, dtype=np.float64).copy()
    for step in range(n_steps):
        current = np.where(episode_starts[step] > 0, 0.0, current)
        time_steps[step] = current
        current = current + 1.0
    return time_steps


def _features(observations: np.ndarray, time_steps: np.ndarray) -> np.ndarray:
    """[o, o^2, t, t^2, t^3, 1] with o clipped and t scaled as in Duan et al. (2016)."""
    obs = np.clip(observations.reshape(len(observations), -1), -10, 10)
    t = time_steps.reshape(-1, 1) / 100.0
    return np.concatenate([obs, obs**2, t, t**2, t**3, np.ones_like(t)], axis=1)


def linear_baseline_advantages(
    returns: np.ndarray, observations: np.ndarray, time_steps: np.ndarray, ridge: float = 1e-5
) -> np.ndarray:
    """
    Fit b(s, t) = features . w to the returns of ONE task by ridge regression and return A = R - b.

    :param returns: (n,) or (n, k) Monte-Carlo returns (k channels fitted independently)
    :param observations: ``(n, *obs_shape)``
    :param time_steps: (n,)
    :param ridge: initial ridge coefficient, raised tenfold until the system is well conditioned
    :return: advantages of the same shape as ``returns``
    """
    features = _features(observations, time_steps)
    targets = returns.reshape(len(returns), -1)
    gram = features.T @ features
    rhs = features.T @ targets
    coefficient = ridge
    for _ in range(8):
        weights = np.linalg.solve(gram + coefficient * np.eye(gram.shape[0]), rhs)
        if np.all(np.isfinite(weights)):
            break
        coefficient *= 10.0
    return (targets - features @ weights).reshape(returns.shape)
