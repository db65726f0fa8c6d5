"""
The dual method for the safe policy adaptation A^s (Section 4.1 of the paper), independent of how
the adapted policy pi^u is represented (exact tabular logits or fitted network parameters).

Problem (1), for the current policy pi_phi, p cost channels and data from pi_phi::

    maximize_pi  E_{s~nu, a~pi}[A(s, a)] - lambda E_s[KL(pi || pi_phi)]
    s.t.         g_i(pi) := Jc_i(pi_phi) + E_{s~nu, a~pi}[A_ci(s, a)] / (1 - gamma)
                            + lambda_ci E_s[KL(pi || pi_phi)]  <=  d_i + delta_ci

For fixed multipliers u >= 0 the maximiser is pi^u ∝ pi_phi exp((A - u.A_c) / eta_u) with
eta_u = lambda + (1 - gamma) sum_i u_i lambda_ci (Proposition 1, eq. 3). The dual (4) is convex in
u and its gradient (5) is (1 - gamma) times the slack of each surrogate constraint at pi^u:

    d/du_i Lbar(u) = (1 - gamma) (d_i + delta_ci - g_i(pi^u)).

Algorithm 1 is projected gradient descent on u (:func:`projected_gradient_descent`);
:func:`minimize_dual` solves the same convex problem with SciPy's L-BFGS-B when the dual value is
available (exact tabular case), which needs far fewer evaluations of pi^u.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize

from sb3_safemeta.common.validation import as_cost_vector, check_positive

__all__ = [
    "AdaptationParams",
    "DualSolution",
    "adaptation_temperature",
    "dual_gradient",
    "minimize_dual",
    "projected_gradient_descent",
]


@dataclass(frozen=True)
class AdaptationParams:
    """
    Validated hyper-parameters Lambda, Delta and the cost limit d of the safe adaptation A^s.

    :param lambda_: KL weight of the objective (lambda > 0)
    :param lambda_c: KL weight of each constraint, shape (p,), >= 0
    :param cost_limit: d, shape (p,)
    :param delta_c: allowable violation of each constraint, shape (p,), >= 0 (0 = strict anytime safety)
    :param gamma: discount factor of the surrogate
    """

    lambda_: float
    lambda_c: np.ndarray
    cost_limit: np.ndarray
    delta_c: np.ndarray
    gamma: float

    @classmethod
    def create(
        cls, lambda_: Any, lambda_c: Any, cost_limit: Any, delta_c: Any, gamma: float, n_costs: int
    ) -> AdaptationParams:
        """
        Validate and broadcast the hyper-parameters; every error names the parameter.

        :param lambda_: lambda (> 0)
        :param lambda_c: lambda_c, scalar or (p,), >= 0
        :param cost_limit: d, scalar or (p,)
        :param delta_c: delta_c, scalar or (p,), >= 0
        :param gamma: discount factor in [0, 1)
        :param n_costs: p
        :return: the validated parameters
        """
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        return cls(
            lambda_=check_positive(lambda_, "lambda_"),
            lambda_c=as_cost_vector(lambda_c, n_costs, "lambda_c", allow_negative=False),
            cost_limit=as_cost_vector(cost_limit, n_costs, "cost_limit"),
            delta_c=as_cost_vector(delta_c, n_costs, "delta_c", allow_negative=False),
            gamma=float(gamma),
        )

    @property
    def n_costs(self) -> int:
        return len(self.cost_limit)

    def check_feasible_start(self, start_cost: np.ndarray, tolerance: float = 1e-9) -> None:
        """
        Proposition 1 assumes Jc_i(pi_phi) <= d_i + delta_ci; otherwise problem (1) may be infeasible.

        :param start_cost: Jc(pi_phi), shape (p,)
        :param tolerance: absolute tolerance
        """
        excess = np.asarray(start_cost) - (self.cost_limit + self.delta_c)
        if np.any(excess > tolerance):
            channels = np.flatnonzero(excess > tolerance).tolist()
            start, bound = np.round(start_cost, 6).tolist(), np.round(self.cost_limit + self.delta_c, 6).tolist()
            raise ValueError(
                f"the start policy violates the cost limit on channel(s) {channels}: Jc(pi_phi)={start}"
                f" > cost_limit + delta_c={bound}. Problem (1) may be infeasible;"
                " Proposition 1 assumes a feasible start (reduce the cost first, e.g. with the CRPO step of Algorithm 2)."
            )


@dataclass(frozen=True)
class DualSolution:
    """
    :param u: the multipliers u*, shape (p,)
    :param n_iterations: dual iterations used
    :param converged: whether the stopping tolerance was met
    """

    u: np.ndarray
    n_iterations: int
    converged: bool


def adaptation_temperature(u: np.ndarray, params: AdaptationParams) -> float:
    """
    :param u: multipliers, shape (p,)
    :param params: hyper-parameters
    :return: eta_u = lambda + (1 - gamma) sum_i u_i lambda_ci (Proposition 1)
    """
    return float(params.lambda_ + (1.0 - params.gamma) * np.dot(u, params.lambda_c))


def dual_gradient(surrogate_cost: np.ndarray, params: AdaptationParams) -> np.ndarray:
    """
    Gradient (5) of the dual objective, written with the surrogate constraint values g_i(pi^u).

    :param surrogate_cost: g(pi^u), shape (p,), in the units of Jc
    :param params: hyper-parameters
    :return: (1 - gamma) (d + delta - g), shape (p,); negative where a constraint is violated
    """
    return (1.0 - params.gamma) * (params.cost_limit + params.delta_c - np.asarray(surrogate_cost, dtype=np.float64))


def projected_gradient_descent(
    gradient: Callable[[np.ndarray], np.ndarray],
    n_costs: int,
    beta: float,
    n_steps: int,
    u0: np.ndarray | None = None,
    tol: float = 1e-10,
) -> DualSolution:
    """
    Algorithm 1, lines 1-6: u <- max(0, u - beta grad(u)), from u0 (the paper starts at 0; a warm
    start from the previous adaptation step's u* is allowed).

    Stops when the projected step is smaller than ``tol`` in max norm.

    :param gradient: u -> dual gradient (5), shape (p,)
    :param n_costs: p
    :param beta: step size (> 0)
    :param n_steps: maximum number of iterations N
    :param u0: initial multipliers (default zeros)
    :param tol: stopping tolerance on the step
    :return: the multipliers and convergence information
    """
    beta = check_positive(beta, "beta")
    u = np.zeros(n_costs) if u0 is None else np.maximum(as_cost_vector(u0, n_costs, "u0"), 0.0)
    for iteration in range(1, int(n_steps) + 1):
        new_u = np.maximum(0.0, u - beta * gradient(u))
        step = float(np.max(np.abs(new_u - u)))
        u = new_u
        if step < tol:
            return DualSolution(u=u, n_iterations=iteration, converged=True)
    return DualSolution(u=u, n_iterations=int(n_steps), converged=False)


def minimize_dual(
    value_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]],
    n_costs: int,
    u0: np.ndarray | None = None,
    tol: float = 1e-12,
    max_iterations: int = 1000,
) -> DualSolution:
    """
    Solve the convex dual (4) with L-BFGS-B on u >= 0 (SciPy), when the dual value is computable.

    :param value_and_gradient: u -> (Lbar(u), grad Lbar(u))
    :param n_costs: p
    :param u0: initial multipliers (default zeros)
    :param tol: projected-gradient tolerance
    :param max_iterations: maximum number of L-BFGS-B iterations
    :return: the multipliers and convergence information
    """
    u_start = np.zeros(n_costs) if u0 is None else np.maximum(as_cost_vector(u0, n_costs, "u0"), 0.0)
    result = scipy.optimize.minimize(
        value_and_gradient,
        u_start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * n_costs,
        options={"gtol": tol, "ftol": 1e-15, "maxiter": max_iterations},
    )
    u = _polish_active_multipliers(lambda x: value_and_gradient(x)[1], np.maximum(result.x, 0.0))
    return DualSolution(u=u, n_iterations=int(result.nit), converged=bool(result.success))


def _polish_active_multipliers(gradient: Callable[[np.ndarray], np.ndarray], u: np.ndarray) -> np.ndarray:
    """
    Solve grad_i(u) = 0 on the active multipliers (u_i > 0) by SciPy's root finder, from u.

    L-BFGS-B stops on the decrease of the dual value, which is quadratic in the gradient near u*: it
    leaves slacks of about 1e-8, on either side. At an active constraint the slack is the quantity
    that matters (anytime safety), so it is driven to round-off; the polished u is kept only if it
    stays >= 0 and reduces the largest active slack.

    :param gradient: u -> dual gradient (5)
    :param u: multipliers from the dual solver
    :return: the polished multipliers (or ``u`` unchanged)
    """
    active = u > 0
    if not np.any(active):
        return u

    def with_active(values: np.ndarray) -> np.ndarray:
        full = u.copy()
        full[active] = values
        return full

    def residual(values: np.ndarray) -> np.ndarray:
        return gradient(with_active(np.maximum(values, 0.0)))[active]

    solution = scipy.optimize.root(residual, u[active], method="hybr", options={"xtol": 1e-14})
    candidate = with_active(solution.x)
    if np.all(candidate >= 0) and np.max(np.abs(residual(candidate[active]))) < np.max(np.abs(residual(u[active]))):
        return candidate
    return u
