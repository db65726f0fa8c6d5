from sb3_safemeta.common.policies import CostActorCriticPolicy

# Gaussian (Box) or categorical (Discrete) actor with a value head and p cost-value heads;
# default network: the paper's 2x64 tanh for the actor and the critics (Appendix D.2).
MlpPolicy = CostActorCriticPolicy
