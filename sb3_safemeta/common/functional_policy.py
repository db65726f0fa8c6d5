"""
Policies as functions of their parameters, for the meta-learners that differentiate through an inner step
(``MAMLCostPenalty``, ``MetaCPO``): the actor's parameters by name, log-probabilities with substituted
parameters (``torch.func.functional_call``, so that theta'(phi) keeps its graph back to phi), and small
helpers on top.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from torch import nn
from torch.func import functional_call

__all__ = ["actor_parameter_dict", "functional_log_prob", "load_actor_parameters", "mean_kl", "weighted_mean"]


def actor_parameter_dict(policy: ActorCriticPolicy) -> dict[str, th.Tensor]:
    """
    :param policy: a policy with ``actor_parameters()`` (``CostActorCriticPolicy``), or any SB3
        ``ActorCriticPolicy`` (then its action distribution's parameters: features extractor, policy net,
        action net and ``log_std``)
    :return: the actor's parameters phi, by their name in ``policy.named_parameters()`` (chosen by identity,
        never by a name substring, so that no critic head joins the inner or the outer step)
    """
    if hasattr(policy, "actor_parameters"):
        actor = policy.actor_parameters()  # type: ignore[operator]
    else:
        modules: list[nn.Module] = [policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net]
        actor = [p for module in modules for p in module.parameters()]
        if isinstance(getattr(policy, "log_std", None), nn.Parameter):
            actor.append(policy.log_std)
    chosen = {id(parameter) for parameter in actor}
    return {name: parameter for name, parameter in policy.named_parameters() if id(parameter) in chosen}


class _LogProb(nn.Module):
    """``forward(obs, actions) = log pi(actions|obs)``: the method ``functional_call`` needs (it calls ``forward``)."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return self.policy.get_distribution(observations).log_prob(actions)


def functional_log_prob(
    policy: ActorCriticPolicy, parameters: dict[str, th.Tensor], observations: th.Tensor, actions: th.Tensor
) -> th.Tensor:
    """
    log pi_theta(a|s) with the actor's parameters replaced by ``parameters`` (any tensors, e.g. theta'(phi) with
    its graph back to phi); the policy's own parameters are left untouched.

    :param policy: the policy that defines the architecture
    :param parameters: name -> tensor, names of ``policy.named_parameters()`` (see :func:`actor_parameter_dict`)
    :param observations: ``(n, *obs_shape)``
    :param actions: ``(n, *action_shape)`` (int64 (n,) for Discrete)
    :return: (n,)
    """
    prefixed = {f"policy.{name}": value for name, value in parameters.items()}
    return functional_call(_LogProb(policy), prefixed, (observations, actions))


def load_actor_parameters(target: ActorCriticPolicy, parameters: dict[str, th.Tensor]) -> None:
    """Copy actor parameters (e.g. theta'), by name, into ``target`` (a policy of the same architecture)."""
    with th.no_grad():
        for name, value in parameters.items():
            target.get_parameter(name).copy_(value)


def mean_kl(policy: BasePolicy, other: BasePolicy, observations: th.Tensor) -> float:
    """:return: E_s[KL(policy(.|s) || other(.|s))] on the given states"""
    with th.no_grad():
        kl = th.distributions.kl_divergence(
            policy.get_distribution(observations).distribution,  # type: ignore[operator]
            other.get_distribution(observations).distribution,  # type: ignore[operator]
        )
    return float((kl.sum(dim=-1) if kl.ndim > 1 else kl).mean())


def weighted_mean(values: th.Tensor, weights: th.Tensor | None) -> th.Tensor:
    """:return: the plain mean of ``values`` (on-policy samples), or their sum weighted by ``weights`` (summing to one)"""
    return th.mean(values) if weights is None else th.sum(weights * values)
