"""
SafeMetaDual as an SB3 algorithm on the built-in family SafeMetaPointNav-v0: save/load, resume from a
checkpoint, seeded determinism, clear errors, the CRPO batch rule, the meta-test report, and (expensive)
meta-training against the initial policy and a jointly trained policy.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from meta_helpers import (
    N_ENVS,
    DiscreteMoves,
    StartZoneCost,
    assert_same_parameters,
    make_env,
    observations,
    recording,
)
from sb3_contrib import TRPO

import sb3_safemeta.envs  # noqa: F401
from sb3_safemeta import SafeAdapter, SafeMetaDual
from sb3_safemeta.common.callbacks import MetaCheckpointCallback, MetaIterationCallback
from sb3_safemeta.common.rollout_data import RolloutData

# one rollout = n_steps * n_envs = 200 steps = 2 episodes; a meta-iteration without cost step = 2 * 2 * 200 steps
SMALL: dict[str, Any] = dict(cost_limit=10.0, meta_batch_size=2, n_steps=100, fit_steps=5, n_dual_steps=5)
STEPS_PER_ITERATION = SMALL["meta_batch_size"] * 2 * SMALL["n_steps"] * N_ENVS


class StopAfter(MetaIterationCallback):
    """Stops training after ``n`` meta-iterations (an interrupted run)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def _on_meta_iteration_end(self) -> bool:
        return self.model.meta_iterations < self.n  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- learn, save / load
def test_learn_counts_meta_iterations_and_timesteps():
    model = SafeMetaDual("MlpPolicy", make_env(), seed=0, **{**SMALL, "cost_limit": 1e6})
    writer = recording(model)
    assert model.learn(2 * STEPS_PER_ITERATION) is model
    # no task violates a huge limit: every iteration adapts every task (2 rollouts per task)
    assert model.meta_iterations == 2 and model.num_timesteps == 2 * STEPS_PER_ITERATION
    assert [record["meta/cost_step"] for record in writer.records] == [0, 0]
    assert [record["meta/iterations"] for record in writer.records] == [1, 2]


def test_safe_adapter_from_meta_takes_the_meta_policy_and_its_adaptation_hyperparameters(tmp_path):
    """The round trip itself (predictions, parameters, counters, hyper-parameters) is in tests/test_save_load.py."""
    model = SafeMetaDual(
        "MlpPolicy", make_env(), seed=0, lambda_=2.0, lambda_c=[3.0], delta_c=0.5, target_kl=0.005, crpo_rule="mean",
        fit_scope="head", **{**SMALL, "cost_limit": 7.0},
    )  # fmt: skip
    model.learn(STEPS_PER_ITERATION)
    before, _ = model.predict(observations(), deterministic=True)
    model.save(tmp_path / "meta.zip")

    adapter = SafeAdapter.from_meta(tmp_path / "meta.zip", env=make_env())
    np.testing.assert_array_equal(adapter.predict(observations(), deterministic=True)[0], before)
    # the adaptation hyper-parameters come with the meta-policy
    assert (adapter.lambda_, adapter.lambda_c, adapter.delta_c, adapter.advantage_estimator) == (2.0, [3.0], 0.5, "mc")
    np.testing.assert_array_equal(adapter.cost_limit, [7.0])
    # every A^s option and the rollout size, as the meta-model's own meta_test uses them (was: fit_scope, fit_steps,
    # n_dual_steps and n_steps fell back on SafeAdapter's defaults: an actor fit on rollouts of 2048 steps)
    assert adapter.adaptation == model.adaptation
    assert (adapter.fit_scope, adapter.fit_steps, adapter.n_steps) == ("head", SMALL["fit_steps"], SMALL["n_steps"])
    assert SafeAdapter.from_meta(tmp_path / "meta.zip", env=make_env(), fit_scope="actor", n_steps=64).n_steps == 64


def test_discrete_actions_meta_iteration_and_save_load(tmp_path):
    """A categorical meta-policy: both steps of the loop (cost limit 0: every task violates; huge: none) and save/load."""

    def discrete_with_start_cost(env: gym.Env) -> gym.Env:
        return StartZoneCost(DiscreteMoves(env))

    for cost_limit in (0.0, 1e6):
        model = SafeMetaDual(
            "MlpPolicy", make_env(wrapper_class=discrete_with_start_cost), seed=0, **{**SMALL, "cost_limit": cost_limit}
        )
        writer = recording(model)
        before = {key: value.clone() for key, value in model.policy.state_dict().items()}
        sample_shapes: list[tuple[int, ...]] = []
        samples = model._samples

        def recording_samples(rollout: RolloutData, weights: np.ndarray, samples=samples, shapes=sample_shapes):
            shapes.append(tuple(rollout.actions.shape))
            return samples(rollout, weights)

        model._samples = recording_samples  # type: ignore[method-assign]
        model.learn(1)
        # one action index per sample (a (n, 1) column would broadcast the categorical log_prob to (n, n))
        assert sample_shapes and all(shape == (SMALL["n_steps"] * N_ENVS,) for shape in sample_shapes)
        assert writer.records[-1]["train/is_line_search_success"] == 1
        assert writer.records[-1]["meta/cost_step"] == int(cost_limit == 0.0)
        assert any(not th.equal(value, before[key]) for key, value in model.policy.state_dict().items())
    model.save(tmp_path / "discrete.zip")
    loaded = SafeMetaDual.load(tmp_path / "discrete.zip", env=make_env(wrapper_class=DiscreteMoves))
    np.testing.assert_array_equal(
        loaded.predict(observations(), deterministic=True)[0], model.predict(observations(), deterministic=True)[0]
    )


# ---------------------------------------------------------------------------------------------- resume / determinism
@pytest.mark.parametrize(
    "advantage_estimator, extra",
    [("mc", {}), ("gae", {}), ("mc", {"meta_cost_confidence": 0.9, "meta_cost_window": 2})],
    ids=["mc", "gae", "mc-pooled-margin"],
)
def test_resume_from_checkpoint_is_bit_identical(tmp_path, advantage_estimator, extra):
    """
    An interrupted run resumed from its checkpoint ends where the uninterrupted run ends. SB3 semantics:
    ``learn(n, reset_num_timesteps=False)`` trains n MORE steps, so the remainder is ``total - num_timesteps``.
    Bit-identity needs the task sampler's state in the zip and each meta-iteration seeded from it (the
    torch generator and the env resets are not in the zip, and ``load`` re-seeds them from ``seed``).
    """
    total = 3 * STEPS_PER_ITERATION
    kwargs = dict(SMALL, advantage_estimator=advantage_estimator, **extra)
    uninterrupted = SafeMetaDual("MlpPolicy", make_env(), seed=1, **kwargs)
    uninterrupted_log = recording(uninterrupted)
    uninterrupted.learn(total)

    interrupted = SafeMetaDual("MlpPolicy", make_env(), seed=1, **kwargs)
    checkpoint = MetaCheckpointCallback(save_freq=1, save_path=tmp_path, keep_all=True)
    interrupted.learn(total, callback=[checkpoint, StopAfter(1)])
    assert interrupted.meta_iterations == 1
    assert (tmp_path / "safemeta_1_iterations.zip").exists() and checkpoint.latest_path.exists()

    resumed = SafeMetaDual.load(checkpoint.latest_path, env=make_env(seed=123))  # a fresh env, seeded differently
    resumed_log = recording(resumed)
    assert resumed.meta_iterations == 1
    resumed.learn(total - resumed.num_timesteps, reset_num_timesteps=False, callback=checkpoint)
    assert resumed.meta_iterations == uninterrupted.meta_iterations
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    assert_same_parameters(uninterrupted, resumed)  # critics included (trained with "gae")
    assert len(resumed.meta_cost_pool) == len(uninterrupted.meta_cost_pool) == (2 if extra else 0)
    for kept, expected in zip(resumed.meta_cost_pool, uninterrupted.meta_cost_pool, strict=True):
        np.testing.assert_array_equal(kept, expected)
    # the resumed iterations log what the uninterrupted run logged for them
    tail = uninterrupted_log.records[-len(resumed_log.records) :]
    for expected, actual in zip(tail, resumed_log.records, strict=True):
        for key in ("meta/meta_policy_return", "meta/violating_tasks", "train/improvement", "meta/iterations"):
            assert actual[key] == expected[key]


# ---------------------------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lambda_=-1.0), "lambda_"),
        (dict(lambda_c=-0.5), "lambda_c"),
        (dict(delta_c=-1.0), "delta_c"),
        (dict(crpo_rule="all"), "crpo_rule"),
        (dict(fit_scope="layer"), "fit_scope"),
        (dict(target_kl=0.0), "target_kl"),
        (dict(meta_cost_confidence=1.0), "meta_cost_confidence"),
        (dict(meta_cost_window=0), "meta_cost_window"),
        (dict(meta_cost_margin=1.0), "meta_cost_margin"),
        (dict(meta_cost_margin=-0.1), "meta_cost_margin"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SafeMetaDual("MlpPolicy", make_env(), **{**SMALL, **kwargs})


# ---------------------------------------------------------------------------------------------- CRPO rule
def test_per_task_rule_steps_on_both_branches_at_once(monkeypatch):
    """
    crpo_rule="per_task": in a batch where one task violates (d = 1 on a cost every episode pays) and one does not
    (d = 1e6), the feasible task is adapted and the violating one contributes its cost descent to the same TRPO
    step: the surrogate holds the adapted task's advantages and minus the violating task's cost advantages (on
    the meta-policy's own samples), each scaled to unit standard deviation. "any" takes the cost step instead.
    """
    env = make_env(wrapper_class=StartZoneCost)
    model = SafeMetaDual("MlpPolicy", env, seed=0, **{**SMALL, "crpo_rule": "per_task"})
    tasks = [dict(task, cost_limit=limit) for task, limit in zip(model.sample_tasks(2), (1.0, 1e6), strict=True)]
    monkeypatch.setattr(model, "sample_tasks", lambda n_tasks, seed=None: tasks)
    writer = recording(model)
    captured: dict[str, Any] = {}
    step = model._trust_region_step

    def spy(surrogate, meta_rollouts):
        captured["surrogate"], captured["meta_rollouts"] = surrogate, meta_rollouts
        return step(surrogate, meta_rollouts)

    monkeypatch.setattr(model, "_trust_region_step", spy)
    model.learn(1)
    record = writer.records[-1]
    assert record["meta/cost_step"] == 0 and record["meta/violating_tasks"] == 1
    sets = captured["surrogate"].sample_sets
    assert len(sets) == 2  # the adapted feasible task, then the violating task's meta-policy rollout
    for _, _, weights in sets:
        assert float(weights.std(unbiased=False)) == pytest.approx(1.0, rel=1e-5)
    violating_rollout = captured["meta_rollouts"][0]
    cost_advantages = violating_rollout.cost_advantages[:, 0]
    expected = -cost_advantages / cost_advantages.std()
    np.testing.assert_allclose(sets[1][2].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sets[1][1].numpy(), violating_rollout.actions.reshape(sets[1][1].shape))
    assert record["train/is_line_search_success"] == 1 and record["train/improvement"] > 0

    model_any = SafeMetaDual("MlpPolicy", make_env(wrapper_class=StartZoneCost), seed=0, **{**SMALL, "crpo_rule": "any"})
    monkeypatch.setattr(model_any, "sample_tasks", lambda n_tasks, seed=None: tasks)
    writer_any = recording(model_any)
    model_any.learn(1)
    assert writer_any.records[-1]["meta/cost_step"] == 1


def test_crpo_rule_takes_the_cost_step_when_the_meta_policy_violates(monkeypatch):
    """
    With a cost that no policy avoids (the start zone) and d = 1, every task violates: the iteration takes
    the cost-reducing TRPO step, which lowers the importance-weighted cost surrogate of the violating tasks'
    own data (checked here from the data, independently of the logged improvement).
    """
    env = make_env(wrapper_class=StartZoneCost)
    model = SafeMetaDual("MlpPolicy", env, seed=0, **{**SMALL, "cost_limit": 1.0})
    writer = recording(model)
    captured: dict[str, Any] = {}
    cost_step = model._cost_step

    def spy(violating: list[tuple[RolloutData, int]], meta_rollouts: list[RolloutData]):
        captured["violating"] = violating
        captured["before"] = {key: value.clone() for key, value in model.policy.state_dict().items()}
        return cost_step(violating, meta_rollouts)

    monkeypatch.setattr(model, "_cost_step", spy)
    model.learn(1)
    record = writer.records[-1]
    assert record["meta/cost_step"] == 1
    assert record["meta/violating_tasks"] == SMALL["meta_batch_size"] == len(captured["violating"])
    assert record["meta/meta_policy_cost_mean"] > 1.0
    assert record["train/is_line_search_success"] == 1 and record["train/improvement"] > 0
    assert 0 < record["train/kl"] <= model.target_kl * (1 + 1e-6)
    # no adaptation data was used for the step, and the meta-iteration spent only the meta-policy's rollouts
    assert "meta/adapted_return" not in record
    assert model.num_timesteps == SMALL["meta_batch_size"] * SMALL["n_steps"] * N_ENVS

    # surrogate of the mean cost: mean over violating tasks of E_{pi_old}[ratio * A_c]; it is mean A_c at pi_old
    old_policy = copy.deepcopy(model.policy)
    old_policy.load_state_dict(captured["before"])

    def surrogate(policy) -> float:
        values = []
        for rollout, channel in captured["violating"]:
            obs, actions = th.as_tensor(rollout.observations), th.as_tensor(rollout.actions)
            with th.no_grad():
                log_ratio = policy.get_distribution(obs).log_prob(actions) - old_policy.get_distribution(obs).log_prob(actions)
                ratio = th.exp(log_ratio)
            values.append(float(th.mean(ratio * th.as_tensor(rollout.cost_advantages[:, channel]))))
        return float(np.mean(values))

    before, after = surrogate(old_policy), surrogate(model.policy)
    assert after < before
    np.testing.assert_allclose(before - after, record["train/improvement"], rtol=1e-3, atol=1e-7)


def test_pooled_margin_judges_a_task_without_cost_by_the_pool(monkeypatch):
    """
    meta_cost_confidence: a task whose own rollout is far below d (d = 1e6) counts as violating when the pool of
    the meta-policy's earlier episodes met a hazard whose spread makes the upper bound exceed d (an episode of
    cost 1e8 among zeros: the bound adds z_0.9 s / sqrt(n)). Every task then takes the cost step; without the
    margin the same iteration takes the meta step (test_no_violation_takes_the_meta_step). The logged margin is
    the bound minus the rollout's mean, z s / sqrt(n) with s the pool's spread, this iteration's episodes included.
    """
    from statistics import NormalDist

    model = SafeMetaDual(
        "MlpPolicy", make_env(wrapper_class=StartZoneCost), seed=0,
        **{**SMALL, "cost_limit": 1e6, "meta_cost_confidence": 0.9, "meta_cost_window": 3},
    )  # fmt: skip
    earlier = np.array([[0.0], [1e8], [0.0], [0.0]])
    model.meta_cost_pool.append(earlier)
    writer = recording(model)
    captured: dict[str, Any] = {}
    cost_step = model._cost_step

    def spy(violating, meta_rollouts):
        captured["meta_rollouts"] = meta_rollouts
        return cost_step(violating, meta_rollouts)

    monkeypatch.setattr(model, "_cost_step", spy)
    model.learn(1)
    record = writer.records[-1]
    assert record["meta/cost_step"] == 1 and record["meta/violating_tasks"] == SMALL["meta_batch_size"]
    assert record["meta/meta_policy_cost_max"] < 1e6  # the tasks' own means are feasible
    rollouts = captured["meta_rollouts"]
    pooled = np.concatenate([earlier, *[rollout.episode_costs for rollout in rollouts]])
    z = NormalDist().inv_cdf(0.9)
    margins = [z * pooled.std(ddof=1) / np.sqrt(rollout.n_episodes) for rollout in rollouts]
    assert record["meta/cost_margin_mean"] == pytest.approx(np.mean(margins), rel=1e-9)
    assert record["meta/cost_pool_episodes"] == len(pooled)
    assert len(model.meta_cost_pool) == 2  # the window keeps the earlier iteration and this one


@pytest.mark.parametrize("start_cost", [False, True])
def test_meta_cost_margin_meta_trains_as_the_lower_limit_and_meta_tests_at_d(start_cost, monkeypatch):
    """
    meta_cost_margin = 0.2 meta-trains exactly as d' = 0.8 d (the same seed gives the same parameters after a
    meta-iteration) and keeps d for the rest: the attribute, the meta-test's limits. And it changes meta-training
    (not a test that cannot fail): with d set so that the costliest task lies between 0.8 d and d (on the family's own
    hazard costs, and on StartZoneCost's), that task violates 0.8 d and the CRPO rule takes the cost step, while at d
    the iteration takes the meta step.
    """
    wrapper = {"wrapper_class": StartZoneCost} if start_cost else {}
    estimates: list[np.ndarray] = []
    probe = SafeMetaDual("MlpPolicy", make_env(**wrapper), seed=0, **{**SMALL, "cost_limit": 1e6})
    costs = probe._meta_policy_costs
    monkeypatch.setattr(probe, "_meta_policy_costs", lambda rollouts: estimates.extend(costs(rollouts)) or costs(rollouts))
    probe.learn(1)
    d = max(float(np.max(estimates)) / 0.9, 1.0)  # the costliest task at 0.9 d: within d, above 0.8 d
    parameters, cost_steps = [], []
    for cost_limit, margin in ((0.8 * d, 0.0), (d, 0.2), (d, 0.0)):
        model = SafeMetaDual(
            "MlpPolicy", make_env(**wrapper), seed=0, **{**SMALL, "cost_limit": cost_limit, "meta_cost_margin": margin}
        )
        writer = recording(model)
        model.learn(1)
        parameters.append(th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone())
        cost_steps.append(writer.records[-1]["meta/cost_step"])
    assert th.equal(parameters[0], parameters[1])
    assert not th.equal(parameters[1], parameters[2])
    assert cost_steps == [1, 1, 0]  # the costliest task violates 0.8 d, not d
    margin_model = SafeMetaDual(
        "MlpPolicy", make_env(**wrapper), seed=0, **{**SMALL, "cost_limit": d, "meta_cost_margin": 0.2}
    )
    assert float(margin_model.cost_limit[0]) == d
    report = margin_model.meta_test(n_tasks=1, n_adapt_steps=1, seed=0)
    np.testing.assert_array_equal(report.cost_limits, [[d]])


def test_no_violation_takes_the_meta_step():
    model = SafeMetaDual("MlpPolicy", make_env(wrapper_class=StartZoneCost), seed=0, **{**SMALL, "cost_limit": 1e6})
    writer = recording(model)
    model.learn(1)
    record = writer.records[-1]
    assert record["meta/cost_step"] == 0 and record["meta/violating_tasks"] == 0
    assert record["train/improvement"] > 0 and "meta/adapted_return" in record
    assert model.num_timesteps == STEPS_PER_ITERATION


# ---------------------------------------------------------------------------------------------- meta-test


# ---------------------------------------------------------------------------------------------- expensive
class JointSafeMetaDual(SafeMetaDual):
    """
    The same loop without adaptation: the TRPO step follows the meta-policy's own policy gradient on the batch
    (the CRPO rule unchanged). Same tasks, iterations and environment steps (the adapted rollouts are
    collected and ignored): one policy for all tasks, as ``meta_train_exact(adapt=False)`` in the tabular test.
    """

    def _meta_step(self, adapted_rollouts: list[RolloutData], meta_rollouts: list[RolloutData]):
        return super()._meta_step(meta_rollouts, meta_rollouts)


class ResampleTaskEachEpisode(gym.Wrapper):
    """The TRPO baseline's env: a new task from the family at every reset (the policy sees all tasks)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.task_rng = np.random.default_rng(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.task_rng = np.random.default_rng(seed)
        family: Any = self.env.unwrapped  # a TaskEnv
        family.set_task(family.sample_tasks(1, seed=int(self.task_rng.integers(2**31 - 1)))[0])
        return self.env.reset(seed=seed, options=options)


@pytest.mark.expensive
def test_meta_training_beats_initial_and_joint_policies():
    """
    Meta-train on SafeMetaPointNav-v0 (60+ meta-iterations of 10 tasks), then adapt by one A^s step on 20
    unseen tasks. The meta-policy must beat, each followed by the same adaptation step, (a) the initial
    policy, (b) the same loop without adaptation (JointSafeMetaDual) and (c) sb3-contrib TRPO trained on all
    tasks jointly (cost ignored, a new task every episode) on as many environment steps, all with the same
    2x64 tanh network; and the final meta-policy must satisfy the constraint of its training tasks.
    """
    seed, n_envs, n_steps, batch, iterations, limit = 0, 4, 100, 10, 60, 10.0
    kwargs = dict(
        cost_limit=limit, meta_batch_size=batch, n_steps=n_steps, target_kl=0.02, lambda_=1.0, lambda_c=1.0,
        policy_kwargs=dict(log_std_init=-0.5), seed=seed,
    )  # fmt: skip
    start = time.time()
    model = SafeMetaDual("MlpPolicy", make_env(seed, n_envs), **kwargs)
    initial = {key: value.clone() for key, value in model.policy.state_dict().items()}
    training_tasks: list[dict[str, Any]] = []
    sample_tasks = model.sample_tasks

    def recording_sampler(n_tasks: int, seed: int | None = None):
        tasks = sample_tasks(n_tasks, seed)
        if seed is None:  # the training draws
            training_tasks.extend(tasks)
        return tasks

    model.sample_tasks = recording_sampler  # type: ignore[method-assign]
    writer = recording(model)
    model.learn(iterations * batch * 2 * n_steps * n_envs)
    meta_state = {key: value.clone() for key, value in model.policy.state_dict().items()}
    meta_seconds = time.time() - start

    start = time.time()
    joint = JointSafeMetaDual("MlpPolicy", make_env(seed, n_envs), **kwargs)
    joint.learn(iterations * batch * 2 * n_steps * n_envs)
    joint_seconds = time.time() - start

    start = time.time()
    trpo = TRPO(
        "MlpPolicy", make_env(seed, n_envs, wrapper_class=ResampleTaskEachEpisode), n_steps=500, batch_size=500,
        seed=seed, policy_kwargs=dict(log_std_init=-0.5),
    )  # fmt: skip
    trpo.learn(model.num_timesteps)
    trpo_seconds = time.time() - start

    test_tasks = model.sample_tasks(20, seed=10_000)
    states = {"meta": meta_state, "initial": initial, "joint": joint.policy.state_dict(), "trpo": trpo.policy.state_dict()}
    reports = {}
    for name, state in states.items():
        model.policy.load_state_dict(state, strict=False)  # TRPO's policy has no cost-value head (unused by "mc")
        reports[name] = model.meta_test(tasks=test_tasks, n_adapt_steps=1, adapter_kwargs=dict(n_steps=2 * n_steps))
    # the final meta-policy on 20 of its training tasks: pi_[0] of a meta-test with K = 0, 20 episodes per task
    model.policy.load_state_dict(meta_state)
    seen = [training_tasks[i] for i in np.random.default_rng(0).choice(len(training_tasks), size=20, replace=False)]
    training_costs = model.meta_test(tasks=seen, n_adapt_steps=0, adapter_kwargs=dict(n_steps=5 * n_steps)).costs[:, 0, 0]

    cost_steps = sum(record["meta/cost_step"] for record in writer.records)
    print(
        f"\nSafeMetaDual: {model.meta_iterations} meta-iterations ({cost_steps} cost steps), "
        f"{model.num_timesteps} env steps, {meta_seconds:.0f} s; joint loop {joint.meta_iterations} iterations, "
        f"{joint.num_timesteps} steps, {joint_seconds:.0f} s; TRPO {trpo.num_timesteps} steps, {trpo_seconds:.0f} s"
    )
    print("mean return over 20 unseen tasks (8 episodes per policy and task), and max episode cost over tasks (d = 10)")
    for name, report in reports.items():
        returns, costs = report.returns.mean(axis=0), report.costs[:, :, 0].max(axis=0)
        print(f"{name:>8}: pi_[0] {returns[0]:8.2f} (max cost {costs[0]:5.2f}), one step {returns[1]:8.2f} ({costs[1]:5.2f})")
    print(f"meta-policy on 20 training tasks: episode cost max {training_costs.max():.2f}, mean {training_costs.mean():.2f}")

    after_one_step = {name: float(report.returns[:, 1].mean()) for name, report in reports.items()}
    assert after_one_step["meta"] > after_one_step["initial"]
    assert after_one_step["meta"] > after_one_step["joint"]
    assert after_one_step["meta"] > after_one_step["trpo"]
    assert np.all(training_costs <= limit)
