"""
Task-parallel meta-iterations and meta-tests on Ray workers (sb3_safemeta.common.distributed): ``n_workers`` in
{0, 1, 2} gives bit-identical parameters and logs (SafeMetaDual, MAMLCostPenalty) and the same meta-test report;
a worker that dies or raises names the task and the run resumes from its checkpoint; an environment that cannot
be rebuilt on a worker, or Ray missing, is a clear error before any worker starts.

One local Ray instance (num_cpus=2, loopback only) serves the whole module; a simulated two-node cluster is in
test_distributed_cluster.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch as th
from distributed_envs import FAULTY_ID, power
from meta_helpers import ENV_ID, N_ENVS, PendulumWithCost, assert_same_parameters, make_env, recording
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safemeta import MAMLCostPenalty, MetaCPO, MetaCRPO, SafeMetaDual
from sb3_safemeta.common import distributed
from sb3_safemeta.common.callbacks import MetaCheckpointCallback, StopTrainingOnMetaIterations
from sb3_safemeta.common.distributed import EnvFactory, TaskWorkerError, unit_seed

# one rollout = n_steps * n_envs = 200 steps = 2 episodes of 100 steps
SMALL: dict[str, Any] = dict(cost_limit=10.0, meta_batch_size=3, n_steps=100, fit_steps=5, n_dual_steps=5)
STEPS_PER_ITERATION = SMALL["meta_batch_size"] * 2 * SMALL["n_steps"] * N_ENVS
TESTS = pathlib.Path(__file__).resolve().parent


def ray_environment() -> dict[str, str]:
    """Loopback only, no token authentication, workers at our priority, importing this checkout and the tests' modules."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_worker_niceness": str(os.getpriority(os.PRIO_PROCESS, 0)),  # Ray's default 15 starves them on a busy machine
        "PYTHONPATH": path,
    }


def require_ray() -> Any:
    """Ray, or a skip (a failure when CI asks for the Ray tests with SB3_SAFEMETA_REQUIRE_RAY=1)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("SB3_SAFEMETA_REQUIRE_RAY") == "1":
            raise
        pytest.skip("Ray is not installed (pip install 'sb3_safemeta[distributed]')")
    return ray


@pytest.fixture(scope="module")
def ray_session():
    saved = {key: os.environ.get(key) for key in ray_environment()}
    os.environ.update(ray_environment())  # before Ray is imported (it reads them then) and its processes start
    ray = require_ray()
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never another session's Ray
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train(cls: type, n_workers: int, iterations: int = 2, env: Any = None, **kwargs: Any):
    model = cls("MlpPolicy", env if env is not None else make_env(seed=3), seed=3, n_workers=n_workers, **kwargs)
    writer = recording(model)
    model.learn(10 * STEPS_PER_ITERATION, callback=StopTrainingOnMetaIterations(iterations))
    return model, writer.records


def assert_same_logs(log_a: list[dict[str, Any]], log_b: list[dict[str, Any]]) -> None:
    assert len(log_a) == len(log_b)
    for record_a, record_b in zip(log_a, log_b, strict=True):
        for key, value in record_a.items():
            if not key.startswith(("time/", "distributed/")):
                assert record_b[key] == value, key


# ---------------------------------------------------------------------------------------------- without Ray
def test_unit_seeds_depend_on_iteration_task_and_unit_only():
    seeds = {unit_seed(s, i, u) for s in (0, 1) for i in (0, 1, 2) for u in ("meta_rollout", "adapt")}
    assert len(seeds) == 12 and all(0 <= seed < 2**31 - 1 for seed in seeds)
    assert unit_seed(5, 2, "adapt") == unit_seed(5, 2, "adapt")


def test_importing_the_package_and_the_main_job_never_import_ray():
    code = "import sys, sb3_safemeta, sb3_safemeta.__main__; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=TESTS.parent)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(n_workers=-1), ValueError, "n_workers must be >= 0"),
        (dict(n_workers=1.5), TypeError, "n_workers must be an int"),
        (dict(n_workers=2, ray_address=6379), TypeError, "ray_address"),
        (dict(n_workers=2, advantage_estimator="gae"), ValueError, "n_workers > 0 needs advantage_estimator"),
    ],
)
def test_bad_worker_arguments_name_the_parameter(kwargs, error, match):
    with pytest.raises(error, match=match):
        SafeMetaDual("MlpPolicy", make_env(), **{**SMALL, **kwargs})


def test_meta_crpo_accepts_gae_with_workers():
    assert MetaCRPO("MlpPolicy", make_env(), n_workers=2, advantage_estimator="gae").n_workers == 2


@pytest.mark.parametrize(
    "env,match",
    [
        (lambda: VecNormalize(make_env()), "VecNormalize"),
        (
            lambda: make_vec_env(ENV_ID, n_envs=1, wrapper_class=PendulumWithCost),
            r"PendulumWithCost > Monitor > TimeLimit.*cannot be recreated",
        ),
    ],
)
def test_an_env_that_cannot_be_rebuilt_is_a_clear_error(env, match):
    with pytest.raises(ValueError, match=rf"cannot rebuild .*{match}"):
        EnvFactory.from_vec_env(env())


def test_the_env_factory_rebuilds_the_same_environment():
    env = make_vec_env(ENV_ID, n_envs=2, env_kwargs=None)
    rebuilt = EnvFactory.from_vec_env(env).make()
    env.seed(7)
    rebuilt.seed(7)
    np.testing.assert_array_equal(env.reset(), rebuilt.reset())
    actions = np.full((2, 2), 0.3, dtype=np.float32)
    for _ in range(120):  # across an episode end (100 steps)
        expected, actual = env.step(actions), rebuilt.step(actions)
        for a, b in zip(expected[:3], actual[:3], strict=True):
            np.testing.assert_array_equal(a, b)
        assert [info["cost"] for info in expected[3]] == [info["cost"] for info in actual[3]]


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    def missing() -> None:
        raise ImportError(distributed.INSTALL_HINT)

    monkeypatch.setattr(distributed, "_require_ray", missing)
    model = SafeMetaDual("MlpPolicy", make_env(), n_workers=2, **SMALL)
    with pytest.raises(ImportError, match=r"pip install 'sb3_safemeta\[distributed\]'"):
        model.learn(STEPS_PER_ITERATION)


# ---------------------------------------------------------------------------------------------- on Ray
def test_safe_meta_dual_is_bit_identical_for_0_1_2_workers(ray_session):
    reference, reference_log = train(SafeMetaDual, 0, iterations=3, **SMALL)
    assert {record["meta/cost_step"] for record in reference_log} == {0, 1}  # both branches of Algorithm 2
    for n_workers in (1, 2):
        model, log = train(SafeMetaDual, n_workers, iterations=3, **SMALL)
        assert_same_parameters(reference, model)
        assert model.num_timesteps == reference.num_timesteps
        assert_same_logs(reference_log, log)
        assert log[-1]["distributed/bytes_received"] > 0
        assert set(model._task_pool.node_ips()) == {"127.0.0.1"}  # loopback only
        model.close_workers()


def test_maml_cost_penalty_is_bit_identical_for_0_and_2_workers(ray_session):
    kwargs = dict(cost_limit=10.0, meta_batch_size=3, n_steps=100)
    reference, reference_log = train(MAMLCostPenalty, 0, **kwargs)
    model, log = train(MAMLCostPenalty, 2, **kwargs)
    assert_same_parameters(reference, model)
    assert_same_logs(reference_log, log)
    model.close_workers()


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (MetaCPO, dict(cost_limit=10.0, meta_batch_size=3, n_steps=100)),
        (MetaCRPO, dict(cost_limit=10.0, meta_batch_size=3, n_inner_steps=2, n_steps=100)),
        (MetaCRPO, dict(cost_limit=10.0, meta_batch_size=3, n_inner_steps=2, n_steps=100, advantage_estimator="gae")),
    ],
    ids=["MetaCPO", "MetaCRPO", "MetaCRPO-gae"],
)
def test_the_other_baselines_are_bit_identical_for_0_and_2_workers(ray_session, cls, kwargs):
    """
    Bit-identical, except MetaCRPO with "gae": on an AMD EPYC machine its second meta-iteration differed by float32
    rounding between the driver and a worker (a critic loss 1e-7 apart relative, parameters up to 3e-6 apart after
    2 meta-iterations; two runs in one process are identical). There its 2 meta-iterations must agree to 1e-4
    relative: a stale critic, phi or seed on the worker moves them by far more (docs/guide/distributed.md).
    """
    gae = kwargs.get("advantage_estimator") == "gae"
    iterations = 2 if gae else 3  # the rounding difference grows with every meta-iteration (KL 2e-4 apart at the 3rd)
    reference, reference_log = train(cls, 0, iterations=iterations, **kwargs)
    model, log = train(cls, 2, iterations=iterations, **kwargs)
    if gae:
        for key, value in reference.policy.state_dict().items():
            th.testing.assert_close(model.policy.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)
        assert len(reference_log) == len(log)
        for record_a, record_b in zip(reference_log, log, strict=True):
            for key, value in record_a.items():
                if not key.startswith(("time/", "distributed/")):
                    assert record_b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    else:
        assert_same_parameters(reference, model)
        assert_same_logs(reference_log, log)
    model.close_workers()


def test_meta_test_report_is_identical_with_workers(ray_session):
    model = SafeMetaDual("MlpPolicy", make_env(seed=4), seed=4, n_workers=2, **SMALL)
    kwargs = dict(n_tasks=3, n_adapt_steps=2, n_eval_episodes=2)  # with independent evaluation episodes
    in_process = model.meta_test(**kwargs, n_workers=0)
    on_workers = model.meta_test(**kwargs)  # the model's n_workers
    for name in ("returns", "costs", "cost_limits", "eval_returns", "eval_costs", "eval_cost_bounds"):
        expected, actual = getattr(in_process, name), getattr(on_workers, name)
        assert (expected is None) == (actual is None), name
        if expected is not None:
            np.testing.assert_array_equal(expected, actual, err_msg=name)
    assert in_process.tasks == on_workers.tasks and in_process.label == on_workers.label
    assert in_process.eval_returns is not None and in_process.n_eval_episodes == on_workers.n_eval_episodes == 2
    assert len(set(in_process.returns[:, 0])) == 3  # three different tasks, three different rollouts
    # an environment object cannot travel to the workers
    with pytest.raises(ValueError, match=r"cannot send \['eval_env'\]"):
        model.meta_test(**kwargs, eval_env=make_env())
    model.close_workers()


def faulty_env(fail_at: int, mode: str = "kill"):
    return make_vec_env(FAULTY_ID, n_envs=N_ENVS, seed=3, env_kwargs=dict(driver_pid=os.getpid(), fail_at=fail_at, mode=mode))


def test_a_killed_worker_names_the_task_and_the_run_resumes_from_its_checkpoint(ray_session, tmp_path):
    # on a worker, a sub-environment's set_task calls: 1 in its constructor, then 1 per rollout; worker 0 runs
    # tasks 0 and 2 of the batch, 1-2 rollouts each: the 6th call comes in the 2nd or 3rd meta-iteration
    checkpoint = MetaCheckpointCallback(save_freq=1, save_path=tmp_path)
    model = SafeMetaDual("MlpPolicy", faulty_env(fail_at=6), seed=3, n_workers=2, **SMALL)
    with pytest.raises(TaskWorkerError, match=r"worker \d, running unit '(meta_rollout|adapt)' of task \d .*died"):
        model.learn(10 * STEPS_PER_ITERATION, callback=[checkpoint, StopTrainingOnMetaIterations(4)])
    assert model._task_pool is None  # the dead workers are dropped
    done = model.meta_iterations
    assert 1 <= done < 4 and checkpoint.latest_path.exists()

    uninterrupted, _ = train(SafeMetaDual, 0, iterations=4, env=faulty_env(fail_at=0), **SMALL)
    resumed = SafeMetaDual.load(checkpoint.latest_path, env=faulty_env(fail_at=0))
    assert resumed.meta_iterations == done and resumed.n_workers == 2
    resumed.learn(10 * STEPS_PER_ITERATION, reset_num_timesteps=False, callback=StopTrainingOnMetaIterations(4))
    assert_same_parameters(uninterrupted, resumed)
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    resumed.close_workers()


def test_an_env_exception_on_a_worker_names_the_task(ray_session):
    model = SafeMetaDual("MlpPolicy", faulty_env(fail_at=2, mode="raise"), seed=3, n_workers=2, **SMALL)
    with pytest.raises(TaskWorkerError, match=r"unit 'meta_rollout' of task \d .*RuntimeError: simulated failure"):
        model.learn(STEPS_PER_ITERATION)


def test_map_runs_runs_independent_runs_in_order(ray_session):
    assert distributed.map_runs(power, [dict(base=2, exp=k) for k in range(5)]) == [1, 2, 4, 8, 16]
    with pytest.raises(TaskWorkerError, match=r"run 1 \(\{'base': 0, 'exp': -1\}\) failed"):
        distributed.map_runs(power, [dict(base=2, exp=1), dict(base=0, exp=-1)], max_retries=0)


def test_main_job_with_workers_reports_what_it_reports_in_process(ray_session, tmp_path):
    from sb3_safemeta.__main__ import main

    tiny = ["--meta-iterations", "2", "--meta-batch-size", "2", "--n-envs", "2", "--n-steps", "100",
            "--test-tasks", "2", "--adapt-steps", "1", "--no-baseline"]  # fmt: skip
    in_process = main([*tiny, "--out", str(tmp_path / "in_process")])
    on_workers = main([*tiny, "--workers", "2", "--out", str(tmp_path / "workers")])
    np.testing.assert_array_equal(in_process.returns, on_workers.returns)
    np.testing.assert_array_equal(in_process.costs, on_workers.costs)

    def saved(folder: str) -> dict:
        payload = json.loads((tmp_path / folder / "meta_test.json").read_text())
        assert payload.pop("eval_seconds") > 0  # times, not results: they differ between any two runs
        assert payload.pop("adapt_seconds") > 0
        return payload

    assert saved("in_process") == saved("workers")
