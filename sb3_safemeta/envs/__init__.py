"""
Task families with cost channels, registered as Gymnasium ids on import.

Each id is a task environment (see :mod:`sb3_safemeta.common.tasks`): cost in ``info["cost"]``,
``sample_tasks(n, seed)`` / ``set_task(task)`` / ``get_task()``. Entry points are strings, so
registering imports neither MuJoCo nor Safety-Gymnasium; they load when an id is made.
Horizons are the paper's (Appendix D.2) and can be changed with ``gymnasium.make(id, max_episode_steps=...)``.
"""

from gymnasium.envs.registration import register, registry

# id, entry point, horizon (paper Appendix D.2: 200 locomotion, 500 navigation)
SCENARIOS: dict[str, tuple[str, int]] = {
    # built-in, pure NumPy: demos, tests and the main job
    "SafeMetaPointNav-v0": ("sb3_safemeta.envs.point_nav:PointNavEnv", 100),
    # MuJoCo locomotion (Gymnasium v5 models)
    "SafeMetaHalfCheetahVel-v0": ("sb3_safemeta.envs.locomotion:HalfCheetahVelEnv", 200),
    "SafeMetaHumanoidDir-v0": ("sb3_safemeta.envs.locomotion:HumanoidDirEnv", 200),
    "SafeMetaHopperVel-v0": ("sb3_safemeta.envs.locomotion:HopperVelEnv", 200),
    "SafeMetaSwimmerNoise-v0": ("sb3_safemeta.envs.locomotion:SwimmerNoiseEnv", 200),
    # Safety-Gymnasium navigation
    "SafeMetaPointCircle-v0": ("sb3_safemeta.envs.navigation:PointCircleEnv", 500),
    "SafeMetaCarCircleHazard-v0": ("sb3_safemeta.envs.navigation:CarCircleHazardEnv", 500),
    "SafeMetaPointButton-v0": ("sb3_safemeta.envs.navigation:PointButtonEnv", 500),
}

for _env_id, (_entry_point, _horizon) in SCENARIOS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, max_episode_steps=_horizon)

__all__ = ["SCENARIOS"]
