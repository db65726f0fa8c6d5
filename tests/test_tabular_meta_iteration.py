"""
One meta-iteration of :class:`~sb3_safemeta.SafeMetaDual` on a tabular task family against one iteration of
:func:`~sb3_safemeta.tabular.meta_train_exact` (Algorithm 2 with exact quantities, Algorithm 4 line 7's
meta-gradient), on the same batch of tasks from the same meta-policy.

Where the two can be equal, and why not elsewhere:

- Data. ``SafeMetaDual`` learns from sampled rollouts, ``meta_train_exact`` from exact evaluations. Here every
  rollout is exact: each (s, a) pair once, with the advantages of the policy that collected it multiplied by
  S A nu(s) pi(a|s), so that the uniform sample mean of the importance-weighted surrogate is the exact
  expectation E_{s ~ nu^pi, a ~ pi}[ratio A] (its value, its gradient and its line-search values), and the
  episode cost is the exact Jc, in the units of the tasks' cost limits.
- A^s. ``SafeMetaDual`` fits pi^u by the parametric Algorithm 3, compared with the exact A^s in
  tests/test_parametric_adaptation.py; here A^s is the exact Algorithm 1 (``safe_adapt_exact``), its pi^u
  loaded into the adapted policy, so that this test isolates the loop of Algorithm 2: which tasks violate, the
  batch rule, which rollouts go into which step, signs and averages.
- The outer step. ``meta_train_exact`` takes a plain gradient step on the logits, ``SafeMetaDual`` a TRPO step
  (Algorithm 4 line 8) on the actor's parameters (W, b), logits(s, a) = W[a, s] + b[a]. What is exactly
  equal is the gradient g that the TRPO step is given: (1 - gamma) times the exact direction D mapped to
  (W, b) (the gradient of the surrogate is the expectation, without the 1 / (1 - gamma) of the policy
  gradient theorem). The step itself is the natural-gradient step of that g: the maximiser of g^T x on
  1/2 x^T (F + damping I) x <= target_kl, F the Fisher of the trust region's mean KL in closed form (the line
  search accepts the full step on these instances). Both hold to float32 precision (measured: relative error of
  |g| 2e-8 to 5e-8, 1 - cosine of the step 4e-10 to 2e-9), in each branch of Algorithm 2: no task violates (meta
  step), every task violates, some do (cost step on the violating ones, ``crpo_rule="any"``).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch as th
from meta_helpers import recording
from stable_baselines3.common.vec_env import DummyVecEnv
from tabular_helpers import TabularTaskEnv, all_pairs, exact_fisher, flat_parameters

import sb3_safemeta.safe_meta_dual.safe_meta_dual as safe_meta_dual_module
from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.tabular import TabularCMDP, TabularTaskFamily, meta_train_exact, safe_adapt_exact, softmax_policy

N_STATES, N_ACTIONS, N_TASKS, GAMMA = 4, 3, 4, 0.8
LAMBDA, LAMBDA_C, SEED = 1.0, 2.0, 0
TARGET_KL, DAMPING = 1e-3, 0.1


def logits_of(policy) -> np.ndarray:
    """logits(s, a) = W[a, s] + b[a] of a tabular policy, float64, (S, A)"""
    return policy.action_net.weight.detach().double().numpy().T + policy.action_net.bias.detach().double().numpy()


def exact_rollout(cmdp: TabularCMDP, policy: np.ndarray) -> RolloutData:
    """Every (s, a) once; advantages scaled by S A nu(s) pi(a|s): uniform sample means are exact expectations."""
    evaluation = cmdp.evaluate(policy)
    scale = N_STATES * N_ACTIONS * (evaluation.state_visitation[:, None] * policy).ravel()
    observations, actions = all_pairs(N_STATES, N_ACTIONS)
    return RolloutData(
        observations=observations.numpy(),
        actions=actions.numpy(),
        advantages=(scale * evaluation.A.ravel()).astype(np.float32),
        cost_advantages=(scale[:, None] * evaluation.Ac.reshape(cmdp.n_costs, -1).T).astype(np.float32),
        episode_returns=np.array([evaluation.J]),
        episode_costs=np.asarray(evaluation.Jc, dtype=np.float64)[None],
        episode_lengths=np.array([1.0 / (1.0 - cmdp.gamma)]),
        episode_ids=np.zeros(N_STATES * N_ACTIONS, dtype=np.int64),
    )


def family(cost_limit_range: tuple[float, float]) -> TabularTaskFamily:
    return TabularTaskFamily(
        N_STATES, N_ACTIONS, n_costs=1, gamma=GAMMA, goal_reward=1.0, cost_limit_range=cost_limit_range, seed=SEED
    )


def safe_meta_dual_iteration(tasks_family: TabularTaskFamily, initial_logits: np.ndarray, monkeypatch):
    """One ``SafeMetaDual`` meta-iteration from ``initial_logits`` on meta_train_exact's first batch, exact data and A^s."""
    tasks = tasks_family.sample_tasks(N_TASKS, seed=SEED * 100_003)  # meta_train_exact's batch of iteration 0
    model = SafeMetaDual(
        "MlpPolicy", DummyVecEnv([lambda: TabularTaskEnv(tasks_family)]), meta_batch_size=N_TASKS, n_steps=20,
        lambda_=LAMBDA, lambda_c=LAMBDA_C, delta_c=0.0, target_kl=TARGET_KL, cg_max_steps=50, cg_damping=DAMPING,
        crpo_rule="any", meta_gradient="alg4", policy_kwargs=dict(net_arch=dict(pi=[], vf=[])), seed=SEED,
    )  # fmt: skip
    with th.no_grad():
        model.policy.action_net.weight.copy_(th.as_tensor(initial_logits.T))
        model.policy.action_net.bias.zero_()
    task_of: dict[int, dict] = {}

    def collect(policy, task, callback, critic_optimizer=None):
        rollout = exact_rollout(tasks_family.cmdp(task), softmax_policy(logits_of(policy)))
        task_of[id(rollout)] = task
        model.num_timesteps += len(rollout.actions)
        return rollout

    def exact_adaptation(policy, rollout, *args, **kwargs):
        """Algorithm 1 on the exact task; pi^u (Proposition 1) loaded into ``policy`` (which holds phi)."""
        task = task_of[id(rollout)]
        cmdp = tasks_family.cmdp(task)
        result = safe_adapt_exact(cmdp, softmax_policy(logits_of(policy)), LAMBDA, LAMBDA_C, task["cost_limit"], 0.0)
        evaluation = cmdp.evaluate(softmax_policy(logits_of(policy)))
        eta = LAMBDA + (1.0 - GAMMA) * float(np.dot(result.u, np.broadcast_to(LAMBDA_C, result.u.shape)))
        shift = (evaluation.Q - np.tensordot(result.u, evaluation.Qc, axes=1)) / eta  # meta_gradient_exact's pi^u
        with th.no_grad():
            policy.action_net.weight.add_(th.as_tensor(shift.T, dtype=th.float32))
        return types.SimpleNamespace(u=result.u, eta=eta, kl=result.kl, recovery=False)

    monkeypatch.setattr(model, "sample_tasks", lambda n_tasks, seed=None: tasks)
    monkeypatch.setattr(model, "_collect", collect)
    monkeypatch.setattr(safe_meta_dual_module, "adapt_on_rollout", exact_adaptation)
    writer = recording(model)
    before = flat_parameters(model.policy)
    model.learn(1)
    assert model.meta_iterations == 1
    return flat_parameters(model.policy) - before, writer.records[-1], tasks


def parameter_gradient(logits_gradient: np.ndarray) -> np.ndarray:
    """A gradient w.r.t. the logits (S, A) as a gradient w.r.t. (W, b): W-part transposed, b-part summed over states."""
    return np.concatenate([logits_gradient.T.ravel(), logits_gradient.sum(axis=0)])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(
    "cost_limit_range,branch",
    [((1.5, 2.0), "meta"), ((0.2, 0.5), "cost"), ((1.0, 1.5), "mixed")],
    ids=["no_task_violates", "every_task_violates", "some_tasks_violate"],
)
def test_exact_batch_meta_iteration_is_one_meta_train_exact_iteration(monkeypatch, cost_limit_range, branch):
    tasks_family = family(cost_limit_range)
    # float32-representable logits, so that the float32 policy holds exactly the exact oracle's phi
    initial_logits = np.random.default_rng(1).normal(size=(N_STATES, N_ACTIONS)).astype(np.float32).astype(np.float64)
    exact_arguments = dict(
        n_iterations=1, tasks_per_iteration=N_TASKS, lambda_=LAMBDA, lambda_c=LAMBDA_C, step_size=1.0, seed=SEED,
        initial_logits=initial_logits,
    )  # fmt: skip
    direction = meta_train_exact(tasks_family, **exact_arguments) - initial_logits  # one plain step of size 1
    step, record, tasks = safe_meta_dual_iteration(tasks_family, initial_logits, monkeypatch)

    # the branch of Algorithm 2 (lines 9-12 if any task's meta-policy violates its limit)
    meta_policy = softmax_policy(initial_logits)
    violating = sum(bool(np.any(tasks_family.cmdp(task).Jc(meta_policy) > task["cost_limit"])) for task in tasks)
    assert violating == {"meta": 0, "cost": N_TASKS}.get(branch, violating)
    if branch == "mixed":
        assert 0 < violating < N_TASKS
    assert record["meta/cost_step"] == int(branch != "meta") and record["meta/violating_tasks"] == violating

    # the gradient given to the TRPO step is (1 - gamma) times meta_train_exact's direction
    gradient = (1.0 - GAMMA) * parameter_gradient(direction)
    assert np.linalg.norm(gradient) > 1e-3
    assert record["train/gradient_norm"] == pytest.approx(float(np.linalg.norm(gradient)), rel=1e-6)  # 2e-8 to 5e-8
    # the step is the natural-gradient step of that gradient, on the boundary of the trust region (the line search
    # accepts the full step here): the closed form from the exact Fisher, to float32 precision
    fisher = exact_fisher(meta_policy) + DAMPING * np.eye(len(gradient))
    natural = np.linalg.solve(fisher, gradient)
    full_step = np.sqrt(2 * TARGET_KL / (natural @ fisher @ natural)) * natural
    assert record["train/is_line_search_success"] == 1
    assert cosine(step, natural) > 1 - 1e-7, cosine(step, natural)  # 1 - cosine: 4e-10 to 2e-9
    np.testing.assert_allclose(step, full_step, rtol=1e-3, atol=1e-4 * np.abs(full_step).max())  # float32 parameters

    # negative control: without adaptation (the joint policy's gradient) the meta step would point elsewhere
    if branch == "meta":
        joint = meta_train_exact(tasks_family, adapt=False, **exact_arguments) - initial_logits
        assert cosine(parameter_gradient(joint), gradient) < 0.99
