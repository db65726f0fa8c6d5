"""
Save and load for the five algorithms, as SB3's ``tests/test_save_load.py`` does for its own: after a round trip
the policy predicts the same actions and cost values, every parameter, counter and hyper-parameter is kept, the
meta-learners' task sampler continues where it was, and the loaded model keeps learning. Loading without an
environment gives a model that predicts (SB3 allows it) and says what is missing for a meta-test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from meta_helpers import (
    ALGORITHM_CASES,
    AlgorithmCase,
    assert_same_parameters,
    assert_same_value,
    make_env,
    observations,
)


def cost_values(model) -> np.ndarray:
    with th.no_grad():
        return model.policy.predict_cost_values(th.as_tensor(observations())).numpy()


@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_save_load_round_trip(tmp_path, case: AlgorithmCase):
    model = case.cls("MlpPolicy", make_env(), seed=0, **{**case.kwargs, **case.custom})
    model.learn(1)  # one iteration
    for name, value in case.state.items():
        setattr(model, name, value)
    before, _ = model.predict(observations(), deterministic=True)
    model.save(tmp_path / "model.zip")

    loaded = case.cls.load(tmp_path / "model.zip", env=make_env())
    after, _ = loaded.predict(observations(), deterministic=True)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(cost_values(loaded), cost_values(model))
    assert_same_parameters(model, loaded)
    assert loaded.num_timesteps == model.num_timesteps > 0
    expected = {**(case.custom if case.saved is None else case.saved), **case.state}
    for name, value in expected.items():
        assert_same_value(getattr(loaded, name), value, name)
    if case.is_meta:
        assert loaded.meta_iterations == model.meta_iterations == 1
        # the task sampler continues where it was (not from the seed again)
        assert loaded.task_rng.bit_generator.state == model.task_rng.bit_generator.state

    loaded.learn(1, reset_num_timesteps=False)  # and it keeps learning
    assert loaded.num_timesteps > model.num_timesteps
    if case.is_meta:
        assert loaded.meta_iterations == 2


@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_load_without_env_predicts(tmp_path, case: AlgorithmCase):
    model = case.cls("MlpPolicy", make_env(), seed=0, **case.kwargs)
    model.save(tmp_path / "model.zip")
    loaded = case.cls.load(tmp_path / "model.zip")  # no env: SB3 allows it for predict()
    np.testing.assert_array_equal(
        loaded.predict(observations(), deterministic=True)[0], model.predict(observations(), deterministic=True)[0]
    )
    if case.is_meta:
        with pytest.raises(ValueError, match="meta_test needs the task distribution"):
            loaded.meta_test(n_tasks=1, n_adapt_steps=0)
        loaded.set_env(make_env())
        assert loaded.env is not None


@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=str)
def test_load_rejects_a_corrupt_zip(tmp_path, case: AlgorithmCase):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="zip"):
        case.cls.load(path, env=make_env())
