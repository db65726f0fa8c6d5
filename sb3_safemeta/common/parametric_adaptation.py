"""
The safe policy adaptation A^s with a parametric adapted policy (Appendix E.2; Algorithm 3): pi^u,
the closed form of Proposition 1 (eq. 3), is represented by network parameters theta fitted, for
fixed multipliers u, to pi^u ∝ pi_phi exp((A - u.A_c) / eta_u) on the samples of pi_phi (weighted
maximum likelihood; see ``_Surrogate.fit`` for why not the reverse-KL form of Appendix E.2.2), and
the dual (4) is solved on u with the importance-weighted surrogate of every constraint (eq. 5, 10-11):

    g_i(theta) = Jc_i(pi_phi) + H E_{s, a~pi_phi}[ratio A_ci] + lambda_ci E_s[KL(pi_theta || pi_phi)].

H is the horizon factor that stands for 1/(1 - gamma) of the paper (see ``horizon`` below).
The KL is analytic (torch.distributions), so no extra samples are needed. theta is fitted by
full-batch L-BFGS (torch.optim.LBFGS, deterministic), warm-started from the previous u's solution.

Units: with data from episodes of mean length T, ``horizon=T``, costs summed undiscounted over an
episode and undiscounted cost advantages, g_i is the first-order model of the *episode* cost of
pi_theta (performance difference lemma of the finite-horizon, undiscounted CMDP), so ``cost_limit``
is in the units users read (Safety-Gymnasium convention). With ``horizon=1/(1-gamma)``, discounted
Jc and samples from the discounted visitation it is exactly the paper's problem (1).
"""

from __future__ import annotations

from collections.abc import Sequence
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

if TYPE_CHECKING:
    from sb3_safemeta.common.rollout_data import RolloutData

__all__ = ["AdaptationBatch", "ParametricAdaptResult", "adapt_on_rollout", "parametric_safe_adapt"]

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
    """

    u: np.ndarray
    eta: float
    surrogate_cost: np.ndarray
    objective: float
    kl: float
    n_dual_iterations: int
    backtrack_fraction: float
    recovery: bool


def _assign(vector: th.Tensor, parameters: Sequence[nn.Parameter]) -> None:
    """Write a flat vector into parameters. vector_to_parameters makes them share its storage, so copy
    first: otherwise the in-place updates of a later fit would silently change ``vector`` (e.g. phi)."""
    vector_to_parameters(vector.clone(), parameters)


def _kl(new: Distribution, old: th.distributions.Distribution) -> th.Tensor:
    """Analytic KL(new || old) per state, summed over independent action dimensions (diagonal Gaussian)."""
    kl = th.distributions.kl_divergence(new.distribution, old)  # type: ignore[arg-type]
    return kl.sum(dim=-1) if kl.ndim > 1 else kl


class _Surrogate:
    """Importance-weighted surrogate of problem (1) around pi_phi for one batch."""

    def __init__(self, policy: nn.Module, parameters: Sequence[nn.Parameter], batch: AdaptationBatch, horizon: float):
        self.policy, self.parameters, self.batch, self.horizon = policy, list(parameters), batch, horizon
        with th.no_grad():
            old = policy.get_distribution(batch.observations)  # type: ignore[operator]
            self.old_log_prob = old.log_prob(batch.actions)
            # keep the torch distribution itself: SB3's Distribution wrapper is reused (and
            # overwritten) by every later get_distribution call of the same policy
            self.old_distribution = old.distribution

    def terms(self) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:return: E_w[ratio A], E_w[ratio A_c] (p,), E_w[KL] at the current parameters"""
        distribution = self.policy.get_distribution(self.batch.observations)  # type: ignore[operator]
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
        """
        penalty_tensor = th.as_tensor(penalty, dtype=self.batch.advantages.dtype, device=self.batch.advantages.device)
        log_target = th.log(self.batch.weights) + (self.batch.advantages - self.batch.cost_advantages @ penalty_tensor) / eta
        sample_weights = th.softmax(log_target, dim=0).detach()  # self-normalised: no overflow
        optimizer = th.optim.LBFGS(self.parameters, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> th.Tensor:
            optimizer.zero_grad()
            log_prob = self.policy.get_distribution(self.batch.observations).log_prob(self.batch.actions)  # type: ignore[operator]
            loss = -th.sum(sample_weights * log_prob)
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
        slack is monotone in u) or ``"auto"`` (bisection for p = 1, else PGD)
    :param beta: PGD step size on the gradient (5) rescaled by H, i.e. u <- max(0, u - beta (d + delta - g))
    :param n_dual_steps: dual iterations
    :param fit_steps: L-BFGS iterations per fit of theta
    :param u0: warm start for u (e.g. the previous step's u*)
    :param backtrack_steps: if the surrogate constraint is still violated at u* (finite dual
        iterations), halve the step phi + alpha (theta - phi) up to this many times; pi_phi itself
        is feasible, so this always ends safe w.r.t. the surrogate (0 disables)
    :return: multipliers and diagnostics
    """
    if abs(params.gamma - (1.0 - 1.0 / horizon)) > 1e-9:
        raise ValueError(f"params.gamma must be 1 - 1/horizon = {1.0 - 1.0 / horizon}, got {params.gamma}")
    start_cost = np.asarray(start_cost, dtype=np.float64)
    surrogate = _Surrogate(policy, actor_parameters, batch, horizon)
    phi = parameters_to_vector(actor_parameters).detach().clone()
    n_costs = params.n_costs
    bound = params.cost_limit + params.delta_c

    if np.any(start_cost > bound):
        # Proposition 1 needs a feasible start. Take a cost-reducing step instead (the CRPO rule of
        # Algorithm 2, lines 9-12, in closed form): pi ∝ pi_phi exp(-sum_violated A_ci / (std(A_ci) lambda_ci)),
        # whose size is set by lambda_c like a regular step (the u -> infinity limit of pi^u is the same
        # direction with temperature lambda_c (1 - gamma) / std, usually far too large a step).
        violated = start_cost > bound
        scale = batch.cost_advantages.std(dim=0) + 1e-8
        weights = th.as_tensor(violated / np.maximum(params.lambda_c, 1e-8), dtype=scale.dtype, device=scale.device) / scale
        recovery_batch = AdaptationBatch(
            batch.observations, batch.actions, th.zeros_like(batch.advantages), batch.cost_advantages, batch.weights
        )
        _Surrogate(policy, actor_parameters, recovery_batch, horizon).fit(weights.cpu().numpy(), 1.0, fit_steps)
        surrogate_cost, objective, kl = surrogate.evaluate(start_cost, params)
        return ParametricAdaptResult(np.full(n_costs, np.inf), 1.0, surrogate_cost, objective, kl, 0, 1.0, True)

    fits: dict[tuple[float, ...], tuple[th.Tensor, np.ndarray]] = {}

    def fitted_surrogate(u: np.ndarray) -> np.ndarray:
        # warm start: theta stays where the previous u left it; every fit is kept so that the
        # accepted theta is the one whose surrogate was checked, not a re-fit
        surrogate.fit(u, adaptation_temperature(u, params), fit_steps)
        surrogate_cost = surrogate.evaluate(start_cost, params)[0]
        fits[tuple(u.tolist())] = (parameters_to_vector(actor_parameters).detach().clone(), surrogate_cost)
        return surrogate_cost

    solution = _solve_dual(fitted_surrogate, params, n_costs, dual_solver, beta, n_dual_steps, u0)
    if tuple(solution.u.tolist()) not in fits:
        fitted_surrogate(solution.u)
    theta, surrogate_cost = fits[tuple(solution.u.tolist())]
    _assign(theta, actor_parameters)

    # Safeguard (not in the paper): with finitely many dual iterations and an inexact fit, the
    # surrogate constraint at u* can be violated by a little. pi_phi satisfies it (g(phi) = Jc(phi)
    # <= d + delta), so move back along phi + alpha (theta - phi) until it holds.
    # float32 fits reach the closed form to ~1e-4 relative: a violation below that is noise
    tolerant_bound = bound + _RELATIVE_TOLERANCE * np.maximum(1.0, np.abs(bound))
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
    )


def _solve_dual(fitted_surrogate, params: AdaptationParams, n_costs: int, dual_solver: str, beta: float, n_steps: int, u0):
    """Minimise the dual (4) over u >= 0 with the fitted surrogate as the gradient oracle (eq. 5)."""
    if dual_solver == "auto":
        dual_solver = "bisection" if n_costs == 1 else "pgd"
    if dual_solver == "pgd":
        horizon = 1.0 / (1.0 - params.gamma)

        def gradient(u: np.ndarray) -> np.ndarray:
            return dual_gradient(fitted_surrogate(u), params) * horizon

        return projected_gradient_descent(gradient, n_costs, beta, n_steps, u0=u0, tol=1e-6)
    if dual_solver == "bisection":
        if n_costs != 1:
            raise ValueError(f"dual_solver='bisection' needs one cost channel, got {n_costs}; use 'pgd'")
        return _bisection(fitted_surrogate, params, n_steps, u0)
    raise ValueError(f"dual_solver must be 'auto', 'pgd' or 'bisection', got {dual_solver!r}")


def _bisection(fitted_surrogate, params: AdaptationParams, n_steps: int, u0) -> DualSolution:
    """
    p = 1: the dual gradient (5) is non-decreasing in u (the dual is convex), so u* is 0 if the
    surrogate constraint holds at u = 0, else the root of d + delta - g(pi^u), bracketed by doubling.
    """
    bound = float(params.cost_limit[0] + params.delta_c[0])
    evaluations = 1
    if fitted_surrogate(np.zeros(1))[0] <= bound:
        return DualSolution(u=np.zeros(1), n_iterations=evaluations, converged=True)
    low, high = 0.0, max(float(np.ravel(u0)[0]) if u0 is not None else 1.0, 1e-3)
    while fitted_surrogate(np.array([high]))[0] > bound and evaluations < n_steps:
        low, high, evaluations = high, 2.0 * high, evaluations + 1
    while evaluations < n_steps:
        middle = 0.5 * (low + high)
        evaluations += 1
        if fitted_surrogate(np.array([middle]))[0] > bound:
            low = middle
        else:
            high = middle
    # the upper end of the bracket is the feasible side
    return DualSolution(u=np.array([high]), n_iterations=evaluations, converged=(high - low) <= 1e-3 * max(high, 1e-6))


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
