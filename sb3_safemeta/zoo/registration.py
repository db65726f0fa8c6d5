"""
Registration of sb3_safemeta's algorithms with rl-zoo3.

rl-zoo3 has no plugin mechanism: ``rl_zoo3.train`` validates ``--algo`` against ``rl_zoo3.utils.ALGOS`` when
its argument parser is built, and ``ExperimentManager`` reads ``HYPERPARAMS_SAMPLER`` /
``HYPERPARAMS_CONVERTER`` from ``rl_zoo3.hyperparams_opt``. These are module-level dicts, so adding
entries to them (before ``train()`` runs) is enough. :func:`register` does it explicitly (the launchers
call it); the startup hook calls :func:`on_zoo_module_loaded` as each of those modules finishes loading.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from sb3_safemeta.zoo.algos import SAFEMETA_ALGOS, hyperparams_path
from sb3_safemeta.zoo.hyperparams_opt import SAFEMETA_CONVERTERS, SAFEMETA_SAMPLERS

__all__ = ["SAFEMETA_ALGOS", "hyperparams_path", "on_zoo_module_loaded", "register"]


def _register_algos(module: ModuleType) -> None:
    module.ALGOS.update(SAFEMETA_ALGOS)
    # rl_zoo3.enjoy builds its environment with create_test_env: report the episode cost next to its reward
    create_test_env = module.create_test_env
    if not getattr(create_test_env, "_reports_episode_cost", False):

        def create_test_env_reporting_cost(*args: Any, **kwargs: Any) -> Any:
            from sb3_safemeta.common.wrappers import VecEpisodeCostReporter

            return VecEpisodeCostReporter(create_test_env(*args, **kwargs))

        create_test_env_reporting_cost._reports_episode_cost = True  # type: ignore[attr-defined]
        module.create_test_env = create_test_env_reporting_cost  # type: ignore[attr-defined]
        package = sys.modules.get("rl_zoo3")  # already imported (register() after the fact): rebind its name too
        if package is not None and getattr(package, "create_test_env", None) is create_test_env:
            package.create_test_env = create_test_env_reporting_cost  # type: ignore[attr-defined]


def _register_samplers(module: ModuleType) -> None:
    module.HYPERPARAMS_SAMPLER.update(SAFEMETA_SAMPLERS)
    module.HYPERPARAMS_CONVERTER.update(SAFEMETA_CONVERTERS)


def _register_experiment_manager(module: ModuleType) -> None:
    ours = sys.modules.get("sb3_safemeta.zoo.exp_manager")
    if ours is not None and not hasattr(ours, "install_experiment_manager"):
        # sb3_safemeta.zoo.exp_manager is loading and is itself importing rl_zoo3.exp_manager (e.g. the enjoy
        # launcher imported it first): it installs its manager into rl_zoo3 once its class is defined.
        return
    from sb3_safemeta.zoo.exp_manager import install_experiment_manager

    install_experiment_manager()


_HANDLERS = {
    "rl_zoo3.utils": _register_algos,
    "rl_zoo3.hyperparams_opt": _register_samplers,
    "rl_zoo3.exp_manager": _register_experiment_manager,
}


def on_zoo_module_loaded(module: ModuleType) -> None:
    """Called by the startup hook right after ``module`` (one of rl-zoo3's) has been executed."""
    handler = _HANDLERS.get(module.__name__)
    if handler is not None:
        handler(module)


def register() -> None:
    """Register every algorithm of :data:`SAFEMETA_ALGOS` with rl-zoo3 now (idempotent; imports rl-zoo3)."""
    for name in _HANDLERS:
        on_zoo_module_loaded(importlib.import_module(name))
