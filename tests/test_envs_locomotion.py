"""
MuJoCo locomotion task families (sb3_safemeta.envs.locomotion): protocol, seeding, task semantics and bad input.

The oracle for dynamics, velocities and control costs is the raw Gymnasium v5 environment run side by side
with the same seed and actions (its own ``info`` reports velocities and ``reward_ctrl``).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sb3_safemeta.envs  # noqa: F401  (registers the ids)
from sb3_safemeta.envs.locomotion import HalfCheetahVelEnv, HopperVelEnv, HumanoidDirEnv, SwimmerNoiseEnv

pytest.importorskip("mujoco")

ENV_CLASSES = {
    "SafeMetaHalfCheetahVel-v0": HalfCheetahVelEnv,
    "SafeMetaHumanoidDir-v0": HumanoidDirEnv,
    "SafeMetaHopperVel-v0": HopperVelEnv,
    "SafeMetaSwimmerNoise-v0": SwimmerNoiseEnv,
}
IDS = list(ENV_CLASSES)
# Table 2 of the paper: the limit d per scenario
PAPER_LIMITS = {
    "SafeMetaHalfCheetahVel-v0": 10.0,
    "SafeMetaHumanoidDir-v0": 20.0,
    "SafeMetaHopperVel-v0": 5.0,
    "SafeMetaSwimmerNoise-v0": 5.0,
}


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **kwargs)


def noiseless(task: dict) -> dict:
    """The same task with the swimmer's transition noise switched off (other families: unchanged)."""
    return {**task, "noise_var": 0.0} if "noise_var" in task else task


def rollout(env: gym.Env, actions: np.ndarray, seed: int, raw: bool = False) -> dict[str, np.ndarray]:
    """Run a fixed action sequence from reset(seed) until the end or the first termination (raw: a v5 env, no cost)."""
    obs, _ = env.reset(seed=seed)
    out: dict[str, list] = {"obs": [obs], "reward": [], "cost": [], "info": []}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out["obs"].append(obs)
        out["reward"].append(reward)
        out["cost"].append(np.nan if raw else info["cost"])
        out["info"].append(info)
        if terminated or truncated:
            break
    return {key: np.array(value) if key != "info" else value for key, value in out.items()}


def random_actions(env: gym.Env, n: int, seed: int = 0) -> np.ndarray:
    space = env.action_space
    return np.random.default_rng(seed).uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)


@pytest.mark.parametrize("env_id", IDS)
def test_random_steps_report_a_finite_cost(env_id):
    env = make(env_id)
    unwrapped = env.unwrapped
    assert unwrapped.n_costs == 1
    assert unwrapped.default_cost_limit == PAPER_LIMITS[env_id]
    assert env.spec.max_episode_steps == 200
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    n_episodes, length = 0, 0
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        length += 1
        cost = np.atleast_1d(np.asarray(info["cost"], dtype=float))
        assert cost.shape == (unwrapped.n_costs,)
        assert np.all(np.isfinite(cost)) and np.all(cost >= 0)
        assert np.isfinite(reward)
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            assert length <= 200
            n_episodes, length = n_episodes + 1, 0
            obs, _ = env.reset()
    assert n_episodes >= 4  # the 200-step horizon (or a fall) ended episodes
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_reset_reproduces_episodes(env_id):
    env = make(env_id)
    actions = random_actions(env, 60)
    first, second = rollout(env, actions, seed=7), rollout(env, actions, seed=7)
    other = rollout(env, actions, seed=8)
    np.testing.assert_array_equal(first["obs"], second["obs"])
    np.testing.assert_array_equal(first["reward"], second["reward"])
    np.testing.assert_array_equal(first["cost"], second["cost"])
    assert not np.array_equal(first["obs"][0], other["obs"][0])
    # a second instance with the same seed gives the same episode too (no hidden global state)
    fresh = rollout(make(env_id), actions, seed=7)
    np.testing.assert_array_equal(first["obs"], fresh["obs"])


@pytest.mark.parametrize("env_id", IDS)
def test_dynamics_and_observations_are_the_raw_v5_ones(env_id):
    env = make(env_id)
    unwrapped = env.unwrapped
    unwrapped.set_task(noiseless(unwrapped.get_task()))
    raw = gym.make(unwrapped.base_env_id)
    actions = random_actions(env, 80, seed=1)
    ours, theirs = rollout(env, actions, seed=3), rollout(raw, actions, seed=3, raw=True)
    assert len(ours["obs"]) == len(theirs["obs"])
    np.testing.assert_array_equal(ours["obs"], theirs["obs"])


def test_half_cheetah_reward_and_cost_against_raw_env():
    env = make("SafeMetaHalfCheetahVel-v0")
    raw = gym.make("HalfCheetah-v5")
    env.unwrapped.set_task({"goal_velocity": 1.3})
    actions = random_actions(env, 200, seed=2)
    ours, theirs = rollout(env, actions, seed=0), rollout(raw, actions, seed=0, raw=True)
    raw_velocity = np.array([info["x_velocity"] for info in theirs["info"]])
    clipped = np.clip(actions.astype(np.float64), -1, 1)
    # the paper's reward by default (Appendix D.1): -|v - v*|, no control penalty
    np.testing.assert_allclose(ours["reward"], -np.abs(raw_velocity - 1.3), rtol=1e-10, atol=1e-10)
    # garage's / PEARL's reward with ctrl_cost_weight=0.05
    garage = make("SafeMetaHalfCheetahVel-v0", ctrl_cost_weight=0.05)
    garage.unwrapped.set_task({"goal_velocity": 1.3})
    expected = -np.abs(raw_velocity - 1.3) - 0.05 * np.sum(clipped**2, axis=1)
    np.testing.assert_allclose(rollout(garage, actions, seed=0)["reward"], expected, rtol=1e-10, atol=1e-10)
    # the cost is the indicator of the head geom above h0
    head = raw.unwrapped.model.geom("head").id
    raw.reset(seed=0)
    heights = []
    for action in actions:
        raw.step(action)
        heights.append(raw.unwrapped.data.geom_xpos[head, 2])
    h0 = env.unwrapped.head_height_limit
    np.testing.assert_array_equal(ours["cost"], (np.array(heights) > h0).astype(float))
    assert 0 < ours["cost"].sum() < 200  # the random episode crosses h0 sometimes, not always


@pytest.mark.parametrize("h0, expected", [(-10.0, 1.0), (10.0, 0.0)])
def test_half_cheetah_cost_follows_head_height_limit(h0, expected):
    env = make("SafeMetaHalfCheetahVel-v0", head_height_limit=h0)
    costs = rollout(env, random_actions(env, 50), seed=0)["cost"]
    assert np.all(costs == expected)


def test_half_cheetah_h0_makes_the_limit_active_but_satisfiable():
    """Standing still satisfies d; random actions pay a positive cost (the constraint is not vacuous)."""
    env = make("SafeMetaHalfCheetahVel-v0")
    limit = env.unwrapped.default_cost_limit
    zero = np.zeros((200, 6), dtype=np.float32)
    still = [rollout(env, zero, seed=seed)["cost"].sum() for seed in range(3)]
    shaking = [rollout(env, random_actions(env, 200, seed=seed), seed=seed)["cost"].sum() for seed in range(5)]
    assert max(still) <= limit
    assert np.mean(shaking) > max(still)


@pytest.mark.parametrize("env_id, weight", [("SafeMetaHumanoidDir-v0", 0.1), ("SafeMetaHopperVel-v0", 1e-3)])
def test_control_cost_is_the_sum_of_squared_torques(env_id, weight):
    env = make(env_id)
    raw = gym.make(env.unwrapped.base_env_id)
    actions = random_actions(env, 100, seed=4)
    ours, theirs = rollout(env, actions, seed=1), rollout(raw, actions, seed=1, raw=True)
    raw_ctrl = np.array([-info["reward_ctrl"] / weight for info in theirs["info"]])  # v5: weight * sum a^2
    np.testing.assert_allclose(ours["cost"], raw_ctrl, rtol=1e-5)
    # out-of-range actions are clipped: the cost is that of the torque actually applied
    env.reset(seed=0)
    high = env.action_space.high
    _, _, _, _, info = env.step(10 * high)
    np.testing.assert_allclose(info["cost"], np.sum(high.astype(float) ** 2))


def test_hopper_reward_tracks_goal_velocity_plus_healthy_reward():
    env = make("SafeMetaHopperVel-v0")
    raw = gym.make("Hopper-v5")
    actions = random_actions(env, 100, seed=5)
    env.unwrapped.set_task({"goal_velocity": 0.4})
    ours, theirs = rollout(env, actions, seed=2), rollout(raw, actions, seed=2, raw=True)
    velocity = np.array([info["x_velocity"] for info in theirs["info"]])
    healthy = np.array([info["reward_survive"] for info in theirs["info"]])  # v5: 1.0 while healthy
    np.testing.assert_allclose(ours["reward"], -np.abs(velocity - 0.4) + healthy, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("direction", [0.0, np.pi / 4, np.pi / 2])
def test_humanoid_reward_is_the_velocity_along_the_direction(direction):
    env = make("SafeMetaHumanoidDir-v0")
    raw = gym.make("Humanoid-v5")
    env.unwrapped.set_task({"direction": direction})
    actions = random_actions(env, 40, seed=6)
    ours, theirs = rollout(env, actions, seed=3), rollout(raw, actions, seed=3, raw=True)
    vx = np.array([info["x_velocity"] for info in theirs["info"]])
    vy = np.array([info["y_velocity"] for info in theirs["info"]])
    healthy = np.array([info["reward_survive"] for info in theirs["info"]])  # v5: 5.0 while healthy
    expected = vx * np.cos(direction) + vy * np.sin(direction) + healthy
    np.testing.assert_allclose(ours["reward"], expected, rtol=1e-9, atol=1e-9)


def _task_pair(env_id: str, key: str) -> tuple[dict, dict]:
    env = make(env_id).unwrapped
    base = noiseless(env.sample_tasks(1, seed=0)[0])
    low, high = env.task_space[key]
    return {**base, key: low + 0.1 * (high - low)}, {**base, key: low + 0.9 * (high - low)}


@pytest.mark.parametrize(
    "env_id, key",
    [
        ("SafeMetaHalfCheetahVel-v0", "goal_velocity"),
        ("SafeMetaHumanoidDir-v0", "direction"),
        ("SafeMetaHopperVel-v0", "goal_velocity"),
        ("SafeMetaSwimmerNoise-v0", "goal_velocity"),
    ],
)
def test_reward_parameters_change_the_reward_only(env_id, key):
    env = make(env_id)
    actions = random_actions(env, 60, seed=8)
    task_a, task_b = _task_pair(env_id, key)
    env.unwrapped.set_task(task_a)
    a = rollout(env, actions, seed=4)
    env.unwrapped.set_task(task_b)
    b = rollout(env, actions, seed=4)
    np.testing.assert_array_equal(a["obs"], b["obs"])  # same dynamics
    np.testing.assert_array_equal(a["cost"], b["cost"])  # same cost
    assert not np.allclose(a["reward"], b["reward"])
    if key == "goal_velocity":  # |(-|v - g1|) - (-|v - g2|)| <= |g1 - g2| at every step
        assert np.all(np.abs(a["reward"] - b["reward"]) <= abs(task_a[key] - task_b[key]) + 1e-12)


def test_swimmer_cost_weight_scales_the_cost_only():
    env = make("SafeMetaSwimmerNoise-v0")
    actions = random_actions(env, 60, seed=9)
    task_a, task_b = _task_pair("SafeMetaSwimmerNoise-v0", "cost_weight")
    env.unwrapped.set_task(task_a)
    a = rollout(env, actions, seed=5)
    env.unwrapped.set_task(task_b)
    b = rollout(env, actions, seed=5)
    np.testing.assert_array_equal(a["obs"], b["obs"])
    np.testing.assert_array_equal(a["reward"], b["reward"])
    np.testing.assert_allclose(b["cost"] * task_a["cost_weight"], a["cost"] * task_b["cost_weight"], rtol=1e-12)
    np.testing.assert_allclose(a["cost"], task_a["cost_weight"] * np.sum(actions**2, axis=1), rtol=1e-6)


def test_swimmer_noise_changes_trajectories_and_has_the_declared_variance():
    env = make("SafeMetaSwimmerNoise-v0")
    actions = random_actions(env, 100, seed=10)
    quiet, noisy = _task_pair("SafeMetaSwimmerNoise-v0", "noise_var")
    env.unwrapped.set_task({**quiet, "noise_var": 0.0})
    a = rollout(env, actions, seed=6)
    env.unwrapped.set_task(noisy)
    b = rollout(env, actions, seed=6)
    np.testing.assert_array_equal(a["obs"][0], b["obs"][0])  # same reset state
    assert not np.allclose(a["obs"][1:], b["obs"][1:])
    np.testing.assert_array_equal(a["cost"], b["cost"])  # the cost depends on the action only

    # From the same state and action, noisy minus noiseless next qvel ~ N(0, noise_var I).
    var = 0.3
    noisy_env, clean_env = SwimmerNoiseEnv(), SwimmerNoiseEnv()
    noisy_env.set_task({**noisy, "noise_var": var})
    clean_env.set_task({**noisy, "noise_var": 0.0})
    noisy_env.reset(seed=0)
    clean_env.reset(seed=0)
    differences = []
    for action in random_actions(noisy_env, 1000, seed=11):
        data = noisy_env.base_env.data
        clean_env.base_env.set_state(data.qpos.copy(), data.qvel.copy())
        noisy_env.step(action)
        clean_env.step(action)
        differences.append(noisy_env.base_env.data.qvel - clean_env.base_env.data.qvel)
    differences = np.array(differences)
    assert abs(differences.mean()) < 4 * np.sqrt(var / differences.size)
    assert differences.var() == pytest.approx(var, rel=0.1)  # variance, not standard deviation


@pytest.mark.parametrize("env_id", IDS)
def test_new_task_takes_effect_at_the_next_reset(env_id):
    env = make(env_id)
    unwrapped = env.unwrapped
    key = next(iter(unwrapped.task_space))
    task_a, task_b = _task_pair(env_id, key)
    actions = random_actions(env, 40, seed=12)
    unwrapped.set_task(task_a)
    reference = rollout(env, actions, seed=1)
    # switch to task_b in the middle of an episode of task_a: the episode continues under task_a
    env.reset(seed=1)
    rewards = []
    for t, action in enumerate(actions[: len(reference["reward"])]):
        if t == 5:
            unwrapped.set_task(task_b)
            assert unwrapped.get_task() == task_b
        rewards.append(env.step(action)[1])
    np.testing.assert_array_equal(rewards, reference["reward"][: len(rewards)])
    after = rollout(env, actions, seed=1)  # next episode: task_b
    unwrapped.set_task(task_b)
    expected = rollout(env, actions, seed=1)
    np.testing.assert_array_equal(after["reward"], expected["reward"])
    assert not np.array_equal(after["reward"], reference["reward"][: len(after["reward"])])


@pytest.mark.parametrize("env_id", IDS)
def test_sample_tasks_reproducible_and_uniform(env_id):
    env = make(env_id).unwrapped
    tasks = env.sample_tasks(2000, seed=123)
    assert tasks == env.sample_tasks(2000, seed=123)
    assert tasks[:5] != env.sample_tasks(5, seed=124)
    for key, (low, high) in env.task_space.items():
        values = np.array([task[key] for task in tasks])
        assert set(tasks[0]) == set(env.task_space)
        assert np.all(values >= low) and np.all(values <= high)
        std = (high - low) / np.sqrt(12)
        assert abs(values.mean() - (low + high) / 2) < 4 * std / np.sqrt(len(values))
        assert values.std() == pytest.approx(std, rel=0.1)
        env.set_task(tasks[0])  # every sampled task is accepted
    assert env.get_task() == tasks[0]


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_bad_tasks_are_rejected_with_the_offending_key(env_id):
    env = make(env_id).unwrapped
    good = env.sample_tasks(1, seed=0)[0]
    key = next(iter(env.task_space))
    low, high = env.task_space[key]
    with pytest.raises(ValueError, match="velocity_goal"):
        env.set_task({**good, "velocity_goal": 1.0})
    with pytest.raises(ValueError, match=key):
        env.set_task({**good, key: high + 0.01})
    with pytest.raises(ValueError, match=key):
        env.set_task({**good, key: low - 0.01})
    with pytest.raises(ValueError, match=key):
        env.set_task({**good, key: float("nan")})
    with pytest.raises(ValueError, match="missing"):
        env.set_task({k: v for k, v in good.items() if k != key})
    with pytest.raises(ValueError, match="cost_limit"):
        env.set_task({**good, "cost_limit": [1.0, 2.0]})
    assert env.get_task() == good  # rejected tasks leave the current one unchanged
    env.set_task({**good, "cost_limit": [3.0]})
    assert env.get_task()["cost_limit"] == [3.0]


@pytest.mark.parametrize("env_id", ["SafeMetaHopperVel-v0", "SafeMetaSwimmerNoise-v0"])
def test_reward_weights_of_the_base_env_are_rejected(env_id):
    with pytest.raises(ValueError, match="forward_reward_weight"):
        make(env_id, forward_reward_weight=2.0)
