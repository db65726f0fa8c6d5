"""
The update of Constrained Policy Optimization (Achiam et al. 2017, "Constrained Policy Optimization",
https://arxiv.org/abs/1705.10528, Section 6 and Appendix 10.2) as a pure, differentiable function.

With g the reward gradient, b the cost gradient, F the Fisher (Hessian of the mean KL) at theta, c = Jc(theta) - d
and the KL radius delta, the step x solves the quadratic approximation

    max_x g^T x   s.t.   1/2 x^T F x <= delta,   c + b^T x <= 0

through its dual over (lambda, nu) >= 0, whose maximiser has a closed form on each of two pieces (nu = 0: only the
KL is active; nu > 0: both are). With q = g^T F^-1 g, r = g^T F^-1 b, s = b^T F^-1 b (by conjugate gradient):

    x* = F^-1 (g - nu* b) / lambda*,   nu* = max(0, (lambda* c + r) / s)

and lambda* maximises the dual on each piece (sqrt(A / B) with A = q - r^2 / s, B = 2 delta - c^2 / s on the
both-active piece, sqrt(q / (2 delta)) on the KL-only piece), projected onto the piece. When the QP is infeasible
(c > 0 and B < 0: the constraint plane misses the trust region) the step is the recovery step
x = -sqrt(2 delta / s) F^-1 b, which decreases the cost as fast as the trust region allows.

Only torch operations on (g, b): the conjugate gradient is unrolled for a fixed number of iterations (no early
stop), so the step is a differentiable function of g and b (and of F, if the Fisher-vector product carries a graph).
The choice of the piece (which constraint is active) is made on values and is not differentiated (the step is
piecewise smooth in (g, b)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch as th

__all__ = ["CPO_CASES", "CPOStepResult", "cpo_step", "unrolled_conjugate_gradient"]

# which constraints are active at the solution
CPO_CASES = ("kl_only", "both_active", "recovery")
_TINY = 1e-12


def unrolled_conjugate_gradient(
    matrix_vector_product: Callable[[th.Tensor], th.Tensor], vector: th.Tensor, n_iterations: int
) -> th.Tensor:
    """
    Conjugate gradient (Hestenes and Stiefel 1952) for ``M x = vector``, M symmetric positive definite, run for exactly
    ``n_iterations`` iterations from x = 0. Unlike sb3-contrib's ``conjugate_gradient_solver`` it never stops early
    and takes no Python branch on values, so the solution is a differentiable function of ``vector`` (and of M) by
    autograd through the iterations. Divisions are guarded, so iterations after convergence leave x unchanged.

    :param matrix_vector_product: v -> M v
    :param vector: right-hand side, (n,)
    :param n_iterations: iterations (n iterations solve an n-dimensional system exactly, in exact arithmetic)
    :return: x ~ M^-1 vector
    """
    solution = th.zeros_like(vector)
    residual = vector
    direction = vector
    residual_norm = th.dot(residual, residual)
    for _ in range(n_iterations):
        product = matrix_vector_product(direction)
        step = residual_norm / th.dot(direction, product).clamp_min(_TINY)
        solution = solution + step * direction
        residual = residual - step * product
        new_residual_norm = th.dot(residual, residual)
        direction = residual + new_residual_norm / residual_norm.clamp_min(_TINY) * direction
        residual_norm = new_residual_norm
    return solution


@dataclass(frozen=True)
class CPOStepResult:
    """
    :param step: x, the change of the parameters, (n,) (with a graph back to g and b if they carry one)
    :param case: ``"kl_only"`` (nu = 0), ``"both_active"`` (nu > 0) or ``"recovery"`` (infeasible QP)
    :param lagrange_kl: lambda* (0 for the recovery step)
    :param lagrange_cost: nu* (0 for the recovery step)
    :param q: g^T F^-1 g
    :param r: g^T F^-1 b
    :param s: b^T F^-1 b
    :param predicted_cost_change: b^T x, the linearised change of Jc
    :param predicted_kl: 1/2 x^T F x (with F as the product gives it, damping included)
    """

    step: th.Tensor
    case: str
    lagrange_kl: float
    lagrange_cost: float
    q: float
    r: float
    s: float
    predicted_cost_change: float
    predicted_kl: float


def _dual_value(lagrange_kl: float, q: float, r: float, s: float, c: float, max_kl: float) -> float:
    """The dual of the CPO QP at lambda, maximised over nu >= 0 (Achiam et al. 2017, Appendix 10.2, for the max problem)."""
    nu = max(0.0, (lagrange_kl * c + r) / s)
    return -(q - 2.0 * r * nu + s * nu**2) / (2.0 * lagrange_kl) + nu * c - lagrange_kl * max_kl


def cpo_step(
    reward_gradient: th.Tensor,
    cost_gradient: th.Tensor,
    cost_excess: float,
    max_kl: float,
    fisher_vector_product: Callable[[th.Tensor], th.Tensor],
    cg_max_steps: int = 10,
) -> CPOStepResult:
    """
    The CPO step x of Achiam et al. (2017): the solution of ``max g^T x`` s.t. ``1/2 x^T F x <= delta`` and
    ``c + b^T x <= 0`` through the dual, or the recovery step ``-sqrt(2 delta / s) F^-1 b`` when that QP is
    infeasible. See the module docstring.

    :param reward_gradient: g, gradient of J at theta, (n,)
    :param cost_gradient: b, gradient of Jc at theta, (n,), in the units of ``cost_excess``
    :param cost_excess: c = Jc(theta) - d (> 0: theta violates the constraint)
    :param max_kl: delta > 0, the KL radius
    :param fisher_vector_product: v -> F v (damping included), F symmetric positive definite
    :param cg_max_steps: iterations of the unrolled conjugate gradient (two solves: F^-1 g and F^-1 b)
    :return: the step and its diagnostics
    """
    if not max_kl > 0:
        raise ValueError(f"max_kl must be > 0, got {max_kl!r}")
    if int(cg_max_steps) < 1:
        raise ValueError(f"cg_max_steps must be >= 1, got {cg_max_steps!r}")
    c = float(cost_excess)
    inverse_g = unrolled_conjugate_gradient(fisher_vector_product, reward_gradient, int(cg_max_steps))
    inverse_b = unrolled_conjugate_gradient(fisher_vector_product, cost_gradient, int(cg_max_steps))
    q_t, r_t, s_t = th.dot(reward_gradient, inverse_g), th.dot(reward_gradient, inverse_b), th.dot(cost_gradient, inverse_b)
    q, r, s = float(q_t.detach()), float(r_t.detach()), float(s_t.detach())

    if s <= _TINY:  # no cost gradient: the constraint cannot be moved, only the trust region matters
        if c > 0:
            return _result(th.zeros_like(reward_gradient), "recovery", 0.0, 0.0, q, r, s, cost_gradient, fisher_vector_product)
        lagrange_kl_t = th.sqrt(q_t.clamp_min(_TINY) / (2.0 * max_kl))
        step = inverse_g / lagrange_kl_t
        return _result(step, "kl_only", float(lagrange_kl_t.detach()), 0.0, q, r, s, cost_gradient, fisher_vector_product)

    a_t = (q_t - r_t**2 / s_t).clamp_min(0.0)  # >= 0 by Cauchy-Schwarz in the F^-1 inner product
    b_t = 2.0 * max_kl - c**2 / s_t
    if c > 0 and float(b_t.detach()) < 0:  # the half-space c + b^T x <= 0 misses the trust region: recover
        step = -th.sqrt(2.0 * max_kl / s_t) * inverse_b
        return _result(step, "recovery", 0.0, 0.0, q, r, s, cost_gradient, fisher_vector_product)

    # lambda on the two pieces of the dual: "both" where lambda c + r > 0 (nu > 0), "kl" elsewhere
    kl_lambda_t = th.sqrt(q_t.clamp_min(_TINY) / (2.0 * max_kl))
    if c > 0:
        boundary = max(-r / c, 0.0)
        both_interval, kl_interval = (boundary, math.inf), (0.0, boundary)
    else:  # c <= 0 (c = 0 as the limit c -> 0-: -r / c -> +inf if r > 0, -inf if r < 0)
        boundary = max(-r / c, 0.0) if c < 0 else (math.inf if r > 0 else 0.0)
        both_interval, kl_interval = (0.0, boundary), (boundary, math.inf)
    candidates = [(kl_lambda_t, kl_interval)]
    if float(b_t.detach()) > 0:  # else the dual on the "both" piece grows with lambda: its maximum is on the boundary
        candidates.append((th.sqrt(a_t / b_t), both_interval))
    else:
        candidates.append((th.as_tensor(boundary, dtype=reward_gradient.dtype), both_interval))
    best_value, lagrange_kl_t = -math.inf, kl_lambda_t
    for value_t, (low, high) in candidates:
        low = max(low, _TINY)
        if high < low:  # an empty piece
            continue
        projected = value_t.clamp(min=low, max=high) if math.isfinite(high) else value_t.clamp(min=low)
        dual = _dual_value(float(projected.detach()), q, r, s, c, max_kl)
        if dual > best_value:
            best_value, lagrange_kl_t = dual, projected
    lagrange_cost_t = ((lagrange_kl_t * c + r_t) / s_t).clamp_min(0.0)
    step = (inverse_g - lagrange_cost_t * inverse_b) / lagrange_kl_t
    case = "both_active" if float(lagrange_cost_t.detach()) > 0 else "kl_only"
    return _result(
        step,
        case,
        float(lagrange_kl_t.detach()),
        float(lagrange_cost_t.detach()),
        q,
        r,
        s,
        cost_gradient,
        fisher_vector_product,
    )


def _result(
    step: th.Tensor,
    case: str,
    lagrange_kl: float,
    lagrange_cost: float,
    q: float,
    r: float,
    s: float,
    cost_gradient: th.Tensor,
    fisher_vector_product: Callable[[th.Tensor], th.Tensor],
) -> CPOStepResult:
    detached = step.detach()
    cost_change = float(th.dot(cost_gradient.detach(), detached))
    with th.enable_grad():  # a Fisher-vector product may be a double backward
        kl = 0.5 * float(th.dot(detached, fisher_vector_product(detached).detach())) if bool(detached.any()) else 0.0
    return CPOStepResult(step, case, lagrange_kl, lagrange_cost, q, r, s, cost_change, kl)
