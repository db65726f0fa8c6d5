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

``fit_scope="hybrid"`` solves the dual on head fits (closed form, milliseconds; see
:mod:`sb3_safemeta.common.adaptation.head_fit`) and fits the whole actor once at that u*, falling back on a corrected
u* and then on the actor's own dual where the actor's surrogate violates there (:func:`_hybrid_dual`): one network fit
per step where the head models the actor, instead of one per dual iteration.

The dual solver (``dual_solver="auto"``) is bracketing regula falsi for one cost channel and a
projected Newton method for several (see :func:`bisection`, :func:`projected_newton`); PGD
(Algorithm 1) is available as ``"pgd"``.

Units: with data from episodes of mean length T, ``horizon=T``, costs summed undiscounted over an
episode and undiscounted cost advantages, g_i is the first-order model of the *episode* cost of
pi_theta (performance difference lemma of the finite-horizon, undiscounted CMDP), so ``cost_limit``
is in the units users read (Safety-Gymnasium convention). With ``horizon=1/(1-gamma)``, discounted
Jc and samples from the discounted visitation it is exactly the paper's problem (1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.common.adaptation.confidence import episode_cost_upper_bound
from sb3_safemeta.common.adaptation.dual import AdaptationParams, DualSolution, adaptation_temperature, solve_dual
from sb3_safemeta.common.adaptation.head_fit import actor_latent, fit_head
from sb3_safemeta.common.adaptation.options import FIT_SCOPES, AdaptationOptions

if TYPE_CHECKING:
    from sb3_safemeta.common.rollout_data import RolloutData

__all__ = ["ParametricAdaptResult", "adapt_on_rollout", "parametric_safe_adapt", "proposition4_lambda_c"]
_BACKTRACK_FACTOR = 0.8
_RELATIVE_TOLERANCE = 1e-4
# cost advantages whose spread is below this fraction of the reward advantages' are round-off, not a signal
_NO_COST_SIGNAL = 1e-6


@dataclass(frozen=True)
class ParametricAdaptResult:
    """
    :param u: multipliers u*, (p,)
    :param eta: eta_{u*}
    :param surrogate_cost: g_i at the accepted parameters, (p,)
    :param objective: E[ratio A] - lambda E[KL] at the accepted parameters
    :param kl: E_s[KL(pi_new || pi_phi)]
    :param n_dual_iterations: fits of pi^u made by the dual solve (head and actor fits with ``fit_scope="hybrid"``)
    :param backtrack_fraction: alpha of the accepted point phi + alpha (theta* - phi) (1 = no backtracking)
    :param recovery: whether the start was infeasible and a cost-reducing step was taken instead
    :param dual_converged: whether the dual solver met its tolerance within ``n_dual_steps`` fits
    :param held: whether pi_phi was kept unchanged because only the upper confidence bound of Jc(pi_phi), not
        its estimate, violates d + delta (the statistical margin cannot certify a step: see
        :mod:`sb3_safemeta.common.adaptation.confidence`)
    :param start_cost: the value of Jc(pi_phi) the constraint used (the rollout's mean episode cost, or its upper
        confidence bound under the statistical margin), (p,)
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
    held: bool = False
    start_cost: np.ndarray | None = None


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
        the actor's latent features, computed once; see :mod:`sb3_safemeta.common.adaptation.head_fit`)
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
    start_cost_estimate: np.ndarray | None = None,
    test_batch: AdaptationBatch | None = None,
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
        :func:`projected_newton`) or ``"auto"`` (bisection for p = 1, else Newton)
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
    :param fit_scope: what represents pi^u: ``"actor"`` (every actor parameter, Appendix E.2), ``"head"`` (the last
        layer only, on the actor's current features: a closed form for Gaussian policies, milliseconds per fit;
        see :mod:`sb3_safemeta.common.adaptation.head_fit`) or ``"hybrid"`` (the dual solved on head fits, then
        one fit of every actor parameter at that u*, checked and backtracked on its own surrogate: one network
        fit per step instead of one per dual iteration)
    :param start_cost_estimate: the point estimate of Jc(pi_phi) when ``start_cost`` is an upper confidence
        bound of it (the statistical margin): where the bound violates d + delta, a violating estimate calls for
        a recovery step and an estimate within d + delta holds pi_phi (no step can be certified). None: the
        estimate is ``start_cost``
    :param test_batch: samples of pi_phi held out of ``batch`` (``holdout_fraction``): the fits and the dual use
        ``batch``; the accepted step is checked and backtracked, and a recovery step sized, by the constraint function
        g on ``test_batch``, and the result reports g, the objective and the KL there. None: all on ``batch``
    :return: multipliers and diagnostics
    """
    if fit_scope not in FIT_SCOPES:
        raise ValueError(f"fit_scope must be one of {FIT_SCOPES}, got {fit_scope!r}")
    if abs(params.gamma - (1.0 - 1.0 / horizon)) > 1e-9:
        raise ValueError(f"params.gamma must be 1 - 1/horizon = {1.0 - 1.0 / horizon}, got {params.gamma}")
    start_cost = np.asarray(start_cost, dtype=np.float64)
    if fit_scope != "actor" and not _head_identified(policy, batch):
        fit_scope = "actor"
    # "hybrid": the dual is solved on head fits (milliseconds each), the accepted policy is one whole-actor fit at
    # that u*, judged (and backtracked) on the whole actor's surrogate like any other step
    hybrid = fit_scope == "hybrid"
    step_scope = "actor" if hybrid else fit_scope  # what represents the accepted step (and the recovery step)
    surrogate = _Surrogate(policy, actor_parameters, batch, horizon, step_scope)
    # what judges a step: the fit's own samples, or held-out ones (the fit reweights the samples it is fitted on, so
    # their surrogate overstates the cost decrease: on Point-Button a recovery step predicted 90 -> -18 for a policy
    # whose cost went 52 -> 56 on independent episodes)
    judge = surrogate if test_batch is None else _Surrogate(policy, actor_parameters, test_batch, horizon, "actor")
    phi = parameters_to_vector(actor_parameters).detach().clone()
    n_costs = params.n_costs
    bound = params.cost_limit + params.delta_c

    estimate = start_cost if start_cost_estimate is None else np.asarray(start_cost_estimate, dtype=np.float64)
    no_cost_signal = bool(
        th.all(batch.cost_advantages.std(dim=0) <= _NO_COST_SIGNAL * max(float(batch.advantages.std()), 1e-30))
    )
    if np.any(start_cost > bound) and (np.all(estimate <= bound) or no_cost_signal):
        # Only the confidence bound violates d + delta (or the rollout has no cost advantage to descend): no step
        # is certified safe and there is no direction to reduce the cost; keep pi_phi (more episodes per step
        # tighten the bound, see confidence.min_episodes).
        surrogate_cost, objective, kl = judge.evaluate(start_cost, params)
        return ParametricAdaptResult(
            np.full(n_costs, np.inf), params.lambda_, surrogate_cost, objective, kl, 0, 0.0, False,
            held=True, start_cost=start_cost,
        )  # fmt: skip

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
        # one fit either way (no dual solve to make cheaper): "hybrid" fits the whole actor
        recovery = _Surrogate(policy, actor_parameters, recovery_batch, horizon, step_scope)
        recovery.fit(weights.cpu().numpy(), 1.0, fit_steps)
        # The step size: the fit of the normalised cost advantages has no KL control of its own (a rollout with
        # a few hazardous episodes made a recovery step of KL 3.6 on SafeMetaCarCircleHazard-v0). Along
        # phi + alpha (theta - phi), alpha = 0.8^k, take the point that minimises the constraint function of
        # problem (1), Jc + H E[ratio A_c] + lambda_c KL, summed over the violated channels: under Lemma 1 it is
        # an upper bound of the new cost, so the step reduces the bound as far as this line allows; phi itself
        # (alpha = 0, g = Jc) is kept when no point reduces it.
        theta = parameters_to_vector(actor_parameters).detach().clone()
        best_fraction, best_value = 0.0, float(np.sum(start_cost[violated]))
        fraction = 1.0
        for _ in range(max(backtrack_steps, 1) + 1):
            _assign(phi + fraction * (theta - phi), actor_parameters)
            value = float(np.sum(judge.evaluate(start_cost, params)[0][violated]))
            if value < best_value:
                best_fraction, best_value = fraction, value
            fraction *= _BACKTRACK_FACTOR
        fraction = best_fraction
        _assign(phi + fraction * (theta - phi), actor_parameters)
        surrogate_cost, objective, kl = judge.evaluate(start_cost, params)
        return ParametricAdaptResult(
            np.full(n_costs, np.inf), 1.0, surrogate_cost, objective, kl, 0, fraction, True, start_cost=start_cost
        )

    # A violation within the dual solver's tolerance, or below 1e-4 relative (float32 noise of the fit), is not one
    tolerant_bound = bound + max(_RELATIVE_TOLERANCE, dual_tol) * np.maximum(1.0, np.abs(bound))
    multiplier_scale = _multiplier_scale(batch, params)

    def solve(oracle: _FitOracle, limits: AdaptationParams, start: np.ndarray | None) -> DualSolution:
        return solve_dual(oracle, limits, n_costs, dual_solver, beta, n_dual_steps, start, dual_tol, multiplier_scale)

    fit_arguments = (phi, actor_parameters, start_cost, params, fit_steps)
    oracle = _FitOracle(surrogate, *fit_arguments)  # its fits are the candidates of the accepted step
    if hybrid:  # the head's latent features are computed here, not for a held or recovery step
        head_oracle = _FitOracle(_Surrogate(policy, actor_parameters, batch, horizon, "head"), *fit_arguments)
        solution = _hybrid_dual(solve, head_oracle, oracle, params, tolerant_bound, u0)
    else:
        solution = solve(oracle, params, u0)
    theta, surrogate_cost = oracle.fit_at(solution.u)
    _assign(theta, actor_parameters)
    n_fits = oracle.n_fits + (head_oracle.n_fits if hybrid else 0)
    if judge is not surrogate:  # the held-out test of the chosen step
        surrogate_cost = judge.evaluate(start_cost, params)[0]

    # Safeguard (not in the paper): with finitely many dual iterations and an inexact fit, the
    # surrogate constraint at u* can be violated by a little. pi_phi satisfies it (g(phi) = Jc(phi)
    # <= d + delta), so move back along phi + alpha (theta - phi) until it holds (each backtracking step shrinks
    # the whole step by 20%, far more than a violation within the tolerance calls for).
    fraction = 1.0
    for _ in range(backtrack_steps):
        if np.all(surrogate_cost <= tolerant_bound):
            break
        fraction *= _BACKTRACK_FACTOR
        _assign(phi + fraction * (theta - phi), actor_parameters)
        surrogate_cost = judge.evaluate(start_cost, params)[0]
    if np.any(surrogate_cost > tolerant_bound):
        _assign(phi, actor_parameters)  # nothing safe found: stay at pi_phi
        fraction = 0.0
    surrogate_cost, objective, kl = judge.evaluate(start_cost, params)
    return ParametricAdaptResult(
        u=solution.u,
        eta=adaptation_temperature(solution.u, params),
        surrogate_cost=surrogate_cost,
        objective=objective,
        kl=kl,
        n_dual_iterations=n_fits,
        backtrack_fraction=fraction,
        recovery=False,
        dual_converged=solution.converged,
        start_cost=start_cost,
    )


def _head_identified(policy: nn.Module, batch: AdaptationBatch) -> bool:
    """
    Whether the samples identify a fit of the last layer (``fit_scope="head"`` and ``"hybrid"``): a linear head has
    k + 1 coefficients per action dimension on k latent features, and with n <= k + 1 samples its weighted
    least-squares fit interpolates the actions, so the residual variance, hence the Gaussian std, collapses to its
    floor (std 1e-6) and the surrogate's ratios overflow (seen on the 50-step rollouts of the smoke budget with a
    64-unit actor). Below 2 (k + 1) samples (the variance is then underestimated by a factor above 2) the step fits
    the whole actor instead, whose L-BFGS fit is bounded by ``fit_steps``.

    :return: False when the head is a linear layer with fewer than 2 (k + 1) samples to fit it
    """
    head = getattr(policy, "action_net", None)
    return not isinstance(head, nn.Linear) or len(batch.weights) >= 2 * (head.in_features + 1)


class _FitOracle:
    """
    The dual solvers' oracle u -> g(pi^u): one fit of pi^u from phi per new u (see the module docstring: every fit
    starts from phi), each kept, so that the accepted theta is the one whose surrogate was checked, not a re-fit, and a
    u asked again (the hybrid fallback's dual starts where the corrected fit failed) costs no second fit.
    """

    def __init__(
        self,
        surrogate: _Surrogate,
        phi: th.Tensor,
        actor_parameters: Sequence[nn.Parameter],
        start_cost: np.ndarray,
        params: AdaptationParams,
        fit_steps: int,
    ):
        self.surrogate, self.phi, self.actor_parameters = surrogate, phi, actor_parameters
        self.start_cost, self.params, self.fit_steps = start_cost, params, fit_steps
        self.fits: dict[tuple[float, ...], tuple[th.Tensor, np.ndarray]] = {}
        self.n_fits = 0

    def __call__(self, u: np.ndarray) -> np.ndarray:
        key = tuple(u.tolist())
        if key in self.fits:
            # a fit from phi is deterministic: the hybrid fallback's dual starts on u's already fitted
            return self.fits[key][1].copy()
        self.n_fits += 1
        _assign(self.phi, self.actor_parameters)
        self.surrogate.fit(u, adaptation_temperature(u, self.params), self.fit_steps)
        surrogate_cost = self.surrogate.evaluate(self.start_cost, self.params)[0]
        self.fits[key] = (parameters_to_vector(self.actor_parameters).detach().clone(), surrogate_cost)
        return surrogate_cost.copy()

    def fit_at(self, u: np.ndarray) -> tuple[th.Tensor, np.ndarray]:
        """:return: theta and g(pi^u) of the fit at u (fitted now if the solver ended on a u it did not fit: PGD)"""
        self(u)  # no second fit of a u already fitted
        return self.fits[tuple(u.tolist())]


def _hybrid_dual(
    solve: Any,
    head_oracle: _FitOracle,
    actor_oracle: _FitOracle,
    params: AdaptationParams,
    tolerant_bound: np.ndarray,
    u0: np.ndarray | None,
) -> DualSolution:
    """
    ``fit_scope="hybrid"``: the dual (4) on head fits (closed form, milliseconds), then pi^{u*} by the whole actor,
    whose own surrogate decides (with more capacity it may move further than the head at the same u).

    1. u* of the head's dual; one actor fit there. Feasible: done (one network fit).
    2. Else one correction: the head's surrogate curve g_head(u), shifted by the offset g_actor - g_head seen at u*,
       models the actor's; u* of the head's dual against d + delta - offset, one actor fit there.
    3. Still infeasible: the head does not model the actor on this batch; the actor's own dual, warm-started at the
       last u (the cost of ``fit_scope="actor"``, paid only where the cheap path failed).

    :param solve: (oracle, params, warm start) -> DualSolution
    :return: the multipliers of the accepted actor fit (a point ``actor_oracle`` has fitted)
    """
    solution = solve(head_oracle, params, u0)
    head_cost = head_oracle.fit_at(solution.u)[1]
    if not np.all(np.isfinite(head_cost)):  # a degenerate head fit models nothing
        return solve(actor_oracle, params, u0)
    actor_cost = actor_oracle(solution.u)
    if np.all(actor_cost <= tolerant_bound):
        return solution
    offset = actor_cost - head_cost
    if np.all(offset >= 0.0):
        solution = solve(head_oracle, dataclasses.replace(params, cost_limit=params.cost_limit - offset), solution.u)
        if np.all(actor_oracle(solution.u) <= tolerant_bound):
            return solution
    return solve(actor_oracle, params, solution.u)


def _multiplier_scale(batch: AdaptationBatch, params: AdaptationParams) -> float:
    """
    The first upper end of the dual bracket without a warm start.

    With a cost signal: std(A) / mean_i std(A_ci) under the sample weights, the u at which the cost penalty
    u.A_c is as large as the reward advantage. Without one (a rollout that never met the hazard: the cost
    advantages are zero up to round-off, e.g. 1e-15 from the baseline fit), that ratio is ~1e15 and the
    bracket started there (and doubled) used to end at u ~ 1e21, a step frozen at pi_phi (issue 12). There
    the constraint is bound by its lambda_c * KL term alone (eq. 1), which depends on u only through
    eta_u = lambda + (1 - gamma) sum_i u_i lambda_ci (Proposition 1): the scale is then the u at which
    eta_u = 2 lambda, and u* is the finite root of lambda_c KL(pi^u || pi_phi) = d + delta - Jc.

    :return: the scale of u (1 if neither is defined)
    """
    weights = batch.weights.double()

    def std(values: th.Tensor) -> th.Tensor:
        values = values.double()
        centred = values - weights @ values
        return th.sqrt(weights @ centred**2)

    reward_std = float(std(batch.advantages))
    cost_std = float(std(batch.cost_advantages).mean())
    kl_weight = (1.0 - params.gamma) * float(np.sum(params.lambda_c))
    if cost_std <= _NO_COST_SIGNAL * max(reward_std, 1e-30):
        return params.lambda_ / kl_weight if kl_weight > 0.0 else 1.0
    return reward_std / cost_std


def adapt_on_rollout(
    policy: Any,
    rollout: RolloutData,
    options: AdaptationOptions,
    cost_limit: Any,
    u0: np.ndarray | None = None,
) -> ParametricAdaptResult:
    """
    A^s in episode units on an SB3 cost policy, from a rollout of that policy: the surrogate uses
    Jc(pi_phi) = the rollout's mean episode cost and H = its mean episode length (so the paper's
    gamma is replaced by 1 - 1/H in eta_u and in the dual gradient).

    :param policy: a policy with ``actor_parameters()`` and ``get_distribution`` (pi_phi on entry, pi^u* on return)
    :param rollout: data collected with ``policy`` on one task
    :param options: lambda, lambda_c, delta, the statistical margin (``cost_confidence``: None constrains the
        rollout's mean episode cost, the paper's problem (1) with an estimated Jc; a level 1 - alpha constrains an
        upper confidence bound of Jc(pi_phi) instead, see :mod:`sb3_safemeta.common.adaptation.confidence`) and
        the solver settings of the step
    :param cost_limit: d in episode units (float or per channel)
    :param u0: warm start of the multipliers (e.g. the previous step's u*)
    :return: the result of the step
    """
    horizon = rollout.horizon
    n_costs = rollout.cost_advantages.shape[1]
    lambda_c: Any = options.lambda_c
    if options.lambda_c_rule == "prop4":
        step_cost = default_episode_cost_range(rollout) / float(np.max(rollout.episode_lengths))
        largest = np.maximum(np.max(np.abs(rollout.cost_advantages), axis=0), step_cost)
        lambda_c = np.maximum(
            np.broadcast_to(np.asarray(lambda_c, dtype=np.float64), (n_costs,)),
            proposition4_lambda_c(largest, horizon, options.visitation_constant),
        )
    params = AdaptationParams.create(options.lambda_, lambda_c, cost_limit, options.delta_c, 1.0 - 1.0 / horizon, n_costs)
    batch = rollout.to_batch(policy.device)
    # Centre both advantages: E_{pi_phi}[A] = E_{pi_phi}[A_c] = 0 for the true advantages, but estimates
    # (Monte-Carlo returns minus a fitted baseline, GAE) have a sample mean, and since the fitted pi^u raises
    # the likelihood of the sampled actions, E[ratio] > 1 on the samples: an offset c of A_c would add
    # H * c * (E[ratio] - 1) to the surrogate cost. pi^u is unchanged (a constant shift cancels in eq. (3)).
    batch.advantages = batch.advantages - batch.advantages.mean()
    batch.cost_advantages = batch.cost_advantages - batch.cost_advantages.mean(dim=0)
    if options.normalize_advantage:
        batch.advantages = batch.advantages / (batch.advantages.std() + 1e-8)
    test_batch = None
    if options.holdout_fraction > 0.0:  # fit on some episodes, judge the step on the others
        held_out = th.as_tensor(rollout.held_out(options.holdout_fraction), device=batch.weights.device)
        batch, test_batch = batch.subset(~held_out), batch.subset(held_out)
    start_cost = rollout.episode_cost
    estimate = None
    if options.cost_confidence is not None:  # the statistical margin: an upper confidence bound of Jc(pi_phi)
        estimate = start_cost
        cost_range: Any = options.episode_cost_range
        if cost_range is None and options.cost_bound != "bootstrap":
            cost_range = default_episode_cost_range(rollout)
        start_cost = episode_cost_upper_bound(
            rollout.episode_costs, options.cost_confidence, cost_range, method=options.cost_bound
        )
    return parametric_safe_adapt(
        policy,
        policy.actor_parameters(),
        batch,
        start_cost,
        params,
        horizon,
        start_cost_estimate=estimate,
        u0=u0,
        test_batch=test_batch,
        **options.solver_kwargs(),
    )


def proposition4_lambda_c(largest_cost_advantage: np.ndarray, horizon: float, visitation_constant: float = 1.0) -> np.ndarray:
    """
    Proposition 4: lambda_ci >= 4 gamma A_ci^max / (eta alpha (1 - gamma)^2) makes the constraint of problem (1) an
    upper bound of Jc_i(pi) (Lemma 1), so every step is safe whenever pi_phi is. In episode units gamma = 1 - 1/H:
    4 (1 - 1/H) H^2 A_ci^max / (eta alpha) = 4 H (H - 1) A_ci^max / (eta alpha).

    :param largest_cost_advantage: A_ci^max per channel, (p,)
    :param horizon: H, the mean episode length
    :param visitation_constant: eta * alpha of Assumption 2, in (0, 1]
    :return: the smallest lambda_c of Proposition 4, (p,)
    """
    gamma = 1.0 - 1.0 / horizon
    return 4.0 * gamma * np.asarray(largest_cost_advantage, dtype=np.float64) / (visitation_constant * (1.0 - gamma) ** 2)


def default_episode_cost_range(rollout: RolloutData) -> np.ndarray:
    """
    :param rollout: a rollout with complete episodes
    :return: R per channel when none is given: the longest episode of the rollout x max(1, the largest step
        cost it saw) (indicator costs, Safety-Gymnasium's convention: R = horizon)
    """
    longest = float(np.max(rollout.episode_lengths))
    per_step = np.max(np.abs(rollout.episode_costs), axis=0) / np.maximum(rollout.episode_lengths.min(), 1.0)
    return longest * np.maximum(1.0, per_step)
