"""
A task family for the fault tests of the Ray workers: SafeMetaPointNav-v0 whose copies on a worker die (SIGKILL)
or raise at their n-th ``set_task``. Registered as a Gymnasium id, so that the workers rebuild it from its spec
(the workers import this module: the tests put the tests folder on their PYTHONPATH).
"""

import os
import signal

import gymnasium as gym

from sb3_safemeta.envs.point_nav import PointNavEnv

FAULTY_ID = "SafeMetaPointNavFaulty-v0"


class FaultyPointNavEnv(PointNavEnv):
    """
    :param driver_pid: the test's process, where the env never fails (it only samples tasks there)
    :param fail_at: the ``set_task`` call (counted in this process, the constructor's included) that fails; 0: never
    :param mode: ``"kill"`` (SIGKILL to the worker process) or ``"raise"`` (a RuntimeError)
    """

    def __init__(self, driver_pid: int = 0, fail_at: int = 0, mode: str = "kill") -> None:
        self.driver_pid, self.fail_at, self.mode, self.set_task_calls = driver_pid, fail_at, mode, 0
        super().__init__()

    def set_task(self, task):
        self.set_task_calls += 1
        if self.fail_at and self.set_task_calls == self.fail_at and os.getpid() != self.driver_pid:
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated failure of the environment at set_task({task})")
        super().set_task(task)


if FAULTY_ID not in gym.registry:
    gym.register(id=FAULTY_ID, entry_point="distributed_envs:FaultyPointNavEnv", max_episode_steps=100)


def power(base: float, exp: float) -> float:
    """A run for the tests of map_runs (importable by the workers)."""
    return base**exp
