"""What the tests of the algorithms share: the task family, probes, logs, and the five algorithms on tiny budgets."""

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta import MAMLCostPenalty, MetaCPO, MetaCRPO, SafeAdapter, SafeMetaDual
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm

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


class StartZoneCost(gym.Wrapper):
    """Cost 1 per step within 0.5 of the origin, where every episode starts: unavoidable, but reducible by leaving."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(np.linalg.norm(observation) < 0.5)
        return observation, reward, terminated, truncated, info


class DiscreteMoves(gym.ActionWrapper):
    """The point-navigation family with 5 discrete actions: stay, or full speed along +x, -x, +y, -y."""

    MOVES = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=np.float32)

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Discrete(len(self.MOVES))

    def action(self, action):
        return self.MOVES[int(action)]


# ---------------------------------------------------------------------------------------------- the five algorithms
@dataclass
class AlgorithmCase:
    """
    One algorithm as the parametrised tests (tests/test_run.py, tests/test_save_load.py) run it, on tiny budgets.

    :param cls: the algorithm class
    :param kwargs: constructor arguments of a tiny run (one iteration: ``steps`` environment steps at most)
    :param custom: non-default hyper-parameters that a save/load round trip must keep
    :param saved: their values as attributes of the loaded model (default: ``custom``)
    :param state: attributes set after training, before saving, that the zip must keep
    :param logged: keys every iteration's log must have
    """

    cls: type[BaseAlgorithm]
    kwargs: dict[str, Any]
    custom: dict[str, Any] = field(default_factory=dict)
    saved: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    logged: tuple[str, ...] = ()

    @property
    def is_meta(self) -> bool:
        return issubclass(self.cls, OnPolicyMetaAlgorithm)

    @property
    def steps(self) -> int:
        """Environment steps of one iteration (one rollout for SafeAdapter; a meta-iteration spends at most this many)."""
        rollouts = 1 if not self.is_meta else self.kwargs["meta_batch_size"] * self.kwargs.get("n_inner_steps", 2)
        return rollouts * self.kwargs["n_steps"] * N_ENVS

    def __str__(self) -> str:
        return self.cls.__name__


ALGORITHM_CASES = [
    AlgorithmCase(
        SafeAdapter,
        dict(cost_limit=10.0, n_steps=200, n_critic_epochs=1, fit_steps=10, n_dual_steps=8),
        custom=dict(lambda_=2.0, lambda_c=[3.0], delta_c=0.5),
        saved=dict(lambda_=2.0, lambda_c=[3.0], delta_c=0.5, cost_limit=np.array([10.0])),
        state=dict(dual_multipliers=np.array([0.25])),
        logged=("rollout/ep_cost_mean", "rollout/ep_rew_mean"),  # SB3 dumps before train(): train/* come one dump later
    ),
    AlgorithmCase(
        SafeMetaDual,
        dict(cost_limit=10.0, meta_batch_size=2, n_steps=100, fit_steps=5, n_dual_steps=5),
        custom=dict(
            lambda_=2.0, lambda_c=[3.0], delta_c=0.5, target_kl=0.005, crpo_rule="mean", fit_scope="head", cost_limit=7.0
        ),
        saved=dict(
            lambda_=2.0,
            lambda_c=[3.0],
            delta_c=0.5,
            target_kl=0.005,
            crpo_rule="mean",
            fit_scope="head",
            cost_limit=np.array([7.0]),
            meta_batch_size=2,
            n_steps=100,
            fit_steps=5,
            n_dual_steps=5,
            advantage_estimator="mc",
        ),
        logged=("train/improvement", "meta/meta_policy_return"),
    ),
    AlgorithmCase(
        MAMLCostPenalty,
        dict(cost_limit=10.0, meta_batch_size=2, n_steps=100),
        custom=dict(cost_penalty=2.5, penalty="linear", inner_lr=0.05, target_kl=0.005, normalize_advantage=False),
        saved=dict(cost_penalty=np.array([2.5]), penalty="linear", inner_lr=0.05, target_kl=0.005, normalize_advantage=False),
        logged=("train/improvement", "meta/meta_policy_return", "meta/adaptation_kl"),
    ),
    AlgorithmCase(
        MetaCPO,
        dict(cost_limit=10.0, meta_batch_size=2, n_steps=100),
        custom=dict(inner_kl=0.02, target_kl=0.005, meta_gradient="first_order", meta_step="trpo", normalize_advantage=False),
        logged=("train/improvement", "meta/meta_policy_return", "meta/cpo_recovery"),
    ),
    AlgorithmCase(
        MetaCRPO,
        dict(cost_limit=10.0, meta_batch_size=2, n_inner_steps=2, n_steps=100),
        custom=dict(eta_tol=0.5, meta_lr=0.5, meta_update="batch", adapt_kl=0.005, cost_limit=7.0),
        saved=dict(
            eta_tol=np.array([0.5]),
            meta_update="batch",
            meta_lr=0.5,
            adapt_kl=0.005,
            cost_limit=np.array([7.0]),
            n_inner_steps=2,
            meta_batch_size=2,
        ),
        logged=("meta/update_norm", "meta/meta_policy_return"),
    ),
]
META_CASES = [case for case in ALGORITHM_CASES if case.is_meta]


def assert_same_value(actual: Any, expected: Any, name: str = "") -> None:
    """Equal values of the same kind: arrays with the same shape and entries, anything else by ``==`` and type."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{name}: {actual!r} is not an array"
        np.testing.assert_array_equal(actual, expected, err_msg=name, strict=True)
    else:
        assert type(actual) is type(expected) and actual == expected, f"{name}: {actual!r} != {expected!r}"
