"""
Fitting only the last layer of the actor ("head") to the adapted policy pi^u, the fast option of the
parametric adaptation (``fit="head"`` in :func:`sb3_safemeta.common.adaptation.parametric.parametric_safe_adapt`).

The actor of an SB3 ``ActorCriticPolicy`` is ``action_net(latent(s))`` (plus a state-independent
``log_std`` for Gaussian actions). With the latent features held fixed, the weighted maximum-likelihood
fit of Appendix E.2 (see ``_Surrogate.fit``) is

- for a diagonal Gaussian: a weighted linear least-squares problem for the mean and the weighted
  residual variance for ``log_std``, solved in closed form (this module), exactly;
- for other distributions (categorical): a convex problem in the head, solved by L-BFGS on the head
  alone, where a step costs one matrix product instead of a pass through the whole network.

Why offer it: the dual solve needs one fit of pi^u per dual iteration. A full-network fit costs about
0.3 s for 8000 samples of a 2x64 policy on one core, i.e. several times the time of collecting the
samples on a fast simulator; a head fit costs milliseconds. Adapting only the last layer on top of
features learned in meta-training is also the ANIL approach ("almost no inner loop", Raghu et al.,
2020), which matches full-network adaptation in MAML-style meta-learning. The features of an untrained
network are random, so for single-task learning from scratch the full fit (the default) is the one to use.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

__all__ = ["actor_latent", "fit_head", "head_parameters"]


def actor_latent(policy: ActorCriticPolicy, observations: th.Tensor) -> th.Tensor:
    """:return: the actor's last hidden layer for ``observations`` (the input of ``action_net``), without gradient"""
    with th.no_grad():
        features = policy.extract_features(observations, policy.pi_features_extractor)
        assert isinstance(features, th.Tensor)  # one extractor given: one tensor
        return policy.mlp_extractor.forward_actor(features)


def head_parameters(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """:return: the parameters of ``action_net`` and, for Gaussian policies, ``log_std``"""
    parameters = list(policy.action_net.parameters())
    if isinstance(getattr(policy, "log_std", None), nn.Parameter):
        parameters.append(policy.log_std)
    return parameters


def fit_head(
    policy: ActorCriticPolicy, latent: th.Tensor, actions: th.Tensor, sample_weights: th.Tensor, max_iter: int
) -> None:
    """
    Maximise sum_i w_i log pi(a_i | s_i) over the head only, in place, from the current head.

    :param policy: the policy (its ``action_net`` and ``log_std`` move)
    :param latent: :func:`actor_latent` of the samples' observations, (n, k)
    :param actions: the sampled actions
    :param sample_weights: w_i >= 0 summing to one, (n,) (float64 for precision)
    :param max_iter: L-BFGS iterations when there is no closed form
    """
    if _is_plain_diagonal_gaussian(policy):
        _fit_gaussian_head(policy, latent, actions, sample_weights)
        return
    optimizer = th.optim.LBFGS(
        head_parameters(policy), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_change=0.0
    )

    def closure() -> th.Tensor:
        optimizer.zero_grad()
        log_prob = policy._get_action_dist_from_latent(latent).log_prob(actions)
        loss = -th.sum(sample_weights * log_prob.to(sample_weights.dtype))
        loss.backward()
        return loss

    optimizer.step(closure)


def _is_plain_diagonal_gaussian(policy: ActorCriticPolicy) -> bool:
    """A Gaussian with mean ``action_net(latent)`` and a free ``log_std`` vector (not gSDE, not squashed)."""
    return type(policy.action_dist) is DiagGaussianDistribution and isinstance(policy.action_net, nn.Linear)


def _fit_gaussian_head(policy: ActorCriticPolicy, latent: th.Tensor, actions: th.Tensor, weights: th.Tensor) -> None:
    """
    Exact weighted maximum likelihood of mean = W z + b, std = exp(log_std) (independent per action dimension):
    (W, b) is the weighted least-squares solution whatever the std, then std_j^2 is the weighted mean squared
    residual. Computed in float64. A ridge of 1e-8 (relative to the trace) pulls the head towards its current
    value, not towards 0, along directions the samples do not determine (few effective samples, collinear
    features): there pi^u is not identified by the data and the fit should not move the policy.
    """
    dtype = th.float64
    weights = weights.to(dtype)
    design = th.cat([latent.to(dtype), th.ones(len(latent), 1, dtype=dtype, device=latent.device)], dim=1)
    targets = actions.reshape(len(actions), -1).to(dtype)
    net = policy.action_net
    assert isinstance(net, nn.Linear)
    current = th.cat([net.weight.detach().T, net.bias.detach()[None, :]], dim=0).to(dtype)
    gram = design.T @ (weights[:, None] * design)
    ridge = 1e-8 * float(th.trace(gram)) / gram.shape[0]
    identity = th.eye(gram.shape[0], dtype=dtype, device=gram.device)
    solution = th.linalg.solve(gram + ridge * identity, design.T @ (weights[:, None] * targets) + ridge * current)
    residuals = targets - design @ solution
    variance = (weights[:, None] * residuals**2).sum(dim=0).clamp_min(1e-12)
    with th.no_grad():
        net.weight.copy_(solution[:-1].T.to(net.weight.dtype))
        net.bias.copy_(solution[-1].to(net.bias.dtype))
        log_std = policy.log_std
        assert isinstance(log_std, nn.Parameter)
        log_std.copy_((0.5 * th.log(variance)).to(log_std.dtype))
