"""
One task's rollout, flattened and ready for an adaptation or a meta-gradient: the bridge between
the cost rollout buffer (per step, per env) and the dual method (per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.common.advantages import episode_time_steps, linear_baseline_advantages
from sb3_safemeta.common.buffers import CostRolloutBuffer

__all__ = ["ADVANTAGE_ESTIMATORS", "RolloutData"]

ADVANTAGE_ESTIMATORS = ("gae", "mc")


@dataclass
class RolloutData:
    r"""
    Samples and episode statistics of one rollout of one policy on one task.

    =====================  ===================  =========  ======================================
    field                  shape                dtype      meaning
    =====================  ===================  =========  ======================================
    observations           (n, \*obs_shape)     float32    states s
    actions                (n, \*action_shape)  float32    actions a (int64 for Discrete)
    advantages             (n,)                 float32    reward advantages A(s, a)
    cost_advantages        (n, p)               float32    cost advantages A_ci(s, a)
    episode_returns        (n_episodes,)        float64    undiscounted returns of completed episodes
    episode_costs          (n_episodes, p)      float64    undiscounted costs of completed episodes
    episode_lengths        (n_episodes,)        float64    lengths of completed episodes
    episode_ids            (n,)                 int64      episode of every sample (0, 1, ...; the
                                                           samples of one episode in time order)
    =====================  ===================  =========  ======================================

    :param observations: see table
    :param actions: see table
    :param advantages: see table
    :param cost_advantages: see table
    :param episode_returns: see table
    :param episode_costs: see table
    :param episode_lengths: see table
    :param episode_ids: see table; episodes cut by the rollout's start or end count as episodes
    """

    observations: np.ndarray
    actions: np.ndarray
    advantages: np.ndarray
    cost_advantages: np.ndarray
    episode_returns: np.ndarray
    episode_costs: np.ndarray
    episode_lengths: np.ndarray
    episode_ids: np.ndarray
    # the rollout's shape, for the message when no episode was completed (0: unknown)
    n_steps: int = 0
    n_envs: int = 0
    # wall time of the rollout's collection (environment steps and the policy's actions), for the meta-test's
    # timing of the adaptation step alone (MetaTestReport.adapt_seconds)
    collect_seconds: float = 0.0

    @classmethod
    def from_buffer(
        cls,
        buffer: CostRolloutBuffer,
        episode_returns: list[float],
        episode_costs: list[np.ndarray],
        episode_lengths: list[int],
        estimator: str = "gae",
    ) -> RolloutData:
        """
        Read a filled buffer (before ``get()`` flattens it).

        :param buffer: the rollout buffer, after ``compute_returns_and_advantage``
        :param episode_returns: returns of the episodes completed during the rollout
        :param episode_costs: costs (p,) of the episodes completed during the rollout
        :param episode_lengths: lengths of those episodes
        :param estimator: ``"gae"``: the buffer's GAE advantages (learned value and cost-value
            heads); ``"mc"``: Monte-Carlo returns (the buffer's returns, which are Monte-Carlo when its
            GAE lambdas are 1) minus a per-task linear feature baseline (Algorithms 3-4)
        :return: the flattened rollout
        """
        if estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {estimator!r}")
        if buffer.generator_ready:
            raise RuntimeError("the rollout buffer was already flattened by get(): read it before training")
        n_samples = buffer.buffer_size * buffer.n_envs
        n_costs = buffer.costs.shape[-1]
        observations = buffer.observations.reshape(n_samples, *buffer.observations.shape[2:])
        actions = buffer.actions.reshape(n_samples, *buffer.actions.shape[2:])
        if isinstance(buffer.action_space, spaces.Discrete):
            # the buffer keeps Discrete actions as float (n, 1); a categorical log_prob needs int64 (n,),
            # a (n, 1) value would broadcast against the (n,) batch into an (n, n) table
            actions = actions.reshape(n_samples).astype(np.int64)
        if estimator == "gae":
            advantages = buffer.advantages.reshape(n_samples)
            cost_advantages = buffer.cost_advantages.reshape(n_samples, n_costs)
        else:
            time_steps = episode_time_steps(buffer.episode_starts).reshape(n_samples)
            targets = np.concatenate(
                [buffer.returns.reshape(n_samples, 1), buffer.cost_returns.reshape(n_samples, n_costs)], axis=1
            )
            fitted = linear_baseline_advantages(targets, observations, time_steps)
            advantages, cost_advantages = fitted[:, 0], fitted[:, 1:]
        # an episode per (env, number of episode starts so far): the same flattening as the samples
        started = np.cumsum(buffer.episode_starts > 0, axis=0) + (buffer.buffer_size + 1) * np.arange(buffer.n_envs)
        episode_ids = np.unique(started.reshape(n_samples), return_inverse=True)[1].astype(np.int64)
        if not np.all(np.isfinite(advantages)) or not np.all(np.isfinite(cost_advantages)):
            raise ValueError("NaN or infinite advantages: check the rewards, the costs and the value estimates")
        return cls(
            observations=observations,
            actions=actions,
            advantages=advantages.astype(np.float32),
            cost_advantages=cost_advantages.astype(np.float32),
            episode_returns=np.asarray(episode_returns, dtype=np.float64),
            episode_costs=np.asarray(episode_costs, dtype=np.float64).reshape(len(episode_costs), n_costs),
            episode_lengths=np.asarray(episode_lengths, dtype=np.float64),
            episode_ids=episode_ids,
            n_steps=int(buffer.buffer_size),
            n_envs=int(buffer.n_envs),
        )

    def held_out(self, fraction: float) -> np.ndarray:
        """
        The episodes of a held-out split (``holdout_fraction`` of A^s): episode i (in :attr:`episode_ids`' order,
        episodes cut by the rollout's start or end included) is held out when floor((i + 1) f) > floor(i f), which
        spreads the held-out episodes evenly over the rollout (every second one for f = 1/2). Whole episodes, not
        samples: the samples of one episode share its hazards, so a split inside episodes would not be independent.

        :param fraction: f, the share of episodes held out, in (0, 1)
        :return: boolean (n,): the samples of the held-out episodes
        :raises ValueError: the rollout has fewer than 2 episodes, or f leaves one of the two parts empty
        """
        n_episodes = int(self.episode_ids.max()) + 1 if len(self.episode_ids) else 0
        index = np.arange(n_episodes)
        held = np.floor((index + 1) * fraction) > np.floor(index * fraction)
        if held.all() or not held.any():
            raise ValueError(
                f"holdout_fraction={fraction} splits the rollout's {n_episodes} episode(s) into {int(held.sum())} held out"
                f" and {int((~held).sum())} to fit: both parts need at least one episode (more episodes per rollout:"
                " n_envs x n_steps of at least two episode lengths, or a holdout_fraction nearer 0.5)"
            )
        return held[self.episode_ids]

    @property
    def n_episodes(self) -> int:
        return len(self.episode_returns)

    def _require_episodes(self) -> None:
        if self.n_episodes == 0:
            shape = f" ({self.n_envs} environment(s) x n_steps={self.n_steps} steps)" if self.n_steps else ""
            raise ValueError(
                f"no episode was completed during the rollout{shape}: the episode cost Jc(pi) cannot be estimated. "
                "Only episodes that end inside a rollout count and every environment runs its own episodes, so "
                "n_steps (steps per environment) must be at least the episode length, whatever n_envs is (ideally a "
                "few episode lengths). An environment that never ends an episode by itself needs a time limit: "
                "gymnasium.wrappers.TimeLimit(env, max_episode_steps=...) or max_episode_steps in gymnasium.register."
            )

    @property
    def episode_cost(self) -> np.ndarray:
        """:return: the estimate of Jc(pi) in episode units: the mean cost of completed episodes, (p,)"""
        self._require_episodes()
        return self.episode_costs.mean(axis=0)

    @property
    def episode_return(self) -> float:
        """:return: the mean return of completed episodes"""
        self._require_episodes()
        return float(self.episode_returns.mean())

    @property
    def horizon(self) -> float:
        """:return: H, the mean episode length: it stands for 1/(1 - gamma) in the episode-unit surrogate"""
        self._require_episodes()
        return float(max(self.episode_lengths.mean(), 1.0 + 1e-6))

    def to_batch(self, device: th.device | str = "cpu") -> AdaptationBatch:
        """:return: the samples as an :class:`AdaptationBatch` with uniform weights"""
        n_samples = len(self.advantages)
        observations = th.as_tensor(self.observations, device=device)
        actions = th.as_tensor(self.actions, device=device)
        return AdaptationBatch(
            observations=observations.float() if observations.is_floating_point() else observations,
            # float64 action spaces (Safety-Gymnasium) would make the ratio float64 against float32 advantages
            actions=actions.float() if actions.is_floating_point() else actions,
            advantages=th.as_tensor(self.advantages, device=device),
            cost_advantages=th.as_tensor(self.cost_advantages, device=device),
            weights=th.full((n_samples,), 1.0 / n_samples, device=device),
        )
