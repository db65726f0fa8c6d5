from sb3_safemeta.common.policies import CostActorCriticPolicy

# The meta-policy of the MAML baseline: the same actor-critic as SafeMetaDual's (Gaussian for Box,
# categorical for Discrete actions; 2x64 tanh, Appendix D.2), so that both start from the same network.
MlpPolicy = CostActorCriticPolicy
