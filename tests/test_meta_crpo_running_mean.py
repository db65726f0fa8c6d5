"""
meta-CRPO's meta-policy as the minimiser of the average distance to the task policies of ALL tasks seen so far
(``meta_update="running_mean"``): the closed form (the mean) against a numerical minimiser, the algorithm's phi
against the mean of every task policy it produced, and a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from meta_helpers import assert_same_parameters, make_env, recording
from scipy.optimize import minimize
from torch.nn.utils import parameters_to_vector

import sb3_safemeta.meta_crpo.meta_crpo as meta_crpo_module
from sb3_safemeta.meta_crpo import MetaCRPO
from sb3_safemeta.meta_crpo.meta_crpo import running_mean_update

SMALL: dict[str, Any] = dict(cost_limit=10.0, meta_batch_size=2, n_inner_steps=2, n_steps=100)
STEPS_PER_ITERATION = 2 * 2 * 100 * 2


def test_running_mean_is_the_minimiser_of_the_average_distance_to_every_task_seen():
    """Batches of 3, 1 and 4 vectors: the running mean equals L-BFGS's minimiser of mean_j 1/2 ||phi - theta_j||^2."""
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 6)) for n in (3, 1, 4)]
    mean, n_seen = None, 0
    seen: list[np.ndarray] = []
    for batch in batches:
        mean, n_seen = running_mean_update(mean, n_seen, [th.as_tensor(theta, dtype=th.float32) for theta in batch])
        seen.extend(th.as_tensor(theta, dtype=th.float32).double().numpy() for theta in batch)
        everything = np.stack(seen)

        def average_distance(phi: np.ndarray, thetas: np.ndarray = everything) -> tuple[float, np.ndarray]:
            return 0.5 * ((phi - thetas) ** 2).sum(axis=1).mean(), (phi - thetas).mean(axis=0)

        result = minimize(average_distance, np.zeros(6), jac=True, method="L-BFGS-B", options=dict(gtol=1e-12))
        assert n_seen == len(seen)
        np.testing.assert_allclose(mean, result.x, atol=1e-8)
        np.testing.assert_allclose(mean, everything.mean(axis=0), rtol=1e-14, atol=1e-15)
    # NOT the mean of the last batch alone
    assert np.abs(mean - batches[-1].mean(axis=0)).max() > 0.1
    with pytest.raises(ValueError, match="at least one"):
        running_mean_update(mean, n_seen, [])
    with pytest.raises(ValueError, match="shape"):
        running_mean_update(mean, n_seen, [th.zeros(5)])
    with pytest.raises(ValueError, match="n_seen"):
        running_mean_update(None, 3, [th.zeros(6)])


def test_meta_policy_is_the_mean_of_every_task_policy_produced(monkeypatch):
    """After three meta-iterations of two tasks, phi is the mean of the six task policies (not of the last two)."""
    model = MetaCRPO("MlpPolicy", make_env(), seed=0, **SMALL)
    assert model.meta_update == "running_mean" and model.n_inner_steps == 2
    captured: list[np.ndarray] = []
    update = meta_crpo_module.running_mean_update

    def spy(mean, n_seen, task_parameters):
        captured.extend(theta.double().numpy().copy() for theta in task_parameters)
        return update(mean, n_seen, task_parameters)

    monkeypatch.setattr(meta_crpo_module, "running_mean_update", spy)
    writer = recording(model)
    model.learn(3 * STEPS_PER_ITERATION)
    assert len(captured) == 6 and model.n_seen_tasks == 6
    phi = parameters_to_vector(model.policy.parameters()).detach().double().numpy()
    everything = np.stack(captured)
    np.testing.assert_allclose(model.task_parameter_mean, everything.mean(axis=0), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(phi, everything.mean(axis=0).astype(np.float32))
    assert np.abs(phi - everything[-2:].mean(axis=0)).max() > 1e-4  # the last batch alone gives another phi
    assert [record["meta/seen_tasks"] for record in writer.records] == [2, 4, 6]
    for record in writer.records:  # the adapted-policy keys of every meta-learner (second CRPO step's rollout)
        for key in ("meta/adapted_return", "meta/adapted_cost_max", "meta/adapted_cost_mean", "meta/adaptation_kl",
                    "train/improvement"):  # fmt: skip
            assert np.isfinite(record[key]), key
        assert record["meta/adaptation_kl"] > 0


def test_resumed_run_is_bit_identical(tmp_path):
    """2 meta-iterations, save, load, 1 more == 3 uninterrupted: the running mean and its count are in the zip."""
    uninterrupted = MetaCRPO("MlpPolicy", make_env(seed=5), seed=5, **SMALL)
    uninterrupted.learn(3 * STEPS_PER_ITERATION)

    first = MetaCRPO("MlpPolicy", make_env(seed=5), seed=5, **SMALL)
    first.learn(2 * STEPS_PER_ITERATION)
    first.save(tmp_path / "crpo.zip")
    resumed = MetaCRPO.load(tmp_path / "crpo.zip", env=make_env(seed=5))
    assert resumed.n_seen_tasks == 4
    np.testing.assert_array_equal(resumed.task_parameter_mean, first.task_parameter_mean)
    resumed.learn(STEPS_PER_ITERATION, reset_num_timesteps=False)
    assert resumed.meta_iterations == 3 and resumed.n_seen_tasks == 6
    assert_same_parameters(uninterrupted, resumed)
    np.testing.assert_array_equal(resumed.task_parameter_mean, uninterrupted.task_parameter_mean)


def test_batch_meta_update_stays_an_option_and_bad_values_are_named():
    model = MetaCRPO("MlpPolicy", make_env(), seed=0, meta_update="batch", **SMALL)
    model.learn(STEPS_PER_ITERATION)
    assert model.task_parameter_mean is None and model.n_seen_tasks == 0
    with pytest.raises(ValueError, match="meta_update"):
        MetaCRPO("MlpPolicy", make_env(n_envs=1), meta_update="median", **SMALL)
