"""The TRPO step against its closed form on a quadratic KL and a linear surrogate."""

import numpy as np
import pytest
import torch as th
from torch import nn

from sb3_safemeta.common.trust_region import trust_region_step


def quadratic_problem(seed: int, dim: int = 5):
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(dim, dim))
    fisher = th.as_tensor(root @ root.T + dim * np.eye(dim))
    gradient = th.as_tensor(rng.normal(size=dim))
    start = th.as_tensor(rng.normal(size=dim))
    parameter = nn.Parameter(start.clone())

    def kl():
        delta = parameter - start
        return 0.5 * delta @ fisher @ delta

    def surrogate():
        return gradient @ (parameter - start)

    return fisher, gradient, start, parameter, kl, surrogate


@pytest.mark.parametrize("seed", range(4))
def test_step_is_the_natural_gradient_scaled_to_the_kl_bound(seed):
    fisher, gradient, start, parameter, kl, surrogate = quadratic_problem(seed)
    max_kl = 1e-3
    result = trust_region_step([parameter], surrogate, kl, max_kl=max_kl, cg_max_steps=20, cg_damping=0.0)
    natural = th.linalg.solve(fisher, gradient)
    expected = start + np.sqrt(2 * max_kl / float(gradient @ natural)) * natural
    assert result.success and result.step_fraction == 1.0
    np.testing.assert_allclose(parameter.detach().numpy(), expected.numpy(), rtol=1e-6, atol=1e-9)
    assert result.kl == pytest.approx(max_kl, rel=1e-6)


def test_line_search_restores_parameters_when_no_step_improves():
    _, gradient, start, parameter, kl, _ = quadratic_problem(0)

    def misleading_surrogate():
        # gradient says "go up" but any finite step loses (a sharp concave bump)
        delta = parameter - start
        return gradient @ delta - 1e6 * (delta @ delta)

    result = trust_region_step([parameter], misleading_surrogate, kl, max_kl=1e-3, max_backtracks=3)
    assert not result.success
    np.testing.assert_array_equal(parameter.detach().numpy(), start.numpy())
