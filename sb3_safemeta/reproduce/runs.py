"""
One run of the reproduction: (algorithm, scenario, seed, delta) meta-trained with a budget, validated along the way
(the meta-training curve), then meta-tested. Each run owns a directory::

    <out>/runs/<budget>/<env id>/<algorithm>/seed<seed>_delta<delta>/
        config.json      what the run is (budget, constructor arguments) and the code that made it
        checkpoint.zip   the model after the last validation (written atomically)
        state.json       meta-iterations done, meta-training seconds, status ("training" or "done")
        curve.csv        the meta-training curve (one row per validation)
        meta_test.json   the meta-test report (MetaTestReport), when done
        progress*.csv    the algorithm's own log, one row per meta-iteration

An interrupted run resumes from its checkpoint (the curve is cut back to it); a finished run is never redone. A run
is locked while a process works on it (:class:`~sb3_safemeta.common.run_dir.RunLock`, released by the kernel when the
process ends in any way) and every file is written atomically, so two commands started on the same ``--out`` share the
work instead of doing it twice, and a kill never leaves a half-written file.
"""

from __future__ import annotations

import csv
import inspect
import json
import pathlib
import re
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import CSVOutputFormat, Logger
from stable_baselines3.common.utils import get_system_info

import sb3_safemeta.envs  # noqa: F401  (registers the scenarios)
from sb3_safemeta import MAMLCostPenalty, MetaCPO, MetaCRPO, SafeMetaDual, __version__
from sb3_safemeta.common.callbacks import MetaValidationCallback, StopTrainingOnMetaIterations, ValidationPoint
from sb3_safemeta.common.evaluation import MetaTestReport, independent_episodes
from sb3_safemeta.common.hyperparams import load_hyperparams
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.common.run_dir import RunLock, RunLockedError, atomic_path, atomic_write_text, remove_stale_temporaries
from sb3_safemeta.reproduce.budgets import Budget

__all__ = ["ALGORITHMS", "RunSpec", "algorithm_kwargs", "code_version", "run", "run_directory"]

ALGORITHMS: dict[str, type[OnPolicyMetaAlgorithm]] = {
    "SafeMetaDual": SafeMetaDual,
    "MAMLCostPenalty": MAMLCostPenalty,
    "MetaCPO": MetaCPO,
    "MetaCRPO": MetaCRPO,
}
# the yml file of each algorithm (hyperparams/<name>.yml, keyed by env id)
YML_NAMES = {
    "SafeMetaDual": "safemeta",
    "MAMLCostPenalty": "maml_cost_penalty",
    "MetaCPO": "meta_cpo",
    "MetaCRPO": "meta_crpo",
}
# the baselines' own settings when their yml has no entry for a scenario (those of examples/compare_baselines.py):
# adaptation steps of about the same size as A^s (KL ~0.01), MAML's penalty weight w = 1
BASELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "MAMLCostPenalty": {"cost_penalty": 1.0, "inner_lr": 0.1},
    "MetaCPO": {"inner_kl": 0.01},
    "MetaCRPO": {"n_inner_steps": 2, "adapt_kl": 0.01},
}
# what every algorithm takes from the scenario's SafeMetaDual entry: the same task settings, network, discount and
# meta-policy trust region for all (Section 6: "the same data requirements and task settings")
SHARED_KEYS = ("cost_limit", "gamma", "policy_kwargs", "target_kl")
# the budget, not the yml, sets the data sizes
BUDGET_KEYS = ("n_steps", "meta_batch_size")
# seeds of the validation-task and test-task draws: fixed per scenario, distinct from the training draws (which
# come from the model's task generator, seeded by the run's seed)
VALIDATION_TASK_SEED = 777_777
TEST_TASK_SEED = 10_000


@dataclass(frozen=True)
class RunSpec:
    """:param algorithm: a key of :data:`ALGORITHMS` :param env_id: scenario :param seed: seed :param delta: delta_c"""

    algorithm: str
    env_id: str
    seed: int
    delta: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}, got {self.algorithm!r}")
        if self.delta != 0.0 and self.algorithm != "SafeMetaDual":
            raise ValueError(
                f"delta (allowable violation) is a parameter of SafeMetaDual only, got {self.delta} for {self.algorithm}"
            )


def run_directory(out: str | pathlib.Path, budget: Budget, spec: RunSpec) -> pathlib.Path:
    """:return: the directory of one run"""
    return pathlib.Path(out, "runs", budget.name, spec.env_id, spec.algorithm, f"seed{spec.seed}_delta{spec.delta:g}")


def _yml_entry(name: str, env_id: str) -> dict[str, Any]:
    try:
        return load_hyperparams(name, env_id)
    except (FileNotFoundError, KeyError):
        return {}


def algorithm_kwargs(spec: RunSpec, budget: Budget) -> dict[str, Any]:
    """
    The constructor arguments of a run: the scenario's entry of the algorithm's yml (for the baselines, the shared
    keys come from SafeMetaDual's entry and the rest from their own yml, else :data:`BASELINE_DEFAULTS`), with the
    data sizes of the budget, the run's seed and (SafeMetaDual) its delta.
    """
    shared = _yml_entry("safemeta", spec.env_id)
    if spec.algorithm == "SafeMetaDual":
        kwargs = dict(shared)
        kwargs["delta_c"] = spec.delta
    else:
        own = _yml_entry(YML_NAMES[spec.algorithm], spec.env_id) or dict(BASELINE_DEFAULTS[spec.algorithm])
        accepted = inspect.signature(ALGORITHMS[spec.algorithm]).parameters
        kwargs = {key: shared[key] for key in SHARED_KEYS if key in shared and key in accepted}
        kwargs.update(own)
    for key in BUDGET_KEYS:
        kwargs.pop(key, None)
    kwargs.update(n_steps=budget.n_steps(spec.env_id), meta_batch_size=budget.meta_batch_size, seed=spec.seed, device="cpu")
    if budget.target_kl is not None and "target_kl" in inspect.signature(ALGORITHMS[spec.algorithm]).parameters:
        # the same trust region for the meta step of every algorithm that has one (MetaCRPO's meta update is the
        # running mean of the adapted parameters: no trust region)
        kwargs["target_kl"] = budget.target_kl
    return kwargs


def make_env(env_id: str, budget: Budget, seed: int) -> Any:
    """:return: the VecEnv of a run (the budget's number of environments and horizon)"""
    horizon = budget.max_episode_steps(env_id)
    env_kwargs = {} if horizon is None else {"max_episode_steps": horizon}
    return make_vec_env(env_id, n_envs=budget.n_envs(env_id), seed=seed, env_kwargs=env_kwargs)


def validation_tasks(env_id: str, n_tasks: int) -> list[dict[str, Any]]:
    """:return: the fixed validation tasks of a scenario (the same for every algorithm, seed and delta)"""
    env = gym.make(env_id)
    try:
        return env.unwrapped.sample_tasks(n_tasks, VALIDATION_TASK_SEED)  # type: ignore[attr-defined]
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------- files
def _write_atomic(path: pathlib.Path, text: str) -> None:
    atomic_write_text(path, text)


def read_state(directory: pathlib.Path) -> dict[str, Any] | None:
    """:return: the run's state.json, or None if it has not started"""
    path = directory / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


CURVE_FIELDS = [field for field in ValidationPoint.__dataclass_fields__]


def read_curve(directory: pathlib.Path) -> list[dict[str, float]]:
    """:return: the rows of the run's curve.csv (numbers)"""
    path = directory / "curve.csv"
    if not path.exists():
        return []
    with open(path, newline="") as file_handler:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file_handler)]


def _write_curve(directory: pathlib.Path, rows: list[dict[str, float]]) -> None:
    lines = [",".join(CURVE_FIELDS)] + [",".join(repr(float(row[key])) for key in CURVE_FIELDS) for row in rows]
    _write_atomic(directory / "curve.csv", "\n".join(lines) + "\n")


RunBusyError = RunLockedError  # another live process works on this run


def code_version() -> dict[str, Any]:
    """
    :return: the code that makes a run: this package's version, its git commit and whether the checkout has
        uncommitted changes in the package (None outside a git checkout of it, e.g. an installed wheel), and SB3's
        system info
        (Python, Stable-Baselines3, PyTorch, NumPy, Gymnasium versions)
    """
    package = pathlib.Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    # only a checkout that tracks this package (an installed copy inside some other repository, e.g. a venv in a
    # project's tree, would report that project's commit)
    tracked = bool(git("ls-files", "--", "__init__.py"))
    commit = git("rev-parse", "HEAD") if tracked else None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".") if commit else None
    return {
        "sb3_safemeta": __version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        **get_system_info(print_info=False)[0],
    }


class RunConfigError(RuntimeError):
    """An unfinished run would resume with other hyper-parameters than it started with."""


# ---------------------------------------------------------------------------------------------- one run
def run(
    spec: RunSpec, budget: Budget, out: str | pathlib.Path, verbose: int = 1, redo_meta_test: bool = False
) -> pathlib.Path:
    """
    Do (or finish) one run: meta-training with validation every ``budget.eval_freq`` meta-iterations (checkpoint at
    each), then the meta-test. A finished run returns at once.

    :param redo_meta_test: a finished run whose meta-test was made by other code than the current one (another
        version or commit, uncommitted changes, or unrecorded) does its meta-test again from its final meta-policy,
        keeping its meta-training; the previous report and state stay as ``meta_test_previous.*`` and
        ``state_previous.json``. For measurements added to the meta-test after the runs were made.
    :return: the run directory
    :raises RunBusyError: if another process holds the run
    """
    directory = run_directory(out, budget, spec)
    if _finished(read_state(directory), redo_meta_test):
        return directory
    with RunLock(
        directory, argv=["sb3_safemeta.reproduce", spec.algorithm, spec.env_id, f"seed {spec.seed}", f"delta {spec.delta}"]
    ):
        remove_stale_temporaries(directory)
        state = read_state(directory)  # re-read under the lock
        if _finished(state, redo_meta_test):
            return directory
        if state is not None and state.get("status") == "done":  # its meta-test is redone
            # copies: until the new report replaces it (atomically), the run stays done with the previous one
            for suffix in (".json", ".csv"):
                if (directory / f"meta_test{suffix}").exists():
                    _write_atomic(directory / f"meta_test_previous{suffix}", (directory / f"meta_test{suffix}").read_text())
            _write_atomic(directory / "state_previous.json", json.dumps(state))
        _run_locked(spec, budget, directory, state, verbose)
    return directory


# what identifies the code that made (part of) a run
CODE_KEYS = ("sb3_safemeta", "git_commit", "git_dirty")


def _is_current_code(recorded: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    """:return: whether ``recorded`` (a ``code_version()``) is ``now``'s code; uncommitted changes cannot be compared"""
    return recorded is not None and not now["git_dirty"] and all(recorded.get(key) == now.get(key) for key in CODE_KEYS)


def _finished(state: dict[str, Any] | None, redo_meta_test: bool) -> bool:
    """:return: whether the run is done (with ``redo_meta_test``: and its meta-test was made by the current code)"""
    if state is None or state.get("status") != "done":
        return False
    if not redo_meta_test:
        return True
    return _is_current_code(state.get("meta_test_code"), code_version())


def _record_resume(directory: pathlib.Path, name: str, verbose: int) -> None:
    """
    Before a run resumes: when the code may differ from the one that started the run (another version or git
    commit, or uncommitted changes, which cannot be compared), warn and append the resuming code to ``config.json``
    ("code_on_resume"), so that a figure drawn from the run can say which code made which part of it.
    """
    path = directory / "config.json"
    if not path.exists():
        return
    config = json.loads(path.read_text())
    now, started = code_version(), config.get("code")
    if _is_current_code(started, now):
        return
    config.setdefault("code_on_resume", []).append(now)
    _write_atomic(path, json.dumps(config, indent=1))

    def describe(code: dict[str, Any] | None) -> str:
        return "unrecorded" if code is None else ", ".join(f"{key} {code.get(key)}" for key in CODE_KEYS)

    message = (
        f"[{name}] resuming with code that may differ from the one the run started with"
        f" ({describe(started)}; now {describe(now)})"
    )
    warnings.warn(message, stacklevel=3)
    if verbose:
        print(message, flush=True)


def _run_locked(spec: RunSpec, budget: Budget, directory: pathlib.Path, state: dict[str, Any] | None, verbose: int) -> None:
    th.set_num_threads(1)
    algorithm = ALGORITHMS[spec.algorithm]
    kwargs = algorithm_kwargs(spec, budget)
    current = {key: repr(value) for key, value in kwargs.items()}  # before the constructor (it fills policy_kwargs in)
    env = make_env(spec.env_id, budget, spec.seed)
    checkpoint = directory / "checkpoint.zip"
    name = f"{spec.algorithm} on {spec.env_id}, seed {spec.seed}, delta {spec.delta:g}"
    if state is not None and checkpoint.exists():
        saved = json.loads((directory / "config.json").read_text())["kwargs"] if (directory / "config.json").exists() else None
        if saved is not None:  # runs made before this check saved policy_kwargs with the n_costs the constructor adds
            saved = {
                key: re.sub(r", 'n_costs': \d+}$", "}", value) if key == "policy_kwargs" else value
                for key, value in saved.items()
            }
        if saved is not None and saved != current:
            changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
            raise RunConfigError(
                f"{directory} was started with other constructor arguments ({', '.join(changed)}: the yml changed since);"
                " delete the run directory to redo it with the current ones"
            )
        _record_resume(directory, name, verbose)
        model = algorithm.load(checkpoint, env=env, device="cpu")
        seconds_before = float(state["train_seconds"])
        cpu_before = float(state.get("cpu_seconds", 0.0))
        curve = [row for row in read_curve(directory) if row["meta_iterations"] <= model.meta_iterations]
        if verbose:
            print(f"[{name}] resuming after {model.meta_iterations} meta-iterations", flush=True)
    else:
        model = algorithm("MlpPolicy", env, **kwargs)
        seconds_before, cpu_before, curve = 0.0, 0.0, []
        config = {
            "spec": asdict(spec),
            "budget": budget.as_dict(),
            "kwargs": current,
            "code": code_version(),
        }
        _write_atomic(directory / "config.json", json.dumps(config, indent=1))
        if verbose:
            print(f"[{name}] starting: {budget.meta_iterations} meta-iterations, budget {budget.name}", flush=True)
    _write_curve(directory, curve)
    cpu_start = time.process_time()

    def on_point(point: ValidationPoint) -> None:
        row = asdict(point)
        row["train_seconds"] += seconds_before
        curve.append(row)
        _write_curve(directory, curve)
        with atomic_path(checkpoint) as temporary:
            model.save(temporary)
        payload = {
            "status": "training",
            "meta_iterations": point.meta_iterations,
            "train_seconds": row["train_seconds"],
            "cpu_seconds": cpu_before + time.process_time() - cpu_start,
        }
        _write_atomic(directory / "state.json", json.dumps(payload))
        if verbose:
            print(
                f"[{name}] iteration {point.meta_iterations}: validation return {point.mean_return:.2f}"
                f" max cost {point.max_cost:.2f} (meta-policy {point.mean_return_meta:.2f} / {point.max_cost_meta:.2f});"
                f" {row['train_seconds']:.0f} s of meta-training",
                flush=True,
            )

    if model.meta_iterations < budget.meta_iterations:
        suffix = "" if model.meta_iterations == 0 else f"_from_{model.meta_iterations}"
        model.set_logger(Logger(str(directory), [CSVOutputFormat(str(directory / f"progress{suffix}.csv"))]))
        validation = MetaValidationCallback(
            validation_tasks(spec.env_id, budget.n_val_tasks),
            budget.eval_freq,
            seed=VALIDATION_TASK_SEED,
            on_point=on_point,
            eval_at_start=not any(row["meta_iterations"] == 0 for row in curve),
        )
        steps_per_iteration = 2 * budget.meta_batch_size * budget.n_envs(spec.env_id) * budget.n_steps(spec.env_id)
        model.learn(
            total_timesteps=10 * budget.meta_iterations * steps_per_iteration,  # the meta-iteration count stops first
            callback=CallbackList([validation, StopTrainingOnMetaIterations(budget.meta_iterations)]),
            reset_num_timesteps=model.meta_iterations == 0,
        )
        if model.meta_iterations % budget.eval_freq != 0:  # the last point of the curve is the final meta-policy
            validation._validate()

    start = time.perf_counter()
    report = model.meta_test(  # type: ignore[attr-defined]
        n_tasks=budget.n_test_tasks,
        n_adapt_steps=budget.n_adapt_steps,
        seed=TEST_TASK_SEED,
        **independent_episodes(model, budget.n_eval_episodes),
    )
    # the independent evaluation episodes measure the policies; they are not part of the algorithm's meta-test time
    test_seconds = time.perf_counter() - start - report.eval_seconds
    report.label = spec.algorithm
    report.save(directory / "meta_test")
    final = read_state(directory) or {}
    final.update(
        status="done",
        meta_iterations=int(model.meta_iterations),
        num_timesteps=int(model.num_timesteps),
        test_seconds=test_seconds,
        test_seconds_per_step=test_seconds / max(1, budget.n_test_tasks * budget.n_adapt_steps),
        # the adaptation step alone: the algorithm's computation, without the rollouts (Figure 2's third group)
        adapt_seconds_per_step=report.adapt_seconds / max(1, budget.n_test_tasks * budget.n_adapt_steps),
        safe_fraction=report.safe_fraction,
        eval_safe_fraction=report.eval_safe_fraction,
        eval_seconds=report.eval_seconds,
        cpu_seconds=cpu_before + time.process_time() - cpu_start,
        env_steps=budget.env_steps(spec.env_id),
        meta_test_code={key: value for key, value in code_version().items() if key in CODE_KEYS},
    )
    final.setdefault("train_seconds", seconds_before)
    _write_atomic(directory / "state.json", json.dumps(final))
    env.close()
    if verbose:
        returns = report.returns.mean(axis=0)
        print(
            f"[{name}] done: meta-test return {returns[0]:.2f} -> {returns[-1]:.2f}, max cost"
            f" {float(np.max(report.costs[..., 0])):.2f}, {report.safe_fraction:.0%} of explored policies within d"
            + (
                ""
                if report.eval_safe_fraction is None
                else f" ({report.eval_safe_fraction:.0%} by {report.n_eval_episodes} independent episodes each)"
            )
            + ";"
            f" {final['train_seconds']:.0f} s meta-training, {test_seconds:.0f} s meta-test",
            flush=True,
        )


def load_report(directory: pathlib.Path) -> MetaTestReport | None:
    """:return: the run's meta-test report, or None if it has not finished"""
    state = read_state(directory)
    if state is None or state.get("status") != "done":
        return None
    return MetaTestReport.load(directory / "meta_test")
