"""
Tests of the navigation task families (sb3_safemeta.envs.navigation) on Safety-Gymnasium physics, and of the
built-in pure-NumPy family SafeMetaPointNav-v0 (sb3_safemeta.envs.point_nav).

Positions match the task to 1e-9 (Safety-Gymnasium places a fixed object in a 1e-9 box around it).
Costs are checked against the geometry they are defined by (the agent's position in the MuJoCo
model), rewards against Safety-Gymnasium's circle formula, task sampling against the declared
distributions.
"""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sb3_safemeta.envs  # noqa: F401  (registers the ids)
from sb3_safemeta.common.tasks import TaskDistribution
from sb3_safemeta.envs.navigation import CarCircleHazardEnv, PointButtonEnv, PointCircleEnv
from sb3_safemeta.envs.point_nav import PointNavEnv

IDS = {
    "SafeMetaPointCircle-v0": (PointCircleEnv, 28),
    "SafeMetaCarCircleHazard-v0": (CarCircleHazardEnv, 56),
    "SafeMetaPointButton-v0": (PointButtonEnv, 60),
}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    # Safety-Gymnasium's observation Box with infinite bounds triggers a NumPy cast warning in Gymnasium.
    warnings.filterwarnings("ignore", message="overflow encountered in cast", category=RuntimeWarning)


def _rollout(env: gymnasium.Env, actions: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:return: observations, rewards, costs and agent (x, y) positions of one seeded open-loop rollout"""
    obs, _ = env.reset(seed=seed)
    observations, rewards, costs, positions = [obs], [], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        costs.append(info["cost"])
        positions.append(env.unwrapped.agent_position)
        assert not terminated and not truncated
    return np.array(observations), np.array(rewards), np.array(costs), np.array(positions)


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_make_and_1000_random_steps(env_id: str) -> None:
    cls, obs_size = IDS[env_id]
    env = gymnasium.make(env_id)
    assert env.spec.max_episode_steps == 500  # paper Appendix D.2
    assert isinstance(env.unwrapped, cls) and isinstance(env.unwrapped, TaskDistribution)
    assert env.unwrapped.n_costs == 1 and env.unwrapped.default_cost_limit == 10.0  # Table 2
    assert env.observation_space.shape == (obs_size,) and env.action_space.shape == (2,)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    episodes, length, costs = 0, 0, []
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        length += 1
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and np.isfinite(reward)
        assert isinstance(info["cost"], float) and info["cost"] in (0.0, 1.0)  # one channel, indicator cost
        costs.append(info["cost"])
        assert not terminated
        if truncated:
            assert length == 500
            episodes, length = episodes + 1, 0
            env.reset()
    assert episodes == 2
    env.close()


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_seeded_reset_reproduces(env_id: str) -> None:
    actions = np.random.default_rng(1).uniform(-1, 1, size=(60, 2))
    first, second = gymnasium.make(env_id).unwrapped, gymnasium.make(env_id).unwrapped
    task = first.sample_tasks(1, seed=7)[0]
    first.set_task(task)
    second.set_task(task)
    for a, b in zip(_rollout(first, actions, seed=5), _rollout(second, actions, seed=5), strict=True):
        np.testing.assert_array_equal(a, b)
    # another seed: another start
    assert not np.array_equal(_rollout(first, actions[:1], seed=6)[0], _rollout(second, actions[:1], seed=5)[0])


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_check_env(env_id: str) -> None:
    check_env(gymnasium.make(env_id).unwrapped, skip_render_check=True)


def test_point_circle_task_parameters() -> None:
    env = PointCircleEnv()
    actions = np.random.default_rng(2).uniform(-1, 1, size=(150, 2))
    actions[:, 0] = np.abs(actions[:, 0])  # drive forward so that the agent crosses the walls
    base = {"radius": 1.0, "wall_distance": 0.6}
    env.set_task(base)
    _obs_a, rew_a, cost_a, pos_a = _rollout(env, actions, seed=3)
    assert env._sg_task.circle.radius == 1.0 and env._sg_task.sigwalls.locate_factor == 0.6
    # cost = 1 exactly when the agent is outside the strip |x| <= wall distance
    np.testing.assert_array_equal(cost_a, (np.abs(pos_a[:, 0]) > 0.6).astype(float))
    assert 0 < cost_a.sum() < len(cost_a)
    # radius: same trajectory and cost, different reward
    env.set_task({"radius": 1.5, "wall_distance": 0.6})
    _obs_b, rew_b, cost_b, pos_b = _rollout(env, actions, seed=3)
    np.testing.assert_array_equal(pos_a, pos_b)
    np.testing.assert_array_equal(cost_a, cost_b)
    assert not np.allclose(rew_a, rew_b)
    # the reward is Safety-Gymnasium's circle reward for the task's radius: (-u y + v x) / r / (1 + |r - R|) / 10
    velocity = np.diff(np.vstack([[np.nan, np.nan], pos_b]), axis=0)  # only its direction is compared below
    radius = np.linalg.norm(pos_b, axis=1)
    tangential = (-velocity[:, 0] * pos_b[:, 1] + velocity[:, 1] * pos_b[:, 0]) / radius
    scale_a, scale_b = 1 + np.abs(radius - 1.0), 1 + np.abs(radius - 1.5)
    informative = np.abs(rew_b) > 1e-4
    assert np.mean(np.sign(rew_b[informative]) == np.sign(tangential[informative])) > 0.9
    np.testing.assert_allclose((rew_a * scale_a)[informative], (rew_b * scale_b)[informative], rtol=1e-9)
    # wall distance changes the cost (and the start region), not the radius
    env.set_task({"radius": 1.0, "wall_distance": 0.75})
    _, _, cost_c, pos_c = _rollout(env, actions, seed=3)
    np.testing.assert_array_equal(cost_c, (np.abs(pos_c[:, 0]) > 0.75).astype(float))
    assert env._sg_task.circle.radius == 1.0


def test_car_circle_hazard_task_parameters() -> None:
    env = CarCircleHazardEnv()
    first, second = env.sample_tasks(2, seed=11)
    second["hazard_positions"] = (
        second["hazard_positions"][:3] if len(first["hazard_positions"]) > 3 else second["hazard_positions"]
    )
    for task in (first, second):
        env.set_task(task)
        env.reset(seed=0)
        np.testing.assert_allclose(env.object_positions("hazards"), task["hazard_positions"], atol=1e-8)
    assert len(first["hazard_positions"]) != len(second["hazard_positions"])
    # cost = outside |x| <= 1.125 or within a hazard (radius 0.2), checked along a random trajectory
    actions = np.random.default_rng(4).uniform(-1, 1, size=(300, 2))
    task = {"radius": 0.7, "hazard_positions": [[0.3, 0.3], [-0.3, 0.3], [0.3, -0.3], [-0.3, -0.3], [0.0, 0.75]]}
    env.set_task(task)
    _, rew_a, cost_a, pos_a = _rollout(env, actions, seed=1)
    hazards = np.array(task["hazard_positions"])
    in_hazard = np.min(np.linalg.norm(pos_a[:, None] - hazards[None], axis=-1), axis=1) <= 0.2
    expected = (np.abs(pos_a[:, 0]) > 1.125) | in_hazard
    # the car's position is read after the step; allow a boundary-touching step to differ
    assert np.mean(cost_a == expected) > 0.99
    # radius changes the reward of the same trajectory, not the trajectory or the cost
    env.set_task({**task, "radius": 1.0})
    _, rew_b, cost_b, pos_b = _rollout(env, actions, seed=1)
    np.testing.assert_array_equal(pos_a, pos_b)
    np.testing.assert_array_equal(cost_a, cost_b)
    assert not np.allclose(rew_a, rew_b)


def test_point_button_task_parameters() -> None:
    env = PointButtonEnv()
    tasks = env.sample_tasks(3, seed=5)
    for task in tasks:
        env.set_task(task)
        env.reset(seed=2)
        np.testing.assert_allclose(env.object_positions("buttons"), task["button_positions"], atol=1e-8)
        np.testing.assert_allclose(env.object_positions("hazards"), task["hazard_positions"], atol=1e-8)
        assert env._sg_task.buttons.goal_button == task["goal_button"]
        goal_xy = np.asarray(env._sg_task.goal.pos)[:2]
        np.testing.assert_allclose(goal_xy, task["button_positions"][task["goal_button"]], atol=1e-8)
    assert len({(len(t["button_positions"]), len(t["hazard_positions"])) for t in tasks}) > 1
    # cost from hazards and the region, along a random trajectory (button presses are counted too)
    task = tasks[0]
    env.set_task(task)
    actions = np.random.default_rng(3).uniform(-1, 1, size=(300, 2))
    actions[:, 0] = np.abs(actions[:, 0])
    _, _, costs, positions = _rollout(env, actions, seed=2)
    hazards = np.array(task["hazard_positions"])
    in_hazard = np.min(np.linalg.norm(positions[:, None] - hazards[None], axis=-1), axis=1) <= 0.18 + 0.02
    outside = np.any(np.abs(positions) > 1.5, axis=1)
    assert np.all(costs[in_hazard | outside] == 1.0)


def test_set_task_applies_at_next_reset() -> None:
    env = CarCircleHazardEnv()
    first, second = env.sample_tasks(2, seed=3)
    env.set_task(first)
    env.reset(seed=0)
    env.set_task(second)
    assert env.get_task() == second
    np.testing.assert_allclose(env.object_positions("hazards"), first["hazard_positions"], atol=1e-8)  # the episode goes on
    env.step(np.zeros(2))
    env.reset(seed=0)
    np.testing.assert_allclose(env.object_positions("hazards"), second["hazard_positions"], atol=1e-8)


@pytest.mark.parametrize("cls", [PointCircleEnv, CarCircleHazardEnv, PointButtonEnv])
def test_sample_tasks_reproducible(cls: type) -> None:
    env = cls()
    assert env.sample_tasks(4, seed=1) == env.sample_tasks(4, seed=1)
    assert env.sample_tasks(4, seed=1) != env.sample_tasks(4, seed=2)
    for task in env.sample_tasks(4, seed=1):
        env.set_task(task)  # every sampled task is valid


def test_point_circle_task_distribution() -> None:
    tasks = PointCircleEnv().sample_tasks(400, seed=0)
    radius = np.array([t["radius"] for t in tasks])
    wall = np.array([t["wall_distance"] for t in tasks])
    assert radius.min() >= 1.0 and radius.max() <= 1.5 and wall.min() >= 0.55 and wall.max() <= 0.75
    # U(a, b): mean (a + b) / 2, std (b - a) / sqrt(12); tolerances are about 5 standard errors
    assert abs(radius.mean() - 1.25) < 5 * 0.5 / np.sqrt(12 * 400)
    assert abs(wall.mean() - 0.65) < 5 * 0.2 / np.sqrt(12 * 400)
    assert abs(radius.std() - 0.5 / np.sqrt(12)) < 0.02
    assert abs(np.corrcoef(radius, wall)[0, 1]) < 0.2


def _check_positions(positions: np.ndarray, half_width: float) -> None:
    assert np.all(np.abs(positions) <= half_width)
    # uniform on the square (with keep-out): centred, and spread over it
    assert np.all(np.abs(positions.mean(axis=0)) < 0.1)
    assert np.all(positions.std(axis=0) > 0.6 * half_width / np.sqrt(3))


def test_car_circle_hazard_task_distribution() -> None:
    tasks = CarCircleHazardEnv().sample_tasks(300, seed=0)
    radius = np.array([t["radius"] for t in tasks])
    counts = np.array([len(t["hazard_positions"]) for t in tasks])
    assert radius.min() >= 0.7 and radius.max() <= 1.0 and abs(radius.mean() - 0.85) < 5 * 0.3 / np.sqrt(12 * 300)
    assert set(counts) == {3, 4, 5, 6, 7} and abs(counts.mean() - 5) < 5 * np.sqrt(2 / 300)
    positions = np.concatenate([t["hazard_positions"] for t in tasks])
    _check_positions(positions, CarCircleHazardEnv.hazard_half_width)
    for task in tasks[:50]:
        hazards = np.array(task["hazard_positions"])
        distances = np.linalg.norm(hazards[:, None] - hazards[None], axis=-1) + np.eye(len(hazards))
        assert distances.min() >= 2 * CarCircleHazardEnv.hazard_keepout
        assert np.linalg.norm(hazards, axis=1).min() >= CarCircleHazardEnv.hazard_keepout


def test_point_button_task_distribution() -> None:
    tasks = PointButtonEnv().sample_tasks(200, seed=0)
    n_buttons = np.array([len(t["button_positions"]) for t in tasks])
    n_hazards = np.array([len(t["hazard_positions"]) for t in tasks])
    goals = np.array([t["goal_button"] for t in tasks])
    for counts in (n_buttons, n_hazards):
        assert set(counts) == {6, 7, 8, 9, 10} and abs(counts.mean() - 8) < 5 * np.sqrt(2 / 200)
    assert np.all((goals >= 0) & (goals < n_buttons))
    assert abs(np.mean(goals / (n_buttons - 1)) - 0.5) < 0.1  # uniform over the buttons
    for key in ("button_positions", "hazard_positions"):
        _check_positions(np.concatenate([t[key] for t in tasks]), PointButtonEnv.object_half_width)


@pytest.mark.parametrize(
    "cls, task, match",
    [
        (PointCircleEnv, {"radius": 1.2, "wall_distance": 0.6, "speed": 1.0}, "speed"),
        (PointCircleEnv, {"radius": 2.0, "wall_distance": 0.6}, "radius"),
        (PointCircleEnv, {"radius": 1.2, "wall_distance": 0.5}, "wall_distance"),
        (PointCircleEnv, {"radius": 1.2}, "wall_distance"),
        (PointCircleEnv, {"radius": 1.2, "wall_distance": 0.6, "cost_limit": [1.0, 2.0]}, "cost_limit"),
        (CarCircleHazardEnv, {"radius": 0.8, "hazard_positions": [[0.5, 0.5], [-0.5, 0.5]]}, "hazard_positions"),
        (CarCircleHazardEnv, {"radius": 0.8, "hazard_positions": [[0.5, 0.5], [-0.5, 0.5], [0.9, 0.0]]}, "hazard_positions"),
        (CarCircleHazardEnv, {"radius": 0.8, "hazard_positions": [[0.5, 0.5], [0.6, 0.5], [-0.5, -0.5]]}, "hazard_positions"),
        (CarCircleHazardEnv, {"radius": 0.8, "hazard_positions": [[0.1, 0.0], [0.6, 0.5], [-0.5, -0.5]]}, "circle centre"),
        (CarCircleHazardEnv, {"radius": 0.8, "hazard_positions": [0.5, 0.5, 0.1]}, "hazard_positions"),
        (CarCircleHazardEnv, {"radius": 0.6, "hazard_positions": [[0.5, 0.5], [-0.5, 0.5], [0.5, -0.5]]}, "radius"),
    ],
)
def test_bad_task_raises_value_error_naming_it(cls: type, task: dict, match: str) -> None:
    env = cls()
    with pytest.raises(ValueError, match=match):
        env.set_task(task)


def test_bad_button_task_raises() -> None:
    env = PointButtonEnv()
    task = env.sample_tasks(1, seed=0)[0]
    with pytest.raises(ValueError, match="goal_button"):
        env.set_task({**task, "goal_button": len(task["button_positions"])})
    with pytest.raises(ValueError, match="goal_button"):
        env.set_task({**task, "goal_button": 1.5})
    with pytest.raises(ValueError, match="button_positions"):
        env.set_task({**task, "button_positions": task["button_positions"][:5]})
    with pytest.raises(ValueError, match="hazard_positions"):
        env.set_task({**task, "hazard_positions": [*task["hazard_positions"], task["hazard_positions"][0]]})
    env.set_task({**task, "cost_limit": 5.0})  # a per-task limit of the right length is accepted
    assert env.get_task()["cost_limit"] == 5.0


@pytest.mark.expensive
@pytest.mark.parametrize("env_id", sorted(IDS))
def test_many_tasks_reset_without_layout_failure(env_id: str) -> None:
    env = gymnasium.make(env_id).unwrapped
    for i, task in enumerate(env.sample_tasks(100, seed=123)):
        env.set_task(task)
        _, _info = env.reset(seed=i)
        for _ in range(5):
            assert np.isfinite(env.step(env.action_space.sample())[1])


def _simulated_task(env: PointCircleEnv | CarCircleHazardEnv | PointButtonEnv) -> dict:
    """:return: the task parameters as read back from the Safety-Gymnasium task and its MuJoCo model (after reset)"""
    sg_task = env._sg_task
    model, data = sg_task.model, sg_task.data
    if isinstance(env, PointCircleEnv | CarCircleHazardEnv):
        radius = float(model.geom("circle").size[0])  # the circle drawn in the scene, and the reward's radius
        assert radius == sg_task.circle.radius
    if isinstance(env, PointCircleEnv):
        return {"radius": radius, "wall_distance": float(data.geom("sigwall0").xpos[0])}
    hazards = env.object_positions("hazards").tolist()
    if isinstance(env, CarCircleHazardEnv):
        return {"radius": radius, "hazard_positions": hazards}
    return {
        "button_positions": env.object_positions("buttons").tolist(),
        "hazard_positions": hazards,
        "goal_button": sg_task.buttons.goal_button,
    }


def _assert_same_task(simulated: dict, task: dict) -> None:
    assert set(simulated) == set(task) - {"cost_limit"}
    for key, value in simulated.items():
        np.testing.assert_allclose(value, task[key], atol=1e-8, err_msg=key)


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_set_task_changes_exactly_the_declared_parameters(env_id: str) -> None:
    """Changing one task key changes that parameter of the simulation and leaves every other one as it was."""
    env = gymnasium.make(env_id).unwrapped
    base, *others = env.sample_tasks(12, seed=21)
    env.set_task(base)
    env.reset(seed=0)
    _assert_same_task(_simulated_task(env), base)
    for key in env.task_space:
        if key == "goal_button":  # an index into this task's buttons
            candidates = [(base[key] + 1) % len(base["button_positions"])]
        elif key.endswith("_positions"):  # one object fewer, or another task's objects
            candidates = [base[key][:-1]] + [other[key] for other in others]
        else:
            candidates = [other[key] for other in others]
        changed = 0
        for value in candidates:
            task = {**base, key: value}
            try:
                env.set_task(task)
            except ValueError:  # e.g. the other task's buttons overlap this task's hazards
                continue
            env.reset(seed=0)
            simulated = _simulated_task(env)
            _assert_same_task(simulated, task)
            assert np.shape(simulated[key]) != np.shape(base[key]) or not np.allclose(simulated[key], base[key])
            changed += 1
            break
        assert changed == 1, f"no valid task differing from the base task in {key!r} only"


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_bad_input_is_rejected_and_leaves_the_task_unchanged(env_id: str) -> None:
    env = gymnasium.make(env_id).unwrapped
    good = env.sample_tasks(1, seed=0)[0]
    env.set_task(good)
    half_width = max(abs(high) for _, high in env.task_space.values())
    outside = {  # one out-of-range value per key
        "radius": 2.0,
        "wall_distance": 0.9,
        "hazard_positions": [[half_width + 0.1, 0.0], *good.get("hazard_positions", [])[1:]],
        "button_positions": [[0.0, -half_width - 0.1], *good.get("button_positions", [])[1:]],
        "goal_button": -1,
    }
    bad_tasks = [
        ({**good, "velocity_goal": 1.0}, "velocity_goal"),  # unknown key
        ({k: v for k, v in good.items() if k != next(iter(env.task_space))}, "missing"),
        ({**good, "cost_limit": [1.0, 2.0]}, "cost_limit"),  # one cost channel
        ({**good, "cost_limit": "ten"}, "cost_limit"),
        *[({**good, key: outside[key]}, key) for key in env.task_space],
        *[({**good, key: np.full_like(np.asarray(good[key], dtype=float), np.nan).tolist()}, key) for key in env.task_space],
    ]
    for task, match in bad_tasks:
        with pytest.raises(ValueError, match=match):
            env.set_task(task)
        assert env.get_task() == good  # rejected tasks leave the current one in place
    with pytest.raises(TypeError, match="dict"):
        env.set_task([good])
    # a task rejected by the family's own checks (object count) leaves the next episode's layout unchanged too
    key = "hazard_positions" if "hazard_positions" in good else None
    if key is not None:
        with pytest.raises(ValueError, match=key):
            env.set_task({**good, key: good[key][:2]})
        assert env.get_task() == good
        env.reset(seed=0)
        _assert_same_task(_simulated_task(env), good)


# --------------------------------------------------------------------------------------------------------------
# SafeMetaPointNav-v0: the built-in pure-NumPy family (sb3_safemeta.envs.point_nav)


def test_point_nav_make_and_1000_random_steps() -> None:
    env = gymnasium.make("SafeMetaPointNav-v0")
    unwrapped = env.unwrapped
    assert isinstance(unwrapped, PointNavEnv) and isinstance(unwrapped, TaskDistribution)
    assert env.spec.max_episode_steps == 100 and unwrapped.n_costs == 1 and unwrapped.default_cost_limit == 10.0
    env.action_space.seed(0)
    env.reset(seed=0)
    episodes, length = 0, 0
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        length += 1
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        assert isinstance(info["cost"], float) and info["cost"] in (0.0, 1.0)
        assert not terminated
        if truncated:
            assert length == 100
            episodes, length = episodes + 1, 0
            env.reset()
    assert episodes == 10
    check_env(PointNavEnv(), skip_render_check=True)


def _point_nav_rollout(env: gymnasium.Env, actions: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:return: positions after each step, rewards and costs of one seeded open-loop rollout"""
    env.reset(seed=seed)
    steps = [env.step(action) for action in actions]
    return (
        np.array([s[0] for s in steps], dtype=float),
        np.array([s[1] for s in steps]),
        np.array([s[4]["cost"] for s in steps]),
    )


def test_point_nav_seeded_reset_and_task_semantics() -> None:
    env = gymnasium.make("SafeMetaPointNav-v0")
    actions = np.abs(np.random.default_rng(0).uniform(-1, 1, size=(100, 2)))  # away from the origin, towards +x +y
    task = {"goal_angle": np.pi / 4, "hazard_angle": np.pi / 4, "hazard_radius": 0.4}  # hazard on the path to the goal
    env.unwrapped.set_task(task)
    positions, rewards, costs = _point_nav_rollout(env, actions, seed=1)
    for a, b in zip((positions, rewards, costs), _point_nav_rollout(env, actions, seed=1), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_point_nav_rollout(env, actions, seed=2)[0], positions)
    # reward -||p - goal||, goal at radius 2; cost 1 inside the hazard disc, centre at radius 1
    direction = np.array([np.cos(np.pi / 4), np.sin(np.pi / 4)])
    np.testing.assert_allclose(rewards, -np.linalg.norm(positions - 2 * direction, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(costs, (np.linalg.norm(positions - direction, axis=1) < 0.4).astype(float))
    assert 0 < costs.sum() < len(costs)
    # the goal changes the reward only, the hazard the cost only
    env.unwrapped.set_task({**task, "goal_angle": 1.2})
    positions_g, rewards_g, costs_g = _point_nav_rollout(env, actions, seed=1)
    np.testing.assert_array_equal(positions_g, positions)
    np.testing.assert_array_equal(costs_g, costs)
    assert not np.allclose(rewards_g, rewards)
    env.unwrapped.set_task({**task, "hazard_radius": 0.2})
    positions_h, rewards_h, costs_h = _point_nav_rollout(env, actions, seed=1)
    np.testing.assert_array_equal(positions_h, positions)
    np.testing.assert_array_equal(rewards_h, rewards)
    assert costs_h.sum() < costs.sum()


def test_point_nav_task_takes_effect_at_the_next_reset() -> None:
    env = PointNavEnv()
    first, second = env.sample_tasks(2, seed=3)
    env.set_task(first)
    env.reset(seed=0)
    reward_first = env.step(np.zeros(2))[1]
    env.set_task(second)
    assert env.get_task() == second
    assert env.step(np.zeros(2))[1] == reward_first  # the episode under way keeps its task (the point did not move)
    env.reset(seed=0)
    assert env.step(np.zeros(2))[1] != reward_first


def test_point_nav_task_distribution_and_bad_tasks() -> None:
    env = PointNavEnv()
    tasks = env.sample_tasks(2000, seed=123)
    assert tasks == env.sample_tasks(2000, seed=123) and tasks[:5] != env.sample_tasks(5, seed=124)
    for key, (low, high) in env.task_space.items():
        values = np.array([task[key] for task in tasks])
        assert np.all(values >= low) and np.all(values <= high)
        std = (high - low) / np.sqrt(12)  # U(low, high)
        assert abs(values.mean() - (low + high) / 2) < 4 * std / np.sqrt(len(values))
        assert values.std() == pytest.approx(std, rel=0.1)
    good = tasks[0]
    env.set_task(good)
    for task, match in [
        ({**good, "goal": 1.0}, "goal"),
        ({**good, "hazard_radius": 0.5}, "hazard_radius"),
        ({**good, "goal_angle": -0.1}, "goal_angle"),
        ({k: v for k, v in good.items() if k != "hazard_angle"}, "missing"),
        ({**good, "cost_limit": [1.0, 2.0]}, "cost_limit"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.set_task(task)
        assert env.get_task() == good
