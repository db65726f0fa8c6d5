from sb3_safemeta.meta_crpo.meta_crpo import CRPOStepResult, MetaCRPO, average_distance_update, crpo_step
from sb3_safemeta.meta_crpo.policies import MlpPolicy

__all__ = ["CRPOStepResult", "MetaCRPO", "MlpPolicy", "average_distance_update", "crpo_step"]
