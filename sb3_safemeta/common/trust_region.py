"""
A TRPO step (Schulman et al. 2015) on an arbitrary surrogate: the meta-policy update of Algorithm 2
lines 8 and 12. The natural-gradient direction is found by conjugate gradient on the Fisher
(Hessian of the mean KL) with sb3-contrib's ``conjugate_gradient_solver`` and ``flat_grad``; the step
is scaled to the KL bound and a backtracking line search accepts the first step that keeps the KL
within the bound and improves the surrogate, else restores the parameters.

The two functions every meta-learner hands to the step live here too: :class:`ImportanceWeightedSurrogate`
(the surrogate whose gradient at phi is the meta-gradient, e.g. Algorithm 4 line 7, or the cost-reducing
direction of Algorithm 2 lines 10-12) and :class:`MeanKL` (the trust region).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch as th
from sb3_contrib.common.utils import conjugate_gradient_solver, flat_grad
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

__all__ = ["ImportanceWeightedSurrogate", "MeanKL", "TrustRegionResult", "trust_region_step"]


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


@dataclass(frozen=True)
class TrustRegionResult:
    """
    :param success: whether the line search accepted a step (else parameters are unchanged)
    :param kl: mean KL(old || new) of the accepted step
    :param improvement: surrogate improvement of the accepted step
    :param step_fraction: accepted fraction of the maximal step
    :param gradient_norm: norm of the surrogate gradient
    """

    success: bool
    kl: float
    improvement: float
    step_fraction: float
    gradient_norm: float


def trust_region_step(
    parameters: Sequence[nn.Parameter],
    surrogate: Callable[[], th.Tensor],
    kl: Callable[[], th.Tensor],
    max_kl: float = 1e-3,
    cg_max_steps: int = 10,
    cg_damping: float = 0.1,
    shrinking_factor: float = 0.8,
    max_backtracks: int = 10,
) -> TrustRegionResult:
    """
    Maximise ``surrogate()`` subject to ``kl() <= max_kl`` by one TRPO step, in place.

    :param parameters: the parameters that move (the actor's; never the critics)
    :param surrogate: objective to maximise, differentiable w.r.t. ``parameters`` (equal to its
        value at the current parameters plus a first-order change)
    :param kl: mean KL(pi_old || pi_current) on the states that define the trust region; zero with
        zero gradient at the current parameters
    :param max_kl: the KL bound (the paper: 1e-3)
    :param cg_max_steps: conjugate-gradient iterations
    :param cg_damping: damping added to the Fisher-vector product
    :param shrinking_factor: step shrink factor of the line search
    :param max_backtracks: line-search iterations
    :return: what happened
    """
    parameters = list(parameters)
    objective = surrogate()
    gradient = flat_grad(objective, parameters)
    gradient_norm = float(gradient.norm())
    if gradient_norm == 0.0 or not th.isfinite(gradient).all():
        return TrustRegionResult(False, 0.0, 0.0, 0.0, gradient_norm)

    kl_gradient = flat_grad(kl(), parameters, create_graph=True, retain_graph=True)

    def fisher_vector_product(vector: th.Tensor, retain_graph: bool = True) -> th.Tensor:
        # Hessian of the KL times vector (the Fisher at the current parameters) + damping
        return flat_grad(th.dot(kl_gradient, vector), parameters, retain_graph=retain_graph) + cg_damping * vector

    direction = conjugate_gradient_solver(fisher_vector_product, gradient, max_iter=cg_max_steps)
    curvature = float(th.dot(direction, fisher_vector_product(direction, retain_graph=False)))
    max_step = (2.0 * max_kl / max(curvature, 1e-12)) ** 0.5

    start = parameters_to_vector(parameters).detach().clone()
    baseline = float(objective.detach())
    fraction = 1.0
    with th.no_grad():
        for _ in range(max_backtracks):
            candidate = start + fraction * max_step * direction
            vector_to_parameters(candidate.clone(), parameters)
            try:
                new_kl, improvement = float(kl()), float(surrogate()) - baseline
            except ValueError:  # a step so long that the policy is no distribution (e.g. a zero std): too long
                new_kl = improvement = float("nan")
            if not th.isfinite(candidate).all():
                new_kl = float("nan")
            # NaN fails both tests below: the step shrinks
            # the full step lands on the bound of a quadratic KL: allow for rounding
            if new_kl <= max_kl * (1.0 + 1e-6) and improvement > 0:
                return TrustRegionResult(True, new_kl, improvement, fraction, gradient_norm)
            fraction *= shrinking_factor
        vector_to_parameters(start.clone(), parameters)
    return TrustRegionResult(False, 0.0, 0.0, 0.0, gradient_norm)
