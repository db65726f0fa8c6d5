"""
The sample-based meta-gradient of eq. (6) (``SafeMetaDual(meta_gradient="eq6")``,
:func:`sb3_safemeta.safe_meta_dual.meta_gradient.eq6_weights`):

- exact oracle: on a tabular CMDP read as an episodic one (an episode ends with probability 1 - gamma after
  every step, so sums along an episode are undiscounted and the mean episode length is H = 1/(1 - gamma)),
  the population value of the swapped-sum estimator E[sum_k grad log pi_phi(a_k|s_k) X_k C_k] / eta, with
  pi_phi's continuation, is the eq6-minus-alg4 difference of ``meta_gradient_exact``;
- the weight function on sampled episodes against the exact expectation of the estimator (continuation by the
  sampling policy, as in SafeMetaDual), and on a hand-made sequence;
- Monte-Carlo advantages from the sampled episodes (double sampling): the weights miss the target by many
  standard errors, with or without the truncation of ``trace_decay`` (which only removes the dependence on a_k);
- SafeMetaDual with ``meta_gradient="eq6"``: a meta-iteration, the weights it uses, save/load, bad values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from meta_helpers import make_env

import sb3_safemeta.envs  # noqa: F401
from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.buffers import CostRolloutBuffer
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.safe_meta_dual.meta_gradient import episode_backward_sums, eq6_weights, penalised_advantages
from sb3_safemeta.tabular import TabularCMDP, adapted_policy, meta_gradient_exact, random_cmdp, softmax_policy


# ---------------------------------------------------------------------------------------------- tabular helpers
def instance(seed: int, gamma: float = 0.8) -> dict[str, Any]:
    """A CMDP, a meta-policy, its adapted policy pi^u (u fixed) and the quantities of the estimator."""
    rng = np.random.default_rng(seed)
    cmdp = random_cmdp(4, 3, 1, gamma=gamma, seed=seed)
    logits = rng.normal(size=(4, 3))
    u, lambda_ = np.array([rng.uniform(0.2, 2.0)]), float(rng.choice([0.5, 1.0]))
    meta = softmax_policy(logits)
    adapted = adapted_policy(cmdp, logits, u, lambda_, lambda_)
    meta_evaluation = cmdp.evaluate(meta)
    return dict(
        cmdp=cmdp,
        logits=logits,
        u=u,
        lambda_=lambda_,
        meta=meta,
        adapted=adapted,
        outer=cmdp.evaluate(adapted).A,  # A^{pi^u}
        penalised=meta_evaluation.A - np.tensordot(u, meta_evaluation.Ac, axes=1),  # X = Abar of pi_phi
        eta=lambda_ + (1.0 - gamma) * float(u @ np.full(1, lambda_)),
    )


def score_sum(state_weights: np.ndarray, policy: np.ndarray, values: np.ndarray, meta: np.ndarray) -> np.ndarray:
    """
    sum_s state_weights(s) sum_a policy(a|s) values(s, a) grad_f log pi_phi(a|s), as an (S, A) array over the
    logits f, with grad_f(s, .) log pi_phi(a|s) = e_a - pi_phi(.|s).
    """
    weighted = policy * values
    return state_weights[:, None] * (weighted - meta * weighted.sum(axis=1, keepdims=True))


def expected_visits(cmdp: TabularCMDP, policy: np.ndarray) -> np.ndarray:
    """E[number of visits of s in an episode]: (I - gamma P_pi^T)^-1 rho (an episode ends w.p. 1 - gamma per step)."""
    return np.linalg.solve(np.eye(cmdp.n_states) - cmdp.gamma * cmdp.transition_matrix(policy).T, cmdp.rho)


def population_estimator(case: dict[str, Any], continuation: np.ndarray, gamma_w: float) -> tuple[np.ndarray, np.ndarray]:
    """
    Exact expectation, over episodes whose samples follow pi^u, of sum_k grad log pi_phi(a_k|s_k) A_k (the alg4
    term) and of sum_k grad log pi_phi(a_k|s_k) X_k C_k / eta with C_k = sum_{j<k} gamma_w^(k-j) A_j, where
    after each (s_j, a_j) the episode continues with ``continuation``. m(s) = E[sum_k 1{s_k = s} C_k] obeys
    m = gamma gamma_w (P_cont^T m + inject), inject(s') = sum_{s,a} visits(s) pi^u(a|s) A(s, a) P(s'|s, a):
    the A_j enter C at the step after j and are carried, discounted by gamma_w, along the continuation.
    """
    cmdp, meta, adapted, outer = case["cmdp"], case["meta"], case["adapted"], case["outer"]
    visits = expected_visits(cmdp, adapted)
    alg4 = score_sum(visits, adapted, outer, meta)
    inject = np.einsum("s,sa,sat->t", visits, adapted * outer, cmdp.P)
    factor = cmdp.gamma * gamma_w
    carried = np.linalg.solve(np.eye(cmdp.n_states) - factor * cmdp.transition_matrix(continuation).T, factor * inject)
    return alg4, score_sum(carried, continuation, case["penalised"], meta) / case["eta"]


# ---------------------------------------------------------------------------------------------- exact oracle
@pytest.mark.parametrize("seed", range(4))
def test_swapped_sum_with_pi_phi_continuation_is_the_eq6_term(seed):
    """
    The estimator's target, exactly: with gamma_w = 1 (episode units) and pi_phi's continuation it equals
    eq6 - alg4 of ``meta_gradient_exact``; a discounted accumulator (gamma_w = gamma, counting the discount
    twice) or a forward sum C_k = sum_{j>k} A_j does not.
    """
    case = instance(seed)
    cmdp, meta, adapted = case["cmdp"], case["meta"], case["adapted"]
    args = (cmdp, case["logits"], case["u"], case["lambda_"], case["lambda_"])
    exact_alg4 = meta_gradient_exact(*args, form="alg4")
    exact_extra = meta_gradient_exact(*args, form="eq6") - exact_alg4
    assert np.max(np.abs(exact_extra)) > 0.01 * np.max(np.abs(exact_alg4))  # the term is not negligible here (2-14%)

    alg4, extra = population_estimator(case, continuation=meta, gamma_w=1.0)
    np.testing.assert_allclose(alg4, exact_alg4, atol=1e-10)  # grad log pi_phi in place of grad f: same expectation
    np.testing.assert_allclose(extra, exact_extra, atol=1e-10)

    gap = 0.05 * np.max(np.abs(exact_extra))
    _, double_discount = population_estimator(case, continuation=meta, gamma_w=cmdp.gamma)
    assert np.max(np.abs(double_discount - exact_extra)) > gap
    # forward sum: E[sum_{j>k} A_j | s_k, a_k] along pi_phi's continuation
    values_of_outer = np.linalg.solve(
        np.eye(cmdp.n_states) - cmdp.gamma * cmdp.transition_matrix(meta), np.sum(meta * case["outer"], axis=1)
    )
    future = cmdp.gamma * cmdp.P @ values_of_outer
    forward = score_sum(expected_visits(cmdp, adapted), adapted, case["penalised"] * future, meta) / case["eta"]
    assert np.max(np.abs(forward - exact_extra)) > gap


# ---------------------------------------------------------------------------------------------- sampled episodes
def sample_episodes(cmdp: TabularCMDP, policy: np.ndarray, n_episodes: int, rng: np.random.Generator):
    """
    Episodes of ``policy`` run side by side (an episode ends w.p. 1 - gamma after every step), flattened
    time-major as a VecEnv rollout: the samples of different episodes interleave.

    :return: episode ids, states, actions, (n,) each
    """
    states = rng.choice(cmdp.n_states, size=n_episodes, p=cmdp.rho)
    alive = np.arange(n_episodes)
    ids, visited, taken = [], [], []
    while len(alive):
        s = states[alive]
        a = np.minimum((rng.random((len(s), 1)) > np.cumsum(policy[s], axis=1)).sum(axis=1), cmdp.n_actions - 1)
        nxt = np.minimum((rng.random((len(s), 1)) > np.cumsum(cmdp.P[s, a], axis=1)).sum(axis=1), cmdp.n_states - 1)
        ids.append(alive), visited.append(s), taken.append(a)
        states[alive] = nxt
        alive = alive[rng.random(len(alive)) < cmdp.gamma]
    return np.concatenate(ids), np.concatenate(visited), np.concatenate(taken)


def estimate(case: dict[str, Any], samples, weights: np.ndarray, n_episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over episodes of sum_k grad log pi_phi(a_k|s_k) w_k, and its standard error, (S, A) each."""
    ids, states, actions = samples
    meta = case["meta"]
    per_sample = -meta[states] * weights[:, None]
    per_sample[np.arange(len(states)), actions] += weights
    per_episode = np.zeros((n_episodes, *meta.shape))
    np.add.at(per_episode, (ids, states), per_sample)
    return per_episode.mean(axis=0), per_episode.std(axis=0, ddof=1) / np.sqrt(n_episodes)


@pytest.mark.parametrize("gamma_w", [1.0, 0.5])
def test_weights_on_sampled_episodes_match_the_exact_expectation(gamma_w):
    """
    eq6_weights on 30 000 interleaved episodes of pi^u (150 000 samples): the estimate of
    E[sum_k grad log pi_phi(a_k|s_k) w_k] agrees with its exact expectation (continuation by pi^u, the
    approximation SafeMetaDual makes) within 4 standard errors on every component, while weights with the sum
    taken forward, with the other discount, with gamma^(k-j-1) in place of gamma^(k-j), or the alg4 weights
    are more than 6 standard errors off (measured: 6.6 to 27).
    """
    case = instance(0)
    n_episodes, eta = 30_000, case["eta"]
    ids, states, actions = samples = sample_episodes(case["cmdp"], case["adapted"], n_episodes, np.random.default_rng(1))
    outer, penalised = case["outer"][states, actions], case["penalised"][states, actions]
    alg4, extra = population_estimator(case, continuation=case["adapted"], gamma_w=gamma_w)

    def standard_errors_off(weights: np.ndarray) -> float:
        mean, error = estimate(case, samples, weights, n_episodes)
        return float(np.max(np.abs(mean - alg4 - extra) / error))

    assert standard_errors_off(eq6_weights(outer, penalised, eta, ids, gamma_w)) < 4.0
    forward = outer + penalised * episode_backward_sums(outer[::-1], ids[::-1], gamma_w)[::-1] / eta
    wrong = [forward, eq6_weights(outer, penalised, eta, ids, 1.5 - gamma_w), outer]
    if gamma_w < 1.0:
        wrong.append(outer + penalised * episode_backward_sums(outer, ids, gamma_w) / gamma_w / eta)
    assert min(standard_errors_off(weights) for weights in wrong) > 6.0


def monte_carlo_advantages(case: dict[str, Any], samples) -> np.ndarray:
    """
    A_k = G_k - V(s_k): the sampled (undiscounted, episodic reading) reward-to-go of pi^u's episodes minus
    pi^u's exact value, so E[A_k | s_k, a_k] = A^{pi^u}(s_k, a_k) and A_k uses the rest of the episode.
    """
    ids, states, actions = samples
    rewards = case["cmdp"].r[states, actions]
    to_go = rewards + episode_backward_sums(rewards[::-1], ids[::-1], 1.0)[::-1]
    return to_go - case["cmdp"].evaluate(case["adapted"]).V[states]


def action_dependence(case: dict[str, Any], samples, sums: np.ndarray, n_episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """
    Mean over episodes of sum_k (grad log pi_phi(a_k|s_k) X_k - g(s_k)) C_k, g(s) = E_{a~pi^u}[grad log pi_phi X],
    and its standard error: zero in expectation iff C_k carries no information on a_k beyond s_k and the past.
    """
    ids, states, actions = samples
    meta, adapted, penalised = case["meta"], case["adapted"], case["penalised"]
    tilted = adapted * penalised
    expected_score = tilted - meta * tilted.sum(axis=1, keepdims=True)  # g(s), (S, A)
    weights = penalised[states, actions] * sums
    per_sample = -meta[states] * weights[:, None] - expected_score[states] * sums[:, None]
    per_sample[np.arange(len(states)), actions] += weights
    per_episode = np.zeros((n_episodes, *meta.shape))
    np.add.at(per_episode, (ids, states), per_sample)
    return per_episode.mean(axis=0), per_episode.std(axis=0, ddof=1) / np.sqrt(n_episodes)


def test_truncated_monte_carlo_advantages_remove_the_action_term_but_not_the_bias():
    """
    Monte-Carlo advantages (sampled returns minus the exact V of pi^u, exact X) on 60 000 episodes of pi^u, the
    target being the exact expectation with exact advantages (continuation by pi^u, gamma_w = 1):

    - exact advantages: within 4 standard errors (the control);
    - the same-trajectory A_j (``trace_decay=None``): many standard errors off (double sampling);
    - A_j truncated at k and bootstrapped with V(s_k) (``trace_decay=1``): C_k no longer depends on a_k
      (sum_k (score_k X_k - g(s_k)) C_k has mean zero within 4 standard errors, while it does not without the
      correction), and yet the estimate is as far off: E[A_j^(k) | s_j, a_j, s_k] != A(s_j, a_j), the path
      from (s_j, a_j) to s_k (and V(s_k)) is correlated with g(s_k). Measured: exact 1.2, uncorrected 33.7,
      truncated 46.8 standard errors (both about 170 times the eq. (6) term); action dependence 2.6
      (truncated) vs 9.6 (uncorrected) standard errors. Instances 1-3 and another sampling seed: exact
      0.8-2.7, uncorrected 34-38, truncated 47-53; action dependence 1.4-4.2 vs 8.9-12.6.
    """
    case = instance(0)
    n_episodes, eta = 60_000, case["eta"]
    ids, states, actions = samples = sample_episodes(case["cmdp"], case["adapted"], n_episodes, np.random.default_rng(1))
    sampled, penalised = monte_carlo_advantages(case, samples), case["penalised"][states, actions]
    target = sum(population_estimator(case, continuation=case["adapted"], gamma_w=1.0))

    def standard_errors_off(weights: np.ndarray) -> float:
        mean, error = estimate(case, samples, weights, n_episodes)
        return float(np.max(np.abs(mean - target) / error))

    exact = standard_errors_off(eq6_weights(case["outer"][states, actions], penalised, eta, ids, 1.0))
    uncorrected = standard_errors_off(eq6_weights(sampled, penalised, eta, ids, 1.0))
    truncated = standard_errors_off(eq6_weights(sampled, penalised, eta, ids, 1.0, trace_decay=1.0))
    assert exact < 4.0
    assert min(uncorrected, truncated) > 15.0

    backward = episode_backward_sums(sampled, ids, 1.0)
    truncated_sums = backward - sampled * episode_backward_sums(np.ones_like(sampled), ids, 1.0)
    dependence = {}
    for name, sums in (("uncorrected", backward), ("truncated", truncated_sums)):
        mean, error = action_dependence(case, samples, sums, n_episodes)
        dependence[name] = float(np.max(np.abs(mean) / error))
    assert dependence["truncated"] < 4.0 and dependence["uncorrected"] > 6.0


# ---------------------------------------------------------------------------------------------- hand-made
def test_weights_of_a_hand_made_two_episode_sequence():
    """
    Episode 0: A = (1, 2, -1), episode 1: A = (3, -2); X = (0.5, -1, 2 | 1, 4), eta = 2, gamma = 0.5.
    C = (0, 0.5 * 1, 0.25 * 1 + 0.5 * 2 | 0 (reset at the boundary), 0.5 * 3) = (0, 0.5, 1.25 | 0, 1.5);
    w = A + X C / eta = (1, 2 - 0.25, -1 + 1.25 | 3, -2 + 3) = (1, 1.75, 0.25 | 3, 1).
    """
    advantages = np.array([1.0, 2.0, -1.0, 3.0, -2.0])
    penalised = np.array([0.5, -1.0, 2.0, 1.0, 4.0])
    ids = np.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(episode_backward_sums(advantages, ids, 0.5), [0.0, 0.5, 1.25, 0.0, 1.5])
    np.testing.assert_allclose(eq6_weights(advantages, penalised, 2.0, ids, 0.5), [1.0, 1.75, 0.25, 3.0, 1.0])
    # gamma = 1: C = (0, 1, 3 | 0, 3), w = (1, 2 - 0.5, -1 + 3 | 3, -2 + 6)
    np.testing.assert_allclose(eq6_weights(advantages, penalised, 2.0, ids, 1.0), [1.0, 1.5, 2.0, 3.0, 4.0])
    # the same episodes interleaved as two environments of a VecEnv (time-major): the same weight per sample
    interleaved = np.array([0, 3, 1, 4, 2])
    np.testing.assert_allclose(
        eq6_weights(advantages[interleaved], penalised[interleaved], 2.0, ids[interleaved], 0.5),
        [1.0, 3.0, 1.75, 1.0, 0.25],
    )
    with pytest.raises(ValueError, match="eta"):
        eq6_weights(advantages, penalised, 0.0, ids, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        episode_backward_sums(advantages, ids, 1.5)


def test_truncated_advantages_of_a_hand_made_two_episode_sequence():
    """
    The sequence above with ``trace_decay``: C_k = sum_{j<k} gamma^(k-j) (A_j - (gamma lambda)^(k-j) A_k).
    lambda = 1, gamma = 0.5: episode 0: C_1 = 0.5 (1 - 0.5 * 2) = 0, C_2 = 0.25 (1 + 0.25) + 0.5 (2 + 0.5) = 1.5625;
    episode 1: C_1 = 0.5 (3 + 0.5 * 2) = 2; w = A + X C / 2 = (1, 2, -1 + 1.5625 | 3, -2 + 4).
    lambda = 0.5: C = (0, 0.5 (1 - 0.25 * 2), 0.25 (1 + 0.0625) + 0.5 (2 + 0.25) | 0, 0.5 (3 + 0.5))
    = (0, 0.25, 1.390625 | 0, 1.75); w = (1, 2 - 0.125, -1 + 1.390625 | 3, -2 + 3.5). lambda = 0: no change.
    """
    advantages = np.array([1.0, 2.0, -1.0, 3.0, -2.0])
    penalised = np.array([0.5, -1.0, 2.0, 1.0, 4.0])
    ids = np.array([0, 0, 0, 1, 1])
    interleaved = np.array([0, 3, 1, 4, 2])  # two environments of a VecEnv, time-major
    for trace_decay, expected in (
        (1.0, [1.0, 2.0, 0.5625, 3.0, 2.0]),
        (0.5, [1.0, 1.875, 0.390625, 3.0, 1.5]),
        (0.0, eq6_weights(advantages, penalised, 2.0, ids, 0.5)),
    ):
        np.testing.assert_allclose(eq6_weights(advantages, penalised, 2.0, ids, 0.5, trace_decay), expected)
        shuffled = eq6_weights(advantages[interleaved], penalised[interleaved], 2.0, ids[interleaved], 0.5, trace_decay)
        np.testing.assert_allclose(shuffled, np.asarray(expected)[interleaved])
    # the identity A_j - (gamma lambda)^(k-j) A_k = truncated advantage, on Monte-Carlo returns with a baseline b
    rewards, baseline, gamma = np.array([1.0, -2.0, 0.5, 3.0]), np.array([0.3, -1.0, 2.0, 0.7]), 0.9
    returns = np.array([sum(gamma**t * rewards[k + t] for t in range(4 - k)) for k in range(4)])
    mc = returns - baseline
    truncated = sum(gamma**t * rewards[t] for t in range(3)) + gamma**3 * baseline[3] - baseline[0]
    np.testing.assert_allclose(mc[0] - gamma**3 * mc[3], truncated)
    with pytest.raises(ValueError, match="trace_decay"):
        eq6_weights(advantages, penalised, 2.0, ids, 0.5, trace_decay=1.5)


def test_penalised_advantages_are_in_the_units_of_adapt_on_rollout():
    """Centred A divided by its (unbiased) std, minus u . centred A_c, as adapt_on_rollout forms the exponent."""
    advantages = np.array([1.0, 3.0, 5.0, 7.0])  # mean 4, unbiased std sqrt(20 / 3)
    cost_advantages = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [2.0, 3.0]])  # means 2, 1
    expected = (advantages - 4.0) / np.sqrt(20.0 / 3.0) - (cost_advantages - [2.0, 1.0]) @ [0.5, 2.0]
    np.testing.assert_allclose(penalised_advantages(advantages, cost_advantages, np.array([0.5, 2.0])), expected, rtol=1e-7)
    unnormalised = penalised_advantages(advantages, cost_advantages, np.array([0.5, 2.0]), normalize_advantage=False)
    np.testing.assert_allclose(unnormalised, advantages - 4.0 - (cost_advantages - [2.0, 1.0]) @ [0.5, 2.0])


def test_rollout_episode_ids_follow_the_episode_starts():
    """Two environments, flattened time-major: env 0 starts episodes at steps 0 and 2, env 1 at steps 1 and 3
    (its first episode runs over from a previous rollout)."""
    buffer = CostRolloutBuffer(4, spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)), "cpu", n_envs=2, n_costs=1)
    buffer.episode_starts = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    rollout = RolloutData.from_buffer(buffer, [], [], [], estimator="gae")
    # env 0: steps (0, 1) and (2, 3); env 1: step 0, steps (1, 2), step 3; samples in the order (step, env)
    assert rollout.episode_ids.dtype == np.int64
    np.testing.assert_array_equal(rollout.episode_ids, [0, 2, 0, 3, 1, 3, 1, 4])


# ---------------------------------------------------------------------------------------------- SafeMetaDual
SMALL: dict[str, Any] = dict(cost_limit=1e6, meta_batch_size=2, n_steps=100, fit_steps=5, n_dual_steps=5)


def run_one_iteration(meta_gradient: str) -> tuple[SafeMetaDual, dict[str, Any]]:
    """One meta step (no task violates a huge limit), recording its inputs and the weights of the surrogate."""
    model = SafeMetaDual("MlpPolicy", make_env(), seed=0, meta_gradient=meta_gradient, **SMALL)
    record: dict[str, Any] = {"weights": []}
    meta_step, samples = model._meta_step, model._samples

    def spy_meta_step(adapted_rollouts, meta_rollouts, violating=None):
        record["rollouts"], record["adaptations"] = adapted_rollouts, list(model.adaptations)
        return meta_step(adapted_rollouts, meta_rollouts, violating)

    def spy_samples(rollout, weights):
        record["weights"].append(np.array(weights))
        return samples(rollout, weights)

    model._meta_step, model._samples = spy_meta_step, spy_samples  # type: ignore[method-assign]
    model.learn(1)
    return model, record


def test_eq6_meta_iteration_uses_the_eq6_weights_and_differs_from_alg4():
    alg4_model, alg4 = run_one_iteration("alg4")
    eq6_model, eq6 = run_one_iteration("eq6")
    assert len(eq6["rollouts"]) == len(eq6["adaptations"]) == SMALL["meta_batch_size"]
    for alg4_rollout, eq6_rollout, adaptation, alg4_weights, eq6_weights_used in zip(
        alg4["rollouts"], eq6["rollouts"], eq6["adaptations"], alg4["weights"], eq6["weights"], strict=True
    ):
        # same seed: everything before the meta step is identical
        np.testing.assert_array_equal(alg4_rollout.advantages, eq6_rollout.advantages)
        np.testing.assert_array_equal(alg4_weights, alg4_rollout.advantages)
        # 2 environments x 100 steps of 100-step episodes: one episode per environment, interleaved
        np.testing.assert_array_equal(np.bincount(eq6_rollout.episode_ids), [100, 100])
        penalised = penalised_advantages(eq6_rollout.advantages, eq6_rollout.cost_advantages, adaptation.u)
        expected = eq6_weights(eq6_rollout.advantages, penalised, adaptation.eta, eq6_rollout.episode_ids, eq6_model.gamma)
        np.testing.assert_allclose(eq6_weights_used, expected, rtol=1e-6, atol=1e-6)
        assert np.max(np.abs(eq6_weights_used - alg4_weights)) > 1e-2 * np.max(np.abs(alg4_weights))
    differs = [
        not th.equal(value, eq6_model.policy.state_dict()[key]) for key, value in alg4_model.policy.state_dict().items()
    ]
    assert any(differs)


def test_meta_gradient_option_is_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match=r"meta_gradient must be one of \('alg4', 'eq6'\)"):
        SafeMetaDual("MlpPolicy", make_env(), meta_gradient="full", **SMALL)
    model = SafeMetaDual("MlpPolicy", make_env(), seed=0, meta_gradient="eq6", **SMALL)
    assert SafeMetaDual("MlpPolicy", make_env(), **SMALL).meta_gradient == "alg4"  # the default
    model.save(tmp_path / "eq6.zip")
    loaded = SafeMetaDual.load(tmp_path / "eq6.zip", env=make_env())
    assert loaded.meta_gradient == "eq6" and loaded.adaptations == []
