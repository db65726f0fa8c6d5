"""
The meta-CRPO baseline (Khattar et al. 2023, "A CMDP-within-online framework for meta-safe reinforcement
learning"; Section 6 of the paper): every task is solved by CRPO (Xu et al. 2021, "CRPO: a new approach for
safe reinforcement learning with convergence guarantee") started from the meta-policy, and the meta-policy
is moved towards the task policies so that its average distance to them shrinks. Nothing in the
meta-training makes the meta-policy itself safe (no safe meta-training stage), and CRPO only reacts to a
violation after it has measured it: both are what the paper's anytime-safety comparison is about.
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
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.common.distributed import parallel_meta_test
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.common.functional_policy import mean_kl
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.common.tasks import Task, task_cost_limit
from sb3_safemeta.common.trust_region import ImportanceWeightedSurrogate, MeanKL, TrustRegionResult, trust_region_step
from sb3_safemeta.common.validation import as_cost_vector, check_int, check_positive
from sb3_safemeta.meta_crpo.policies import MlpPolicy

__all__ = ["META_UPDATES", "CRPOStepResult", "MetaCRPO", "average_distance_update", "crpo_step", "running_mean_update"]

# the meta-update's target: the mean of the task parameters of every task seen so far (the paper's description of
# meta-CRPO), or of the current batch only
META_UPDATES = ("running_mean", "batch")


# ---------------------------------------------------------------------------------------------- one CRPO step
@dataclass(frozen=True)
class CRPOStepResult:
    """
    :param cost_step: True if the step decreased a violated cost, False if it increased the reward
    :param channel: the cost channel the step decreased (the most violated one), -1 for a reward step
    :param excess: Jc_i - d_i - eta_tol_i of every channel at the policy before the step, (p,)
    :param trust_region: what the TRPO step did (line-search success, KL, surrogate improvement)
    """

    cost_step: bool
    channel: int
    excess: np.ndarray
    trust_region: TrustRegionResult


def crpo_step(
    policy: ActorCriticPolicy,
    parameters: Sequence[nn.Parameter],
    batch: AdaptationBatch,
    cost_estimate: Any,
    cost_limit: Any,
    eta_tol: Any = 0.0,
    max_kl: float = 0.01,
    cg_max_steps: int = 10,
    cg_damping: float = 0.1,
    shrinking_factor: float = 0.8,
    max_backtracks: int = 10,
) -> CRPOStepResult:
    """
    One CRPO step (Xu et al. 2021, Algorithm 1) on data collected with ``policy``, in place.

    If some constraint is violated beyond the tolerance, Jc_i > d_i + eta_tol_i, the step DEcreases the cost of
    the most violated channel i (largest Jc_i - d_i - eta_tol_i); otherwise it increases the reward. Either way
    it is a TRPO step (natural gradient by conjugate gradient on the Fisher of the mean KL over the batch's
    states, scaled to ``max_kl``, backtracking line search) on the importance-weighted surrogate
    ``E_batch[(pi(a|s) / pi_old(a|s)) A(s, a)]`` (or ``-E[ratio A_ci]``), whose gradient at the current
    parameters is the policy gradient of J (or of -Jc_i) up to the factor 1 / (1 - gamma).

    :param policy: the policy that collected ``batch``; its ``parameters`` move
    :param parameters: the actor's parameters (never a critic)
    :param batch: samples with weights summing to one (uniform for a rollout, the exact visitation
        nu(s) pi(a|s) over every (s, a) pair on a tabular CMDP)
    :param cost_estimate: the estimate of Jc(pi), (p,), in the units of ``cost_limit``
    :param cost_limit: d, (p,)
    :param eta_tol: tolerance eta of the constraint check, >= 0, float or (p,)
    :param max_kl: KL bound of the step
    :param cg_max_steps: conjugate-gradient iterations
    :param cg_damping: damping of the Fisher-vector product
    :param shrinking_factor: step shrink factor of the line search
    :param max_backtracks: line-search iterations
    :return: which branch was taken and what the TRPO step did
    """
    n_costs = batch.cost_advantages.shape[1]
    estimate = as_cost_vector(cost_estimate, n_costs, "cost_estimate")
    limit = as_cost_vector(cost_limit, n_costs, "cost_limit")
    tolerance = as_cost_vector(eta_tol, n_costs, "eta_tol", allow_negative=False)
    excess = estimate - limit - tolerance
    cost_step = bool(np.any(excess > 0))
    channel = int(np.argmax(excess)) if cost_step else -1
    signal = batch.cost_advantages[:, channel] if cost_step else batch.advantages
    # mean over the n samples of ratio * (n w A) = sum_k w_k ratio_k A_k: the weighted expectation
    weights = (len(signal) * batch.weights * signal).float()
    surrogate = ImportanceWeightedSurrogate(
        policy, [(batch.observations, batch.actions, weights)], sign=-1.0 if cost_step else 1.0
    )
    step = trust_region_step(
        parameters,
        surrogate,
        MeanKL(policy, batch.observations),
        max_kl=max_kl,
        cg_max_steps=cg_max_steps,
        cg_damping=cg_damping,
        shrinking_factor=shrinking_factor,
        max_backtracks=max_backtracks,
    )
    return CRPOStepResult(cost_step, channel, excess, step)


def average_distance_update(phi: th.Tensor, task_parameters: Sequence[th.Tensor], meta_lr: float) -> th.Tensor:
    """
    The meta-update of meta-CRPO: one gradient step of size ``meta_lr`` on the average squared Euclidean
    distance ``mean_tau 1/2 ||phi - theta_tau||^2``, i.e. ``phi + meta_lr * mean_tau (theta_tau - phi)``
    (the Reptile update, Nichol et al. 2018). ``meta_lr = 1`` lands on the minimiser, the mean of the
    theta_tau.

    :param phi: the meta-parameters, a flat vector
    :param task_parameters: the task parameters theta_tau, flat vectors of the shape of ``phi``
    :param meta_lr: step size in (0, 1]
    :return: the new meta-parameters (``phi`` itself is not modified)
    """
    if not task_parameters:
        raise ValueError("average_distance_update needs at least one task parameter vector")
    if not 0.0 < meta_lr <= 1.0:
        raise ValueError(f"meta_lr must be in (0, 1], got {meta_lr!r}")
    for theta in task_parameters:
        if theta.shape != phi.shape:
            raise ValueError(f"task parameters of shape {tuple(theta.shape)} do not match phi's {tuple(phi.shape)}")
    differences = th.stack([theta - phi for theta in task_parameters])
    return phi + meta_lr * differences.mean(dim=0)


def running_mean_update(mean: np.ndarray | None, n_seen: int, task_parameters: Sequence[th.Tensor]) -> tuple[np.ndarray, int]:
    """
    The minimiser of the average squared distance to the task parameters of ALL tasks seen so far,
    ``argmin_phi 1 / N sum_{j <= N} 1/2 ||phi - theta_j||^2 = mean_j theta_j``, updated with a new batch:
    ``(n_seen * mean + sum_batch theta) / (n_seen + batch size)``, in float64 (the value kept between
    meta-iterations and saved with the model, so that a resumed run is bit-identical).

    :param mean: the mean of the ``n_seen`` task parameter vectors seen before (None if none)
    :param n_seen: how many tasks ``mean`` averages (>= 0)
    :param task_parameters: the new batch's theta_tau, flat vectors of one shape
    :return: the mean over all ``n_seen + len(task_parameters)`` tasks, and that count
    """
    if not task_parameters:
        raise ValueError("running_mean_update needs at least one task parameter vector")
    if int(n_seen) < 0 or (n_seen > 0 and mean is None):
        raise ValueError(f"n_seen must be >= 0 and come with a mean, got n_seen={n_seen!r}, mean={mean!r}")
    batch = np.stack([theta.detach().cpu().double().numpy() for theta in task_parameters])
    if n_seen > 0 and mean is not None and mean.shape != batch.shape[1:]:
        raise ValueError(f"task parameters of shape {batch.shape[1:]} do not match the running mean's {mean.shape}")
    total = int(n_seen) + len(batch)
    previous = (int(n_seen) * mean) if (n_seen > 0 and mean is not None) else 0.0
    return (previous + batch.sum(axis=0)) / total, total


# ---------------------------------------------------------------------------------------------- the algorithm
class MetaCRPO(OnPolicyMetaAlgorithm):
    """
    meta-CRPO, the baseline of Khattar et al. (2023) in the paper's comparison (Section 6): per task, CRPO
    (Xu et al. 2021) from the meta-policy; the meta-policy minimises the average distance to the task policies.

    One meta-iteration samples ``meta_batch_size`` tasks. For each task the task policy starts as a copy of
    pi_phi and takes ``n_inner_steps`` CRPO steps (:func:`crpo_step`), each on a fresh rollout of the current
    task policy: a TRPO step (KL bound ``adapt_kl``) that decreases the most violated cost when the rollout's
    episode cost exceeds d + ``eta_tol``, else one that increases the reward. The final task parameters theta_tau
    are kept, and phi <- phi + ``meta_lr`` * (target - phi) with target the minimiser of the average distance to
    the task policies: of ALL tasks seen so far with ``meta_update="running_mean"`` (default, as the paper
    describes meta-CRPO; :func:`running_mean_update`, the running mean is saved with the model), of the current
    batch with ``meta_update="batch"`` (:func:`average_distance_update`, the Reptile update).

    Distance: the Euclidean distance of the policy parameters (actor and critics; with
    ``advantage_estimator="mc"`` the critics never move). The paper describes the meta-update of meta-CRPO as
    the meta-policy "that has the minimal average distance to the task-specific policies"; the Euclidean
    distance makes the minimiser the mean of the theta_tau and its gradient step the Reptile update, costs
    nothing beyond the task policies, and matches the geometry of the task steps locally (each CRPO step has
    KL(pi_old || pi_new) <= ``adapt_kl``, and for small steps that KL is a quadratic form 1/2 dtheta^T F dtheta
    in the same parameters). A policy-space distance (e.g. an average KL) would need a barycentre fit per
    iteration, which has no closed form for state-dependent Gaussian policies.

    There is no safe meta-training stage: nothing constrains pi_phi (it is not checked against the training
    tasks' limits before it is adapted), and at meta-test the chain pi_[0] = pi_phi, pi_[k+1] = CRPO(pi_[k])
    explores with any policy CRPO produces; a violation is corrected only after it has been measured.

    Timesteps: one meta-iteration uses ``meta_batch_size * n_inner_steps * n_steps * n_envs`` environment steps.

    :param policy: the policy model to use (MlpPolicy)
    :param env: a task environment (see :mod:`sb3_safemeta.common.tasks`), or its registered id
    :param cost_limit: episode cost limit d (float or per channel); a task's ``"cost_limit"`` overrides it
    :param eta_tol: tolerance eta of CRPO's constraint check (float or per channel, >= 0): a cost step is taken
        when Jc_i > d_i + eta_tol_i (Xu et al. 2021)
    :param meta_batch_size: tasks per meta-iteration
    :param n_inner_steps: CRPO steps per task in meta-training (one rollout each; 2: two rollouts per task, the
        data budget of the other meta-learners, and the second one is the adapted policy's)
    :param meta_update: ``"running_mean"`` (default: the target of the meta-update is the mean of the task
        parameters of every task seen so far) or ``"batch"`` (the mean over the current batch)
    :param meta_lr: step size of the meta-update, in (0, 1] (1: phi becomes the target)
    :param n_steps: steps per environment per rollout
    :param adapt_kl: KL bound of every CRPO step (meta-training and meta-test)
    :param cg_max_steps: conjugate-gradient iterations of a CRPO step
    :param cg_damping: damping of the Fisher-vector product
    :param line_search_shrinking_factor: step shrink factor of the line search
    :param line_search_max_iter: line-search iterations
    :param learning_rate: learning rate of the critics (used with ``advantage_estimator="gae"``)
    :param batch_size: minibatch size of the critic regression
    :param n_critic_epochs: critic epochs per rollout (``"gae"`` only)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (``"gae"`` only)
    :param advantage_estimator: ``"mc"`` (default, as SafeMetaDual: Monte-Carlo returns and a per-task linear
        baseline) or ``"gae"`` (each task policy fits its own copy of the meta-policy's critics)
    :param n_costs: number of cost channels (None: from the env or ``cost_limit``)
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: seed for the pseudo random generators and the task sampler; every meta-iteration re-seeds
        torch, numpy and the environments from the task sampler, whose state is saved (as in SafeMetaDual)
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param n_workers: 0 (default): every task's work runs in this process; N > 0: on N Ray workers, with the same
        result (``advantage_estimator="mc"``; docs/guide/distributed.md)
    :param ray_address: with ``n_workers > 0``: None starts a local Ray instance, ``"auto"`` or ``"host:port"``
        joins a running cluster
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    adapt_kl: float  # KL bound of the CRPO steps (set by _set_trust_region)

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    # every task starts from phi's critics with an optimizer of its own: tasks are independent with "gae" too
    parallel_advantage_estimators = ("mc", "gae")
    adaptation_step_parameters = ("adapt_kl", "n_inner_steps")

    def __init__(
        self,
        policy: str | type[MlpPolicy],
        env: GymEnv | str,
        cost_limit: float | list[float] = 25.0,
        eta_tol: float | list[float] = 0.0,
        meta_batch_size: int = 10,
        n_inner_steps: int = 2,
        meta_update: str = "running_mean",
        meta_lr: float = 1.0,
        n_steps: int = 200,
        adapt_kl: float = 0.01,
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
        self.eta_tol = as_cost_vector(eta_tol, self.n_costs, "eta_tol", allow_negative=False)
        self.n_inner_steps = check_int(n_inner_steps, "n_inner_steps")
        meta_lr = check_positive(meta_lr, "meta_lr")
        if meta_lr > 1.0:
            raise ValueError(f"meta_lr must be in (0, 1] (1: phi becomes the mean of the task parameters), got {meta_lr!r}")
        self.meta_lr = meta_lr
        if meta_update not in META_UPDATES:
            raise ValueError(f"meta_update must be one of {META_UPDATES}, got {meta_update!r}")
        self.meta_update = meta_update
        # the running mean (float64, flat over policy.parameters()) of the task parameters of every task seen
        self.task_parameter_mean: np.ndarray | None = None
        self.n_seen_tasks = 0
        # the TRPO steps of CRPO on the task policies (meta-CRPO has no trust-region step on phi)
        self._set_trust_region(
            adapt_kl, cg_max_steps, cg_damping, line_search_shrinking_factor, line_search_max_iter, kl_name="adapt_kl"
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        # theta_tau of the task being solved: same architecture, weights copied from phi per task
        self.task_policy = copy.deepcopy(self.policy)

    def step_on_rollout(self, policy: BasePolicy, rollout: RolloutData, cost_limit: np.ndarray) -> CRPOStepResult:
        """
        One CRPO step of ``policy`` on its own rollout (:func:`crpo_step` with this model's hyper-parameters).

        :param policy: the task policy that collected ``rollout``
        :param rollout: its rollout on the task
        :param cost_limit: the task's limit d, (p,)
        :return: which branch was taken and what the TRPO step did
        """
        return crpo_step(
            policy,  # type: ignore[arg-type]
            policy.actor_parameters(),  # type: ignore[operator]
            rollout.to_batch(self.device),
            rollout.episode_cost,
            cost_limit,
            eta_tol=self.eta_tol,
            max_kl=self.adapt_kl,
            cg_max_steps=self.cg_max_steps,
            cg_damping=self.cg_damping,
            shrinking_factor=self.line_search_shrinking_factor,
            max_backtracks=self.line_search_max_iter,
        )

    # ------------------------------------------------------------------ training
    def _meta_iteration(self, callback: BaseCallback) -> bool:
        """
        One meta-iteration: CRPO from phi on every task of a batch, then the average-distance update.

        :return: False if a callback stopped training
        """
        tasks = self.sample_tasks(self.meta_batch_size)
        seed = self._seed_iteration()
        phi = parameters_to_vector(self.policy.parameters()).detach().clone()
        # CRPO from phi on every task (a task unit each)
        results = self._map_task_units("crpo", seed, [(i, (task,)) for i, task in enumerate(tasks)], callback)
        if results is None:
            return False
        task_parameters: list[th.Tensor] = [parameters for parameters, _, _ in results]
        rollouts = [task_rollouts for _, task_rollouts, _ in results]
        meta_rollouts: list[RolloutData] = [task_rollouts[0] for task_rollouts in rollouts]  # pi_phi's, one per task
        # rollouts of task policies after at least one CRPO step
        adapted_rollouts: list[RolloutData] = [rollout for task_rollouts in rollouts for rollout in task_rollouts[1:]]
        steps: list[CRPOStepResult] = [step for _, _, task_steps in results for step in task_steps]
        # E_s[KL(pi_phi || pi_theta_tau)] of each task's whole adaptation, on the meta-policy's states
        adaptation_kls: list[float] = []
        for theta, meta_rollout in zip(task_parameters, meta_rollouts, strict=True):
            vector_to_parameters(theta, self.task_policy.parameters())
            adaptation_kls.append(mean_kl(self.policy, self.task_policy, meta_rollout.to_batch(self.device).observations))
        if self.meta_update == "running_mean":
            self.task_parameter_mean, self.n_seen_tasks = running_mean_update(
                self.task_parameter_mean, self.n_seen_tasks, task_parameters
            )
            target = th.as_tensor(self.task_parameter_mean, device=phi.device)
            new_phi = target if self.meta_lr == 1.0 else phi.double() + self.meta_lr * (target - phi.double())
            new_phi = new_phi.to(phi.dtype)
        else:
            new_phi = average_distance_update(phi, task_parameters, self.meta_lr)
        vector_to_parameters(new_phi, self.policy.parameters())

        excesses = np.array([step.excess for step in steps[:: self.n_inner_steps]])  # pi_phi's, one per task
        accepted = [step.trust_region for step in steps if step.trust_region.success]
        self.logger.record("meta/crpo_cost_steps", sum(step.cost_step for step in steps))
        self.logger.record("meta/violating_tasks", int(np.sum(np.any(excesses > 0, axis=1))))
        self._record_rollouts(meta_rollouts, adapted_rollouts)
        self.logger.record("meta/task_distance", float(np.mean([float((theta - phi).norm()) for theta in task_parameters])))
        self.logger.record("meta/adaptation_kl", float(np.mean(adaptation_kls)))
        self.logger.record("meta/seen_tasks", self.n_seen_tasks)
        self.logger.record("meta/update_norm", float((new_phi - phi).norm()))
        self.logger.record("train/is_line_search_success", len(accepted) / len(steps))
        self.logger.record("train/kl", float(np.mean([step.kl for step in accepted])) if accepted else 0.0)
        self.logger.record("train/gradient_norm", float(np.mean([step.trust_region.gradient_norm for step in steps])))
        self.logger.record("train/improvement", float(np.mean([step.improvement for step in accepted])) if accepted else 0.0)
        return True

    def _unit_crpo(
        self, task_index: int, task: Task, *, callback: BaseCallback
    ) -> tuple[th.Tensor, list[RolloutData], list[CRPOStepResult]] | None:
        """
        One task of a meta-iteration: ``n_inner_steps`` CRPO steps from phi, each on a rollout of the current task
        policy (its critics refit from phi's with ``advantage_estimator="gae"``).

        :return: (the task policy's parameters, its rollouts, its steps), or None if a callback stopped training
        """
        limit = task_cost_limit(task, self.cost_limit, self.n_costs)
        self.task_policy.load_state_dict(self.policy.state_dict())
        critic_optimizer = self._critic_optimizer(self.task_policy)
        rollouts, steps = [], []
        for _ in range(self.n_inner_steps):
            rollout = self._collect(self.task_policy, task, callback, critic_optimizer)
            if rollout is None:
                return None
            rollouts.append(rollout)
            steps.append(self.step_on_rollout(self.task_policy, rollout, limit))
        return parameters_to_vector(self.task_policy.parameters()).detach().clone(), rollouts, steps

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
        Adapt the meta-policy to unseen tasks by CRPO: pi_[0] = pi_phi, pi_[k+1] = CRPO(pi_[k]) on a rollout of
        pi_[k] (K + 1 rollouts and K steps per task). The meta-policy is left untouched.

        :param n_tasks: number of test tasks (ignored when ``tasks`` is given)
        :param n_adapt_steps: K, CRPO steps per task
        :param tasks: explicit test tasks
        :param seed: seed of the test-task draw (distinct from training draws) and of the meta-test's rollouts
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
        :return: the anytime-safety report (mean episode return and cost of every explored policy pi_[k])
        """
        self._check_meta_test(n_adapt_steps)
        tasks = tasks if tasks is not None else self.sample_tasks(n_tasks, seed=seed)

        def adaptation_chain(task: Task, cost_limit: np.ndarray) -> Iterator[RolloutData]:
            self.task_policy.load_state_dict(self.policy.state_dict())
            critic_optimizer = self._critic_optimizer(self.task_policy)
            for step in range(n_adapt_steps + 1):
                rollout = self._collect(self.task_policy, task, callback, critic_optimizer)
                assert rollout is not None  # the meta-test callback never stops
                yield rollout
                if step < n_adapt_steps:
                    self.step_on_rollout(self.task_policy, rollout, cost_limit)

        evaluate = self._independent_evaluation(
            lambda: self.task_policy, n_eval_episodes, eval_env, eval_confidence, eval_cost_range, seed
        )
        with self._off_the_record(seed) as callback:
            return self._run_meta_test(
                tasks, n_adapt_steps, adaptation_chain, save_path, verbose, evaluate, n_eval_episodes, eval_confidence
            )

    # ------------------------------------------------------------------ SB3 plumbing
    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "task_policy"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy"], []
