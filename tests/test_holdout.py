"""
The held-out test of A^s (``holdout_fraction``): the fit of pi^u and the dual use part of the rollout's episodes, and
the step is judged on the others. Oracle: cost advantages that are pure noise, independent of the state and the
action, so that no policy changes the cost: every predicted cost decrease is the fit's optimism about its own samples.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import sb3_safemeta.envs  # noqa: F401  (registers SafeMetaPointNav-v0)
from sb3_safemeta import SafeAdapter
from sb3_safemeta.common.adaptation.batch import AdaptationBatch
from sb3_safemeta.common.adaptation.dual import AdaptationParams
from sb3_safemeta.common.adaptation.options import AdaptationOptions
from sb3_safemeta.common.adaptation.parametric import _Surrogate, adapt_on_rollout, parametric_safe_adapt
from sb3_safemeta.common.rollout_data import RolloutData

HORIZON = 100.0


def small_gaussian_policy() -> ActorCriticPolicy:
    """A Gaussian policy on 3-d observations and 2-d actions, one hidden layer of 16 units"""
    return ActorCriticPolicy(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,)), lambda _: 1e-3, net_arch=[16])


def noise_cost_batch(policy: ActorCriticPolicy, n: int, generator: th.Generator) -> AdaptationBatch:
    """n samples of ``policy`` whose cost advantages are N(0, 1) noise and whose reward advantages prefer large actions"""
    observations = th.rand(n, 3, generator=generator) * 2 - 1
    with th.no_grad():
        actions = policy.get_distribution(observations).sample()
    noise = th.randn(n, 1, generator=generator)
    advantages = actions.sum(dim=1)
    return AdaptationBatch(observations, actions, advantages - advantages.mean(), noise - noise.mean(), th.full((n,), 1.0 / n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_recovery_step_is_sized_on_held_out_samples(seed):
    """
    From a violating start, the recovery step fitted on noise predicts a cost decrease on its own samples (the
    optimism) and takes a step that a third, fresh batch judges worse than the start (Point-Button's recovery steps
    in miniature); judged on held-out samples it predicts almost no decrease and takes (almost) no step.
    """
    th.manual_seed(seed)
    policy = small_gaussian_policy()
    generator = th.Generator().manual_seed(seed)
    fit, held_out, fresh = (noise_cost_batch(policy, 1000, generator) for _ in range(3))
    params = AdaptationParams.create(1.0, 50.0, 10.0, 0.0, 1.0 - 1.0 / HORIZON, 1)
    start_cost = np.array([30.0])
    phi = parameters_to_vector(policy.parameters()).detach().clone()
    predicted, fresh_cost = {}, {}
    for name, test_batch in (("in-sample", None), ("held-out", held_out)):
        vector_to_parameters(phi.clone(), policy.parameters())  # every step from pi_phi (a copy: the fit is in place)
        reference = _Surrogate(policy, list(policy.parameters()), fresh, HORIZON)  # pi_phi's fresh samples
        result = parametric_safe_adapt(
            policy, list(policy.parameters()), fit, start_cost, params, HORIZON, test_batch=test_batch
        )
        assert result.recovery
        predicted[name] = float(start_cost[0] - result.surrogate_cost[0])
        fresh_cost[name] = float(reference.evaluate(start_cost, params)[0][0])
    # the fit's own samples promise a decrease that fresh samples contradict: the step raised the cost bound
    assert predicted["in-sample"] > 1.0, predicted
    assert fresh_cost["in-sample"] > start_cost[0] + 1.0, fresh_cost
    # held out: the promise is small, and the step is no worse than the start on fresh samples (up to their noise)
    assert predicted["held-out"] < predicted["in-sample"] / 4, predicted
    assert fresh_cost["held-out"] < start_cost[0] + 0.5, fresh_cost


def test_a_held_out_copy_of_the_batch_changes_nothing():
    """Judged on a copy of its own samples, the step is the one judged on them (the plumbing adds nothing)."""
    th.manual_seed(0)
    policy = small_gaussian_policy()
    batch = noise_cost_batch(policy, 800, th.Generator().manual_seed(0))
    copy = AdaptationBatch(*(tensor.clone() for tensor in (batch.observations, batch.actions, batch.advantages,
                                                           batch.cost_advantages, batch.weights)))  # fmt: skip
    params = AdaptationParams.create(1.0, 1.0, 10.0, 0.0, 1.0 - 1.0 / HORIZON, 1)
    phi = parameters_to_vector(policy.parameters()).detach().clone()
    results, parameters = [], []
    for test_batch in (None, copy):
        vector_to_parameters(phi.clone(), policy.parameters())  # every step from pi_phi (a copy: the fit is in place)
        results.append(parametric_safe_adapt(policy, list(policy.parameters()), batch, np.array([9.0]), params, HORIZON,
                                             test_batch=test_batch))  # fmt: skip
        parameters.append(parameters_to_vector(policy.parameters()).detach().clone())
    assert th.equal(parameters[0], parameters[1])
    np.testing.assert_allclose(results[0].surrogate_cost, results[1].surrogate_cost, rtol=1e-6)
    assert results[0].kl == pytest.approx(results[1].kl, rel=1e-6)


def test_held_out_episodes_alternate_and_too_few_episodes_are_an_error():
    episode_ids = np.repeat(np.arange(4), 3)
    rollout = RolloutData(
        observations=np.zeros((12, 1), np.float32), actions=np.zeros((12, 1), np.float32),
        advantages=np.zeros(12, np.float32), cost_advantages=np.zeros((12, 1), np.float32),
        episode_returns=np.zeros(4), episode_costs=np.zeros((4, 1)), episode_lengths=np.full(4, 3.0),
        episode_ids=episode_ids,
    )  # fmt: skip
    np.testing.assert_array_equal(rollout.held_out(0.5), np.repeat([False, True, False, True], 3))
    np.testing.assert_array_equal(rollout.held_out(0.25), np.repeat([False, False, False, True], 3))
    single = RolloutData(**{**rollout.__dict__, "episode_ids": np.zeros(12, np.int64)})
    with pytest.raises(ValueError, match=r"holdout_fraction=0.5 splits the rollout's 1 episode"):
        single.held_out(0.5)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), True, "0.5"])
def test_holdout_fraction_is_checked(value):
    with pytest.raises(ValueError, match="holdout_fraction must be in \\[0, 1\\)"):
        AdaptationOptions(holdout_fraction=value)


def test_safe_adapter_with_a_held_out_split_learns_saves_and_loads(tmp_path):
    """The option goes through SafeAdapter's rollouts (episode ids), its zip and load."""
    env = make_vec_env("SafeMetaPointNav-v0", n_envs=2, seed=0)
    model = SafeAdapter("MlpPolicy", env, cost_limit=10.0, lambda_c=10.0, n_steps=400, holdout_fraction=0.5, seed=0)
    model.learn(total_timesteps=1600)
    assert model.adaptation.holdout_fraction == 0.5
    model.save(tmp_path / "adapter.zip")
    assert SafeAdapter.load(tmp_path / "adapter.zip", env=env).adaptation.holdout_fraction == 0.5
    one_env = make_vec_env("SafeMetaPointNav-v0", n_envs=1, seed=0)
    too_short = SafeAdapter("MlpPolicy", one_env, cost_limit=10.0, n_steps=100, holdout_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=r"holdout_fraction=0.5 splits the rollout's 1 episode"):
        too_short.learn(total_timesteps=100)  # one 100-step episode: nothing to hold out


def test_each_part_is_centred_so_that_the_surrogate_at_the_start_is_its_cost():
    """
    The held-out episodes have their own mean advantage (here +-5 per step on alternate episodes): uncentred, H times
    it would shift the judged g by 500 at pi_phi itself, and a step the KL term keeps near pi_phi would be judged
    500 above or below its cost. Centred per part, g at a (nearly) unmoved policy is Jc(pi_phi).
    """
    env = make_vec_env("SafeMetaPointNav-v0", n_envs=2, seed=0)
    adapter = SafeAdapter("MlpPolicy", env, cost_limit=10.0, n_steps=400, seed=0)
    _, callback = adapter._setup_learn(total_timesteps=400, callback=None)
    adapter.collect_rollouts(adapter.env, callback, adapter.rollout_buffer, n_rollout_steps=adapter.n_steps)
    rollout = adapter.rollout_data("mc")
    offset = np.where(rollout.episode_ids % 2 == 1, 5.0, -5.0).astype(np.float32)[:, None]
    rollout.cost_advantages = rollout.cost_advantages + offset
    options = AdaptationOptions(lambda_c=1e7, holdout_fraction=0.5)
    cost_limit = rollout.episode_cost + 1.0
    result = adapt_on_rollout(adapter.policy, rollout, options, cost_limit)
    assert not result.recovery and result.kl < 1e-5
    np.testing.assert_allclose(result.surrogate_cost, rollout.episode_cost, atol=0.5)
