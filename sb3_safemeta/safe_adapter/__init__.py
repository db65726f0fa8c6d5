from sb3_safemeta.safe_adapter.policies import MlpPolicy
from sb3_safemeta.safe_adapter.safe_adapter import SafeAdapter

__all__ = ["MlpPolicy", "SafeAdapter"]
