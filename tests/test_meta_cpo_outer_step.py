"""
The constrained outer step of meta-CPO (``meta_step="cpo"``): on linear objectives with a quadratic KL the accepted
step is SciPy's SLSQP solution of the QP (or the recovery step), the line search rejects a step whose true cost
change exceeds the slack, the gradient of the post-adaptation cost surrogate through the inner CPO step equals
finite differences of the EXACT episode cost of the adapted tabular policy, and MetaCPO logs the outer step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from cpo_helpers import slsqp
from meta_helpers import make_env, recording
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sb3_safemeta.common.functional_policy import actor_parameter_dict
from sb3_safemeta.meta_cpo import MetaCPO, MetaCPOSurrogate, cpo_inner_step
from sb3_safemeta.meta_cpo.meta_cpo import PostSamples
from sb3_safemeta.meta_cpo.outer_step import constrained_trust_region_step

DELTA = 0.01
DAMPING = 0.1


def linear_problem(seed: int, n: int = 5):
    """phi in R^n, reward g^T (phi - phi0), cost b^T (phi - phi0) (+ curvature), KL 1/2 (phi - phi0)^T M (phi - phi0)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    metric = m @ m.T + 0.5 * np.eye(n)
    g, b = rng.normal(size=n), rng.normal(size=n)
    fisher = metric + DAMPING * np.eye(n)
    if b @ np.linalg.solve(fisher, g) < 0:  # the reward direction raises the cost: the constraint can bind
        b = -b
    start = rng.normal(size=n)
    return g, b, metric, fisher, start


def run_step(g, b, metric, start, c, cost_curvature=0.0):
    phi = nn.Parameter(th.as_tensor(start.copy()))
    origin = th.as_tensor(start)
    g_t, b_t, m_t = th.as_tensor(g), th.as_tensor(b), th.as_tensor(metric)

    def objectives():
        delta = phi - origin
        return th.dot(g_t, delta), th.dot(b_t, delta) + cost_curvature * th.dot(delta, delta)

    def kl():
        delta = phi - origin
        return 0.5 * delta @ m_t @ delta

    result = constrained_trust_region_step([phi], objectives, kl, c, max_kl=DELTA, cg_max_steps=20, cg_damping=DAMPING)
    return result, phi.detach().numpy() - start


def case_excess(case: str, g, b, fisher) -> float:
    s = b @ np.linalg.solve(fisher, b)
    kl_step = np.sqrt(2 * DELTA / (g @ np.linalg.solve(fisher, g))) * np.linalg.solve(fisher, g)
    return {
        "kl_only": -10 * np.sqrt(2 * DELTA * s),
        "both_active_feasible_start": -0.5 * b @ kl_step,
        "both_active_infeasible_start": 0.5 * np.sqrt(2 * DELTA * s),
        "recovery": 2 * np.sqrt(2 * DELTA * s),
    }[case]


@pytest.mark.parametrize("case", ["kl_only", "both_active_feasible_start", "both_active_infeasible_start", "recovery"])
@pytest.mark.parametrize("seed", range(3))
def test_outer_step_is_the_qp_solution_or_the_recovery_step(seed, case):
    """
    Gradients of the two objectives, the Fisher by double backward of the KL, the closed-form CPO solution and the
    line search, assembled: with linear objectives and a quadratic KL the full step is accepted and equals SLSQP's
    solution of the QP with F = M + damping I; when the half-space misses the trust region, the recovery step
    -sqrt(2 delta / s) F^-1 b (the steepest cost decrease in the trust region, also by SLSQP).
    """
    g, b, metric, fisher, start = linear_problem(seed)
    c = case_excess(case, g, b, fisher)
    result, step = run_step(g, b, metric, start, c)
    assert result.success and result.step_fraction == 1.0
    assert result.cpo is not None
    if case == "recovery":
        assert result.cpo.case == "recovery"
        expected = slsqp(-b, np.zeros_like(b), -1.0, fisher, DELTA)
        np.testing.assert_allclose(step, -np.sqrt(2 * DELTA / (b @ np.linalg.solve(fisher, b))) * np.linalg.solve(fisher, b),
                                   rtol=1e-8)  # fmt: skip
    else:
        assert result.cpo.case == ("kl_only" if case == "kl_only" else "both_active")
        expected = slsqp(g, b, c, fisher, DELTA)
        assert c + b @ step <= 1e-9
        assert result.improvement == pytest.approx(g @ step)
    np.testing.assert_allclose(step, expected, atol=1e-6 * np.abs(expected).max())
    assert result.cost_change == pytest.approx(b @ step)
    assert result.kl == pytest.approx(0.5 * step @ metric @ step) and result.kl <= DELTA


def test_line_search_backtracks_when_the_true_cost_rises_beyond_the_slack():
    """
    A cost with curvature the linearisation misses: the full both-active step would raise the true cost surrogate
    beyond the slack -c; the line search keeps the largest fraction rho^k whose true change is within it, as the
    closed form of the quadratic says.
    """
    g, b, metric, fisher, start = linear_problem(0)
    c = case_excess("both_active_feasible_start", g, b, fisher)
    _, full = run_step(g, b, metric, start, c)
    curvature = 4.0 * (-c - b @ full) / (full @ full) + 1.0  # b^T x + K |x|^2 > -c at the full step
    result, step = run_step(g, b, metric, start, c, cost_curvature=curvature)
    # the accepted fraction: the first rho^k with rho^k b^T x + K rho^2k |x|^2 <= -c
    fractions = 0.8 ** np.arange(10)
    ok = fractions * (b @ full) + curvature * fractions**2 * (full @ full) <= -c
    assert not ok[0] and ok.any()
    assert result.success and result.step_fraction == pytest.approx(fractions[np.argmax(ok)])
    np.testing.assert_allclose(step, result.step_fraction * full, rtol=1e-9)
    assert result.cost_change <= -c


def test_no_acceptable_step_restores_the_parameters():
    g, b, metric, _, start = linear_problem(1)
    phi = nn.Parameter(th.as_tensor(start.copy()))
    origin = th.as_tensor(start)

    def objectives():  # the reward gets worse along every direction away from the start
        delta = phi - origin
        return -th.dot(delta, delta) + 1e-3 * th.dot(th.as_tensor(g), delta), th.dot(th.as_tensor(b), delta)

    result = constrained_trust_region_step(
        [phi], objectives, lambda: 0.5 * (phi - origin) @ th.as_tensor(metric) @ (phi - origin), -1.0,
        max_kl=10.0, max_backtracks=2,
    )  # fmt: skip
    assert not result.success
    np.testing.assert_array_equal(phi.detach().numpy(), start)


# ---------------------------------------------------------------------------------------------- exact tabular CMDP
@pytest.mark.parametrize("seed,case", [(0, "both_active"), (1, "kl_only"), (2, "recovery")])
def test_cost_surrogate_gradient_is_the_exact_post_adaptation_cost_gradient(seed, case):
    """
    On a tabular CMDP with exact expectations: the gradient at phi_0 of the cost surrogate of
    :meth:`MetaCPOSurrogate.objectives` (through the inner CPO step) equals central differences of
    phi -> Jc(pi_theta'(phi)), the EXACT episode cost of the adapted policy (inner data held at phi_0, as MAML does).
    """
    from tabular_helpers import all_pairs, central_differences, flat_parameters, probabilities
    from test_meta_cpo import META_KL, N_ACTIONS, N_STATES, exact_data, tabular_case

    cmdp, policy, cost_limit, _, _, _ = tabular_case(seed, case, META_KL)
    start = flat_parameters(policy)
    inner = exact_data(cmdp, probabilities(start, N_STATES, N_ACTIONS), cost_limit)
    horizon = 1.0 / (1.0 - cmdp.gamma)
    parameters = list(actor_parameter_dict(policy).values())
    fisher_at = {name: value.detach().clone() for name, value in actor_parameter_dict(policy).items()}  # phi_0

    def adapted_flat(flat: np.ndarray) -> np.ndarray:
        vector_to_parameters(th.as_tensor(flat), parameters)
        theta, _ = cpo_inner_step(
            policy, actor_parameter_dict(policy), inner, META_KL, 40, 0.1, create_graph=False, fisher_parameters=fisher_at
        )
        return np.concatenate([value.detach().numpy().ravel() for value in theta.values()])

    # the exact post-adaptation episode cost (discounted, units of 1 / (1 - gamma) as the data's horizon)
    expected = central_differences(lambda flat: cmdp.Jc(probabilities(adapted_flat(flat), N_STATES, N_ACTIONS))[0], start)
    vector_to_parameters(th.as_tensor(start), parameters)
    post_policy = probabilities(adapted_flat(start), N_STATES, N_ACTIONS)
    vector_to_parameters(th.as_tensor(start), parameters)
    evaluation = cmdp.evaluate(post_policy)
    observations_, actions = all_pairs(N_STATES, N_ACTIONS, th.float64)
    weights = th.as_tensor((evaluation.state_visitation[:, None] * post_policy).ravel())
    post = PostSamples(observations_, actions, th.as_tensor(evaluation.A.ravel()), weights,
                       cost_advantages=th.as_tensor(horizon * evaluation.Ac[0].ravel()))  # fmt: skip
    surrogate = MetaCPOSurrogate(policy, [inner], [post], META_KL, 40, 0.1)
    _, cost = surrogate.objectives()
    actual = parameters_to_vector(th.autograd.grad(cost, parameters)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------------- the algorithm
def test_meta_cpo_logs_the_outer_cpo_step_and_trpo_stays_an_option():
    small = dict(cost_limit=10.0, meta_batch_size=2, n_steps=100, seed=0, target_kl=0.01)
    steps = 2 * 2 * 100 * 2
    model = MetaCPO("MlpPolicy", make_env(), **small)
    assert model.meta_step == "cpo"
    writer = recording(model)
    model.learn(2 * steps)
    for record in writer.records:
        for key in ("train/cpo_case", "train/cpo_lagrange_kl", "train/cpo_lagrange_cost", "train/cost_change",
                    "train/outer_cost_excess", "meta/u_mean", "meta/cpo_lagrange_kl", "meta/cost_step"):  # fmt: skip
            assert np.isfinite(record[key]), key
        assert record["train/cpo_case"] in (0, 1, 2)
        assert record["meta/cost_step"] == int(record["train/cpo_case"] == 2)
        assert record["train/kl"] <= 0.01 * (1 + 1e-6)
        if record["train/is_line_search_success"]:  # the accepted step respects the cost slack
            assert record["train/cost_change"] <= max(-record["train/outer_cost_excess"], 0.0) + 1e-6
    unconstrained = MetaCPO("MlpPolicy", make_env(), meta_step="trpo", **small)
    writer = recording(unconstrained)
    unconstrained.learn(steps)
    assert "train/cpo_case" not in writer.records[0] and "meta/cost_step" not in writer.records[0]
    with pytest.raises(ValueError, match="meta_step"):
        MetaCPO("MlpPolicy", make_env(n_envs=1), meta_step="sgd", **small)
