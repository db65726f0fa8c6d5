"""
Clear errors for every degenerate input (issue 16, findings 5, 7, 8, 9, 10): each test failed before, with the
obscure error quoted in its docstring. All five algorithms, on the tiny faulty family of tests/faulty_envs.py.
"""

import json
import pathlib
import re
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch as th
from faulty_envs import (
    EPISODE_LENGTH,
    STEP_FAULTS,
    TASK_FAULTS,
    DictObservationTaskEnv,
    EndlessTaskEnv,
    EnvironmentBroke,
    make_faulty_env,
)
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta import MAMLCostPenalty, MetaCPO, MetaCRPO, SafeAdapter, SafeMetaDual

ROOT = pathlib.Path(__file__).resolve().parent.parent

# the smallest settings that run: 2 envs x 10 steps = 4 episodes of 5 steps per rollout
SETTINGS: dict[type, dict[str, Any]] = {
    SafeAdapter: dict(cost_limit=1.0, n_steps=10, batch_size=10, n_critic_epochs=1, fit_steps=3, n_dual_steps=3),
    SafeMetaDual: dict(cost_limit=1.0, meta_batch_size=2, n_steps=10, fit_steps=3, n_dual_steps=3, target_kl=0.01),
    MAMLCostPenalty: dict(cost_limit=1.0, meta_batch_size=2, n_steps=10),
    MetaCPO: dict(cost_limit=1.0, meta_batch_size=2, n_steps=10),
    MetaCRPO: dict(cost_limit=1.0, meta_batch_size=2, n_inner_steps=1, n_steps=10),
}
ALGORITHMS = list(SETTINGS)
META_ALGORITHMS = [cls for cls in ALGORITHMS if cls is not SafeAdapter]


def build(cls: type, env: Any = None, **overrides: Any) -> Any:
    return cls("MlpPolicy", make_faulty_env() if env is None else env, seed=0, **{**SETTINGS[cls], **overrides})


def finite(model: Any) -> bool:
    return all(bool(th.isfinite(parameter).all()) for parameter in model.policy.parameters())


def ids(classes: list[type]) -> list[str]:
    return [cls.__name__ for cls in classes]


def test_the_faulty_family_runs_every_algorithm_when_healthy() -> None:
    """The reference for the faults below: without one, one iteration of each algorithm goes through."""
    for cls in ALGORITHMS:
        model = build(cls).learn(1)
        assert finite(model), cls.__name__


# ---------------------------------------------------------------- finding 7: obscure errors
@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_n_steps_zero_names_the_parameter(cls: type) -> None:
    """Was: UnboundLocalError: new_obs (at the first rollout)."""
    with pytest.raises(ValueError, match=r"n_steps must be an integer >= 1, got 0"):
        build(cls, n_steps=0)


@pytest.mark.parametrize("cls", META_ALGORITHMS, ids=ids(META_ALGORITHMS))
def test_fractional_meta_batch_size_names_the_parameter(cls: type) -> None:
    """Was: numpy AxisError in the first meta-iteration (int(0.5) = 0 tasks)."""
    with pytest.raises(ValueError, match=r"meta_batch_size must be an integer >= 1, got 0\.5"):
        build(cls, meta_batch_size=0.5)


@pytest.mark.parametrize("cls", [SafeAdapter, SafeMetaDual], ids=ids([SafeAdapter, SafeMetaDual]))
def test_a_s_counts_follow_the_integer_rule_of_every_other_count(cls: type) -> None:
    """
    Was: fit_steps=10.0 raised a TypeError in the A^s options while meta_batch_size=10.0 was accepted as 10 (an
    rl-zoo3 yml or an Optuna float gives such values); now one rule (check_int) for every count.
    """
    model = build(cls, fit_steps=5.0, n_dual_steps=3.0, backtrack_steps=0.0)
    assert (model.fit_steps, model.n_dual_steps, model.backtrack_steps) == (5, 3, 0)
    assert all(type(value) is int for value in (model.fit_steps, model.n_dual_steps, model.backtrack_steps))
    with pytest.raises(ValueError, match=r"fit_steps must be an integer >= 1, got 2\.5"):
        build(cls, fit_steps=2.5)
    with pytest.raises(ValueError, match=r"n_dual_steps must be an integer >= 1, got 0"):
        build(cls, n_dual_steps=0)
    with pytest.raises(ValueError, match=r"backtrack_steps must be an integer >= 0, got -1"):
        build(cls, backtrack_steps=-1)
    with pytest.raises(TypeError, match=r"fit_steps must be an integer >= 1, got True"):
        build(cls, fit_steps=True)


@pytest.mark.parametrize("fault", sorted(TASK_FAULTS))
@pytest.mark.parametrize("cls", META_ALGORITHMS, ids=ids(META_ALGORITHMS))
def test_sample_tasks_protocol_errors_say_what_was_returned(cls: type, fault: str) -> None:
    """Was: AxisError for ``[]``; now the method, its arguments and what it returned."""
    model = build(cls, env=make_faulty_env(fault))
    with pytest.raises((ValueError, TypeError), match=TASK_FAULTS[fault]):
        model.learn(1)


@pytest.mark.parametrize("fault", sorted(STEP_FAULTS))
@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_step_faults_are_named(cls: type, fault: str) -> None:
    """
    Was: a string cost -> "could not convert string to float" (no mention of info["cost"]); a NaN observation ->
    a torch Normal error; a negative cost accepted silently (finding 8). The user's own exception passes unchanged.
    """
    model = build(cls, env=make_faulty_env(fault, fault_step=3))
    expected = EnvironmentBroke if fault == "exception" else (ValueError, TypeError, KeyError)
    with pytest.raises(expected, match=STEP_FAULTS[fault]):  # type: ignore[arg-type]
        model.learn(1)
    assert finite(model)


@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_dict_observations_name_the_fix(cls: type) -> None:
    """Was: "use MultiInputPolicy", then "MultiInputPolicy unknown" (the package has none)."""
    env = make_vec_env(DictObservationTaskEnv, n_envs=2)
    with pytest.raises(TypeError, match=r"observation space Dict.*not supported.*FlattenObservation"):
        build(cls, env=env)


@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_learn_after_load_without_env_names_the_fix(cls: type, tmp_path: pathlib.Path) -> None:
    """Was: AttributeError ('NoneType' object has no attribute ...)."""
    build(cls).save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=rf"learn\(\) needs an environment.*{cls.__name__}\.load\(path, env=env\)"):
        loaded.learn(1)


# ---------------------------------------------------------------- finding 8: late or missing validation
@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
@pytest.mark.parametrize("name, value", [("gamma", 1.5), ("gamma", -0.1), ("gae_lambda", 2.0)])
def test_discount_out_of_range_is_refused(cls: type, name: str, value: float) -> None:
    """Was: gamma = 1.5 accepted."""
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\], got {value}"):
        build(cls, **{name: value})


@pytest.mark.parametrize("cls", [SafeMetaDual, MAMLCostPenalty, MetaCPO, MetaCRPO], ids=ids(META_ALGORITHMS))
@pytest.mark.parametrize("value", [2.0, 1.0, 0.0])
def test_line_search_shrinking_factor_outside_0_1_is_refused(cls: type, value: float) -> None:
    """Was: SafeMetaDual alone accepted line_search_shrinking_factor = 2 (a line search that grows the step)."""
    with pytest.raises(ValueError, match=r"line_search_shrinking_factor must be in \(0, 1\), got"):
        build(cls, line_search_shrinking_factor=value)


@pytest.mark.parametrize("cls", [SafeAdapter, SafeMetaDual], ids=["SafeAdapter", "SafeMetaDual"])
def test_unknown_dual_solver_fails_at_construction(cls: type) -> None:
    """Was: dual_solver='bogus' failed only in learn, after the first rollout."""
    with pytest.raises(ValueError, match=r"dual_solver must be one of .*'newton'.*got 'bogus'"):
        build(cls, dual_solver="bogus")
    with pytest.raises(ValueError, match=r"dual_solver='bisection' needs one cost channel"):
        build(cls, dual_solver="bisection", cost_limit=[1.0, 1.0], n_costs=2)


# ---------------------------------------------------------------- finding 9: the "no episode" rule
def test_no_episode_message_states_the_per_environment_rule() -> None:
    """
    Was: "n_steps * n_envs must cover at least one episode", wrong: 4 envs x 3 steps = 12 >= 5 still completes
    no episode of length 5, since each environment needs n_steps >= the episode length.
    """
    assert 4 * 3 >= EPISODE_LENGTH > 3
    model = build(SafeMetaDual, env=make_faulty_env(n_envs=4), n_steps=3)
    with pytest.raises(ValueError) as caught:
        model.learn(1)
    message = str(caught.value)
    assert "4 environment(s) x n_steps=3" in message
    assert "n_steps (steps per environment) must be at least the episode length, whatever n_envs is" in message
    assert "n_steps * n_envs" not in message


def test_no_episode_message_gives_the_time_limit_hint() -> None:
    """Was: no hint for an environment that never ends an episode."""
    model = build(SafeAdapter, env=make_vec_env(EndlessTaskEnv, n_envs=2))
    with pytest.raises(
        ValueError, match=r"never ends an episode by itself needs a time limit: gymnasium\.wrappers\.TimeLimit"
    ):
        model.learn(1)


# ---------------------------------------------------------------- finding 5: class checks on load
@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("zips")
    paths = {}
    for cls in ALGORITHMS:
        paths[cls.__name__] = folder / f"{cls.__name__}.zip"
        build(cls).save(paths[cls.__name__])
    paths["PPO"] = folder / "ppo.zip"
    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0).save(paths["PPO"])
    return paths


@pytest.mark.parametrize(
    "saved, loader",
    [("SafeAdapter", SafeMetaDual), ("SafeMetaDual", MetaCRPO), ("MetaCPO", MAMLCostPenalty), ("SafeMetaDual", SafeAdapter)],
)
def test_a_zip_of_another_algorithm_is_refused_naming_both(zips: dict[str, pathlib.Path], saved: str, loader: type) -> None:
    """
    Was: SafeMetaDual.load("adapter.zip", env=e).learn() trained with default meta hyper-parameters; a SafeMetaDual
    zip in MetaCRPO.load gave KeyError: 'policy.optimizer'.
    """
    with pytest.raises(TypeError, match=rf"holds a {saved} model, not a {loader.__name__}: load it with {saved}\.load"):
        loader.load(zips[saved], env=make_faulty_env())


@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_a_plain_ppo_zip_is_refused(zips: dict[str, pathlib.Path], cls: type) -> None:
    """Was: "rollout_buffer_class must subclass CostRolloutBuffer"."""
    with pytest.raises(TypeError, match=rf"not saved by an sb3_safemeta algorithm .*{cls.__name__}\.load cannot restore it"):
        cls.load(zips["PPO"])


def test_each_algorithm_loads_its_own_zip_and_an_older_zip_without_the_record(
    zips: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    for cls in ALGORITHMS:
        assert type(cls.load(zips[cls.__name__])) is cls
    # a zip saved before algorithm_class was recorded: the class is told by the attributes only it saves
    older = tmp_path / "older.zip"
    with zipfile.ZipFile(zips["SafeAdapter"]) as source, zipfile.ZipFile(older, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                del data["algorithm_class"]
                content = json.dumps(data).encode()
            target.writestr(item, content)
    assert type(SafeAdapter.load(older)) is SafeAdapter
    with pytest.raises(TypeError, match="holds a SafeAdapter model, not a SafeMetaDual"):
        SafeMetaDual.load(older)


# ---------------------------------------------------------------- finding 6 (windows) and finding 10 (pickle)
@pytest.mark.parametrize("cls", [SafeAdapter, SafeMetaDual], ids=["SafeAdapter", "SafeMetaDual"])
def test_logging_windows_survive_save_and_load(cls: type, tmp_path: pathlib.Path) -> None:
    """Was: rollout/ep_cost_* restarted from an empty window after load, so resumed logs did not reproduce."""
    model = build(cls).learn(1)
    assert len(model.ep_cost_buffer) > 0 and len(model.ep_info_buffer) > 0
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", env=make_faulty_env())
    np.testing.assert_array_equal(np.asarray(loaded.ep_cost_buffer), np.asarray(model.ep_cost_buffer))
    assert list(loaded.ep_info_buffer) == list(model.ep_info_buffer)
    marker = np.array([999.0])
    loaded.ep_cost_buffer.appendleft(marker)
    loaded.learn(1, reset_num_timesteps=False)  # continues the window
    assert any(item is marker for item in loaded.ep_cost_buffer)
    loaded.learn(1)  # a new run starts a new window
    assert not any(item is marker for item in loaded.ep_cost_buffer) and len(loaded.ep_cost_buffer) > 0


def test_the_docs_warn_about_untrusted_zips() -> None:
    """Finding 10: SafeMetaDual.load of an untrusted zip runs arbitrary code (SB3's pickle); the docs did not say so."""
    page = (ROOT / "docs" / "guide" / "reliability.md").read_text()
    assert re.search(r"never load a zip from an untrusted source", page, flags=re.IGNORECASE)
    assert "pickle" in page
    for cls in ALGORITHMS:
        assert "untrusted source" in (cls.load.__doc__ or ""), cls.__name__


def test_errors_are_raised_before_any_environment_is_built() -> None:
    """Plain-number checks come first: a wrong n_steps never builds (or steps) the environment."""
    built: list[Callable] = []

    def factory() -> Any:
        built.append(factory)
        return make_faulty_env()

    with pytest.raises(ValueError, match="n_steps"):
        SafeMetaDual("MlpPolicy", "NoSuchEnv-v0", n_steps=0)
    assert built == []


def test_callback_and_meta_test_counts_are_integers() -> None:
    """A fractional count was truncated silently (save_freq=1.5 saved every iteration, n_adapt_steps=0.5 ran 0)."""
    from sb3_safemeta.common.callbacks import MetaCheckpointCallback, StopTrainingOnMetaIterations

    with pytest.raises(ValueError, match=r"save_freq must be an integer >= 1, got 1\.5"):
        MetaCheckpointCallback(1.5, "unused")
    with pytest.raises(ValueError, match=r"max_meta_iterations must be an integer >= 1, got 0"):
        StopTrainingOnMetaIterations(0)
    model = build(SafeMetaDual)
    for value in (0.5, -1):
        with pytest.raises(ValueError, match=rf"n_adapt_steps must be an integer >= 0, got {value}"):
            model.meta_test(n_tasks=1, n_adapt_steps=value)


def test_an_adaptation_step_that_breaks_the_policy_names_its_step_size() -> None:
    """
    Found by tests/test_properties.py: MAMLCostPenalty with inner_lr=4063 gave torch's "Expected parameter scale ...
    GreaterThan(lower_bound=0.0)" (the inner gradient step drove the std to zero), naming nothing of ours.
    """
    model = build(MAMLCostPenalty, inner_lr=4063.0)
    with pytest.raises(
        ValueError, match=r"MAMLCostPenalty: a policy of this meta-iteration is no valid distribution.*lower inner_lr=4063\.0"
    ):
        model.learn(1)
    assert finite(model)
