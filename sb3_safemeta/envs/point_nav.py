"""
SafeMetaPointNav-v0: a 2-D point robot that must reach a hidden goal while a hidden hazard adds cost.

The built-in task family of the package: pure NumPy (tens of thousands of steps per second), so
that the meta-training main job, the tests and the examples run in minutes on a laptop. It follows
the 2-D navigation family of MAML (Finn et al. 2017) with a hazard as in Safety-Gymnasium.

- State: position p in [-3, 3]^2, starting near the origin; observation = p (the task is hidden:
  the agent infers it from rewards, which is what meta-learning is for).
- Action: a velocity command in [-1, 1]^2; p <- clip(p + 0.1 a, -3, 3).
- Task: goal direction theta_g ~ U(0, pi/2) (goal at radius 2), hazard direction theta_h ~ U(0, pi/2)
  (hazard centre at radius 1) and hazard radius ~ U(0.2, 0.4). ``set_task`` takes effect at the next
  ``reset`` (an episode under way keeps its task).
- Reward: -||p - goal|| per step; cost: 1 per step inside the hazard disc. Default limit d = 10
  per 100-step episode.

When the hazard lies near the straight line to the goal, the straight path costs about
2 r_h / 0.1 = 4-8 per pass, so going straight is safe but lingering in the hazard is not; the
hazard sits on every task's path to some goals, so a meta-policy must learn where hazards can be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_safemeta.common.tasks import Task, TaskEnv

__all__ = ["PointNavEnv"]

_STEP = 0.1
_GOAL_RADIUS = 2.0
_HAZARD_DISTANCE = 1.0
_BOUND = 3.0


class PointNavEnv(TaskEnv):
    """
    2-D point navigation with a hidden goal and a hidden hazard (see module docstring).

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    """

    metadata: dict[str, Any] = {"render_modes": []}
    task_space = {"goal_angle": (0.0, np.pi / 2), "hazard_angle": (0.0, np.pi / 2), "hazard_radius": (0.2, 0.4)}
    n_costs = 1
    default_cost_limit = 10.0

    def __init__(self, task: Task | None = None) -> None:
        self.observation_space = spaces.Box(-_BOUND, _BOUND, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._position = np.zeros(2)
        self._pending_task: Task | None = None
        super().__init__(task)
        self._configure(self._task)  # goal and hazard are defined before the first reset

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {
            "goal_angle": float(rng.uniform(0.0, np.pi / 2)),
            "hazard_angle": float(rng.uniform(0.0, np.pi / 2)),
            "hazard_radius": float(rng.uniform(0.2, 0.4)),
        }

    def _apply_task(self, task: Task) -> None:
        self._pending_task = task  # the protocol: a new task takes effect at the next reset

    def _configure(self, task: Task) -> None:
        self.goal = _GOAL_RADIUS * np.array([np.cos(task["goal_angle"]), np.sin(task["goal_angle"])])
        self.hazard_center = _HAZARD_DISTANCE * np.array([np.cos(task["hazard_angle"]), np.sin(task["hazard_angle"])])
        self.hazard_radius = float(task["hazard_radius"])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self._pending_task is not None:
            self._configure(self._pending_task)
            self._pending_task = None
        self._position = self.np_random.uniform(-0.05, 0.05, size=2)
        return self._position.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:return: observation, reward, terminated, truncated and info with ``info["cost"]`` (see the class docstring)"""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._position = np.clip(self._position + _STEP * action, -_BOUND, _BOUND)
        reward = -float(np.linalg.norm(self._position - self.goal))
        cost = float(np.linalg.norm(self._position - self.hazard_center) < self.hazard_radius)
        return self._position.astype(np.float32), reward, False, False, {"cost": cost}
