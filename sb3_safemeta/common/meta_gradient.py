"""
Surrogates whose gradients at phi are the meta-policy updates of Algorithms 2 and 4, for the TRPO
step of :mod:`sb3_safemeta.common.trust_region`.

- Meta-gradient (Algorithm 4, line 7): for each task tau, data (s, a) collected with the adapted
  policy pi^tau and its advantages A^{pi^tau}; the surrogate
  ``L(phi') = mean_tau E_{s,a~pi^tau}[ (pi_phi'(a|s) / pi_phi(a|s)) A^{pi^tau}(s, a) ]`` has gradient
  ``mean_tau E[grad_phi log pi_phi(a|s) A^{pi^tau}(s, a)]`` at phi' = phi: the paper's
  ``grad_phi f_phi(s, a) Q^{pi^tau}`` with f the log-density and an advantage baseline.
  No second derivative of anything appears (the Hessian-free claim).
- Cost-reducing step (Algorithm 2, lines 10-12): on the meta-policy's own data for the violating
  tasks, ``-mean_tau E_{s,a~pi_phi}[ratio A_ci]``, whose gradient is minus the policy gradient of Jc_i.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

__all__ = ["ImportanceWeightedSurrogate", "MeanKL"]


class ImportanceWeightedSurrogate:
    """
    ``mean_k E_{D_k}[ (pi(a|s) / pi_old(a|s)) w(s, a) ]`` over several sample sets D_k (one per task),
    each averaged first so that every task weighs the same; pi_old is the policy at construction.

    :param policy: the policy whose parameters move
    :param sample_sets: per task: (observations, actions, weights w of shape (n,))
    :param sign: +1 to maximise the weighted sum, -1 to minimise it
    """

    def __init__(
        self, policy: ActorCriticPolicy, sample_sets: Sequence[tuple[th.Tensor, th.Tensor, th.Tensor]], sign: float = 1.0
    ) -> None:
        if not sample_sets:
            raise ValueError("ImportanceWeightedSurrogate needs at least one sample set")
        self.policy, self.sample_sets, self.sign = policy, list(sample_sets), float(sign)
        with th.no_grad():
            self.old_log_probs = [policy.get_distribution(obs).log_prob(actions) for obs, actions, _ in self.sample_sets]

    def __call__(self) -> th.Tensor:
        terms = []
        for (observations, actions, weights), old_log_prob in zip(self.sample_sets, self.old_log_probs, strict=True):
            ratio = th.exp(self.policy.get_distribution(observations).log_prob(actions) - old_log_prob)
            terms.append(th.mean(ratio * weights))
        return self.sign * th.stack(terms).mean()


class MeanKL:
    """
    ``E_s[KL(pi_old(.|s) || pi(.|s))]`` on fixed states, pi_old frozen at construction: the trust region.

    :param policy: the policy whose parameters move
    :param observations: states of the trust region (the meta-policy's own rollouts)
    """

    def __init__(self, policy: ActorCriticPolicy, observations: th.Tensor) -> None:
        self.policy, self.observations = policy, observations
        with th.no_grad():
            # keep the torch distribution: SB3's Distribution wrapper is overwritten by later calls
            self.old = policy.get_distribution(observations).distribution

    def __call__(self) -> th.Tensor:
        new = self.policy.get_distribution(self.observations).distribution
        kl = th.distributions.kl_divergence(self.old, new)  # type: ignore[arg-type]
        return (kl.sum(dim=-1) if kl.ndim > 1 else kl).mean()
