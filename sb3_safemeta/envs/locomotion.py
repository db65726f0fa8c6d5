"""
MuJoCo locomotion task families of the paper (Appendix D.1; limits d and lambda from Table 2).

Four Gymnasium task environments built on Gymnasium's v5 MuJoCo models (gymnasium >= 1.0, mujoco >= 3):

=========================== ================ ======================================= ========================== ==== ======
id                          base             task (distribution)                     cost per step              d    lambda
=========================== ================ ======================================= ========================== ==== ======
SafeMetaHalfCheetahVel-v0   HalfCheetah-v5   goal_velocity ~ U(0, 2)                 1 if head z > h0 (0.8 m)   10   1.0
SafeMetaHumanoidDir-v0      Humanoid-v5      direction ~ U(0, pi/2)                  sum_i a_i^2                20   5.0
SafeMetaHopperVel-v0        Hopper-v5        goal_velocity ~ U(0, 1)                 sum_i a_i^2                5    1.0
SafeMetaSwimmerNoise-v0     Swimmer-v5       noise_var ~ U(0, .5), goal_velocity ~   cost_weight * sum_i a_i^2  5    0.2
                                             U(0, 1), cost_weight ~ U(.5, 1)
=========================== ================ ======================================= ========================== ==== ======

d is the limit on the undiscounted cost summed over one 200-step episode (``default_cost_limit``).
Every environment reports its cost as a float in ``info["cost"]`` at every step (one cost channel),
and follows the task protocol of :mod:`sb3_safemeta.common.tasks`: ``set_task`` validates the task
against ``task_space`` and the new task takes effect at the next ``reset``.

Design: composition, not subclassing. Each environment owns an *unwrapped* instance of the v5 class
(``self.base_env``) and drives its simulation directly: ``do_simulation`` + ``_get_obs``. Reasons:

- ``TaskEnv`` and ``MujocoEnv`` both define ``__init__``/``reset`` with incompatible signatures; a
  diamond through ``gym.Env`` would make the initialisation order fragile;
- the v5 ``step`` computes a reward and an info dict that we would throw away; calling the simulator
  directly makes our step *cheaper* than the raw v5 step, so the task layer costs (almost) nothing
  (see ``benchmarks/bench_envs.py`` and ``docs/guide/scenarios.md``);
- observations, action space, reset distribution, health checks and rendering stay exactly the v5 ones
  (the tests compare observations with the raw v5 environment step by step).

One random generator: ``reset(seed=...)`` seeds this environment's ``np_random`` and hands the same
generator to the base environment, so the reset noise and the swimmer's transition noise both come
from it and a seeded reset reproduces the whole episode.

Actions are clipped to the action space before they are applied; control costs are computed on the
clipped action, i.e. on the torque that is actually imposed (MuJoCo clamps ``ctrl`` to the same range).
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv

from sb3_safemeta.common.tasks import Task, TaskEnv

__all__ = ["HalfCheetahVelEnv", "HopperVelEnv", "HumanoidDirEnv", "LocomotionTaskEnv", "SwimmerNoiseEnv"]

# Reward weights of the v5 environments are not used (the reward is defined by the task): passing one is
# almost certainly a mistake, so it is rejected instead of being silently ignored.
_UNUSED_BASE_KWARGS = ("forward_reward_weight", "ctrl_cost_weight", "contact_cost_weight", "contact_cost_range")


class LocomotionTaskEnv(TaskEnv):
    """
    Common machinery of the locomotion task families: owns an unwrapped Gymnasium v5 MuJoCo environment,
    copies its spaces and metadata, shares the random generator, and applies a new task at ``reset``.

    Subclasses set ``base_env_class``, ``base_env_id``, ``task_space``, ``default_cost_limit``, implement
    ``_sample_task(rng)``, ``_activate(task)`` (copy the task's parameters to attributes read by ``step``)
    and ``step``.

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    :param render_mode: Gymnasium render mode, forwarded to the base environment
    :param base_kwargs: keyword arguments of the base v5 environment that shape its model, observation or
        reset distribution (e.g. ``reset_noise_scale``, ``frame_skip``, ``xml_file``); its reward weights
        are rejected because the reward is defined by the task
    """

    base_env_class: ClassVar[type[MujocoEnv]]
    #: Gymnasium id of the raw environment (used by the benchmark for the overhead comparison)
    base_env_id: ClassVar[str]
    #: the paper's limit d on the episode cost (Table 2), in episode units (undiscounted sum over 200 steps)
    default_cost_limit: ClassVar[float]
    n_costs = 1

    def __init__(self, task: Task | None = None, render_mode: str | None = None, **base_kwargs: Any) -> None:
        bad = sorted(set(base_kwargs) & set(_UNUSED_BASE_KWARGS))
        if bad:
            raise ValueError(
                f"{type(self).__name__}: {bad} would be ignored: the reward and cost are defined by the task "
                "(see the class docstring for the parameters that shape them)"
            )
        # Any: the v5 subclasses define _get_obs and is_healthy, which MujocoEnv does not declare
        self.base_env: Any = self.base_env_class(render_mode=render_mode, **base_kwargs)
        self.observation_space = self.base_env.observation_space
        self.action_space = self.base_env.action_space
        self.metadata = self.base_env.metadata
        self.render_mode = render_mode
        # Cached references read at every step (attribute look-ups through the base env cost ~0.1 us each).
        self._model = self.base_env.model
        self._data = self.base_env.data
        self._frame_skip = int(self.base_env.frame_skip)
        self._dt = float(self.base_env.dt)
        assert isinstance(self.action_space, spaces.Box)
        self._action_low = self.action_space.low.astype(np.float64)
        self._action_high = self.action_space.high.astype(np.float64)
        super().__init__(task)  # validates and stores the task (pending)
        self._activate(self._task)  # so that the parameters exist before the first reset

    def _activate(self, task: Task) -> None:
        """Copy the task's parameters to the attributes read by ``step`` (called at ``reset``)."""
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start an episode of the current task (the last one given to ``set_task``).

        :param seed: seed of ``np_random`` (reset noise and, for the swimmer, transition noise)
        :param options: unused
        :return: observation and the base environment's reset info
        """
        super().reset(seed=seed)
        # One generator for everything random in the episode (see module docstring).
        self.base_env.np_random = self.np_random
        self._activate(self._task)
        return self.base_env.reset()

    def _simulate(self, action: np.ndarray) -> np.ndarray:
        """Clip the action to the action space, apply it for ``frame_skip`` MuJoCo steps, return the clipped action."""
        action = np.clip(np.asarray(action, dtype=np.float64), self._action_low, self._action_high)
        self.base_env.do_simulation(action, self._frame_skip)
        return action

    def render(self) -> Any:
        """Render the base environment (see Gymnasium's MuJoCo ``render_mode``)."""
        return self.base_env.render()

    def close(self) -> None:
        """Close the base environment's renderer."""
        self.base_env.close()


class HalfCheetahVelEnv(LocomotionTaskEnv):
    """
    half-cheetah-vel (paper Appendix D.1): run at a goal velocity without raising the head above h0.

    - Task: ``goal_velocity`` v* ~ U(0, 2) (paper; PEARL uses U(0, 3)).
    - Reward: ``-|v_x - v*|`` (the paper's), with v_x the forward velocity of the torso (x displacement over the
      step / dt, as in HalfCheetah-v5). ``ctrl_cost_weight=0.05`` adds garage's and PEARL's control penalty
      ``- 0.05 * sum_i a_i^2``.
    - Cost: 1 at each step where the height of the head (centre of the ``head`` geom, world z) exceeds h0
      (paper: "positive when its head is higher than h0"), else 0. Limit d = 10 per 200-step episode
      (Table 2).
    - No termination (as HalfCheetah-v5); episodes end at the 200-step time limit.

    Choice of h0 = 0.8 m (the paper gives no value). The head rests at about 0.64 m when the cheetah stands
    still; measured costs per 200-step episode (10 episodes, seeds 0-9, gymnasium 1.4 / mujoco 3.x models):

    ========================================= =========================== ============ ============
    policy                                    h0 = 0.7                    h0 = 0.8     h0 = 0.9
    ========================================= =========================== ============ ============
    zero action (stand still)                 2.4                         1.0          0.2
    uniform random actions                    67.0 (32-85)                13.5 (0-34)  2.0 (0-14)
    ========================================= =========================== ============ ============

    With h0 = 0.8 standing still is safe (cost ~1, from the drop at reset), a random policy is around the
    limit (sometimes below, often above), and a running gait must be reshaped to keep the head low: a SAC
    policy trained for v* = 1.5 without the constraint (30k steps, runs at 1.33 m/s) costs 41.8 per episode
    (28-55), one trained for v* = 0.5 costs 1.2. The constraint is active but satisfiable (details in
    ``docs/guide/scenarios.md``).

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    :param head_height_limit: h0 in metres
    :param ctrl_cost_weight: weight of a control penalty in the reward (0: the paper's reward; 0.05 as garage/PEARL)
    :param render_mode: Gymnasium render mode
    :param base_kwargs: further keyword arguments of ``HalfCheetah-v5`` (e.g. ``reset_noise_scale``)
    """

    base_env_class = HalfCheetahEnv
    metadata = dict(HalfCheetahEnv.metadata)  # read by gymnasium.make before the instance exists
    base_env_id = "HalfCheetah-v5"
    task_space = {"goal_velocity": (0.0, 2.0)}
    default_cost_limit = 10.0

    def __init__(
        self,
        task: Task | None = None,
        head_height_limit: float = 0.8,
        ctrl_cost_weight: float = 0.0,
        render_mode: str | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.head_height_limit = float(head_height_limit)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        super().__init__(task, render_mode=render_mode, **base_kwargs)
        self._head_geom = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_GEOM, "head")
        if self._head_geom < 0:
            raise ValueError(f"{type(self).__name__}: the model has no geom named 'head' (custom xml_file?)")

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {"goal_velocity": float(rng.uniform(0.0, 2.0))}

    def _activate(self, task: Task) -> None:
        self._goal_velocity = float(task["goal_velocity"])

    @property
    def head_height(self) -> float:
        """:return: world z of the centre of the head geom (m), the quantity compared with h0"""
        return float(self._data.geom_xpos[self._head_geom, 2])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:return: observation, reward, terminated, truncated and info with ``info["cost"]`` (see the class docstring)"""
        x_before = float(self._data.qpos[0])
        action = self._simulate(action)
        x_velocity = (float(self._data.qpos[0]) - x_before) / self._dt
        head_height = float(self._data.geom_xpos[self._head_geom, 2])
        reward = -abs(x_velocity - self._goal_velocity) - self.ctrl_cost_weight * float(np.dot(action, action))
        cost = 1.0 if head_height > self.head_height_limit else 0.0
        info = {"cost": cost, "x_velocity": x_velocity, "head_height": head_height}
        return self.base_env._get_obs(), reward, False, False, info


class HumanoidDirEnv(LocomotionTaskEnv):
    """
    humanoid-dir (paper Appendix D.1): walk in direction theta with a budget on the squared torques.

    - Task: ``direction`` theta ~ U(0, pi/2).
    - Reward: v_x cos(theta) + v_y sin(theta) + ``healthy_reward`` * [healthy], with (v_x, v_y) the velocity of
      the centre of mass (as Humanoid-v5). The paper's reward is the directional velocity; we keep v5's
      healthy reward (5.0) and termination when the torso leaves z in (1, 2), without which falling over would
      end the episode at no loss. The control and contact costs of v5 are *not* in the reward: the control
      cost is the constraint.
    - Cost: sum_i a_i^2 (paper: "sum_i c_i^2, c_i the torque of each component"), a in [-0.4, 0.4]^17, so at
      most 2.72 per step. Limit d = 20 per episode (Table 2, lambda = 5.0).
    - Observation: v5's 348-dimensional default (the paper's 376 is the older v2/v3 layout).

    Measured (10 episodes, seeds 0-9): uniform random actions fall after 19.4 steps on average with an episode
    cost of 17.5; zero torque falls after 40 steps with cost 0. Walking for 200 steps within d = 20 needs an
    average of 0.1 per step, i.e. about 0.077 rms per joint.

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    :param healthy_reward: reward per step while healthy (v5 default 5.0)
    :param terminate_when_unhealthy: end the episode when the humanoid falls (v5 default)
    :param render_mode: Gymnasium render mode
    :param base_kwargs: further keyword arguments of ``Humanoid-v5`` (e.g. ``healthy_z_range``)
    """

    base_env_class = HumanoidEnv
    metadata = dict(HumanoidEnv.metadata)  # read by gymnasium.make before the instance exists
    base_env_id = "Humanoid-v5"
    task_space = {"direction": (0.0, float(np.pi / 2))}
    default_cost_limit = 20.0

    def __init__(
        self,
        task: Task | None = None,
        healthy_reward: float = 5.0,
        terminate_when_unhealthy: bool = True,
        render_mode: str | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.healthy_reward = float(healthy_reward)
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        super().__init__(
            task,
            render_mode=render_mode,
            healthy_reward=healthy_reward,
            terminate_when_unhealthy=terminate_when_unhealthy,
            **base_kwargs,
        )
        # Body masses normalised once: the centre of mass is then one weighted sum per step (as v5's mass_center).
        self._mass_weights = (self._model.body_mass / self._model.body_mass.sum())[:, None]

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {"direction": float(rng.uniform(0.0, np.pi / 2))}

    def _activate(self, task: Task) -> None:
        self._unit_direction = np.array([np.cos(task["direction"]), np.sin(task["direction"])])

    def _center_of_mass_xy(self) -> np.ndarray:
        return (self._mass_weights * self._data.xipos).sum(axis=0)[:2]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:return: observation, reward, terminated, truncated and info with ``info["cost"]`` (see the class docstring)"""
        xy_before = self._center_of_mass_xy()
        action = self._simulate(action)
        xy_velocity = (self._center_of_mass_xy() - xy_before) / self._dt
        healthy = bool(self.base_env.is_healthy)
        reward = float(np.dot(xy_velocity, self._unit_direction)) + self.healthy_reward * healthy
        cost = float(np.dot(action, action))
        terminated = self.terminate_when_unhealthy and not healthy
        info = {"cost": cost, "x_velocity": float(xy_velocity[0]), "y_velocity": float(xy_velocity[1])}
        return self.base_env._get_obs(), reward, terminated, False, info


class HopperVelEnv(LocomotionTaskEnv):
    """
    hopper-vel (paper Appendix D.1): hop at a goal velocity with a budget on the squared torques.

    - Task: ``goal_velocity`` v* ~ U(0, 1).
    - Reward: ``-|v_x - v*|`` + ``healthy_reward`` * [healthy] (v5 healthy reward 1.0, termination when unhealthy).
      The healthy reward is kept on purpose: the tracking term is never positive, so without it ending the
      episode early by falling would *raise* the return.
    - Cost: sum_i a_i^2 with a in [-1, 1]^3 (the paper's "control cost of the robot"; v5's 1e-3 weight would
      make d = 5 unreachable even at full torque). Limit d = 5 per episode (Table 2, lambda = 1.0).
    - Observation: v5's 11-dimensional default (the paper's 12 includes the x position).

    Measured (10 episodes, seeds 0-9): uniform random actions fall after 31.7 steps with an episode cost of
    31.0; zero torque stays up 149 steps (cost 0).

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    :param healthy_reward: reward per step while healthy (v5 default 1.0)
    :param terminate_when_unhealthy: end the episode when the hopper falls (v5 default)
    :param render_mode: Gymnasium render mode
    :param base_kwargs: further keyword arguments of ``Hopper-v5`` (e.g. ``healthy_angle_range``)
    """

    base_env_class = HopperEnv
    metadata = dict(HopperEnv.metadata)  # read by gymnasium.make before the instance exists
    base_env_id = "Hopper-v5"
    task_space = {"goal_velocity": (0.0, 1.0)}
    default_cost_limit = 5.0

    def __init__(
        self,
        task: Task | None = None,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        render_mode: str | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.healthy_reward = float(healthy_reward)
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        super().__init__(
            task,
            render_mode=render_mode,
            healthy_reward=healthy_reward,
            terminate_when_unhealthy=terminate_when_unhealthy,
            **base_kwargs,
        )

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {"goal_velocity": float(rng.uniform(0.0, 1.0))}

    def _activate(self, task: Task) -> None:
        self._goal_velocity = float(task["goal_velocity"])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:return: observation, reward, terminated, truncated and info with ``info["cost"]`` (see the class docstring)"""
        x_before = float(self._data.qpos[0])
        action = self._simulate(action)
        x_velocity = (float(self._data.qpos[0]) - x_before) / self._dt
        healthy = bool(self.base_env.is_healthy)
        reward = -abs(x_velocity - self._goal_velocity) + self.healthy_reward * healthy
        cost = float(np.dot(action, action))
        terminated = self.terminate_when_unhealthy and not healthy
        return self.base_env._get_obs(), reward, terminated, False, {"cost": cost, "x_velocity": x_velocity}


class SwimmerNoiseEnv(LocomotionTaskEnv):
    """
    swimmer-noise (paper Appendix D.1): swim at a goal velocity under transition noise, with a weighted
    budget on the squared torques.

    - Task: ``noise_var`` sigma^2 ~ U(0, 0.5), ``goal_velocity`` v* ~ U(0, 1), ``cost_weight`` w ~ U(0.5, 1).
    - Transition noise (paper: "a Gaussian noise [added] to the state transition"): after each step,
      qvel <- qvel + eps, eps ~ N(0, sigma^2 I_5), drawn from the environment's ``np_random``. The noise acts on
      the velocity part of the state (the observation reports the perturbed velocities) and reaches the
      positions through the next integration; positions are not perturbed directly, which keeps the joint
      angles in range and v_x (a displacement over dt) meaningful. With sigma^2 = 0.5 the step-to-step spread of
      v_x under random actions grows from 0.37 to about 1.2 m/s: the noisy tasks are hard, as intended.
    - Reward: ``-|v_x - v*|``, v_x the forward velocity of the front tip (x displacement / dt, as Swimmer-v5).
    - Cost: w * sum_i a_i^2 with a in [-1, 1]^2. Limit d = 5 per episode (Table 2, lambda = 0.2).

    Measured (10 episodes, seeds 0-9): uniform random actions cost 133 * w per 200-step episode (w in
    [0.5, 1]); zero torque costs 0.

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    :param render_mode: Gymnasium render mode
    :param base_kwargs: further keyword arguments of ``Swimmer-v5`` (e.g. ``reset_noise_scale``)
    """

    base_env_class = SwimmerEnv
    metadata = dict(SwimmerEnv.metadata)  # read by gymnasium.make before the instance exists
    base_env_id = "Swimmer-v5"
    task_space = {"noise_var": (0.0, 0.5), "goal_velocity": (0.0, 1.0), "cost_weight": (0.5, 1.0)}
    default_cost_limit = 5.0

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {
            "noise_var": float(rng.uniform(0.0, 0.5)),
            "goal_velocity": float(rng.uniform(0.0, 1.0)),
            "cost_weight": float(rng.uniform(0.5, 1.0)),
        }

    def _activate(self, task: Task) -> None:
        self._noise_std = float(np.sqrt(task["noise_var"]))
        self._goal_velocity = float(task["goal_velocity"])
        self._cost_weight = float(task["cost_weight"])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:return: observation, reward, terminated, truncated and info with ``info["cost"]`` (see the class docstring)"""
        x_before = float(self._data.qpos[0])
        action = self._simulate(action)
        x_velocity = (float(self._data.qpos[0]) - x_before) / self._dt
        if self._noise_std > 0.0:
            self._data.qvel[:] += self._noise_std * self.np_random.standard_normal(self._model.nv)
        reward = -abs(x_velocity - self._goal_velocity)
        cost = self._cost_weight * float(np.dot(action, action))
        return self.base_env._get_obs(), reward, False, False, {"cost": cost, "x_velocity": x_velocity}
