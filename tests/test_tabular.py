"""Exact tabular CMDP: every quantity against an independent computation."""

import numpy as np
import pytest

from sb3_safemeta.tabular import TabularCMDP, TabularTaskFamily, kl_per_state, random_cmdp, uniform_policy


def random_policy(cmdp: TabularCMDP, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(cmdp.n_states, cmdp.n_actions))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def monte_carlo_free_rollout(cmdp: TabularCMDP, policy: np.ndarray, horizon: int = 2000):
    """Independent evaluation by propagating the state distribution step by step (no linear solve)."""
    state_dist = cmdp.rho.copy()
    J, Jc, nu = 0.0, np.zeros(cmdp.n_costs), np.zeros(cmdp.n_states)
    for t in range(horizon):
        sa = state_dist[:, None] * policy
        J += cmdp.gamma**t * np.sum(sa * cmdp.r)
        Jc += cmdp.gamma**t * np.einsum("sa,ksa->k", sa, cmdp.c)
        nu += (1 - cmdp.gamma) * cmdp.gamma**t * state_dist
        state_dist = np.einsum("sa,sat->t", sa, cmdp.P)
    return J, Jc, nu


@pytest.mark.parametrize("n_states,n_actions,n_costs", [(3, 2, 1), (6, 4, 2), (10, 3, 3)])
def test_evaluation_matches_forward_propagation(n_states, n_actions, n_costs):
    cmdp = random_cmdp(n_states, n_actions, n_costs, gamma=0.9, seed=n_states)
    policy = random_policy(cmdp, seed=1)
    evaluation = cmdp.evaluate(policy)
    J, Jc, nu = monte_carlo_free_rollout(cmdp, policy)
    assert evaluation.J == pytest.approx(J, abs=1e-9)
    np.testing.assert_allclose(evaluation.Jc, Jc, atol=1e-9)
    np.testing.assert_allclose(evaluation.state_visitation, nu, atol=1e-9)
    assert evaluation.state_visitation.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(cmdp.visitation(policy).sum(axis=1), nu, atol=1e-9)


def test_bellman_equations_and_advantages():
    cmdp = random_cmdp(5, 3, 2, gamma=0.8, seed=3)
    policy = random_policy(cmdp, seed=2)
    ev = cmdp.evaluate(policy)
    # Q = r + gamma P V, V = sum_a pi Q, A = Q - V and E_pi[A] = 0
    np.testing.assert_allclose(ev.Q, cmdp.r + cmdp.gamma * cmdp.P @ ev.V, atol=1e-12)
    np.testing.assert_allclose(ev.V, (policy * ev.Q).sum(axis=1), atol=1e-12)
    for i in range(2):
        np.testing.assert_allclose(ev.Qc[i], cmdp.c[i] + cmdp.gamma * cmdp.P @ ev.Vc[i], atol=1e-12)
        np.testing.assert_allclose((policy * ev.Ac[i]).sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose((policy * ev.A).sum(axis=1), 0.0, atol=1e-12)


def test_performance_difference_lemma():
    """J(pi') - J(pi) = E_{s~nu^pi', a~pi'}[A^pi(s, a)] / (1 - gamma): ties visitation, A and J together."""
    cmdp = random_cmdp(7, 3, 1, gamma=0.95, seed=4)
    pi, pi_new = random_policy(cmdp, 5), random_policy(cmdp, 6)
    ev, ev_new = cmdp.evaluate(pi), cmdp.evaluate(pi_new)
    lhs = ev_new.J - ev.J
    rhs = np.sum(cmdp.visitation(pi_new) * ev.A) / (1 - cmdp.gamma)
    assert lhs == pytest.approx(rhs, abs=1e-9)
    lhs_c = ev_new.Jc - ev.Jc
    rhs_c = np.einsum("sa,ksa->k", cmdp.visitation(pi_new), ev.Ac) / (1 - cmdp.gamma)
    np.testing.assert_allclose(lhs_c, rhs_c, atol=1e-9)


def test_advantage_bound_and_visitation_floor_hold_for_random_policies():
    cmdp = random_cmdp(5, 3, 1, gamma=0.7, seed=8, uniform_mix=0.3)
    a_max, floor = cmdp.advantage_bound(cmdp.r), cmdp.visitation_floor()
    assert floor > 0
    for seed in range(50):
        ev = cmdp.evaluate(random_policy(cmdp, seed) ** 3 / np.sum(random_policy(cmdp, seed) ** 3, axis=1, keepdims=True))
        assert np.max(np.abs(ev.A)) <= a_max + 1e-12
        assert np.min(ev.state_visitation) >= floor - 1e-12
    # deterministic policies are the extreme points: the bound must hold there too
    for action in range(3):
        deterministic = np.eye(3)[np.full(5, action)]
        assert np.max(np.abs(cmdp.evaluate(deterministic).A)) <= a_max + 1e-12


def test_kl_per_state():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [0.5, 0.5]])
    expected = [0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), np.log(2)]
    np.testing.assert_allclose(kl_per_state(p, q), expected)


def test_task_family_is_seeded_and_feasible():
    family = TabularTaskFamily(n_states=5, n_actions=3, n_costs=2, seed=0)
    tasks_a, tasks_b = family.sample_tasks(4, seed=1), family.sample_tasks(4, seed=1)
    for task_a, task_b in zip(tasks_a, tasks_b, strict=True):
        np.testing.assert_array_equal(task_a["r"], task_b["r"])
        np.testing.assert_array_equal(task_a["cost_limit"], task_b["cost_limit"])
    assert not np.allclose(family.sample_tasks(1, seed=2)[0]["r"], tasks_a[0]["r"])
    for task in tasks_a:
        cmdp = family.cmdp(task)
        safest = np.array([cmdp.optimal_values(cmdp.c[i], maximize=False) @ cmdp.rho for i in range(2)])
        assert np.all(safest < task["cost_limit"])
        assert np.all(task["cost_limit"] < cmdp.Jc(uniform_policy(5, 3)))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"P": np.full((3, 2, 3), np.nan)}, "P"),
        ({"r": np.array([[np.nan, 0.0]] * 3)}, "r"),
        ({"P": np.ones((3, 2, 3))}, "P"),
        ({"gamma": 1.0}, "gamma"),
        ({"rho": np.array([1.0, 1.0, 0.0])}, "rho"),
        ({"c": np.zeros((1, 2, 2))}, "c"),
    ],
)
def test_bad_cmdp_input(kwargs, name):
    base = {
        "P": np.full((3, 2, 3), 1 / 3),
        "r": np.zeros((3, 2)),
        "c": np.zeros((1, 3, 2)),
        "rho": np.full(3, 1 / 3),
        "gamma": 0.9,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=name):
        TabularCMDP(**base)


def test_bad_policy():
    cmdp = random_cmdp(3, 2, seed=0)
    with pytest.raises(ValueError, match="policy"):
        cmdp.evaluate(np.full((3, 2), 0.6))
    with pytest.raises(ValueError, match="policy"):
        cmdp.evaluate(np.full((2, 2), 0.5))
