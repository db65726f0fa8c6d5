"""
The baseline "MAML with cost penalty" of Section 6 (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", https://arxiv.org/abs/1703.03400, its reinforcement-learning variant with a TRPO
outer step): the inner step is one policy-gradient step on the penalised loss (penalty w.max(0, Jc - d), or the
reward r - w.c), the outer step a TRPO step on phi through the inner step (second order: Hessian-vector products
by double backward, never a Hessian).

The building blocks are pure functions, so that the exact tabular test runs the same code as the algorithm:

- :func:`actor_parameter_dict`: the actor's parameters phi by name;
- :func:`functional_log_prob`: log pi_theta(a|s) for parameters theta given as tensors (``torch.func.functional_call``);
- :func:`inner_step`: theta'(phi) = phi + alpha * grad_phi E[ratio * X], a differentiable function of phi.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.vec_env import VecEnv

from sb3_safemeta.common.distributed import parallel_meta_test
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.common.functional_policy import (
    actor_parameter_dict,
    functional_log_prob,
    load_actor_parameters,
    mean_kl,
    weighted_mean,
)
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.common.tasks import Task, task_cost_limit
from sb3_safemeta.common.trust_region import TrustRegionResult
from sb3_safemeta.common.validation import as_cost_vector, check_positive
from sb3_safemeta.maml_cost_penalty.policies import MlpPolicy

__all__ = ["PENALTY_FORMS", "MAMLCostPenalty", "MAMLSurrogate", "SampleSet", "inner_step", "penalty_weights"]

# the penalty of the loss: "violation" = w . max(0, Jc - d) (a penalty for constraint violation, Section 6),
# "linear" = w . Jc (the cost folded into the reward, r - w.c)
PENALTY_FORMS = ("violation", "linear")


def penalty_weights(cost_penalty: np.ndarray, episode_cost: np.ndarray, cost_limit: np.ndarray, form: str) -> np.ndarray:
    """
    The weights of the cost advantages in the penalised advantages X = A - sum_i w_i' A_c,i, i.e. the gradient of the
    penalty w.r.t. Jc at the policy that collected the data:

    - ``"violation"``: d/dJc_i [w_i max(0, Jc_i - d_i)] = w_i 1[Jc_i > d_i] (0 at and below the limit);
    - ``"linear"``: d/dJc_i [w_i Jc_i] = w_i.

    :param cost_penalty: w, (p,)
    :param episode_cost: the estimate of Jc of the policy that collected the data, (p,), in the units of d
    :param cost_limit: d, (p,)
    :param form: one of :data:`PENALTY_FORMS`
    :return: w', (p,)
    """
    if form not in PENALTY_FORMS:
        raise ValueError(f"penalty must be one of {PENALTY_FORMS}, got {form!r}")
    weights = np.asarray(cost_penalty, dtype=np.float64)
    if form == "linear":
        return weights.copy()
    return weights * (np.asarray(episode_cost, dtype=np.float64) > np.asarray(cost_limit, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- inner step
def inner_step(
    policy: ActorCriticPolicy,
    parameters: dict[str, th.Tensor],
    observations: th.Tensor,
    actions: th.Tensor,
    advantages: th.Tensor,
    inner_lr: float,
    weights: th.Tensor | None = None,
    old_log_prob: th.Tensor | None = None,
    create_graph: bool = True,
) -> dict[str, th.Tensor]:
    """
    The inner step of MAML: ``theta' = theta + alpha * grad_theta sum_i weights_i * ratio_i * X_i`` with
    ``ratio = pi_theta(a_i|s_i) / pi_old(a_i|s_i)``, one policy-gradient ascent step on the penalised advantages
    X = A - w.A_c.

    With ``create_graph=True`` the result is a differentiable function of ``parameters`` (and of ``weights`` and
    ``advantages`` if they carry a graph): differentiating a function of theta' back to theta multiplies by
    (I + alpha * Hessian of the inner objective) by double backward, i.e. by Hessian-vector products only.

    :param policy: the policy that defines the architecture (its own parameters are not used)
    :param parameters: theta, name -> tensor (see :func:`actor_parameter_dict`)
    :param observations: states of the inner data
    :param actions: actions of the inner data
    :param advantages: X, (n,)
    :param inner_lr: alpha
    :param weights: sample weights (n,) of the inner objective (None: 1/n each, the sample mean)
    :param old_log_prob: log pi_old(a|s) of the policy that collected the data (None: the current log-probabilities,
        detached; the same value at theta = theta_old, the "magic box" of DiCE elsewhere)
    :param create_graph: keep the graph of the gradient (False for plain adaptation, e.g. at meta-test)
    :return: theta', name -> tensor
    """
    log_prob = functional_log_prob(policy, parameters, observations, actions)
    reference = log_prob.detach() if old_log_prob is None else old_log_prob
    ratio = th.exp(log_prob - reference)
    objective = weighted_mean(ratio * advantages, weights)
    names = list(parameters)
    gradients = th.autograd.grad(objective, [parameters[name] for name in names], create_graph=create_graph, allow_unused=True)
    return {
        name: parameters[name] + inner_lr * gradient if gradient is not None else parameters[name]
        for name, gradient in zip(names, gradients, strict=True)
    }


@dataclass
class SampleSet:
    """
    One task's samples for :func:`inner_step` or :class:`MAMLSurrogate`.

    :param observations: states, ``(n, *obs_shape)``
    :param actions: actions, ``(n, *action_shape)`` (int64 (n,) for Discrete)
    :param advantages: penalised advantages X = A - w.A_c, (n,)
    :param weights: sample weights (n,) (None: 1/n each, the sample mean; exact expectations in the tabular tests)
    :param old_log_prob: log-probabilities under the policy that collected the data (None: see :func:`inner_step`)
    """

    observations: th.Tensor
    actions: th.Tensor
    advantages: th.Tensor
    weights: th.Tensor | None = None
    old_log_prob: th.Tensor | None = None


class MAMLSurrogate:
    """
    The outer objective of MAML-TRPO as a function of the CURRENT actor parameters phi of ``policy``:

        L(phi) = mean_tau E_{s,a ~ pi_theta'_tau(phi_old)}[ pi_theta'_tau(phi)(a|s) / pi_theta'_tau(phi_old)(a|s) * X_post ]

    with theta'_tau(phi) = :func:`inner_step` on task tau's pre-update data. Its gradient at phi_old is the
    second-order MAML meta-gradient (through the inner step). Under ``torch.no_grad`` (the line search) it is
    evaluated without building the second-order graph.

    :param policy: the meta-policy pi_phi, whose actor parameters move
    :param inner_data: per task, the pre-update data (with ``old_log_prob`` of pi_phi_old)
    :param post_samples: per task, the post-update data and its X_post (``old_log_prob`` is computed here)
    :param inner_lr: alpha
    """

    def __init__(
        self, policy: ActorCriticPolicy, inner_data: Sequence[SampleSet], post_samples: Sequence[SampleSet], inner_lr: float
    ) -> None:
        if not inner_data or len(inner_data) != len(post_samples):
            raise ValueError(
                f"MAMLSurrogate needs one post-update sample set per task, got {len(inner_data)} and {len(post_samples)}"
            )
        self.policy, self.inner_data, self.post_samples, self.inner_lr = policy, list(inner_data), list(post_samples), inner_lr
        with th.no_grad():
            self.old_log_probs = [
                functional_log_prob(policy, adapted, post.observations, post.actions)
                for adapted, post in zip(self.adapted_parameters(), self.post_samples, strict=True)
            ]

    def adapted_parameters(self) -> list[dict[str, th.Tensor]]:
        """:return: theta'_tau(phi) for every task, at the current phi (differentiable when grad mode is on)"""
        create_graph = th.is_grad_enabled()
        phi = actor_parameter_dict(self.policy)
        with th.enable_grad():  # the inner step is a gradient, even inside the line search's no_grad
            return [
                inner_step(
                    self.policy,
                    phi,
                    data.observations,
                    data.actions,
                    data.advantages,
                    self.inner_lr,
                    weights=data.weights,
                    old_log_prob=data.old_log_prob,
                    create_graph=create_graph,
                )
                for data in self.inner_data
            ]

    def __call__(self) -> th.Tensor:
        terms = []
        grad_enabled = th.is_grad_enabled()
        for adapted, post, old_log_prob in zip(self.adapted_parameters(), self.post_samples, self.old_log_probs, strict=True):
            if not grad_enabled:
                adapted = {name: value.detach() for name, value in adapted.items()}
            ratio = th.exp(functional_log_prob(self.policy, adapted, post.observations, post.actions) - old_log_prob)
            terms.append(weighted_mean(ratio * post.advantages, post.weights))
        return th.stack(terms).mean()


class MAMLCostPenalty(OnPolicyMetaAlgorithm):
    """
    MAML with cost penalty, the first baseline of Section 6 of "Safe Meta-Reinforcement Learning via
    Dual-Method-Based Policy Adaptation" (Finn et al. 2017, https://arxiv.org/abs/1703.03400, "with constraint
    penalty": a weighted penalty for constraint violation added to MAML's loss).

    The loss of a policy pi on a task is ``-(J(pi) - w . max(0, Jc(pi) - d))`` with ``penalty="violation"``
    (default, the paper's description) or ``-(J(pi) - w . Jc(pi))`` (the reward r - w.c) with ``penalty="linear"``.
    Its policy gradient uses the penalised advantages X = A - w'.A_c with w' = :func:`penalty_weights` (w_i where
    the collecting policy's episode cost exceeds d_i, 0 elsewhere, for "violation"; w for "linear").

    One meta-iteration samples ``meta_batch_size`` tasks. For each task: a rollout of the meta-policy pi_phi, its
    penalised advantages X = A - w'.A_c, the inner step theta'(phi) = phi + alpha * grad_phi E[ratio * X] (one
    policy-gradient step, kept differentiable in phi), and a rollout of pi_theta' on the same task. phi then
    takes one TRPO step on ``mean_tau E_post[ pi_theta'(phi) / pi_theta'(phi_old) * X_post ]``: the gradient goes
    through the inner step (second order, by Hessian-vector products), the natural-gradient direction comes from
    conjugate gradient on the Fisher of the pre-update policy pi_phi (KL bound ``target_kl``, as in MAML-TRPO),
    and a backtracking line search restores phi when no step improves the objective within the bound.

    There is no constraint anywhere: the cost only enters through the fixed penalty w, so no policy explored at
    meta-test (pi_phi included) is guaranteed to stay within ``cost_limit`` (the anytime-safety comparison of the
    paper). ``cost_limit`` sets where the "violation" penalty starts, and reports violations (logs and
    :class:`MetaTestReport`).

    Timesteps: one meta-iteration uses ``meta_batch_size * 2 * n_steps * n_envs`` environment steps.

    :param policy: the policy model to use (MlpPolicy)
    :param env: a task environment (see :mod:`sb3_safemeta.common.tasks`), or its registered id
    :param cost_penalty: w >= 0, the weight of each cost channel's penalty (float or one value per channel)
    :param penalty: ``"violation"`` (default: w . max(0, Jc - d)) or ``"linear"`` (w . Jc, i.e. the reward r - w.c)
    :param inner_lr: alpha > 0, step size of the inner policy-gradient step (on normalised advantages by default)
    :param cost_limit: episode cost limit d (float or per channel): where the "violation" penalty starts, and
        for reporting; a task's ``"cost_limit"`` overrides it
    :param meta_batch_size: tasks per meta-iteration (paper: 10)
    :param n_steps: steps per environment per rollout (one rollout per policy per task)
    :param target_kl: KL bound of the TRPO step on phi (paper: 1e-3)
    :param cg_max_steps: conjugate-gradient iterations of the TRPO step
    :param cg_damping: damping of the Fisher-vector product
    :param line_search_shrinking_factor: step shrink factor of the line search
    :param line_search_max_iter: line-search iterations
    :param learning_rate: learning rate of the critics (used with ``advantage_estimator="gae"``)
    :param batch_size: minibatch size of the critic regression
    :param n_critic_epochs: critic epochs per rollout (``"gae"`` only)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (``"gae"`` only)
    :param advantage_estimator: ``"mc"`` (default: Monte-Carlo returns with a per-task linear baseline, as
        SafeMetaDual and the MAML implementations) or ``"gae"``
    :param normalize_advantage: centre the penalised advantages X and divide them by their standard deviation,
        per rollout (inner and outer), as MAML implementations do; it makes ``inner_lr`` independent of the
        reward scale
    :param n_costs: number of cost channels (None: from the env or ``cost_limit``)
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: seed for the pseudo random generators and the task sampler; every meta-iteration re-seeds torch
        and the environments from the task sampler, whose state is saved (as SafeMetaDual)
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param n_workers: 0 (default): every task's work runs in this process; N > 0: on N Ray workers, with the same
        result (``advantage_estimator="mc"``; docs/guide/distributed.md)
    :param ray_address: with ``n_workers > 0``: None starts a local Ray instance, ``"auto"`` or ``"host:port"``
        joins a running cluster
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    adaptation_step_parameters = ("inner_lr",)

    def __init__(
        self,
        policy: str | type[MlpPolicy],
        env: GymEnv | str,
        cost_penalty: float | list[float] = 1.0,
        penalty: str = "violation",
        inner_lr: float = 0.1,
        cost_limit: float | list[float] = 25.0,
        meta_batch_size: int = 10,
        n_steps: int = 200,
        target_kl: float = 1e-3,
        cg_max_steps: int = 10,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        learning_rate: float | Schedule = 1e-3,
        batch_size: int = 256,
        n_critic_epochs: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        advantage_estimator: str = "mc",
        normalize_advantage: bool = True,
        n_costs: int | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        n_workers: int = 0,
        ray_address: str | None = None,
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            cost_limit=cost_limit,
            meta_batch_size=meta_batch_size,
            n_steps=n_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            n_critic_epochs=n_critic_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            advantage_estimator=advantage_estimator,
            n_costs=n_costs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            n_workers=n_workers,
            ray_address=ray_address,
        )
        self.cost_penalty = as_cost_vector(cost_penalty, self.n_costs, "cost_penalty", allow_negative=False)
        if penalty not in PENALTY_FORMS:
            raise ValueError(f"penalty must be one of {PENALTY_FORMS}, got {penalty!r}")
        self.penalty = penalty
        self.inner_lr = check_positive(inner_lr, "inner_lr")
        self._set_trust_region(target_kl, cg_max_steps, cg_damping, line_search_shrinking_factor, line_search_max_iter)
        self.normalize_advantage = bool(normalize_advantage)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        # pi_theta' of the task being adapted: same architecture, actor weights set to theta'(phi) per task
        self.adapted_policy = copy.deepcopy(self.policy)

    # ------------------------------------------------------------------ data
    def penalised_advantages(self, rollout: RolloutData, cost_limit: np.ndarray | None = None) -> th.Tensor:
        """
        :param rollout: one rollout
        :param cost_limit: the task's d, (p,) (None: the model's ``cost_limit``)
        :return: X = A - w'.A_c of its samples, w' = :func:`penalty_weights` at the rollout's episode cost (centred
            and divided by their std when ``normalize_advantage``), (n,)
        """
        limit = np.asarray(self.cost_limit if cost_limit is None else cost_limit, dtype=np.float64)
        limit = np.broadcast_to(limit, (self.n_costs,))
        weights = penalty_weights(self.cost_penalty, rollout.episode_cost, limit, self.penalty)
        penalised = rollout.advantages.astype(np.float64) - rollout.cost_advantages.astype(np.float64) @ weights
        if self.normalize_advantage:
            penalised = (penalised - penalised.mean()) / (penalised.std() + 1e-8)
        return th.as_tensor(penalised, dtype=th.float32, device=self.device)

    def _inner_data(self, rollout: RolloutData, policy: ActorCriticPolicy, cost_limit: np.ndarray | None = None) -> SampleSet:
        """:return: the rollout's samples, X and the log-probabilities of ``policy`` (which collected it)"""
        batch = rollout.to_batch(self.device)
        with th.no_grad():
            old_log_prob = policy.get_distribution(batch.observations).log_prob(batch.actions)
        advantages = self.penalised_advantages(rollout, cost_limit)
        return SampleSet(batch.observations, batch.actions, advantages, old_log_prob=old_log_prob)

    # ------------------------------------------------------------------ training
    def _meta_iteration(self, callback: BaseCallback) -> bool:
        """One meta-iteration of MAML-TRPO over a batch of tasks. :return: False if a callback stopped training"""
        tasks = self.sample_tasks(self.meta_batch_size)
        seed = self._seed_iteration()
        limits = [task_cost_limit(task, self.cost_limit, self.n_costs) for task in tasks]
        # per task: pre-update data of pi_phi, the inner step, post-update data of pi_theta' (a task unit)
        results = self._map_task_units("inner_step", seed, [(i, (task,)) for i, task in enumerate(tasks)], callback)
        if results is None:
            return False
        meta_rollouts: list[RolloutData] = [meta_rollout for meta_rollout, _, _ in results]
        adapted_rollouts: list[RolloutData] = [adapted_rollout for _, adapted_rollout, _ in results]
        inner_kls = [kl for _, _, kl in results]
        # the outer step differentiates through the inner step: its data, read again here with pi_phi
        pairs = zip(meta_rollouts, limits, strict=True)
        inner_data = [self._inner_data(meta_rollout, self.policy, limit) for meta_rollout, limit in pairs]

        step = self._meta_step(inner_data, adapted_rollouts, meta_rollouts, limits)

        pairs = zip(meta_rollouts, limits, strict=True)
        violating = sum(bool(np.any(rollout.episode_cost > limit)) for rollout, limit in pairs)
        self.logger.record("meta/violating_tasks", violating)
        # tasks whose inner (pre-update) loss carried a penalty: all for "linear" (w > 0), the violating ones else
        penalised = [
            penalty_weights(self.cost_penalty, rollout.episode_cost, limit, self.penalty)
            for rollout, limit in zip(meta_rollouts, limits, strict=True)
        ]
        self.logger.record("meta/penalised_tasks", sum(bool(np.any(weights > 0)) for weights in penalised))
        self._record_rollouts(meta_rollouts, adapted_rollouts)
        self.logger.record("meta/adaptation_kl", float(np.mean(inner_kls)))
        self._record_trust_region_step(step)
        return True

    def _unit_inner_step(
        self, task_index: int, task: Task, *, callback: BaseCallback
    ) -> tuple[RolloutData, RolloutData, float] | None:
        """
        One task of a meta-iteration: a rollout of pi_phi, the inner step theta' = phi + alpha * grad E[ratio X]
        and a rollout of pi_theta' on the same task.

        :return: (pi_phi's rollout, pi_theta''s rollout, E_s[KL(pi_phi || pi_theta')]), or None if a callback
            stopped training
        """
        meta_rollout = self._collect(self.policy, task, callback, self.policy.optimizer)
        if meta_rollout is None:
            return None
        data = self._inner_data(meta_rollout, self.policy, task_cost_limit(task, self.cost_limit, self.n_costs))
        adapted = inner_step(
            self.policy,
            actor_parameter_dict(self.policy),
            data.observations,
            data.actions,
            data.advantages,
            self.inner_lr,
            create_graph=False,
        )
        load_actor_parameters(self.adapted_policy, adapted)
        with th.no_grad():  # E_s[KL(pi_phi || pi_theta')] on the pre-update states
            inner_kl = mean_kl(self.policy, self.adapted_policy, data.observations)
        adapted_rollout = self._collect(self.adapted_policy, task, callback, self.policy.optimizer)
        return None if adapted_rollout is None else (meta_rollout, adapted_rollout, inner_kl)

    def _meta_step(
        self,
        inner_data: list[SampleSet],
        adapted_rollouts: list[RolloutData],
        meta_rollouts: list[RolloutData],
        limits: list[np.ndarray] | None = None,
    ) -> TrustRegionResult:
        """The outer TRPO step on phi, through the inner step; trust region on the pre-update policy pi_phi."""
        post_samples = []
        for index, rollout in enumerate(adapted_rollouts):
            batch = rollout.to_batch(self.device)
            limit = None if limits is None else limits[index]
            post_samples.append(SampleSet(batch.observations, batch.actions, self.penalised_advantages(rollout, limit)))
        return self._trust_region_step(MAMLSurrogate(self.policy, inner_data, post_samples, self.inner_lr), meta_rollouts)

    # ------------------------------------------------------------------ meta-test
    @parallel_meta_test
    def meta_test(
        self,
        n_tasks: int = 20,
        n_adapt_steps: int = 20,
        tasks: list[Task] | None = None,
        seed: int = 10_000,
        save_path: str | pathlib.Path | None = None,
        verbose: int = 0,
        n_workers: int | None = None,
        n_eval_episodes: int = 10,
        eval_env: VecEnv | None = None,
        eval_confidence: float = 0.9,
        eval_cost_range: float | None = None,
    ) -> MetaTestReport:
        """
        Adapt the meta-policy to unseen tasks as MAML does: pi_[0] = pi_phi, pi_[k+1] = pi_[k] + one plain inner
        policy-gradient step on the penalised loss (step ``inner_lr``, no safety mechanism), recording the episode return
        and cost of every pi_[k] (the report of :meth:`SafeMetaDual.meta_test <sb3_safemeta.SafeMetaDual.meta_test>`).

        :param n_tasks: number of test tasks (ignored when ``tasks`` is given)
        :param n_adapt_steps: K, adaptation steps per task
        :param tasks: explicit test tasks
        :param seed: seed of the test-task draw (distinct from training draws) and of the rollouts
        :param save_path: if given, write ``<save_path>.csv/.json`` and ``<save_path>.png``
        :param verbose: print one line per task
        :param n_workers: run the test tasks on this many Ray workers (None: the model's ``n_workers``); the
            report is the same for any number (each task's chain is seeded from ``seed`` and its index)
        :param n_eval_episodes: independent episodes of every explored policy (stochastic actions), besides its
            training rollout; 0 skips them. The same measurement as SafeMetaDual's, so that the four algorithms'
            anytime safety is compared on equal terms (Section 5.1)
        :param eval_env: the VecEnv of those episodes (default: a new one of the training env's registered id)
        :param eval_confidence: confidence level of the DKW upper bound of each explored policy's expected episode
            cost (reported only with ``eval_cost_range``)
        :param eval_cost_range: R, the largest possible episode cost, for that bound (default: no bound)
        :return: the anytime-safety report
        """
        self._check_meta_test(n_adapt_steps)
        tasks = tasks if tasks is not None else self.sample_tasks(n_tasks, seed=seed)
        policy = copy.deepcopy(self.policy)

        def adaptation_chain(task: Task, cost_limit: np.ndarray) -> Iterator[RolloutData]:
            policy.load_state_dict(self.policy.state_dict())
            for step in range(n_adapt_steps + 1):
                rollout = self._collect(policy, task, callback)  # no critic refit: the critics are phi's
                assert rollout is not None  # the meta-test callback never stops
                yield rollout
                if step < n_adapt_steps:
                    data = self._inner_data(rollout, policy, cost_limit)
                    adapted = inner_step(
                        policy,
                        actor_parameter_dict(policy),
                        data.observations,
                        data.actions,
                        data.advantages,
                        self.inner_lr,
                        create_graph=False,
                    )
                    load_actor_parameters(policy, adapted)

        evaluate = self._independent_evaluation(
            lambda: policy, n_eval_episodes, eval_env, eval_confidence, eval_cost_range, seed
        )
        with self._off_the_record(seed) as callback:
            return self._run_meta_test(
                tasks, n_adapt_steps, adaptation_chain, save_path, verbose, evaluate, n_eval_episodes, eval_confidence
            )

    # ------------------------------------------------------------------ SB3 plumbing
    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "adapted_policy"]
