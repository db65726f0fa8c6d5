"""
Registration of sb3_safemeta's algorithms with rl-zoo3.

rl-zoo3 has no plugin mechanism: ``rl_zoo3.train`` validates ``--algo`` against ``rl_zoo3.utils.ALGOS`` when
its argument parser is built, and ``ExperimentManager`` reads ``HYPERPARAMS_SAMPLER`` /
``HYPERPARAMS_CONVERTER`` from ``rl_zoo3.hyperparams_opt``. These are module-level dicts, so adding
entries to them (before ``train()`` runs) is enough. :func:`register` does it explicitly (the launchers
call it); the startup hook calls :func:`on_zoo_module_loaded` as each of those modules finishes loading.
"""

from __future__ import annotations

import pathlib
import site
import sys
import sysconfig
from types import ModuleType

from sb3_safemeta.common.on_policy_cost_algorithm import OnPolicyCostAlgorithm
from sb3_safemeta.safe_adapter import SafeAdapter
from sb3_safemeta.safe_meta_dual import SafeMetaDual
from sb3_safemeta.zoo.hyperparams_opt import SAFEMETA_CONVERTERS, SAFEMETA_SAMPLERS

# name on the rl-zoo3 command line -> algorithm class
SAFEMETA_ALGOS: dict[str, type[OnPolicyCostAlgorithm]] = {"safemeta": SafeMetaDual, "safe_adapter": SafeAdapter}


def hyperparams_path(algo: str) -> pathlib.Path:
    """
    The default hyperparameter file of one of our algorithms (``--conf-file`` overrides it).

    Looked up, in order: ``<repo>/hyperparams/<algo>.yml`` (source checkout, editable install), then
    ``<prefix>/share/sb3_safemeta/hyperparams/<algo>.yml`` where a wheel install puts them
    (``data_files`` in setup.cfg; prefix is the environment's, or the user base for ``--user``).

    :param algo: ``"safemeta"`` or ``"safe_adapter"``
    :return: the path of the yml file
    """
    share = pathlib.Path("share", "sb3_safemeta", "hyperparams")
    candidates = [
        pathlib.Path(__file__).resolve().parents[2] / "hyperparams",
        pathlib.Path(sysconfig.get_paths()["data"]) / share,
        pathlib.Path(sys.prefix) / share,
        pathlib.Path(site.getuserbase()) / share,
    ]
    for candidate in candidates:
        if (candidate / f"{algo}.yml").is_file():
            return candidate / f"{algo}.yml"
    raise FileNotFoundError(f"no hyperparameter file {algo}.yml; looked in {[str(c) for c in candidates]}")


def _register_algos(module: ModuleType) -> None:
    module.ALGOS.update(SAFEMETA_ALGOS)


def _register_samplers(module: ModuleType) -> None:
    module.HYPERPARAMS_SAMPLER.update(SAFEMETA_SAMPLERS)
    module.HYPERPARAMS_CONVERTER.update(SAFEMETA_CONVERTERS)


# rl_zoo3.exp_manager modules whose manager is replaced once sb3_safemeta.zoo.exp_manager has finished loading
_DEFERRED_MANAGERS: list[ModuleType] = []


def _register_experiment_manager(module: ModuleType) -> None:
    ours = sys.modules.get("sb3_safemeta.zoo.exp_manager")
    if ours is not None and not hasattr(ours, "SafeMetaExperimentManager"):
        # sb3_safemeta.zoo.exp_manager is being imported and is itself importing rl_zoo3.exp_manager (e.g. the
        # enjoy launcher imports it first): importing it here would be circular. It calls
        # finish_deferred_registration() once its class is defined.
        _DEFERRED_MANAGERS.append(module)
        return
    from sb3_safemeta.zoo.exp_manager import SafeMetaExperimentManager

    # rl_zoo3.train / enjoy do `from rl_zoo3.exp_manager import ExperimentManager` after this module has
    # loaded, so they get the subclass; it behaves exactly like rl-zoo3's for every other algorithm
    if not issubclass(module.ExperimentManager, SafeMetaExperimentManager):
        module.ExperimentManager = SafeMetaExperimentManager  # type: ignore[attr-defined]


def finish_deferred_registration() -> None:
    """Replace the managers whose registration waited for :mod:`sb3_safemeta.zoo.exp_manager` to load."""
    while _DEFERRED_MANAGERS:
        _register_experiment_manager(_DEFERRED_MANAGERS.pop())


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
    """Register ``safemeta`` and ``safe_adapter`` with rl-zoo3 now (idempotent; imports rl-zoo3)."""
    import rl_zoo3.exp_manager
    import rl_zoo3.hyperparams_opt
    import rl_zoo3.utils

    for name in _HANDLERS:
        on_zoo_module_loaded(sys.modules[name])
    for name in ("rl_zoo3.train", "rl_zoo3.enjoy"):  # already imported: rebind the manager they hold
        if name in sys.modules and hasattr(sys.modules[name], "ExperimentManager"):
            sys.modules[name].ExperimentManager = rl_zoo3.exp_manager.ExperimentManager  # type: ignore[attr-defined]
