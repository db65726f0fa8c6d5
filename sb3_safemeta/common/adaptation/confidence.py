"""
Upper confidence bounds of a policy's expected episode cost from n independent episodes, for the statistical
margin of A^s (issue 12: "Anytime safety where costs are rare").

Problem (1) constrains Jc(pi_phi) + (first-order change) + lambda_c KL; with Jc(pi_phi) replaced by the mean
of a few episodes, a rare hazard (an episode that meets it costs 100-250 on the navigation families, most
cost 0) is missed by the rollout more often than not, and the constraint is enforced on a wrong number. With
``cost_confidence = 1 - alpha`` the adaptation constrains an upper bound U with P(Jc(pi_phi) <= U) >= 1 - alpha
instead:

- ``"dkw"`` (default): Anderson's bound from the Dvoretzky-Kiefer-Wolfowitz inequality with Massart's
  constant. With probability >= 1 - alpha the true CDF is above the empirical one minus
  eps = sqrt(ln(1/alpha) / (2n)) everywhere; the largest mean of such a CDF on [0, R] moves mass eps from the
  smallest episode costs to R. Valid for any distribution on [0, R] (R = ``cost_range``, an episode cost
  that cannot be exceeded: horizon x largest step cost), never looser than Hoeffding's bound
  (mean + R eps), and it stays informative when all episodes cost 0 (U = R eps).
- ``"hoeffding"``: mean + R sqrt(ln(1/alpha) / (2n)) (valid; for reference).
- ``"bootstrap"``: the 1 - alpha percentile of the bootstrap distribution of the mean. NOT valid for rare
  costs: when no episode met the hazard every resample has cost 0 and U = 0; reported for comparison only.

How many episodes the margin needs: when no episode of the rollout met the hazard the bound is R eps, below d
only if n >= ln(1/alpha) R^2 / (2 d^2) (:func:`min_episodes`). Fewer episodes cannot tell a policy of cost 0
from one that meets a hazard of cost R with probability d / R; A^s then holds pi_phi (no step) rather than
move on a guess.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from sb3_safemeta.common.validation import check_positive

__all__ = ["COST_BOUNDS", "check_margin", "episode_cost_upper_bound", "min_episodes", "pooled_spread_upper_bound"]

COST_BOUNDS = ("dkw", "hoeffding", "bootstrap")


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"cost_confidence must be a float in (0, 1), got {confidence!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"cost_confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def check_margin(cost_confidence: float | None, cost_bound: str, episode_cost_range: object) -> None:
    """Validate the margin options of A^s (a ValueError/TypeError naming the parameter)."""
    if cost_confidence is not None:
        confidence = _check_confidence(cost_confidence)
        if cost_bound == "dkw" and confidence < 0.5:
            raise ValueError(f"cost_confidence must be >= 0.5 for cost_bound='dkw', got {cost_confidence!r}")
    if cost_bound not in COST_BOUNDS:
        raise ValueError(f"cost_bound must be one of {COST_BOUNDS}, got {cost_bound!r}")
    if episode_cost_range is not None:
        values = np.asarray(episode_cost_range, dtype=np.float64)
        if values.size == 0 or np.any(~np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"episode_cost_range must be > 0 (float or one per cost channel), got {episode_cost_range!r}")


def episode_cost_upper_bound(
    episode_costs: np.ndarray,
    confidence: float,
    cost_range: float | list[float] | np.ndarray | None = None,
    method: str = "dkw",
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """
    Upper confidence bound of the expected episode cost of the policy that produced ``episode_costs``.

    :param episode_costs: undiscounted costs of n independent episodes, (n,) or (n, p)
    :param confidence: 1 - alpha, the probability that the bound holds (per channel)
    :param cost_range: R, an upper bound of any episode's cost (scalar or per channel); needed by ``"dkw"``
        and ``"hoeffding"`` (a cost above it raises a ValueError)
    :param method: ``"dkw"``, ``"hoeffding"`` or ``"bootstrap"`` (see the module docstring)
    :param n_resamples: bootstrap resamples
    :param seed: seed of the bootstrap
    :return: the bound per channel, (p,)
    """
    confidence = _check_confidence(confidence)
    if method not in COST_BOUNDS:
        raise ValueError(f"method must be one of {COST_BOUNDS}, got {method!r}")
    costs = np.asarray(episode_costs, dtype=np.float64)
    costs = costs.reshape(len(costs), -1) if costs.ndim != 2 else costs
    n, n_costs = costs.shape
    if n == 0:
        raise ValueError("episode_costs is empty: the bound needs at least one complete episode")
    if np.any(~np.isfinite(costs)) or np.any(costs < 0):
        raise ValueError("episode_costs must be finite and >= 0")
    alpha = 1.0 - confidence
    if method == "dkw" and confidence < 0.5:
        raise ValueError(f"cost_confidence must be >= 0.5 for method='dkw' (Massart's constant), got {confidence!r}")
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = costs[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
        return np.quantile(means, confidence, axis=0)
    if cost_range is None:
        raise ValueError(f"method={method!r} needs cost_range, an upper bound of any episode's cost")
    bound = np.broadcast_to(np.asarray(cost_range, dtype=np.float64), (n_costs,)).copy()
    if np.any(bound <= 0) or np.any(~np.isfinite(bound)):
        raise ValueError(f"cost_range must be finite and > 0, got {cost_range!r}")
    if np.any(costs > bound + 1e-9 * np.maximum(1.0, bound)):
        raise ValueError(f"an episode cost ({costs.max():.6g}) exceeds cost_range ({cost_range!r}): no valid bound")
    eps = math.sqrt(math.log(1.0 / alpha) / (2.0 * n))
    if method == "hoeffding":
        return np.minimum(costs.mean(axis=0) + bound * eps, bound)
    # Anderson: the CDF F - eps; the lowest eps of the mass (the smallest costs) moves to R
    upper = np.empty(n_costs)
    for channel in range(n_costs):
        ordered = np.sort(costs[:, channel])
        cumulative = np.arange(1, n + 1) / n  # empirical CDF after each order statistic
        kept = np.clip(cumulative - eps, 0.0, None) - np.clip(cumulative - 1.0 / n - eps, 0.0, None)
        upper[channel] = float(ordered @ kept + bound[channel] * min(eps, 1.0))
    return upper


def min_episodes(confidence: float, cost_range: float, cost_limit: float) -> int:
    """
    :param confidence: 1 - alpha
    :param cost_range: R, the largest possible episode cost
    :param cost_limit: d (> 0)
    :return: the fewest episodes n for which the ``"dkw"`` bound of a rollout without any cost, R eps, is
        at most d: ceil(ln(1/alpha) R^2 / (2 d^2)) (with fewer, every step from such a rollout is held)
    """
    confidence = _check_confidence(confidence)
    check_positive(cost_range, "cost_range")
    check_positive(cost_limit, "cost_limit")
    return max(1, math.ceil(math.log(1.0 / (1.0 - confidence)) * cost_range**2 / (2.0 * cost_limit**2)))


def pooled_spread_upper_bound(episode_costs: np.ndarray, pooled_costs: np.ndarray, confidence: float) -> np.ndarray:
    """
    Upper confidence bound of the expected episode cost of one task from its own few episodes, with the spread
    taken from a larger pool of episodes of the same policy on other tasks (meta-training's check of
    Algorithm 2 line 4 on rare costs: two episodes per task estimate neither the mean nor the spread, the pool of
    the meta-policy's episodes over a window of meta-iterations does estimate the spread):

        U = mean(episode_costs) + z_confidence * s_pool / sqrt(n),

    z the standard normal quantile, s_pool the sample standard deviation of ``pooled_costs`` (ddof 1; 0 with
    fewer than two pooled episodes). A normal-approximation bound, not a distribution-free one: it holds at the
    stated level when the task's episodes share the pool's spread and their mean is near normal; it is the
    margin that a few episodes cannot give, at the size the pool says the hazard has.

    :param episode_costs: the task's episode costs, (n,) or (n, p), n >= 1
    :param pooled_costs: the pool's episode costs, (N,) or (N, p)
    :param confidence: 1 - alpha, in (0, 1)
    :return: the bound per channel, (p,)
    """
    confidence = _check_confidence(confidence)
    costs = np.asarray(episode_costs, dtype=np.float64)
    if len(costs) == 0:
        raise ValueError("episode_costs is empty: the bound needs at least one complete episode")
    costs = costs[:, None] if costs.ndim == 1 else costs
    pool = np.asarray(pooled_costs, dtype=np.float64)
    pool = pool[:, None] if pool.ndim == 1 else pool
    if len(pool) < 2:  # no spread to pool yet
        return costs.mean(axis=0)
    if pool.shape[1] != costs.shape[1]:
        raise ValueError(f"pooled_costs has {pool.shape[1]} cost channels, episode_costs has {costs.shape[1]}")
    return costs.mean(axis=0) + NormalDist().inv_cdf(confidence) * pool.std(axis=0, ddof=1) / math.sqrt(len(costs))
