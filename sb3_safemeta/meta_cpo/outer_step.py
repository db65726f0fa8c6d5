"""
The constrained outer (meta) step of meta-CPO (Cho and Sun 2024): a CPO step (Achiam et al. 2017) on the
meta-parameters phi, with the reward of the ADAPTED policies as objective and the linearised cost of the adapted
policies as constraint, within a KL trust region on the meta-policy pi_phi:

    max_x g^T x   s.t.   1/2 x^T F x <= delta,   c + b^T x <= 0

g = grad_phi of the post-adaptation reward surrogate, b = grad_phi of the post-adaptation cost surrogate (episode
units), both through the inner CPO step; c = mean over the batch's tasks of Jc(pi_theta'_tau) - d_tau (measured on
the post-update rollouts); F the Fisher of the mean KL of pi_phi. The QP is solved by
:func:`~sb3_safemeta.meta_cpo.cpo_step.cpo_step` (closed-form dual, recovery step -sqrt(2 delta / s) F^-1 b when the
half-space misses the trust region). A backtracking line search then accepts the first fraction of the step whose
KL is within delta, whose cost-surrogate change is within max(-c, 0) and, unless it is a recovery step, whose reward
surrogate improves (the acceptance rule of the CPO implementations, e.g. OmniSafe's); else phi is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch as th
from sb3_contrib.common.utils import flat_grad
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sb3_safemeta.meta_cpo.cpo_step import CPOStepResult, cpo_step

__all__ = ["ConstrainedStepResult", "constrained_trust_region_step"]


@dataclass(frozen=True)
class ConstrainedStepResult:
    """
    :param success: whether the line search accepted a step (else the parameters are unchanged)
    :param kl: mean KL(old || new) of the accepted step (0 if none)
    :param improvement: reward-surrogate change of the accepted step
    :param cost_change: cost-surrogate change of the accepted step (episode units)
    :param step_fraction: accepted fraction of the QP's step
    :param gradient_norm: norm of g
    :param cost_gradient_norm: norm of b
    :param cpo: the QP's solution (case, lambda*, nu*, q, r, s, predicted changes); None if g was zero or not finite
    """

    success: bool
    kl: float
    improvement: float
    cost_change: float
    step_fraction: float
    gradient_norm: float
    cost_gradient_norm: float
    cpo: CPOStepResult | None


def constrained_trust_region_step(
    parameters: Sequence[nn.Parameter],
    objectives: Callable[[], tuple[th.Tensor, th.Tensor]],
    kl: Callable[[], th.Tensor],
    cost_excess: float,
    max_kl: float = 1e-3,
    cg_max_steps: int = 10,
    cg_damping: float = 0.1,
    shrinking_factor: float = 0.8,
    max_backtracks: int = 10,
) -> ConstrainedStepResult:
    """
    One CPO step on ``parameters``, in place: maximise the first of ``objectives()`` subject to the linearised
    constraint ``cost_excess + (change of the second) <= 0`` and ``kl() <= max_kl`` (see the module docstring).

    :param parameters: the parameters that move (the meta-policy's actor)
    :param objectives: () -> (reward surrogate, cost surrogate in the units of ``cost_excess``), both differentiable
        w.r.t. ``parameters`` when grad mode is on (values only under ``torch.no_grad``, during the line search)
    :param kl: mean KL(pi_old || pi_current) on the trust region's states (zero, with zero gradient, at the start)
    :param cost_excess: c = Jc - d at the current parameters (> 0: the constraint is violated)
    :param max_kl: delta, the KL radius
    :param cg_max_steps: conjugate-gradient iterations (per solve: F^-1 g and F^-1 b)
    :param cg_damping: damping added to the Fisher-vector product (> 0)
    :param shrinking_factor: step shrink factor of the line search, in (0, 1)
    :param max_backtracks: line-search iterations
    :return: what happened
    """
    parameters = list(parameters)
    reward, cost = objectives()
    gradient = flat_grad(reward, parameters, retain_graph=True)
    cost_gradient = flat_grad(cost, parameters)
    gradient_norm, cost_gradient_norm = float(gradient.norm()), float(cost_gradient.norm())
    finite = bool(th.isfinite(gradient).all() and th.isfinite(cost_gradient).all())
    if not finite or (gradient_norm == 0 and cost_gradient_norm == 0):
        return ConstrainedStepResult(False, 0.0, 0.0, 0.0, 0.0, gradient_norm, cost_gradient_norm, None)
    gradient, cost_gradient = gradient.detach(), cost_gradient.detach()
    kl_gradient = flat_grad(kl(), parameters, create_graph=True, retain_graph=True)

    def fisher_vector_product(vector: th.Tensor) -> th.Tensor:
        return flat_grad(th.dot(kl_gradient, vector.detach()), parameters, retain_graph=True).detach() + cg_damping * vector

    with th.enable_grad():
        result = cpo_step(gradient, cost_gradient, float(cost_excess), max_kl, fisher_vector_product, cg_max_steps)
    step = result.step.detach()
    recovery = result.case == "recovery"
    # the cost surrogate may rise by at most -c (the slack) when feasible, and must not rise when violating
    allowed_cost_change = max(-float(cost_excess), 0.0)

    start = parameters_to_vector(parameters).detach().clone()
    base_reward, base_cost = float(reward.detach()), float(cost.detach())
    fraction = 1.0
    if bool(step.any()):
        with th.no_grad():
            for _ in range(max_backtracks):
                vector_to_parameters((start + fraction * step).clone(), parameters)
                new_kl = float(kl())
                new_reward, new_cost = (float(value) for value in objectives())
                improvement, cost_change = new_reward - base_reward, new_cost - base_cost
                kl_ok = new_kl <= max_kl * (1.0 + 1e-6)  # the full step lands on the bound of a quadratic KL
                cost_ok = cost_change <= allowed_cost_change + 1e-12 * max(1.0, abs(base_cost))
                if kl_ok and cost_ok and (recovery or improvement > 0):
                    return ConstrainedStepResult(
                        True, new_kl, improvement, cost_change, fraction, gradient_norm, cost_gradient_norm, result
                    )
                fraction *= shrinking_factor
            vector_to_parameters(start.clone(), parameters)
    return ConstrainedStepResult(False, 0.0, 0.0, 0.0, 0.0, gradient_norm, cost_gradient_norm, result)
