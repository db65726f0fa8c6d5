"""
rl-baselines3-zoo (rl-zoo3) integration: ``python -m rl_zoo3.train --algo safemeta --env SafeMetaPointNav-v0``.

- :mod:`~sb3_safemeta.zoo.registration`: adds ``safemeta`` (SafeMetaDual) and ``safe_adapter`` (SafeAdapter)
  to rl-zoo3's ``ALGOS``, ``HYPERPARAMS_SAMPLER`` and ``HYPERPARAMS_CONVERTER``, and its experiment manager
- :mod:`~sb3_safemeta.zoo.hyperparams_opt`: Optuna samplers and converters
- :mod:`~sb3_safemeta.zoo.exp_manager`: the cost-aware (constrained) Optuna objective, default hyperparameter files
- :mod:`~sb3_safemeta.zoo.train`, :mod:`~sb3_safemeta.zoo.enjoy`: launchers
  (``python -m sb3_safemeta.zoo.train ...`` works without the startup hook)
- ``_startup.py`` / :mod:`~sb3_safemeta.zoo.install_hook`: the startup hook that makes the literal
  ``python -m rl_zoo3.train --algo safemeta`` work (see docs/guide/rl_zoo.md)
"""

from sb3_safemeta.zoo.registration import SAFEMETA_ALGOS, hyperparams_path, register

__all__ = ["SAFEMETA_ALGOS", "hyperparams_path", "register"]
