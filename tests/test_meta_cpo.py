"""
The meta-CPO baseline: the CPO step against SciPy's SLSQP on random QPs (both constraints active, only the KL, the
recovery step when infeasible), its derivatives against finite differences, the inner step on exact tabular CMDPs
against SLSQP with the exact gradients and Fisher, the meta-gradient through the inner step, and MetaCPO as an SB3
algorithm on SafeMetaPointNav-v0 (logs, save/load, seeded determinism, clear errors, the meta-test report).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from cpo_helpers import slsqp
from meta_helpers import (
    N_ENVS,
    make_env,
    recording,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from tabular_helpers import (
    all_pairs,
    central_differences,
    exact_fisher,
    flat_parameters,
    flatten,
    probabilities,
    random_tabular_policy,
)
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import sb3_safemeta.envs  # noqa: F401
from sb3_safemeta.common.functional_policy import actor_parameter_dict
from sb3_safemeta.meta_cpo import MetaCPO, MetaCPOSurrogate, cpo_inner_step, cpo_step
from sb3_safemeta.meta_cpo.meta_cpo import CPOData, PostSamples
from sb3_safemeta.tabular import TabularCMDP, random_cmdp

SMALL: dict[str, Any] = dict(cost_limit=10.0, meta_batch_size=2, n_steps=100)
STEPS_PER_ITERATION = SMALL["meta_batch_size"] * 2 * SMALL["n_steps"] * N_ENVS
DELTA = 0.01


# ---------------------------------------------------------------------------------------------- the CPO step
def random_qp(seed: int, n: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g, b and an SPD F; b is oriented so that the KL-only step increases the cost (b^T F^-1 g > 0)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    fisher = m @ m.T + 0.5 * np.eye(n)
    g, b = rng.normal(size=n), rng.normal(size=n)
    if b @ np.linalg.solve(fisher, g) < 0:
        b = -b
    return g, b, fisher


def cost_excess(case: str, g: np.ndarray, b: np.ndarray, fisher: np.ndarray) -> float:
    """c for each case: the trust region inside the half-space, cut by it (c < 0 or c > 0), or missing it."""
    s = b @ np.linalg.solve(fisher, b)
    kl_only_step = np.sqrt(2 * DELTA / (g @ np.linalg.solve(fisher, g))) * np.linalg.solve(fisher, g)
    return {
        "kl_only": -10 * np.sqrt(2 * DELTA * s),
        "both_active_feasible_start": -0.5 * b @ kl_only_step,
        "both_active_infeasible_start": 0.5 * np.sqrt(2 * DELTA * s),
        "recovery": 2 * np.sqrt(2 * DELTA * s),
    }[case]


def matrix_product(fisher: np.ndarray):
    matrix = th.as_tensor(fisher)
    return lambda vector: matrix @ vector


@pytest.mark.parametrize("case", ["kl_only", "both_active_feasible_start", "both_active_infeasible_start", "recovery"])
@pytest.mark.parametrize("seed", range(4))
def test_cpo_step_solves_the_qp_or_recovers(seed, case):
    """
    The closed-form dual solution equals SLSQP's solution of max g^T x s.t. 1/2 x^T F x <= delta, c + b^T x <= 0
    (F given as a matrix-vector product; 2n unrolled CG iterations); when the QP is infeasible (c > 0 and
    c^2 / s > 2 delta) the step is the recovery step -sqrt(2 delta / s) F^-1 b, which minimises b^T x in the trust region.
    """
    g, b, fisher = random_qp(seed)
    c = cost_excess(case, g, b, fisher)
    result = cpo_step(th.as_tensor(g), th.as_tensor(b), c, DELTA, matrix_product(fisher), cg_max_steps=10)
    step = result.step.numpy()
    if case == "recovery":
        assert result.case == "recovery"
        s = b @ np.linalg.solve(fisher, b)
        assert c**2 / s > 2 * DELTA  # truly infeasible
        np.testing.assert_allclose(step, -np.sqrt(2 * DELTA / s) * np.linalg.solve(fisher, b), rtol=1e-9, atol=1e-12)
        # the steepest cost descent within the trust region (SLSQP on min b^T x)
        expected = slsqp(-b, np.zeros_like(b), -1.0, fisher, DELTA)
    else:
        assert result.case == ("kl_only" if case == "kl_only" else "both_active")
        expected = slsqp(g, b, c, fisher, DELTA)
        assert c + b @ step <= 1e-9 and result.predicted_cost_change == pytest.approx(b @ step)
    np.testing.assert_allclose(step, expected, atol=1e-6 * np.abs(expected).max())
    assert 0.5 * step @ fisher @ step == pytest.approx(DELTA, rel=1e-8)  # the KL is active in every case
    assert result.predicted_kl == pytest.approx(DELTA, rel=1e-8)


@pytest.mark.parametrize("case", ["kl_only", "both_active_feasible_start", "both_active_infeasible_start", "recovery"])
def test_cpo_step_is_differentiable_in_g_and_b(case):
    """Autograd through the unrolled CG and the dual solution equals central finite differences (float64)."""
    g, b, fisher = random_qp(7)
    c = cost_excess(case, g, b, fisher)
    weights = np.random.default_rng(0).normal(size=len(g))

    def scalar(g_: th.Tensor, b_: th.Tensor) -> th.Tensor:
        return th.dot(cpo_step(g_, b_, c, DELTA, matrix_product(fisher), cg_max_steps=10).step, th.as_tensor(weights))

    g_t, b_t = th.tensor(g, requires_grad=True), th.tensor(b, requires_grad=True)
    gradients = th.autograd.grad(scalar(g_t, b_t), [g_t, b_t], allow_unused=True)
    gradient_g, gradient_b = (th.zeros(len(g), dtype=th.float64) if x is None else x for x in gradients)
    for vector, gradient, is_g in [(g, gradient_g, True), (b, gradient_b, False)]:

        def value(moved: np.ndarray, is_g: bool = is_g) -> float:
            return float(
                scalar(th.as_tensor(moved), th.as_tensor(b)) if is_g else scalar(th.as_tensor(g), th.as_tensor(moved))
            )

        expected = central_differences(value, vector, h=1e-6)
        np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
        # the recovery step does not depend on g, the KL-only step not on b
        depends = case != ("recovery" if is_g else "kl_only")
        assert (np.abs(expected).max() > 1e-3) == depends


# ---------------------------------------------------------------------------------------------- exact tabular CMDPs
N_STATES, N_ACTIONS = 4, 3
TABULAR_KL = 0.05
META_KL = 0.5  # a large inner step, so that its Jacobian differs clearly from the identity


def exact_data(cmdp: TabularCMDP, policy: np.ndarray, cost_limit: float) -> CPOData:
    """Every (s, a) pair once with weights nu(s) pi(a|s): exact expectations; H = 1 / (1 - gamma), c = Jc - d."""
    evaluation = cmdp.evaluate(policy)
    observations_, actions = all_pairs(N_STATES, N_ACTIONS, th.float64)
    return CPOData(
        observations_,
        actions,
        th.as_tensor(evaluation.A.ravel()),
        th.as_tensor(evaluation.Ac[0].ravel()),
        cost_excess=float(cmdp.Jc(policy)[0] - cost_limit),
        horizon=1.0 / (1.0 - cmdp.gamma),
        weights=th.as_tensor((evaluation.state_visitation[:, None] * policy).ravel()),
        old_log_prob=th.as_tensor(np.log(policy).ravel()),
    )


def tabular_case(
    seed: int, case: str, max_kl: float = TABULAR_KL
) -> tuple[TabularCMDP, ActorCriticPolicy, float, np.ndarray, np.ndarray, np.ndarray]:
    """An instance, its exact g = grad J, b = grad Jc (finite differences), F + damping, and d for the case."""
    cmdp = random_cmdp(N_STATES, N_ACTIONS, 1, gamma=0.8, seed=seed)
    policy = random_tabular_policy(seed, N_STATES, N_ACTIONS, th.float64)
    flat = flat_parameters(policy)
    g = central_differences(lambda x: cmdp.J(probabilities(x, N_STATES, N_ACTIONS)), flat)
    b = central_differences(lambda x: cmdp.Jc(probabilities(x, N_STATES, N_ACTIONS))[0], flat)
    fisher = exact_fisher(probabilities(flat, N_STATES, N_ACTIONS)) + 0.1 * np.eye(len(flat))
    s = b @ np.linalg.solve(fisher, b)
    jc = cmdp.Jc(probabilities(flat, N_STATES, N_ACTIONS))[0]
    kl_only_step = np.sqrt(2 * max_kl / (g @ np.linalg.solve(fisher, g))) * np.linalg.solve(fisher, g)
    # both active: c + b^T x_kl > 0 > c - sqrt(2 delta s), the midpoint (|b^T x_kl| < sqrt(2 delta s) by Cauchy-Schwarz)
    cost_limit = {
        "kl_only": jc + 10 * np.sqrt(2 * max_kl * s),
        "both_active": jc - 0.5 * (np.sqrt(2 * max_kl * s) - b @ kl_only_step),
        "recovery": jc - 2 * np.sqrt(2 * max_kl * s),
    }[case]
    return cmdp, policy, float(cost_limit), g, b, fisher


@pytest.mark.parametrize("case", ["kl_only", "both_active", "recovery"])
@pytest.mark.parametrize("seed", range(3))
def test_inner_step_on_exact_data_is_the_cpo_solution(seed, case):
    """
    ``cpo_inner_step`` (the algorithm's code path: g, b from the ratio surrogates, F by double backward, unrolled CG)
    on exact expectations moves the parameters by the SLSQP solution of the QP built from INDEPENDENT exact
    quantities: g, b by finite differences of the exact J, Jc, F in closed form (softmax Fisher) + damping 0.1.
    """
    cmdp, policy, cost_limit, g, b, fisher = tabular_case(seed, case)
    start = flat_parameters(policy)
    data = exact_data(cmdp, probabilities(start, N_STATES, N_ACTIONS), cost_limit)
    adapted, result = cpo_inner_step(
        policy, actor_parameter_dict(policy), data, TABULAR_KL, cg_max_steps=40, cg_damping=0.1, create_graph=False
    )
    step = flatten(adapted.values()) - start
    np.testing.assert_array_equal(flat_parameters(policy), start)  # the policy is left alone
    assert result.case == case
    c = data.cost_excess
    if case == "recovery":
        expected = -np.sqrt(2 * TABULAR_KL / (b @ np.linalg.solve(fisher, b))) * np.linalg.solve(fisher, b)
    else:
        expected = slsqp(g, b, c, fisher, TABULAR_KL)
    np.testing.assert_allclose(step, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("case", ["kl_only", "both_active", "recovery"])
@pytest.mark.parametrize("seed", range(2))
def test_meta_gradient_through_the_cpo_step_matches_finite_differences(seed, case):
    """
    :class:`MetaCPOSurrogate` with exact expectations held at phi_0 (pre- and post-update): its autograd gradient
    (through g(phi), b(phi), the unrolled CG and the dual) equals central differences of its value, i.e. of
    E_post[ratio A_post] at theta'(phi) = phi + x(g_0(phi), b_0(phi), F_0), in float64. The first-order variant
    (the step's Jacobian taken as the identity) misses it.
    """
    cmdp, policy, cost_limit, _, _, _ = tabular_case(seed, case, META_KL)
    start = flat_parameters(policy)
    inner = exact_data(cmdp, probabilities(start, N_STATES, N_ACTIONS), cost_limit)
    adapted, _ = cpo_inner_step(policy, actor_parameter_dict(policy), inner, META_KL, 40, 0.1, create_graph=False)
    post_policy = probabilities(flatten(adapted.values()), N_STATES, N_ACTIONS)
    evaluation = cmdp.evaluate(post_policy)
    observations_, actions = all_pairs(N_STATES, N_ACTIONS, th.float64)
    post = PostSamples(
        observations_, actions, th.as_tensor(evaluation.A.ravel()),
        th.as_tensor((evaluation.state_visitation[:, None] * post_policy).ravel()),
    )  # fmt: skip
    parameters = list(actor_parameter_dict(policy).values())

    def gradient(first_order: bool) -> np.ndarray:
        surrogate = MetaCPOSurrogate(policy, [inner], [post], META_KL, 40, 0.1, first_order=first_order)
        return parameters_to_vector(th.autograd.grad(surrogate(), parameters)).numpy()

    surrogate = MetaCPOSurrogate(policy, [inner], [post], META_KL, 40, 0.1)

    def value(flat: np.ndarray) -> float:
        vector_to_parameters(th.as_tensor(flat), parameters)
        with th.no_grad():
            return float(surrogate())

    expected = central_differences(value, start)
    vector_to_parameters(th.as_tensor(start), parameters)
    actual = gradient(first_order=False)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    first_order = gradient(first_order=True)
    assert np.linalg.norm(first_order - expected) > 0.1 * np.linalg.norm(expected)  # 17-67 % on these instances


# ---------------------------------------------------------------------------------------------- SB3 behaviour
def test_learn_runs_logs_and_moves_only_the_actor():
    model = MetaCPO("MlpPolicy", make_env(), seed=0, target_kl=0.01, **SMALL)
    writer = recording(model)
    actor = {id(p) for p in model.policy.actor_parameters()}
    before = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    assert model.learn(2 * STEPS_PER_ITERATION) is model
    assert model.meta_iterations == 2 and model.num_timesteps == 2 * STEPS_PER_ITERATION
    assert [record["meta/iterations"] for record in writer.records] == [1, 2]
    for record in writer.records:
        for key in ("meta/meta_policy_return", "meta/adapted_return", "meta/meta_policy_cost_max", "meta/adapted_cost_max",
                    "meta/adaptation_kl", "meta/cpo_both_active", "meta/cpo_recovery", "meta/cpo_predicted_cost_change",
                    "train/kl", "train/gradient_norm", "train/improvement"):  # fmt: skip
            assert np.isfinite(record[key]), key
        # the inner step lands on its KL radius (quadratic approximation: up to a few tens of percent)
        assert 0.5 * model.inner_kl < record["meta/adaptation_kl"] < 2 * model.inner_kl
        assert record["train/kl"] <= 0.01 * (1 + 1e-6)
    assert any(record["train/is_line_search_success"] == 1 for record in writer.records)
    moved = {name for name, p in model.policy.named_parameters() if not th.equal(p.detach(), before[name])}
    assert moved and all(id(model.policy.get_parameter(name)) in actor for name in moved)  # critics untouched ("mc")


def test_first_order_meta_gradient_runs():
    model = MetaCPO("MlpPolicy", make_env(), seed=0, target_kl=0.01, meta_gradient="first_order", **SMALL)
    writer = recording(model)
    model.learn(STEPS_PER_ITERATION)
    assert np.isfinite(writer.records[0]["train/gradient_norm"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(inner_kl=0.0), "inner_kl"),
        (dict(inner_kl=-0.1), "inner_kl"),
        (dict(meta_gradient="third_order"), "meta_gradient"),
        (dict(target_kl=0.0), "target_kl"),
        (dict(inner_cg_max_steps=0), "inner_cg_max_steps"),
        (dict(cg_damping=0.0), "cg_damping"),
        (dict(n_costs=2, cost_limit=[1.0, 2.0]), "n_costs"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaCPO("MlpPolicy", make_env(n_envs=1), **{**SMALL, **kwargs})
