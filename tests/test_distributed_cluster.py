"""
A meta-learner on a simulated two-node Ray cluster (``ray.cluster_utils.Cluster``: a head and a worker node, one CPU
each, every process on 127.0.0.1): the two workers land on different nodes, and the meta-iterations and the
meta-test give what the in-process run gives. Its own module: the cluster is a Ray session of its own.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from meta_helpers import assert_same_parameters, make_env
from test_distributed import SMALL, STEPS_PER_ITERATION, ray_environment, require_ray

from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.callbacks import StopTrainingOnMetaIterations


@pytest.fixture(scope="module")
def two_node_cluster():
    saved = {key: os.environ.get(key) for key in ray_environment()}
    os.environ.update(ray_environment())  # before Ray is imported and its processes start
    ray = require_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train(n_workers: int, **kwargs: Any) -> SafeMetaDual:
    model = SafeMetaDual("MlpPolicy", make_env(seed=5), seed=5, n_workers=n_workers, **SMALL, **kwargs)
    model.learn(10 * STEPS_PER_ITERATION, callback=StopTrainingOnMetaIterations(2))
    return model


def test_two_nodes_give_the_in_process_result(two_node_cluster):
    ray = two_node_cluster
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert len(nodes) == 2 and {node["NodeManagerAddress"] for node in nodes} == {"127.0.0.1"}

    reference = train(0)
    model = train(2, ray_address="auto")  # joins the running cluster, as on a real one
    assert_same_parameters(reference, model)
    assert model.num_timesteps == reference.num_timesteps
    pool = model._task_pool
    node_ids = ray.get([actor.node_id.remote() for actor in pool.actors])
    assert len(set(node_ids)) == 2  # one worker per node (one CPU each)

    expected = reference.meta_test(n_tasks=2, n_adapt_steps=1)
    actual = model.meta_test(n_tasks=2, n_adapt_steps=1)
    np.testing.assert_array_equal(expected.returns, actual.returns)
    np.testing.assert_array_equal(expected.costs, actual.costs)
    model.close_workers()
