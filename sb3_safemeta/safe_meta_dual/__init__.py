from sb3_safemeta.safe_meta_dual.policies import MlpPolicy
from sb3_safemeta.safe_meta_dual.safe_meta_dual import SafeMetaDual

__all__ = ["MlpPolicy", "SafeMetaDual"]
