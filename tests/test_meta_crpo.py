"""
The meta-CRPO baseline: the CRPO rule against exact quantities on tabular CMDPs (the step is the damped
natural gradient of -Jc_i when constraint i is violated beyond the tolerance, of J otherwise), the
average-distance meta-update on hand-made vectors and inside a meta-iteration, and MetaCRPO as an SB3
algorithm on SafeMetaPointNav-v0 (logging, save/load, seeded determinism, clear errors, the meta-test report).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch as th
from meta_helpers import (
    N_ENVS,
    StartZoneCost,
    make_env,
    recording,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from tabular_helpers import central_differences, exact_batch, tabular_policy
from torch.nn.utils import parameters_to_vector

import sb3_safemeta.envs  # noqa: F401
import sb3_safemeta.meta_crpo.meta_crpo as meta_crpo_module
from sb3_safemeta.meta_crpo import MetaCRPO, average_distance_update, crpo_step
from sb3_safemeta.tabular import TabularCMDP, kl_per_state, random_cmdp, softmax_policy

# one rollout = n_steps * n_envs = 200 steps = 2 episodes
SMALL: dict[str, Any] = dict(cost_limit=10.0, meta_batch_size=2, n_inner_steps=2, n_steps=100)
STEPS_PER_ITERATION = SMALL["meta_batch_size"] * SMALL["n_inner_steps"] * SMALL["n_steps"] * N_ENVS


# ---------------------------------------------------------------------------------------------- exact CRPO rule
def logits_of(policy: ActorCriticPolicy) -> np.ndarray:
    return policy.action_net.weight.detach().double().numpy().T.copy()


def damped_natural_direction(logits: np.ndarray, gradient: np.ndarray, damping: float) -> np.ndarray:
    """
    (F + damping I)^-1 g with F the Hessian of the trust region's KL: the mean over the S states (each state
    appears A times in the exact batch, so uniformly) of the softmax Fisher diag(p_s) - p_s p_s^T.
    """
    policy = softmax_policy(logits)
    n_states, n_actions = policy.shape
    fisher = np.zeros((n_states * n_actions, n_states * n_actions))
    for state in range(n_states):
        block = slice(state * n_actions, (state + 1) * n_actions)
        fisher[block, block] = (np.diag(policy[state]) - np.outer(policy[state], policy[state])) / n_states
    matrix = fisher + damping * np.eye(len(fisher)) if damping > 0 else np.linalg.pinv(fisher)
    direction = np.linalg.solve(matrix, gradient.ravel()) if damping > 0 else matrix @ gradient.ravel()
    return direction.reshape(logits.shape)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def tabular_instance(seed: int, n_costs: int):
    cmdp = random_cmdp(5, 3, n_costs, gamma=0.9, seed=seed)
    logits = np.random.default_rng(seed).normal(size=(5, 3))
    return cmdp, logits


def exact_step(cmdp: TabularCMDP, logits: np.ndarray, cost_limit: np.ndarray, eta_tol: float, damping: float, max_kl: float):
    """One crpo_step of the tabular policy on the exact batch, with Jc exact; the actor is the weight matrix alone."""
    policy = tabular_policy(logits)
    start = softmax_policy(logits)  # the float64 policy whose quantities the batch carries
    result = crpo_step(
        policy,
        [policy.action_net.weight],
        exact_batch(cmdp, start),
        cmdp.Jc(start),
        cost_limit,
        eta_tol=eta_tol,
        max_kl=max_kl,
        cg_max_steps=50,
        cg_damping=damping,
    )
    return result, logits_of(policy)


@pytest.mark.parametrize("damping", [0.1, 1e-3])
@pytest.mark.parametrize("seed", range(4))
def test_violated_constraint_takes_the_natural_gradient_of_minus_its_cost(seed, damping):
    """
    With Jc_i > d_i + eta_tol on two channels, the step decreases the MOST violated one: its change of the
    logits is along the damped natural gradient of -Jc_i (finite differences of the exact Jc, the Fisher of the
    trust region in closed form), the exact Jc_i decreases and the exact mean KL is within the bound.
    """
    cmdp, logits = tabular_instance(seed, n_costs=2)
    start_cost = cmdp.Jc(softmax_policy(logits))
    eta_tol = 0.05
    # channel 1 exceeds d + eta by 0.1, channel 0 by 0.02: the worst channel is 1 (whichever costs more)
    cost_limit = start_cost - eta_tol - np.array([0.02, 0.1])
    result, after = exact_step(cmdp, logits, cost_limit, eta_tol, damping, max_kl=1e-3)
    assert result.cost_step and result.channel == 1 and result.trust_region.success
    np.testing.assert_allclose(result.excess, [0.02, 0.1], atol=1e-9)

    gradient = central_differences(lambda z: cmdp.Jc(softmax_policy(z))[1], logits)
    expected = -damped_natural_direction(logits, gradient, damping)
    assert cosine(after - logits, expected) > 0.9999  # the plain gradient reaches 0.99 at damping 0.1
    if damping <= 1e-3:  # nearly undamped: close to the natural gradient itself (pseudo-inverse of F; 0.994 at worst)
        assert cosine(after - logits, -damped_natural_direction(logits, gradient, 0.0)) > 0.99
    assert cmdp.Jc(softmax_policy(after))[1] < start_cost[1]
    kl = kl_per_state(softmax_policy(logits), softmax_policy(after)).mean()  # KL(old || new), uniform over states
    assert 0 < kl <= 1e-3 * (1 + 1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_feasible_policy_takes_the_natural_gradient_of_the_reward(seed):
    """Violation within the tolerance (Jc = d + eta/2) is feasible for CRPO: the step follows the natural gradient of J."""
    cmdp, logits = tabular_instance(seed, n_costs=1)
    start = softmax_policy(logits)
    eta_tol = 0.05
    result, after = exact_step(cmdp, logits, cmdp.Jc(start) - eta_tol / 2, eta_tol, damping=0.1, max_kl=1e-3)
    assert not result.cost_step and result.channel == -1 and result.trust_region.success
    gradient = central_differences(lambda z: cmdp.J(softmax_policy(z)), logits)
    assert cosine(after - logits, damped_natural_direction(logits, gradient, 0.1)) > 0.9999
    assert cmdp.J(softmax_policy(after)) > cmdp.J(start)


def test_branch_boundary_is_d_plus_eta():
    cmdp, logits = tabular_instance(0, n_costs=1)
    start_cost = cmdp.Jc(softmax_policy(logits))[0]
    for offset, cost_step in [(-1e-3, True), (1e-3, False)]:
        result, _ = exact_step(cmdp, logits, np.array([start_cost - 0.1 + offset]), 0.1, damping=0.1, max_kl=1e-3)
        assert result.cost_step is cost_step
    with pytest.raises(ValueError, match="eta_tol"):
        exact_step(cmdp, logits, np.array([start_cost]), -0.1, damping=0.1, max_kl=1e-3)


# ---------------------------------------------------------------------------------------------- meta-update
def test_average_distance_update_on_hand_made_vectors():
    phi = th.tensor([1.0, 2.0, 3.0], dtype=th.float64)
    thetas = [th.tensor([2.0, 2.0, 2.0], dtype=th.float64), th.tensor([0.0, 4.0, 6.0], dtype=th.float64)]
    # mean(theta - phi) = ([1, 0, -1] + [-1, 2, 3]) / 2 = [0, 1, 1]
    th.testing.assert_close(average_distance_update(phi, thetas, 0.5), th.tensor([1.0, 2.5, 3.5], dtype=th.float64))
    th.testing.assert_close(average_distance_update(phi, thetas, 1.0), th.stack(thetas).mean(0))  # the minimiser
    np.testing.assert_array_equal(phi.numpy(), [1.0, 2.0, 3.0])  # phi is not modified
    # a gradient step of size meta_lr on mean_tau 1/2 ||phi - theta_tau||^2
    variable = phi.clone().requires_grad_(True)
    (0.5 * th.stack([(variable - theta).pow(2).sum() for theta in thetas]).mean()).backward()
    th.testing.assert_close(average_distance_update(phi, thetas, 0.3), phi - 0.3 * variable.grad)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="meta_lr"):
            average_distance_update(phi, thetas, bad)
    with pytest.raises(ValueError, match="shape"):
        average_distance_update(phi, [th.zeros(2, dtype=th.float64)], 0.5)


def test_meta_iteration_applies_the_average_distance_update(monkeypatch):
    """phi after a meta-iteration is phi + meta_lr * mean(theta_tau - phi) of the task policies it produced."""
    model = MetaCRPO("MlpPolicy", make_env(), seed=0, meta_lr=0.3, meta_update="batch", **SMALL)
    phi = parameters_to_vector(model.policy.parameters()).detach().double().numpy()
    actor = parameters_to_vector(model.policy.actor_parameters()).numel()
    captured: list[list[th.Tensor]] = []
    update = meta_crpo_module.average_distance_update

    def spy(phi_, task_parameters, meta_lr):
        captured.append([theta.clone() for theta in task_parameters])
        return update(phi_, task_parameters, meta_lr)

    monkeypatch.setattr(meta_crpo_module, "average_distance_update", spy)
    model.learn(1)
    (thetas,) = captured
    assert len(thetas) == SMALL["meta_batch_size"]
    thetas_np = np.stack([theta.double().numpy() for theta in thetas])
    expected = phi + 0.3 * (thetas_np - phi).mean(axis=0)
    np.testing.assert_allclose(parameters_to_vector(model.policy.parameters()).detach().double().numpy(), expected, atol=1e-6)
    assert np.all(np.abs(thetas_np - phi).max(axis=1) > 0)  # every task policy moved
    # with Monte-Carlo advantages only the actor moves: the critics' entries of every theta_tau are phi's
    critic_ids = {id(p) for p in model.policy.critic_parameters()}
    is_critic = np.concatenate([np.full(p.numel(), id(p) in critic_ids) for p in model.policy.parameters()])
    assert is_critic.sum() == len(phi) - actor > 0
    np.testing.assert_array_equal(thetas_np[:, is_critic], np.broadcast_to(phi[is_critic], (len(thetas), is_critic.sum())))


# ---------------------------------------------------------------------------------------------- SB3 behaviour


# every CRPO step of the batch (2 tasks x 2 inner steps) is a cost step, or none is
@pytest.mark.parametrize("cost_limit,cost_steps", [(0.0, 4), (1e6, 0)])
def test_learn_counts_and_logs(cost_limit, cost_steps):
    """d = 0 with an unavoidable cost: every CRPO step is a cost step; d huge: none is."""
    model = MetaCRPO("MlpPolicy", make_env(wrapper_class=StartZoneCost), seed=0, **{**SMALL, "cost_limit": cost_limit})
    writer = recording(model)
    assert model.learn(2 * STEPS_PER_ITERATION) is model
    assert model.meta_iterations == 2 and model.num_timesteps == 2 * STEPS_PER_ITERATION
    assert [record["meta/iterations"] for record in writer.records] == [1, 2]
    for record in writer.records:
        assert record["meta/crpo_cost_steps"] == cost_steps
        assert record["meta/violating_tasks"] == (SMALL["meta_batch_size"] if cost_limit == 0 else 0)
        assert record["train/is_line_search_success"] == 1.0 and 0 < record["train/kl"] <= model.adapt_kl * (1 + 1e-6)
        assert record["meta/update_norm"] > 0 and record["meta/task_distance"] > 0
        for key in ("meta/meta_policy_return", "meta/meta_policy_cost_max", "meta/adapted_return", "meta/adapted_cost_max"):
            assert np.isfinite(record[key])


def test_gae_estimator_meta_learns_the_critics_too():
    model = MetaCRPO("MlpPolicy", make_env(), seed=0, advantage_estimator="gae", **SMALL)
    critics = [p.detach().clone() for p in model.policy.critic_parameters()]
    writer = recording(model)
    model.learn(1)
    assert "train/value_loss" in writer.records[-1]
    assert any(not th.equal(p, q) for p, q in zip(model.policy.critic_parameters(), critics, strict=True))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eta_tol=-1.0), "eta_tol"),
        (dict(meta_lr=0.0), "meta_lr"),
        (dict(meta_lr=1.5), r"meta_lr must be in \(0, 1\]"),
        (dict(n_inner_steps=0), "n_inner_steps"),
        (dict(adapt_kl=0.0), "adapt_kl"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaCRPO("MlpPolicy", make_env(), **{**SMALL, **kwargs})


SMALL_DUAL: dict[str, Any] = dict(cost_limit=10.0, meta_batch_size=2, n_steps=100)


# ---------------------------------------------------------------------------------------------- expensive
@pytest.mark.expensive
def test_short_run_on_point_nav():
    """
    The measurement of docs/modules/meta_crpo.md: the main job's settings (8 envs x 200 steps, 10 tasks per
    meta-iteration, d = 10, log_std_init = -0.5, seed 0), 10 meta-iterations with one CRPO step per task, then
    meta-test on 5 unseen tasks x 5 CRPO steps. Prints the numbers; checks only that they are finite.
    """
    env = make_env(seed=0, n_envs=8)
    model = MetaCRPO(
        "MlpPolicy", env, cost_limit=10.0, meta_batch_size=10, n_inner_steps=1, meta_update="batch", n_steps=200,
        adapt_kl=0.01, policy_kwargs=dict(log_std_init=-0.5), seed=0,
    )  # fmt: skip
    initial = {key: value.clone() for key, value in model.policy.state_dict().items()}
    writer = recording(model)
    start = time.time()
    model.learn(10 * 10 * 200 * 8)
    seconds = time.time() - start
    cost_steps = sum(record["meta/crpo_cost_steps"] for record in writer.records)
    print(f"\nMetaCRPO: {model.meta_iterations} meta-iterations, {cost_steps} CRPO cost steps of 100, {seconds:.0f} s")
    for record in writer.records:
        print(
            f"  iteration {record['meta/iterations']}: meta-policy return {record['meta/meta_policy_return']:.1f},"
            f" max cost {record['meta/meta_policy_cost_max']:.2f}, violating tasks {record['meta/violating_tasks']}"
        )
    start = time.time()
    report = model.meta_test(n_tasks=5, n_adapt_steps=5, seed=10_000)
    print(f"meta-test ({time.time() - start:.0f} s) from the meta-policy:\n{report.table()}")
    model.policy.load_state_dict(initial)
    baseline = model.meta_test(n_tasks=5, n_adapt_steps=5, seed=10_000)
    print(f"from the untrained policy:\n{baseline.table()}")
    assert np.all(np.isfinite(report.returns)) and np.all(np.isfinite(report.costs))
