"""
The meta-gradient (Proposition 3, eq. 6, Algorithm 4 line 7) against finite differences of
J(A^s(pi_phi)) on exact tabular CMDPs, with u* held fixed (the approximation the paper makes in eq. 6).
"""

import numpy as np
import pytest
from tabular_helpers import central_differences

from sb3_safemeta.tabular import adapted_policy, meta_gradient_exact, random_cmdp


def instance(seed: int):
    rng = np.random.default_rng(seed)
    n_costs = 1 + seed % 2
    cmdp = random_cmdp(4, 3, n_costs, gamma=0.8, seed=seed)
    return cmdp, rng.normal(size=(4, 3)), rng.uniform(0.0, 2.0, n_costs), float(rng.choice([0.5, 1.0, 2.0]))


@pytest.mark.parametrize("seed", range(6))
def test_eq6_is_the_exact_gradient_with_u_fixed(seed):
    cmdp, logits, u, lambda_ = instance(seed)

    def meta_objective(phi):
        return cmdp.J(adapted_policy(cmdp, phi, u, lambda_, lambda_))

    numeric = central_differences(meta_objective, logits)
    analytic = meta_gradient_exact(cmdp, logits, u, lambda_, lambda_, form="eq6")
    np.testing.assert_allclose(analytic, numeric, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_alg4_keeps_exactly_the_grad_f_term(seed):
    """Algorithm 4 line 7 is the derivative with pi_phi's action values Qbar frozen at phi."""
    cmdp, logits, u, lambda_ = instance(seed)
    frozen = adapted_policy(cmdp, logits, u, lambda_, lambda_)  # softmax(phi + Qbar(phi)/eta)
    offset = np.log(frozen) - logits  # Qbar(phi)/eta up to a per-state constant

    def frozen_objective(phi):
        shifted = phi + offset
        policy = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        return cmdp.J(policy / policy.sum(axis=1, keepdims=True))

    numeric = central_differences(frozen_objective, logits)
    np.testing.assert_allclose(meta_gradient_exact(cmdp, logits, u, lambda_, lambda_, form="alg4"), numeric, atol=1e-7)


def test_dropped_term_matters_and_alg4_is_an_ascent_direction():
    """The eta^-1 grad Qbar term is not zero, yet the Algorithm 4 direction still increases J(A^s(pi_phi))."""
    cmdp, logits, u, lambda_ = instance(0)
    full = meta_gradient_exact(cmdp, logits, u, lambda_, lambda_, form="eq6")
    kept = meta_gradient_exact(cmdp, logits, u, lambda_, lambda_, form="alg4")
    assert np.max(np.abs(full - kept)) > 1e-3
    assert np.sum(full * kept) > 0


def test_paper_q_form_of_the_qbar_term_is_not_the_derivative():
    """
    Eq. (6) as printed multiplies by Q^{pi^tau}; for the eta^-1 grad Qbar term that is not the
    derivative (the softmax Jacobian removes per-state constants in the ADAPTED logits, so V^{pi^tau}
    does not cancel there). The advantage form above is exact; this documents the discrepancy.
    """
    from sb3_safemeta.tabular.exact import _action_value_gradient, softmax_policy

    cmdp, logits, u, lambda_ = instance(1)
    numeric = central_differences(lambda phi: cmdp.J(adapted_policy(cmdp, phi, u, lambda_, lambda_)), logits)
    eta = lambda_ + (1 - cmdp.gamma) * np.sum(u) * lambda_
    adapted = adapted_policy(cmdp, logits, u, lambda_, lambda_)
    evaluation = cmdp.evaluate(adapted)
    outer_q = evaluation.state_visitation[:, None] * adapted * evaluation.Q / (1 - cmdp.gamma)
    meta = softmax_policy(logits)
    meta_evaluation = cmdp.evaluate(meta)
    grad_q = _action_value_gradient(cmdp, meta, meta_evaluation.Q, meta_evaluation.V)
    for i in range(cmdp.n_costs):
        grad_q -= u[i] * _action_value_gradient(cmdp, meta, meta_evaluation.Qc[i], meta_evaluation.Vc[i])
    q_form = outer_q + np.einsum("sa,satb->tb", outer_q, grad_q) / eta

    def without_state_constants(gradient):
        return gradient - gradient.mean(axis=1, keepdims=True)

    assert np.max(np.abs(without_state_constants(q_form) - without_state_constants(numeric))) > 10 * np.max(np.abs(numeric))
