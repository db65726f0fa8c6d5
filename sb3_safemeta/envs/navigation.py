"""
The paper's three navigation task families (Appendix D.1) on Safety-Gymnasium 1.0.0 physics.

Each id is a :class:`~sb3_safemeta.common.tasks.TaskEnv` over a Safety-Gymnasium ``Builder`` (the
raw MuJoCo environment of Ji et al. 2023) whose task object is one of the task classes below,
built with Safety-Gymnasium's own task API (geoms ``Circle``, ``Sigwalls``, ``Hazards``,
``Buttons``, ``Goal``). Safety-Gymnasium is imported through
:mod:`sb3_safemeta.envs.safety_gym_compat` (it does not import cleanly on Gymnasium 1.x).

- ``SafeMetaPointCircle-v0`` (:class:`PointCircleEnv`): Circle level 1 with the Point agent. Task:
  circle radius ~ U(1, 1.5) and wall distance ~ U(0.55, 0.75) (the safe region is ``|x| <= wall
  distance``). Reward: Safety-Gymnasium's circle reward (``tangential speed / (1 + |r - radius|)``);
  cost 1 per step outside the safe region. Observation 28 values (as in the paper).
- ``SafeMetaCarCircleHazard-v0`` (:class:`CarCircleHazardEnv`): Circle level 1 (walls at
  ``|x| = 1.125``, Safety-Gymnasium's value) with the Car agent, plus 3-7 hazards (radius 0.2) at
  uniform positions. Task: circle radius ~ U(0.7, 1) and the hazard positions. Cost 1 per step
  outside the region or inside a hazard. Observation 56 values (the paper states 60; upstream Circle has no hazards; the
  meta-CPO authors added them to their copy of Safety-Gymnasium, see docs/guide/safety_gymnasium.md).
- ``SafeMetaPointButton-v0`` (:class:`PointButtonEnv`): Button with the Point agent, 6-10 buttons
  and 6-10 hazards at uniform positions, the region ``|x|, |y| <= 1.5`` (Button level 1's extents).
  Task: positions of buttons and hazards and the index of the first goal button. Reward:
  Safety-Gymnasium's button reward (progress to the goal button, +1 on pressing it); cost 1 per
  step pressing a wrong button, inside a hazard or outside the region. Observation 60 values (the paper
  states 56; the deviations are listed in docs/guide/scenarios.md).

Costs are Safety-Gymnasium's indicator costs (``constrain_indicator=True``): ``info["cost"]`` is
1.0 when any constraint is violated in the step, else 0.0. The paper's cost limit is d = 10 per
500-step episode (Table 2). The lidar observations have a fixed number of bins (16) whatever the
number of objects, so the observation size is fixed per family.

A task is a plain dict; positions are part of it, so a task fully determines the layout of the
objects (the agent's start and heading still come from the reset seed, as upstream).
"""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from sb3_safemeta.common.tasks import Task, TaskEnv, validate_task
from sb3_safemeta.envs.safety_gym_compat import headless_assets, import_safety_gymnasium

__all__ = ["CarCircleHazardEnv", "NavigationTaskEnv", "PointButtonEnv", "PointCircleEnv"]

# The episode length is set by the registered TimeLimit (500, Appendix D.2), not by the task.
_NO_LIMIT = 2**62
# Margin by which a start position stays inside a constraint boundary (no cost at reset).
_EPS = 1e-3


def _positions(task: Task, key: str, count: tuple[int, int], owner: str) -> np.ndarray:
    """:return: ``task[key]`` as an (n, 2) array, after checking n lies in ``count``"""
    array = np.asarray(task[key], dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{owner}.set_task(task): task[{key!r}] must be a list of [x, y] pairs, got shape {array.shape}")
    if not count[0] <= len(array) <= count[1]:
        raise ValueError(
            f"{owner}.set_task(task): task[{key!r}] has {len(array)} positions; expected {count[0]} to {count[1]}"
        )
    return array


def _check_separation(groups: list[tuple[str, np.ndarray, float]], fixed: np.ndarray, owner: str) -> None:
    """
    Raise when two objects are closer than the sum of their keep-out radii, or an object is closer
    than its keep-out radius to a fixed point of the layout.

    Safety-Gymnasium rejects such a layout (it would retry and finally raise ``ResamplingError``).

    :param groups: (task key, positions (n, 2), keep-out radius) per object type
    :param fixed: (m, 2) positions of the task's fixed objects (keep-out 0: circle centre, wall anchors)
    :param owner: name used in error messages
    """
    points = np.concatenate([positions for _, positions, _ in groups])
    keepouts = np.concatenate([np.full(len(positions), keepout) for _, positions, keepout in groups])
    names = [f"{key}[{i}]" for key, positions, _ in groups for i in range(len(positions))]
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    too_close = distances < keepouts[:, None] + keepouts[None] + _EPS
    np.fill_diagonal(too_close, False)
    if np.any(too_close):
        i, j = np.argwhere(too_close)[0]
        raise ValueError(
            f"{owner}.set_task(task): {names[i]} and {names[j]} are {distances[i, j]:.3f} apart; objects must be at least "
            f"{keepouts[i] + keepouts[j] + _EPS:.3f} apart (keep-out radii)"
        )
    to_fixed = np.linalg.norm(points[:, None] - fixed[None], axis=-1)
    near = to_fixed < keepouts[:, None] + _EPS
    if np.any(near):
        i, j = np.argwhere(near)[0]
        raise ValueError(
            f"{owner}.set_task(task): {names[i]} is {to_fixed[i, j]:.3f} from the fixed point {fixed[j].tolist()} "
            f"(circle centre or wall anchor); it must be at least {keepouts[i] + _EPS:.3f} away"
        )


def _sample_positions(
    rng: np.random.Generator,
    counts: list[int],
    keepouts: list[float],
    half_width: float,
    fixed: np.ndarray,
    max_tries: int = 10_000,
) -> list[np.ndarray]:
    """
    Uniform positions in ``[-half_width, half_width]^2``, conditioned on the keep-out separations
    checked by :func:`_check_separation` (sequential rejection sampling, like Safety-Gymnasium's
    own layout sampler).

    :param rng: task generator
    :param counts: number of objects per type
    :param keepouts: keep-out radius per type
    :param half_width: half width of the square
    :param fixed: (m, 2) fixed points (keep-out 0)
    :param max_tries: attempts per object before restarting the whole draw
    :return: one (n, 2) array per type
    """
    while True:
        placed: list[tuple[np.ndarray, float]] = [(xy, 0.0) for xy in fixed]
        result: list[np.ndarray] = []
        for count, keepout in zip(counts, keepouts, strict=True):
            group = []
            for _ in range(count):
                for _ in range(max_tries):
                    xy = rng.uniform(-half_width, half_width, size=2)
                    if all(np.hypot(*(xy - other)) >= keepout + other_keepout + _EPS for other, other_keepout in placed):
                        break
                else:
                    break
                placed.append((xy, keepout))
                group.append(xy)
            if len(group) < count:
                break
            result.append(np.array(group).reshape(-1, 2))
        if len(result) == len(counts):
            return result


@cache
def _safety_gymnasium() -> dict[str, Any]:
    """
    Import Safety-Gymnasium (through the compatibility layer) and define the task classes.

    Done lazily, once per process, so that importing this module stays cheap and the classes can
    subclass Safety-Gymnasium's, which only exist after the compatibility patches.

    :return: the Builder subclass and the three task classes, by name
    """
    import_safety_gymnasium()
    from safety_gymnasium.assets.geoms import Hazards, Sigwalls
    from safety_gymnasium.builder import Builder
    from safety_gymnasium.tasks.safe_navigation.button.button_level0 import ButtonLevel0
    from safety_gymnasium.tasks.safe_navigation.circle.circle_level1 import CircleLevel1

    class TaskBuilder(Builder):
        """Safety-Gymnasium's ``Builder`` with a given task class (upstream looks the class up by id)."""

        def __init__(self, task_class: type, agent_name: str) -> None:
            self._task_class = task_class
            super().__init__(task_id=f"SafeMeta{agent_name}{task_class.__name__}-v0", config={"agent_name": agent_name})

        def _get_task(self) -> Any:
            task = self._task_class(config=self.config)
            task.build_observation_space()
            return task

    class MetaCircle(CircleLevel1):
        """Circle level 1 whose circle radius and wall distance are set per task (point-circle)."""

        def configure(self, radius: float, wall_distance: float) -> None:
            self.circle.radius = float(radius)
            self.sigwalls.locate_factor = float(wall_distance)
            self.sigwalls.__post_init__()  # recompute the wall locations from locate_factor
            # Start inside the safe region (upstream starts in |x| <= 0.8 < 1.125; here the walls can be at 0.55).
            half = float(wall_distance) - 0.05
            self.agent.placements = [(-half, -0.8, half, 0.8)]
            self.placements_conf.placements = None  # rebuilt from the objects at the next reset

    class MetaCircleHazard(CircleLevel1):
        """Circle level 1 plus a group of hazards whose number and positions are set per task (car-circle-hazard)."""

        def __init__(self, config: dict) -> None:
            super().__init__(config=config)
            self._add_geoms(Hazards(num=3, keepout=CarCircleHazardEnv.hazard_keepout, is_constrained=True))

        def configure(self, radius: float, hazard_positions: np.ndarray) -> None:
            self.circle.radius = float(radius)
            self.hazards.num = len(hazard_positions)
            self.hazards.locations = [tuple(xy) for xy in hazard_positions.tolist()]
            self.placements_conf.placements = None

    class MetaButton(ButtonLevel0):
        """
        Button with buttons, hazards and a square region set per task (point-button).

        The first goal button of each episode is the task's ``goal_button``; after it is pressed,
        Safety-Gymnasium draws the next one (``continue_goal``), as upstream.
        """

        def __init__(self, config: dict) -> None:
            super().__init__(config=config)
            half = PointButtonEnv.region_half_width
            self.placements_conf.extents = [-half, -half, half, half]
            self.agent.keepout = PointButtonEnv.agent_keepout
            self.buttons.is_constrained = True
            self.goal.keepout = 0.0  # the goal geom is moved onto the goal button after placement
            self._add_geoms(Hazards(num=6, keepout=PointButtonEnv.hazard_keepout, is_constrained=True))
            self._add_geoms(Sigwalls(num=4, locate_factor=half, is_constrained=True))
            self.goal_index = 0
            self._first_goal: int | None = None

        def configure(self, button_positions: np.ndarray, hazard_positions: np.ndarray, goal_button: int) -> None:
            self.buttons.num = len(button_positions)
            self.buttons.locations = [tuple(xy) for xy in button_positions.tolist()]
            self.hazards.num = len(hazard_positions)
            self.hazards.locations = [tuple(xy) for xy in hazard_positions.tolist()]
            self.goal_index = int(goal_button)
            self.placements_conf.placements = None

        def reset(self) -> None:
            self._first_goal = self.goal_index
            super().reset()

        def build_goal_button(self) -> None:
            if self._first_goal is None:
                super().build_goal_button()
                return
            import mujoco

            self.buttons.goal_button, self._first_goal = self._first_goal, None
            goal_xy = np.asarray(self.buttons.pos[self.buttons.goal_button][:2])
            self.world_info.world_config_dict["geoms"]["goal"]["pos"][:2] = goal_xy
            self._set_goal(goal_xy)
            mujoco.mj_forward(self.model, self.data)

    return {
        "TaskBuilder": TaskBuilder,
        "MetaCircle": MetaCircle,
        "MetaCircleHazard": MetaCircleHazard,
        "MetaButton": MetaButton,
    }


class NavigationTaskEnv(TaskEnv):
    """
    Base class: a task environment over a Safety-Gymnasium ``Builder`` (see module docstring).

    ``set_task`` checks the task and stores it; the Safety-Gymnasium task object is reconfigured
    at the next ``reset`` (Safety-Gymnasium rebuilds its MuJoCo model at every reset). ``step``
    converts Safety-Gymnasium's 6-tuple into Gymnasium's 5-tuple with ``info["cost"]`` (float).

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    """

    metadata: dict[str, Any] = {"render_modes": []}
    n_costs = 1
    #: cost limit d per 500-step episode (paper, Table 2)
    default_cost_limit = 10.0
    _task_class_name: ClassVar[str] = ""
    _agent_name: ClassVar[str] = ""

    def __init__(self, task: Task | None = None) -> None:
        classes = _safety_gymnasium()
        with warnings.catch_warnings():
            # Safety-Gymnasium builds Boxes whose bounds overflow the cast Gymnasium 1.x checks (harmless)
            warnings.filterwarnings("ignore", message="overflow encountered in cast", category=RuntimeWarning)
            self._builder = classes["TaskBuilder"](classes[self._task_class_name], self._agent_name)
        self._builder.task.num_steps = _NO_LIMIT
        self._sg_task = self._builder.task
        space = self._builder.observation_space
        self.observation_space = spaces.Box(space.low, space.high, shape=space.shape, dtype=space.dtype)
        self.action_space = self._builder.action_space
        self._pending: dict[str, Any] | None = None
        super().__init__(task)

    def _configure_kwargs(self, task: Task) -> dict[str, Any]:
        """:return: the keyword arguments of the Safety-Gymnasium task's ``configure`` (validated)"""
        raise NotImplementedError

    def set_task(self, task: Task) -> None:
        """
        Set the task of the next episodes (takes effect at the next ``reset``).

        The task is checked completely (keys and ranges, then the family's own checks: numbers of
        objects, keep-out separations, goal index) before anything is stored, so a rejected task
        leaves the current one in place.

        :param task: a dict with exactly the keys of ``task_space`` (plus optionally ``cost_limit``)
        """
        checked = validate_task(task, self.task_space, self.n_costs, owner=type(self).__name__)
        self._pending = self._configure_kwargs(checked)
        self._task = checked

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start an episode of the current task.

        :param seed: seeds Safety-Gymnasium's generator (agent start, heading, later goals)
        :param options: unused
        :return: observation and info
        """
        super().reset(seed=seed)
        if self._pending is not None:
            self._sg_task.configure(**self._pending)
            self._pending = None
        with headless_assets():  # these envs never render: skip decoding the skybox images at each rebuild
            return self._builder.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """
        :param action: action in ``action_space``
        :return: Gymnasium 5-tuple; ``info["cost"]`` is the step cost (float)
        """
        obs, reward, cost, terminated, truncated, info = self._builder.step(np.asarray(action, dtype=np.float64))
        info["cost"] = float(cost)
        return obs, float(reward), terminated, truncated, info

    def close(self) -> None:
        """Close the underlying Safety-Gymnasium environment."""
        self._builder.close()

    def object_positions(self, name: str) -> np.ndarray:
        """
        :param name: a geom group of the Safety-Gymnasium task (``"hazards"``, ``"buttons"``)
        :return: the (n, 2) positions of that group in the current MuJoCo model (after ``reset``)
        """
        return np.array([xyz[:2] for xyz in getattr(self._sg_task, name).pos]).reshape(-1, 2)

    @property
    def agent_position(self) -> np.ndarray:
        """:return: the agent's (x, y) position in the current MuJoCo model"""
        return np.asarray(self._sg_task.agent.pos[:2]).copy()


class PointCircleEnv(NavigationTaskEnv):
    """
    Point-Circle (paper Appendix D.1): run along a circle while staying in the strip ``|x| <= wall distance``.

    Task keys: ``radius`` ~ U(1, 1.5), ``wall_distance`` ~ U(0.55, 0.75).

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    """

    task_space = {"radius": (1.0, 1.5), "wall_distance": (0.55, 0.75)}
    _task_class_name = "MetaCircle"
    _agent_name = "Point"

    def _sample_task(self, rng: np.random.Generator) -> Task:
        return {"radius": float(rng.uniform(1.0, 1.5)), "wall_distance": float(rng.uniform(0.55, 0.75))}

    def _configure_kwargs(self, task: Task) -> dict[str, Any]:
        return {"radius": float(task["radius"]), "wall_distance": float(task["wall_distance"])}


class CarCircleHazardEnv(NavigationTaskEnv):
    """
    Car-Circle-Hazard (paper Appendix D.1): run along a circle with the Car agent, staying in
    ``|x| <= 1.125`` and out of 3-7 hazards.

    Task keys: ``radius`` ~ U(0.7, 1); ``hazard_positions``: 3-7 ``[x, y]`` pairs (the number is
    uniform on {3, ..., 7}), uniform in [-0.85, 0.85]^2 (inside the walls), at least
    2 x 0.25 apart and 0.25 from the circle centre (Safety-Gymnasium's placement keep-out, which also
    keeps the agent's start out of hazards).

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    """

    hazard_count = (3, 7)
    hazard_half_width = 0.85
    hazard_keepout = 0.25
    #: circle centre and the two wall anchors of Circle level 1 (placed objects with keep-out 0)
    fixed_points = np.array([[0.0, 0.0], [1.125, 0.0], [-1.125, 0.0]])
    task_space = {"radius": (0.7, 1.0), "hazard_positions": (-hazard_half_width, hazard_half_width)}
    _task_class_name = "MetaCircleHazard"
    _agent_name = "Car"

    def _sample_task(self, rng: np.random.Generator) -> Task:
        radius = float(rng.uniform(0.7, 1.0))
        n_hazards = int(rng.integers(self.hazard_count[0], self.hazard_count[1] + 1))
        (hazards,) = _sample_positions(rng, [n_hazards], [self.hazard_keepout], self.hazard_half_width, self.fixed_points)
        return {"radius": radius, "hazard_positions": hazards.tolist()}

    def _configure_kwargs(self, task: Task) -> dict[str, Any]:
        owner = type(self).__name__
        hazards = _positions(task, "hazard_positions", self.hazard_count, owner)
        _check_separation([("hazard_positions", hazards, self.hazard_keepout)], self.fixed_points, owner)
        return {"radius": float(task["radius"]), "hazard_positions": hazards}


class PointButtonEnv(NavigationTaskEnv):
    """
    Point-Button (paper Appendix D.1): press the goal button while avoiding wrong buttons, hazards
    and leaving the square ``|x|, |y| <= 1.5``.

    Task keys: ``button_positions`` and ``hazard_positions``: 6-10 ``[x, y]`` pairs each (numbers
    uniform on {6, ..., 10}), uniform in [-1.25, 1.25]^2 and separated by the keep-out radii
    (buttons 0.2, hazards 0.18, Safety-Gymnasium's Button values); ``goal_button``: index of the
    first goal button, uniform over the buttons.

    :param task: initial task (default: the first task of ``sample_tasks(1, seed=0)``)
    """

    button_count = (6, 10)
    hazard_count = (6, 10)
    object_half_width = 1.25
    region_half_width = 1.5
    button_keepout = 0.2
    hazard_keepout = 0.18
    agent_keepout = 0.15
    #: anchors of the four region walls (placed objects with keep-out 0)
    fixed_points = np.array([[1.5, 0.0], [-1.5, 0.0], [0.0, 1.5], [0.0, -1.5]])
    task_space = {
        "button_positions": (-object_half_width, object_half_width),
        "hazard_positions": (-object_half_width, object_half_width),
        "goal_button": (0, button_count[1] - 1),
    }
    _task_class_name = "MetaButton"
    _agent_name = "Point"

    def _sample_task(self, rng: np.random.Generator) -> Task:
        n_buttons = int(rng.integers(self.button_count[0], self.button_count[1] + 1))
        n_hazards = int(rng.integers(self.hazard_count[0], self.hazard_count[1] + 1))
        buttons, hazards = _sample_positions(
            rng, [n_buttons, n_hazards], [self.button_keepout, self.hazard_keepout], self.object_half_width, self.fixed_points
        )
        goal = int(rng.integers(n_buttons))
        return {"button_positions": buttons.tolist(), "hazard_positions": hazards.tolist(), "goal_button": goal}

    def _configure_kwargs(self, task: Task) -> dict[str, Any]:
        owner = type(self).__name__
        buttons = _positions(task, "button_positions", self.button_count, owner)
        hazards = _positions(task, "hazard_positions", self.hazard_count, owner)
        goal = task["goal_button"]
        if isinstance(goal, bool) or not float(goal).is_integer() or not 0 <= int(goal) < len(buttons):
            raise ValueError(
                f"{owner}.set_task(task): task['goal_button']={goal!r} must be an integer index below {len(buttons)}"
            )
        groups = [("button_positions", buttons, self.button_keepout), ("hazard_positions", hazards, self.hazard_keepout)]
        _check_separation(groups, self.fixed_points, owner)
        return {"button_positions": buttons, "hazard_positions": hazards, "goal_button": int(goal)}
