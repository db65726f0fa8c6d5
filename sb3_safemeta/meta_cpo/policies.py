from sb3_safemeta.common.policies import CostActorCriticPolicy

# The meta-policy of meta-CPO and the adapted policies: Gaussian (Box) or categorical (Discrete) actor with reward and cost
# critics; default network: the paper's 2x64 tanh (Appendix D.2), the same as SafeMetaDual's.
MlpPolicy = CostActorCriticPolicy
