"""
The safe policy adaptation A^s with a parametric adapted policy (Appendix E.2; Algorithm 3): pi^u,
the closed form of Proposition 1 (eq. 3), is represented by network parameters theta fitted, for
fixed multipliers u, to pi^u ∝ pi_phi exp((A - u.A_c) / eta_u) on the samples of pi_phi (weighted
maximum likelihood; see ``_Surrogate.fit`` for why not the reverse-KL form of Appendix E.2.2), and
the dual (4) is solved on u with the importance-weighted surrogate of every constraint (eq. 5, 10-11):

    g_i(theta) = Jc_i(pi_phi) + H E_{s, a~pi_phi}[ratio A_ci] + lambda_ci E_s[KL(pi_theta || pi_phi)].

H is the horizon factor that stands for 1/(1 - gamma) of the paper (see ``horizon`` below).
The KL is analytic (torch.distributions), so no extra samples are needed. theta is fitted by
full-batch L-BFGS (torch.optim.LBFGS, deterministic) with a fixed budget of iterations.

Every fit starts from phi, not from the previous u's solution. A warm start makes g(pi^u) a function
of the order in which the dual solver visits u, not of u: a network fit on a few thousand samples does
not converge within its budget (it would over-fit the samples if it did: the importance ratios, hence
g, blow up), so each warm-started fit is the previous one plus more iterations. On a HalfCheetahVel
rollout (8000 samples, 25 L-BFGS iterations) the warm-started chain u = 0, 1, 0.5, 0.75, 0.625 gave
g = 533, 149, 290, -399, -151 and a KL growing with every fit, while fits from phi gave
g = 533, 327, 413, 385, 401, decreasing in u as the dual theory says. On tabular CMDPs, where the fit
converges, both starts give pi^u; the dual solver then needs few fits.

The dual solver (``dual_solver="auto"``) is bracketing regula falsi for one cost channel and a
projected Newton method for several (see :func:`_bisection`, :func:`_projected_newton`); PGD
(Algorithm 1) is available as ``"pgd"``.

Units: with data from episodes of mean length T, ``horizon=T``, costs summed undiscounted over an
episode and undiscounted cost advantages, g_i is the first-order model of the *episode* cost of
pi_theta (performance difference lemma of the finite-horizon, undiscounted CMDP), so ``cost_limit``
is in the units users read (Safety-Gymnasium convention). With ``horizon=1/(1-gamma)``, discounted
Jc and samples from the discounted visitation it is exactly the paper's problem (1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sb3_safemeta.common.dual import (
    AdaptationParams,
    DualSolution,
    adaptation_temperature,
    dual_gradient,
    projected_gradient_descent,
)
from sb3_safemeta.common.head_fit import actor_latent, fit_head

if TYPE_CHECKING:
    from sb3_safemeta.common.rollout_data import RolloutData

__all__ = ["FIT_SCOPES", "AdaptationBatch", "ParametricAdaptResult", "adapt_on_rollout", "parametric_safe_adapt"]

FIT_SCOPES = ("actor", "head")
_BACKTRACK_FACTOR = 0.8
_RELATIVE_TOLERANCE = 1e-4


@dataclass
class AdaptationBatch:
    """
    The data of one adaptation step, collected with pi_phi (all tensors on the policy's device).

    :param observations: (n, *obs_shape)
    :param actions: (n, *action_shape)
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


@dataclass(frozen=True)
class ParametricAdaptResult:
    """
    :param u: multipliers u*, (p,)
    :param eta: eta_{u*}
    :param surrogate_cost: g_i at the accepted parameters, (p,)
    :param objective: E[ratio A] - lambda E[KL] at the accepted parameters
    :param kl: E_s[KL(pi_new || pi_phi)]
    :param n_dual_iterations: dual iterations used
    :param backtrack_fraction: alpha of the accepted point phi + alpha (theta* - phi) (1 = no backtracking)
    :param recovery: whether the start was infeasible and a cost-reducing step was taken instead
    :param dual_converged: whether the dual solver met its tolerance within ``n_dual_steps`` fits
    """

    u: np.ndarray
    eta: float
    surrogate_cost: np.ndarray
    objective: float
    kl: float
    n_dual_iterations: int
    backtrack_fraction: float
    recovery: bool
    dual_converged: bool = True


def _assign(vector: th.Tensor, parameters: Sequence[nn.Parameter]) -> None:
    """Write a flat vector into parameters. vector_to_parameters makes them share its storage, so copy
    first: otherwise the in-place updates of a later fit would silently change ``vector`` (e.g. phi)."""
    vector_to_parameters(vector.clone(), parameters)


def _kl(new: Distribution, old: th.distributions.Distribution) -> th.Tensor:
    """Analytic KL(new || old) per state, summed over independent action dimensions (diagonal Gaussian)."""
    kl = th.distributions.kl_divergence(new.distribution, old)  # type: ignore[arg-type]
    return kl.sum(dim=-1) if kl.ndim > 1 else kl


class _Surrogate:
    """
    Importance-weighted surrogate of problem (1) around pi_phi for one batch.

    :param fit_scope: ``"actor"`` (fit ``parameters``, the whole actor) or ``"head"`` (fit the last layer on
        the actor's latent features, computed once; see :mod:`sb3_safemeta.common.head_fit`)
    """

    def __init__(
        self,
        policy: nn.Module,
        parameters: Sequence[nn.Parameter],
        batch: AdaptationBatch,
        horizon: float,
        fit_scope: str = "actor",
    ):
        self.policy, self.parameters, self.batch, self.horizon = policy, list(parameters), batch, horizon
        self.latent = actor_latent(policy, batch.observations) if fit_scope == "head" else None  # type: ignore[arg-type]
        with th.no_grad():
            old = self.distribution()
            self.old_log_prob = old.log_prob(batch.actions)
            # keep the torch distribution itself: SB3's Distribution wrapper is reused (and
            # overwritten) by every later get_distribution call of the same policy
            self.old_distribution: th.distributions.Distribution = old.distribution  # type: ignore[assignment]

    def distribution(self) -> Distribution:
        """:return: pi_theta on the batch's states (from the cached latent features when fitting the head)"""
        if self.latent is None:
            return self.policy.get_distribution(self.batch.observations)  # type: ignore[operator]
        return self.policy._get_action_dist_from_latent(self.latent)  # type: ignore[operator]

    def terms(self) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:return: E_w[ratio A], E_w[ratio A_c] (p,), E_w[KL] at the current parameters"""
        distribution = self.distribution()
        ratio = th.exp(distribution.log_prob(self.batch.actions) - self.old_log_prob)
        weights = self.batch.weights
        expected_advantage = th.sum(weights * ratio * self.batch.advantages)
        expected_cost_advantage = (weights * ratio) @ self.batch.cost_advantages
        kl = th.sum(weights * _kl(distribution, self.old_distribution))
        return expected_advantage, expected_cost_advantage, kl

    def evaluate(self, start_cost: np.ndarray, params: AdaptationParams) -> tuple[np.ndarray, float, float]:
        """:return: g (p,), objective, KL at the current parameters"""
        with th.no_grad():
            expected_advantage, expected_cost_advantage, kl = self.terms()
        surrogate_cost = start_cost + self.horizon * expected_cost_advantage.cpu().numpy() + params.lambda_c * kl.item()
        return surrogate_cost, expected_advantage.item() - params.lambda_ * kl.item(), kl.item()

    def fit(self, penalty: np.ndarray, eta: float, max_iter: int) -> None:
        """
        Fit theta to pi^u ∝ pi_phi exp((A - penalty.A_c) / eta) (Proposition 1), in place, from the
        current parameters, by weighted maximum likelihood on pi_phi's samples: maximise
        sum_i w_i log pi_theta(a_i|s_i) with w_i ∝ weight_i exp((A - penalty.A_c)_i / eta), the
        projection argmin_theta E_s[KL(pi^u || pi_theta)].

        Why not the reverse-KL objective of Appendix E.2.2 (E[KL(pi_theta || pi_phi)] - E[ratio x]/eta)?
        On finitely many samples it is unbounded below for Gaussian policies: a policy that puts its
        mass on single sampled actions with positive x makes the importance ratio, and the objective,
        arbitrarily large (an exact optimiser such as L-BFGS finds that). Both objectives have the same
        minimiser pi^u whenever the policy class contains it (checked exactly on tabular CMDPs).

        Precision: near the optimum the decrease of the loss per iteration is tiny (1e-8 for a
        probability error of 1e-4), below the resolution of a float32 loss of magnitude ~1. With
        L-BFGS's default ``tolerance_change`` (1e-9 on the loss change) the fit then stopped as soon as
        the float32 loss stopped changing, with a gradient still ~1e-4 (this, and the surrogate noise it
        fed to the dual solver, made the tabular tests miss the closed form by up to 0.09 in
        probability). Two choices avoid it: the weighted sum is accumulated in float64 (its rounding
        error then shrinks with the number of samples instead of being set by the loss's magnitude),
        and L-BFGS stops on the gradient, on ``max_iter``, or when its line search can make no step
        (``tolerance_change=0``), never on a loss change below float32 resolution.

        :param penalty: u, the multipliers of the cost advantages, (p,)
        :param eta: the temperature eta_u
        :param max_iter: maximum number of L-BFGS iterations
        """
        device = self.batch.advantages.device
        dtype = th.float32 if device.type == "mps" else th.float64  # MPS has no float64
        penalty_tensor = th.as_tensor(penalty, dtype=dtype, device=device)
        penalised = self.batch.advantages.to(dtype) - self.batch.cost_advantages.to(dtype) @ penalty_tensor
        log_target = th.log(self.batch.weights.to(dtype)) + penalised / eta
        sample_weights = th.softmax(log_target, dim=0)  # self-normalised: no overflow
        if self.latent is not None:
            fit_head(self.policy, self.latent, self.batch.actions, sample_weights, max_iter)  # type: ignore[arg-type]
            return
        optimizer = th.optim.LBFGS(
            self.parameters, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_change=0.0
        )

        def closure() -> th.Tensor:
            optimizer.zero_grad()
            log_prob = self.policy.get_distribution(self.batch.observations).log_prob(self.batch.actions)  # type: ignore[operator]
            loss = -th.sum(sample_weights * log_prob.to(dtype))
            loss.backward()
            return loss

        optimizer.step(closure)


def parametric_safe_adapt(
    policy: nn.Module,
    actor_parameters: Sequence[nn.Parameter],
    batch: AdaptationBatch,
    start_cost: np.ndarray,
    params: AdaptationParams,
    horizon: float,
    dual_solver: str = "auto",
    beta: float = 1.0,
    n_dual_steps: int = 20,
    fit_steps: int = 25,
    u0: np.ndarray | None = None,
    backtrack_steps: int = 15,
    dual_tol: float = 1e-3,
    fit_scope: str = "actor",
) -> ParametricAdaptResult:
    """
    One safe adaptation step A^s on a parametric policy, in place: on return the actor parameters
    of ``policy`` represent the adapted policy pi^{u*}.

    :param policy: an SB3 policy with ``get_distribution(obs)``; it is pi_phi on entry
    :param actor_parameters: the parameters theta of the action distribution (never the critics)
    :param batch: data collected with pi_phi
    :param start_cost: Jc(pi_phi), (p,), in the units of ``params.cost_limit``
    :param params: lambda, lambda_c, d, delta (``params.gamma`` must equal 1 - 1/horizon)
    :param horizon: H, the factor of E[A_c] in the surrogate: 1/(1 - gamma) in the paper's
        discounted form, the mean episode length in episode units
    :param dual_solver: ``"pgd"`` (Algorithm 1/3), ``"bisection"`` (p = 1 only: the surrogate
        slack is monotone in u), ``"newton"`` (projected Newton with finite-difference Hessian, see
        :func:`_projected_newton`) or ``"auto"`` (bisection for p = 1, else Newton)
    :param beta: PGD step size on the gradient (5) rescaled by H, i.e. u <- max(0, u - beta (d + delta - g))
    :param n_dual_steps: dual iterations, i.e. fits of pi^u (for ``"newton"``: at most this many fits,
        p + 1 or more per Newton iteration)
    :param fit_steps: L-BFGS iterations per fit of theta
    :param u0: warm start for u (e.g. the previous step's u*)
    :param backtrack_steps: if the surrogate constraint is still violated at u* (finite dual
        iterations), shrink the step phi + alpha (theta - phi) by 0.8 up to this many times; pi_phi itself
        is feasible, so this always ends safe w.r.t. the surrogate (0 disables)
    :param dual_tol: the dual solver stops when every constraint is satisfied and the active ones are
        within ``dual_tol * max(1, |d + delta|)`` of their bound (the default 1e-3 is far below the
        sampling error of a cost estimate, and the surrogate of a network fit already varies by about
        1e-2 relative between nearby u). The exact tabular comparisons use 1e-6.
    :param fit_scope: what represents pi^u: ``"actor"`` (every actor parameter, Appendix E.2) or ``"head"`` (the last
        layer only, on the actor's current features: a closed form for Gaussian policies, milliseconds per fit;
        see :mod:`sb3_safemeta.common.head_fit`)
    :return: multipliers and diagnostics
    """
    if fit_scope not in FIT_SCOPES:
        raise ValueError(f"fit_scope must be one of {FIT_SCOPES}, got {fit_scope!r}")
    if abs(params.gamma - (1.0 - 1.0 / horizon)) > 1e-9:
        raise ValueError(f"params.gamma must be 1 - 1/horizon = {1.0 - 1.0 / horizon}, got {params.gamma}")
    start_cost = np.asarray(start_cost, dtype=np.float64)
    surrogate = _Surrogate(policy, actor_parameters, batch, horizon, fit_scope)
    phi = parameters_to_vector(actor_parameters).detach().clone()
    n_costs = params.n_costs
    bound = params.cost_limit + params.delta_c

    if np.any(start_cost > bound):
        # Proposition 1 needs a feasible start. Take a cost-reducing step instead (the CRPO rule of
        # Algorithm 2, lines 9-12, in closed form): pi ∝ pi_phi exp(-sum_violated A_ci / std(A_ci)), a step on
        # the normalised cost advantages of about the size of a regular step (KL ~0.01), whatever lambda_c.
        # (Scaled by 1/lambda_c, as before, a large lambda_c made the step too small to leave an unsafe region:
        # on the hard PointNav task with lambda_c = 100 the cost climbed from 4 to 21 over 10 recovery steps.)
        violated = start_cost > bound
        scale = batch.cost_advantages.std(dim=0) + 1e-8
        weights = th.as_tensor(violated.astype(np.float64), dtype=scale.dtype, device=scale.device) / scale
        recovery_batch = AdaptationBatch(
            batch.observations, batch.actions, th.zeros_like(batch.advantages), batch.cost_advantages, batch.weights
        )
        _Surrogate(policy, actor_parameters, recovery_batch, horizon, fit_scope).fit(weights.cpu().numpy(), 1.0, fit_steps)
        surrogate_cost, objective, kl = surrogate.evaluate(start_cost, params)
        return ParametricAdaptResult(np.full(n_costs, np.inf), 1.0, surrogate_cost, objective, kl, 0, 1.0, True)

    fits: dict[tuple[float, ...], tuple[th.Tensor, np.ndarray]] = {}

    def fitted_surrogate(u: np.ndarray) -> np.ndarray:
        # every fit starts from phi (see the docstring) and is kept, so that the accepted theta is
        # the one whose surrogate was checked, not a re-fit
        _assign(phi, actor_parameters)
        surrogate.fit(u, adaptation_temperature(u, params), fit_steps)
        surrogate_cost = surrogate.evaluate(start_cost, params)[0]
        fits[tuple(u.tolist())] = (parameters_to_vector(actor_parameters).detach().clone(), surrogate_cost)
        return surrogate_cost

    solution = _solve_dual(
        fitted_surrogate, params, n_costs, dual_solver, beta, n_dual_steps, u0, dual_tol, _multiplier_scale(batch)
    )
    if tuple(solution.u.tolist()) not in fits:
        fitted_surrogate(solution.u)
    theta, surrogate_cost = fits[tuple(solution.u.tolist())]
    _assign(theta, actor_parameters)

    # Safeguard (not in the paper): with finitely many dual iterations and an inexact fit, the
    # surrogate constraint at u* can be violated by a little. pi_phi satisfies it (g(phi) = Jc(phi)
    # <= d + delta), so move back along phi + alpha (theta - phi) until it holds. A violation within
    # the dual solver's tolerance, or below 1e-4 relative (float32 noise of the fit), is not one:
    # backtracking shrinks the whole step by 20%, far more than such a violation calls for.
    tolerant_bound = bound + max(_RELATIVE_TOLERANCE, dual_tol) * np.maximum(1.0, np.abs(bound))
    fraction = 1.0
    for _ in range(backtrack_steps):
        if np.all(surrogate_cost <= tolerant_bound):
            break
        fraction *= _BACKTRACK_FACTOR
        _assign(phi + fraction * (theta - phi), actor_parameters)
        surrogate_cost = surrogate.evaluate(start_cost, params)[0]
    if np.any(surrogate_cost > tolerant_bound):
        _assign(phi, actor_parameters)  # nothing safe found: stay at pi_phi
        fraction = 0.0
    surrogate_cost, objective, kl = surrogate.evaluate(start_cost, params)
    return ParametricAdaptResult(
        u=solution.u,
        eta=adaptation_temperature(solution.u, params),
        surrogate_cost=surrogate_cost,
        objective=objective,
        kl=kl,
        n_dual_iterations=solution.n_iterations,
        backtrack_fraction=fraction,
        recovery=False,
        dual_converged=solution.converged,
    )


def _multiplier_scale(batch: AdaptationBatch) -> float:
    """
    :return: std(A) / mean_i std(A_ci) under the sample weights: the u at which the cost penalty u.A_c
        is as large as the reward advantage, a first guess of u* without a warm start (1 if A_c is constant)
    """
    weights = batch.weights.double()

    def std(values: th.Tensor) -> th.Tensor:
        values = values.double()
        centred = values - weights @ values
        return th.sqrt(weights @ centred**2)

    cost_std = float(std(batch.cost_advantages).mean())
    return float(std(batch.advantages)) / cost_std if cost_std > 0.0 else 1.0


def _solve_dual(
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
        return _bisection(fitted_surrogate, params, n_steps, u0, tol, u_scale)
    if dual_solver == "newton":
        return _projected_newton(fitted_surrogate, params, n_costs, n_steps, u0, tol)
    raise ValueError(f"dual_solver must be 'auto', 'newton', 'pgd' or 'bisection', got {dual_solver!r}")


def _bisection(
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
        low, slack_low, high = high, slack_high, 2.0 * high
        slack_high = slack(high)
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


def _box_qp(linear: np.ndarray, hessian: np.ndarray, start: np.ndarray, max_sweeps: int = 1000) -> np.ndarray:
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


def _projected_newton(
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
    (1 - gamma) s(u) with the scaled slack s = (d + delta - g(pi^u)) / max(1, |d + delta|), and the
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
    :param tol: stopping tolerance on the KKT residual max_i |min(u_i, s_i)|
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
        direction = _box_qp(s - hessian @ u, hessian, u) - u
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


def adapt_on_rollout(
    policy: Any,
    rollout: RolloutData,
    lambda_: float,
    lambda_c: Any,
    cost_limit: Any,
    delta_c: Any = 0.0,
    normalize_advantage: bool = True,
    **solver_kwargs: Any,
) -> ParametricAdaptResult:
    """
    A^s in episode units on an SB3 cost policy, from a rollout of that policy: the surrogate uses
    Jc(pi_phi) = the rollout's mean episode cost and H = its mean episode length (so the paper's
    gamma is replaced by 1 - 1/H in eta_u and in the dual gradient).

    :param policy: a policy with ``actor_parameters()`` and ``get_distribution`` (pi_phi on entry, pi^u* on return)
    :param rollout: data collected with ``policy`` on one task
    :param lambda_: lambda
    :param lambda_c: lambda_c (float or per channel)
    :param cost_limit: d in episode units (float or per channel)
    :param delta_c: delta (float or per channel)
    :param normalize_advantage: divide the reward advantages by their standard deviation, so that
        lambda is relative to the reward scale (the same problem (1) with lambda * std(A)); the cost
        advantages are never rescaled, the constraints stay in cost units
    :param solver_kwargs: forwarded to :func:`parametric_safe_adapt`
    :return: the result of the step
    """
    horizon = rollout.horizon
    n_costs = rollout.cost_advantages.shape[1]
    params = AdaptationParams.create(lambda_, lambda_c, cost_limit, delta_c, 1.0 - 1.0 / horizon, n_costs)
    batch = rollout.to_batch(policy.device)
    # Centre both advantages: E_{pi_phi}[A] = E_{pi_phi}[A_c] = 0 for the true advantages, but estimates
    # (Monte-Carlo returns minus a fitted baseline, GAE) have a sample mean, and since the fitted pi^u raises
    # the likelihood of the sampled actions, E[ratio] > 1 on the samples: an offset c of A_c would add
    # H * c * (E[ratio] - 1) to the surrogate cost. pi^u is unchanged (a constant shift cancels in eq. (3)).
    batch.advantages = batch.advantages - batch.advantages.mean()
    batch.cost_advantages = batch.cost_advantages - batch.cost_advantages.mean(dim=0)
    if normalize_advantage:
        batch.advantages = batch.advantages / (batch.advantages.std() + 1e-8)
    return parametric_safe_adapt(
        policy,
        policy.actor_parameters(),
        batch,
        rollout.episode_cost,
        params,
        horizon,
        **solver_kwargs,
    )
