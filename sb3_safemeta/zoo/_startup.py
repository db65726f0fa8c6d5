"""
Interpreter-startup hook that registers sb3_safemeta's algorithms with rl-zoo3 when rl-zoo3 is imported.

``sb3_safemeta_zoo.pth`` (installed in site-packages, see :mod:`sb3_safemeta.zoo.install_hook`) loads this
file by path at every interpreter start, without importing ``sb3_safemeta``. It only appends a
meta-path finder at the front of ``sys.meta_path``; nothing else is imported. When (and only when) one of the
rl-zoo3 modules below finishes executing, the finder calls
:func:`sb3_safemeta.zoo.registration.on_zoo_module_loaded`, which imports sb3_safemeta and adds its
algorithms to the module's tables. Standard library only; errors are reported as a warning, never
raised, so that a broken install cannot break an unrelated program.

Set ``SB3_SAFEMETA_NO_ZOO_HOOK=1`` to disable the hook.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

# rl-zoo3 modules that hold the tables we extend: ALGOS, HYPERPARAMS_SAMPLER/CONVERTER, ExperimentManager
WATCHED_MODULES = ("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager")


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps the real loader of a watched module: execute it, then let sb3_safemeta extend it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)  # type: ignore[attr-defined]
        try:
            from sb3_safemeta.zoo.registration import on_zoo_module_loaded

            on_zoo_module_loaded(module)
        except Exception as error:  # never break rl-zoo3 itself
            import warnings

            warnings.warn(f"sb3_safemeta could not register its algorithms with {module.__name__}: {error!r}", stacklevel=2)

    def __getattr__(self, name: str):  # get_code, get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class ZooRegistrationFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders, then wraps the loader of the watched modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in WATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _RegisteringLoader):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Append the finder once (idempotent), unless ``SB3_SAFEMETA_NO_ZOO_HOOK`` is set."""
    if os.environ.get("SB3_SAFEMETA_NO_ZOO_HOOK"):
        return
    if not any(type(finder).__name__ == ZooRegistrationFinder.__name__ for finder in sys.meta_path):
        sys.meta_path.insert(0, ZooRegistrationFinder())  # first, to see the modules before PathFinder loads them


install()
