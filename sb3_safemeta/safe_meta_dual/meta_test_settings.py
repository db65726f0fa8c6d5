"""
The A^s settings of meta-test (``SafeMetaDual(test_adaptation=...)``): meta-test may adapt with other SafeAdapter
arguments than the inner step of meta-training. Why: on the rare-cost navigation families the step that meta-trains
well (lambda_c = lambda, the rollout size of meta-training) carries cost-0 policies into the hazard at meta-test,
while a step bound by its KL term (lambda_c = 1000: a KL radius (d - Jc) / lambda_c <= 0.01) on at least 6 episodes
kept 91% of the explored policies within d (docs/modules/safe_meta_dual.md, "Rare costs in meta-training").
"""

from __future__ import annotations

import inspect
from typing import Any

from sb3_safemeta.common.adaptation.options import OPTION_NAMES, AdaptationOptions
from sb3_safemeta.common.validation import check_int
from sb3_safemeta.safe_adapter import SafeAdapter

__all__ = ["check_test_adaptation"]

# the meta-policy's own architecture and identity are not meta-test settings
_NOT_SETTINGS = frozenset({"self", "policy", "env", "policy_kwargs", "_init_setup_model", "device", "seed"})


def _settings() -> set[str]:
    return set(inspect.signature(SafeAdapter.__init__).parameters) - _NOT_SETTINGS | {"min_episodes"}


def check_test_adaptation(test_adaptation: dict[str, Any] | None) -> dict[str, Any]:
    """
    :param test_adaptation: SafeAdapter arguments of meta-test (e.g. ``{"lambda_c": 1000.0}``), plus
        ``"min_episodes"``: at least that many complete episodes per A^s step at meta-test
    :return: a copy (empty for None)
    :raises TypeError: if it is not a dict
    :raises ValueError: for an unknown key, a ``min_episodes`` below 1, or a bad value of an A^s option (e.g. a
        negative ``lambda_c``), named as by ``SafeAdapter``
    """
    if test_adaptation is None:
        return {}
    if not isinstance(test_adaptation, dict):
        raise TypeError(f"test_adaptation must be a dict of SafeAdapter arguments or None, got {test_adaptation!r}")
    unknown = sorted(set(test_adaptation) - _settings())
    if unknown:
        raise ValueError(
            f"test_adaptation has unknown key(s) {unknown}; expected SafeAdapter arguments "
            f"(e.g. lambda_c, n_steps, cost_confidence) or min_episodes"
        )
    # the values of A^s's own options are checked now, not at the first meta-test (the others by SafeAdapter there)
    AdaptationOptions(**{key: value for key, value in test_adaptation.items() if key in OPTION_NAMES})
    settings = dict(test_adaptation)
    if settings.get("min_episodes") is not None:
        settings["min_episodes"] = check_int(settings["min_episodes"], "test_adaptation['min_episodes']")
    return settings
