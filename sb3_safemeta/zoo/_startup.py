"""
Interpreter-startup hook that registers sb3_safemeta's algorithms with rl-zoo3 when rl-zoo3 is imported.

``sb3_safemeta_zoo.pth`` (written into site-packages by ``python -m sb3_safemeta.zoo.install_hook install``)
puts a one-line meta-path finder at the front of ``sys.meta_path`` at interpreter start, reading no file. The
first time a watched rl-zoo3 module is imported, that finder executes this file by its absolute path and
hands the lookup to :data:`FINDER`. When (and only when) one of the rl-zoo3 modules below finishes executing,
it calls
:func:`sb3_safemeta.zoo.registration.on_zoo_module_loaded`, which imports sb3_safemeta and adds its
algorithms to the module's tables. Nothing is imported at start-up (no ``importlib.abc``: the finder and the
loader wrapper are plain classes with the protocol's methods); errors are reported as a warning, never
raised, so that a broken install cannot break an unrelated program.

``SB3_SAFEMETA_NO_ZOO_HOOK=1`` disables the hook; the ``.pth`` line checks it before installing its finder.
"""

import sys

# rl-zoo3 modules that hold the tables we extend: ALGOS, HYPERPARAMS_SAMPLER/CONVERTER, ExperimentManager
WATCHED_MODULES = ("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager")


class _RegisteringLoader:
    """Wraps the real loader of a watched module: execute it, then let sb3_safemeta extend it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        try:
            from sb3_safemeta.zoo.registration import on_zoo_module_loaded

            on_zoo_module_loaded(module)
        except Exception as error:  # never break rl-zoo3 itself
            import warnings

            warnings.warn(f"sb3_safemeta could not register its algorithms with {module.__name__}: {error!r}", stacklevel=2)

    def __getattr__(self, name):  # get_code, get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class ZooRegistrationFinder:
    """A meta-path finder that finds nothing itself: asks the other finders, then wraps the loader of the watched modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in WATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            # skip this finder and the .pth line's, which hands its lookups to this one
            if finder is self or getattr(finder, "sb3_safemeta_zoo_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _RegisteringLoader):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


# the finder the .pth line's finder delegates to
FINDER = ZooRegistrationFinder()
