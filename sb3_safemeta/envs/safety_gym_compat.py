"""
Make Safety-Gymnasium 1.0.0 importable and runnable next to Gymnasium 1.x, MuJoCo >= 3 and Python 3.11.

Safety-Gymnasium 1.0.0 (the newest release on PyPI, Ji et al. 2023) pins ``gymnasium==0.28.1``,
``mujoco==2.3.3`` and ``pygame==2.1.0``; none of them can share an environment with
Stable-Baselines3 2.x on Python 3.11, so the project installs it with ``pip install --no-deps``
(see ``scripts/install.sh``). Importing it then fails. :func:`apply` fixes, at import time and
without touching the installed files, exactly what breaks (measured on that stack, listed in
``docs/guide/safety_gymnasium.md`` and reproduced by ``tests/test_safety_gym_compat.py``):

1. **Removed wrapper modules** (Gymnasium >= 1.0.0): ``gymnasium.wrappers.compatibility``,
   ``.autoreset``, ``.env_checker``, ``.normalize`` and ``.time_limit`` are gone; their classes
   (except ``EnvCompatibility``) live on under ``gymnasium.wrappers``. We register small alias
   modules in ``sys.modules``; ``EnvCompatibility`` becomes a stub that raises when used (it only
   served old-step-API environments, which ``safety_gymnasium.make`` no longer needs).
2. **Optional multi-agent dependency**: ``safety_gymnasium/__init__.py`` imports
   ``gymnasium_robotics`` for its multi-agent MuJoCo tasks. When that package is missing we
   register a stub whose environment class raises ``ImportError`` when instantiated.
3. **Unhashable dataclass defaults** (Python >= 3.11): the asset dataclasses declare
   ``color: np.array = COLOR[...]``; Python 3.11 rejects a default whose type has
   ``__hash__ = None`` (``numpy.ndarray``). We load ``safety_gymnasium.assets.color`` first and
   turn every colour into a read-only ndarray subclass with an identity hash, so the classes
   can be defined. Values and arithmetic are unchanged.
4. **``safety_gymnasium.make``** reads ``EnvSpec.apply_api_compatibility``, which Gymnasium 1.0.0
   removed. It is not patched: :func:`make_builder` constructs the registered entry point with its
   registered kwargs instead (the raw Safety-Gymnasium env with its 6-tuple ``step``).
5. **MuJoCo >= 3.x named-access with arrays**: ``BaseAgent._init_jnt_sensors`` calls
   ``model.jnt(sensor.objid)`` where ``objid`` is a 1-element ``numpy`` int array; MuJoCo 4.0.0
   accepts only a plain ``int`` (or a name). The Car agent has joint sensors (the Point agent has
   none), so ``SafetyCar*`` envs failed at construction. We wrap that one method so that, while it
   runs, ``model.jnt``/``model.joint`` receive ``int(objid)``.

Not a compatibility fix but measured and needed for meta-RL (many short episodes):

6. **Per-reset asset cost** (any version): Safety-Gymnasium rebuilds and recompiles its MuJoCo
   model at every ``reset``; ``safety_gymnasium.world`` re-parses ``configs/assets.yaml`` each time
   (about 0.08 s) and the model's skybox texture makes MuJoCo 4.0.0 decode six HD PNG files (about
   0.4-0.6 s of a reset that otherwise compiles in about 1 ms). We give ``safety_gymnasium.world``
   (that module only) a ``yaml`` whose ``load`` caches the parsed file and returns a deep copy;
   inside :func:`headless_assets` (used by :mod:`sb3_safemeta.envs.navigation`, whose envs do not
   render) the skybox texture is replaced by a 32x32 built-in gradient. Elsewhere, results are
   identical to upstream.

Every patch checks first whether it is needed (so it is a no-op on a stack where upstream works),
records itself in :data:`APPLIED`, and is idempotent. ``import safety_gymnasium`` must happen
after :func:`apply`; use :func:`import_safety_gymnasium`, which does both.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import importlib
import importlib.util
import itertools
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["APPLIED", "HashableArray", "apply", "headless_assets", "import_safety_gymnasium", "make_builder"]

#: Names of the patches that :func:`apply` has applied in this process (in order). A patch that
#: was not needed (the upstream code already works) is not listed.
APPLIED: list[str] = []

# Removed ``gymnasium.wrappers.<module>`` -> {old class name: new name under ``gymnasium.wrappers``}.
# Gymnasium 1.0.0 flattened the wrappers package (``AutoResetWrapper`` was renamed ``Autoreset``
# and ``RunningMeanStd`` moved to ``gymnasium.wrappers.utils``).
_WRAPPER_ALIASES: dict[str, dict[str, str]] = {
    "autoreset": {"AutoResetWrapper": "Autoreset"},
    "env_checker": {"PassiveEnvChecker": "PassiveEnvChecker"},
    "normalize": {
        "NormalizeObservation": "NormalizeObservation",
        "NormalizeReward": "NormalizeReward",
        "RunningMeanStd": "utils.RunningMeanStd",
    },
    "time_limit": {"TimeLimit": "TimeLimit"},
}
_ROBOTICS_MODULES = (
    "gymnasium_robotics",
    "gymnasium_robotics.envs",
    "gymnasium_robotics.envs.multiagent_mujoco",
    "gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi",
)
_MARK = "__sb3_safemeta_compat__"


def _module_exists(name: str) -> bool:
    """:return: whether ``name`` can be imported (parents are imported, ``name`` itself is not)."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _stub_module(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    setattr(module, _MARK, True)
    sys.modules[name] = module
    return module


def _resolve(root: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


class EnvCompatibility:
    """
    Stand-in for ``gymnasium.wrappers.compatibility.EnvCompatibility`` (removed in Gymnasium 1.0.0).

    Safety-Gymnasium imports it for environments that follow the pre-0.26 step API; none of its
    safe-navigation environments do. Instantiating it raises.

    :param args: ignored
    :param kwargs: ignored
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "EnvCompatibility (old Gym step API) was removed in Gymnasium 1.0.0 and is not provided by "
            "sb3_safemeta.envs.safety_gym_compat; construct Safety-Gymnasium envs with make_builder()."
        )


def _patch_wrapper_modules() -> bool:
    """Patch 1 (Gymnasium >= 1.0.0): alias modules for the removed ``gymnasium.wrappers.*`` submodules."""
    import gymnasium.wrappers

    changed = False
    for short, names in _WRAPPER_ALIASES.items():
        full = f"gymnasium.wrappers.{short}"
        if _module_exists(full):
            continue
        module = _stub_module(full, f"Alias created by sb3_safemeta for the module Gymnasium 1.0.0 removed ({full}).")
        for old, new in names.items():
            setattr(module, old, _resolve(gymnasium.wrappers, new))
        changed = True
    full = "gymnasium.wrappers.compatibility"
    if not _module_exists(full):
        module = _stub_module(full, "Stub created by sb3_safemeta: EnvCompatibility was removed in Gymnasium 1.0.0.")
        module.EnvCompatibility = EnvCompatibility  # type: ignore[attr-defined]
        changed = True
    return changed


class _MissingMultiAgentEnv:
    """Stand-in for ``gymnasium_robotics``' ``MultiAgentMujocoEnv`` when that package is absent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(
            "Safety-Gymnasium's multi-agent tasks need gymnasium_robotics, which is not installed "
            "(sb3_safemeta only stubs it so that `import safety_gymnasium` works)."
        )


def _patch_robotics_stub() -> bool:
    """Patch 2 (any version, when ``gymnasium_robotics`` is not installed): stub the multi-agent import."""
    if _module_exists("gymnasium_robotics"):
        return False
    modules = [
        _stub_module(name, "Stub created by sb3_safemeta (gymnasium_robotics is not installed).") for name in _ROBOTICS_MODULES
    ]
    for parent, child in itertools.pairwise(modules):
        setattr(parent, child.__name__.rsplit(".", 1)[1], child)
    modules[-1].MultiAgentMujocoEnv = _MissingMultiAgentEnv  # type: ignore[attr-defined]
    return True


class HashableArray(np.ndarray):
    """
    A read-only ``numpy.ndarray`` with an identity hash.

    Python 3.11 ``dataclasses`` refuse a default value whose type is unhashable (``ndarray``
    sets ``__hash__ = None``); this subclass is accepted. Arithmetic results are plain arrays.
    """

    __hash__ = object.__hash__  # type: ignore[assignment]

    def __array_wrap__(self, array: np.ndarray, context: Any = None, return_scalar: bool = False) -> Any:
        # Results of ufuncs are ordinary (writable, unhashable) arrays.
        result = np.asarray(array).view(np.ndarray)
        return result[()] if return_scalar else result


def _hashable(array: np.ndarray) -> HashableArray:
    result = np.array(array).view(HashableArray)
    result.flags.writeable = False
    return result


def _patch_hashable_colors() -> bool:
    """
    Patch 3 (Python >= 3.11): make the colour arrays of ``safety_gymnasium.assets.color`` hashable.

    The module is executed on its own, before the ``safety_gymnasium`` package (whose import
    defines the dataclasses) and registered in ``sys.modules``; the package then reuses it.
    """
    name = "safety_gymnasium.assets.color"
    module = sys.modules.get(name)
    if module is None:
        root = importlib.util.find_spec("safety_gymnasium")
        if root is None or not root.submodule_search_locations:
            raise ImportError("safety_gymnasium is not installed (see scripts/install.sh)")
        path = Path(next(iter(root.submodule_search_locations))) / "assets" / "color.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    colors: dict[str, Any] = module.COLOR
    if all(getattr(type(value), "__hash__", None) is not None for value in colors.values()):
        return False
    for key, value in colors.items():
        colors[key] = _hashable(value)
    return True


def _patch_joint_lookup() -> bool:
    """
    Patch 5 (MuJoCo >= 3.x, seen with 4.0.0): ``model.jnt(<1-element int array>)`` in ``BaseAgent._init_jnt_sensors``.

    While the wrapped method runs, the agent's engine exposes a model proxy whose ``jnt`` and
    ``joint`` accept a 1-element integer array (converted with ``int``); everything else is the
    real ``MjModel``. Needs the ``safety_gymnasium`` package importable (patches 1-3 applied).
    """
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><joint/><geom size='1'/></body></worldbody></mujoco>")
    try:
        model.jnt(np.array([0]))
        return False  # this MuJoCo accepts arrays: nothing to do
    except TypeError:
        pass
    from safety_gymnasium.bases.base_agent import BaseAgent

    original = BaseAgent._init_jnt_sensors
    if getattr(original, _MARK, False):
        return False

    @functools.wraps(original)
    def _init_jnt_sensors(self: Any) -> None:
        engine = self.engine
        self.engine = _EngineProxy(engine)
        try:
            original(self)
        finally:
            self.engine = engine

    setattr(_init_jnt_sensors, _MARK, True)
    BaseAgent._init_jnt_sensors = _init_jnt_sensors
    return True


class _ModelProxy:
    """Forwards to an ``MjModel``; ``jnt``/``joint`` convert a 1-element index array to ``int``."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def jnt(self, key: Any) -> Any:
        return self._model.jnt(_as_key(key))

    def joint(self, key: Any) -> Any:
        return self._model.joint(_as_key(key))


class _EngineProxy:
    """Forwards to a Safety-Gymnasium engine; its ``model`` is a :class:`_ModelProxy`."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.model = _ModelProxy(engine.model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _as_key(key: Any) -> Any:
    if isinstance(key, np.ndarray) and key.size == 1 and np.issubdtype(key.dtype, np.integer):
        return int(key.reshape(-1)[0])
    return key


# Built-in gradient skybox (no image files) used instead of the six PNG files inside headless_assets().
_HEADLESS_SKYBOX = {
    "@type": "skybox",
    "@builtin": "gradient",
    "@rgb1": "0.3 0.5 0.7",
    "@rgb2": "0 0 0",
    "@width": "32",
    "@height": "32",
}
_HEADLESS: contextvars.ContextVar[bool] = contextvars.ContextVar("sb3_safemeta_headless_assets", default=False)


@contextlib.contextmanager
def headless_assets() -> Iterator[None]:
    """
    Within this context, Safety-Gymnasium models are built with a built-in skybox texture instead
    of the six PNG files (patch 6). Only for environments that never render.
    """
    token = _HEADLESS.set(True)
    try:
        yield
    finally:
        _HEADLESS.reset(token)


class _CachedYaml:
    """
    Stands for the ``yaml`` module inside ``safety_gymnasium.world`` only (patch 6).

    ``load`` parses each file once (keyed by path and modification time) and returns a deep copy,
    so callers may mutate the result as with a fresh parse.
    """

    def __init__(self, module: types.ModuleType) -> None:
        self._yaml = module
        self._cache: dict[tuple[str, float], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._yaml, name)

    def load(self, stream: Any, Loader: Any = None) -> Any:
        path = getattr(stream, "name", None)
        if not isinstance(path, str):
            return self._yaml.load(stream, Loader=Loader)
        key = (path, Path(path).stat().st_mtime)
        if key not in self._cache:
            self._cache[key] = self._yaml.load(stream, Loader=Loader)
        result = copy.deepcopy(self._cache[key])
        if _HEADLESS.get() and isinstance(result, dict) and "skybox" in result.get("textures", {}):
            result["textures"]["skybox"] = dict(_HEADLESS_SKYBOX)
        return result


def _patch_world_assets() -> bool:
    """Patch 6 (performance): cached ``assets.yaml`` and optional cheap skybox in ``safety_gymnasium.world``."""
    world = importlib.import_module("safety_gymnasium.world")
    if isinstance(world.yaml, _CachedYaml):
        return False
    world.yaml = _CachedYaml(world.yaml)  # type: ignore[attr-defined]
    return True


def apply() -> list[str]:
    """
    Apply every needed patch (idempotent; safe to call many times, before or after the others).

    Patches 1-3 must run before ``safety_gymnasium`` is first imported; patches 5-6 import it.

    :return: :data:`APPLIED`, the names of the patches applied in this process
    """
    if "safety_gymnasium" not in sys.modules:
        # A failed `import safety_gymnasium` (before these patches) removes the package from sys.modules
        # but leaves the submodules it had imported; drop them so that the import below starts clean.
        for name in [name for name in sys.modules if name.startswith("safety_gymnasium.")]:
            if name != "safety_gymnasium.assets.color":
                del sys.modules[name]
    for name, patch in (
        ("gymnasium_wrapper_aliases", _patch_wrapper_modules),
        ("gymnasium_robotics_stub", _patch_robotics_stub),
        ("hashable_colors", _patch_hashable_colors),
    ):
        if patch() and name not in APPLIED:
            APPLIED.append(name)
    importlib.import_module("safety_gymnasium")
    if _patch_joint_lookup() and "mujoco_joint_int" not in APPLIED:
        APPLIED.append("mujoco_joint_int")
    if _patch_world_assets() and "world_assets_cache" not in APPLIED:
        APPLIED.append("world_assets_cache")
    return APPLIED


def import_safety_gymnasium() -> types.ModuleType:
    """
    :return: the ``safety_gymnasium`` module, imported after :func:`apply`
    """
    apply()
    return sys.modules["safety_gymnasium"]


def make_builder(env_id: str, **kwargs: Any) -> Any:
    """
    Construct a registered Safety-Gymnasium environment without ``safety_gymnasium.make`` (patch 4).

    ``safety_gymnasium.make`` reads ``EnvSpec.apply_api_compatibility``, removed in Gymnasium 1.0.0.
    This builds the registered entry point (``safety_gymnasium.builder:Builder``) with its registered
    kwargs, with no wrapper: ``step`` returns Safety-Gymnasium's 6-tuple
    ``(obs, reward, cost, terminated, truncated, info)`` and the episode ends after the task's
    ``num_steps`` (500 for Circle, 1000 for Button).

    :param env_id: a Safety-Gymnasium id, e.g. ``"SafetyPointCircle1-v0"``
    :param kwargs: overrides of the registered kwargs (e.g. ``render_mode``)
    :return: the raw ``safety_gymnasium.builder.Builder`` environment
    """
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    safety_gymnasium = import_safety_gymnasium()
    if env_id not in safety_gymnasium.utils.registration.safe_registry:
        raise ValueError(f"make_builder(env_id): {env_id!r} is not a registered Safety-Gymnasium id")
    spec = gymnasium.spec(env_id)
    creator: Any = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    return creator(**{**spec.kwargs, **kwargs})
