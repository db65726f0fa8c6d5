"""
A tiny task family whose environments break on purpose: a fault (a NaN observation, a string cost, an exception,
an empty task list, ...) at a chosen step. Episodes of 5 steps, so runs of a few dozen steps finish in milliseconds.
"""

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta.common.tasks import Task, TaskEnv

EPISODE_LENGTH = 5

# fault -> what the error must name (a regular expression); None: the run must go through
STEP_FAULTS: dict[str, str | None] = {
    "nan_observation": r"NaN or infinite observation",
    "inf_observation": r"NaN or infinite observation",
    "nan_reward": r"NaN or infinite reward",
    "string_cost": r"info\['cost'\] of environment \d+ is '1\.0' \(str\)",
    "none_cost": r"info\['cost'\] of environment \d+ is None",
    "negative_cost": r"info\['cost'\] of environment \d+ is negative",
    "nan_cost": r"info\['cost'\] of environment \d+ is not finite",
    "missing_cost": r"did not report info\['cost'\]",
    "long_cost": r"info\['cost'\] of environment \d+ has 2 value\(s\), expected n_costs=1",
    "exception": r"the environment broke at step",
}
TASK_FAULTS: dict[str, str] = {
    "empty_tasks": r"sample_tasks\(\d+, seed=\d+\) returned \[\]",
    "tasks_not_dicts": r"sample_tasks\(\d+, seed=\d+\) returned .*float.* expected a list of \d+ task dicts",
    "too_few_tasks": r"sample_tasks\(\d+, seed=\d+\) returned a list of 1",
}


class EnvironmentBroke(RuntimeError):
    """The user's own exception, raised inside ``step``: it must reach the caller unchanged."""


class FaultyTaskEnv(TaskEnv):
    """
    A point on a line: observation x (1,), action (1,) in [-1, 1] moves it by 0.5 a; reward -|x - goal|, cost 1
    while x > 0.5; episodes end after 5 steps (truncation). ``fault`` happens at the environment's
    ``fault_step``-th step (counted over all episodes) or, for a task fault, in every ``sample_tasks`` call.

    :param fault: a key of ``STEP_FAULTS`` or ``TASK_FAULTS`` (None: a healthy environment)
    :param fault_step: the step of a step fault (1: the first)
    """

    task_space = {"goal": (-1.0, 1.0)}
    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, fault: str | None = None, fault_step: int = 1, task: Task | None = None) -> None:
        if fault is not None and fault not in STEP_FAULTS and fault not in TASK_FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self.fault, self.fault_step, self.steps = None, int(fault_step), 0
        self.x, self.t = 0.0, 0
        super().__init__(task)  # draws the first task: healthy
        self.fault = fault

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {"goal": float(rng.uniform(-1.0, 1.0))}

    def sample_tasks(self, n_tasks: int, seed: int | None = None) -> list[Any]:  # type: ignore[override]
        if self.fault == "empty_tasks":
            return []
        if self.fault == "tasks_not_dicts":
            return [0.5] * int(n_tasks)
        if self.fault == "too_few_tasks" and int(n_tasks) > 1:
            return super().sample_tasks(1, seed)
        return super().sample_tasks(n_tasks, seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        self.t += 1
        self.x = float(np.clip(self.x + 0.5 * float(np.clip(action[0], -1, 1)), -10, 10))
        observation = np.array([self.x], dtype=np.float32)
        reward, info = -abs(self.x - self._task["goal"]), {"cost": float(self.x > 0.5)}
        if self.steps == self.fault_step:
            if self.fault == "nan_observation":
                observation[0] = np.nan
            elif self.fault == "inf_observation":
                observation[0] = np.inf
            elif self.fault == "nan_reward":
                reward = float("nan")
            elif self.fault == "string_cost":
                info["cost"] = "1.0"
            elif self.fault == "none_cost":
                info["cost"] = None
            elif self.fault == "negative_cost":
                info["cost"] = -1.0
            elif self.fault == "nan_cost":
                info["cost"] = float("nan")
            elif self.fault == "missing_cost":
                del info["cost"]
            elif self.fault == "long_cost":
                info["cost"] = [0.0, 0.0]
            elif self.fault == "exception":
                raise EnvironmentBroke(f"the environment broke at step {self.steps}")
        return observation, reward, False, self.t >= EPISODE_LENGTH, info


def make_faulty_env(fault: str | None = None, fault_step: int = 1, n_envs: int = 2, seed: int = 0):
    return make_vec_env(FaultyTaskEnv, n_envs=n_envs, seed=seed, env_kwargs=dict(fault=fault, fault_step=fault_step))


class DictObservationTaskEnv(FaultyTaskEnv):
    """The same family with a Dict observation space."""

    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-10.0, 10.0, (1,), np.float32)})  # type: ignore[assignment]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:  # type: ignore[override]
        observation, info = super().reset(seed=seed, options=options)
        return {"x": observation}, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:  # type: ignore[override]
        observation, reward, terminated, truncated, info = super().step(action)
        return {"x": observation}, reward, terminated, truncated, info


class EndlessTaskEnv(FaultyTaskEnv):
    """The same family without truncation: an episode never ends by itself."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, terminated, _, info = super().step(action)
        return observation, reward, terminated, False, info
