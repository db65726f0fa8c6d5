"""
The exact tabular oracle: constrained MDPs small enough that J, Jc, Q, A and the state visitation are
computed by linear algebra (:mod:`~sb3_safemeta.tabular.cmdp`), and the exact safe adaptation A^s and
safe meta-training built on them (:mod:`~sb3_safemeta.tabular.exact`). Every sampled, parametric
quantity of the package is tested against its counterpart here; runtime code never imports it (a ruff
banned-import rule enforces that), so it stays a test oracle and a teaching tool.
"""

from sb3_safemeta.tabular.cmdp import (
    PolicyEvaluation,
    TabularCMDP,
    TabularTaskFamily,
    kl_per_state,
    random_cmdp,
    softmax_policy,
    uniform_policy,
)
from sb3_safemeta.tabular.exact import (
    SafeAdaptResult,
    adapted_policy,
    meta_gradient_exact,
    meta_train_exact,
    safe_adapt_exact,
)

__all__ = [
    "PolicyEvaluation",
    "SafeAdaptResult",
    "TabularCMDP",
    "TabularTaskFamily",
    "adapted_policy",
    "kl_per_state",
    "meta_gradient_exact",
    "meta_train_exact",
    "random_cmdp",
    "safe_adapt_exact",
    "softmax_policy",
    "uniform_policy",
]
