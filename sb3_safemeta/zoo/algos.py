"""
The algorithms sb3_safemeta adds to rl-zoo3 and where their default hyperparameter files are. Imports no
rl-zoo3 module, so both :mod:`~sb3_safemeta.zoo.registration` and :mod:`~sb3_safemeta.zoo.exp_manager` use it.
"""

from __future__ import annotations

from sb3_safemeta.common.hyperparams import hyperparams_path  # the one lookup (the main job and the reproduction use it)
from sb3_safemeta.common.on_policy_cost_algorithm import OnPolicyCostAlgorithm
from sb3_safemeta.maml_cost_penalty import MAMLCostPenalty
from sb3_safemeta.meta_cpo import MetaCPO
from sb3_safemeta.meta_crpo import MetaCRPO
from sb3_safemeta.safe_adapter import SafeAdapter
from sb3_safemeta.safe_meta_dual import SafeMetaDual

__all__ = ["SAFEMETA_ALGOS", "hyperparams_path"]

# name on the rl-zoo3 command line -> algorithm class (the three baselines of Section 6 too)
SAFEMETA_ALGOS: dict[str, type[OnPolicyCostAlgorithm]] = {
    "safemeta": SafeMetaDual,
    "safe_adapter": SafeAdapter,
    "maml_cost_penalty": MAMLCostPenalty,
    "meta_cpo": MetaCPO,
    "meta_crpo": MetaCRPO,
}
