"""
What meta-test measures besides the chain: the independent episodes of every explored policy (the same for the four
algorithms, and leaving the chain as it was) and the time of the adaptation steps alone (Figure 2).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sb3_safemeta.common.rollout_data import RolloutData
from tests.meta_helpers import META_CASES, make_env


@pytest.mark.parametrize("case", META_CASES, ids=str)
def test_independent_episodes_measure_every_algorithm_without_changing_its_chain(case):
    """
    Every meta-algorithm measures its explored policies by independent episodes (Section 5.1: a safety claim is
    judged by episodes the step was not fitted on), and those episodes do not disturb the chain: its rollouts and
    steps are the same with and without them.
    """
    model = case.cls("MlpPolicy", make_env(), seed=0, **case.kwargs)
    without = model.meta_test(n_tasks=2, n_adapt_steps=2, seed=5, n_eval_episodes=0)
    measured = model.meta_test(n_tasks=2, n_adapt_steps=2, seed=5, n_eval_episodes=3)
    np.testing.assert_array_equal(measured.returns, without.returns)
    np.testing.assert_array_equal(measured.costs, without.costs)
    assert without.eval_costs is None and measured.n_eval_episodes == 3
    assert measured.eval_costs.shape == measured.costs.shape and measured.eval_returns.shape == measured.returns.shape
    assert np.all(np.isfinite(measured.eval_returns)) and np.all(measured.eval_costs >= 0)
    # the episodes are drawn anew for every policy: not all the same numbers
    assert len(np.unique(measured.eval_returns)) > 1
    assert measured.eval_seconds > 0 and measured.adapt_seconds > 0


@pytest.mark.parametrize("case", META_CASES, ids=str)
def test_bad_n_eval_episodes_is_a_clear_error(case):
    model = case.cls("MlpPolicy", make_env(), seed=0, **case.kwargs)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="n_eval_episodes must be an integer >= 0"):
            model.meta_test(n_tasks=1, n_adapt_steps=1, n_eval_episodes=bad)
    with pytest.raises(TypeError, match="n_eval_episodes must be an integer >= 0"):
        model.meta_test(n_tasks=1, n_adapt_steps=1, n_eval_episodes=True)
    with pytest.raises(ValueError, match="eval_confidence"):
        model.meta_test(n_tasks=1, n_adapt_steps=1, n_eval_episodes=1, eval_confidence=1.5)


def _rollout(collect_seconds: float) -> RolloutData:
    return RolloutData(
        observations=np.zeros((1, 2), dtype=np.float32),
        actions=np.zeros((1, 2), dtype=np.float32),
        advantages=np.zeros(1, dtype=np.float32),
        cost_advantages=np.zeros((1, 1), dtype=np.float32),
        episode_returns=np.ones(1),
        episode_costs=np.zeros((1, 1)),
        episode_lengths=np.ones(1),
        episode_ids=np.zeros(1, dtype=np.int64),
        collect_seconds=collect_seconds,
    )


def test_adapt_seconds_is_the_chain_time_less_rollouts_and_evaluation():
    """
    A chain whose parts take known times: collection 0.15 s (reported by the rollout), adaptation 0.02 s, evaluation
    0.15 s. ``adapt_seconds`` counts the adaptation alone, K per task: at least 2 x 2 x 0.02 s by the sleeps, and far
    below what counting one rollout or one evaluation would add (0.15 s each time).
    """
    n_tasks, k, collect, adapt, evaluate_time = 2, 2, 0.15, 0.02, 0.15
    model = META_CASES[0].cls("MlpPolicy", make_env(), seed=0, **META_CASES[0].kwargs)

    def chain(task, cost_limit):
        for step in range(k + 1):
            time.sleep(collect)
            yield _rollout(collect)
            if step < k:
                time.sleep(adapt)

    def evaluate(task):
        time.sleep(evaluate_time)
        return 0.0, np.zeros(1), None

    tasks = model.sample_tasks(n_tasks, seed=0)
    report = model._run_meta_test(tasks, k, chain, None, 0, evaluate, n_eval_episodes=1)
    assert n_tasks * k * adapt <= report.adapt_seconds < n_tasks * k * adapt + collect
    assert report.eval_seconds >= n_tasks * (k + 1) * evaluate_time


def test_a_rollout_reports_its_collection_time():
    """collect_seconds is the wall time of collect_rollouts: positive and within the time of the whole call."""
    case = META_CASES[0]
    model = case.cls("MlpPolicy", make_env(), seed=0, **case.kwargs)
    model.env.env_method("set_task", model.sample_tasks(1, seed=0)[0])
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    model.start_new_episodes()
    start = time.perf_counter()
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    elapsed = time.perf_counter() - start
    rollout = model.rollout_data(model.advantage_estimator)
    assert 0.0 < rollout.collect_seconds <= elapsed
    # a meta-test without adaptation steps has nothing to count
    assert model.meta_test(n_tasks=1, n_adapt_steps=0, n_eval_episodes=0).adapt_seconds == 0.0
