"""
Rollout sizes in episodes: the ``min_episodes`` of ``SafeMetaDual(test_adaptation=...)`` (each meta-test A^s step
on at least that many complete episodes; see :mod:`sb3_safemeta.safe_meta_dual.meta_test_settings`).
"""

from __future__ import annotations

import math

from stable_baselines3.common.vec_env import VecEnv

__all__ = ["steps_for_episodes"]


def steps_for_episodes(env: VecEnv, min_episodes: int, n_steps: int) -> int:
    """
    :param env: the meta-test environments (``num_envs`` episodes run side by side)
    :param min_episodes: complete episodes wanted per A^s step
    :param n_steps: steps per environment otherwise
    :return: ``n_steps``, raised to a whole number of episodes per environment so that the rollout holds at least
        ``min_episodes`` complete episodes (each A^s step starts new episodes)
    :raises ValueError: if the environment has no registered horizon (``max_episode_steps``)
    """
    spec = env.get_attr("spec", indices=[0])[0]
    horizon = getattr(spec, "max_episode_steps", None)
    if not horizon:
        raise ValueError(
            "test_adaptation['min_episodes'] needs environments with a fixed horizon (max_episode_steps in "
            "gymnasium.register or gymnasium.make); set test_adaptation['n_steps'] instead"
        )
    return max(n_steps, math.ceil(min_episodes / env.num_envs) * int(horizon))
