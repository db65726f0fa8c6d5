"""
The A^s settings of meta-test (``SafeMetaDual(test_adaptation=...)``): meta-test may adapt with other SafeAdapter
arguments than the inner step of meta-training. Why: on the rare-cost navigation families the step that meta-trains
well (lambda_c = lambda, the rollout size of meta-training) carries cost-0 policies into the hazard at meta-test,
while a step bound by its KL term (lambda_c = 1000: a KL radius (d - Jc) / lambda_c <= 0.01) on at least 6 episodes
kept 91% of the explored policies within d (docs/modules/safe_meta_dual.md, "Rare costs in meta-training").
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from stable_baselines3.common.vec_env import VecEnv

__all__ = ["check_test_adaptation", "steps_for_episodes"]

# the meta-policy's own architecture and identity are not meta-test settings
_NOT_SETTINGS = frozenset({"self", "policy", "env", "policy_kwargs", "_init_setup_model", "device", "seed"})


def _settings() -> set[str]:
    from sb3_safemeta.safe_adapter import SafeAdapter  # here: safe_adapter imports this package

    return set(inspect.signature(SafeAdapter.__init__).parameters) - _NOT_SETTINGS | {"min_episodes"}


def check_test_adaptation(test_adaptation: dict[str, Any] | None) -> dict[str, Any]:
    """
    :param test_adaptation: SafeAdapter arguments of meta-test (e.g. ``{"lambda_c": 1000.0}``), plus
        ``"min_episodes"``: at least that many complete episodes per A^s step at meta-test
    :return: a copy (empty for None)
    :raises TypeError: if it is not a dict
    :raises ValueError: for an unknown key or a ``min_episodes`` below 1
    """
    if test_adaptation is None:
        return {}
    if not isinstance(test_adaptation, dict):
        raise TypeError(f"test_adaptation must be a dict of SafeAdapter arguments or None, got {test_adaptation!r}")
    unknown = sorted(set(test_adaptation) - _settings())
    if unknown:
        raise ValueError(
            f"test_adaptation has unknown key(s) {unknown}; expected SafeAdapter arguments "
            f"(e.g. lambda_c, n_steps, cost_confidence) or min_episodes"
        )
    min_episodes = test_adaptation.get("min_episodes")
    if min_episodes is not None and (isinstance(min_episodes, bool) or not isinstance(min_episodes, int) or min_episodes < 1):
        raise ValueError(f"test_adaptation['min_episodes'] must be an integer >= 1, got {min_episodes!r}")
    return dict(test_adaptation)


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
