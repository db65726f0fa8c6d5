"""
What every meta-learner of the package shares (``SafeMetaDual`` and the baselines ``MAMLCostPenalty`` and
``MetaCRPO``): the task distribution (sampling, setting a task, rollouts of any policy on it), the loop of
meta-iterations behind ``learn()``, the seeding that makes a meta-iteration reproducible and a resumed run
bit-identical, and the meta-test report. A subclass implements one meta-iteration and its adaptation at
meta-test.
"""

from __future__ import annotations

import copy
import pathlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import safe_mean, set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from sb3_safemeta.common.callbacks import call_meta_iteration_end
from sb3_safemeta.common.distributed import TaskParallelMixin, check_n_workers
from sb3_safemeta.common.evaluation import MetaTestReport, evaluate_policy_cost, make_evaluation_env
from sb3_safemeta.common.on_policy_cost_algorithm import OnPolicyCostAlgorithm
from sb3_safemeta.common.rollout_data import ADVANTAGE_ESTIMATORS, RolloutData
from sb3_safemeta.common.tasks import Task, check_sampled_tasks, check_task_distribution, task_cost_limit
from sb3_safemeta.common.trust_region import MeanKL, TrustRegionResult, trust_region_step
from sb3_safemeta.common.validation import check_in_range, check_int, check_positive

__all__ = ["OnPolicyMetaAlgorithm"]

SelfOnPolicyMetaAlgorithm = TypeVar("SelfOnPolicyMetaAlgorithm", bound="OnPolicyMetaAlgorithm")

# states kept for the Fisher / KL of a trust region (subsampled beyond this, for speed)
MAX_TRUST_REGION_STATES = 10_000


class _Silent(BaseCallback):
    """The callback of meta-test rollouts: nothing to report, never stops."""

    def _on_step(self) -> bool:
        return True


class OnPolicyMetaAlgorithm(TaskParallelMixin, OnPolicyCostAlgorithm):
    """
    Base class of the meta-learners. The environment is a task distribution (``sample_tasks``, ``set_task``,
    ``get_task``: :mod:`sb3_safemeta.common.tasks`); one rollout buffer serves every policy the algorithm
    rolls out (the meta-policy, adapted or task policies).

    A subclass implements :meth:`_meta_iteration` and ``meta_test`` (with :meth:`_run_meta_test`). The per-task
    work of a meta-iteration goes through :meth:`_map_task_units`, which runs it in-process (``n_workers=0``) or
    on Ray workers (:mod:`sb3_safemeta.common.distributed`), with the same values.
    """

    # meta-iterations done; the task generator is the source of every meta-iteration's seed. Both are
    # saved in the zip, so that a run resumes where it stopped.
    meta_iterations: int = 0
    # the hyper-parameters that set the length of an adaptation step, named when an adapted policy breaks
    adaptation_step_parameters: tuple[str, ...] = ()
    task_rng: np.random.Generator | None = None
    # the TRPO step's arguments (:meth:`_set_trust_region`)
    target_kl: float
    cg_max_steps: int
    cg_damping: float
    line_search_shrinking_factor: float
    line_search_max_iter: int

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str,
        *,
        cost_limit: float | list[float],
        meta_batch_size: int,
        n_steps: int,
        learning_rate: float | Schedule,
        batch_size: int,
        n_critic_epochs: int,
        gamma: float,
        gae_lambda: float,
        advantage_estimator: str,
        n_costs: int | None,
        stats_window_size: int,
        tensorboard_log: str | None,
        policy_kwargs: dict[str, Any] | None,
        verbose: int,
        seed: int | None,
        device: th.device | str,
        n_workers: int = 0,
        ray_address: str | None = None,
    ) -> None:
        """
        The arguments every meta-learner has (documented by the subclasses); validated here. ``n_workers`` and
        ``ray_address``: see :mod:`sb3_safemeta.common.distributed` (docs/guide/distributed.md). The actor is never
        trained by SB3's gradient loss (no entropy bonus, gSDE or gradient clipping of its own); Box and Discrete
        action spaces. The subclass calls ``_setup_model`` once its own hyper-parameters are set.
        """
        super().__init__(
            policy,  # type: ignore[arg-type]
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,
            vf_coef=1.0,
            max_grad_norm=0.5,
            use_sde=False,
            sde_sample_freq=-1,
            cost_limit=cost_limit,
            n_costs=n_costs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        if advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {advantage_estimator!r}")
        self.advantage_estimator = advantage_estimator
        self.meta_batch_size = check_int(meta_batch_size, "meta_batch_size")
        self.batch_size = check_int(batch_size, "batch_size")
        self.n_critic_epochs = check_int(n_critic_epochs, "n_critic_epochs", minimum=0)
        self.n_workers, self.ray_address = check_n_workers(n_workers, ray_address)
        self._check_parallel(self.n_workers)

    def _setup_model(self) -> None:
        if self.env is not None:  # load(path) without an env gives a model for predict(); learn() needs one
            check_task_distribution(self.env)
        if self.advantage_estimator == "mc":
            self.gae_lambda = self.cost_gae_lambda = 1.0  # Monte-Carlo returns (see rollout_data.py)
        super()._setup_model()
        if self.task_rng is None:  # not when load() restored it
            self.task_rng = np.random.default_rng(self.seed)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset)
        check_task_distribution(self.env)

    # ------------------------------------------------------------------ tasks and rollouts
    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[Task]:
        """
        :param n_tasks: number of tasks
        :param seed: seed of the draw (None: from the algorithm's task generator)
        :return: tasks drawn from the environment's task distribution
        """
        if seed is None:
            assert self.task_rng is not None
            seed = int(self.task_rng.integers(2**31 - 1))
        tasks = self.env.env_method("sample_tasks", n_tasks, seed, indices=[0])[0]  # type: ignore[union-attr]
        return check_sampled_tasks(tasks, n_tasks, seed)

    def _critic_optimizer(self, policy: BasePolicy) -> th.optim.Optimizer:
        """:return: a fresh optimizer of ``policy``'s value and cost-value heads (at the current learning rate)"""
        return self.policy.optimizer_class(  # type: ignore[call-arg]
            policy.critic_parameters(),  # type: ignore[operator]
            lr=self.lr_schedule(self._current_progress_remaining),
            **self.policy.optimizer_kwargs,
        )

    # ------------------------------------------------------------------ the TRPO step on phi
    def _set_trust_region(
        self,
        target_kl: float,
        cg_max_steps: int,
        cg_damping: float,
        line_search_shrinking_factor: float,
        line_search_max_iter: int,
        positive_damping: bool = False,
        kl_name: str = "target_kl",
    ) -> None:
        """
        Validate and store the arguments of the TRPO step on phi (Algorithm 2 lines 8 and 12; the outer step of
        every baseline), which every meta-learner takes with :meth:`_trust_region_step`.

        :param positive_damping: require ``cg_damping > 0`` (an unrolled CG needs F + damping I positive definite)
        :param kl_name: the attribute (and constructor argument) that holds the KL bound
        """
        setattr(self, kl_name, check_positive(target_kl, kl_name))
        self.cg_max_steps = check_int(cg_max_steps, "cg_max_steps")
        self.cg_damping = check_positive(cg_damping, "cg_damping", strict=positive_damping)
        self.line_search_shrinking_factor = check_in_range(
            line_search_shrinking_factor, "line_search_shrinking_factor", 0.0, 1.0, low_open=True, high_open=True
        )
        self.line_search_max_iter = check_int(line_search_max_iter, "line_search_max_iter")

    def _trust_region_step(
        self, surrogate: Callable[[], th.Tensor], rollouts: list[RolloutData], policy: BasePolicy | None = None
    ) -> TrustRegionResult:
        """
        One TRPO step (natural gradient by CG on the Fisher, KL bound ``target_kl``, backtracking line search).

        :param surrogate: the function of the actor's parameters to increase
        :param rollouts: the rollouts whose states define the trust region's KL
        :param policy: the policy that moves (default: the meta-policy)
        :return: the step's diagnostics
        """
        policy = self.policy if policy is None else policy
        return trust_region_step(
            policy.actor_parameters(),  # type: ignore[operator]
            surrogate,
            MeanKL(policy, self._trust_region_states(rollouts)),  # type: ignore[arg-type]
            max_kl=self.target_kl,
            cg_max_steps=self.cg_max_steps,
            cg_damping=self.cg_damping,
            shrinking_factor=self.line_search_shrinking_factor,
            max_backtracks=self.line_search_max_iter,
        )

    def _record_trust_region_step(self, step: TrustRegionResult) -> None:
        """Log the TRPO step on phi under SB3-contrib TRPO's keys."""
        self.logger.record("train/is_line_search_success", int(step.success))
        self.logger.record("train/kl", step.kl)
        self.logger.record("train/improvement", step.improvement)
        self.logger.record("train/gradient_norm", step.gradient_norm)

    @contextmanager
    def _acting_with(self, policy: BasePolicy) -> Iterator[None]:
        """collect_rollouts acts with (and refits the critics of) ``self.policy``: let another policy act for a while."""
        meta_policy = self.policy
        self.policy = policy  # type: ignore[assignment]
        try:
            yield
        finally:
            self.policy = meta_policy

    def _collect(
        self, policy: BasePolicy, task: Task, callback: BaseCallback, critic_optimizer: th.optim.Optimizer | None = None
    ) -> RolloutData | None:
        """
        One rollout of ``policy`` on ``task``, from fresh episodes.

        :param critic_optimizer: with ``advantage_estimator="gae"``, ``policy``'s critics are refit by it after
            the advantages were read (with the critics that collected them)
        :return: the rollout, or None if a callback asked to stop
        """
        assert self.env is not None
        self.env.env_method("set_task", task)
        self.start_new_episodes()
        with self._acting_with(policy):
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer, n_rollout_steps=self.n_steps):
                return None
            rollout = self.rollout_data(self.advantage_estimator)
            if self.advantage_estimator == "gae" and critic_optimizer is not None:
                self.train_critics(self.n_critic_epochs, self.batch_size, critic_optimizer)
        return rollout

    @contextmanager
    def _naming_step_sizes(self) -> Iterator[None]:
        """
        Turn torch's error for a policy that is no distribution (e.g. a zero standard deviation after a step of
        many nats) into one that names the hyper-parameters that set the step (``adaptation_step_parameters``).
        The TRPO steps of phi reject such steps in their line search; adaptation steps may have none.
        """
        try:
            yield
        except ValueError as error:
            if not str(error).startswith("Expected parameter"):
                raise
            names = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in self.adaptation_step_parameters)
            raise ValueError(
                f"{type(self).__name__}: a policy of this meta-iteration is no valid distribution "
                f"({str(error).splitlines()[0]}): a step moved it too far; lower {names or 'the adaptation step size'}"
            ) from error

    def _trust_region_states(self, rollouts: list[RolloutData]) -> th.Tensor:
        """:return: the states of ``rollouts`` (evenly subsampled to at most 10 000) on which a trust region's KL is taken"""
        observations = np.concatenate([rollout.observations for rollout in rollouts])
        if len(observations) > MAX_TRUST_REGION_STATES:
            keep = np.linspace(0, len(observations) - 1, MAX_TRUST_REGION_STATES).astype(int)
            observations = observations[keep]
        return th.as_tensor(observations, device=self.device).float()

    # ------------------------------------------------------------------ training
    def learn(
        self: SelfOnPolicyMetaAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOnPolicyMetaAlgorithm:
        """
        Meta-train until ``total_timesteps`` environment steps (counted over every rollout of every task).

        :param total_timesteps: environment steps
        :param callback: callback(s) called at every step (``on_rollout_end`` after each rollout, and
            ``on_meta_iteration_end`` if they have it, e.g. :class:`~sb3_safemeta.common.callbacks.MetaCheckpointCallback`)
        :param log_interval: meta-iterations between two log dumps
        :param tb_log_name: name of the run for TensorBoard logging (default: the class name)
        :param reset_num_timesteps: whether or not to reset the current timestep number (used in logging)
        :param progress_bar: display a progress bar using tqdm and rich
        :return: the trained model
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name or type(self).__name__, progress_bar
        )
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            start = time.time()
            self._update_learning_rate(self.policy.optimizer)  # the critics' optimizer (learning_rate schedule)
            with self._naming_step_sizes():
                if not self._meta_iteration(callback):
                    break
            self.meta_iterations += 1
            self._n_updates += 1
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
            self.logger.record("time/meta_iteration_seconds", time.time() - start)
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if log_interval is not None and self.meta_iterations % log_interval == 0:
                self.logger.record("meta/iterations", self.meta_iterations, exclude="tensorboard")
                self.dump_logs(self.meta_iterations)
            if not call_meta_iteration_end(callback):
                break
        callback.on_training_end()
        return self

    def _meta_iteration(self, callback: BaseCallback) -> bool:
        """One meta-iteration. :return: False if a callback stopped training"""
        raise NotImplementedError

    def _record_rollouts(self, meta_rollouts: list[RolloutData], adapted_rollouts: list[RolloutData]) -> None:
        """Log the return and the cost (channel 0: max and mean over tasks) of the meta-policy's and the adapted rollouts."""
        for prefix, rollouts in (("meta/meta_policy", meta_rollouts), ("meta/adapted", adapted_rollouts)):
            if rollouts:
                costs = [rollout.episode_cost[0] for rollout in rollouts]
                self.logger.record(f"{prefix}_return", safe_mean([rollout.episode_return for rollout in rollouts]))
                self.logger.record(f"{prefix}_cost_max", float(np.max(costs)))
                self.logger.record(f"{prefix}_cost_mean", float(np.mean(costs)))

    def _seed_iteration(self) -> int:
        """
        Seed this meta-iteration's randomness from the task generator: action noise (torch), critic
        minibatches (numpy's global generator) and the environments' resets. A meta-iteration is then a
        function of (parameters, optimizers, task generator state), all of which a checkpoint saves, so a
        run resumed from a checkpoint is bit-identical to an uninterrupted one (``load`` alone would re-seed
        every generator from ``seed``). Consequence: ``learn()`` re-seeds the global torch and numpy generators.

        :return: the iteration's seed, from which :meth:`_map_task_units` seeds every task's units
        """
        assert self.task_rng is not None and self.env is not None
        seed = int(self.task_rng.integers(2**31 - 1))
        set_random_seed(seed, using_cuda=self.device.type == "cuda")
        self.env.seed(seed)  # used at the next reset, i.e. the first rollout of this iteration
        return seed

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_task_pool", "_meta_test_call"]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if reset_num_timesteps:
            self.meta_iterations = 0
        return result

    # ------------------------------------------------------------------ meta-test
    def _check_meta_test(self, n_adapt_steps: int) -> None:
        if self.env is None:
            name = type(self).__name__
            raise ValueError(f"meta_test needs the task distribution: {name}.load(path, env=...) or set_env(env)")
        check_int(n_adapt_steps, "n_adapt_steps", minimum=0)

    @contextmanager
    def _off_the_record(self, seed: int) -> Iterator[BaseCallback]:
        """
        Meta-test rollouts collected by this model: seeded by ``seed``, counting no training timesteps and
        leaving the training statistics as they were. Yields the callback the rollouts report to.
        """
        saved = (self.num_timesteps, self.ep_info_buffer, self.ep_success_buffer, copy.copy(self.ep_cost_buffer))
        self.ep_info_buffer = deque(maxlen=self._stats_window_size)
        self.ep_success_buffer = deque(maxlen=self._stats_window_size)
        set_random_seed(seed, using_cuda=self.device.type == "cuda")
        self.env.seed(seed)  # type: ignore[union-attr]
        callback = _Silent()
        callback.init_callback(self)
        try:
            yield callback
        finally:
            self.num_timesteps, self.ep_info_buffer, self.ep_success_buffer, self.ep_cost_buffer = saved

    def _independent_evaluation(
        self,
        current_policy: Callable[[], BasePolicy],
        n_eval_episodes: int,
        eval_env: VecEnv | None,
        eval_confidence: float,
        cost_range: float | list[float] | np.ndarray | None,
        seed: int,
    ) -> Callable[[Task], tuple[float, np.ndarray, np.ndarray | None]] | None:
        """
        The independent episodes by which ``meta_test`` measures every explored policy, besides the rollout the
        next step is fitted on (that rollout's own estimate is biased towards "safe": a step is fitted to keep it
        within d). The same for every algorithm, so that their anytime safety is compared on equal terms.

        :param current_policy: returns the chain's current policy pi_[k]
        :param n_eval_episodes: episodes per explored policy (stochastic actions: the exploring policy itself); 0: none
        :param eval_env: the VecEnv of those episodes (None: a new one of the training env's registered id)
        :param eval_confidence: confidence level of the DKW upper bound of each policy's expected episode cost
        :param cost_range: R, the largest possible episode cost (one per cost channel, or one for all), for that
            bound (None: no bound)
        :param seed: seed of the evaluation env
        :return: task -> (mean return, mean episode cost (p,), upper bound (p,) or None); None when
            ``n_eval_episodes`` is 0
        """
        from sb3_safemeta.common.adaptation.confidence import episode_cost_upper_bound

        n_eval_episodes = check_int(n_eval_episodes, "n_eval_episodes", minimum=0)
        check_in_range(eval_confidence, "eval_confidence", 0.0, 1.0, low_open=True, high_open=True)
        if n_eval_episodes == 0:
            return None
        environment = eval_env if eval_env is not None else make_evaluation_env(self.env, seed + 1)  # type: ignore[arg-type]

        def evaluate(task: Task) -> tuple[float, np.ndarray, np.ndarray | None]:
            # the measurement leaves the chain as it was: its random state is restored after the episodes, so the
            # rollouts and steps are the same with or without them (and with any n_eval_episodes)
            numpy_state = np.random.get_state()
            with th.random.fork_rng(devices=[]):
                environment.env_method("set_task", task)
                # episodes seeded from the chain's generators (seeded per task): the same on a Ray worker
                environment.seed(int(np.random.randint(2**31 - 1)))
                policy = current_policy()
                returns, costs = evaluate_policy_cost(policy, environment, n_eval_episodes, self.n_costs, deterministic=False)
            np.random.set_state(numpy_state)
            bound = None if cost_range is None else episode_cost_upper_bound(costs, eval_confidence, cost_range)
            return float(returns.mean()), costs.mean(axis=0), bound

        return evaluate

    def _run_meta_test(
        self,
        tasks: list[Task],
        n_adapt_steps: int,
        adaptation_chain: Callable[[Task, np.ndarray], Iterable[RolloutData]],
        save_path: str | pathlib.Path | None,
        verbose: int,
        evaluate: Callable[[Task], tuple[float, np.ndarray, np.ndarray | None]] | None = None,
        n_eval_episodes: int = 0,
        eval_confidence: float | None = None,
    ) -> MetaTestReport:
        """
        The anytime-safety report of meta-test (Section 5.1): every task's chain pi_[0] = pi_phi, ..., pi_[K].

        :param tasks: the test tasks
        :param n_adapt_steps: K
        :param adaptation_chain: (task, its cost limit d) -> the K + 1 rollouts of pi_[0], ..., pi_[K] on it
        :param save_path: if given, write ``<save_path>.csv/.json`` and ``<save_path>.png``
        :param verbose: print one line per task
        :param evaluate: task -> (mean return, mean episode cost (p,), upper confidence bound (p,) or None) of the
            chain's current policy on independent episodes; called after each rollout, while pi_[k] is current
        :param n_eval_episodes: the episodes ``evaluate`` runs (for the report)
        :param eval_confidence: the confidence level of the bounds ``evaluate`` returns (for the report)
        :return: the report (mean episode return and cost of every explored policy; ``adapt_seconds``, the time of
            the adaptation steps alone: the chain's time less its rollouts' collection and the independent episodes)
        """
        shape = (len(tasks), n_adapt_steps + 1)
        returns, costs = np.zeros(shape), np.zeros((*shape, self.n_costs))
        eval_returns, eval_costs, eval_bounds = (
            np.zeros(shape),
            np.zeros((*shape, self.n_costs)),
            np.zeros((*shape, self.n_costs)),
        )
        has_bounds, eval_seconds, adapt_seconds = True, 0.0, 0.0
        limits = np.zeros((len(tasks), self.n_costs))
        worker_reports = self._meta_test_reports(tasks)  # None in-process; else one report per task, from the workers
        for index, task in enumerate(tasks):
            limits[index] = task_cost_limit(task, self.cost_limit, self.n_costs)
            if worker_reports is not None:  # the same rows, computed on the workers
                row = worker_reports[index]
                returns[index], costs[index] = row.returns[0], row.costs[0]
                if evaluate is not None:
                    eval_returns[index], eval_costs[index] = row.eval_returns[0], row.eval_costs[0]
                    eval_seconds += row.eval_seconds
                    has_bounds = has_bounds and row.eval_cost_bounds is not None
                    if row.eval_cost_bounds is not None:
                        eval_bounds[index] = row.eval_cost_bounds[0]
                adapt_seconds += row.adapt_seconds
            else:
                self._seed_meta_test_task(index)  # each chain seeded from (seed, task index): the same on a worker
                with self._naming_step_sizes():
                    resumed = time.perf_counter()
                    for step, rollout in enumerate(adaptation_chain(task, limits[index].copy())):
                        if step > 0:  # since the chain resumed: step k-1 of the algorithm, then pi_[k]'s rollout
                            adapt_seconds += time.perf_counter() - resumed - rollout.collect_seconds
                        returns[index, step], costs[index, step] = rollout.episode_return, rollout.episode_cost
                        if evaluate is not None:
                            start = time.perf_counter()
                            eval_returns[index, step], eval_costs[index, step], bound = evaluate(task)
                            eval_seconds += time.perf_counter() - start
                            has_bounds = has_bounds and bound is not None
                            if bound is not None:
                                eval_bounds[index, step] = bound
                        resumed = time.perf_counter()
            if verbose:
                line = f"task {index}: returns {np.round(returns[index], 1).tolist()} max cost {costs[index, :, 0].max():.1f}"
                if evaluate is not None:
                    line += f" (independent episodes: max cost {eval_costs[index, :, 0].max():.1f})"
                print(line)
        report = MetaTestReport(returns, costs, limits, tasks=list(tasks), label=type(self).__name__)
        report.adapt_seconds = adapt_seconds
        if evaluate is not None:
            report.eval_returns, report.eval_costs, report.n_eval_episodes = eval_returns, eval_costs, n_eval_episodes
            report.eval_seconds = eval_seconds
            if has_bounds:
                report.eval_cost_bounds, report.cost_confidence = eval_bounds, eval_confidence
        if save_path is not None:
            report.save(save_path)
            report.plot(pathlib.Path(save_path).with_suffix(".png"))
        return report
