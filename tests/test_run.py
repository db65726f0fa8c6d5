"""
The five algorithms run, as SB3's ``tests/test_run.py`` runs its own: one iteration on continuous and discrete
actions, identical seeded runs, the meta-test report of the meta-learners, and clear errors for environments
they cannot use (no task distribution, no ``info["cost"]``, a cost of the wrong size or not finite).
Algorithm-specific behaviour (what each step computes, its logs) is tested in the per-algorithm files.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from meta_helpers import (
    ALGORITHM_CASES,
    ENV_ID,
    META_CASES,
    N_ENVS,
    AlgorithmCase,
    DiscreteMoves,
    PendulumWithCost,
    assert_same_parameters,
    make_env,
    recording,
)
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.callbacks import StopTrainingOnMetaIterations
from sb3_safemeta.common.evaluation import MetaTestReport


# ---------------------------------------------------------------------------------------------- run
@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_one_iteration_runs_and_moves_the_policy(case: AlgorithmCase, discrete: bool):
    env = make_env(wrapper_class=DiscreteMoves) if discrete else make_env()
    model = case.cls("MlpPolicy", env, seed=0, **case.kwargs)
    writer = recording(model)
    before = {key: value.clone() for key, value in model.policy.state_dict().items()}
    assert model.learn(1) is model
    assert 0 < model.num_timesteps <= case.steps
    if case.is_meta:
        assert model.meta_iterations == 1
    assert len(writer.records) == 1
    for key in case.logged:
        assert np.isfinite(writer.records[0][key]), key
    assert any(not th.equal(value, before[key]) for key, value in model.policy.state_dict().items())
    actions, _ = model.predict(env.observation_space.sample()[None], deterministic=True)
    assert env.action_space.contains(actions[0] if discrete else actions[0].astype(np.float32))


@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_seeded_runs_are_identical(case: AlgorithmCase):
    """Two runs with the same seed: bit-identical parameters, logs (all but ``time/*``), episodes and state."""

    def run() -> tuple[Any, list[dict[str, Any]]]:
        model = case.cls("MlpPolicy", make_env(seed=3), seed=3, **case.kwargs)
        writer = recording(model)
        if case.is_meta:  # a cost step spends fewer steps than a meta step: count meta-iterations
            model.learn(10 * case.steps, callback=StopTrainingOnMetaIterations(2))
        else:
            model.learn(2 * case.steps)
        return model, writer.records

    (model_a, log_a), (model_b, log_b) = run(), run()
    assert_same_parameters(model_a, model_b)
    assert len(log_a) == len(log_b) == 2
    for record_a, record_b in zip(log_a, log_b, strict=True):
        values_a = {key: value for key, value in record_a.items() if not key.startswith("time/")}
        values_b = {key: value for key, value in record_b.items() if not key.startswith("time/")}
        assert values_a == values_b
        assert all(key in values_a for key in case.logged)
    assert [info["r"] for info in model_a.ep_info_buffer] == [info["r"] for info in model_b.ep_info_buffer]
    for name in case.state:  # what the algorithm carries between iterations (SafeAdapter: u*)
        np.testing.assert_array_equal(getattr(model_a, name), getattr(model_b, name))


# ---------------------------------------------------------------------------------------------- meta-test
@pytest.mark.parametrize("case", META_CASES, ids=str)
def test_meta_test_report(tmp_path, case: AlgorithmCase):
    """Shapes and files of the report, reproducible, on the same test tasks for every meta-learner, phi untouched."""
    model = case.cls("MlpPolicy", make_env(), seed=0, **case.kwargs)
    before = {key: value.clone() for key, value in model.policy.state_dict().items()}
    n_tasks, n_adapt_steps = 2, 2
    report = model.meta_test(n_tasks=n_tasks, n_adapt_steps=n_adapt_steps, save_path=tmp_path / "meta_test")
    assert report.label == case.cls.__name__
    assert report.returns.shape == (n_tasks, n_adapt_steps + 1)
    assert report.costs.shape == (n_tasks, n_adapt_steps + 1, 1)
    assert report.cost_limits.shape == (n_tasks, 1) and np.all(report.cost_limits == 10.0)
    assert report.violations.shape == (n_tasks, n_adapt_steps + 1)
    assert np.all(np.isfinite(report.returns)) and np.all(np.isfinite(report.costs)) and np.all(report.costs >= 0)
    assert len(report.tasks) == n_tasks
    for suffix in (".csv", ".json", ".png"):
        assert (tmp_path / f"meta_test{suffix}").stat().st_size > 0
    rows = (tmp_path / "meta_test.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + n_adapt_steps + 1  # header + one row per policy pi_[0..K]
    reloaded = MetaTestReport.load(tmp_path / "meta_test")
    np.testing.assert_array_equal(reloaded.returns, report.returns)
    assert json.loads((tmp_path / "meta_test.json").read_text())["tasks"] == report.tasks
    # the adaptation moved the policy (pi_[1] differs from pi_[0]), but not the meta-policy nor the counters
    assert np.any(report.returns[:, 1] != report.returns[:, 0])
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, before[key]), key
    assert model.num_timesteps == 0
    # the same test tasks for every meta-learner with the same seed, and a reproducible report
    assert report.tasks == SafeMetaDual("MlpPolicy", make_env(), **META_CASES[0].kwargs).sample_tasks(n_tasks, seed=10_000)
    assert model.meta_test(n_tasks=n_tasks, n_adapt_steps=0).tasks == report.tasks
    again = model.meta_test(n_tasks=n_tasks, n_adapt_steps=n_adapt_steps)
    np.testing.assert_array_equal(again.returns, report.returns)
    np.testing.assert_array_equal(again.costs, report.costs)


# ---------------------------------------------------------------------------------------------- bad environments
class NoTaskProtocol(gym.Env):
    """The spaces of the built-in family, without sample_tasks / set_task / get_task."""

    def __init__(self):
        reference = gym.make(ENV_ID)
        self.observation_space, self.action_space = reference.observation_space, reference.action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, True, {"cost": 0.0}


@pytest.mark.parametrize("case", META_CASES, ids=str)
def test_env_without_task_distribution_is_a_clear_error(case: AlgorithmCase):
    """The same message from every meta-learner, at construction and at ``set_env``."""
    env = make_vec_env("Pendulum-v1", n_envs=1, wrapper_class=PendulumWithCost)
    with pytest.raises(TypeError, match=r"sample_tasks.*set_task") as ours:
        case.cls("MlpPolicy", env, **case.kwargs)
    with pytest.raises(TypeError) as reference:
        SafeMetaDual("MlpPolicy", env)
    assert str(ours.value) == str(reference.value)
    model = case.cls("MlpPolicy", make_env(), **case.kwargs)
    with pytest.raises(TypeError, match="not a task distribution"):
        model.set_env(make_vec_env(NoTaskProtocol, n_envs=N_ENVS))


class CostInfo(gym.Wrapper):
    """The built-in family with ``info["cost"]`` removed or replaced by ``cost`` (a value, or None to remove it)."""

    def __init__(self, env: gym.Env, cost: Any = None) -> None:
        super().__init__(env)
        self.cost = cost

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        info.pop("cost")
        if self.cost is not None:
            info["cost"] = self.cost
        return observation, reward, terminated, truncated, info


@pytest.mark.parametrize(
    "cost,error,match",
    [
        (None, KeyError, r"did not report info\['cost'\]"),
        (float("nan"), ValueError, "not finite"),
        ([0.0, 0.0], ValueError, "expected n_costs=1"),
    ],
    ids=["missing", "nan", "two_channels"],
)
@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_bad_cost_in_info_is_a_clear_error(case: AlgorithmCase, cost: Any, error: type[Exception], match: str):
    model = case.cls("MlpPolicy", make_env(wrapper_class=CostInfo, wrapper_kwargs=dict(cost=cost)), seed=0, **case.kwargs)
    with pytest.raises(error, match=match):
        model.learn(1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(cost_limit=-1.0), "cost_limit"),
        (dict(cost_limit=[10.0, 5.0]), r"cost_limit .*shape \(1,\)"),
        (dict(advantage_estimator="td"), "advantage_estimator"),
    ],
)
@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_bad_shared_hyperparameters_name_the_parameter(case: AlgorithmCase, kwargs: dict[str, Any], match: str):
    with pytest.raises(ValueError, match=match):
        case.cls("MlpPolicy", make_env(), **{**case.kwargs, **kwargs})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(meta_batch_size=0), "meta_batch_size"),
        (dict(cg_max_steps=0), "cg_max_steps"),
        (dict(line_search_shrinking_factor=1.0), r"line_search_shrinking_factor must be in \(0, 1\)"),
        (dict(line_search_shrinking_factor=1.5), r"line_search_shrinking_factor must be in \(0, 1\)"),
    ],
)
@pytest.mark.parametrize("case", META_CASES, ids=str)
def test_bad_meta_and_trust_region_hyperparameters_name_the_parameter(case: AlgorithmCase, kwargs: dict[str, Any], match: str):
    """The meta-batch and the TRPO step on phi: the same checks for every meta-learner (once in OnPolicyMetaAlgorithm)."""
    with pytest.raises(ValueError, match=match):
        case.cls("MlpPolicy", make_env(), **{**case.kwargs, **kwargs})
