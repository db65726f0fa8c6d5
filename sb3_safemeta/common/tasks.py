"""
The task-distribution interface shared by every environment and algorithm of the package.

A *task environment* is a Gymnasium environment that

- reports its per-step cost in ``info["cost"]`` (a float for one cost channel, or an array of
  length ``n_costs``); a missing cost is an error, never a silent zero;
- exposes ``n_costs`` (int, the number p of cost channels);
- exposes ``sample_tasks(n_tasks, seed=None) -> list[dict]``: ``n_tasks`` task descriptions drawn
  from the task distribution P(Gamma), reproducible for a given seed;
- exposes ``set_task(task: dict) -> None`` and ``get_task() -> dict``: the task of the next
  episodes (applied at the next ``reset``).

A task is a plain ``dict`` of JSON-serialisable values (floats, ints, lists) so that it can be
logged, stored in a zip and sent to a sub-process environment. It may carry the key
``"cost_limit"`` (float or list of length ``n_costs``) when the limit d varies per task; otherwise
the algorithm's ``cost_limit`` applies.

``TaskEnv`` is an optional base class that implements the bookkeeping; environments of other
packages can follow the protocol without inheriting from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from sb3_safemeta.common.validation import as_cost_vector

Task = dict[str, Any]


@runtime_checkable
class TaskDistribution(Protocol):
    """What the meta-trainer needs from an environment (see module docstring)."""

    n_costs: int

    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[Task]: ...

    def set_task(self, task: Task) -> None: ...

    def get_task(self) -> Task: ...


class TaskEnv(gym.Env):
    """
    Base class for task environments: stores the current task, validates it against the declared
    parameter ranges and draws tasks from a dedicated random generator (so that sampling tasks
    never disturbs the environment's own ``np_random``).

    Subclasses declare ``task_space``: a mapping from task key to ``(low, high)`` bounds
    (inclusive) that ``set_task`` checks, and implement ``_sample_task(rng)``.

    :param task: initial task; ``None`` draws one from ``sample_tasks(1, seed=0)``.
    """

    n_costs: int = 1
    task_space: dict[str, tuple[float, float]] = {}

    def __init__(self, task: Task | None = None) -> None:
        super().__init__()
        self._task: Task = {}
        self.set_task(task if task is not None else self.sample_tasks(1, seed=0)[0])

    def _sample_task(self, rng: np.random.Generator) -> Task:
        raise NotImplementedError

    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[Task]:
        """
        Draw ``n_tasks`` tasks from the task distribution.

        :param n_tasks: number of tasks (>= 1)
        :param seed: seed of the task generator; the same seed gives the same tasks
        :return: list of task dicts
        """
        if int(n_tasks) < 1:
            raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
        rng = np.random.default_rng(seed)
        return [self._sample_task(rng) for _ in range(int(n_tasks))]

    def set_task(self, task: Task) -> None:
        """
        Set the task of the next episodes (takes effect at the next ``reset``).

        :param task: a dict with exactly the keys of ``task_space`` (plus optionally ``cost_limit``)
        """
        validated = validate_task(task, self.task_space, self.n_costs, owner=type(self).__name__)
        self._apply_task(validated)  # first: a task the subclass rejects leaves the current one in place
        self._task = validated

    def _apply_task(self, task: Task) -> None:
        """Hook for subclasses that precompute quantities from the task."""

    def get_task(self) -> Task:
        """:return: a copy of the current task"""
        return dict(self._task)


def validate_task(task: Any, task_space: dict[str, tuple[float, float]], n_costs: int, owner: str = "env") -> Task:
    """
    Check a task dict against declared ranges.

    :param task: the task to check
    :param task_space: mapping key -> (low, high); keys whose value is a sequence are checked
        element-wise
    :param n_costs: number of cost channels (for an optional ``cost_limit`` key)
    :param owner: name used in error messages
    :return: a shallow copy of the task
    """
    if not isinstance(task, dict):
        raise TypeError(f"{owner}.set_task(task): task must be a dict, got {type(task).__name__}")
    allowed = set(task_space) | {"cost_limit"}
    unknown = set(task) - allowed
    if unknown:
        raise ValueError(f"{owner}.set_task(task): unknown task key(s) {sorted(unknown)}; expected keys {sorted(task_space)}")
    missing = set(task_space) - set(task)
    if missing:
        raise ValueError(f"{owner}.set_task(task): missing task key(s) {sorted(missing)}")
    for key, (low, high) in task_space.items():
        values = np.atleast_1d(np.asarray(task[key], dtype=float))
        if not np.all(np.isfinite(values)) or np.any(values < low) or np.any(values > high):
            raise ValueError(f"{owner}.set_task(task): task[{key!r}]={task[key]!r} is outside its range [{low}, {high}]")
    if "cost_limit" in task:
        as_cost_vector(task["cost_limit"], n_costs, "task['cost_limit']", allow_negative=False)
    return dict(task)


def check_task_distribution(env: Any) -> None:
    """
    Raise a clear error when ``env`` does not follow the task-distribution protocol.

    Works on a plain env (``env.unwrapped`` is inspected as well) or on a VecEnv (its first
    sub-environment is inspected).

    :param env: environment to check
    """
    from stable_baselines3.common.vec_env import VecEnv

    if isinstance(env, VecEnv):
        names = ["sample_tasks", "set_task", "get_task"]
        has = [bool(env.has_attr(name)) for name in names]
        target = "the sub-environments of this VecEnv"
    else:
        unwrapped = getattr(env, "unwrapped", env)
        names = ["sample_tasks", "set_task", "get_task"]
        has = [callable(getattr(unwrapped, name, None)) for name in names]
        target = type(unwrapped).__name__
    missing = [name for name, ok in zip(names, has, strict=True) if not ok]
    if missing:
        raise TypeError(
            f"{target} is not a task distribution: missing {missing}. A meta-learning environment must implement "
            "sample_tasks(n_tasks, seed), set_task(task) and get_task() (see sb3_safemeta.common.tasks.TaskEnv)."
        )


def task_cost_limit(task: Task, default: Sequence[float] | np.ndarray, n_costs: int) -> np.ndarray:
    """
    :param task: a task dict
    :param default: the algorithm's cost limit (length n_costs)
    :param n_costs: number of cost channels
    :return: the cost limit d of this task, shape (n_costs,)
    """
    if "cost_limit" in task:
        return as_cost_vector(task["cost_limit"], n_costs, "task['cost_limit']", allow_negative=False)
    return as_cost_vector(default, n_costs, "cost_limit")


def check_sampled_tasks(tasks: Any, n_tasks: int, seed: int | None) -> list[Task]:
    """
    Raise a clear error when an environment's ``sample_tasks`` did not return ``n_tasks`` task dicts.

    :param tasks: what ``sample_tasks(n_tasks, seed)`` returned
    :param n_tasks: the number of tasks asked for
    :param seed: the seed it was called with
    :return: the tasks, as a list
    """
    call = f"the environment's sample_tasks({n_tasks}, seed={seed})"
    expected = f"expected a list of {n_tasks} task dicts (see sb3_safemeta.common.tasks)"
    text = repr(tasks)
    text = text if len(text) <= 80 else text[:77] + "..."
    if not isinstance(tasks, (list, tuple)):
        raise TypeError(f"{call} returned {text} ({type(tasks).__name__}); {expected}")
    if len(tasks) == 0:
        raise ValueError(f"{call} returned [] (a list of 0 tasks); {expected}")
    wrong = [task for task in tasks if not isinstance(task, dict)]
    if wrong:
        raise TypeError(f"{call} returned {text} (a list of {type(wrong[0]).__name__}); {expected}")
    if len(tasks) != int(n_tasks):
        raise ValueError(f"{call} returned a list of {len(tasks)} task(s); {expected}")
    return list(tasks)
