"""
Meta-training's check of Algorithm 2 line 4 on rare costs (``SafeMetaDual(meta_cost_confidence=...)``): the upper
bound of a task's meta-policy cost from its own few episodes and the spread of a pool of episodes. Oracles: the
closed form (the normal quantile from the standard library), and a hazard of known probability, where the plain
mean's acceptance rate of a violating policy is (1 - p)^n in closed form.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_safemeta.common.adaptation.confidence import pooled_spread_upper_bound

costs = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    task=arrays(np.float64, st.tuples(st.integers(1, 6), st.just(2)), elements=costs),
    pool=arrays(np.float64, st.tuples(st.integers(0, 40), st.just(2)), elements=costs),
    confidence=st.floats(min_value=0.5, max_value=0.999),
)
def test_pooled_bound_is_the_closed_form(task, pool, confidence):
    """U = mean + z s_pool / sqrt(n) per channel; at least the mean; the mean itself at confidence 0.5 or
    without spread in the pool; larger at a larger confidence."""
    bound = pooled_spread_upper_bound(task, pool, confidence)
    spread = pool.std(axis=0, ddof=1) if len(pool) >= 2 else np.zeros(2)
    expected = task.mean(axis=0) + NormalDist().inv_cdf(confidence) * spread / np.sqrt(len(task))
    np.testing.assert_allclose(bound, expected, rtol=1e-9, atol=1e-9)
    assert np.all(bound >= task.mean(axis=0) - 1e-9)
    np.testing.assert_allclose(pooled_spread_upper_bound(task, pool, 0.5), task.mean(axis=0), atol=1e-9)
    assert np.all(pooled_spread_upper_bound(task, pool, min(0.9999, confidence + 1e-3)) >= bound - 1e-9)


def test_pooled_bound_rejects_a_violating_meta_policy_that_the_mean_accepts():
    """
    A hazard of cost R = 200 met with probability p = 0.1 in an episode: Jc = 20 > d = 10. Judged by the mean of
    its n = 2 episodes, the meta-policy passes line 4 whenever neither episode met the hazard, (1 - p)^2 = 81% of
    the time; with the spread pooled over 100 earlier episodes of the same policy, at confidence 0.9 it passes at
    most 10% of the time. A policy with Jc = 2 (R = 20) still passes most of the time: the margin is not a veto.
    """
    rng = np.random.default_rng(0)
    draws, n, d = 4000, 2, 10.0

    def acceptance(radius: float, p: float) -> tuple[float, float]:
        task = radius * (rng.random((draws, n)) < p)
        pool = radius * (rng.random((draws, 100)) < p)
        plain = float(np.mean(task.mean(axis=1) <= d))
        bounded = float(np.mean([pooled_spread_upper_bound(t, q, 0.9)[0] <= d for t, q in zip(task, pool, strict=True)]))
        return plain, bounded

    plain, bounded = acceptance(200.0, 0.1)
    standard_error = np.sqrt(0.81 * 0.19 / draws)
    assert abs(plain - 0.81) <= 4 * standard_error, plain
    assert bounded <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / draws), bounded
    _, safe_bounded = acceptance(20.0, 0.1)
    assert safe_bounded >= 0.7, safe_bounded


def test_pooled_bound_inputs_are_checked():
    with pytest.raises(ValueError, match="cost_confidence"):
        pooled_spread_upper_bound(np.zeros(2), np.zeros(5), 1.0)
    with pytest.raises(ValueError, match="empty"):
        pooled_spread_upper_bound(np.zeros(0), np.zeros(5), 0.9)
    with pytest.raises(ValueError, match="channels"):
        pooled_spread_upper_bound(np.zeros((2, 1)), np.zeros((5, 2)), 0.9)
