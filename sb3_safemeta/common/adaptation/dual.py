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

Every dual solver of the package lives here:

- :func:`projected_gradient_descent`: Algorithm 1 of the paper (``dual_solver="pgd"``);
- :func:`minimize_dual`: the same convex problem with SciPy's L-BFGS-B when the dual value is available
  (exact tabular case), which needs far fewer evaluations of pi^u;
- :func:`bisection` (bracketing regula falsi, one cost channel) and :func:`projected_newton` (several
  channels, a box QP per iteration): the defaults of the parametric adaptation, which only has the
  fitted surrogate g(pi^u) as a gradient oracle; :func:`solve_dual` dispatches between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize

from sb3_safemeta.common.validation import as_cost_vector, check_positive

__all__ = [
    "DUAL_SOLVERS",
    "AdaptationParams",
    "DualSolution",
    "adaptation_temperature",
    "bisection",
    "box_qp",
    "dual_gradient",
    "minimize_dual",
    "projected_gradient_descent",
    "projected_newton",
    "solve_dual",
]

# dual_solver values of the parametric adaptation (see solve_dual)
DUAL_SOLVERS = ("auto", "bisection", "newton", "pgd")


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


# ------------------------------------------------------------ solvers of the fitted (parametric) dual
def solve_dual(
    fitted_surrogate: Callable[[np.ndarray], np.ndarray],
    params: AdaptationParams,
    n_costs: int,
    dual_solver: str,
    beta: float,
    n_steps: int,
    u0: np.ndarray | None,
    tol: float,
    u_scale: float,
) -> DualSolution:
    """Minimise the dual (4) over u >= 0 with the fitted surrogate as the gradient oracle (eq. 5)."""
    if dual_solver == "auto":
        dual_solver = "bisection" if n_costs == 1 else "newton"
    if dual_solver == "pgd":
        horizon = 1.0 / (1.0 - params.gamma)

        def gradient(u: np.ndarray) -> np.ndarray:
            return dual_gradient(fitted_surrogate(u), params) * horizon

        # a step of beta (d + delta - g): stop when |d + delta - g| < tol * max(1, |d + delta|) on every channel
        step_tol = beta * tol * float(np.min(np.maximum(1.0, np.abs(params.cost_limit + params.delta_c))))
        return projected_gradient_descent(gradient, n_costs, beta, n_steps, u0=u0, tol=step_tol)
    if dual_solver == "bisection":
        if n_costs != 1:
            raise ValueError(f"dual_solver='bisection' needs one cost channel, got {n_costs}; use 'newton' or 'pgd'")
        return bisection(fitted_surrogate, params, n_steps, u0, tol, u_scale)
    if dual_solver == "newton":
        return projected_newton(fitted_surrogate, params, n_costs, n_steps, u0, tol)
    raise ValueError(f"dual_solver must be one of {DUAL_SOLVERS}, got {dual_solver!r}")


def bisection(
    fitted_surrogate: Callable[[np.ndarray], np.ndarray],
    params: AdaptationParams,
    n_steps: int,
    u0: np.ndarray | None,
    tol: float = 1e-6,
    u_scale: float = 1.0,
) -> DualSolution:
    """
    p = 1: the dual gradient (5) is non-decreasing in u (the dual is convex), so u* is 0 if the
    surrogate constraint holds at u = 0, else the root of the slack d + delta - g(pi^u), bracketed by
    doubling from the warm start (or from ``u_scale`` without one). The bracket is shrunk by regula
    falsi with the Illinois modification (superlinear; the end kept twice in a row has its slack
    halved, so both ends converge), which needs far fewer fits than halving (7 instead of 40 on the
    tabular tests); the feasible end of the bracket is returned.

    :param fitted_surrogate: u -> g(pi^u), (1,) (one fit of pi^u per call)
    :param params: hyper-parameters (d, delta)
    :param n_steps: maximum number of calls of ``fitted_surrogate``
    :param u0: warm start: the first upper end of the bracket if > 0
    :param tol: stop when the slack at the feasible end is at most ``tol * max(1, |d + delta|)``, or the
        bracket is narrower than ``tol`` relative
    :param u_scale: the first upper end of the bracket without a warm start
    :return: the multiplier (a point where ``fitted_surrogate`` was called) and convergence information
    """
    bound = float(params.cost_limit[0] + params.delta_c[0])
    scale = max(1.0, abs(bound))
    evaluations = 0

    def slack(u: float) -> float:
        nonlocal evaluations
        evaluations += 1
        return (bound - float(fitted_surrogate(np.array([u]))[0])) / scale

    low, slack_low = 0.0, slack(0.0)
    if slack_low >= 0.0:
        return DualSolution(u=np.zeros(1), n_iterations=evaluations, converged=True)
    warm = float(np.ravel(u0)[0]) if u0 is not None else 0.0
    high = warm if warm > 0.0 else max(u_scale, 1e-6)
    slack_high = slack(high)
    while slack_high < 0.0 and evaluations < n_steps:
        previous = slack_high
        low, slack_low, high = high, slack_high, 2.0 * high
        slack_high = slack(high)
        if slack_high < 0.0 and slack_high - previous <= tol:
            # g(pi^u) stopped decreasing: it has reached its limit for u -> infinity (pi^u -> pi_phi in the
            # exact problem, a fit's floor on samples) above the bound. Doubling further only inflates u
            # (it used to end at ~1e21); stop at this finite u, unconverged (the caller backtracks).
            break
    if slack_high < 0.0:  # not bracketed within the budget
        return DualSolution(u=np.array([high]), n_iterations=evaluations, converged=False)
    weight_low, weight_high, kept = slack_low, slack_high, 0
    while evaluations < n_steps and slack_high > tol and high - low > tol * high:
        middle = high - weight_high * (high - low) / (weight_high - weight_low)
        middle = min(max(middle, low + 1e-3 * (high - low)), high - 1e-3 * (high - low))
        slack_middle = slack(middle)
        if slack_middle < 0.0:
            low, slack_low, weight_low = middle, slack_middle, slack_middle
            weight_high = 0.5 * weight_high if kept == 1 else slack_high
            kept = 1  # the high end was kept
        else:
            high, slack_high, weight_high = middle, slack_middle, slack_middle
            weight_low = 0.5 * weight_low if kept == -1 else slack_low
            kept = -1  # the low end was kept
    converged = slack_high <= tol or high - low <= tol * high
    return DualSolution(u=np.array([high]), n_iterations=evaluations, converged=converged)


def box_qp(linear: np.ndarray, hessian: np.ndarray, start: np.ndarray, max_sweeps: int = 1000) -> np.ndarray:
    """
    argmin_{v >= 0} linear.v + v' hessian v / 2 for a symmetric positive definite ``hessian`` of
    size p (a handful of cost channels), by exact coordinate descent (converges for any SPD matrix).
    """
    v = start.copy()
    for _ in range(max_sweeps):
        previous = v.copy()
        for i in range(len(v)):
            v[i] = max(0.0, v[i] - (linear[i] + hessian[i] @ v) / hessian[i, i])
        if np.max(np.abs(v - previous)) <= 1e-12 * max(1.0, float(np.max(np.abs(v)))):
            break
    return v


def projected_newton(
    fitted_surrogate: Callable[[np.ndarray], np.ndarray],
    params: AdaptationParams,
    n_costs: int,
    n_steps: int,
    u0: np.ndarray | None,
    tol: float = 1e-6,
    relative_fd_step: float = 1e-3,
) -> DualSolution:
    """
    Projected Newton method on the convex dual (4), with a line search that needs only its gradient.

    Every oracle call is a fit of pi^u, so the solver must need few of them. The dual gradient is
    (1 - gamma) s(u) with the scaled slack ``s = (d + delta - g(pi^u)) / max(1, |d + delta|)``, and the
    dual Hessian (1 - gamma) ds/du is symmetric positive semi-definite. Each iteration estimates ds/du
    by forward differences (p fits), takes the minimiser of the quadratic model over u >= 0 as the
    direction d, and searches along u + alpha d (alpha in (0, 1], so u stays >= 0) for the minimum of
    the dual: along a line of a convex function the derivative s(u + alpha d).d is non-decreasing,
    so its sign brackets the minimum and regula falsi shrinks the bracket; a step whose derivative is
    still <= 0 decreases the dual. No dual value is needed (the parametric fit gives none).

    Why not PGD (Algorithm 1) for p >= 2: a fixed step beta is stable only below 2 / (largest
    eigenvalue of ds/du) and slow along its smallest one; on random tabular CMDPs with p = 2 either
    happens often enough that 40 iterations end far from u* (then the feasibility backtracking of
    :func:`parametric_safe_adapt` shrinks the whole step). Newton's method is invariant to that
    scaling and, on the same instances, reaches u* in a few iterations.

    :param fitted_surrogate: u -> g(pi^u), (p,) (one fit of pi^u per call)
    :param params: hyper-parameters (d, delta)
    :param n_costs: p
    :param n_steps: maximum number of calls of ``fitted_surrogate``
    :param u0: warm start (default zeros)
    :param tol: stopping tolerance on the KKT residual ``max_i |min(u_i, s_i)|``
    :param relative_fd_step: finite-difference step for ds/du_j, times (1 + u_j)
    :return: the multipliers (a point where ``fitted_surrogate`` was called) and convergence information
    """
    bound = params.cost_limit + params.delta_c
    scale = np.maximum(1.0, np.abs(bound))
    evaluations = 0

    def slack(u: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        return (bound - fitted_surrogate(u)) / scale

    def residual(u: np.ndarray, s: np.ndarray) -> float:
        return float(np.max(np.abs(np.minimum(u, s))))

    u = np.zeros(n_costs) if u0 is None else np.maximum(np.asarray(u0, dtype=np.float64).reshape(n_costs), 0.0)
    s = slack(u)
    while residual(u, s) > tol and evaluations + n_costs + 1 <= n_steps:
        jacobian = np.empty((n_costs, n_costs))
        for j in range(n_costs):
            step = relative_fd_step * (1.0 + u[j])
            jacobian[:, j] = (slack(u + step * np.eye(n_costs)[j]) - s) / step
        eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (jacobian + jacobian.T))
        eigenvalues = np.maximum(eigenvalues, max(1e-6 * float(eigenvalues.max()), 1e-12))
        hessian = (eigenvectors * eigenvalues) @ eigenvectors.T
        direction = box_qp(s - hessian @ u, hessian, u) - u
        slope_start = float(s @ direction)  # derivative of the dual along the direction, over (1 - gamma)
        if slope_start >= 0.0:
            break  # the model's minimiser is u itself: KKT up to the fit's noise
        accepted: tuple[np.ndarray, np.ndarray] | None = None
        low, slope_low, high, slope_high, alpha = 0.0, slope_start, 1.0, 0.0, 1.0
        while evaluations < n_steps:
            candidate = u + alpha * direction
            s_candidate = slack(candidate)
            slope = float(s_candidate @ direction)
            if slope <= 0.0:
                accepted, low, slope_low = (candidate, s_candidate), alpha, slope
                if alpha == 1.0 or -slope <= 0.1 * -slope_start:
                    break  # the full step still descends, or the line minimum is reached
            else:
                high, slope_high = alpha, slope
                if slope <= 0.1 * -slope_start:
                    accepted = (candidate, s_candidate)  # just past the line minimum
                    break
            alpha = low + (high - low) * slope_low / (slope_low - slope_high)
            alpha = min(max(alpha, low + 0.1 * (high - low)), high - 0.1 * (high - low))
        if accepted is None:
            break  # no descent found within the budget: keep u (it was evaluated)
        u, s = accepted
    return DualSolution(u=u, n_iterations=evaluations, converged=residual(u, s) <= tol)
