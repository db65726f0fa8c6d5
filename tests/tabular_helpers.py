"""Tabular CMDPs as SB3 data: a categorical policy with free logits over one-hot states, and exact sample batches."""

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.tabular import TabularCMDP


def tabular_policy(logits: np.ndarray) -> ActorCriticPolicy:
    """A categorical SB3 policy on one-hot observations whose logits are ``logits`` (S, A): W = logits^T, no bias."""
    n_states, n_actions = logits.shape
    policy = ActorCriticPolicy(
        gym.spaces.Box(0, 1, (n_states,)), gym.spaces.Discrete(n_actions), lambda _: 1e-3, net_arch=dict(pi=[], vf=[])
    )
    with th.no_grad():
        policy.action_net.weight.copy_(th.as_tensor(logits.T, dtype=th.float32))
        policy.action_net.bias.zero_()
    return policy


def exact_batch(cmdp: TabularCMDP, policy: np.ndarray) -> AdaptationBatch:
    """Every (s, a) pair once, weighted by nu^pi(s) pi(a|s): sample averages become exact expectations under ``policy``."""
    evaluation = cmdp.evaluate(policy)
    n_states, n_actions = policy.shape

    def tensor(array):
        return th.as_tensor(np.asarray(array), dtype=th.float32)

    return AdaptationBatch(
        observations=tensor(np.repeat(np.eye(n_states), n_actions, axis=0)),
        actions=th.as_tensor(np.tile(np.arange(n_actions), n_states)),
        advantages=tensor(evaluation.A.ravel()),
        cost_advantages=tensor(evaluation.Ac.reshape(cmdp.n_costs, -1).T),
        weights=tensor((evaluation.state_visitation[:, None] * policy).ravel()),
    )
