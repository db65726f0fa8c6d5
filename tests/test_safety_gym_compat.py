"""
Tests of sb3_safemeta.envs.safety_gym_compat: each patch is needed on this stack (the failure it fixes
is reproduced in a fresh interpreter with every other patch applied), works, and is idempotent.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium
import numpy as np
import pytest

from sb3_safemeta.envs import safety_gym_compat as compat

APPLIED = list(compat.apply())
_PRE_IMPORT = ("_patch_wrapper_modules", "_patch_robotics_stub", "_patch_hashable_colors")


def _run_without(patch: str, code: str) -> subprocess.CompletedProcess:
    """
    Run ``code`` in a fresh interpreter after the import-time patches except ``patch``.

    The compat module is loaded from its file, so that the subprocess does not import the
    ``sb3_safemeta`` package (and torch) first: about 0.5 s instead of 3 s.
    """
    calls = "\n".join(f"compat.{name}()" for name in _PRE_IMPORT if name != patch)
    script = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('safety_gym_compat', {compat.__file__!r})\n"
        "compat = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(compat)\n"
        f"{calls}\n{textwrap.dedent(code)}"
    )
    return subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "patch, name, error",
    [
        ("_patch_wrapper_modules", "gymnasium_wrapper_aliases", "No module named 'gymnasium.wrappers."),
        ("_patch_robotics_stub", "gymnasium_robotics_stub", "No module named 'gymnasium_robotics'"),
        ("_patch_hashable_colors", "hashable_colors", "mutable default"),
    ],
)
def test_import_fails_without_each_import_time_patch(patch: str, name: str, error: str) -> None:
    if name not in APPLIED:
        pytest.skip(f"{name} is not needed on this stack")
    result = _run_without(patch, "import safety_gymnasium\nprint('IMPORTED')")
    assert result.returncode != 0 and "IMPORTED" not in result.stdout
    assert error in result.stderr


def test_apply_recovers_from_a_failed_import() -> None:
    code = """
        try:
            import safety_gymnasium
        except ModuleNotFoundError:
            print("FAILED FIRST")
        compat.apply()
        import sys, safety_gymnasium
        from safety_gymnasium.bases.base_agent import BaseAgent
        assert getattr(BaseAgent._init_jnt_sensors, "__sb3_safemeta_compat__", False) == ("mujoco_joint_int" in compat.APPLIED)
        print("RECOVERED", compat.APPLIED)
    """
    result = _run_without("_patch_wrapper_modules", code)
    assert "FAILED FIRST" in result.stdout and "RECOVERED" in result.stdout, result.stderr


def test_safety_gymnasium_is_imported_once() -> None:
    import safety_gymnasium
    from safety_gymnasium.bases.base_agent import BaseAgent

    compat.apply()
    assert sys.modules["safety_gymnasium"] is safety_gymnasium
    assert sys.modules["safety_gymnasium.bases.base_agent"].BaseAgent is BaseAgent


def test_import_succeeds_with_the_import_time_patches_only() -> None:
    result = _run_without("", "import safety_gymnasium\nprint('IMPORTED')")
    assert "IMPORTED" in result.stdout, result.stderr


def test_car_agent_fails_without_joint_patch() -> None:
    if "mujoco_joint_int" not in APPLIED:
        pytest.skip("MuJoCo accepts an index array here: patch not needed")
    code = """
        import gymnasium, safety_gymnasium
        from safety_gymnasium.builder import Builder
        Builder(**gymnasium.spec("SafetyPointCircle1-v0").kwargs)
        print("POINT")
        Builder(**gymnasium.spec("SafetyCarCircle1-v0").kwargs)
        print("CAR")
    """
    result = _run_without("", code)
    assert "POINT" in result.stdout and "CAR" not in result.stdout
    assert "jnt(): incompatible function arguments" in result.stderr


def test_safety_gymnasium_make_is_broken_and_make_builder_works() -> None:
    safety_gymnasium = compat.import_safety_gymnasium()
    with pytest.raises(AttributeError, match="apply_api_compatibility"):
        safety_gymnasium.make("SafetyPointCircle1-v0")
    env = compat.make_builder("SafetyPointCircle1-v0")
    with compat.headless_assets():
        obs, _ = env.reset(seed=0)
    assert obs.shape == (28,)  # 12 sensor values + 16 circle lidar bins (paper: 28)
    out = env.step(np.zeros(2))
    assert len(out) == 6  # Safety-Gymnasium's (obs, reward, cost, terminated, truncated, info)
    assert np.isfinite(out[1]) and out[2] in (0.0, 1.0)
    with pytest.raises(ValueError, match="NotAnEnv-v0"):
        compat.make_builder("NotAnEnv-v0")


def test_car_agent_runs_with_joint_patch() -> None:
    env = compat.make_builder("SafetyCarCircle1-v0")
    with compat.headless_assets():
        obs, _ = env.reset(seed=0)
    assert obs.shape == (40,)
    # the ball-joint sensor of the Car was classified through model.jnt(...)
    assert env.task.agent.sensor_info.ballquat_names == ["ballquat_rear"]
    for _ in range(20):
        obs, reward, cost, *_ = env.step(env.action_space.sample())
    assert np.all(np.isfinite(obs)) and np.isfinite(reward) and np.isfinite(cost)


def test_wrapper_aliases_point_to_gymnasium_classes() -> None:
    import gymnasium.wrappers
    from gymnasium.wrappers.autoreset import AutoResetWrapper
    from gymnasium.wrappers.compatibility import EnvCompatibility
    from gymnasium.wrappers.env_checker import PassiveEnvChecker
    from gymnasium.wrappers.normalize import NormalizeObservation, NormalizeReward, RunningMeanStd
    from gymnasium.wrappers.time_limit import TimeLimit

    assert AutoResetWrapper is gymnasium.wrappers.Autoreset
    assert PassiveEnvChecker is gymnasium.wrappers.PassiveEnvChecker
    assert NormalizeObservation is gymnasium.wrappers.NormalizeObservation
    assert NormalizeReward is gymnasium.wrappers.NormalizeReward
    assert RunningMeanStd is gymnasium.wrappers.utils.RunningMeanStd
    assert TimeLimit is gymnasium.wrappers.TimeLimit
    with pytest.raises(NotImplementedError, match="EnvCompatibility"):
        EnvCompatibility(None)


def test_robotics_stub_raises_on_use() -> None:
    if "gymnasium_robotics_stub" not in APPLIED:
        pytest.skip("gymnasium_robotics is installed")
    from gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi import MultiAgentMujocoEnv

    with pytest.raises(ImportError, match="gymnasium_robotics"):
        MultiAgentMujocoEnv()


def test_colors_are_hashable_and_unchanged() -> None:
    from safety_gymnasium.assets.color import COLOR
    from safety_gymnasium.assets.geoms import Hazards

    # the values upstream declares (safety_gymnasium/assets/color.py)
    np.testing.assert_array_equal(COLOR["hazard"], [0, 0, 1, 0.25])
    np.testing.assert_array_equal(COLOR["circle"], [0, 1, 0, 1])
    for value in COLOR.values():
        hash(value)
        assert not value.flags.writeable
    scaled = COLOR["circle"] * [1, 1, 1, 0.1]
    assert type(scaled) is np.ndarray and scaled.flags.writeable
    np.testing.assert_allclose(scaled, [0, 1, 0, 0.1])
    assert Hazards().color is COLOR["hazard"]


def test_apply_is_idempotent() -> None:
    from safety_gymnasium import world
    from safety_gymnasium.bases.base_agent import BaseAgent

    method, yaml_proxy, colors = (
        BaseAgent._init_jnt_sensors,
        world.yaml,
        dict(sys.modules["safety_gymnasium.assets.color"].COLOR),
    )
    assert compat.apply() == APPLIED
    assert compat.apply() == APPLIED
    assert BaseAgent._init_jnt_sensors is method  # not wrapped twice
    assert world.yaml is yaml_proxy
    assert all(sys.modules["safety_gymnasium.assets.color"].COLOR[k] is v for k, v in colors.items())
    assert len(APPLIED) == len(set(APPLIED))


def test_world_assets_cache_and_headless_skybox(tmp_path) -> None:
    from safety_gymnasium import world

    path = tmp_path / "assets.yaml"
    path.write_text("textures:\n  skybox:\n    '@type': skybox\n    '@fileup': up.png\n")
    with open(path) as file:
        first = world.yaml.load(file, Loader=world.yaml.FullLoader)
    first["textures"]["skybox"]["@fileup"] = "mutated"
    with open(path) as file:
        second = world.yaml.load(file, Loader=world.yaml.FullLoader)
    assert second["textures"]["skybox"]["@fileup"] == "up.png"  # a copy, not the cached object
    with compat.headless_assets(), open(path) as file:
        headless = world.yaml.load(file, Loader=world.yaml.FullLoader)
    assert headless["textures"]["skybox"]["@builtin"] == "gradient" and "@fileup" not in headless["textures"]["skybox"]


def test_headless_rebuild_is_faster_and_physics_identical() -> None:
    import time

    def run(headless: bool) -> tuple[float, np.ndarray]:
        env = compat.make_builder("SafetyPointCircle1-v0")
        start = time.perf_counter()
        if headless:
            with compat.headless_assets():
                env.reset(seed=3)
        else:
            env.reset(seed=3)
        elapsed = time.perf_counter() - start
        obs = [env.step(np.array([0.5, -0.3]))[0] for _ in range(30)]
        return elapsed, np.array(obs)

    slow, obs_slow = run(False)
    fast, obs_fast = run(True)
    np.testing.assert_array_equal(obs_slow, obs_fast)
    assert fast < slow


def test_gymnasium_registry_has_safety_ids() -> None:
    assert "SafetyPointButton1-v0" in gymnasium.registry
