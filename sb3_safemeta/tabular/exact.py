"""
Exact safe policy adaptation and safe meta-training on tabular CMDPs: A^s by the dual method with the
closed form of Proposition 1 (eq. 3) as pi^u, its meta-gradient (eq. 6), and Algorithm 2 with exact
quantities. The oracle that the parametric, sampled versions of the package are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from sb3_safemeta.common.adaptation.dual import (
    AdaptationParams,
    adaptation_temperature,
    dual_gradient,
    minimize_dual,
    projected_gradient_descent,
)
from sb3_safemeta.tabular.cmdp import TabularCMDP, TabularTaskFamily, kl_per_state, softmax_policy

__all__ = ["SafeAdaptResult", "adapted_policy", "meta_gradient_exact", "meta_train_exact", "safe_adapt_exact"]


@dataclass(frozen=True)
class SafeAdaptResult:
    """
    Result of one exact safe adaptation step A^s.

    :param policy: the adapted policy pi^{u*}, (S, A)
    :param u: the multipliers u*, (p,)
    :param eta: eta_{u*} = lambda + (1 - gamma) sum_i u*_i lambda_ci
    :param surrogate_cost: g_i(pi^{u*}), the left-hand side of each constraint of (1), (p,)
    :param objective: E_nu[E_pi A] - lambda E_nu[KL] at the solution
    :param kl: E_{s~nu^pi_phi}[KL(pi^{u*} || pi_phi)]
    :param n_iterations: dual iterations used
    :param converged: whether the dual solver met its tolerance
    """

    policy: np.ndarray
    u: np.ndarray
    eta: float
    surrogate_cost: np.ndarray
    objective: float
    kl: float
    n_iterations: int
    converged: bool


def _adapted_log_policy(log_reference: np.ndarray, penalised_advantage: np.ndarray, eta: float) -> np.ndarray:
    """Proposition 1, eq. (3): log pi^u = log pi_phi + (A - u.A_c) / eta_u - log normaliser, per state."""
    logits = log_reference + penalised_advantage / eta
    return logits - logsumexp(logits, axis=1, keepdims=True)


def safe_adapt_exact(
    cmdp: TabularCMDP,
    policy: Any,
    lambda_: float,
    lambda_c: float | Any,
    cost_limit: float | Any,
    delta_c: float | Any = 0.0,
    solver: str = "lbfgsb",
    beta: float = 1.0,
    n_dual_steps: int = 10_000,
    tol: float = 1e-10,
    u0: Any = None,
) -> SafeAdaptResult:
    """
    One exact safe policy adaptation step A^s(pi_phi) (problem (1)) on a tabular CMDP, by the dual
    method: closed form pi^u of Proposition 1 for fixed u, multipliers from the dual (4).

    :param cmdp: the task
    :param policy: the current policy pi_phi, (S, A)
    :param lambda_: lambda > 0, KL weight of the objective
    :param lambda_c: lambda_c >= 0, KL weight of each constraint (scalar or (p,))
    :param cost_limit: d (scalar or (p,)), in the units of Jc (discounted cost)
    :param delta_c: allowable violation delta >= 0 (scalar or (p,))
    :param solver: ``"lbfgsb"`` (SciPy L-BFGS-B on the exact dual value) or ``"pgd"`` (Algorithm 1)
    :param beta: PGD step size
    :param n_dual_steps: maximum dual iterations
    :param tol: dual stopping tolerance
    :param u0: warm start for u (default zeros, as Algorithm 1)
    :return: the adapted policy, u*, eta, the surrogate constraint values and diagnostics
    """
    reference = cmdp.check_policy(policy)
    params = AdaptationParams.create(lambda_, lambda_c, cost_limit, delta_c, cmdp.gamma, cmdp.n_costs)
    evaluation = cmdp.evaluate(reference)
    params.check_feasible_start(evaluation.Jc)

    nu = evaluation.state_visitation
    gamma = cmdp.gamma
    with np.errstate(divide="ignore"):
        log_reference = np.log(reference)
    # Expected advantages and KL under nu^pi_phi: the ingredients of (1), (4) and (5)
    cost_shift = (1.0 - gamma) * (params.cost_limit + params.delta_c - evaluation.Jc)  # d'_i of Proposition 2

    def adapted(u: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        eta = adaptation_temperature(u, params)
        penalised = evaluation.A - np.tensordot(u, evaluation.Ac, axes=1)
        return _adapted_log_policy(log_reference, penalised, eta), eta, penalised

    def surrogate(log_policy: np.ndarray) -> tuple[np.ndarray, float]:
        adapted_policy = np.exp(log_policy)
        kl = float(nu @ kl_per_state(adapted_policy, reference))
        expected_cost_advantage = np.einsum("s,sa,ksa->k", nu, adapted_policy, evaluation.Ac)
        return evaluation.Jc + expected_cost_advantage / (1.0 - gamma) + params.lambda_c * kl, kl

    def gradient(u: np.ndarray) -> np.ndarray:
        return dual_gradient(surrogate(adapted(u)[0])[0], params)

    def value_and_gradient(u: np.ndarray) -> tuple[float, np.ndarray]:
        # Dual function (4): max_pi Lagrangian = E_nu[eta_u log sum_a pi_phi exp((A - u.A_c)/eta_u)] + u.d'
        u = np.maximum(u, 0.0)
        eta = adaptation_temperature(u, params)
        penalised = evaluation.A - np.tensordot(u, evaluation.Ac, axes=1)
        value = float(nu @ (eta * logsumexp(log_reference + penalised / eta, axis=1)) + u @ cost_shift)
        return value, gradient(u)

    if solver == "pgd":
        solution = projected_gradient_descent(gradient, cmdp.n_costs, beta, n_dual_steps, u0=u0, tol=tol)
    elif solver == "lbfgsb":
        solution = minimize_dual(value_and_gradient, cmdp.n_costs, u0=u0, tol=tol, max_iterations=n_dual_steps)
    else:
        raise ValueError(f"solver must be 'lbfgsb' or 'pgd', got {solver!r}")

    log_policy, eta, _ = adapted(solution.u)
    surrogate_cost, kl = surrogate(log_policy)
    adapted_policy = np.exp(log_policy)
    objective = float(np.einsum("s,sa,sa->", nu, adapted_policy, evaluation.A) - params.lambda_ * kl)
    return SafeAdaptResult(
        policy=adapted_policy,
        u=solution.u,
        eta=eta,
        surrogate_cost=surrogate_cost,
        objective=objective,
        kl=kl,
        n_iterations=solution.n_iterations,
        converged=solution.converged,
    )


def adapted_policy(cmdp: TabularCMDP, logits: np.ndarray, u: Any, lambda_: float, lambda_c: Any) -> np.ndarray:
    """
    pi^u for a softmax meta-policy with logits f_phi = ``logits`` and FIXED multipliers u
    (Proposition 1, eq. 3, with Q in place of A as in eq. 9: the two differ by a per-state shift).

    :param cmdp: the task
    :param logits: f_phi, (S, A)
    :param u: multipliers, (p,)
    :param lambda_: lambda
    :param lambda_c: lambda_c, (p,)
    :return: pi^u, (S, A)
    """
    u = np.asarray(u, dtype=np.float64)
    evaluation = cmdp.evaluate(softmax_policy(logits))
    eta = lambda_ + (1.0 - cmdp.gamma) * float(np.dot(u, np.broadcast_to(lambda_c, u.shape)))
    return softmax_policy(logits + (evaluation.Q - np.tensordot(u, evaluation.Qc, axes=1)) / eta)


def _action_value_gradient(cmdp: TabularCMDP, policy: np.ndarray, q_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """
    d Q^pi(s, a) / d f(s', a') for softmax logits f, exactly:
    gamma sum_x P(x|s, a) M[x, s'] pi(a'|s') A^pi(s', a') with M = (I - gamma P_pi)^-1.

    :return: array of shape (S, A, S, A)
    """
    occupancy = np.linalg.inv(np.eye(cmdp.n_states) - cmdp.gamma * cmdp.transition_matrix(policy))
    weighted_advantage = policy * (q_values - values[:, None])  # pi(a'|s') A(s', a')
    return cmdp.gamma * np.einsum("sax,xt,tb->satb", cmdp.P, occupancy, weighted_advantage)


def meta_gradient_exact(
    cmdp: TabularCMDP, logits: np.ndarray, u: Any, lambda_: float, lambda_c: Any, form: str = "eq6"
) -> np.ndarray:
    """
    Exact meta-gradient of J(pi^u) w.r.t. the meta-policy's logits, with u held fixed
    (the approximation of eq. 6: grad u* = 0).

    - ``"eq6"``: (1/(1-gamma)) E_{s~nu^{pi^u}, a~pi^u}[(grad f + eta^-1 grad Qbar)(s, a) A^{pi^u}(s, a)],
      the full chain rule through the closed form (Proposition 3 without the grad u and grad eta terms).
    - ``"alg4"``: (1/(1-gamma)) E[grad f(s, a) A^{pi^u}(s, a)], Algorithm 4 line 7: drops the
      eta^-1 grad Qbar term (the change of pi_phi's action values with phi).

    We write A^{pi^u} where the paper writes Q^{pi^u}: for the grad f term the two differ by a
    per-state logit shift (no effect on any policy), but for the grad Qbar term only the advantage
    form is the exact derivative (tests/test_meta_gradient.py checks both against finite differences).

    :param cmdp: the task
    :param logits: f_phi, (S, A)
    :param u: fixed multipliers, (p,)
    :param lambda_: lambda
    :param lambda_c: lambda_c, (p,)
    :param form: ``"eq6"`` or ``"alg4"``
    :return: gradient w.r.t. the logits, (S, A)
    """
    if form not in ("eq6", "alg4"):
        raise ValueError(f"form must be 'eq6' or 'alg4', got {form!r}")
    u = np.asarray(u, dtype=np.float64)
    lambda_c = np.broadcast_to(np.asarray(lambda_c, dtype=np.float64), u.shape)
    eta = lambda_ + (1.0 - cmdp.gamma) * float(np.dot(u, lambda_c))
    adapted = adapted_policy(cmdp, logits, u, lambda_, lambda_c)
    adapted_evaluation = cmdp.evaluate(adapted)
    # dJ(pi^u)/d(logits of pi^u): the softmax policy gradient (1/(1-gamma)) nu(s) pi(a|s) A(s, a)
    outer = adapted_evaluation.state_visitation[:, None] * adapted * adapted_evaluation.A / (1.0 - cmdp.gamma)
    if form == "alg4":
        return outer
    meta = softmax_policy(logits)
    meta_evaluation = cmdp.evaluate(meta)
    grad_q = _action_value_gradient(cmdp, meta, meta_evaluation.Q, meta_evaluation.V)
    for i in range(cmdp.n_costs):
        grad_q = grad_q - u[i] * _action_value_gradient(cmdp, meta, meta_evaluation.Qc[i], meta_evaluation.Vc[i])
    return outer + np.einsum("sa,satb->tb", outer, grad_q) / eta


def _policy_gradient(cmdp: TabularCMDP, policy: np.ndarray, advantages: np.ndarray) -> np.ndarray:
    """Softmax policy gradient (1/(1-gamma)) nu(s) pi(a|s) A(s, a) of J or Jc_i w.r.t. the logits."""
    return cmdp.evaluate(policy).state_visitation[:, None] * policy * advantages / (1.0 - cmdp.gamma)


def meta_train_exact(
    family: TabularTaskFamily,
    n_iterations: int = 200,
    tasks_per_iteration: int = 10,
    lambda_: float = 1.0,
    lambda_c: Any = 1.0,
    delta_c: Any = 0.0,
    step_size: float = 1.0,
    adapt: bool = True,
    seed: int = 0,
    initial_logits: np.ndarray | None = None,
) -> np.ndarray:
    """
    Safe meta-policy training (Algorithm 2) with exact quantities on a tabular task family: for each
    task of a batch, if the meta-policy violates a constraint take that cost's policy gradient
    (lines 9-12); otherwise adapt exactly (Algorithm 1) and use the meta-gradient of Algorithm 4
    line 7. Batch rule: if ANY task of the batch violates, the step reduces the mean violating cost
    (safety first); otherwise it follows the mean meta-gradient. Plain gradient steps on the logits.

    With ``adapt=False`` the same loop maximises the mean J of the meta-policy itself under the same
    constraint rule: the "one policy for all tasks" baseline at equal data.

    :param family: the task family
    :param n_iterations: meta-iterations
    :param tasks_per_iteration: tasks per batch
    :param lambda_: lambda of A^s
    :param lambda_c: lambda_c of A^s
    :param delta_c: allowed violation delta
    :param step_size: gradient step on the logits
    :param adapt: meta-train through A^s (else train the policy itself)
    :param seed: seed of the task draws
    :param initial_logits: phi_0 (default zeros: the uniform policy)
    :return: the meta-policy's logits, (S, A)
    """
    logits = np.zeros((family.n_states, family.n_actions)) if initial_logits is None else np.array(initial_logits, dtype=float)
    for iteration in range(n_iterations):
        meta_policy = softmax_policy(logits)
        objective_steps, cost_steps = [], []
        for task in family.sample_tasks(tasks_per_iteration, seed=seed * 100_003 + iteration):
            cmdp = family.cmdp(task)
            evaluation = cmdp.evaluate(meta_policy)
            violation = evaluation.Jc - (np.asarray(task["cost_limit"]) + delta_c)
            if np.any(violation > 0):
                worst = int(np.argmax(violation))
                cost_steps.append(-_policy_gradient(cmdp, meta_policy, evaluation.Ac[worst]))
            elif adapt:
                result = safe_adapt_exact(cmdp, meta_policy, lambda_, lambda_c, task["cost_limit"], delta_c)
                objective_steps.append(meta_gradient_exact(cmdp, logits, result.u, lambda_, lambda_c, form="alg4"))
            else:
                objective_steps.append(_policy_gradient(cmdp, meta_policy, evaluation.A))
        direction = np.mean(cost_steps, axis=0) if cost_steps else np.mean(objective_steps, axis=0)
        logits = logits + step_size * direction
    return logits
