"""
Tabular CMDPs as SB3 data, shared by the tests that check sampled code paths against the exact oracle
(:mod:`sb3_safemeta.tabular`): a categorical policy with free logits over one-hot states, every (s, a) pair
as a batch with the weights that make sample sums exact expectations, and central finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor

from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.tabular import TabularCMDP, TabularTaskFamily, softmax_policy


class DoubleFlatten(FlattenExtractor):
    """SB3 preprocessing casts Box observations to float32; cast the (exact, one-hot) features back to float64."""

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return super().forward(observations).double()


def tabular_policy(logits: np.ndarray, bias: np.ndarray | None = None, dtype: th.dtype = th.float32) -> ActorCriticPolicy:
    """
    A categorical SB3 policy on one-hot observations, no hidden layer: logits(s, a) = W[a, s] + b[a].

    :param logits: (S, A), W = logits^T
    :param bias: (A,) b (default zeros)
    :param dtype: parameter dtype; with ``th.float64`` the features are float64 too (:class:`DoubleFlatten`)
    """
    n_states, n_actions = logits.shape
    kwargs = dict(features_extractor_class=DoubleFlatten) if dtype == th.float64 else {}
    policy = ActorCriticPolicy(
        gym.spaces.Box(0, 1, (n_states,)),
        gym.spaces.Discrete(n_actions),
        lambda _: 1e-3,
        net_arch=dict(pi=[], vf=[]),
        **kwargs,
    ).to(dtype)
    with th.no_grad():
        policy.action_net.weight.copy_(th.as_tensor(np.asarray(logits).T, dtype=dtype))
        policy.action_net.bias.copy_(th.as_tensor(np.zeros(n_actions) if bias is None else bias, dtype=dtype))
    return policy


def random_tabular_policy(seed: int, n_states: int, n_actions: int, dtype: th.dtype = th.float32) -> ActorCriticPolicy:
    """:func:`tabular_policy` with W (A, S) and then b (A,) drawn standard normal from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(n_actions, n_states))
    return tabular_policy(weight.T, rng.normal(size=n_actions), dtype)


def flatten(tensors: Iterable[th.Tensor]) -> np.ndarray:
    """:return: the tensors' values, flattened and concatenated in order, float64"""
    return np.concatenate([tensor.detach().double().numpy().ravel() for tensor in tensors])


def flat_parameters(policy: ActorCriticPolicy) -> np.ndarray:
    """:return: (W, b) of a :func:`tabular_policy`, flattened in that order, float64"""
    return flatten([policy.action_net.weight, policy.action_net.bias])


def probabilities(flat: np.ndarray, n_states: int, n_actions: int) -> np.ndarray:
    """:return: the (S, A) action probabilities of the flat parameters (W, b) of :func:`flat_parameters`"""
    weight, bias = flat[: n_actions * n_states].reshape(n_actions, n_states), flat[n_actions * n_states :]
    return softmax_policy(weight.T + bias)


def exact_fisher(policy: np.ndarray) -> np.ndarray:
    """
    Hessian in (W, b) of the mean over states of KL(pi(.|s) || pi_(W,b)(.|s)) at pi, for a :func:`tabular_policy`
    with action probabilities ``policy`` (S, A): mean_s J_s^T (diag p_s - p_s p_s^T) J_s, J_s = d logits(s, .) / d (W, b).
    """
    n_states, n_actions = policy.shape
    n_parameters = n_actions * n_states + n_actions
    fisher = np.zeros((n_parameters, n_parameters))
    for state in range(n_states):
        jacobian = np.zeros((n_actions, n_parameters))
        for action in range(n_actions):
            jacobian[action, action * n_states + state] = 1.0
            jacobian[action, n_actions * n_states + action] = 1.0
        p = policy[state]
        fisher += jacobian.T @ (np.diag(p) - np.outer(p, p)) @ jacobian / n_states
    return fisher


def all_pairs(n_states: int, n_actions: int, dtype: th.dtype = th.float32) -> tuple[th.Tensor, th.Tensor]:
    """:return: every (s, a) pair once, s-major: one-hot observations (S A, S) and actions (S A,)"""
    observations = th.as_tensor(np.repeat(np.eye(n_states), n_actions, axis=0), dtype=dtype)
    return observations, th.as_tensor(np.tile(np.arange(n_actions), n_states))


def exact_batch(cmdp: TabularCMDP, policy: np.ndarray, dtype: th.dtype = th.float32) -> AdaptationBatch:
    """
    Every (s, a) pair once, weighted by nu^pi(s) pi(a|s): sample averages become exact expectations under ``policy``.

    :param dtype: of advantages and weights (observations are one-hot float32, exact; SB3 casts them to float32)
    """
    evaluation = cmdp.evaluate(policy)
    observations, actions = all_pairs(*policy.shape)

    def tensor(array):
        return th.as_tensor(np.asarray(array), dtype=dtype)

    return AdaptationBatch(
        observations=observations,
        actions=actions,
        advantages=tensor(evaluation.A.ravel()),
        cost_advantages=tensor(evaluation.Ac.reshape(cmdp.n_costs, -1).T),
        weights=tensor((evaluation.state_visitation[:, None] * policy).ravel()),
    )


def central_differences(function: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """:return: the gradient of a scalar ``function`` at ``x`` (any shape) by central differences with step ``h``"""
    gradient = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(*np.shape(x)):
        shift = np.zeros_like(x, dtype=np.float64)
        shift[index] = h
        gradient[index] = (function(x + shift) - function(x - shift)) / (2 * h)
    return gradient


class TabularTaskEnv(gym.Env):
    """
    A :class:`~sb3_safemeta.tabular.TabularTaskFamily` as a task environment (the protocol of
    :mod:`sb3_safemeta.common.tasks`): one-hot states, the task's reward, ``info["cost"]`` the task's costs,
    episodes of ``horizon`` steps from rho.

    :param family: the task family
    :param horizon: episode length
    """

    def __init__(self, family: TabularTaskFamily, horizon: int = 20) -> None:
        super().__init__()
        self.family, self.horizon = family, int(horizon)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (family.n_states,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(family.n_actions)
        self._task = family.sample_tasks(1, seed=0)[0]
        self._state, self._t = 0, 0

    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[dict]:
        return self.family.sample_tasks(n_tasks, seed=seed)

    def set_task(self, task: dict) -> None:
        self._task = task

    def get_task(self) -> dict:
        return self._task

    def _observation(self) -> np.ndarray:
        return np.eye(self.family.n_states, dtype=np.float32)[self._state]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state, self._t = int(self.np_random.choice(self.family.n_states, p=self.family.rho)), 0
        return self._observation(), {}

    def step(self, action):
        state, action = self._state, int(action)
        reward, cost = float(self._task["r"][state, action]), self._task["c"][:, state, action].astype(np.float64)
        self._state = int(self.np_random.choice(self.family.n_states, p=self.family.P[state, action]))
        self._t += 1
        return self._observation(), reward, False, self._t >= self.horizon, {"cost": cost}
