"""
rl-zoo3's ``ExperimentManager`` for sb3_safemeta's algorithms: default hyperparameter files and a
cost-aware Optuna objective. For every other algorithm it is rl-zoo3's manager, unchanged.

rl-zoo3's objective maximises the mean evaluation reward of the trained agent. For a safe
(meta-)RL algorithm that selects the most reckless hyperparameters, so here a trial returns

- ``safemeta``: the mean episode return over ``n_tasks`` unseen test tasks after ``n_adapt_steps``
  safe adaptation steps (``SafeMetaDual.meta_test``, paper Section 5.1); its constraint is the
  maximum episode cost over tasks and over every explored policy pi_[0..K] (anytime safety), minus d;
- ``safe_adapter``: the mean return of deterministic evaluation episodes; its constraint is the
  maximum episode cost over the training episodes (every explored policy) and the evaluation
  episodes, minus d;

one constraint value per cost channel, feasible when <= 0. The values are stored in the trial's user
attribute ``"constraint"`` and given to Optuna's constrained optimisation: ``Trial.set_constraint``
(Optuna >= 5; ``constraints_func`` is deprecated there) or the TPE sampler's ``constraints_func``
reading that user attribute (Optuna 4). The best trial is then the best *feasible* one.
Without ``--storage`` the study is kept in a local SQLite file, ``<log-folder>/<algo>/<env>_study.db``.
"""

from __future__ import annotations

import csv
import math
import os
import pickle as pkl
import sys
import time
from collections import OrderedDict
from pathlib import Path
from pprint import pprint
from typing import Any

import gymnasium as gym
import numpy as np
import optuna
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from rl_zoo3.callbacks import SaveVecNormalizeCallback
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from sb3_safemeta.common.callbacks import CostEvalCallback
from sb3_safemeta.common.evaluation import evaluate_policy_cost
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.common.wrappers import EPISODE_COST_KEY, EpisodeCostInfo
from sb3_safemeta.zoo.algos import SAFEMETA_ALGOS, hyperparams_path

# paper Section 5.1 / Appendix D.2: 20 unseen tasks, 20 adaptation steps each
DEFAULT_META_TEST_KWARGS = {"n_tasks": 20, "n_adapt_steps": 20}
# Optuna >= 5 stores constraints with Trial.set_constraint; older versions need the sampler's constraints_func
_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


def constraint_from_user_attrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    """``constraints_func`` of the sampler: the trial's user attribute ``"constraint"`` (inf if it never got one)."""
    return list(trial.user_attrs.get("constraint", [math.inf]))


class EpisodeCostTracker(BaseCallback):
    """Maximum episode cost (per channel) of every episode finished during ``learn()``."""

    def __init__(self) -> None:
        super().__init__()
        self.max_cost: np.ndarray | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # the buffer keeps the last stats_window_size episodes; a rollout finishes fewer than that
        buffer = getattr(self.model, "ep_cost_buffer", None)
        if buffer:
            latest = np.max(np.asarray(buffer), axis=0)
            self.max_cost = latest if self.max_cost is None else np.maximum(self.max_cost, latest)


def write_trials_csv(study: optuna.Study, path: str) -> None:
    """One row per trial: number, state, value, params, user attributes (``trials_dataframe`` needs pandas)."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({key for trial in trials for key in trial.params})
    attrs = sorted({key for trial in trials for key in trial.user_attrs})
    with open(path, "w", newline="") as file_handler:
        writer = csv.writer(file_handler)
        writer.writerow(["number", "state", "value", *[f"params_{k}" for k in params], *[f"user_attrs_{k}" for k in attrs]])
        for trial in trials:
            writer.writerow(
                [trial.number, trial.state.name, trial.value]
                + [trial.params.get(key, "") for key in params]
                + [trial.user_attrs.get(key, "") for key in attrs]
            )


class SafeMetaExperimentManager(ExperimentManager):
    """rl-zoo3's ExperimentManager; for our algorithms: their yml files, SQLite studies, constrained objective."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meta_test_kwargs = dict(DEFAULT_META_TEST_KWARGS)
        if not self.is_safemeta:
            return
        if kwargs.get("config") is None and not os.path.isfile(self.config):
            self.config = str(hyperparams_path(self.algo))  # rl-zoo3 looks only inside its own package
        if self.optimize_hyperparameters and self.n_evaluations is None:
            # our objective trains each trial to the end (no intermediate report, nothing is pruned): without this,
            # rl-zoo3 would announce "Doing N intermediate evaluations for pruning"
            self.n_evaluations = 0
        if self.optimize_hyperparameters and self.storage is None:
            Path(self.log_path).mkdir(parents=True, exist_ok=True)
            self.storage = f"sqlite:///{Path(self.log_path).resolve() / f'{self.env_name}_study.db'}"
            self.study_name = self.study_name or f"{self.algo}_{self.env_name}"

    @property
    def is_safemeta(self) -> bool:
        return self.algo in SAFEMETA_ALGOS

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        hyperparams, saved_hyperparams = super().read_hyperparameters()
        if self.is_safemeta and self.storage and self.study_name and self.trial_id == 0:
            # rl-zoo3 loads a trial only `if self.trial_id`, so `--trial-id 0` was silently ignored
            print("Loading from Optuna study (trial 0)...")
            study_hyperparams = self.load_trial(self.storage, self.study_name, 0)
            pprint(study_hyperparams)
            custom = self.custom_hyperparams or {}  # --hyperparams still overrides the study's values
            hyperparams.update({key: value for key, value in study_hyperparams.items() if key not in custom})
            saved_hyperparams = OrderedDict((key, hyperparams[key]) for key in sorted(hyperparams))
        return hyperparams, saved_hyperparams

    def _preprocess_hyperparams(self, hyperparams: dict[str, Any]):
        # not a constructor argument: how the objective (and meta-test) evaluates a SafeMetaDual
        meta_test_kwargs = hyperparams.pop("meta_test_kwargs", None)
        if isinstance(meta_test_kwargs, str):
            meta_test_kwargs = eval(meta_test_kwargs)  # rl-zoo3's convention for dict values in yml
        self.meta_test_kwargs.update(meta_test_kwargs or {})
        return super()._preprocess_hyperparams(hyperparams)

    # ------------------------------------------------------------------ environments and evaluation
    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        """
        rl-zoo3's environments, with the episode cost recorded: for our algorithms every environment is wrapped in
        :class:`~sb3_safemeta.common.wrappers.EpisodeCostInfo` INSIDE the ``Monitor``, whose ``info_keywords``
        include ``"episode_cost"`` (a column of ``monitor.csv``). Other algorithms get rl-zoo3's environments.
        """
        if not self.is_safemeta:
            return super().create_envs(n_envs, eval_env, no_log)
        keywords = tuple(self.monitor_kwargs.get("info_keywords", ()))
        if EPISODE_COST_KEY not in keywords:
            self.monitor_kwargs = {**self.monitor_kwargs, "info_keywords": (*keywords, EPISODE_COST_KEY)}
        spec = gym.spec(self.env_name.gym_id)

        def make_env(**kwargs: Any) -> gym.Env:
            return EpisodeCostInfo(spec.make(**kwargs))

        env = make_vec_env(
            make_env,
            n_envs=n_envs,
            seed=self.seed,
            env_kwargs=self.eval_env_kwargs if eval_env else self.env_kwargs,
            monitor_dir=None if eval_env or no_log else self.save_path,
            wrapper_class=self.env_wrapper,
            vec_env_cls=self.vec_env_class,  # type: ignore[arg-type]
            vec_env_kwargs=self.vec_env_kwargs,
            monitor_kwargs=self.monitor_kwargs,
        )
        if self.vec_env_wrapper is not None:
            env = self.vec_env_wrapper(env)
        env = self._maybe_normalize(env, eval_env)
        if self.frame_stack is not None:
            env = VecFrameStack(env, self.frame_stack)
        return env

    def create_callbacks(self) -> None:
        """
        rl-zoo3's callbacks; for our algorithms ``--eval-freq`` creates the cost-aware
        :class:`~sb3_safemeta.common.callbacks.CostEvalCallback` instead of SB3's ``EvalCallback``: reward and cost
        (after one adaptation step for the meta-learners), cost arrays in ``evaluations.npz``, ``best_model.zip``
        the best FEASIBLE model.
        """
        if not self.is_safemeta:
            return super().create_callbacks()
        eval_freq, self.eval_freq = self.eval_freq, -1  # rl-zoo3's part without its EvalCallback
        super().create_callbacks()
        self.eval_freq = eval_freq
        if eval_freq > 0 and not self.optimize_hyperparameters:
            is_meta = issubclass(ALGOS[self.algo], OnPolicyMetaAlgorithm)
            if self.verbose > 0:
                print("Creating the cost-aware evaluation" + ("" if is_meta else " (and its test environment)"))
            self.callbacks.append(
                CostEvalCallback(
                    None if is_meta else self.create_envs(self.n_eval_envs, eval_env=True),
                    n_eval_episodes=self.n_eval_episodes,
                    eval_freq=eval_freq,  # environment steps (rl-zoo3 divides by n_envs for its own callback)
                    log_path=self.save_path,
                    best_model_save_path=self.save_path,
                    deterministic=self.deterministic_eval,
                    callback_on_new_best=SaveVecNormalizeCallback(save_freq=1, save_path=self.params_path),
                    verbose=self.verbose,
                )
            )

    # ------------------------------------------------------------------ Optuna
    def _create_sampler(self, sampler_method: str) -> BaseSampler:
        if not self.is_safemeta or _HAS_SET_CONSTRAINT or sampler_method != "tpe":
            return super()._create_sampler(sampler_method)
        return TPESampler(
            n_startup_trials=self.n_startup_trials,
            seed=self.seed,
            multivariate=True,
            constraints_func=constraint_from_user_attrs,
        )

    def objective(self, trial: optuna.Trial) -> float:
        if not self.is_safemeta:
            return super().objective(trial)
        kwargs = self._hyperparams.copy()
        sampled_hyperparams = HYPERPARAMS_SAMPLER[self.algo](trial, self.n_actions, self.n_envs, {})
        kwargs.update(sampled_hyperparams)
        env = self.create_envs(self.n_envs, no_log=True)
        model = ALGOS[self.algo](
            env=env,
            tensorboard_log=None,
            seed=self.seed + trial.number,  # seeded per trial: trials are compared on the same task draws
            verbose=self.verbose if self.verbose >= 2 else 0,
            device=self.device,
            **kwargs,
        )
        tracker = EpisodeCostTracker()
        try:
            model.learn(self.n_timesteps, callback=tracker)
            value, constraint, extra = self._evaluate(model, tracker)
        except (AssertionError, ValueError) as error:  # as rl-zoo3: hyperparameters that break training
            print(error)
            pprint(sampled_hyperparams)
            trial.set_user_attr("constraint", [math.inf])
            raise optuna.exceptions.TrialPruned() from error
        finally:
            assert model.env is not None
            model.env.close()

        trial.set_user_attr("constraint", constraint)
        for key, item in extra.items():
            trial.set_user_attr(key, item)
        if _HAS_SET_CONSTRAINT:
            for channel, item in enumerate(constraint):
                trial.set_constraint(f"cost_{channel}", item)
        print(
            f"trial {trial.number}: value {value:.2f}, max episode cost {extra['max_episode_cost']}"
            f" (d = {extra['cost_limit']}), {'feasible' if max(constraint) <= 0 else 'INFEASIBLE'}"
        )
        return value

    def _evaluate(self, model: Any, tracker: EpisodeCostTracker) -> tuple[float, list[float], dict[str, Any]]:
        """:return: objective value, constraint (max episode cost - d, per channel), user attributes"""
        if isinstance(model, OnPolicyMetaAlgorithm):  # SafeMetaDual and the baselines: their own adaptation
            report = model.meta_test(**self.meta_test_kwargs)  # type: ignore[attr-defined]
            # every task's cost against its own limit, over every explored policy pi_[0..K]
            excess = (report.costs - report.cost_limits[:, None, :]).max(axis=(0, 1))
            max_cost, cost_limit = report.costs.max(axis=(0, 1)), report.cost_limits.min(axis=0)
            value = float(report.returns[:, -1].mean())
            extra = {
                "mean_return_before_adaptation": float(report.returns[:, 0].mean()),
                "safe_fraction": report.safe_fraction,
                **{f"meta_test_{key}": item for key, item in self.meta_test_kwargs.items()},
            }
        else:
            eval_env = self.create_envs(n_envs=self.n_eval_envs, eval_env=True)
            try:
                n_costs = int(getattr(model, "n_costs", 1))
                returns, costs = evaluate_policy_cost(model, eval_env, self.n_eval_episodes, n_costs=n_costs)
            finally:
                eval_env.close()
            cost_limit = np.broadcast_to(np.asarray(model.cost_limit, dtype=float), (model.n_costs,))
            max_cost = costs.max(axis=0) if tracker.max_cost is None else np.maximum(costs.max(axis=0), tracker.max_cost)
            excess, value = max_cost - cost_limit, float(returns.mean())
            extra = {"eval_max_cost": [float(c) for c in costs.max(axis=0)]}
        extra["max_episode_cost"] = [float(c) for c in max_cost]
        extra["cost_limit"] = [float(d) for d in cost_limit]
        return value, [float(c) for c in excess], extra

    def hyperparameters_optimization(self) -> None:
        if not self.is_safemeta:
            return super().hyperparameters_optimization()
        if self.verbose > 0:
            print(f"Optimizing hyperparameters (constrained: max episode cost <= d); storage {self.storage}")
        storage: Any = self.storage
        if storage.endswith(".log"):
            Path(storage).parent.mkdir(parents=True, exist_ok=True)
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))  # type: ignore[attr-defined]
        study = optuna.create_study(
            sampler=self._create_sampler(self.sampler),
            pruner=self._create_pruner(self.pruner),
            storage=storage,
            study_name=self.study_name,
            load_if_exists=True,
            direction="maximize",
        )
        if "command" not in study.user_attrs:
            study.set_user_attr("command", " ".join(sys.orig_argv))
            for key in sorted(self._hyperparams):
                study.set_user_attr(key, str(self._hyperparams[key]))
        try:
            if self.max_total_trials is not None:
                counted = [TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED]
                if len(study.get_trials(states=counted)) < self.max_total_trials:
                    study.optimize(
                        self.objective,
                        n_jobs=self.n_jobs,
                        callbacks=[MaxTrialsCallback(self.max_total_trials, states=counted)],
                        gc_after_trial=True,
                    )
            else:
                study.optimize(self.objective, n_jobs=self.n_jobs, n_trials=self.n_trials, gc_after_trial=True)
        except KeyboardInterrupt:
            pass
        self._print_study(study)

    def _print_study(self, study: optuna.Study) -> None:
        completed = study.get_trials(states=[TrialState.COMPLETE])
        feasible = [t for t in completed if max(constraint_from_user_attrs(t)) <= 0]
        print(f"Number of finished trials: {len(study.trials)} ({len(completed)} complete, {len(feasible)} feasible)")
        if feasible:
            best = max(feasible, key=lambda t: t.value if t.value is not None else -math.inf)  # = study.best_trial
            print("Best feasible trial:")
            print("Value: ", best.value)
            print("Params: ")
            for key, value in best.params.items():
                print(f"    {key}: {value}")
            print("User Attributes: ")
            for key, value in best.user_attrs.items():
                print(f"    {key}: {value}")
        else:
            print("No feasible trial: every trial exceeded the cost limit (see the 'constraint' user attribute)")
        report_name = (
            f"report_{self.env_name}_{self.n_trials}-trials-{self.n_timesteps}-{self.sampler}-{self.pruner}_{int(time.time())}"
        )
        log_path = os.path.join(self.log_folder, self.algo, report_name)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        write_trials_csv(study, f"{log_path}.csv")
        with open(f"{log_path}.pkl", "wb+") as file_handler:
            pkl.dump(study, file_handler)
        if self.verbose:
            print(f"Writing report to {log_path}")
        if not self.no_optim_plots:
            save_optuna_plots(study, log_path)


def save_optuna_plots(study: optuna.Study, log_path: str) -> list[str]:
    """
    Optuna's optimisation history and parameter importances of ``study``, written next to the report (rl-zoo3
    opens them in a browser with ``fig.show()``, which a headless run cannot use): ``<log_path>_history.html`` and
    ``<log_path>_importances.html`` with plotly, else ``.png`` with Optuna's matplotlib backend; a message says
    which and why a plot is missing (no plotly, fewer than two complete trials, ...).

    :param study: the finished study
    :param log_path: path prefix of the report
    :return: the files written
    """
    written: list[str] = []
    try:
        import plotly  # noqa: F401
        from optuna.visualization import plot_optimization_history, plot_param_importances

        backend, suffix = "plotly", ".html"
    except ImportError:
        try:
            import matplotlib

            matplotlib.use("Agg")
            from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

            backend, suffix = "matplotlib", ".png"
            print("Optuna plots: plotly is not installed (pip install plotly for interactive plots); using matplotlib")
        except ImportError:
            print("Optuna plots skipped: neither plotly nor matplotlib is installed (pip install plotly)")
            return written
    for name, plot in (("history", plot_optimization_history), ("importances", plot_param_importances)):
        path = f"{log_path}_{name}{suffix}"
        try:
            figure = plot(study)
            if backend == "plotly":
                figure.write_html(path)
            else:
                figure.figure.savefig(path, bbox_inches="tight")
                import matplotlib.pyplot as plt

                plt.close(figure.figure)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. importances need 2 complete trials
            print(f"Optuna plot '{name}' not drawn: {error}")
    if written:
        print("Optuna plots: " + ", ".join(written))
    return written


def install_experiment_manager() -> None:
    """
    Make rl-zoo3 use :class:`SafeMetaExperimentManager` (idempotent). ``rl_zoo3.train`` / ``enjoy`` do
    ``from rl_zoo3.exp_manager import ExperimentManager``: the ones imported later get the subclass from the
    module, the ones already imported are rebound. It behaves exactly like rl-zoo3's for every other algorithm.
    """
    # from sys.modules: the startup hook calls this while rl_zoo3.exp_manager is not yet bound on rl_zoo3
    zoo_module = sys.modules["rl_zoo3.exp_manager"]
    if not issubclass(zoo_module.ExperimentManager, SafeMetaExperimentManager):
        zoo_module.ExperimentManager = SafeMetaExperimentManager  # type: ignore[attr-defined]
    for name in ("rl_zoo3.train", "rl_zoo3.enjoy"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "ExperimentManager"):
            module.ExperimentManager = SafeMetaExperimentManager  # type: ignore[attr-defined]


# this module may have been imported before the startup hook could install the manager (see registration.py)
install_experiment_manager()
