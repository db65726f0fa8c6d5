from sb3_safemeta.meta_cpo.cpo_step import CPOStepResult, cpo_step
from sb3_safemeta.meta_cpo.meta_cpo import MetaCPO, MetaCPOSurrogate, cpo_inner_step
from sb3_safemeta.meta_cpo.policies import MlpPolicy

__all__ = ["CPOStepResult", "MetaCPO", "MetaCPOSurrogate", "MlpPolicy", "cpo_inner_step", "cpo_step"]
