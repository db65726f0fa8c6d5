"""
The hyper-parameters of one safe adaptation step A^s (problem (1), Algorithm 3), validated in one place.

``SafeAdapter`` (every step of ``learn``), ``SafeMetaDual`` (line 5 of Algorithms 2/4 in meta-training) and
``SafeMetaDual.meta_test`` (the chain of Section 5.1) run the same A^s. They keep SB3's flat constructor
arguments (``lambda_``, ``lambda_c``, ...; saved in the zip like any hyper-parameter) and read them through
:class:`SafeAdaptationMixin.adaptation`, an :class:`AdaptationOptions` built from those attributes, so that
the checks, the defaults and the list of arguments exist once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_safemeta.common.adaptation.confidence import check_margin
from sb3_safemeta.common.adaptation.dual import DUAL_SOLVERS
from sb3_safemeta.common.validation import as_cost_vector, check_int, check_positive

__all__ = ["FIT_SCOPES", "LAMBDA_C_RULES", "OPTION_NAMES", "AdaptationOptions", "SafeAdaptationMixin"]

FIT_SCOPES = ("actor", "head", "hybrid")
LAMBDA_C_RULES = (None, "prop4")


@dataclass(frozen=True)
class AdaptationOptions:
    """
    Everything that defines one A^s step except the data, the cost limit d and the warm start of u.

    :param lambda_: KL weight lambda of the objective of problem (1) (> 0)
    :param lambda_c: KL weight lambda_c of each constraint (>= 0), float or per channel
    :param delta_c: allowable violation delta of each constraint (>= 0), float or per channel; 0 is strict
        anytime safety
    :param dual_solver: ``"auto"``, ``"bisection"``, ``"newton"`` or ``"pgd"`` (Algorithm 1)
    :param beta: PGD step size; used by ``"pgd"`` only
    :param n_dual_steps: maximum dual iterations per step (each is one fit of pi^u)
    :param fit_steps: L-BFGS iterations per fit of pi^u
    :param fit_scope: ``"actor"`` (all actor parameters, Appendix E.2), ``"head"`` (its last layer) or ``"hybrid"``
        (the dual solved on head fits, the step one fit of all actor parameters at that u*); a rollout with fewer
        than 2 (k + 1) samples for a head on k latent features is fitted as ``"actor"`` (the head would interpolate it)
    :param backtrack_steps: feasibility backtracking steps after the dual solve (0 disables)
    :param dual_tol: relative tolerance of the dual solve on the active constraints
    :param normalize_advantage: divide the reward advantages by their standard deviation (lambda is then
        relative to the reward scale); the cost advantages are never rescaled
    :param cost_confidence: the statistical margin of A^s (for rare costs): None constrains the rollout's mean
        episode cost (problem (1) with an estimated Jc); a level 1 - alpha in [0.5, 1) constrains an upper
        confidence bound of Jc(pi_phi) that holds with that probability; a step whose bound violates d while the
        estimate does not keeps the policy (see :mod:`sb3_safemeta.common.adaptation.confidence`)
    :param cost_bound: the bound of the margin: ``"dkw"`` (valid for any episode-cost distribution on [0, R]),
        ``"hoeffding"`` or ``"bootstrap"`` (not valid for rare costs)
    :param episode_cost_range: R, the largest possible episode cost, float or per channel (None: the rollout's
        longest episode x max(1, its largest step cost), the horizon for indicator costs)
    :param lambda_c_rule: None (``lambda_c`` as given) or ``"prop4"``: each step uses
        max(lambda_c, 4 gamma A_c^max / (visitation_constant (1 - gamma)^2)), Proposition 4's condition with
        gamma = 1 - 1/H (episode units) and A_c^max the largest absolute cost advantage of the rollout, at least the
        largest step cost (1 for indicator costs: a rollout that saw no cost still bounds a step into the hazard)
    :param visitation_constant: eta * alpha of Assumption 2 for ``"prop4"`` (in (0, 1]; 1, the default, is the
        least conservative value the assumption allows)
    :param holdout_fraction: the share of the rollout's episodes held out of the fit (0 disables): the dual and the
        fits of pi^u use the other episodes, and the step is accepted, backtracked or (recovery) sized by the
        constraint function evaluated on the held-out episodes, the test of a policy chosen on other data (the
        split of high-confidence policy improvement, Thomas et al. 2015). Without it the constraint is judged on the
        samples the fit has reweighted, which overstates the cost decrease
    """

    lambda_: float = 1.0
    lambda_c: float | list[float] | np.ndarray = 1.0
    delta_c: float | list[float] | np.ndarray = 0.0
    dual_solver: str = "auto"
    beta: float = 1.0
    n_dual_steps: int = 20
    fit_steps: int = 25
    fit_scope: str = "actor"
    backtrack_steps: int = 15
    dual_tol: float = 1e-3
    normalize_advantage: bool = True
    cost_confidence: float | None = None
    cost_bound: str = "dkw"
    episode_cost_range: float | list[float] | None = None
    lambda_c_rule: str | None = None
    visitation_constant: float = 1.0
    holdout_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self.lambda_, "lambda_")
        check_margin(self.cost_confidence, self.cost_bound, self.episode_cost_range)
        if self.lambda_c_rule not in LAMBDA_C_RULES:
            raise ValueError(f"lambda_c_rule must be one of {LAMBDA_C_RULES}, got {self.lambda_c_rule!r}")
        if not 0.0 < float(self.visitation_constant) <= 1.0:
            raise ValueError(
                f"visitation_constant must be in (0, 1] (eta * alpha of Assumption 2), got {self.visitation_constant!r}"
            )
        fraction = self.holdout_fraction
        if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0.0 <= float(fraction) < 1.0):
            raise ValueError(
                f"holdout_fraction must be in [0, 1) (0 disables the held-out test), got {self.holdout_fraction!r}"
            )
        if self.dual_solver not in DUAL_SOLVERS:
            raise ValueError(f"dual_solver must be one of {DUAL_SOLVERS}, got {self.dual_solver!r}")
        if self.fit_scope not in FIT_SCOPES:
            raise ValueError(f"fit_scope must be one of {FIT_SCOPES}, got {self.fit_scope!r}")
        check_positive(self.beta, "beta")
        check_positive(self.dual_tol, "dual_tol")
        # the project's integer rule (check_int: 10.0 is 10, 0.5 and True are errors), as for every other count
        for name, minimum in (("n_dual_steps", 1), ("fit_steps", 1), ("backtrack_steps", 0)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, minimum))  # frozen dataclass
        for name in ("lambda_c", "delta_c"):  # the shape is checked against p by check_channels
            as_cost_vector(getattr(self, name), np.size(getattr(self, name)), name, allow_negative=False)

    def check_channels(self, n_costs: int) -> None:
        """
        Check that ``lambda_c`` and ``delta_c`` are scalars or have one entry per cost channel (p = ``n_costs``),
        and that the dual solver handles p channels.
        """
        as_cost_vector(self.lambda_c, n_costs, "lambda_c", allow_negative=False)
        as_cost_vector(self.delta_c, n_costs, "delta_c", allow_negative=False)
        if self.dual_solver == "bisection" and n_costs != 1:  # at construction, not at the first adaptation
            raise ValueError(f"dual_solver='bisection' needs one cost channel, got n_costs={n_costs}; use 'newton' or 'pgd'")

    def solver_kwargs(self) -> dict[str, Any]:
        """:return: the arguments of :func:`~sb3_safemeta.common.adaptation.parametric.parametric_safe_adapt`"""
        return {
            "dual_solver": self.dual_solver,
            "beta": self.beta,
            "n_dual_steps": self.n_dual_steps,
            "fit_steps": self.fit_steps,
            "fit_scope": self.fit_scope,
            "backtrack_steps": self.backtrack_steps,
            "dual_tol": self.dual_tol,
        }

    def as_dict(self) -> dict[str, Any]:
        """:return: the options as constructor arguments of ``SafeAdapter`` (and ``SafeMetaDual``)"""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


# the constructor arguments of SafeAdapter and SafeMetaDual that are A^s options (saved in their zips)
OPTION_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(AdaptationOptions))


class SafeAdaptationMixin:
    """
    For the algorithms that run A^s: they store the fields of :class:`AdaptationOptions` as attributes (the
    SB3 way: constructor arguments, saved in the zip) and read them back, validated, as ``self.adaptation``.
    """

    lambda_: float
    lambda_c: float | list[float] | np.ndarray
    delta_c: float | list[float] | np.ndarray
    dual_solver: str
    beta: float
    n_dual_steps: int
    fit_steps: int
    fit_scope: str
    backtrack_steps: int
    dual_tol: float
    normalize_advantage: bool
    cost_confidence: float | None
    cost_bound: str
    episode_cost_range: float | list[float] | None
    lambda_c_rule: str | None
    visitation_constant: float
    holdout_fraction: float

    def _set_adaptation_options(self, options: AdaptationOptions) -> None:
        """Store validated options as attributes (``self.lambda_``, ``self.lambda_c``, ...)."""
        for name, value in options.as_dict().items():
            setattr(self, name, value)

    @property
    def adaptation(self) -> AdaptationOptions:
        """The A^s options from the current attributes (validated again: a user may have changed one)."""
        # a zip saved before an option existed lacks its attribute: the option's default then applies
        values: dict[str, Any] = {
            field.name: getattr(self, field.name, field.default) for field in dataclasses.fields(AdaptationOptions)
        }
        return AdaptationOptions(**values)
