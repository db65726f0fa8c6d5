"""Actor-critic policy with p cost-value heads and an explicit split of actor and critic parameters."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

__all__ = ["CostActorCriticPolicy", "MlpPolicy"]


class CostActorCriticPolicy(ActorCriticPolicy):
    """
    SB3's ``ActorCriticPolicy`` (Gaussian for Box, categorical for Discrete actions) plus a linear
    cost-value head with one output per cost channel, on the value network's latent features.
    The default network is the paper's (Appendix D.2): 2 hidden layers of 64 tanh units for the
    actor and for the critics.

    The actor's parameters are listed explicitly by :meth:`actor_parameters` (never by a name
    substring): safe adaptation and trust-region steps move exactly these, never a critic.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning rate schedule (of the critics' optimizer)
    :param n_costs: number of cost channels p
    :param args: forwarded to ``ActorCriticPolicy``
    :param kwargs: forwarded to ``ActorCriticPolicy`` (``net_arch``, ``activation_fn``, ...)
    """

    def __init__(self, observation_space, action_space, lr_schedule: Schedule, *args: Any, n_costs: int = 1, **kwargs: Any):
        if int(n_costs) < 1:
            raise ValueError(f"n_costs must be a positive integer, got {n_costs!r}")
        self.n_costs = int(n_costs)
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.cost_value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, self.n_costs)
        if self.ortho_init:
            self.cost_value_net.apply(lambda module: self.init_weights(module, gain=1.0))
        # The actor is never trained by gradient descent on a loss (A^s fits it, a TRPO step moves it), so the
        # policy's optimizer (SB3's ``policy.optimizer``, saved in the zip) is the critics' optimizer: value
        # and cost-value heads and their feature extractor, never an actor parameter.
        self.optimizer = self.optimizer_class(self.critic_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["n_costs"] = self.n_costs
        return data

    def _critic_latent(self, obs: PyTorchObs) -> th.Tensor:
        features = super().extract_features(obs, self.vf_features_extractor)
        assert isinstance(features, th.Tensor)  # share_features_extractor or not, one extractor here
        return self.mlp_extractor.forward_critic(features)

    def predict_cost_values(self, obs: PyTorchObs) -> th.Tensor:
        """:return: the cost values Vc_i(s), shape (batch, n_costs)"""
        return self.cost_value_net(self._critic_latent(obs))

    def forward_with_costs(
        self, obs: PyTorchObs, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        One forward pass for the rollout loop.

        :param obs: observations
        :param deterministic: take the mode of the action distribution
        :return: actions, values (batch, 1), cost values (batch, n_costs), log-probabilities
        """
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.mlp_extractor.forward_critic(vf_features)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, self.value_net(latent_vf), self.cost_value_net(latent_vf), log_prob

    def actor_parameters(self) -> list[nn.Parameter]:
        """:return: the parameters of the action distribution pi_theta (shared feature extractor included)"""
        modules: list[nn.Module] = [self.pi_features_extractor, self.mlp_extractor.policy_net, self.action_net]
        parameters = [p for module in modules for p in module.parameters()]
        if isinstance(getattr(self, "log_std", None), nn.Parameter):
            parameters.append(self.log_std)
        return parameters

    def critic_parameters(self) -> list[nn.Parameter]:
        """:return: the parameters of the value and cost-value heads (never shared with the actor)"""
        modules: list[nn.Module] = [self.mlp_extractor.value_net, self.value_net, self.cost_value_net]
        if not self.share_features_extractor:
            modules.insert(0, self.vf_features_extractor)
        return [p for module in modules for p in module.parameters()]


MlpPolicy = CostActorCriticPolicy
