"""What the tests of the meta-learners (SafeMetaDual, MAMLCostPenalty, MetaCRPO) share: the task family, probes, logs."""

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger

import sb3_safemeta.envs  # noqa: F401  (registers the task families)

ENV_ID = "SafeMetaPointNav-v0"  # 100-step episodes
N_ENVS = 2


def make_env(seed: int = 0, n_envs: int = N_ENVS, **kwargs: Any):
    return make_vec_env(ENV_ID, n_envs=n_envs, seed=seed, **kwargs)


def observations(n: int = 64) -> np.ndarray:
    """Fixed probe states of the built-in family."""
    return np.random.default_rng(1).uniform(-2, 2, size=(n, 2)).astype(np.float32)


class RecordingWriter(KVWriter):
    """Keeps every log dump (one per meta-iteration with ``log_interval=1``)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.records.append(dict(key_values))

    def close(self) -> None:
        pass


def recording(model: BaseAlgorithm) -> RecordingWriter:
    writer = RecordingWriter()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    return writer


def assert_same_parameters(model_a: BaseAlgorithm, model_b: BaseAlgorithm) -> None:
    state_a, state_b = model_a.policy.state_dict(), model_b.policy.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert th.equal(state_a[key], state_b[key]), f"{key}: max |a - b| {(state_a[key] - state_b[key]).abs().max()}"


class PendulumWithCost(gym.Wrapper):
    """A plain Gymnasium env that reports a cost but is no task distribution."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = 0.0
        return observation, reward, terminated, truncated, info
