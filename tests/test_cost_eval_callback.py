"""
The cost-aware evaluation: on a hand-made environment whose returns and costs are known in closed form, the
callback keeps the FEASIBLE model as best model even when an infeasible one has a higher reward; the cost arrays
of ``evaluations.npz``; the episode cost in SB3's ``Monitor`` (``monitor.csv``) and in the printed episode reports;
meta-learners are evaluated after one adaptation step, at the end of a meta-iteration, without changing training.
"""

from __future__ import annotations

import csv
import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from hand_made_envs import EpisodeClockEnv
from meta_helpers import assert_same_parameters, make_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from sb3_safemeta.common.callbacks import CostEvalCallback
from sb3_safemeta.common.wrappers import EpisodeCostInfo, VecEpisodeCostReporter
from sb3_safemeta.meta_crpo import MetaCRPO

HORIZON = 10
LIMIT = 5.0


class PushEnv(EpisodeClockEnv):
    """10 steps; reward = the action a (clipped to [-1, 1]); cost 1 per step when a > 0: pushing pays but costs."""

    observation_space = gym.spaces.Box(-1, 1, (1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), dtype=np.float32)

    def step(self, action):
        self.t += 1
        a = float(np.clip(action[0], -1, 1))
        return np.zeros(1, dtype=np.float32), a, False, self.t >= HORIZON, {"cost": float(a > 0)}


def constant_policy_model(action: float) -> PPO:
    """A PPO whose deterministic action is ``action`` everywhere (zero weights, bias = action)."""
    model = PPO("MlpPolicy", make_vec_env(PushEnv, n_envs=1), n_steps=16, batch_size=16, seed=0)
    model.set_logger(configure(None, []))
    with th.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.fill_(action)
    return model


@pytest.mark.parametrize("order", ["infeasible_first", "feasible_first"])
def test_best_model_is_the_best_feasible_one(tmp_path, order):
    """
    Three policies with closed-form episode return / cost: a = 0.9 (return 9, cost 10 > d = 5: infeasible, the
    highest reward), a = -0.2 (return -2, cost 0), a = -0.5 (return -5, cost 0). best_model.zip must be a = -0.2.
    """
    model = constant_policy_model(0.0)
    callback = CostEvalCallback(
        make_vec_env(PushEnv, n_envs=1), n_eval_episodes=3, eval_freq=1, log_path=tmp_path, best_model_save_path=tmp_path,
        cost_limit=LIMIT, verbose=0,
    )  # fmt: skip
    callback.init_callback(model)
    actions = [0.9, -0.5, -0.2] if order == "infeasible_first" else [-0.5, -0.2, 0.9]
    for step, action in enumerate(actions):
        with th.no_grad():
            model.policy.action_net.bias.fill_(action)
        model.num_timesteps = 10 * (step + 1)
        assert callback.on_step()
    expected = {0.9: (9.0, 10.0), -0.2: (-2.0, 0.0), -0.5: (-5.0, 0.0)}
    data = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(data["timesteps"], [10, 20, 30])
    assert data["results"].shape == (3, 3) and data["costs"].shape == (3, 3, 1)
    for index, action in enumerate(actions):
        np.testing.assert_allclose(data["results"][index], expected[action][0], rtol=1e-6)
        np.testing.assert_allclose(data["costs"][index, :, 0], expected[action][1])
        assert bool(data["feasible"][index]) == (action < 0)
        assert data["within_limit"][index] == (0.0 if action > 0 else 1.0)
    np.testing.assert_array_equal(data["cost_limits"], LIMIT)
    best = PPO.load(tmp_path / "best_model.zip")
    assert float(best.policy.action_net.bias.detach()[0]) == pytest.approx(-0.2)  # not the higher-reward unsafe 0.9
    assert callback.best_mean_reward == pytest.approx(-2.0)


def test_no_feasible_model_writes_no_best_model(tmp_path):
    model = constant_policy_model(0.9)
    callback = CostEvalCallback(make_vec_env(PushEnv, n_envs=1), n_eval_episodes=2, eval_freq=1, log_path=tmp_path,
                                best_model_save_path=tmp_path, cost_limit=LIMIT, verbose=0)  # fmt: skip
    callback.init_callback(model)
    model.num_timesteps = 1
    callback.on_step()
    assert not (tmp_path / "best_model.zip").exists() and (tmp_path / "evaluations.npz").exists()
    with pytest.raises(ValueError, match="eval_freq"):
        CostEvalCallback(make_vec_env(PushEnv, n_envs=1), eval_freq=0)
    with pytest.raises(ValueError, match="eval_env"):
        CostEvalCallback(None, eval_freq=1).init_callback(model)


def test_monitor_records_the_episode_cost_and_the_reporter_prints_it(tmp_path, capsys):
    """Monitor(EpisodeCostInfo(env), info_keywords=("episode_cost",)): monitor.csv has the episode cost column."""
    env = Monitor(EpisodeCostInfo(PushEnv()), str(tmp_path / "run"), info_keywords=("episode_cost",))
    env.reset(seed=0)
    for action in [0.5] * 4 + [-0.5] * 6:  # cost 4, return 2 - 3 = -1
        env.step(np.array([action], dtype=np.float32))
    env.close()
    with open(tmp_path / "run.monitor.csv") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    assert len(rows) == 1
    assert float(rows[0]["episode_cost"]) == 4.0 and float(rows[0]["r"]) == pytest.approx(-1.0) and rows[0]["l"] == "10"

    venv = VecEpisodeCostReporter(make_vec_env(PushEnv, n_envs=1))
    venv.reset()
    for _ in range(HORIZON):
        venv.step(np.array([[0.3]]))
    assert venv.episode_costs == [10.0]
    assert "Episode Cost: 10.00" in capsys.readouterr().out


def test_meta_learner_is_evaluated_after_one_adaptation_step_without_changing_training(tmp_path):
    """
    MetaCRPO with the callback every meta-iteration: evaluations.npz holds one meta-test per iteration (n tasks,
    the adapted policy's returns and costs, and the meta-policy's); training ends with the same parameters as
    without the callback (the meta-test is seeded apart and counts no timestep).
    """
    small = dict(cost_limit=10.0, meta_batch_size=2, n_steps=100, seed=0)
    steps = 2 * 2 * 100 * 2
    with_callback = MetaCRPO("MlpPolicy", make_env(), **small)
    callback = CostEvalCallback(n_eval_episodes=2, eval_freq=steps, log_path=tmp_path, best_model_save_path=tmp_path,
                                verbose=0)  # fmt: skip
    with_callback.learn(2 * steps, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(data["timesteps"], [steps, 2 * steps])
    assert data["results"].shape == (2, 2) and data["costs"].shape == (2, 2, 1)
    assert data["meta_policy_results"].shape == (2, 2) and data["meta_policy_costs"].shape == (2, 2, 1)
    np.testing.assert_array_equal(data["cost_limits"], 10.0)
    # the adapted policy of the first evaluation is the meta-test's k = 1 policy
    report = with_callback.meta_test(n_tasks=2, n_adapt_steps=1, seed=callback.eval_seed)
    np.testing.assert_array_equal(data["results"][-1], report.returns[:, 1])
    np.testing.assert_array_equal(data["meta_policy_costs"][-1], report.costs[:, 0, :])
    assert with_callback.num_timesteps == 2 * steps
    without = MetaCRPO("MlpPolicy", make_env(), **small)
    without.learn(2 * steps)
    assert_same_parameters(with_callback, without)


def test_evaluation_callbacks_skip_independent_episodes(monkeypatch):
    """
    Every meta_test runs 10 independent episodes per explored policy by default; the evaluation and validation
    callbacks record the rollouts' estimates (the paper's meta-training curve, the same protocol for every
    algorithm), so they ask for none, of SafeMetaDual and of the baselines alike.
    """
    from sb3_safemeta.common.callbacks import MetaValidationCallback
    from sb3_safemeta.safe_meta_dual import SafeMetaDual

    calls: list[dict] = []
    for model in (
        SafeMetaDual("MlpPolicy", make_env(), cost_limit=10.0, meta_batch_size=2, n_steps=100, fit_steps=3, seed=0),
        MetaCRPO("MlpPolicy", make_env(), cost_limit=10.0, meta_batch_size=2, n_steps=100, seed=0),
    ):
        model.set_logger(configure(None, []))
        meta_test = model.meta_test

        def spy(*args, _meta_test=meta_test, **kwargs):
            calls.append(kwargs)
            return _meta_test(*args, **kwargs)

        monkeypatch.setattr(model, "meta_test", spy)
        # the signature check reads the bound method's parameters; keep them visible through the spy
        spy.__signature__ = inspect.signature(meta_test)  # type: ignore[attr-defined]
        evaluation = CostEvalCallback(n_eval_episodes=1, eval_freq=1, verbose=0)
        evaluation.init_callback(model)
        report = evaluation.evaluate()
        assert report.returns.shape == (1,)
        validation = MetaValidationCallback(model.sample_tasks(1, seed=5), eval_freq=1)
        validation.init_callback(model)
        validation._validate()
    assert [call.get("n_eval_episodes") for call in calls] == [0, 0, 0, 0]
