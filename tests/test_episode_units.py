"""
The units of the surrogate (docs/modules/safe_adapter.md, "Units"; the paper's problem (1)): ``cost_limit`` d
is an undiscounted episode cost, and

    g_i(theta) = Jc_i(pi_phi) + H * E_w[ratio * A_ci] + lambda_ci * E_w[KL(pi_theta || pi_phi)]

is the first-order model of the *episode* cost of pi_theta around phi when Jc is the mean undiscounted
episode cost, H the mean episode length, A_c the undiscounted (time-indexed) cost advantages and the
weights uniform over every time step of the episodes. This is the finite-horizon performance
difference lemma: for episodes of fixed length T,

    J_ep(pi') - J_ep(pi) = sum_{t<T} E_{s_t ~ pi'} E_{a ~ pi'}[A^pi_t(s_t, a)]
                         = T * E_{s ~ dbar^pi, a ~ pi'}[A^pi_t(s, a)] + O(|pi' - pi|^2),

with dbar^pi(t, s) = d^pi_t(s) / T the time-averaged state distribution of pi. With H = 1/(1 - gamma),
the discounted Jc, the discounted advantages and the normalised discounted visitation the same code is
the paper's constraint of problem (1).

Part 1 checks this exactly on a random tabular CMDP (finite-horizon dynamic programme written here in
NumPy): a categorical SB3 policy over one-hot states, with free logits, and an exact batch that
enumerates every (t, s, a) with weight d_t(s) pi(a|s) / T, so sample averages are exact expectations.
Part 2 checks that a rollout collected by SafeAdapter produces Jc and H in those units.
"""

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv
from tabular_helpers import exact_batch, tabular_policy

from sb3_safemeta import SafeAdapter
from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.common.adaptation.dual import AdaptationParams
from sb3_safemeta.common.adaptation.parametric import _Surrogate
from sb3_safemeta.tabular import TabularCMDP, random_cmdp, softmax_policy

N_STATES, N_ACTIONS, N_COSTS = 5, 3, 2
EPISODE_LENGTH = 12  # T of the finite-horizon problem
GAMMA = 0.8  # discounted form: 1 / (1 - gamma) = 5, deliberately different from T
N_DIRECTIONS = 4
FD_STEP = 1e-4
# Tolerances of the gradient checks (relative to the largest derivative). The reference is always float64:
# central differences of the float64 dynamic programme, whose error is truncation, FD_STEP^2 * J'''/6,
# measured 2e-9 to 1e-8 relative (it grows 100x for FD_STEP = 1e-3, as h^2 should), with rounding error
# ~ 1e-16 * J / FD_STEP ~ 1e-11 below it. float64 policy: the autograd side is exact to ~1e-14, so the
# observed mismatch (<= 1e-8 over 6 seeds) is the FD truncation, and 1e-6 leaves a 100x margin.
# float32 policy (SB3's default dtype): log-probabilities, ratios and the weighted sum over the
# T * S * A = 180 samples are float32 (eps 1.2e-7); observed mismatch 2e-8 to 2e-7 over 6 seeds: 1e-5.
# Every negative control misses by >= 1.9e-2 (H = T - 1: exactly 1/T = 8.3e-2), > 1000x the tolerance.
TOLERANCE = {th.float64: 1e-6, th.float32: 1e-5}


# --------------------------------------------------------------------------------------------------
# exact finite-horizon oracle


def finite_horizon(cmdp: TabularCMDP, policy: np.ndarray, horizon: int, signal: np.ndarray, gamma: float = 1.0):
    """
    Time-indexed dynamic programme of the episode of length ``horizon`` (gamma = 1: undiscounted):
    V_T = 0, Q_t = signal + gamma P V_{t+1}, V_t(s) = sum_a pi(a|s) Q_t(s, a), A_t = Q_t - V_t and the
    state distributions d_0 = rho, d_{t+1} = d_t P_pi.

    :param signal: per-step reward or cost, (S, A)
    :return: J = rho . V_0, A (T, S, A), d (T, S)
    """
    n_states, n_actions = policy.shape
    q_values = np.empty((horizon, n_states, n_actions))
    values = np.zeros((horizon + 1, n_states))
    for t in reversed(range(horizon)):
        q_values[t] = signal + gamma * cmdp.P @ values[t + 1]
        values[t] = np.sum(policy * q_values[t], axis=1)
    distributions = np.empty((horizon, n_states))
    distributions[0] = cmdp.rho
    transition = cmdp.transition_matrix(policy)
    for t in range(1, horizon):
        distributions[t] = distributions[t - 1] @ transition
    return float(cmdp.rho @ values[0]), q_values - values[:horizon, :, None], distributions


def episode_cost(cmdp: TabularCMDP, policy: np.ndarray, horizon: int = EPISODE_LENGTH) -> np.ndarray:
    """:return: J_ep_c(pi), the expected undiscounted cost of an episode of length ``horizon``, (p,)"""
    return np.array([finite_horizon(cmdp, policy, horizon, cmdp.c[i])[0] for i in range(cmdp.n_costs)])


def tensor(array, dtype):
    return th.as_tensor(np.asarray(array), dtype=dtype)


def episode_batch(cmdp: TabularCMDP, policy: np.ndarray, dtype, advantage_gamma: float = 1.0) -> AdaptationBatch:
    """
    Every (t, s, a) of the episode once, with weight d_t(s) pi(a|s) / T (sums to one), advantages
    A_t(s, a) and cost advantages A_c,t(s, a) (undiscounted unless ``advantage_gamma`` < 1, a control).
    """
    horizon = EPISODE_LENGTH
    _, advantages, distributions = finite_horizon(cmdp, policy, horizon, cmdp.r, advantage_gamma)
    cost_advantages = np.stack(
        [finite_horizon(cmdp, policy, horizon, cmdp.c[i], advantage_gamma)[1] for i in range(cmdp.n_costs)], axis=-1
    )  # (T, S, A, p)
    weights = distributions[:, :, None] * policy[None] / horizon
    n_states, n_actions = policy.shape
    observations = np.tile(np.repeat(np.eye(n_states), n_actions, axis=0), (horizon, 1))
    return AdaptationBatch(
        observations=tensor(observations, th.float32),  # one-hot: exact in float32 (SB3 casts to float)
        actions=th.as_tensor(np.tile(np.arange(n_actions), horizon * n_states)),
        advantages=tensor(advantages.ravel(), dtype),
        cost_advantages=tensor(cost_advantages.reshape(-1, cmdp.n_costs), dtype),
        weights=tensor(weights.ravel(), dtype),
    )


# --------------------------------------------------------------------------------------------------
# the policy: free logits per state, logits(s, a) = W[a, s] + b[a] (tabular_helpers.tabular_policy)


def logits_of(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """:return: the (S, A) logits of the policy with parameters (W, b), in float64"""
    return weight.T + bias


def instance(seed: int):
    """A random CMDP, base parameters phi = (W, b) (float32-representable, so both dtypes hold the same phi)
    and random directions v in parameter space."""
    rng = np.random.default_rng(seed)
    cmdp = random_cmdp(N_STATES, N_ACTIONS, N_COSTS, gamma=GAMMA, seed=seed)
    weight = rng.normal(size=(N_ACTIONS, N_STATES)).astype(np.float32).astype(np.float64)
    bias = rng.normal(size=N_ACTIONS).astype(np.float32).astype(np.float64)
    directions = [(rng.normal(size=weight.shape), rng.normal(size=bias.shape)) for _ in range(N_DIRECTIONS)]
    return cmdp, weight, bias, directions


def surrogate_derivatives(policy, batch: AdaptationBatch, horizon: float, directions) -> np.ndarray:
    """
    d/d eps of H * E_w[ratio * A_ci] at theta = phi + eps v, eps = 0, by autograd through
    ``_Surrogate.terms()``: the first-order part of g_i.

    :return: (n_directions, p)
    """
    parameters = [policy.action_net.weight, policy.action_net.bias]
    surrogate = _Surrogate(policy, parameters, batch, horizon)
    _, expected_cost_advantage, _ = surrogate.terms()
    derivatives = np.empty((len(directions), len(expected_cost_advantage)))
    for i in range(len(expected_cost_advantage)):
        grad_weight, grad_bias = th.autograd.grad(horizon * expected_cost_advantage[i], parameters, retain_graph=True)
        for k, (v_weight, v_bias) in enumerate(directions):
            derivatives[k, i] = float(np.sum(grad_weight.double().numpy() * v_weight) + grad_bias.double().numpy() @ v_bias)
    return derivatives


def finite_differences(cost, weight, bias, directions, step: float = FD_STEP) -> np.ndarray:
    """Central differences of ``cost(policy)`` (a float64 (p,) function) along each direction: (n_directions, p)."""

    def at(sign: float, v_weight, v_bias):
        return cost(softmax_policy(logits_of(weight + sign * step * v_weight, bias + sign * step * v_bias)))

    return np.array([(at(1.0, *v) - at(-1.0, *v)) / (2.0 * step) for v in directions])


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - reference)) / np.max(np.abs(reference)))


# --------------------------------------------------------------------------------------------------
# part 1: exact checks on tabular CMDPs


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surrogate_value_at_phi_is_the_episode_cost(seed, dtype):
    """
    g(phi) = J_ep_c(phi): ratio 1, KL 0 and E_w[A_c] = 0 under the episode weights (sum_a pi A_c,t = 0 for
    every t and s). Observed: exact to 4e-16 (float64) and 2e-9 (float32; only E_w[A_c] is float32).
    """
    cmdp, weight, bias, _ = instance(seed)
    reference = softmax_policy(logits_of(weight, bias))
    start_cost = episode_cost(cmdp, reference)
    policy = tabular_policy(weight.T, bias, dtype)
    params = AdaptationParams.create(1.0, [0.7, 2.0], start_cost, 0.0, 1.0 - 1.0 / EPISODE_LENGTH, N_COSTS)
    surrogate = _Surrogate(policy, list(policy.action_net.parameters()), episode_batch(cmdp, reference, dtype), EPISODE_LENGTH)
    surrogate_cost, _, kl = surrogate.evaluate(start_cost, params)
    np.testing.assert_allclose(surrogate_cost, start_cost, rtol=TOLERANCE[dtype])
    assert abs(kl) <= TOLERANCE[dtype]
    assert float(surrogate.batch.weights.sum()) == pytest.approx(1.0, rel=TOLERANCE[dtype])
    # control: E_w[A_c] = 0 needs weights of the form x(t, s) pi(a|s); uniform weights over (t, s, a)
    # miss J_ep_c(phi) by 7% to 30% (8 seeds)
    uniform = episode_batch(cmdp, reference, dtype)
    uniform.weights = th.full_like(uniform.weights, 1.0 / len(uniform.weights))
    control = _Surrogate(policy, list(policy.action_net.parameters()), uniform, EPISODE_LENGTH)
    assert np.max(np.abs(control.evaluate(start_cost, params)[0] / start_cost - 1.0)) > 100 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_episode_unit_gradient_matches_finite_differences_of_episode_cost(seed, dtype):
    """
    grad_theta [T * E_w[ratio * A_c]] at phi, with w = d_t(s) pi(a|s) / T and undiscounted time-indexed
    A_c,t, equals the gradient of the exact undiscounted episode cost J_ep_c (central differences of the
    dynamic programme) along random directions in parameter space: g is the first-order model of the
    episode cost. Negative controls on the same numbers: H = T - 1, and advantages discounted within the
    episode (gamma = 0.8, the approximation SafeAdapter makes with its default gamma), both miss by far
    more than the tolerance.
    """
    cmdp, weight, bias, directions = instance(seed)
    reference = softmax_policy(logits_of(weight, bias))
    policy = tabular_policy(weight.T, bias, dtype)
    batch = episode_batch(cmdp, reference, dtype)
    expected = finite_differences(lambda pi: episode_cost(cmdp, pi), weight, bias, directions)
    assert np.max(np.abs(expected)) > 0.1  # the episode cost does depend on the logits

    analytic = surrogate_derivatives(policy, batch, EPISODE_LENGTH, directions)
    assert relative_error(analytic, expected) <= TOLERANCE[dtype]

    # negative controls: the check has teeth
    wrong_horizon = surrogate_derivatives(policy, batch, EPISODE_LENGTH - 1, directions)
    assert relative_error(wrong_horizon, expected) > 100 * TOLERANCE[dtype]  # off by 1/T ~ 8%
    discounted_advantages = surrogate_derivatives(
        policy, episode_batch(cmdp, reference, dtype, advantage_gamma=GAMMA), EPISODE_LENGTH, directions
    )
    assert relative_error(discounted_advantages, expected) > 100 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discounted_gradient_matches_finite_differences_of_discounted_cost(seed, dtype):
    """
    The paper's form: H = 1/(1 - gamma), discounted advantages, weights nu(s) pi(a|s) with nu the
    normalised discounted visitation (``TabularCMDP.evaluate``; sums to one) give the gradient of the
    discounted Jc = rho . V_c (central differences of ``cmdp.Jc``). Negative control: the discounted
    weights and advantages with the episode-unit H = T (12, not 5) do not match the discounted cost,
    nor the episode-unit batch with H = 1/(1 - gamma) the episode cost.
    """
    cmdp, weight, bias, directions = instance(seed)
    reference = softmax_policy(logits_of(weight, bias))
    assert cmdp.evaluate(reference).state_visitation.sum() == pytest.approx(1.0)
    policy = tabular_policy(weight.T, bias, dtype)
    batch = exact_batch(cmdp, reference, dtype)
    horizon = 1.0 / (1.0 - cmdp.gamma)
    expected = finite_differences(cmdp.Jc, weight, bias, directions)
    assert np.max(np.abs(expected)) > 0.1

    analytic = surrogate_derivatives(policy, batch, horizon, directions)
    assert relative_error(analytic, expected) <= TOLERANCE[dtype]

    # negative controls: mixing the two unit systems fails
    assert relative_error(surrogate_derivatives(policy, batch, EPISODE_LENGTH, directions), expected) > 0.5
    episode_expected = finite_differences(lambda pi: episode_cost(cmdp, pi), weight, bias, directions)
    assert relative_error(analytic, episode_expected) > 100 * TOLERANCE[dtype]
    mixed = surrogate_derivatives(policy, episode_batch(cmdp, reference, dtype), horizon, directions)
    assert relative_error(mixed, episode_expected) > 100 * TOLERANCE[dtype]


@pytest.mark.parametrize("seed", [0, 1])
def test_surrogate_is_a_first_order_model_of_the_episode_cost(seed):
    """
    ``_Surrogate.evaluate`` itself (Jc + H * E_w[ratio A_c], lambda_c = 0) at theta = phi + eps v against
    the exact J_ep_c(pi_theta): the error is O(eps^2), i.e. it drops by ~4 when eps halves (eps = 1e-2 and
    5e-3; measured 3.93-4.11 on these seeds, accepted 3.5-4.5; a larger eps lets the third-order term in,
    e.g. 5.7 for seed 3 at eps = 2e-2). With H = T - 1 the error is O(eps), it halves (measured 1.9-2.1):
    the control. float64 policy: the errors are 4e-8 to 1e-5, far above float64 noise (~1e-15).
    """
    cmdp, weight, bias, directions = instance(seed)
    reference = softmax_policy(logits_of(weight, bias))
    start_cost = episode_cost(cmdp, reference)
    batch = episode_batch(cmdp, reference, th.float64)

    def model_error(horizon: float, eps: float, direction) -> np.ndarray:
        policy = tabular_policy(weight.T, bias, th.float64)
        params = AdaptationParams.create(1.0, 0.0, start_cost, 0.0, 1.0 - 1.0 / horizon, N_COSTS)
        surrogate = _Surrogate(policy, list(policy.action_net.parameters()), batch, horizon)
        new_weight, new_bias = weight + eps * direction[0], bias + eps * direction[1]
        with th.no_grad():
            policy.action_net.weight.copy_(tensor(new_weight, th.float64))
            policy.action_net.bias.copy_(tensor(new_bias, th.float64))
        surrogate_cost = surrogate.evaluate(start_cost, params)[0]
        return np.abs(surrogate_cost - episode_cost(cmdp, softmax_policy(logits_of(new_weight, new_bias))))

    for direction in directions:
        errors = [model_error(EPISODE_LENGTH, eps, direction) for eps in (1e-2, 5e-3)]
        assert np.all(errors[1] > 1e-9)  # a genuine second-order term, not float noise
        assert np.all((3.5 < errors[0] / errors[1]) & (errors[0] / errors[1] < 4.5))
        control = [model_error(EPISODE_LENGTH - 1, eps, direction) for eps in (1e-2, 5e-3)]
        assert np.all(control[0] / control[1] < 3.0)


# --------------------------------------------------------------------------------------------------
# part 2: a rollout collected by SafeAdapter


class FixedLengthEnv(gym.Env):
    """
    Episodes of exactly ``length`` steps (terminated). Costs of step t = 1, 2, ...: channel 0 is 1
    (so its episode cost is the episode length), channel 1 is t + action (action in {0, 1}).
    """

    def __init__(self, length: int):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,))
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        cost = np.array([1.0, self.t + int(action)])
        observation = np.array([self.t / self.length], dtype=np.float32)
        return observation, 1.0, self.t >= self.length, False, {"cost": cost}


LENGTHS = (3, 5)
N_ROLLOUT_STEPS = 15  # a multiple of both lengths: every sample lies in a completed episode


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_rollout_horizon_and_episode_cost_are_in_episode_units(gamma):
    """
    Two envs with episodes of 3 and 5 steps, 15 steps each: 5 + 3 = 8 completed episodes, 30 samples.
    H must be the mean length over EPISODES (30 / 8 = 3.75, not the per-env or per-sample mean 4), so
    that H * (uniform mean over the samples) = the mean sum over an episode; Jc the mean undiscounted
    episode cost (by hand from the recorded actions), whatever the algorithm's gamma. The Monte-Carlo
    cost returns are the cost-to-go discounted with the algorithm's gamma (undiscounted for gamma = 1).
    """
    env = DummyVecEnv([functools.partial(FixedLengthEnv, length) for length in LENGTHS])
    model = SafeAdapter(
        "MlpPolicy", env, cost_limit=[100.0, 100.0], n_steps=N_ROLLOUT_STEPS, gamma=gamma,
        advantage_estimator="mc", seed=0,
    )  # fmt: skip
    model._setup_learn(total_timesteps=1)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    buffer = model.rollout_buffer
    rollout = model.rollout_data("mc")

    # by hand, from the actions the policy took
    actions = buffer.actions[..., 0]  # (n_steps, n_envs)
    costs, lengths = [], []
    cost_to_go = np.empty((*actions.shape, 2))
    for index, length in enumerate(LENGTHS):
        steps = np.arange(1, length + 1)
        for episode in actions[:, index].reshape(-1, length):
            costs.append([length, float(np.sum(steps + episode))])
            lengths.append(length)
        per_step = (np.tile(steps, N_ROLLOUT_STEPS // length) + actions[:, index]).reshape(-1, length)
        discounts = gamma ** np.arange(length)
        to_go = [[per_step[e, t:] @ discounts[: length - t] for t in range(length)] for e in range(len(per_step))]
        cost_to_go[:, index, 1] = np.ravel(to_go)
        cost_to_go[:, index, 0] = np.tile([discounts[: length - t].sum() for t in range(length)], N_ROLLOUT_STEPS // length)
    costs = np.array(costs)
    assert 0 < actions.sum() < actions.size  # both actions occur: the action-dependent cost is exercised

    assert rollout.n_episodes == 8
    assert rollout.horizon == pytest.approx(np.mean(lengths)) == pytest.approx(3.75)
    np.testing.assert_allclose(np.sort(rollout.episode_costs, axis=0), np.sort(costs, axis=0))
    np.testing.assert_allclose(rollout.episode_cost, costs.mean(axis=0))
    assert rollout.episode_cost[0] == pytest.approx(rollout.horizon)  # channel 0 counts steps
    # the mapping: uniform weights over all N samples times H = the mean per-episode sum
    batch = rollout.to_batch()
    n_samples = N_ROLLOUT_STEPS * len(LENGTHS)
    np.testing.assert_allclose(batch.weights.numpy(), 1.0 / n_samples)
    assert n_samples == pytest.approx(rollout.horizon * rollout.n_episodes)
    per_sample_costs = buffer.costs.reshape(n_samples, 2)
    np.testing.assert_allclose(rollout.horizon * batch.weights.numpy() @ per_sample_costs, rollout.episode_cost)
    np.testing.assert_allclose(buffer.cost_returns, cost_to_go, rtol=1e-6)
