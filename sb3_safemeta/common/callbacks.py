"""
Callbacks with a hook at the end of every meta-iteration, checkpointing for resumable meta-training, and the
cost-aware evaluation callback (best model = best feasible model).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv

from sb3_safemeta.common.evaluation import evaluate_policy_cost, independent_episodes
from sb3_safemeta.common.run_dir import atomic_path
from sb3_safemeta.common.validation import check_int

__all__ = [
    "CostEvalCallback",
    "CostEvaluation",
    "MetaCheckpointCallback",
    "MetaIterationCallback",
    "MetaValidationCallback",
    "StopTrainingOnMetaIterations",
    "ValidationPoint",
    "call_meta_iteration_end",
]


class MetaIterationCallback(BaseCallback):
    """A callback that is also called once at the end of each meta-iteration (phi just updated)."""

    def on_meta_iteration_end(self) -> bool:
        """:return: False to stop training"""
        return self._on_meta_iteration_end()

    def _on_meta_iteration_end(self) -> bool:
        return True

    def _on_step(self) -> bool:
        return True


def call_meta_iteration_end(callback: BaseCallback) -> bool:
    """
    Call ``on_meta_iteration_end`` on every :class:`MetaIterationCallback` inside ``callback``.

    :param callback: the callback passed to ``learn`` (possibly a CallbackList)
    :return: False if one of them asked to stop
    """
    callbacks = callback.callbacks if isinstance(callback, CallbackList) else [callback]
    keep_going = True
    for item in callbacks:
        if isinstance(item, CallbackList):
            keep_going = call_meta_iteration_end(item) and keep_going
        elif isinstance(item, MetaIterationCallback):
            keep_going = item.on_meta_iteration_end() and keep_going
    return keep_going


class MetaCheckpointCallback(MetaIterationCallback):
    """
    Save the model every ``save_freq`` meta-iterations, at the iteration boundary, so that an
    interrupted run can be resumed with exactly the meta-iterations that were left::

        model = SafeMetaDual.load(callback.latest_path, env=env)
        model.learn(total_timesteps - model.num_timesteps, reset_num_timesteps=False, callback=callback)

    (SB3 semantics: with ``reset_num_timesteps=False``, ``learn(n)`` trains ``n`` *more* steps.) The
    task sampler's state is in the zip and SafeMetaDual seeds every meta-iteration from it, so with a
    fixed seed the resumed run ends with the same parameters as an uninterrupted one.

    Writes ``<save_path>/<name_prefix>_<iterations>_iterations.zip`` and overwrites
    ``<save_path>/<name_prefix>_latest.zip``, each atomically (a temporary file unique to the process,
    then a rename: :mod:`sb3_safemeta.common.run_dir`).

    :param save_freq: meta-iterations between two checkpoints
    :param save_path: folder of the checkpoints
    :param name_prefix: file name prefix
    :param keep_all: keep every checkpoint (else only ``latest``)
    :param verbose: 1 prints a line per checkpoint
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str | pathlib.Path,
        name_prefix: str = "safemeta",
        keep_all: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        save_freq = check_int(save_freq, "save_freq")
        self.save_freq, self.save_path, self.name_prefix, self.keep_all = (
            int(save_freq),
            pathlib.Path(save_path),
            name_prefix,
            keep_all,
        )

    @property
    def latest_path(self) -> pathlib.Path:
        return self.save_path / f"{self.name_prefix}_latest.zip"

    def _on_meta_iteration_end(self) -> bool:
        iterations = int(getattr(self.model, "meta_iterations", 0))
        if iterations % self.save_freq == 0:
            # write under a temporary name unique to this process, then rename: a run killed while saving never
            # leaves a truncated checkpoint, and two writers never share a temporary file
            targets = [self.latest_path]
            if self.keep_all:
                targets.insert(0, self.save_path / f"{self.name_prefix}_{iterations}_iterations.zip")
            for target in targets:
                with atomic_path(target) as temporary:
                    self.model.save(temporary)
            if self.verbose:
                print(f"checkpoint: {self.latest_path} after {iterations} meta-iterations")
        return True


class StopTrainingOnMetaIterations(MetaIterationCallback):
    """
    Stop training once the model has done ``max_meta_iterations`` meta-iterations in all (counted by
    ``model.meta_iterations``, so a resumed run stops at the same total), like SB3's
    ``StopTrainingOnMaxEpisodes``. A cost-reducing iteration uses fewer environment steps than a meta
    step, so a budget in meta-iterations is not a fixed number of timesteps.

    :param max_meta_iterations: total meta-iterations
    :param verbose: verbosity level
    """

    def __init__(self, max_meta_iterations: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        max_meta_iterations = check_int(max_meta_iterations, "max_meta_iterations")
        self.max_meta_iterations = int(max_meta_iterations)

    def _on_meta_iteration_end(self) -> bool:
        return int(getattr(self.model, "meta_iterations", 0)) < self.max_meta_iterations


@dataclass(frozen=True)
class CostEvaluation:
    """
    One evaluation of :class:`CostEvalCallback`.

    :param timesteps: ``num_timesteps`` of the model when it was evaluated
    :param returns: (n,) episode returns (meta-learners: per test task, the mean episode return of the policy
        after one adaptation step)
    :param costs: (n, p) episode costs (meta-learners: per task, the adapted policy's mean episode cost)
    :param cost_limits: (n, p) the limit d of every episode (task)
    :param meta_policy_returns: meta-learners only: (n,) the same for the meta-policy itself (before adaptation)
    :param meta_policy_costs: meta-learners only: (n, p)
    """

    timesteps: int
    returns: np.ndarray
    costs: np.ndarray
    cost_limits: np.ndarray
    meta_policy_returns: np.ndarray | None = None
    meta_policy_costs: np.ndarray | None = None

    @property
    def within_limit(self) -> float:
        """:return: fraction of the episodes (tasks) whose every cost channel is within d"""
        return float(np.mean(np.all(self.costs <= self.cost_limits + 1e-9, axis=1)))

    @property
    def feasible(self) -> bool:
        """:return: every evaluated policy within d on every episode (task) and channel, the meta-policy included"""
        ok = bool(np.all(self.costs <= self.cost_limits + 1e-9))
        if self.meta_policy_costs is not None:
            ok = ok and bool(np.all(self.meta_policy_costs <= self.cost_limits + 1e-9))
        return ok


class CostEvalCallback(MetaIterationCallback):
    """
    SB3's ``EvalCallback`` for constrained (meta-)RL: evaluates reward AND cost, and keeps as best model the best
    **feasible** one (the highest mean reward among the evaluations whose every episode is within the cost limit d),
    never an unsafe model with a higher reward.

    - For a meta-learner (a model with ``meta_test``, e.g. SafeMetaDual and the baselines) an evaluation is
      ``model.meta_test(n_tasks=n_eval_episodes, n_adapt_steps=1, seed=eval_seed)``: the same unseen tasks at every
      evaluation, each adapted by one step of the model's own adaptation (A^s for SafeMetaDual: the policy users
      deploy). The "episodes" are the tasks (each a rollout's mean episode return and cost of the adapted policy);
      the meta-policy's own rollouts are recorded too, and feasibility requires both within d (anytime safety).
      It runs at the end of a meta-iteration (never in the middle of one: the meta-test uses the training
      environment), at the first one where ``num_timesteps`` has passed the next multiple of ``eval_freq``, and it
      leaves training untouched (seeded apart, no timestep counted).
    - For any other model (e.g. SafeAdapter): ``n_eval_episodes`` episodes on ``eval_env`` with
      :func:`~sb3_safemeta.common.evaluation.evaluate_policy_cost`, every ``eval_freq`` environment steps.

    Logs ``eval/mean_reward``, ``eval/std_reward``, ``eval/mean_cost``, ``eval/max_cost`` (channel 0 and
    ``eval/max_cost_<i>`` for i >= 1), ``eval/within_limit`` (fraction of episodes / tasks within d),
    ``eval/feasible`` and, for meta-learners, ``eval/meta_policy_mean_reward`` and ``eval/meta_policy_max_cost``.
    Writes ``<log_path>/evaluations.npz`` with SB3's ``timesteps`` and ``results`` plus ``costs`` (n_evals, n, p),
    ``cost_limits``, ``feasible``, ``within_limit`` (and ``meta_policy_results``, ``meta_policy_costs``), and
    ``<best_model_save_path>/best_model.zip`` for every new best feasible evaluation.

    :param eval_env: the evaluation environment (not needed for meta-learners, which meta-test on unseen tasks)
    :param n_eval_episodes: episodes per evaluation (meta-learners: unseen test tasks)
    :param eval_freq: environment steps between two evaluations (``num_timesteps``, over all environments)
    :param log_path: folder of ``evaluations.npz`` (None: not written)
    :param best_model_save_path: folder of ``best_model.zip`` (None: not saved)
    :param cost_limit: d (float or per channel); None: the model's ``cost_limit`` (meta-learners: each task's own)
    :param deterministic: deterministic actions (non-meta models; a meta-test explores with the policies)
    :param eval_seed: seed of the meta-test's task draw and rollouts (distinct from training draws)
    :param callback_on_new_best: called when a new best feasible model is found
    :param verbose: 1 prints one line per evaluation
    """

    def __init__(
        self,
        eval_env: VecEnv | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10_000,
        log_path: str | pathlib.Path | None = None,
        best_model_save_path: str | pathlib.Path | None = None,
        cost_limit: float | list[float] | None = None,
        deterministic: bool = True,
        eval_seed: int = 20_000,
        callback_on_new_best: BaseCallback | None = None,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        if int(n_eval_episodes) < 1:
            raise ValueError(f"n_eval_episodes must be a positive integer, got {n_eval_episodes!r}")
        if int(eval_freq) < 1:
            raise ValueError(f"eval_freq must be a positive number of environment steps, got {eval_freq!r}")
        self.eval_env, self.n_eval_episodes, self.eval_freq = eval_env, int(n_eval_episodes), int(eval_freq)
        self.log_path = None if log_path is None else pathlib.Path(log_path)
        self.best_model_save_path = None if best_model_save_path is None else pathlib.Path(best_model_save_path)
        self.cost_limit = cost_limit
        self.deterministic, self.eval_seed = deterministic, int(eval_seed)
        self.callback_on_new_best = callback_on_new_best
        self.evaluations: list[CostEvaluation] = []
        self.best_mean_reward = -np.inf  # of the feasible evaluations
        self.last_mean_reward = -np.inf
        self._next_evaluation = self.eval_freq

    @property
    def is_meta_learner(self) -> bool:
        return callable(getattr(self.model, "meta_test", None))

    def _init_callback(self) -> None:
        if not self.is_meta_learner and self.eval_env is None:
            raise ValueError("CostEvalCallback needs an eval_env for a model without meta_test")
        for folder in (self.log_path, self.best_model_save_path):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.init_callback(self.model)
        # continue a resumed run's schedule: the next multiple of eval_freq after num_timesteps
        self._next_evaluation = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq

    def _due(self) -> bool:
        if self.model.num_timesteps < self._next_evaluation:
            return False
        while self._next_evaluation <= self.model.num_timesteps:
            self._next_evaluation += self.eval_freq
        return True

    def _on_step(self) -> bool:
        if not self.is_meta_learner and self._due():
            return self._record(self.evaluate())
        return True

    def _on_meta_iteration_end(self) -> bool:
        if self._due():
            return self._record(self.evaluate())
        return True

    def _limit(self, n_costs: int) -> np.ndarray:
        limit = self.model.cost_limit if self.cost_limit is None else self.cost_limit  # type: ignore[attr-defined]
        return np.broadcast_to(np.asarray(limit, dtype=np.float64), (n_costs,)).copy()

    def evaluate(self) -> CostEvaluation:
        """:return: one evaluation of the current model (see the class docstring); nothing is recorded"""
        n_costs = int(getattr(self.model, "n_costs", 1))
        if self.is_meta_learner:
            report = self.model.meta_test(  # type: ignore[attr-defined]
                n_tasks=self.n_eval_episodes, n_adapt_steps=1, seed=self.eval_seed, **independent_episodes(self.model, 0)
            )
            limits = report.cost_limits if self.cost_limit is None else np.tile(self._limit(n_costs), (report.n_tasks, 1))
            return CostEvaluation(
                self.model.num_timesteps,
                report.returns[:, 1].copy(),
                report.costs[:, 1, :].copy(),
                limits,
                report.returns[:, 0].copy(),
                report.costs[:, 0, :].copy(),
            )
        assert self.eval_env is not None
        returns, costs = evaluate_policy_cost(
            self.model, self.eval_env, self.n_eval_episodes, n_costs=n_costs, deterministic=self.deterministic
        )
        return CostEvaluation(self.model.num_timesteps, returns, costs, np.tile(self._limit(n_costs), (len(returns), 1)))

    def _record(self, evaluation: CostEvaluation) -> bool:
        self.evaluations.append(evaluation)
        mean_reward = float(np.mean(evaluation.returns))
        self.last_mean_reward = mean_reward
        self.logger.record("eval/mean_reward", mean_reward)
        self.logger.record("eval/std_reward", float(np.std(evaluation.returns)))
        self.logger.record("eval/mean_cost", float(np.mean(evaluation.costs[:, 0])))
        for channel in range(evaluation.costs.shape[1]):
            self.logger.record(
                "eval/max_cost" if channel == 0 else f"eval/max_cost_{channel}", float(np.max(evaluation.costs[:, channel]))
            )
        self.logger.record("eval/within_limit", evaluation.within_limit)
        self.logger.record("eval/feasible", int(evaluation.feasible))
        if evaluation.meta_policy_returns is not None and evaluation.meta_policy_costs is not None:
            self.logger.record("eval/meta_policy_mean_reward", float(np.mean(evaluation.meta_policy_returns)))
            self.logger.record("eval/meta_policy_max_cost", float(np.max(evaluation.meta_policy_costs[:, 0])))
        self.logger.record("time/total_timesteps", self.model.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.model.num_timesteps)
        if self.log_path is not None:
            self._save_npz()
        new_best = evaluation.feasible and mean_reward > self.best_mean_reward
        if self.verbose:
            state = "feasible" if evaluation.feasible else "INFEASIBLE"
            print(
                f"Eval num_timesteps={evaluation.timesteps}, reward={mean_reward:.2f} +/- {np.std(evaluation.returns):.2f},"
                f" max cost {np.max(evaluation.costs[:, 0]):.2f} (d = {np.min(evaluation.cost_limits[:, 0]):g}),"
                f" within d {100 * evaluation.within_limit:.0f}%"
                + (
                    f", meta-policy max cost {np.max(evaluation.meta_policy_costs[:, 0]):.2f}"
                    if evaluation.meta_policy_costs is not None
                    else ""
                )
                + f", {state}"
                + (" - new best feasible model" if new_best else "")
            )
        if new_best:
            self.best_mean_reward = mean_reward
            if self.best_model_save_path is not None:
                self.model.save(self.best_model_save_path / "best_model")
            if self.callback_on_new_best is not None:
                return self.callback_on_new_best.on_step()
        return True

    def _save_npz(self) -> None:
        assert self.log_path is not None
        arrays: dict[str, np.ndarray] = {
            "timesteps": np.array([e.timesteps for e in self.evaluations]),
            "results": np.array([e.returns for e in self.evaluations]),
            "costs": np.array([e.costs for e in self.evaluations]),
            "cost_limits": np.array([e.cost_limits for e in self.evaluations]),
            "feasible": np.array([e.feasible for e in self.evaluations]),
            "within_limit": np.array([e.within_limit for e in self.evaluations]),
        }
        if self.evaluations[0].meta_policy_returns is not None:
            arrays["meta_policy_results"] = np.array([e.meta_policy_returns for e in self.evaluations])
            arrays["meta_policy_costs"] = np.array([e.meta_policy_costs for e in self.evaluations])
        np.savez(self.log_path / "evaluations.npz", **arrays)  # type: ignore[arg-type]


@dataclass
class ValidationPoint:
    """
    One point of a meta-training curve (Figures 1, 4, 6 of the paper, columns 1-2).

    :param meta_iterations: meta-iterations done when it was measured
    :param mean_return: mean episode return over the validation tasks of the policy adapted one step from the meta-policy
    :param max_cost: maximum episode cost (channel 0) over the validation tasks of that policy
    :param mean_return_meta: the same mean return of the meta-policy itself (step 0)
    :param max_cost_meta: the same maximum cost of the meta-policy itself
    :param train_seconds: wall-clock seconds of meta-training so far in this ``learn`` call, validation excluded
    :param seconds: wall-clock seconds of this validation
    """

    meta_iterations: int
    mean_return: float
    max_cost: float
    mean_return_meta: float
    max_cost_meta: float
    train_seconds: float
    seconds: float


class MetaValidationCallback(MetaIterationCallback):
    """
    The meta-training curve of the paper ("computed on the policy adapted one step from the meta-policy", Figure 1):
    every ``eval_freq`` meta-iterations, the meta-policy is adapted by ONE step of the algorithm's own meta-test
    adaptation (``model.meta_test(tasks=..., n_adapt_steps=1)``: A^s for SafeMetaDual, the inner step for the
    baselines) on a fixed set of validation tasks, and the mean episode return and the maximum episode cost over
    those tasks are recorded (logger keys ``validation/return``, ``validation/max_cost``). Every algorithm is
    measured by the same protocol, on the same tasks and rollout seed.

    The validation tasks are fixed by the caller: draw them with a seed that neither training (the model's task
    generator) nor meta-test (``meta_test(seed=...)``) uses, so the three sets are independent draws.
    Validation rollouts count no training timesteps; the time they take is excluded from ``train_seconds``.

    :param tasks: the validation tasks
    :param eval_freq: meta-iterations between two validations (one is also made at iteration 0, before training,
        unless ``eval_at_start=False``)
    :param seed: seed of the validation rollouts (the same at every validation)
    :param on_point: called with each new :class:`ValidationPoint` (e.g. to append it to a file and checkpoint)
    :param eval_at_start: validate the meta-policy before the first meta-iteration too
    :param verbose: 1 prints a line per validation
    """

    def __init__(
        self,
        tasks: list[dict[str, Any]],
        eval_freq: int,
        seed: int = 20_000,
        on_point: Callable[[ValidationPoint], None] | None = None,
        eval_at_start: bool = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if not tasks:
            raise ValueError("tasks must be a non-empty list of validation tasks")
        if int(eval_freq) < 1:
            raise ValueError(f"eval_freq must be a positive number of meta-iterations, got {eval_freq!r}")
        self.tasks, self.eval_freq, self.seed = list(tasks), int(eval_freq), int(seed)
        self.on_point, self.eval_at_start = on_point, eval_at_start
        self.points: list[ValidationPoint] = []
        self.train_seconds = 0.0
        self._mark = 0.0

    def _on_training_start(self) -> None:
        self.train_seconds = 0.0
        self._mark = time.perf_counter()
        if self.eval_at_start and int(getattr(self.model, "meta_iterations", 0)) == 0:
            self._validate()

    def _validate(self) -> ValidationPoint:
        start = time.perf_counter()
        report = self.model.meta_test(  # type: ignore[attr-defined]
            tasks=self.tasks, n_adapt_steps=1, seed=self.seed, **independent_episodes(self.model, 0)
        )
        rows = report.rows()
        point = ValidationPoint(
            meta_iterations=int(getattr(self.model, "meta_iterations", 0)),
            mean_return=rows[1]["mean_return"],
            max_cost=rows[1]["max_cost"],
            mean_return_meta=rows[0]["mean_return"],
            max_cost_meta=rows[0]["max_cost"],
            train_seconds=self.train_seconds,
            seconds=time.perf_counter() - start,
        )
        self.points.append(point)
        self.logger.record("validation/return", point.mean_return)
        self.logger.record("validation/max_cost", point.max_cost)
        if self.verbose:
            print(
                f"validation after {point.meta_iterations} meta-iterations: return {point.mean_return:.2f},"
                f" max cost {point.max_cost:.2f} ({point.seconds:.1f} s)"
            )
        if self.on_point is not None:
            self.on_point(point)
        self._mark = time.perf_counter()  # validation (and whatever on_point did) is not training time
        return point

    def _on_meta_iteration_end(self) -> bool:
        now = time.perf_counter()
        self.train_seconds += now - self._mark
        self._mark = now
        if int(getattr(self.model, "meta_iterations", 0)) % self.eval_freq == 0:
            self._validate()
        return True
