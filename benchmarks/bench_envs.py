"""
Benchmark of the scenario environments: random-policy episode reward and cost, and the throughput of each
environment against the raw environment it is built on, both in an SB3 ``DummyVecEnv`` of 8.

Usage::

    python benchmarks/bench_envs.py                       # every id of sb3_safemeta.envs.SCENARIOS
    python benchmarks/bench_envs.py --ids SafeMetaHopperVel-v0 SafeMetaSwimmerNoise-v0 --steps 1000

The raw environment of a scenario is found on its unwrapped instance: a Gymnasium id in ``base_env_id``
(made with the same time limit), or a zero-argument callable ``make_base_env()`` returning an environment.
For the navigation scenarios, which declare neither, the nearest upstream Safety-Gymnasium environment
(``NAVIGATION_REFERENCES``: same agent and task type, upstream object layout) is built with
``sb3_safemeta.envs.safety_gym_compat.make_builder`` and its 6-tuple step adapted to Gymnasium's 5-tuple;
it is a reference for the cost of the simulator, not the same environment. Scenarios that cannot be made
(e.g. a module that does not exist yet, a missing simulator) are reported with their error and skipped;
the raw column is ``n/a`` when no raw environment is known.

Throughput: the same pre-drawn random actions are fed to both vectorised environments for ``--steps`` vector
steps (8 environment steps each, resets included); raw and ours are timed alternately ``--repeats`` times
and the best round of each is kept (the least disturbed by other processes). Overhead = raw steps/s divided
by our steps/s, minus 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import traceback
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safemeta.envs import SCENARIOS

N_ENVS = 8

# Nearest upstream Safety-Gymnasium environment of each navigation scenario (reference for the raw column).
NAVIGATION_REFERENCES = {
    "SafeMetaPointCircle-v0": "SafetyPointCircle1-v0",
    "SafeMetaCarCircleHazard-v0": "SafetyCarCircle1-v0",
    "SafeMetaPointButton-v0": "SafetyPointButton1-v0",
}


class SafetyGymnasiumReference(gym.Env):
    """
    An upstream Safety-Gymnasium environment with Gymnasium's 5-tuple step (cost in ``info["cost"]``).

    :param safety_gym_id: a Safety-Gymnasium id, e.g. ``"SafetyPointCircle1-v0"``
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, safety_gym_id: str) -> None:
        from sb3_safemeta.envs.safety_gym_compat import make_builder

        self._env = make_builder(safety_gym_id)
        space = self._env.observation_space
        self.observation_space = gym.spaces.Box(space.low, space.high, shape=space.shape, dtype=space.dtype)
        self.action_space = self._env.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        from sb3_safemeta.envs.safety_gym_compat import headless_assets

        super().reset(seed=seed)
        with headless_assets():  # as our navigation envs: no skybox decoding at each model rebuild
            return self._env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, cost, terminated, truncated, info = self._env.step(action)
        info["cost"] = float(cost)
        return obs, float(reward), terminated, truncated, info


def random_policy_returns(env_id: str, n_episodes: int, seed: int) -> dict[str, float]:
    """
    :param env_id: scenario id
    :param n_episodes: number of episodes
    :param seed: seed of the first episode (episode k uses seed + k) and of the action sampler
    :return: mean and std of the episode reward and cost, and the mean episode length
    """
    env = gym.make(env_id)
    env.action_space.seed(seed)
    rewards, costs, lengths = [], [], []
    for episode in range(n_episodes):
        env.reset(seed=seed + episode)
        total_reward = total_cost = 0.0
        length = 0
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            total_reward += float(reward)
            total_cost += float(np.sum(info["cost"]))
            length += 1
            done = terminated or truncated
        rewards.append(total_reward)
        costs.append(total_cost)
        lengths.append(length)
    env.close()
    return {
        "reward_mean": float(np.mean(rewards)),
        "reward_std": float(np.std(rewards)),
        "cost_mean": float(np.mean(costs)),
        "cost_std": float(np.std(costs)),
        "length_mean": float(np.mean(lengths)),
    }


def raw_env_factory(env_id: str) -> tuple[Callable[[], gym.Env] | None, str]:
    """
    :param env_id: scenario id
    :return: a factory of the raw environment (or None) and its name
    """
    env = gym.make(env_id)
    unwrapped = env.unwrapped
    horizon = SCENARIOS[env_id][1] if env_id in SCENARIOS else None
    env.close()
    base_id = getattr(unwrapped, "base_env_id", None)
    if isinstance(base_id, str):
        return (lambda: gym.make(base_id, max_episode_steps=horizon)), base_id
    make_base = getattr(unwrapped, "make_base_env", None)
    if callable(make_base):
        return make_base, f"{type(unwrapped).__name__}.make_base_env()"
    if env_id in NAVIGATION_REFERENCES:
        reference = NAVIGATION_REFERENCES[env_id]
        return (lambda: gym.wrappers.TimeLimit(SafetyGymnasiumReference(reference), horizon)), f"{reference} (upstream)"
    return None, "n/a"


def time_vec_env(vec_env: DummyVecEnv, actions: np.ndarray) -> float:
    """
    :param vec_env: vectorised environment (already reset)
    :param actions: array of shape (n_steps, n_envs, *action_shape)
    :return: environment steps per second
    """
    start = time.perf_counter()
    for action in actions:
        vec_env.step(action)
    return actions.shape[0] * actions.shape[1] / (time.perf_counter() - start)


def throughput(
    env_id: str, raw_factory: Callable[[], gym.Env] | None, n_steps: int, repeats: int, seed: int
) -> dict[str, Any]:
    """
    :param env_id: scenario id
    :param raw_factory: factory of the raw environment, or None
    :param n_steps: vector steps per timing round
    :param repeats: timing rounds (best kept)
    :param seed: seed of the actions and of the environments
    :return: steps/s of ours and of the raw environment (None when there is none)
    """
    ours = DummyVecEnv([lambda: gym.make(env_id)] * N_ENVS)
    raw = DummyVecEnv([raw_factory] * N_ENVS) if raw_factory is not None else None
    space = ours.action_space
    rng = np.random.default_rng(seed)
    actions = rng.uniform(space.low, space.high, size=(n_steps, N_ENVS, *space.shape)).astype(space.dtype)
    best_ours, best_raw = 0.0, 0.0
    for round_ in range(repeats):
        for vec_env in (raw, ours):
            if vec_env is None:
                continue
            vec_env.seed(seed + round_)
            vec_env.reset()
            sps = time_vec_env(vec_env, actions)
            if vec_env is ours:
                best_ours = max(best_ours, sps)
            else:
                best_raw = max(best_raw, sps)
    ours.close()
    if raw is not None:
        raw.close()
    return {"ours_sps": best_ours, "raw_sps": best_raw if raw is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", nargs="+", default=list(SCENARIOS), help="scenario ids (default: all of SCENARIOS)")
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per timing round (x8 environment steps)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds per environment (best kept)")
    parser.add_argument("--episodes", type=int, default=10, help="random-policy episodes per scenario")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"# {datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    )
    versions = f"gymnasium {gym.__version__}, numpy {np.__version__}"
    print(f"# {versions}; DummyVecEnv of {N_ENVS}, {args.steps} vector steps x best of {args.repeats}")
    rows, failures = [], []
    for env_id in args.ids:
        try:
            returns = random_policy_returns(env_id, args.episodes, args.seed)
            raw_factory, raw_name = raw_env_factory(env_id)
            speed = throughput(env_id, raw_factory, args.steps, args.repeats, args.seed)
        except Exception as error:  # report and continue: some scenarios need optional simulators
            failures.append((env_id, f"{type(error).__name__}: {error}"))
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
            continue
        rows.append((env_id, raw_name, returns, speed))
        print(f"# done {env_id}", flush=True)

    print()
    header = [
        "id",
        "raw env",
        "random reward / ep.",
        "random cost / ep.",
        "ep. length",
        "raw steps/s",
        "ours steps/s",
        "overhead",
    ]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for env_id, raw_name, ret, speed in rows:
        raw_sps = speed["raw_sps"]
        raw_text = f"{raw_sps:,.0f}" if raw_sps else "n/a"
        overhead = f"{raw_sps / speed['ours_sps'] - 1:+.1%}" if raw_sps else "n/a"
        print(
            f"| {env_id} | {raw_name} | {ret['reward_mean']:.1f} ± {ret['reward_std']:.1f} | {ret['cost_mean']:.1f} ± "
            f"{ret['cost_std']:.1f} | {ret['length_mean']:.1f} | {raw_text} | {speed['ours_sps']:,.0f} | {overhead} |"
        )
    for env_id, message in failures:
        print(f"| {env_id} | could not be made: {message} |")


if __name__ == "__main__":
    main()
