"""
The independent solver of the CPO step's quadratic program (Achiam et al. 2017, Section 6): the oracle of the
tests of ``cpo_step`` (inner step) and of MetaCPO's constrained outer step.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def slsqp(g: np.ndarray, b: np.ndarray, c: float, fisher: np.ndarray, delta: float) -> np.ndarray:
    """max g^T x s.t. 1/2 x^T F x <= delta, c + b^T x <= 0 by SciPy's SLSQP (best of three starts)."""
    constraints = [
        {"type": "ineq", "fun": lambda x: delta - 0.5 * x @ fisher @ x, "jac": lambda x: -fisher @ x},
        {"type": "ineq", "fun": lambda x: -(c + b @ x), "jac": lambda x: -b},
    ]
    best = None
    for seed in range(3):
        start = np.random.default_rng(seed).normal(size=len(g)) * 1e-3
        result = minimize(
            lambda x: -g @ x, start, jac=lambda x: -g, constraints=constraints, method="SLSQP",
            options=dict(ftol=1e-15, maxiter=1000),
        )  # fmt: skip
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    return best.x
