"""
SafeMetaDual: safe meta-policy training (Section 3.2 and 4.2, Algorithms 2 and 4) of "Safe Meta-Reinforcement
Learning via Dual-Method-Based Policy Adaptation: Near-Optimality and Anytime Safety Guarantee", with the safe
adaptation A^s of :mod:`sb3_safemeta.safe_adapter` as the inner step and ``meta_test`` (Section 5.1: the
anytime-safety report). Docs: docs/modules/safe_meta_dual.md.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.vec_env import VecEnv

from sb3_safemeta.common.adaptation.confidence import pooled_spread_upper_bound
from sb3_safemeta.common.adaptation.episodes import steps_for_episodes
from sb3_safemeta.common.adaptation.options import AdaptationOptions, SafeAdaptationMixin
from sb3_safemeta.common.adaptation.parametric import ParametricAdaptResult, adapt_on_rollout
from sb3_safemeta.common.distributed import Kept, parallel_meta_test
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.common.tasks import Task, task_cost_limit
from sb3_safemeta.common.trust_region import ImportanceWeightedSurrogate, TrustRegionResult
from sb3_safemeta.common.validation import check_in_range, check_int
from sb3_safemeta.safe_meta_dual.meta_gradient import eq6_weights, penalised_advantages
from sb3_safemeta.safe_meta_dual.meta_test_settings import check_test_adaptation
from sb3_safemeta.safe_meta_dual.policies import MlpPolicy

CRPO_RULES = ("any", "mean", "per_task")
META_GRADIENTS = ("alg4", "eq6")


def _unit_scale(weights: np.ndarray) -> np.ndarray:
    """:return: ``weights`` divided by their standard deviation (unchanged if it is 0: a task with no signal)"""
    scale = float(np.std(weights))
    return weights / scale if scale > 0 else weights


class SafeMetaDual(SafeAdaptationMixin, OnPolicyMetaAlgorithm):
    """
    Safe meta-policy training with the dual-method adaptation, from "Safe Meta-Reinforcement
    Learning via Dual-Method-Based Policy Adaptation: Near-Optimality and Anytime Safety Guarantee"
    (Section 3.2, 4.2; Algorithms 2 and 4).

    One meta-iteration samples ``meta_batch_size`` tasks. For each task it collects a rollout with
    the meta-policy pi_phi. If pi_phi violates some task's limit (Jc > d + delta), the iteration takes
    the cost-reducing TRPO step of Algorithm 2 (lines 9-12) instead. Otherwise every task's policy
    is adapted by A^s (the SafeAdapter step), a rollout of each adapted policy gives the meta-gradient
    of Algorithm 4 line 7, and phi takes a TRPO step (natural gradient by conjugate gradient, KL bound
    ``target_kl``, backtracking line search). Batch rule (``crpo_rule``): ``"any"`` (default, safety
    first) takes the cost step as soon as any task of the batch violates, on the mean cost of the
    violating tasks; ``"mean"`` takes it only when the batch's mean cost violates the limit;
    ``"per_task"`` lets every task take its own branch of Algorithm 2, as the paper's one-task iterations
    do: one TRPO step on the sum of the meta-objective of the feasible tasks (lines 5-8) and the cost descent
    of the violating ones (lines 10-12), each task's weights scaled to unit standard deviation so that
    every task weighs the same (the batch mean of the single-task updates, up to the step's length).

    After training, :meth:`meta_test` adapts the meta-policy to unseen tasks with ``n_adapt_steps``
    SafeAdapter steps each and reports the return and the maximum cost of every explored policy.

    Timesteps: one meta-iteration uses ``meta_batch_size * 2 * n_steps * n_envs`` environment steps
    (fewer when the cost step is taken); ``learn(total_timesteps)`` runs meta-iterations until
    ``total_timesteps`` is reached.

    :param policy: the policy model to use (MlpPolicy)
    :param env: a task environment (see :mod:`sb3_safemeta.common.tasks`), or its registered id
    :param cost_limit: episode cost limit d (float or per channel); a task's ``"cost_limit"`` overrides it
    :param lambda_: lambda of the adaptation A^s (Table 2 of the paper per scenario)
    :param lambda_c: lambda_c of A^s (the paper sets lambda_c = lambda)
    :param delta_c: allowable violation delta of problems (1) and (2)
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
    :param advantage_estimator: ``"mc"`` (default, Algorithms 3-4: Monte-Carlo returns and a per-task
        linear baseline, since one critic for all tasks cannot know which task it is in) or ``"gae"``
    :param crpo_rule: ``"any"``, ``"mean"`` or ``"per_task"`` (see above)
    :param meta_cost_confidence: None (default): Algorithm 2 line 4 judges a task by the mean episode cost of the
        meta-policy's rollout on it. A level 1 - alpha in (0, 1): by an upper confidence bound of that cost, the
        task's mean plus z_(1 - alpha) s / sqrt(n), with s the spread of the meta-policy's episode costs pooled over
        the tasks of the last ``meta_cost_window`` meta-iterations (for rare costs: a few episodes per task miss a
        hazard that the pool has met; see :func:`~sb3_safemeta.common.adaptation.confidence.pooled_spread_upper_bound`
        and docs/modules/safe_meta_dual.md, "Rare costs in meta-training")
    :param meta_cost_window: meta-iterations whose meta-policy episodes form the pool of ``meta_cost_confidence``
    :param meta_cost_margin: m in [0, 1): meta-training (Algorithm 2 line 4's check and the inner A^s steps) holds each
        task to (1 - m) d instead of d; meta-test keeps d. A margin between the limit the meta-policy is trained to
        and the one it is judged by on unseen tasks: a meta-policy trained at d sits at d on average over tasks, so
        above it on some (on SafeMetaHumanoidDir-v0, m = 0.2 put the meta-policy within d on every test task of 2
        seeds against 7 of 10; the yml sets 0.2 for the four locomotion scenarios; docs/modules/safe_meta_dual.md,
        "A margin in meta-training")
    :param meta_gradient: ``"alg4"`` (default): Algorithm 4 line 7, E_{pi^tau}[grad_phi log pi_phi A^{pi^tau}];
        ``"eq6"``: the fuller eq. (6), which adds the eta^-1 grad_phi Qbar term (the change of pi_phi's
        penalised action values with phi), estimated from the same adapted rollouts by reweighting the samples
        (see :func:`~sb3_safemeta.safe_meta_dual.meta_gradient.eq6_weights`: pi_phi's continuation and advantages are
        approximated by the adapted policy's own rollout); no second derivative either way. Experimental: with
        advantages estimated from the same trajectories (``"mc"``, ``"gae"``) the eq. (6) weights are biased
        (double sampling: a product of two conditional expectations of the same continuation, which no
        single-trajectory advantage estimate removes, truncated ones included) and, on SafeMetaPointNav-v0, made
        meta-training worse than ``"alg4"``
    :param dual_solver: dual solver of A^s (see :class:`~sb3_safemeta.SafeAdapter`)
    :param beta: PGD step size of the dual
    :param n_dual_steps: dual iterations of A^s
    :param fit_steps: L-BFGS iterations per fit of pi^u
    :param fit_scope: the parameters that represent pi^u in A^s (see :class:`~sb3_safemeta.SafeAdapter`):
        ``"actor"`` (all of the actor), ``"head"`` (its last layer on the meta-policy's features, closed form) or
        ``"hybrid"`` (the dual on head fits, one fit of all of the actor at that u*)
    :param backtrack_steps: feasibility backtracking steps of A^s
    :param dual_tol: relative tolerance of A^s's dual solve on the active constraints
    :param normalize_advantage: divide the reward advantages by their standard deviation in A^s, so that lambda
        is relative to the reward scale (the cost advantages are never rescaled)
    :param cost_confidence: the statistical margin of A^s (for rare costs): None constrains the rollout's mean
        episode cost (problem (1) with an estimated Jc); a level 1 - alpha in [0.5, 1) constrains an upper
        confidence bound of Jc(pi_phi) that holds with that probability; a step whose bound violates d while the
        estimate does not keeps the policy (see :mod:`sb3_safemeta.common.adaptation.confidence`)
    :param cost_bound: the bound of the margin: ``"dkw"`` (valid for any episode-cost distribution on [0, R]),
        ``"hoeffding"`` or ``"bootstrap"`` (not valid for rare costs)
    :param episode_cost_range: R, the largest possible episode cost, float or per channel (None: the rollout's
        longest episode x max(1, its largest step cost), the horizon for indicator costs)
    :param lambda_c_rule: None (``lambda_c`` as given) or ``"prop4"``: lambda_c of each step at least Proposition 4's
        4 gamma A_c^max / (eta alpha (1 - gamma)^2), gamma = 1 - 1/H, A_c^max from the rollout (see
        :class:`~sb3_safemeta.common.adaptation.options.AdaptationOptions`)
    :param visitation_constant: eta * alpha of Assumption 2 for ``"prop4"``, in (0, 1]
    :param holdout_fraction: the share of each rollout's episodes held out of the fit of pi^u, on which the step is
        checked, backtracked and (recovery) sized (0 disables; see
        :class:`~sb3_safemeta.common.adaptation.options.AdaptationOptions`)
    :param test_adaptation: SafeAdapter arguments of :meth:`meta_test` that differ from the inner step's (None: the
        same), e.g. ``{"lambda_c": 1000.0, "min_episodes": 6}`` (the navigation entries of hyperparams/safemeta.yml):
        ``min_episodes`` raises the rollout of each A^s step to at least that many complete episodes. Meta-training
        is unchanged; ``meta_test(adapter_kwargs=...)`` overrides these
    :param n_costs: number of cost channels (None: from the env or ``cost_limit``)
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: seed for the pseudo random generators and the task sampler; every meta-iteration
        re-seeds torch and the environments from the task sampler, whose state is saved, so that a run
        resumed from a checkpoint (:class:`~sb3_safemeta.common.callbacks.MetaCheckpointCallback`) is bit-identical
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param n_workers: 0 (default): every task's work runs in this process; N > 0: on N Ray workers, with the same
        result (``advantage_estimator="mc"``; docs/guide/distributed.md)
    :param ray_address: with ``n_workers > 0``: None starts a local Ray instance, ``"auto"`` or ``"host:port"``
        joins a running cluster
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    adaptation_step_parameters = ("lambda_", "lambda_c")

    def __init__(
        self,
        policy: str | type[MlpPolicy],
        env: GymEnv | str,
        cost_limit: float | list[float] = 25.0,
        lambda_: float = 1.0,
        lambda_c: float | list[float] = 1.0,
        delta_c: float | list[float] = 0.0,
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
        crpo_rule: str = "any",
        meta_cost_confidence: float | None = None,
        meta_cost_window: int = 10,
        meta_cost_margin: float = 0.0,
        meta_gradient: str = "alg4",
        dual_solver: str = "auto",
        beta: float = 1.0,
        n_dual_steps: int = 15,
        fit_steps: int = 20,
        fit_scope: str = "actor",
        backtrack_steps: int = 15,
        dual_tol: float = 1e-3,
        normalize_advantage: bool = True,
        cost_confidence: float | None = None,
        cost_bound: str = "dkw",
        episode_cost_range: float | list[float] | None = None,
        lambda_c_rule: str | None = None,
        visitation_constant: float = 1.0,
        holdout_fraction: float = 0.0,
        test_adaptation: dict[str, Any] | None = None,
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
        if crpo_rule not in CRPO_RULES:
            raise ValueError(f"crpo_rule must be one of {CRPO_RULES}, got {crpo_rule!r}")
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {meta_gradient!r}")
        self._set_trust_region(target_kl, cg_max_steps, cg_damping, line_search_shrinking_factor, line_search_max_iter)
        if meta_cost_confidence is not None:
            meta_cost_confidence = check_in_range(meta_cost_confidence, "meta_cost_confidence", 0.0, 1.0, True, True)
        self.crpo_rule = crpo_rule
        self.meta_cost_confidence = meta_cost_confidence
        self.meta_cost_window = check_int(meta_cost_window, "meta_cost_window")
        self.meta_cost_margin = check_in_range(meta_cost_margin, "meta_cost_margin", 0.0, 1.0, high_open=True)
        # the meta-policy's episode costs of the last meta_cost_window meta-iterations, one array per iteration
        # (saved: a resumed run judges its tasks as the uninterrupted one does)
        self.meta_cost_pool: list[np.ndarray] = []
        self.meta_gradient = meta_gradient
        self._set_adaptation_options(
            AdaptationOptions(
                lambda_=lambda_,
                lambda_c=lambda_c,
                delta_c=delta_c,
                dual_solver=dual_solver,
                beta=beta,
                n_dual_steps=n_dual_steps,
                fit_steps=fit_steps,
                fit_scope=fit_scope,
                backtrack_steps=backtrack_steps,
                dual_tol=dual_tol,
                normalize_advantage=normalize_advantage,
                cost_confidence=cost_confidence,
                cost_bound=cost_bound,
                episode_cost_range=episode_cost_range,
                lambda_c_rule=lambda_c_rule,
                visitation_constant=visitation_constant,
                holdout_fraction=holdout_fraction,
            )
        )
        self.test_adaptation = check_test_adaptation(test_adaptation)
        # A^s results of the tasks adapted in the current meta-iteration, in the order of their adapted rollouts
        self.adaptations: list[ParametricAdaptResult] = []
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.adaptation.check_channels(self.n_costs)  # p is known only now
        # pi^tau of the task being adapted: same architecture, weights copied from phi per task
        self.adapted_policy = copy.deepcopy(self.policy)

    def _meta_iteration(self, callback: BaseCallback) -> bool:
        """One meta-iteration (Algorithm 2 / 4, lines 2-13, over a batch). :return: False if a callback stopped training"""
        tasks = self.sample_tasks(self.meta_batch_size)
        seed = self._seed_iteration()
        # line 3: evaluate Jc(pi_phi) and the advantages with the meta-policy, on every task first, so that
        # no task is adapted (and rolled out again) in an iteration that ends with the cost step
        meta_rollouts = self._map_task_units("meta_rollout", seed, [(i, (task,)) for i, task in enumerate(tasks)], callback)
        if meta_rollouts is None:
            return False
        # line 4's limit, also the inner A^s steps': (1 - meta_cost_margin) d, a margin below meta-test's d
        margin = 1.0 - self.meta_cost_margin
        limits = [margin * task_cost_limit(task, self.cost_limit, self.n_costs) for task in tasks]
        estimates = self._meta_policy_costs(meta_rollouts)
        excesses = np.array([estimate - limit - self.delta_c for estimate, limit in zip(estimates, limits, strict=True)])
        # line 10: the worst violated channel of each violating task
        violating = [(meta_rollouts[i], int(np.argmax(excesses[i]))) for i in np.flatnonzero(np.any(excesses > 0, axis=1))]
        feasible = [i for i in range(len(tasks)) if np.all(excesses[i] <= 0)]
        if self.crpo_rule == "per_task":
            take_cost_step = not feasible
        else:
            take_cost_step = bool(violating) and (self.crpo_rule == "any" or bool(np.any(excesses.mean(axis=0) > 0)))

        adapted_rollouts: list[RolloutData] = []
        self.adaptations = []  # u* and eta per adapted task, for the eq. (6) weights
        if not take_cost_step and feasible:
            # lines 5-6 per feasible task, on the worker that holds its meta-policy rollout
            items = [(i, (tasks[i], limits[i], Kept("meta_rollout", meta_rollouts[i]))) for i in feasible]
            adapted = self._map_task_units("adapt", seed, items, callback)
            if adapted is None:
                return False
            self.adaptations = [result for result, _ in adapted]
            adapted_rollouts = [rollout for _, rollout in adapted]

        if adapted_rollouts:
            # lines 7-8; with crpo_rule="per_task", lines 10-12 of the violating tasks in the same step
            if self.crpo_rule == "per_task" and violating:
                step = self._meta_step(adapted_rollouts, meta_rollouts, violating)
            else:  # two arguments: subclasses that override _meta_step keep working
                step = self._meta_step(adapted_rollouts, meta_rollouts)
        else:  # lines 10-12 (every task violates under crpo_rule="mean" too)
            step = self._cost_step(violating, meta_rollouts)

        self.logger.record("meta/cost_step", int(not adapted_rollouts))
        self.logger.record("meta/violating_tasks", len(violating))
        self._record_rollouts(meta_rollouts, adapted_rollouts)
        if adapted_rollouts:
            self.logger.record("meta/adaptation_kl", float(np.mean([result.kl for result in self.adaptations])))
            self.logger.record("meta/u_mean", float(np.mean([result.u for result in self.adaptations])))
        self._record_trust_region_step(step)
        return True

    def _meta_policy_costs(self, meta_rollouts: list[RolloutData]) -> list[np.ndarray]:
        """
        Algorithm 2 line 4's Jc(pi_phi) per task: the rollout's mean episode cost, or with ``meta_cost_confidence``
        its upper confidence bound with the spread of the pool (this iteration's episodes included).
        """
        if self.meta_cost_confidence is None:
            return [rollout.episode_cost for rollout in meta_rollouts]
        this_iteration = np.concatenate([rollout.episode_costs for rollout in meta_rollouts])
        self.meta_cost_pool = [*self.meta_cost_pool, this_iteration][-self.meta_cost_window :]
        pooled = np.concatenate(self.meta_cost_pool)
        bounds = [
            pooled_spread_upper_bound(rollout.episode_costs, pooled, self.meta_cost_confidence) for rollout in meta_rollouts
        ]
        self.logger.record(
            "meta/cost_margin_mean", float(np.mean([b - r.episode_cost for b, r in zip(bounds, meta_rollouts, strict=True)]))
        )
        self.logger.record("meta/cost_pool_episodes", len(pooled))
        return bounds

    # ------------------------------------------------------------------ task units (sb3_safemeta.common.distributed)
    def _unit_meta_rollout(self, task_index: int, task: Task, *, callback: BaseCallback) -> RolloutData | None:
        """Algorithm 2 line 3 on one task: a rollout of pi_phi. :return: None if a callback stopped training"""
        return self._collect(self.policy, task, callback, self.policy.optimizer)

    def _unit_adapt(
        self, task_index: int, task: Task, cost_limit: np.ndarray, meta_rollout: RolloutData, *, callback: BaseCallback
    ) -> tuple[ParametricAdaptResult, RolloutData] | None:
        """
        Algorithm 4 lines 5-6 on one task: A^s from phi on the meta-policy's rollout (Algorithm 3), then a rollout
        of the adapted policy pi^tau. :return: (the A^s result, the rollout), or None if a callback stopped training
        """
        self.adapted_policy.load_state_dict(self.policy.state_dict())
        result = adapt_on_rollout(self.adapted_policy, meta_rollout, self.adaptation, cost_limit)
        adapted_rollout = self._collect(self.adapted_policy, task, callback, self.policy.optimizer)
        return None if adapted_rollout is None else (result, adapted_rollout)

    def _samples(self, rollout: RolloutData, weights: np.ndarray) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        batch = rollout.to_batch(self.device)
        return batch.observations, batch.actions, th.as_tensor(weights, device=self.device)

    def _meta_step(
        self,
        adapted_rollouts: list[RolloutData],
        meta_rollouts: list[RolloutData],
        violating: list[tuple[RolloutData, int]] | None = None,
    ) -> TrustRegionResult:
        """
        Algorithm 4 lines 7-8: TRPO ascent on mean_tau E_{pi^tau}[ratio_phi w], with w = A^{pi^tau}
        (``meta_gradient="alg4"``) or the eq. (6) weights (``"eq6"``, u* and eta of ``self.adaptations``).

        :param violating: ``crpo_rule="per_task"``: the violating tasks (meta-policy rollout, worst channel), whose
            cost descent (Algorithm 2 lines 10-12, w = -A_c on pi_phi's samples) joins the same step; every task's
            weights are then divided by their standard deviation
        """
        if self.meta_gradient == "eq6":
            if len(self.adaptations) != len(adapted_rollouts):
                raise RuntimeError(
                    f"meta_gradient='eq6' needs the adaptation of every adapted rollout: "
                    f"{len(self.adaptations)} adaptations for {len(adapted_rollouts)} rollouts"
                )
            pairs = zip(adapted_rollouts, self.adaptations, strict=True)
            weights = [self._eq6_weights(rollout, adaptation) for rollout, adaptation in pairs]
        else:
            weights = [rollout.advantages for rollout in adapted_rollouts]
        if violating:
            sets = list(zip(adapted_rollouts, weights, strict=True))
            sets += [(rollout, -rollout.cost_advantages[:, channel]) for rollout, channel in violating]
            adapted_rollouts, weights = [rollout for rollout, _ in sets], [_unit_scale(w) for _, w in sets]
        samples = [self._samples(rollout, w.astype(np.float32)) for rollout, w in zip(adapted_rollouts, weights, strict=True)]
        return self._trust_region_step(ImportanceWeightedSurrogate(self.policy, samples, sign=1.0), meta_rollouts)

    def _eq6_weights(self, rollout: RolloutData, adaptation: ParametricAdaptResult) -> np.ndarray:
        """
        Eq. (6) weights of one task's adapted rollout: X in the exponent's units of ``adapt_on_rollout`` (its
        default ``normalize_advantage=True``) and the discount of the rollout's advantages (``gamma``).

        The rollout's advantages are same-trajectory estimates, so the weights are biased (double sampling, see
        :func:`~sb3_safemeta.safe_meta_dual.meta_gradient.eq6_weights`). ``trace_decay`` is deliberately not passed: the
        truncation it applies (``self.gae_lambda``, which is 1 for ``advantage_estimator="mc"``, would be the
        value) removes only the dependence of C_k on a_k and was no better, on the tabular test or on
        SafeMetaPointNav-v0 (docs/modules/safe_meta_dual.md).
        """
        if adaptation.recovery or not np.all(np.isfinite(adaptation.u)):
            return rollout.advantages  # no pi^u of Proposition 1 (cost-reducing recovery step): no Qbar term
        penalised = penalised_advantages(rollout.advantages, rollout.cost_advantages, adaptation.u)
        return eq6_weights(rollout.advantages, penalised, adaptation.eta, rollout.episode_ids, self.gamma)

    def _cost_step(self, violating: list[tuple[RolloutData, int]], meta_rollouts: list[RolloutData]) -> TrustRegionResult:
        """Algorithm 2 lines 10-12: TRPO descent on the violated cost of each violating task."""
        samples = [self._samples(rollout, rollout.cost_advantages[:, channel]) for rollout, channel in violating]
        return self._trust_region_step(ImportanceWeightedSurrogate(self.policy, samples, sign=-1.0), meta_rollouts)

    # ------------------------------------------------------------------ meta-test
    @parallel_meta_test
    def meta_test(
        self,
        n_tasks: int = 20,
        n_adapt_steps: int = 20,
        tasks: list[Task] | None = None,
        seed: int = 10_000,
        adapter_kwargs: dict[str, Any] | None = None,
        save_path: str | pathlib.Path | None = None,
        verbose: int = 0,
        n_eval_episodes: int = 10,
        eval_env: VecEnv | None = None,
        eval_confidence: float = 0.9,
        eval_cost_range: float | None = None,
        n_workers: int | None = None,
    ) -> MetaTestReport:
        """
        Adapt the meta-policy to unseen tasks: pi_[0] = pi_phi, pi_[k+1] = A^s(pi_[k]) (Section 5.1).

        :param n_tasks: number of test tasks (ignored when ``tasks`` is given)
        :param n_adapt_steps: K, adaptation steps per task
        :param tasks: explicit test tasks
        :param seed: seed of the test-task draw (distinct from training draws)
        :param adapter_kwargs: overrides of the SafeAdapter arguments (default: this model's
            adaptation hyper-parameters, ``n_steps``, ``gamma`` and ``advantage_estimator``, then its
            ``test_adaptation``); ``min_episodes`` as in ``test_adaptation``
        :param save_path: if given, write ``<save_path>.csv/.json`` and ``<save_path>.png``
        :param verbose: print one line per task
        :param n_eval_episodes: independent episodes of every explored policy (stochastic actions: the exploring
            policy itself), besides its training rollout; 0 skips them. The report then judges "within d" both
            ways; 10 episodes estimate a mean episode cost with a standard error of std / 3.2, so a policy that
            meets a hazard in one episode out of ten is seen with probability 1 - 0.9^10 = 0.65 (20: 0.88)
        :param eval_env: the VecEnv of those episodes (default: a new one of the training env's registered id)
        :param eval_confidence: confidence level of the DKW upper bound of each explored policy's expected episode
            cost from those episodes ("certified within d" in the report; needs an episode cost range)
        :param eval_cost_range: R, the largest possible episode cost, for that bound (default: the adapter's
            ``episode_cost_range``; without either, no bound is reported)
        :param n_workers: run the test tasks on this many Ray workers (None: the model's ``n_workers``); the
            report is the same for any number (each task's chain is seeded from ``seed`` and its index)
        :return: the anytime-safety report
        """
        from sb3_safemeta.safe_adapter import SafeAdapter

        self._check_meta_test(n_adapt_steps)
        tasks = tasks if tasks is not None else self.sample_tasks(n_tasks, seed=seed)
        kwargs = dict(
            cost_limit=self.cost_limit,
            **self.adaptation.as_dict(),
            n_steps=self.n_steps,
            gamma=self.gamma,
            advantage_estimator=self.advantage_estimator,
            policy_kwargs=self.policy_kwargs,
            seed=self.seed,
            device=self.device,
        )
        kwargs.update(self.test_adaptation)
        kwargs.update(adapter_kwargs or {})
        min_episodes = kwargs.pop("min_episodes", None)
        if min_episodes is not None:
            kwargs["n_steps"] = steps_for_episodes(self.env, min_episodes, kwargs["n_steps"])  # type: ignore[arg-type]
        adapter = SafeAdapter("MlpPolicy", self.env, **kwargs)  # type: ignore[arg-type]

        def adaptation_chain(task: Task, cost_limit: np.ndarray) -> Iterator[RolloutData]:
            adapter.policy.load_state_dict(self.policy.state_dict())
            adapter.dual_multipliers = np.zeros(self.n_costs)
            adapter.cost_limit = cost_limit
            self.env.env_method("set_task", task)  # type: ignore[union-attr]
            yield from adapter.adaptation_chain(n_adapt_steps)

        cost_range = eval_cost_range if eval_cost_range is not None else adapter.adaptation.episode_cost_range
        evaluate = self._independent_evaluation(
            lambda: adapter.policy, n_eval_episodes, eval_env, eval_confidence, cost_range, seed
        )
        return self._run_meta_test(
            tasks, n_adapt_steps, adaptation_chain, save_path, verbose, evaluate, n_eval_episodes, eval_confidence
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "adapted_policy", "adaptations"]
