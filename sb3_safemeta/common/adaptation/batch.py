"""
The data of one adaptation step A^s: samples of the current policy pi_phi with their reward and cost
advantages and sample weights. Built by :class:`sb3_safemeta.common.rollout_data.RolloutData` from a
rollout, or by enumeration of a tabular CMDP in the tests; consumed by the parametric adaptation
(:mod:`sb3_safemeta.common.adaptation.parametric`) and by the meta-learners' surrogates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th

__all__ = ["AdaptationBatch"]


@dataclass
class AdaptationBatch:
    """
    The data of one adaptation step, collected with pi_phi (all tensors on the policy's device).

    :param observations: ``(n, *obs_shape)``
    :param actions: ``(n, *action_shape)``
    :param advantages: reward advantages A(s, a), (n,)
    :param cost_advantages: cost advantages A_ci(s, a), (n, p)
    :param weights: sample weights summing to one, (n,); uniform for on-policy samples, or the
        exact visitation nu(s) pi_phi(a|s) when all state-action pairs are enumerated (tests)
    """

    observations: th.Tensor
    actions: th.Tensor
    advantages: th.Tensor
    cost_advantages: th.Tensor
    weights: th.Tensor

    def __post_init__(self) -> None:
        for name in ("advantages", "cost_advantages", "weights"):
            value = getattr(self, name)
            if not bool(th.isfinite(value).all()):
                raise ValueError(f"{name} contains NaN or infinite values: check the rewards, costs and value estimates")
        if self.cost_advantages.ndim != 2 or self.cost_advantages.shape[0] != self.advantages.shape[0]:
            raise ValueError(f"cost_advantages must have shape (n, p), got {tuple(self.cost_advantages.shape)}")

    def subset(self, mask: th.Tensor) -> AdaptationBatch:
        """
        :param mask: the samples to keep, boolean (n,)
        :return: those samples, their weights renormalised to sum to one and both advantages centred again under
            them (E_w[A] = E_w[A_c] = 0, so that the surrogate at pi_phi is Jc(pi_phi) on the subset too: the
            episodes of a part have their own mean advantage, H times which would shift every g of that part); the
            scale of the advantages stays the whole batch's
        """
        weights = self.weights[mask]
        weights = weights / weights.sum()
        advantages, cost_advantages = self.advantages[mask], self.cost_advantages[mask]
        return AdaptationBatch(
            self.observations[mask],
            self.actions[mask],
            advantages - weights.to(advantages.dtype) @ advantages,
            cost_advantages - weights.to(cost_advantages.dtype) @ cost_advantages,
            weights,
        )
