"""
The per-sample weights of SafeMetaDual's meta-gradients (Algorithms 2 and 4). The surrogate they enter,
:class:`sb3_safemeta.common.trust_region.ImportanceWeightedSurrogate`, and the TRPO step are shared by all
meta-learners and live in :mod:`sb3_safemeta.common.trust_region`.

- Meta-gradient (Algorithm 4, line 7): for each task tau, data (s, a) collected with the adapted
  policy pi^tau and its advantages A^{pi^tau}; the surrogate
  ``L(phi') = mean_tau E_{s,a~pi^tau}[ (pi_phi'(a|s) / pi_phi(a|s)) A^{pi^tau}(s, a) ]`` has gradient
  ``mean_tau E[grad_phi log pi_phi(a|s) A^{pi^tau}(s, a)]`` at phi' = phi: the paper's
  ``grad_phi f_phi(s, a) Q^{pi^tau}`` with f the log-density and an advantage baseline.
  No second derivative of anything appears (the Hessian-free claim).
- Meta-gradient of eq. (6) (option ``meta_gradient="eq6"`` of SafeMetaDual): the same surrogate with the
  per-sample weights of :func:`eq6_weights` in place of A^{pi^tau}; it adds the
  ``eta^-1 grad_phi Qbar`` term, still without any second derivative.
- Cost-reducing step (Algorithm 2, lines 10-12): on the meta-policy's own data for the violating
  tasks, ``-mean_tau E_{s,a~pi_phi}[ratio A_ci]``, whose gradient is minus the policy gradient of Jc_i.
"""

from __future__ import annotations

import numpy as np

__all__ = ["episode_backward_sums", "eq6_weights", "penalised_advantages"]


# ---------------------------------------------------------------------------------------------- eq. (6)
def episode_backward_sums(values: np.ndarray, episode_ids: np.ndarray, gamma: float) -> np.ndarray:
    """
    ``C_k = sum_{j < k, j in the episode of k} gamma^(k - j) values_j``: the discounted sum of the values of
    the EARLIER samples of the same episode (0 at the first sample of an episode).

    The samples of one episode may be interleaved with others (a VecEnv rollout flattened time-major), but
    must appear in time order; an episode cut at the start of the rollout starts its sum at its first sample
    in the data. Vectorised over episodes: one NumPy step per time step of the longest episode.

    :param values: (n,)
    :param episode_ids: (n,) integer episode index of every sample
    :param gamma: discount in [0, 1]
    :return: C, (n,) float64
    """
    values = np.asarray(values, dtype=np.float64)
    episode_ids = np.asarray(episode_ids)
    if values.ndim != 1 or episode_ids.shape != values.shape:
        raise ValueError(f"values and episode_ids must have the same shape (n,), got {values.shape} and {episode_ids.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    n_samples = len(values)
    sums = np.zeros(n_samples)
    if n_samples == 0:
        return sums
    order = np.argsort(episode_ids, kind="stable")  # episodes contiguous, each in time order
    sorted_ids, sorted_values = episode_ids[order], values[order]
    index = np.arange(n_samples)
    is_first = np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]])
    position = index - np.maximum.accumulate(np.where(is_first, index, 0))  # time step within the episode
    by_position = np.argsort(position, kind="stable")
    boundaries = np.cumsum(np.bincount(position))[:-1]
    sorted_sums = np.zeros(n_samples)
    for at_position in np.split(by_position, boundaries)[1:]:  # positions 1, 2, ...: the previous sample is index - 1
        previous = at_position - 1
        sorted_sums[at_position] = gamma * (sorted_sums[previous] + sorted_values[previous])
    sums[order] = sorted_sums
    return sums


def penalised_advantages(
    advantages: np.ndarray, cost_advantages: np.ndarray, u: np.ndarray, normalize_advantage: bool = True
) -> np.ndarray:
    """
    X = A - u.A_c in the units of the exponent of pi^u ∝ pi_phi exp(X / eta) (Proposition 1, eq. 3) as
    :func:`~sb3_safemeta.common.adaptation.parametric.adapt_on_rollout` forms it: both advantages centred,
    the reward advantages divided by their standard deviation when ``normalize_advantage`` (the cost
    advantages never are).

    :param advantages: reward advantages, (n,)
    :param cost_advantages: cost advantages, (n, p)
    :param u: multipliers, (p,)
    :param normalize_advantage: as in ``adapt_on_rollout``
    :return: X, (n,) float64
    """
    reward = np.asarray(advantages, dtype=np.float64)
    cost = np.asarray(cost_advantages, dtype=np.float64).reshape(len(reward), -1)
    reward = reward - reward.mean()
    cost = cost - cost.mean(axis=0)
    if normalize_advantage:
        reward = reward / (reward.std(ddof=1) + 1e-8)  # torch's std is the unbiased one
    return reward - cost @ np.asarray(u, dtype=np.float64).reshape(cost.shape[1])


def eq6_weights(
    advantages: np.ndarray,
    penalised: np.ndarray,
    eta: float,
    episode_ids: np.ndarray,
    gamma: float,
    trace_decay: float | None = None,
) -> np.ndarray:
    """
    Per-sample weights w of the meta-gradient of eq. (6): with data (s_k, a_k) of the adapted policy
    pi^tau, ``E[sum_k grad_phi log pi_phi(a_k|s_k) w_k]`` estimates

        E_{pi^tau}[ (grad_phi f_phi + eta^-1 grad_phi Xbar)(s, a) A^{pi^tau}(s, a) ]              (eq. 6)

    Xbar = Qbar up to per-state constants (Proposition 3, with grad u* = 0 as in eq. 6). By eq. (29) of
    Appendix F.3.2, grad_phi Qbar(s_j, a_j) = sum_{k > j} gamma^(k - j) E[grad log pi_phi(a_k|s_k) X(s_k, a_k)]
    along the continuation of (s_j, a_j); exchanging the sums over j and k along each episode,

        w_k = A_k + X_k C_k / eta,   C_k = sum_{j < k, same episode} gamma^(k - j) A_j,

    so the grad f term is Algorithm 4 line 7 (w = A) and the eq. (6) term only changes the weights.

    Approximation: eq. (29) follows pi_phi after (s_j, a_j); the samples follow pi^tau, and X is estimated
    from pi^tau's advantages. pi^tau is within a small KL of pi_phi (the adaptation's KL penalty), so the
    error is of the order of that KL; the grad f term is unaffected.

    Double sampling: the term is E over (s_j, a_j) of A(s_j, a_j) times E[grad log pi_phi(a_k|s_k) X_k | s_j, a_j],
    a product of two conditional expectations of the same continuation. It is estimated without bias only if A_j
    is exact (a function of (s_j, a_j), e.g. a critic). Monte-Carlo or GAE advantages estimated from the same
    trajectory are biased in two ways: (i) A_j contains gamma^(k-j) A_k, correlated with a_k whose score
    multiplies X_k; (ii) given s_k, the path from (s_j, a_j) to s_k is not distributed as given (s_j, a_j)
    alone, so E[A_j | s_j, a_j, s_k] != A(s_j, a_j) (the rewards on the way to s_k and the value of s_k are
    correlated with g(s_k) = E[grad log pi_phi(a|s_k) X(s_k, a)]).

    ``trace_decay`` removes (i) only. With A_j = G_j - b(s_j) (Monte-Carlo, any state baseline b, lambda = 1) or
    A_j = GAE(lambda), the advantage truncated at k and bootstrapped with b(s_k) is the exact identity

        A_j^(k) = sum_{t=j}^{k-1} (gamma lambda)^(t-j) delta_t = A_j - (gamma lambda)^(k-j) A_k

    (for Monte-Carlo: sum_{t=j}^{k-1} gamma^(t-j) r_t + gamma^(k-j) b(s_k) - b(s_j)), a function of the
    trajectory up to s_k, so C_k no longer depends on a_k given s_k and the past; in closed form
    ``sum_{j<k} gamma^(k-j) A_j^(k) = C_k - A_k sum_{j<k} (gamma^2 lambda)^(k-j)``. Bias (ii) stays and is
    as large: on the tabular test (tests/test_meta_gradient_eq6.py) both variants are 30-50 standard errors
    (about 170 times the eq. (6) term) off, the exact-advantage weights within 3.

    :param advantages: A^{pi^tau}_k of the adapted policy's samples, (n,)
    :param penalised: X_k, the penalised advantage in the units of the exponent X / eta (see
        :func:`penalised_advantages`), (n,)
    :param eta: eta_u of the adaptation (> 0)
    :param episode_ids: (n,) episode of every sample (time order within an episode)
    :param gamma: the discount of the advantages (1 for undiscounted episode-unit advantages)
    :param trace_decay: None (default): use A_j as given (exact advantages). lambda in [0, 1]: the advantages are
        same-trajectory GAE(lambda) estimates (1 for Monte-Carlo returns minus a state baseline) and A_j is
        truncated at k as above (0 changes nothing: TD(0) advantages do not contain A_k)
    :return: w, (n,) float64
    """
    if not eta > 0.0:
        raise ValueError(f"eta must be positive, got {eta!r}")
    advantages = np.asarray(advantages, dtype=np.float64)
    penalised = np.asarray(penalised, dtype=np.float64)
    if penalised.shape != advantages.shape:
        raise ValueError(f"penalised must have the shape of advantages {advantages.shape}, got {penalised.shape}")
    backward = episode_backward_sums(advantages, episode_ids, gamma)
    if trace_decay is not None:
        if not 0.0 <= trace_decay <= 1.0:
            raise ValueError(f"trace_decay must be in [0, 1] or None, got {trace_decay!r}")
        # sum_{j<k} gamma^(k-j) (A_j - (gamma lambda)^(k-j) A_k) = C_k - A_k sum_{j<k} (gamma^2 lambda)^(k-j)
        decay = gamma * gamma * trace_decay
        backward = backward - advantages * episode_backward_sums(np.ones_like(advantages), episode_ids, decay)
    return advantages + penalised * backward / eta
