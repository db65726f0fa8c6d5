"""The rollout buffer with p cost channels, fed by the cost-aware rollout loop."""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safemeta.common.gae import compute_gae

__all__ = ["CostRolloutBuffer", "CostRolloutBufferSamples"]


class CostRolloutBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_cost_values: th.Tensor
    cost_advantages: th.Tensor
    cost_returns: th.Tensor


class CostRolloutBuffer(RolloutBuffer):
    r"""
    SB3's rollout buffer plus p cost channels, whose advantages come from the same GAE function
    (:func:`sb3_safemeta.common.gae.compute_gae`) as the reward's, with their own lambda.

    ================  ===============================  =======  =================================
    field             shape (before ``get()``)         dtype    meaning
    ================  ===============================  =======  =================================
    observations      (n_steps, n_envs, \*obs_shape)   float32  s_t
    actions           (n_steps, n_envs, action_dim)    float32  a_t
    rewards           (n_steps, n_envs)                float32  r_t (+ gamma V(s_T) on truncation)
    costs             (n_steps, n_envs, p)             float32  c_t (+ gamma Vc(s_T) on truncation)
    episode_starts    (n_steps, n_envs)                float32  1 if s_t starts an episode
    values            (n_steps, n_envs)                float32  V(s_t)
    cost_values       (n_steps, n_envs, p)             float32  Vc_i(s_t)
    log_probs         (n_steps, n_envs)                float32  log pi(a_t | s_t)
    advantages        (n_steps, n_envs)                float32  GAE(gamma, gae_lambda) of rewards
    returns           (n_steps, n_envs)                float32  advantages + values
    cost_advantages   (n_steps, n_envs, p)             float32  GAE(gamma, cost_gae_lambda) of costs
    cost_returns      (n_steps, n_envs, p)             float32  cost_advantages + cost_values
    ================  ===============================  =======  =================================

    ``get()`` flattens the arrays above IN PLACE to (n_steps * n_envs, ...) (SB3 behaviour) and sets
    ``generator_ready``; read per-step arrays (e.g. :class:`~sb3_safemeta.common.rollout_data.RolloutData`)
    before calling it.

    :param buffer_size: max number of elements in the buffer
    :param observation_space: observation space
    :param action_space: action space
    :param device: PyTorch device
    :param gae_lambda: GAE lambda of the rewards
    :param gamma: discount factor (rewards and costs)
    :param n_envs: number of parallel environments
    :param n_costs: number of cost channels p
    :param cost_gae_lambda: GAE lambda of the costs (None: ``gae_lambda``)
    """

    costs: np.ndarray
    cost_values: np.ndarray
    cost_advantages: np.ndarray
    cost_returns: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        n_costs: int = 1,
        cost_gae_lambda: float | None = None,
    ):
        self.n_costs = int(n_costs)
        self.cost_gae_lambda = gae_lambda if cost_gae_lambda is None else float(cost_gae_lambda)
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)

    def reset(self) -> None:
        shape = (self.buffer_size, self.n_envs, self.n_costs)
        self.costs = np.zeros(shape, dtype=np.float32)
        self.cost_values = np.zeros(shape, dtype=np.float32)
        self.cost_advantages = np.zeros(shape, dtype=np.float32)
        self.cost_returns = np.zeros(shape, dtype=np.float32)
        super().reset()

    def add(self, *args, cost: np.ndarray, cost_value: th.Tensor, **kwargs) -> None:  # type: ignore[override]
        """
        SB3's ``add`` plus this step's costs and cost values.

        :param cost: (n_envs, p)
        :param cost_value: (n_envs, p) cost values Vc(s_t)
        """
        self.costs[self.pos] = np.asarray(cost, dtype=np.float32).reshape(self.n_envs, self.n_costs)
        self.cost_values[self.pos] = cost_value.clone().cpu().numpy().reshape(self.n_envs, self.n_costs)
        super().add(*args, **kwargs)

    def compute_returns_and_advantage(
        self, last_values: th.Tensor, dones: np.ndarray, last_cost_values: th.Tensor | None = None
    ) -> None:
        """
        GAE for the reward and for every cost channel.

        :param last_values: V(s) after the last step, (n_envs, 1)
        :param dones: (n_envs,) whether the last step ended an episode
        :param last_cost_values: Vc(s) after the last step, (n_envs, p)
        """
        if last_cost_values is None:
            raise ValueError("last_cost_values is required: the cost advantages need a bootstrap value")
        advantages, returns = compute_gae(
            self.rewards, self.values, self.episode_starts, last_values.clone().cpu().numpy().flatten(), dones,
            self.gamma, self.gae_lambda,
        )  # fmt: skip
        self.advantages, self.returns = advantages.astype(np.float32), returns.astype(np.float32)
        cost_advantages, cost_returns = compute_gae(
            self.costs, self.cost_values, self.episode_starts,
            last_cost_values.clone().cpu().numpy().reshape(self.n_envs, self.n_costs), dones,
            self.gamma, self.cost_gae_lambda,
        )  # fmt: skip
        self.cost_advantages, self.cost_returns = cost_advantages.astype(np.float32), cost_returns.astype(np.float32)

    def get(self, batch_size: int | None = None) -> Generator[CostRolloutBufferSamples, None, None]:  # type: ignore[override]
        assert self.full, "the buffer must be full before sampling"
        indices = np.random.permutation(self.buffer_size * self.n_envs)
        if not self.generator_ready:
            for name in (
                "observations", "actions", "values", "log_probs", "advantages", "returns",
                "cost_values", "cost_advantages", "cost_returns",
            ):  # fmt: skip
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        if batch_size is None:
            batch_size = self.buffer_size * self.n_envs
        start = 0
        while start < self.buffer_size * self.n_envs:
            yield self._get_samples(indices[start : start + batch_size])
            start += batch_size

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> CostRolloutBufferSamples:  # type: ignore[override]
        data = (
            self.observations[batch_inds],
            self.actions[batch_inds],
            self.values[batch_inds].flatten(),
            self.log_probs[batch_inds].flatten(),
            self.advantages[batch_inds].flatten(),
            self.returns[batch_inds].flatten(),
            self.cost_values[batch_inds].reshape(-1, self.n_costs),
            self.cost_advantages[batch_inds].reshape(-1, self.n_costs),
            self.cost_returns[batch_inds].reshape(-1, self.n_costs),
        )
        return CostRolloutBufferSamples(*tuple(map(self.to_torch, data)))
