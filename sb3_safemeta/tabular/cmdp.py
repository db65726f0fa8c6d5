"""
Exact tabular constrained MDPs (the model half of the oracle; :mod:`sb3_safemeta.tabular.exact` holds the
exact A^s and meta-training on top of it).

Every quantity of the paper has an exact counterpart here, computed by linear algebra:

- value functions: V^pi = (I - gamma P_pi)^-1 r_pi, Q^pi = r + gamma P V^pi, A^pi = Q^pi - V^pi;
- objectives: J(pi) = rho . V^pi and J_ci(pi) = rho . V_ci^pi (discounted, as in the paper);
- the normalised discounted state visitation nu^pi(s) = (1 - gamma) sum_t gamma^t Pr(s_t = s),
  so that the performance difference lemma reads
  J(pi') - J(pi) = E_{s ~ nu^pi', a ~ pi'}[A^pi(s, a)] / (1 - gamma).

Conventions: P has shape (S, A, S) with P[s, a, s'] = Pr(s' | s, a); r is (S, A); c is (p, S, A)
for p cost channels; rho is the initial state distribution (S,); a policy is an (S, A) array of
action probabilities whose rows sum to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from sb3_safemeta.common.validation import check_finite

__all__ = [
    "PolicyEvaluation",
    "TabularCMDP",
    "TabularTaskFamily",
    "kl_per_state",
    "random_cmdp",
    "softmax_policy",
    "uniform_policy",
]

_ROW_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PolicyEvaluation:
    """
    Exact evaluation of one policy on a :class:`TabularCMDP` (p cost channels).

    :param J: discounted return rho . V, scalar
    :param Jc: discounted cost of each channel, shape (p,)
    :param V: reward value function, (S,)
    :param Vc: cost value functions, (p, S)
    :param Q: reward action values, (S, A)
    :param Qc: cost action values, (p, S, A)
    :param A: reward advantages Q - V, (S, A)
    :param Ac: cost advantages, (p, S, A)
    :param state_visitation: normalised discounted state visitation nu(s), (S,), sums to one
    """

    J: float
    Jc: np.ndarray
    V: np.ndarray
    Vc: np.ndarray
    Q: np.ndarray
    Qc: np.ndarray
    A: np.ndarray
    Ac: np.ndarray
    state_visitation: np.ndarray


class TabularCMDP:
    """
    A finite constrained MDP with exact evaluation.

    :param P: transition probabilities, shape (S, A, S), rows summing to one
    :param r: rewards, shape (S, A)
    :param c: costs, shape (p, S, A) (an (S, A) array is read as p = 1)
    :param rho: initial state distribution, shape (S,)
    :param gamma: discount factor in [0, 1)
    """

    def __init__(self, P: Any, r: Any, c: Any, rho: Any, gamma: float) -> None:
        P = check_finite(P, "P")
        r = check_finite(r, "r")
        c = check_finite(c, "c")
        rho = check_finite(rho, "rho")
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S), got {P.shape}")
        n_states, n_actions = P.shape[:2]
        if np.any(P < 0) or not np.allclose(P.sum(axis=2), 1.0, atol=_ROW_SUM_TOLERANCE):
            raise ValueError("P must be non-negative with P[s, a, :] summing to 1 for every (s, a)")
        if r.shape != (n_states, n_actions):
            raise ValueError(f"r must have shape (S, A) = {(n_states, n_actions)}, got {r.shape}")
        if c.ndim == 2:
            c = c[None]
        if c.ndim != 3 or c.shape[1:] != (n_states, n_actions):
            raise ValueError(f"c must have shape (p, S, A) with (S, A) = {(n_states, n_actions)}, got {c.shape}")
        if rho.shape != (n_states,) or np.any(rho < 0) or not np.isclose(rho.sum(), 1.0, atol=_ROW_SUM_TOLERANCE):
            raise ValueError(f"rho must be a probability vector of shape ({n_states},)")
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        self.P, self.r, self.c, self.rho, self.gamma = P, r, c, rho, float(gamma)

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def n_costs(self) -> int:
        return self.c.shape[0]

    def check_policy(self, policy: Any, name: str = "policy") -> np.ndarray:
        """
        :param policy: candidate (S, A) policy
        :param name: parameter name used in error messages
        :return: the policy as a float array, after validation
        """
        policy = check_finite(policy, name)
        if policy.shape != (self.n_states, self.n_actions):
            raise ValueError(f"{name} must have shape (S, A) = {(self.n_states, self.n_actions)}, got {policy.shape}")
        if np.any(policy < 0) or not np.allclose(policy.sum(axis=1), 1.0, atol=_ROW_SUM_TOLERANCE):
            worst = float(np.max(np.abs(policy.sum(axis=1) - 1.0)))
            raise ValueError(f"{name} must be non-negative with rows summing to 1 (largest row-sum error {worst:.3g})")
        return policy

    def transition_matrix(self, policy: np.ndarray) -> np.ndarray:
        """:return: P_pi[s, s'] = sum_a pi(a|s) P[s, a, s'], shape (S, S)"""
        return np.einsum("sa,sat->st", policy, self.P)

    def evaluate(self, policy: Any) -> PolicyEvaluation:
        """
        Evaluate a policy exactly: one LU factorisation of (I - gamma P_pi) serves every channel.

        :param policy: (S, A) action probabilities
        :return: J, Jc, V, Vc, Q, Qc, A, Ac and the state visitation
        """
        policy = self.check_policy(policy)
        system = np.eye(self.n_states) - self.gamma * self.transition_matrix(policy)
        lu = scipy.linalg.lu_factor(system)
        signals = np.concatenate([self.r[None], self.c], axis=0)  # (1 + p, S, A)
        expected = np.einsum("sa,ksa->sk", policy, signals)  # r_pi and c_pi, (S, 1 + p)
        values = scipy.linalg.lu_solve(lu, expected).T  # (1 + p, S)
        q_values = signals + self.gamma * np.einsum("sat,kt->ksa", self.P, values)
        advantages = q_values - values[:, :, None]
        # nu^T (I - gamma P_pi) = (1 - gamma) rho^T  <=>  solve the transposed system
        visitation = (1.0 - self.gamma) * scipy.linalg.lu_solve(lu, self.rho, trans=1)
        returns = values @ self.rho
        return PolicyEvaluation(
            J=float(returns[0]),
            Jc=returns[1:].copy(),
            V=values[0],
            Vc=values[1:],
            Q=q_values[0],
            Qc=q_values[1:],
            A=advantages[0],
            Ac=advantages[1:],
            state_visitation=visitation,
        )

    def J(self, policy: Any) -> float:
        """:return: the discounted return of ``policy``"""
        return self.evaluate(policy).J

    def Jc(self, policy: Any) -> np.ndarray:
        """:return: the discounted cost of every channel, shape (p,)"""
        return self.evaluate(policy).Jc

    def visitation(self, policy: Any) -> np.ndarray:
        """:return: the normalised discounted state-action visitation nu(s) pi(a|s), shape (S, A)"""
        policy = self.check_policy(policy)
        return self.evaluate(policy).state_visitation[:, None] * policy

    def optimal_values(self, signal: np.ndarray, maximize: bool = True, tol: float = 1e-12) -> np.ndarray:
        """
        Optimal (or pessimal) value function of an (S, A) signal by value iteration.

        :param signal: per-step reward or cost, (S, A)
        :param maximize: max over policies (else min)
        :param tol: sup-norm stopping tolerance
        :return: V*, shape (S,)
        """
        values = np.zeros(self.n_states)
        reduce = np.max if maximize else np.min
        for _ in range(100_000):
            new_values = reduce(signal + self.gamma * self.P @ values, axis=1)
            if np.max(np.abs(new_values - values)) < tol:
                return new_values
            values = new_values
        return values

    def advantage_bound(self, signal: np.ndarray) -> float:
        """
        An upper bound of max over ALL policies of ``|A^pi(s, a)|`` for a signal (the constant A^max of
        Lemma 1), from the optimal and pessimal value functions: for every pi,
        V_min <= V^pi <= V_max, so A^pi(s, a) = signal + gamma P V^pi - V^pi(s) lies in
        [signal + gamma P V_min - V_max(s), signal + gamma P V_max - V_min(s)].

        :param signal: per-step reward or cost, (S, A)
        :return: A^max
        """
        v_max = self.optimal_values(signal, maximize=True)
        v_min = self.optimal_values(signal, maximize=False)
        upper = signal + self.gamma * self.P @ v_max - v_min[:, None]
        lower = signal + self.gamma * self.P @ v_min - v_max[:, None]
        return float(max(np.max(upper), -np.min(lower)))

    def visitation_floor(self) -> float:
        """
        A lower bound eta of nu^pi(s) valid for EVERY policy and every state (Assumption 2 with
        S^v = S and alpha = 1): nu(s) = (1 - gamma) rho(s) + gamma sum_{s', a} nu(s') pi(a|s') P[s', a, s]
        >= (1 - gamma) rho(s) + gamma min_{s', a} P[s', a, s].

        :return: eta (0 when some state can be avoided, in which case the bound of Proposition 4 is void)
        """
        return float(np.min((1.0 - self.gamma) * self.rho + self.gamma * self.P.min(axis=(0, 1))))

    def anytime_safety_bounds(self) -> tuple[float, np.ndarray]:
        """
        The hyper-parameter bounds of Proposition 4 / Corollary 1, with S^v = S, alpha = 1,
        eta = :meth:`visitation_floor` and A^max from :meth:`advantage_bound`:
        lambda >= 4 gamma A^max / (eta alpha (1 - gamma)) and
        lambda_ci >= 4 gamma A_ci^max / (eta alpha (1 - gamma)^2).

        :return: (lambda bound, lambda_c bounds of shape (p,))
        """
        eta, alpha, gamma = self.visitation_floor(), 1.0, self.gamma
        if eta <= 0:
            raise ValueError("Assumption 2 fails for this CMDP: some state has zero visitation floor")
        lambda_bound = 4 * gamma * self.advantage_bound(self.r) / (eta * alpha * (1 - gamma))
        lambda_c_bound = np.array(
            [4 * gamma * self.advantage_bound(self.c[i]) / (eta * alpha * (1 - gamma) ** 2) for i in range(self.n_costs)]
        )
        return lambda_bound, lambda_c_bound


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """:return: the uniform (S, A) policy"""
    return np.full((n_states, n_actions), 1.0 / n_actions)


def kl_per_state(policy: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """
    :param policy: (S, A) policy pi
    :param reference: (S, A) policy pi_phi
    :return: KL(pi(.|s) || pi_phi(.|s)) for every state, (S,)
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(policy > 0, policy * (np.log(policy) - np.log(reference)), 0.0)
    return terms.sum(axis=1)


def random_cmdp(
    n_states: int,
    n_actions: int,
    n_costs: int = 1,
    gamma: float = 0.9,
    seed: int | None = None,
    uniform_mix: float = 0.0,
) -> TabularCMDP:
    """
    A random CMDP with dense transitions (every state reachable from every state, so the
    visitation floor of Assumption 2 is positive), rewards and costs uniform in [0, 1).

    :param n_states: S
    :param n_actions: A
    :param n_costs: p
    :param gamma: discount factor
    :param seed: random seed
    :param uniform_mix: weight of the uniform distribution mixed into every P[s, a, :]; it raises
        the visitation floor of Assumption 2 (and so lowers the bounds of Proposition 4)
    :return: the CMDP
    """
    if not 0.0 <= uniform_mix <= 1.0:
        raise ValueError(f"uniform_mix must be in [0, 1], got {uniform_mix!r}")
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    P = (1.0 - uniform_mix) * P + uniform_mix / n_states
    r = rng.uniform(size=(n_states, n_actions))
    c = rng.uniform(size=(n_costs, n_states, n_actions))
    rho = rng.dirichlet(np.ones(n_states))
    return TabularCMDP(P, r, c, rho, gamma)


class TabularTaskFamily:
    """
    A seeded distribution of tabular CMDP tasks with shared structure (P, rho, gamma) and
    task-specific rewards, costs and cost limits: the tabular counterpart of a meta-RL task
    distribution P(Gamma).

    Each task's reward is ``base_r + task_spread * noise`` (likewise the cost), so ``task_spread``
    controls the task variance of Theorem 1. The cost limit d of a task is placed between the cost
    of the safest policy and that of the uniform policy, so that problem (2) is feasible and the
    constraint binds.

    :param n_states: S
    :param n_actions: A
    :param n_costs: p
    :param gamma: discount factor
    :param task_spread: scale of the task-specific noise in r and c
    :param goal_reward: each task also draws a goal action; taking it earns this much extra reward
        in every state. This gives the family the structure meta-learning exploits (tasks agree on
        the costs and the shared reward, disagree on the goal), like the goal velocity or direction
        of the locomotion families
    :param cost_limit_range: d is drawn as safest + U(low, high) (uniform - safest), from the
        cost of the safest policy and of the uniform policy: below 1 the uniform policy is unsafe,
        above 1 it is safe
    :param seed: seed of the shared structure
    """

    def __init__(
        self,
        n_states: int = 6,
        n_actions: int = 3,
        n_costs: int = 1,
        gamma: float = 0.9,
        task_spread: float = 0.5,
        goal_reward: float = 0.0,
        cost_limit_range: tuple[float, float] = (0.5, 0.9),
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.n_states, self.n_actions, self.n_costs, self.gamma = n_states, n_actions, n_costs, gamma
        self.task_spread, self.goal_reward = float(task_spread), float(goal_reward)
        self.cost_limit_range = tuple(cost_limit_range)
        self.P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
        self.rho = rng.dirichlet(np.ones(n_states))
        self.base_r = rng.uniform(size=(n_states, n_actions))
        self.base_c = rng.uniform(size=(n_costs, n_states, n_actions))

    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[dict[str, Any]]:
        """
        :param n_tasks: number of tasks
        :param seed: seed of the task draw
        :return: tasks as dicts with keys ``r`` (S, A), ``c`` (p, S, A), ``cost_limit`` (p,) and ``goal``
        """
        rng = np.random.default_rng(seed)
        tasks = []
        for _ in range(int(n_tasks)):
            goal = rng.integers(self.n_actions)
            r = self.base_r + self.task_spread * rng.uniform(-1, 1, size=self.base_r.shape)
            r[:, goal] += self.goal_reward
            c = np.clip(self.base_c + self.task_spread * rng.uniform(-1, 1, size=self.base_c.shape), 0.0, None)
            cmdp = TabularCMDP(self.P, r, c, self.rho, self.gamma)
            uniform_cost = cmdp.Jc(uniform_policy(self.n_states, self.n_actions))
            safest = np.array([cmdp.optimal_values(c[i], maximize=False) @ self.rho for i in range(self.n_costs)])
            # d between the safest achievable cost and the uniform policy's: feasible and binding
            low, high = self.cost_limit_range
            cost_limit = safest + rng.uniform(low, high) * (uniform_cost - safest)
            tasks.append({"r": r, "c": c, "cost_limit": cost_limit, "goal": int(goal)})
        return tasks

    def cmdp(self, task: dict[str, Any]) -> TabularCMDP:
        """:return: the CMDP of a task"""
        return TabularCMDP(self.P, task["r"], task["c"], self.rho, self.gamma)


def softmax_policy(logits: np.ndarray) -> np.ndarray:
    """:return: the softmax policy of (S, A) logits f, pi(a|s) ∝ exp(f(s, a))"""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
