"""
MAMLCostPenalty's two penalties: on exact tabular CMDPs the inner step moves the parameters by alpha (1 - gamma)
times the gradient of J - w max(0, Jc - d) ("violation", default) or of J - w Jc ("linear"), both by central
differences of the EXACT J and Jc (away from the kink Jc = d); and the algorithm's logs and options.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from meta_helpers import make_env, recording

from sb3_safemeta.common.functional_policy import actor_parameter_dict
from sb3_safemeta.maml_cost_penalty import MAMLCostPenalty
from sb3_safemeta.maml_cost_penalty.maml_cost_penalty import inner_step, penalty_weights
from sb3_safemeta.tabular import random_cmdp

from tabular_helpers import all_pairs, central_differences, flat_parameters, probabilities, random_tabular_policy  # isort: skip

WEIGHT = 0.7
ALPHA = 1.0


@pytest.mark.parametrize("side", ["above", "below"])
@pytest.mark.parametrize("form", ["violation", "linear"])
@pytest.mark.parametrize("seed", range(3))
def test_inner_step_is_the_gradient_of_the_penalised_objective(seed, form, side):
    cmdp = random_cmdp(4, 3, 1, gamma=0.8, seed=seed)
    policy = random_tabular_policy(seed, 4, 3, th.float64)
    start = flat_parameters(policy)
    pi = probabilities(start, 4, 3)
    jc = float(cmdp.Jc(pi)[0])
    limit = jc - 0.3 if side == "above" else jc + 0.3  # Jc above / below d, away from the kink

    def objective(flat: np.ndarray) -> float:
        p = probabilities(flat, 4, 3)
        cost = float(cmdp.Jc(p)[0])
        penalty = WEIGHT * (max(0.0, cost - limit) if form == "violation" else cost)
        return float(cmdp.J(p)) - penalty

    expected = (1 - cmdp.gamma) * central_differences(objective, start, h=1e-6)
    evaluation = cmdp.evaluate(pi)
    weights = penalty_weights(np.array([WEIGHT]), np.array([jc]), np.array([limit]), form)
    assert weights[0] == (0.0 if (form, side) == ("violation", "below") else WEIGHT)
    advantages = evaluation.A - weights[0] * evaluation.Ac[0]
    observations, actions = all_pairs(4, 3, th.float64)
    adapted = inner_step(
        policy, actor_parameter_dict(policy), observations, actions, th.as_tensor(advantages.ravel()), ALPHA,
        weights=th.as_tensor((evaluation.state_visitation[:, None] * pi).ravel()), create_graph=False,
    )  # fmt: skip
    step = np.concatenate([value.detach().numpy().ravel() for value in adapted.values()]) - start
    np.testing.assert_allclose(step / ALPHA, expected, rtol=1e-5, atol=1e-7 * np.abs(expected).max())


def test_penalty_weights_per_channel_and_bad_form():
    w, cost, limit = np.array([1.0, 2.0, 3.0]), np.array([5.0, 1.0, 2.0]), np.array([4.0, 1.0, 3.0])
    np.testing.assert_array_equal(penalty_weights(w, cost, limit, "violation"), [1, 0, 0])  # at d: no penalty
    np.testing.assert_array_equal(penalty_weights(w, cost, limit, "linear"), w)
    with pytest.raises(ValueError, match="penalty"):
        penalty_weights(w, w, w, "quadratic")


@pytest.mark.parametrize("penalty,cost_limit,penalised", [("violation", 1e6, 0), ("linear", 1e6, 2)])
def test_algorithm_penalises_only_violating_tasks_by_default(penalty, cost_limit, penalised):
    """d huge: no task violates, so the "violation" loss carries no penalty; "linear" penalises every task."""
    model = MAMLCostPenalty("MlpPolicy", make_env(), seed=0, penalty=penalty, cost_limit=cost_limit, meta_batch_size=2,
                            n_steps=100)  # fmt: skip
    writer = recording(model)
    model.learn(2 * 2 * 100 * 2)
    record = writer.records[0]
    assert record["meta/penalised_tasks"] == penalised
    assert "meta/cost_step" not in record  # no constant key: MAML has no cost step
    with pytest.raises(ValueError, match="penalty"):
        MAMLCostPenalty("MlpPolicy", make_env(n_envs=1), penalty="quadratic")
