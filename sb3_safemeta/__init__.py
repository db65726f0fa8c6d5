"""sb3_safemeta: safe meta-reinforcement learning with anytime safety for Stable-Baselines3."""

import os

import sb3_safemeta.envs  # noqa: F401  (registers the task families as Gymnasium ids; imports no simulator)
from sb3_safemeta.maml_cost_penalty import MAMLCostPenalty
from sb3_safemeta.meta_cpo import MetaCPO
from sb3_safemeta.meta_crpo import MetaCRPO
from sb3_safemeta.safe_adapter import SafeAdapter
from sb3_safemeta.safe_meta_dual import SafeMetaDual

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["MAMLCostPenalty", "MetaCPO", "MetaCRPO", "SafeAdapter", "SafeMetaDual", "__version__"]
