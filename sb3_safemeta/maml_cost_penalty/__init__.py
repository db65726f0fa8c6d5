from sb3_safemeta.maml_cost_penalty.maml_cost_penalty import MAMLCostPenalty
from sb3_safemeta.maml_cost_penalty.policies import MlpPolicy

__all__ = ["MAMLCostPenalty", "MlpPolicy"]
